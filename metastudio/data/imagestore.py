"""Decoded images of a person's files, kept while they are in use.

The app shows and re-adapts on the same files again and again; :class:`ImageStore` decodes each
file once per (size, channels, fit) and keeps the uint8 array, keyed by the file's path, size and
modification time, so an edited file is decoded again and an unchanged one never is. It also
keeps each image's own size in pixels, so that an image too small to recognise can be told
(:func:`metastudio.algorithms.openset.too_small_reason`) although its array has the model's size.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import numpy as np

from metastudio.data.images import load_sized_array


class ImageStore:
    def __init__(self, size: int, channels: int = 3, fit: str = "stretch", max_items: int = 5000):
        self.size, self.channels, self.fit, self.max_items = size, channels, fit, max_items
        self._arrays: OrderedDict[tuple, tuple[np.ndarray, tuple[int, int]]] = OrderedDict()
        self.decoded = 0

    def get(self, path: str | os.PathLike) -> np.ndarray:
        """uint8 [C, size, size] for the file; raises ImageLoadError for a file that can't be used."""
        return self.get_sized(path)[0]

    def get_sized(self, path: str | os.PathLike) -> tuple[np.ndarray, tuple[int, int]]:
        """The file's array (:meth:`get`) and its (width, height) in pixels (see
        :func:`~metastudio.data.images.load_sized_array`)."""
        path = Path(path)
        st = path.stat() if path.exists() else None
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns) if st else (str(path),)
        if key in self._arrays:
            self._arrays.move_to_end(key)
            return self._arrays[key]
        entry = load_sized_array(path, self.size, channels=self.channels, fit=self.fit)
        self.decoded += 1
        self._arrays[key] = entry
        while len(self._arrays) > self.max_items:
            self._arrays.popitem(last=False)
        return entry
