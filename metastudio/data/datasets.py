"""Few-shot datasets: many classes of images, decoded once and kept in memory as uint8.

A :class:`FewShotDataset` is a set of classes with their images; episodes are drawn from it by
:class:`metastudio.data.episodes.EpisodeSampler`. The one implementation here keeps every
image of every class, already decoded and resized, in one contiguous uint8 tensor
[total, C, H, W], so drawing an episode is a single gather and no file is decoded twice.

:func:`load_class_folders` reads a class-folder tree (``root/<class>/<images>``, or nested
groups such as Omniglot's ``<alphabet>/<character>/<images>``: a class is any folder that
directly holds image files, named by its path relative to the root) from a directory or from
a zip of the same tree. Decoded arrays are also cached on disk (``.npy`` + JSON, never pickled)
under the user cache directory, keyed by the source's path, size and time stamp and by the
preprocessing, so the second load of a big dataset takes a fraction of a second.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import threading
import zipfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import torch

from metastudio.data import jsondoc
from metastudio.data.images import load_array
from metastudio.data.listing import (FILE_REASONS, NOT_FOUND, entry_problem, is_image_name, is_unsupported_picture_name,
                                     os_problem, printable, scan_folder, scan_zip)
from metastudio.errors import DatasetError, ImageLoadError, message_of

#: ``progress(done, total)`` callbacks report long work; ``total`` may be None when unknown.
Progress = Callable[[int, int | None], None]

CACHE_FORMAT = 2  # 2: small images are enlarged with bilinear, not Lanczos
#: Decoded datasets larger than this are not written to the disk cache (a 224-px photo split can
#: take gigabytes; decoding it again is cheaper than filling the user's disk).
MAX_DISK_CACHE_BYTES = 1 << 30


def cache_dir() -> Path:
    """Where MetaStudio keeps caches (``METASTUDIO_CACHE_DIR`` overrides)."""
    env = os.environ.get("METASTUDIO_CACHE_DIR")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("metastudio"))


@dataclass
class FewShotDataset:
    """Classes of same-sized uint8 images, all in memory -- or of precomputed features.

    ``images`` is uint8 [total, C, H, W], or floating-point [total, D] for the features of a
    frozen backbone (see :mod:`metastudio.engine.features`); class ``c`` owns rows
    ``offsets[c] : offsets[c] + class_sizes[c]``. ``problems`` lists files that could not be
    used, each with its reason (they are reported, never silently skipped).
    """

    images: torch.Tensor
    class_names: list[str]
    class_sizes: list[int]
    name: str = "dataset"
    problems: list[str] = field(default_factory=list)

    def __post_init__(self):
        if len(self.class_names) != len(self.class_sizes):
            raise ValueError("class_names and class_sizes differ in length")
        if not ((self.images.dtype == torch.uint8 and self.images.dim() == 4)
                or (self.images.is_floating_point() and self.images.dim() == 2)):
            raise ValueError("images must be a uint8 tensor [total, C, H, W] (or features [total, D])")
        if sum(self.class_sizes) != len(self.images):
            raise ValueError("class_sizes do not add up to the number of images")
        sizes = torch.tensor(self.class_sizes, dtype=torch.int64)
        self._offsets = torch.cumsum(sizes, 0) - sizes

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def is_features(self) -> bool:
        """True when the rows are precomputed backbone features, not images."""
        return self.images.dim() == 2

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])

    def __len__(self) -> int:
        return len(self.images)

    def class_images(self, c: int) -> torch.Tensor:
        start = int(self._offsets[c])
        return self.images[start : start + self.class_sizes[c]]

    def gather(self, classes: np.ndarray, images: np.ndarray) -> torch.Tensor:
        """uint8 [N, M, C, H, W]: image ``images[i, j]`` of class ``classes[i]``."""
        cls = torch.as_tensor(np.asarray(classes), dtype=torch.int64)
        idx = torch.as_tensor(np.asarray(images), dtype=torch.int64)
        flat = (self._offsets.to(cls.device)[cls][:, None] + idx).reshape(-1)
        out = self.images.index_select(0, flat.to(self.images.device))
        return out.reshape(idx.shape[0], idx.shape[1], *self.images.shape[1:])

    def to(self, device: torch.device | str) -> FewShotDataset:
        """The same dataset with its image tensor on ``device`` (episodes then gather there)."""
        return FewShotDataset(self.images.to(device), self.class_names, self.class_sizes, self.name, self.problems)

    def subset(self, classes: Sequence[int], name: str | None = None) -> FewShotDataset:
        """A dataset of the given classes, in the given order."""
        parts = [self.class_images(c) for c in classes]
        images = torch.cat(parts) if parts else self.images[:0]
        return FewShotDataset(
            images,
            [self.class_names[c] for c in classes],
            [self.class_sizes[c] for c in classes],
            name or self.name,
            list(self.problems),
        )

    def with_rotations(self, angles: Sequence[int] = (0, 90, 180, 270)) -> FewShotDataset:
        """Each class again at each angle, as a new class named ``<class>/rot<angle>``.

        This is the usual Omniglot protocol (Vinyals et al. 2016). Classes are ordered by
        angle first, then by class, so that the class order stays sorted per rotation.
        """
        blocks, names, sizes = [], [], []
        for angle in angles:
            if angle % 90:
                raise ValueError("rotations must be multiples of 90 degrees")
            k = (angle // 90) % 4
            blocks.append(torch.rot90(self.images, k=-k, dims=(2, 3)) if k else self.images)
            names += [f"{n}/rot{angle:03d}" for n in self.class_names]
            sizes += self.class_sizes
        # Blocks are [rotation][class][image], so each new class's images stay contiguous.
        images = torch.cat(blocks).contiguous()
        return FewShotDataset(images, names, sizes, self.name, list(self.problems))

    def summary(self) -> str:
        if self.is_features:
            return f"{self.name}: {self.num_classes} classes, {len(self)} images ({self.images.shape[1]}-d features)"
        return (
            f"{self.name}: {self.num_classes} classes, {len(self)} images "
            f"({self.channels}x{self.image_size}x{self.image_size})"
        )


# --------------------------------------------------------------------------------------------
# Reading class-folder trees from a directory or a zip


class TreeSource:
    """A directory or a zip file holding a class-folder tree.

    Its entries are listed by :mod:`metastudio.data.listing`'s rules: the pictures become the
    members, and every entry that can't be used (a link loop, a link to nothing, a pipe, a name
    that is not UTF-8, a folder that can't be opened, an SVG or PDF...) is one of :attr:`problems`,
    so that one bad entry never stops the rest from being read."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path).expanduser()
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            raise DatasetError(f"dataset not found: '{printable(self.path)}' does not exist") from None
        except (OSError, ValueError) as error:
            raise DatasetError(f"cannot open dataset '{printable(self.path)}': "
                               f"{entry_problem(self.path, '', error).reason}") from None
        self.is_zip = stat.S_ISREG(info.st_mode)
        if not (self.is_zip or stat.S_ISDIR(info.st_mode)) or (self.is_zip and not zipfile.is_zipfile(self.path)):
            raise DatasetError(f"'{printable(self.path)}' is neither a folder nor a zip file")
        self._listing: tuple[list[str], list[ImageLoadError]] | None = None

    def _scan(self) -> tuple[list[str], list[ImageLoadError]]:
        """(member paths, entries that can't be used), listed once."""
        if self._listing is None:
            if not self.is_zip:
                self._listing = scan_folder(self.path)
            else:
                try:
                    with zipfile.ZipFile(self.path) as zf:
                        self._listing = scan_zip(self.path, zf.infolist())
                except (OSError, zipfile.BadZipFile, ValueError) as error:
                    raise DatasetError(f"cannot read the zip '{printable(self.path)}': {message_of(error)}") from None
        return self._listing

    @property
    def problems(self) -> list[str]:
        """Each entry of the tree that can't be used, with its reason (``cannot use image 'PATH': REASON``)."""
        return [str(problem) for problem in self._scan()[1]]

    def fingerprint(self) -> str:
        st = self.path.stat()
        if self.is_zip:
            return f"{self.path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
        # A directory's mtime changes when entries are added or removed at its top only, so
        # hash the listing: names, sizes and times of every file, and the entries not used.
        h = hashlib.sha1()
        for member in self._members():
            try:
                s = (self.path / member).stat()
                h.update(f"{member}|{s.st_size}|{s.st_mtime_ns}\n".encode())
            except OSError:
                h.update(f"{member}|gone\n".encode())
        for problem in self.problems:
            h.update(problem.encode("utf-8", "backslashreplace") + b"\n")
        return f"{self.path.resolve()}|{h.hexdigest()}"

    def _members(self) -> list[str]:
        return self._scan()[0]

    def list_classes(self) -> dict[str, list[str]]:
        """``{class name: [member, ...]}``: every folder that directly holds images is a class.

        Names are posix paths relative to the tree's root; a single top-level folder that wraps
        the whole tree (``images_background/`` in Omniglot's zip) is not part of the name.
        Images lying directly in the root are ignored (they belong to no class).
        """
        classes: dict[str, list[str]] = {}
        for member, name in zip(self._members(), self._class_names(self._members())):
            if name:
                classes.setdefault(name, []).append(member)
        return dict(sorted(classes.items()))

    def _class_names(self, paths: Sequence[str]) -> list[str]:
        """The class that each of ``paths`` (of members, or of entries that can't be used) belongs
        to ("" for none), as :meth:`list_classes` names classes."""
        parents = [PurePosixPath(m).parent for m in self._members()]
        tops = {p.parts[0] for p in parents if p.parts}
        strip = 1 if len(tops) == 1 and all(len(p.parts) >= 2 for p in parents) else 0
        return ["/".join(PurePosixPath(path).parent.parts[strip:]) for path in paths]

    def unusable_classes(self) -> list[str]:
        """Folders that would be classes but hold no usable picture: each entry in them meant as a
        picture can't be used (an SVG, a link to nothing...). Sorted."""
        root = printable(self.path) + ("!" if self.is_zip else "/")
        paths = [p.path[len(root):] for p in self._scan()[1]
                 if p.reason in FILE_REASONS and p.path.startswith(root)
                 and (is_image_name(p.path) or is_unsupported_picture_name(p.path))]
        return sorted({name for name in self._class_names(paths) if name} - set(self.list_classes()))

    def reader(self):
        """A thread-safe function ``member -> bytes | path``; a member that can't be read from the
        zip raises ImageLoadError naming it, with the reason.

        Each thread opens the zip once for itself: reading one shared ``ZipFile`` from several
        threads gives spurious "Bad CRC-32" errors on Python 3.12 and newer.
        """
        if not self.is_zip:
            return lambda m: self.path / m
        local = threading.local()

        def read(member: str) -> bytes:
            zf = getattr(local, "zf", None)
            try:
                if zf is None:
                    zf = local.zf = zipfile.ZipFile(self.path)
                return zf.read(member)
            except Exception as error:
                raise _zip_member_error(self.describe(member), error) from None

        return read

    def describe(self, member: str) -> str:
        return f"{printable(self.path)}!{member}" if self.is_zip else printable(self.path / member)


#: Why a member of a zip can't be read (ImageLoadError.reason).
ZIP_LOCKED = "it is locked with a password in the zip"
ZIP_METHOD = "the zip stores it compressed in a way that can't be read"
ZIP_DAMAGED = "it is damaged inside the zip"
ZIP_NO_MEMORY = "there isn't enough memory to read it from the zip"


def _zip_member_error(label: str, error: BaseException) -> ImageLoadError:
    """The ImageLoadError for a zip member whose bytes could not be read."""
    text = message_of(error)
    if isinstance(error, KeyError):
        return ImageLoadError(label, NOT_FOUND, "the zip no longer holds it")
    if isinstance(error, RuntimeError) and ("encrypted" in text or "password" in text):
        return ImageLoadError(label, ZIP_LOCKED, text)
    if isinstance(error, NotImplementedError):
        return ImageLoadError(label, ZIP_METHOD, text)
    if isinstance(error, MemoryError):
        return ImageLoadError(label, ZIP_NO_MEMORY, text)
    return ImageLoadError(label, ZIP_DAMAGED, f"{type(error).__name__}: {text}")


def _cache_key(source: TreeSource, classes: Sequence[str], size: int, channels: int, fit: str,
               max_per_class: int | None) -> str:
    h = hashlib.sha1()
    h.update(f"v{CACHE_FORMAT}|{source.fingerprint()}|{size}|{channels}|{fit}|{max_per_class}\n".encode())
    for c in classes:
        h.update(c.encode() + b"\n")
    return h.hexdigest()[:24]


#: The index of a decoded dataset in the cache (``<key>.json`` beside its ``<key>.npy`` images).
_CACHE_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["class_names", "class_sizes", "name", "problems"],
    "properties": {
        "class_names": {"type": "array", "items": {"type": "string"}},
        "class_sizes": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "name": {"type": "string"},
        "problems": {"type": "array", "items": {"type": "string"}},
    },
}


def _read_cache(key: str) -> FewShotDataset | None:
    """The cached dataset ``key``, or None when it is absent or does not hold together (then it
    is decoded again): its index must fit :data:`_CACHE_SCHEMA` and agree with its images."""
    folder = cache_dir() / "datasets"
    meta_path, arr_path = folder / f"{key}.json", folder / f"{key}.npy"
    try:
        meta = jsondoc.read_document(meta_path.read_bytes(), _CACHE_SCHEMA,
                                     jsondoc.Words(DatasetError, document="the dataset cache's index"))
        arr = np.load(arr_path, allow_pickle=False, mmap_mode=None)
        if (arr.dtype != np.uint8 or arr.ndim != 4 or len(meta["class_names"]) != len(meta["class_sizes"])
                or sum(meta["class_sizes"]) != arr.shape[0]):
            return None
        images = torch.from_numpy(np.ascontiguousarray(arr))
        return FewShotDataset(images, meta["class_names"], meta["class_sizes"], meta["name"], meta["problems"])
    except (OSError, ValueError, DatasetError):
        return None


def _write_cache(key: str, ds: FewShotDataset) -> None:
    if ds.images.numel() > MAX_DISK_CACHE_BYTES:
        return
    folder = cache_dir() / "datasets"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f"{key}.npy.tmp{os.getpid()}"
        with open(tmp, "wb") as f:
            np.save(f, ds.images.numpy(), allow_pickle=False)
        os.replace(tmp, folder / f"{key}.npy")
        meta = {"class_names": ds.class_names, "class_sizes": ds.class_sizes, "name": ds.name, "problems": ds.problems}
        tmpj = folder / f"{key}.json.tmp{os.getpid()}"
        tmpj.write_text(json.dumps(meta))
        os.replace(tmpj, folder / f"{key}.json")
    except OSError:
        pass  # a cache that cannot be written (read-only or full disk) only costs time


def load_class_folders(
    path: str | os.PathLike,
    *,
    image_size: int,
    channels: int = 3,
    fit: str = "stretch",
    classes: Sequence[str] | None = None,
    name: str | None = None,
    min_images: int = 1,
    progress: Progress | None = None,
    use_cache: bool = True,
    workers: int | None = None,
    max_per_class: int | None = None,
) -> FewShotDataset:
    """Decode a class-folder tree (directory or zip) into a :class:`FewShotDataset`.

    ``classes`` picks and orders classes by name (all classes, sorted, when None); a name that
    is not in the tree is an error. Entries that can't be used (see :class:`TreeSource`) and
    files that cannot be decoded are listed in ``problems`` with their reason; a class left with
    fewer than ``min_images`` images, or none at all, is dropped and reported too: only when no
    class is left is it an error. ``max_per_class`` keeps only the first images (sorted by name)
    of each class. Pillow's notes on pictures that were read anyway (a damaged EXIF block) are
    not reported: such a picture is used as it is.
    """
    source = TreeSource(path)
    tree = source.list_classes()
    chosen = _choose_classes(source, tree, classes)
    key = _cache_key(source, chosen, image_size, channels, fit, max_per_class) if use_cache else None
    if key:
        cached = _read_cache(key)
        if cached is not None:
            if progress:
                progress(1, 1)
            return cached
    members = [tree[c][:max_per_class] for c in chosen]
    arrays, failed = _decode_classes(source, members, image_size, channels, fit, progress, workers)
    problems = source.problems + failed
    if classes is None:
        problems += [f"class '{c}' dropped: 0 usable images, at least {min_images} needed" for c in source.unusable_classes()]
    ds = _gather(source, chosen, arrays, problems, min_images, name or source.path.stem)
    if key:
        _write_cache(key, ds)
    return ds


def _choose_classes(source: TreeSource, tree: dict[str, list[str]], classes: Sequence[str] | None) -> list[str]:
    """The classes to load: ``classes`` (all of them in the tree), or every class of the tree."""
    if classes is None:
        chosen = list(tree)
    else:
        missing = [c for c in classes if c not in tree]
        if missing:
            raise DatasetError(
                f"{len(missing)} classes are missing from '{source.path}', e.g. {missing[:3]}"
            )
        chosen = list(classes)
    if not chosen:
        bad = source.problems
        raise DatasetError(
            f"no classes found in '{printable(source.path)}': expected one folder of images per class "
            "(root/<class>/<image files>)" + (f"; {len(bad)} entries can't be used, e.g. {bad[0]}" if bad else "")
        )
    return chosen


def _decode_classes(source: TreeSource, members: Sequence[Sequence[str]], image_size: int, channels: int, fit: str,
                    progress: Progress | None, workers: int | None) -> tuple[list[list[np.ndarray]], list[str]]:
    """Decode the members of each class on a few threads: the arrays of each class (in member
    order) and, for each file that could not be used, why."""
    jobs = [(ci, m) for ci, names in enumerate(members) for m in names]
    read = source.reader()
    total = len(jobs)

    def decode(job):
        ci, member = job
        try:
            return ci, load_array(read(member), image_size, channels=channels, fit=fit, name=source.describe(member)), None
        except ImageLoadError as e:
            return ci, None, str(e)
        except OSError as e:  # the file went away or broke between the listing and now
            return ci, None, str(os_problem(source.describe(member), e))

    arrays: list[list[np.ndarray]] = [[] for _ in members]
    problems: list[str] = []
    with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:
        for done, (ci, arr, err) in enumerate(pool.map(decode, jobs, chunksize=64), 1):
            if err:
                problems.append(err)
            else:
                arrays[ci].append(arr)
            if progress and (done % 256 == 0 or done == total):
                progress(done, total)
    return arrays, problems


def _gather(source: TreeSource, chosen: Sequence[str], arrays: Sequence[list[np.ndarray]], problems: list[str],
            min_images: int, name: str) -> FewShotDataset:
    """The dataset of the classes with at least ``min_images`` decoded images; the others are
    reported in ``problems``."""
    keep = [i for i, a in enumerate(arrays) if len(a) >= min_images]
    for i, a in enumerate(arrays):
        if len(a) < min_images:
            problems.append(f"class '{chosen[i]}' dropped: {len(a)} usable images, at least {min_images} needed")
    if not keep:
        raise DatasetError(f"no usable images in '{printable(source.path)}'" + (f" ({problems[0]})" if problems else ""))
    stacked = np.stack([x for i in keep for x in arrays[i]])
    return FewShotDataset(
        torch.from_numpy(stacked),
        [chosen[i] for i in keep],
        [len(arrays[i]) for i in keep],
        name,
        problems,
    )


# --------------------------------------------------------------------------------------------
# Dataset plugins


@dataclass(frozen=True)
class DatasetSpec:
    """A named dataset a plugin offers through the ``metastudio_datasets`` hook.

    ``load(root, split, *, image_size, progress, **options) -> FewShotDataset`` reads one
    split. ``root`` is a path (or None: the loader's default location, downloading the
    official files where it can); ``image_size`` None means the dataset's own default.
    ``options`` declares extra keyword arguments (e.g. Omniglot's ``protocol``) as
    :class:`~metastudio.algorithms.base.HyperParameter` s so that CLIs and forms can offer them.
    """

    name: str
    load: Callable[..., FewShotDataset]
    description: str = ""
    splits: tuple[str, ...] = ("train", "val", "test")
    image_size: int | None = None
    channels: int | None = None
    options: tuple = ()


def load_folder_split(root: str | os.PathLike, split: str | None, *, image_size: int | None = None,
                      channels: int = 3, progress: Progress | None = None, per_class: int = 0,
                      **_: object) -> FewShotDataset:
    """The ``folder`` dataset: ``root/<split>`` (folder or ``<split>.zip``) when it exists, else
    ``root`` itself (a folder or zip of class folders) for any split. ``per_class`` > 0 keeps
    only the first that many images (by name) of each class."""
    if root is None:
        raise DatasetError("the folder dataset needs --root: a folder (or zip) of class folders")
    base = Path(root).expanduser()
    path = base
    if split:
        for candidate in (base / split, base / f"{split}.zip"):
            if candidate.exists():
                path = candidate
                break
    name = f"{base.name}-{split}" if path != base else base.name
    if per_class:
        name += f" (first {per_class} per class)"
    return load_class_folders(path, image_size=image_size or 84, channels=channels, name=name, progress=progress,
                              max_per_class=per_class or None)
