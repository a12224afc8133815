"""Decoded images of a person's files, kept while they are in use.

The app shows and re-adapts on the same files again and again; :class:`ImageStore` decodes each
file once per (size, channels, fit) and keeps the uint8 array, keyed by the file's path, size and
modification time, so an edited file is decoded again and an unchanged one never is. It also
keeps each image's own size in pixels, so that an image too small to recognise can be told
(:func:`metastudio.algorithms.openset.too_small_reason`) although its array has the model's size,
and what Pillow noted about a file it read anyway (:meth:`ImageStore.notes_for`), for the app to show.
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
        self._notes: dict[tuple, list[str]] = {}
        self.decoded = 0

    def get(self, path: str | os.PathLike) -> np.ndarray:
        """uint8 [C, size, size] for the file; raises ImageLoadError for a file that can't be used."""
        return self.get_sized(path)[0]

    def get_sized(self, path: str | os.PathLike) -> tuple[np.ndarray, tuple[int, int]]:
        """The file's array (:meth:`get`) and its (width, height) in pixels (see
        :func:`~metastudio.data.images.load_sized_array`)."""
        path = Path(path)
        key = self._key(path)
        if key in self._arrays:
            self._arrays.move_to_end(key)
            return self._arrays[key]
        notes: list[str] = []
        entry = load_sized_array(path, self.size, channels=self.channels, fit=self.fit, notes=notes)
        self.decoded += 1
        self._arrays[key] = entry
        if notes:
            self._notes[key] = notes
        while len(self._arrays) > self.max_items:
            self._notes.pop(self._arrays.popitem(last=False)[0], None)
        return entry

    def notes_for(self, path: str | os.PathLike) -> list[str]:
        """What Pillow noted, in a person's words, when the file (as it is now) was decoded: e.g.
        "its EXIF information (camera details, orientation) is damaged: what could not be read was
        ignored"; empty
        when nothing was noted or the file has not been decoded."""
        return list(self._notes.get(self._key(Path(path)), ()))

    @staticmethod
    def _key(path: Path) -> tuple:
        """The file's real path, size and time stamp; its path alone when it can't be looked at
        (gone, a link loop: loading it then says why)."""
        try:
            st = os.stat(path)
        except (OSError, ValueError):
            return (str(path),)
        return (os.path.realpath(path), st.st_size, st.st_mtime_ns)
