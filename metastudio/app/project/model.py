"""The data model of a project: its classes, images and models, and its working folder.

While a project is open, its files live in a *working folder* (``Project.workdir``)::

    workdir/images/<16 hex>.<ext>      copies of the images, named by their content
    workdir/models/<name>.safetensors  models trained in (or added to) the project

An image copy is named by the first 16 hex digits of the SHA-256 of its bytes plus its
lower-case extension, so importing the same picture twice stores it once. Copies are never
deleted while the project is open (undo may bring an image back); saving writes only the ones
still referenced. The names allowed here (:data:`IMAGE_FILE`, :func:`is_safe_model_name`) are
the ones a project file may hold (:mod:`~metastudio.app.project.manifest`).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import secrets
import shutil
import stat
import struct
import unicodedata
import uuid
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from metastudio.app.project.cleanup import make_workdir, sweep_once
from metastudio.data import images as _words
from metastudio.data.images import decoding_warnings
from metastudio.data.listing import pixel_formats
from metastudio.data.images import MAX_PIXELS, is_image_name
from metastudio.errors import CheckpointError, ImageLoadError, message_of, os_reason

PROJECT_SUFFIX = ".metastudio"

DEFAULT_COLOURS: tuple[str, ...] = (
    # The Okabe-Ito palette (distinguishable with every common colour-vision deficiency),
    # black moved last, plus indigo and olive from Paul Tol's "muted" palette.
    "#0072b2",  # blue
    "#e69f00",  # orange
    "#009e73",  # bluish green
    "#d55e00",  # vermillion
    "#cc79a7",  # reddish purple
    "#56b4e9",  # sky blue
    "#f0e442",  # yellow
    "#332288",  # indigo
    "#999933",  # olive
    "#000000",  # black
)
"""Colours given to new classes, in order (``"#rrggbb"``); they repeat after the last one."""

DEFAULT_MODEL: dict[str, Any] = {"kind": "shipped", "name": "photos"}

#: The working folder's (and the project file's) folders of image copies and of models.
IMAGES = "images"
MODELS = "models"
MODEL_SUFFIX = ".safetensors"

#: The name of an image copy: 16 hex digits of its SHA-256 and its lower-case extension.
IMAGE_FILE = re.compile(r"[0-9a-f]{16}\.[a-z0-9]{1,5}")
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._ -]{0,99}\.safetensors")
COLOUR = re.compile(r"#[0-9a-fA-F]{6}")
_WINDOWS_RESERVED = frozenset(
    {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}
)


def is_safe_model_name(name: str) -> bool:
    """Whether ``name`` is a plain, safe base name of a model file (ending ``.safetensors``)."""
    return bool(MODEL_NAME.fullmatch(name)) and name.split(".")[0].rstrip(" ").lower() not in _WINDOWS_RESERVED


def part_path(target: Path) -> Path:
    """A fresh temporary name next to ``target``, to write it there and rename it over ``target``."""
    return target.with_name(f".{target.name}.{secrets.token_hex(4)}.part")


# ----------------------------------------------------------------------------------------------
# Data


@dataclass
class ImageItem:
    """One image of the project: a support image of a class, or a query image.

    ``file`` names the copy in the project's images folder (several items may share one
    copy); ``source`` says where it came from (the original path, or ``"clipboard"``).
    """

    id: str
    file: str
    source: str = ""

    @property
    def name(self) -> str:
        """Display name: the base name of ``source`` (``/`` or ``\\`` separated), else ``file``."""
        base = re.split(r"[\\/]", self.source.rstrip("\\/"))[-1] if self.source else ""
        return base or self.file


@dataclass
class ClassEntry:
    """A class of the project: its name, its colour (``"#rrggbb"``) and its support images."""

    id: str
    name: str
    colour: str
    images: list[ImageItem] = field(default_factory=list)




class Project:
    """An open project. See the package documentation for the working folder and file format.

    ``workdir`` holds the image copies and models while the project is open. When it is
    ``None``, a fresh temporary folder is made (:func:`~metastudio.app.project.cleanup.make_workdir`),
    and :meth:`close` (or the garbage collector, or the interpreter's exit) deletes it; one that
    a killed process left is deleted by the next process that makes a project. A given
    ``workdir`` is never deleted.

    The project is plain data, not thread-safe: change it, and save it, from one thread.
    """

    def __init__(self, workdir: Path | None = None):
        self._finalizer: weakref.finalize | None = None
        if workdir is None:
            self.workdir = make_workdir()
            self.own_workdir()
        else:
            sweep_once()
            self.workdir = Path(workdir)
        (self.workdir / IMAGES).mkdir(parents=True, exist_ok=True)
        (self.workdir / MODELS).mkdir(parents=True, exist_ok=True)
        self.path: Path | None = None
        self.classes: list[ClassEntry] = []
        self.queries: list[ImageItem] = []
        self.model: dict[str, Any] = dict(DEFAULT_MODEL)
        self.hyperparameters: dict[str, Any] = {}
        self.settings: dict[str, Any] = {}
        self.problems: list[str] = []

    def __repr__(self) -> str:
        return (
            f"<Project {str(self.path) if self.path else '(unsaved)'}: {len(self.classes)} classes, "
            f"{sum(len(c.images) for c in self.classes)} support images, {len(self.queries)} queries>"
        )

    def own_workdir(self) -> None:
        """Make the working folder this project's own: :meth:`close` (or the garbage collector,
        or the interpreter's exit) deletes it. For a temporary folder made for the project."""
        self._finalizer = weakref.finalize(self, shutil.rmtree, str(self.workdir), ignore_errors=True)

    def close(self) -> None:
        """Delete the working folder if this project made it (a temporary one). Idempotent."""
        if self._finalizer is not None:
            self._finalizer()

    def __enter__(self) -> Project:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- images ---------------------------------------------------------------------------

    @property
    def _images_dir(self) -> Path:
        return self.workdir / IMAGES

    @property
    def _models_dir(self) -> Path:
        return self.workdir / MODELS

    def image_path(self, item: ImageItem) -> Path:
        """Where the copy of ``item``'s image is while the project is open."""
        if not IMAGE_FILE.fullmatch(item.file):
            raise ValueError(f"not a project image file name: {item.file!r}")
        return self._images_dir / item.file

    def import_file(self, path: str | os.PathLike[str], source: str | None = None) -> ImageItem:
        """Copy an image file into the project and return a new item (new id) for it.

        The same bytes are stored once, whatever the number of imports. ``source`` defaults to
        the absolute path of the file. Raises :class:`ImageLoadError` (naming the file and
        saying why) for a missing file, a folder, an empty file, a name that is not an image
        type MetaStudio reads, or a file Pillow cannot identify as an image (only its header is
        read here, nothing is decoded). Nothing is left behind on failure.
        """
        label = os.fsdecode(path)
        try:
            info = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            raise ImageLoadError(label, "file not found") from None
        except OSError as error:
            raise ImageLoadError(label, os_reason(error)) from None
        if stat.S_ISDIR(info.st_mode):
            raise ImageLoadError(label, _words.A_FOLDER, "it is a directory, not an image file")
        if not stat.S_ISREG(info.st_mode):
            raise ImageLoadError(label, _words.NOT_A_FILE, "it is not a regular file")
        if not is_image_name(label):
            raise ImageLoadError(label, _name_reason(label))
        if info.st_size == 0:
            raise ImageLoadError(label, "the file is empty")
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except OSError as error:
            raise ImageLoadError(label, os_reason(error)) from None
        ext = os.path.splitext(label)[1].lower()
        return self._ingest(data, ext, label, os.path.abspath(label) if source is None else source)

    def import_bytes(self, data: bytes, suffix: str = ".png", source: str = "clipboard") -> ImageItem:
        """Store an in-memory image file (such as a pasted one) like :meth:`import_file`.

        ``suffix`` is the file type's extension (``".png"``, ``"jpg"``, ...). Raises
        :class:`ImageLoadError` (labelled with ``source``) for empty data, a suffix that is not
        an image type, or bytes Pillow cannot identify.
        """
        label = source or "<bytes>"
        ext = suffix.lower() if suffix.startswith(".") else f".{suffix.lower()}"
        if not is_image_name(f"image{ext}"):
            raise ImageLoadError(label, _words.UNSUPPORTED, f"'{suffix}' is not an image type MetaStudio can read")
        data = bytes(data)
        if not data:
            raise ImageLoadError(label, "the data is empty")
        return self._ingest(data, ext, label, source)

    def _ingest(self, data: bytes, ext: str, label: str, source: str) -> ImageItem:
        """Check ``data`` is an image, store it once under its content name, return a new item."""
        _check_image_header(data, label)
        file = hashlib.sha256(data).hexdigest()[:16] + ext
        target = self._images_dir / file
        try:
            if not (target.is_file() and target.stat().st_size == len(data)):
                _write_bytes_atomically(target, data)
        except OSError as error:
            raise ImageLoadError(label, f"could not copy it into the project: {os_reason(error)}") from None
        return ImageItem(id=uuid.uuid4().hex, file=file, source=source)

    # -- classes --------------------------------------------------------------------------

    def add_class(self, name: str | None = None, colour: str | None = None) -> ClassEntry:
        """Append a new, empty class and return it.

        ``name`` defaults to :meth:`unique_class_name`; ``colour`` (``"#rrggbb"``, stored
        lower-case) to the first :data:`DEFAULT_COLOURS` entry no class uses yet.
        """
        if name is None:
            name = self.unique_class_name()
        if colour is None:
            colour = self._next_colour()
        elif not COLOUR.fullmatch(colour):
            raise ValueError(f"a class colour must look like '#rrggbb', not {colour!r}")
        entry = ClassEntry(id=uuid.uuid4().hex, name=name, colour=colour.lower())
        self.classes.append(entry)
        return entry

    def _next_colour(self) -> str:
        used = {c.colour.lower() for c in self.classes}
        for colour in DEFAULT_COLOURS:
            if colour not in used:
                return colour
        return DEFAULT_COLOURS[len(self.classes) % len(DEFAULT_COLOURS)]

    def unique_class_name(self, base: str = "Class") -> str:
        """The first of ``"<base> 1"``, ``"<base> 2"``, ... that no class uses (ignoring case)."""
        used = {c.name.casefold() for c in self.classes}
        number = 1
        while f"{base} {number}".casefold() in used:
            number += 1
        return f"{base} {number}"

    def class_by_id(self, class_id: str) -> ClassEntry:
        """The class with this id; ``KeyError`` if there is none."""
        for entry in self.classes:
            if entry.id == class_id:
                return entry
        raise KeyError(class_id)

    def class_by_name(self, name: str) -> ClassEntry | None:
        """The first class with this name (ignoring case), or ``None``."""
        wanted = name.casefold()
        return next((c for c in self.classes if c.name.casefold() == wanted), None)

    def locate(self, image_id: str) -> tuple[ClassEntry | None, int]:
        """``(class, index in its images)`` of an image, or ``(None, index in queries)``.

        ``KeyError`` if no image has this id.
        """
        for entry in self.classes:
            for index, item in enumerate(entry.images):
                if item.id == image_id:
                    return entry, index
        for index, item in enumerate(self.queries):
            if item.id == image_id:
                return None, index
        raise KeyError(image_id)

    def all_images(self) -> list[ImageItem]:
        """Every image item: the support images class by class, then the queries."""
        return [item for entry in self.classes for item in entry.images] + list(self.queries)

    # -- models ---------------------------------------------------------------------------

    def add_model_file(self, path: str | os.PathLike[str], name: str | None = None) -> str:
        """Copy a ``.safetensors`` model file into the project and return its name there.

        The name is made from ``name`` (default: the file's name): reduced to letters, digits,
        ``.``, ``_``, ``-`` and spaces, ending ``.safetensors``, and made unique (``-2``,
        ``-3``, ... ignoring case). Raises :class:`CheckpointError` when the file is missing,
        is not a safetensors file, or cannot be copied.
        """
        src = Path(path)
        if not src.is_file():
            what = "it is a directory" if src.is_dir() else "the file does not exist"
            raise CheckpointError(f"cannot add model '{src}' to the project: {what}")
        reason = _safetensors_problem(src)
        if reason:
            raise CheckpointError(f"cannot add model '{src}' to the project: {reason}")
        final = self._unique_model_name(_safe_model_name(name if name is not None else src.name))
        target = self._models_dir / final
        tmp = part_path(target)
        try:
            shutil.copyfile(src, tmp)
            os.replace(tmp, target)
        except OSError as error:
            tmp.unlink(missing_ok=True)
            raise CheckpointError(f"cannot add model '{src}' to the project: {os_reason(error)}") from None
        return final

    def _unique_model_name(self, name: str) -> str:
        used = {n.casefold() for n in os.listdir(self._models_dir)}
        if name.casefold() not in used:
            return name
        stem = name[: -len(MODEL_SUFFIX)]
        number = 2
        while f"{stem}-{number}{MODEL_SUFFIX}".casefold() in used:
            number += 1
        return f"{stem}-{number}{MODEL_SUFFIX}"

    def model_path(self, name: str) -> Path:
        """Where the project's model ``name`` is while the project is open (``ValueError`` for
        a name that is not a plain, safe ``.safetensors`` file name)."""
        if not is_safe_model_name(name):
            raise ValueError(f"not a project model name: {name!r}")
        return self._models_dir / name

    def model_files(self) -> list[str]:
        """Names of the models in the project (sorted): what saving writes under ``models/``."""
        folder = self._models_dir
        return sorted(n for n in os.listdir(folder) if is_safe_model_name(n) and (folder / n).is_file())

    # -- manifest -------------------------------------------------------------------------

    # -- the project file -----------------------------------------------------------------

    def to_manifest(self) -> dict[str, Any]:
        """The project as a JSON document (a fresh copy; ``saved_at`` is now).

        Raises :class:`ProjectError` if ``model``, ``hyperparameters`` or ``settings`` hold
        something JSON cannot represent (NaN included).
        """
        from metastudio.app.project.manifest import to_manifest

        return to_manifest(self)

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any], workdir: Path) -> Project:
        """Build a project from a manifest whose files are already in ``workdir``.

        Raises :class:`ProjectError` for a wrong format, a newer format version or a manifest
        of the wrong shape. An image whose file is missing from ``workdir/images`` is left out
        and reported in ``problems``. ``workdir`` is not deleted by :meth:`close`.
        """
        from metastudio.app.project.manifest import build_project, parse_manifest

        return build_project(cls, parse_manifest(manifest), Path(workdir), {})

    def write(self, path: str | os.PathLike[str]) -> None:
        """Write the whole project to a ``.metastudio`` file, atomically.

        The archive is written to a temporary file in the same folder, flushed to disk, then
        renamed over ``path``. On any failure (a full disk, no permission, ...) that temporary
        file is removed, an existing file at ``path`` is left untouched, and
        :class:`ProjectError` says what happened. ``self.path`` does not change.
        """
        from metastudio.app.project.archive import write_project

        write_project(self, Path(path))

    def save(self, path: str | os.PathLike[str]) -> None:
        """:meth:`write` the project to ``path``, then remember ``path`` as its file."""
        self.write(path)
        self.path = Path(path)

    @classmethod
    def open(cls, path: str | os.PathLike[str], workdir: Path | None = None) -> Project:
        """Open a ``.metastudio`` file (:mod:`~metastudio.app.project.archive`); sets ``project.path``.

        Its files are unpacked into ``workdir`` (default: a fresh temporary folder that
        :meth:`close` deletes). Raises :class:`ProjectError`, naming the file, when it is
        missing, not a zip archive, has no valid manifest, was made by a newer MetaStudio, or
        names unsafe members. Images missing from the archive or damaged are left out and
        listed in ``project.problems``.
        """
        from metastudio.app.project.archive import open_project

        return open_project(cls, Path(path), workdir)


# ----------------------------------------------------------------------------------------------
# Checks and names


def _write_bytes_atomically(target: Path, data: bytes) -> None:
    tmp = part_path(target)
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)



def _check_image_header(data: bytes, label: str) -> None:
    """Raise :class:`ImageLoadError` unless Pillow recognises ``data`` as an image of an
    acceptable size. Only the header is read."""
    try:
        with decoding_warnings(), Image.open(io.BytesIO(data), formats=pixel_formats()) as image:
            width, height = image.size
    except UnidentifiedImageError:
        raise ImageLoadError(label, _words.NOT_A_PICTURE, "not an image Pillow can read") from None
    except Image.DecompressionBombError:
        size = _words._header_size(io.BytesIO(data))
        size_text = f"{size[0]}×{size[1]} pixels" if size else "too many pixels"
        raise ImageLoadError(label, _words.TOO_BIG.format(size=size_text, limit=MAX_PIXELS),
                             "over Pillow's decompression bomb limit") from None
    except Exception as error:
        raise ImageLoadError(label, _words.DAMAGED, f"the file is truncated or corrupt: {message_of(error)}") from None
    if width * height > MAX_PIXELS:
        raise ImageLoadError(
            label, _words.TOO_BIG.format(size=f"{width}×{height} pixels", limit=MAX_PIXELS),
            f"image is {width}x{height} pixels, more than the {MAX_PIXELS:,}-pixel limit (possible decompression bomb)",
        )


def _name_reason(label: str) -> str:
    """Why ``is_image_name`` refused a file name."""
    parts = label.replace("\\", "/").split("/")
    base = parts[-1]
    if "__MACOSX" in parts:
        return "it is a hidden file the Mac adds to zip files, not a picture"
    if base.startswith("."):
        return "it is a hidden file (its name starts with '.'), so it is left out"
    ext = os.path.splitext(base)[1]
    if not ext:
        return "the file name has no ending such as .jpg or .png, so it isn't known to be a picture"
    return f"'{ext}' files are not pictures MetaStudio can open (use .jpg, .png, .webp, .bmp, .gif or .tif)"


def _safetensors_problem(path: Path) -> str | None:
    """A cheap check that ``path`` looks like a safetensors file (header length + JSON)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            head = handle.read(9)
    except OSError as error:
        return os_reason(error)
    if len(head) < 9:
        return "it is not a safetensors model file (too short)"
    (length,) = struct.unpack("<Q", head[:8])
    if length < 2 or 8 + length > size or head[8:9] != b"{":
        return "it is not a safetensors model file"
    return None


def _safe_model_name(raw: str) -> str:
    """A safe ``.safetensors`` base name made from ``raw`` (accents dropped, odd characters
    replaced by ``-``)."""
    base = re.split(r"[\\/]", raw)[-1]
    if base.lower().endswith(MODEL_SUFFIX):
        base = base[: -len(MODEL_SUFFIX)]
    base = unicodedata.normalize("NFKD", base).encode("ascii", "ignore").decode("ascii")
    base = re.sub(r"[^A-Za-z0-9._ -]+", "-", base)
    base = re.sub(r"-{2,}", "-", base).strip(" ._-")[:80].rstrip(" ._-")
    name = f"{base or 'model'}{MODEL_SUFFIX}"
    return name if is_safe_model_name(name) else f"model-{name}"
