"""A cache of image embeddings, so that adapting again after one image is added embeds only that image.

An embedding is keyed by a *namespace* -- which backbone with which weights, and which
preprocessing (image size, fit, channels) -- and by the hash of the image file's bytes, so a
changed file is a new key and a renamed or copied one is still a hit. Entries live in memory
(a bounded LRU) and on disk under the user cache directory as one small ``.npy`` file each
(``allow_pickle=False``; never pickled), written atomically. The disk part is bounded too: when
it grows past ``max_bytes`` the least recently used files are deleted. Deleting the whole
folder at any time is safe; it only costs re-embedding.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from metastudio.data.datasets import cache_dir


def content_hash(data: bytes) -> str:
    """The key of an image's content: BLAKE2b-128 of its bytes (hex)."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _safe(namespace: str) -> str:
    return hashlib.blake2b(namespace.encode(), digest_size=8).hexdigest()


class FeatureCache:
    """Embeddings by (namespace, content hash), in memory and on disk.

    ``directory`` defaults to ``<user cache>/features``; ``max_bytes`` bounds the disk part,
    ``memory_items`` the in-memory LRU. All methods are safe to call from one worker thread
    at a time (the app's adapt worker); disk writes are atomic, so several processes may share
    the folder.
    """

    def __init__(self, directory: str | os.PathLike | None = None, *, max_bytes: int = 512 << 20,
                 memory_items: int = 20_000):
        self.directory = Path(directory) if directory else cache_dir() / "features"
        self.max_bytes = max_bytes
        self.memory_items = memory_items
        self._memory: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self.hits = self.misses = 0
        self._disk_bytes: int | None = None

    # -- single entries ----------------------------------------------------------------------------
    def _path(self, namespace: str, key: str) -> Path:
        return self.directory / _safe(namespace) / key[:2] / f"{key}.npy"

    def get(self, namespace: str, key: str) -> np.ndarray | None:
        mem_key = (namespace, key)
        if mem_key in self._memory:
            self._memory.move_to_end(mem_key)
            return self._memory[mem_key]
        path = self._path(namespace, key)
        try:
            value = np.load(path, allow_pickle=False)
            os.utime(path)  # recently used: pruned last
        except (OSError, ValueError):
            return None
        self._remember(mem_key, value)
        return value

    def put(self, namespace: str, key: str, value: np.ndarray) -> None:
        value = np.ascontiguousarray(value, dtype=np.float32)
        self._remember((namespace, key), value)
        path = self._path(namespace, key)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                np.save(f, value, allow_pickle=False)
            os.replace(tmp, path)
        except OSError:  # a full or read-only disk only costs speed
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
            return
        if self._disk_bytes is not None:
            self._disk_bytes += path.stat().st_size
        if self.disk_bytes() > self.max_bytes:
            self.prune()

    def _remember(self, mem_key: tuple[str, str], value: np.ndarray) -> None:
        self._memory[mem_key] = value
        self._memory.move_to_end(mem_key)
        while len(self._memory) > self.memory_items:
            self._memory.popitem(last=False)

    # -- the common case -----------------------------------------------------------------------------
    def embed(
        self,
        namespace: str,
        contents: Sequence[bytes],
        compute: Callable[[list[int]], torch.Tensor],
    ) -> torch.Tensor:
        """Embeddings [len(contents), D] for images given by their file bytes.

        ``compute(indices)`` is called once, with the indices of the images not in the cache,
        and must return their embeddings [len(indices), D]; it is not called when all hit.
        """
        keys = [content_hash(c) for c in contents]
        found: dict[int, np.ndarray] = {}
        missing: list[int] = []
        for i, k in enumerate(keys):
            v = self.get(namespace, k)
            if v is None:
                missing.append(i)
            else:
                found[i] = v
        self.hits += len(found)
        self.misses += len(missing)
        if missing:
            computed = compute(missing).detach().float().cpu().numpy()
            for i, row in zip(missing, computed):
                self.put(namespace, keys[i], row)
                found[i] = row
        return torch.from_numpy(np.stack([found[i] for i in range(len(keys))])) if keys else torch.zeros(0)

    # -- size bound ------------------------------------------------------------------------------------
    def _files(self) -> list[Path]:
        return [p for p in self.directory.rglob("*.npy")] if self.directory.exists() else []

    def disk_bytes(self) -> int:
        if self._disk_bytes is None:
            self._disk_bytes = sum(p.stat().st_size for p in self._files())
        return self._disk_bytes

    def prune(self, target: float = 0.8) -> int:
        """Delete least recently used files until the disk part is below ``target`` x max_bytes;
        returns how many were deleted."""
        entries = []
        for p in self._files():
            try:
                st = p.stat()
                entries.append((st.st_mtime, st.st_size, p))
            except OSError:
                pass
        entries.sort()
        total = sum(size for _, size, _ in entries)
        removed = 0
        for _, size, p in entries:
            if total <= target * self.max_bytes:
                break
            try:
                p.unlink()
                total -= size
                removed += 1
            except OSError:
                pass
        self._disk_bytes = total
        return removed

    def clear_memory(self) -> None:
        self._memory.clear()


def use_feature_cache(algorithm, cache: FeatureCache | None = None) -> FeatureCache | None:
    """Give an algorithm whose backbone is frozen (pretrained) a feature cache, so that images
    it has embedded before are not embedded again; returns the cache, or ``None`` (and changes
    nothing) for a backbone that learns. ``cache`` defaults to a fresh :class:`FeatureCache`
    in the user cache directory. Training, evaluation and the classifier session all set
    their algorithm up through here."""
    if not algorithm.backbone_frozen:
        return None
    algorithm.feature_cache = cache if cache is not None else FeatureCache()
    return algorithm.feature_cache
