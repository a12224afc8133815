"""Projects: what a person builds in the app, and the ``.metastudio`` file that holds it.

A project has named, coloured classes, each holding support images; unlabelled query images;
the choice of model (and its hyperparameter overrides); free settings of the GUI; and any
models trained in it.

While a project is open, its files live in a *working folder* (``Project.workdir``)::

    workdir/images/<16 hex>.<ext>      copies of the images, named by their content
    workdir/models/<name>.safetensors  models trained in (or added to) the project

An image copy is named by the first 16 hex digits of the SHA-256 of its bytes plus its
lower-case extension, so importing the same picture twice stores it once. Copies are never
deleted while the project is open (undo may bring an image back); saving writes only the ones
still referenced.

File format
-----------
A ``.metastudio`` file is one zip archive:

``manifest.json`` (deflated, UTF-8, indented JSON)::

    {"format": "metastudio-project", "format_version": 1,
     "app_version": "0.1.0", "saved_at": "2025-01-31T12:00:00+00:00",
     "classes": [{"id": "<hex>", "name": "Cats", "colour": "#0072b2",
                  "images": [{"id": "<hex>", "file": "0123456789abcdef.jpg",
                              "source": "/home/me/cat.jpg"}, ...]}, ...],
     "queries": [{"id": ..., "file": ..., "source": ...}, ...],
     "model": {"kind": "shipped", "name": "photos"},
     "hyperparameters": {...}, "settings": {...},
     "models": ["my-model.safetensors", ...]}

``images/<file>`` (stored: images are already compressed), one per referenced file, and
``models/<name>`` (stored), one per name in ``"models"``.

Opening a file extracts only the members the manifest names, after checking every name
(``images/`` names must look like ``0123456789abcdef.png``, model names are plain safe base
names ending ``.safetensors``), so a crafted archive cannot write outside the working folder.
A file written by a newer MetaStudio (higher ``format_version``) is refused with a message
saying so. An image the manifest names but the archive lacks (or holds damaged) is left out
and reported in ``Project.problems``; the rest of the project still opens.

Saving writes a complete archive to a temporary file next to the target, flushes it to disk
and then renames it over the target, so a crash or a full disk never leaves a half-written
project and the previous file survives.

Recovery
--------
:class:`Recovery` autosaves the open project to ``recovery_dir()`` (one file per running app
session, plus a small JSON sidecar). On a clean exit the session discards its autosave; at
start-up :meth:`Recovery.find` lists the autosaves of sessions that are no longer running,
i.e. that crashed, so the app can offer to restore them.

Nothing is pickled; this module imports no Qt.
"""

from __future__ import annotations

import datetime as _dt
import errno
import hashlib
import io
import json
import os
import re
import secrets
import shutil
import stat
import struct
import sys
import tempfile
import unicodedata
import uuid
import warnings
import weakref
import zipfile
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from metastudio import __version__
from metastudio.data.fileio import atomic_write
from metastudio.errors import CheckpointError, ImageLoadError, ProjectError, message_of, os_reason
from metastudio.data import images as _words
from metastudio.data.images import MAX_PIXELS, is_image_name

__all__ = [
    "DEFAULT_COLOURS",
    "FORMAT",
    "FORMAT_VERSION",
    "PROJECT_SUFFIX",
    "ClassEntry",
    "ImageItem",
    "Project",
    "Recovery",
    "RecoveryInfo",
    "recovery_dir",
]

PROJECT_SUFFIX = ".metastudio"
FORMAT = "metastudio-project"
FORMAT_VERSION = 1

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

MANIFEST = "manifest.json"
_IMAGES = "images"
_MODELS = "models"
_MODEL_SUFFIX = ".safetensors"
_MAX_MANIFEST_BYTES = 64 << 20
_CHUNK = 1 << 20
# What reading a damaged or unsupported zip member raises (OSError: the archive's disk).
_ZIP_READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, ValueError, RuntimeError, NotImplementedError, OSError)

_IMAGE_FILE = re.compile(r"[0-9a-f]{16}\.[a-z0-9]{1,5}")
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._ -]{0,99}\.safetensors")
_COLOUR = re.compile(r"#[0-9a-fA-F]{6}")
_WINDOWS_RESERVED = frozenset(
    {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}
)


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


# ----------------------------------------------------------------------------------------------
# Project


class Project:
    """An open project. See the module documentation for the working folder and file format.

    ``workdir`` holds the image copies and models while the project is open. When it is
    ``None``, a fresh temporary folder is made, and :meth:`close` (or the garbage collector,
    or the interpreter's exit) deletes it. A given ``workdir`` is never deleted.

    The project is plain data, not thread-safe: change it, and save it, from one thread.
    """

    def __init__(self, workdir: Path | None = None):
        self._finalizer: weakref.finalize | None = None
        if workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="metastudio-project-"))
            self._own_workdir()
        else:
            self.workdir = Path(workdir)
        (self.workdir / _IMAGES).mkdir(parents=True, exist_ok=True)
        (self.workdir / _MODELS).mkdir(parents=True, exist_ok=True)
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

    def _own_workdir(self) -> None:
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
        return self.workdir / _IMAGES

    @property
    def _models_dir(self) -> Path:
        return self.workdir / _MODELS

    def image_path(self, item: ImageItem) -> Path:
        """Where the copy of ``item``'s image is while the project is open."""
        if not _IMAGE_FILE.fullmatch(item.file):
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
        elif not _COLOUR.fullmatch(colour):
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
        tmp = target.with_name(f".{final}.{secrets.token_hex(4)}.part")
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
        stem = name[: -len(_MODEL_SUFFIX)]
        number = 2
        while f"{stem}-{number}{_MODEL_SUFFIX}".casefold() in used:
            number += 1
        return f"{stem}-{number}{_MODEL_SUFFIX}"

    def model_path(self, name: str) -> Path:
        """Where the project's model ``name`` is while the project is open (``ValueError`` for
        a name that is not a plain, safe ``.safetensors`` file name)."""
        if not _is_safe_model_name(name):
            raise ValueError(f"not a project model name: {name!r}")
        return self._models_dir / name

    def model_files(self) -> list[str]:
        """Names of the models in the project (sorted): what saving writes under ``models/``."""
        folder = self._models_dir
        return sorted(n for n in os.listdir(folder) if _is_safe_model_name(n) and (folder / n).is_file())

    # -- manifest -------------------------------------------------------------------------

    def to_manifest(self) -> dict[str, Any]:
        """The project as a JSON document (a fresh copy; ``saved_at`` is now).

        Raises :class:`ProjectError` if ``model``, ``hyperparameters`` or ``settings`` hold
        something JSON cannot represent (NaN included).
        """
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "app_version": __version__,
            "saved_at": _now(),
            "classes": [
                {"id": c.id, "name": c.name, "colour": c.colour, "images": [_item_json(i) for i in c.images]}
                for c in self.classes
            ],
            "queries": [_item_json(i) for i in self.queries],
            "model": self.model,
            "hyperparameters": self.hyperparameters,
            "settings": self.settings,
            "models": self.model_files(),
        }
        try:
            text = json.dumps(manifest, ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as error:
            raise ProjectError(
                f"the project's model choice, hyperparameters or settings are not plain JSON data: {error}"
            ) from None
        return json.loads(text)

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any], workdir: Path) -> Project:
        """Build a project from a manifest whose files are already in ``workdir``.

        Raises :class:`ProjectError` for a wrong format, a newer format version or a manifest
        of the wrong shape. An image whose file is missing from ``workdir/images`` is left out
        and reported in ``problems``. ``workdir`` is not deleted by :meth:`close`.
        """
        return cls._build(_parse_manifest(manifest), Path(workdir), {})

    @classmethod
    def _build(cls, parsed: _Manifest, workdir: Path, unreadable: Mapping[str, str]) -> Project:
        project = cls(workdir)
        project.model = parsed.model
        project.hyperparameters = parsed.hyperparameters
        project.settings = parsed.settings

        def keep(item: ImageItem, where: str) -> bool:
            reason = unreadable.get(item.file)
            if reason is None and not (project._images_dir / item.file).is_file():
                reason = "is missing from the project"
            if reason is None:
                return True
            project.problems.append(f"image '{item.name}' ({where}) {reason}; it was left out")
            return False

        for entry in parsed.classes:
            entry.images = [i for i in entry.images if keep(i, f"in class '{entry.name}'")]
            project.classes.append(entry)
        project.queries = [i for i in parsed.queries if keep(i, "a query image")]
        present = set(project.model_files())
        for name in parsed.models:
            if name not in present:
                project.problems.append(f"model '{name}' {unreadable.get(name, 'is missing from the project')}")
        if project.model.get("kind") == "project" and project.model.get("name") not in present:
            project.problems.append(f"the chosen model '{project.model.get('name')}' is not in the project")
        return project

    # -- files ----------------------------------------------------------------------------

    def write(self, path: str | os.PathLike[str]) -> None:
        """Write the whole project to a ``.metastudio`` file, atomically.

        The archive is written to a temporary file in the same folder, flushed to disk, then
        renamed over ``path``. On any failure (a full disk, no permission, ...) that temporary
        file is removed, an existing file at ``path`` is left untouched, and
        :class:`ProjectError` says what happened. ``self.path`` does not change.
        """
        path = Path(path)
        manifest = self.to_manifest()
        try:
            _parse_manifest(manifest)  # never write a file that could not be opened again
        except ProjectError as error:
            raise ProjectError(f"cannot save the project to '{path}': {error}") from None
        images = list(dict.fromkeys(i["file"] for i in _manifest_items(manifest)))
        for file in images:
            if not (self._images_dir / file).is_file():
                raise ProjectError(
                    f"cannot save the project to '{path}': the copy of image '{file}' is missing "
                    f"from the project's working folder {self._images_dir}"
                )
        text = json.dumps(manifest, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
        members = [(f"{_IMAGES}/{f}", self._images_dir / f) for f in images]
        members += [(f"{_MODELS}/{m}", self._models_dir / m) for m in manifest["models"]]

        def write_archive(tmp: Path) -> None:
            with open(tmp, "wb") as handle:
                try:
                    with zipfile.ZipFile(handle, "w") as archive:
                        info = _zip_info(MANIFEST, zipfile.ZIP_DEFLATED)
                        archive.writestr(info, text.encode("utf-8"))
                        for arcname, source in members:
                            _add_file(archive, arcname, source)
                except (ValueError, RuntimeError, zipfile.LargeZipFile) as error:  # not OSError
                    raise OSError(errno.EIO, str(error)) from error
                handle.flush()
                os.fsync(handle.fileno())

        try:
            atomic_write(path, write_archive)
        except CheckpointError as error:
            cause = error.__cause__
            reason = os_reason(cause) if isinstance(cause, OSError) else str(error)
            raise ProjectError(
                f"could not save the project to '{path}': {reason}; any previous file there is unchanged"
            ) from cause
        _fsync_folder(path.parent)

    def save(self, path: str | os.PathLike[str]) -> None:
        """:meth:`write` the project to ``path``, then remember ``path`` as its file."""
        self.write(path)
        self.path = Path(path)

    @classmethod
    def open(cls, path: str | os.PathLike[str], workdir: Path | None = None) -> Project:
        """Open a ``.metastudio`` file (see the module documentation); sets ``project.path``.

        Its files are unpacked into ``workdir`` (default: a fresh temporary folder that
        :meth:`close` deletes). Raises :class:`ProjectError`, naming the file, when it is
        missing, not a zip archive, has no valid manifest, was made by a newer MetaStudio, or
        names unsafe members. Images missing from the archive or damaged are left out and
        listed in ``project.problems``.
        """
        path = Path(path)
        where = f"cannot open project '{path}'"
        if not path.exists():
            raise ProjectError(f"{where}: the file does not exist")
        if path.is_dir():
            raise ProjectError(f"{where}: it is a folder, not a project file")
        try:
            archive = zipfile.ZipFile(path)
        except zipfile.BadZipFile:
            raise ProjectError(f"{where}: it is not a MetaStudio project (not a zip archive, or damaged)") from None
        except OSError as error:
            raise ProjectError(f"{where}: {os_reason(error)}") from None
        with archive:
            try:
                parsed = _parse_manifest(_read_manifest(archive))
            except ProjectError as error:
                raise ProjectError(f"{where}: {error}") from None
            owned = workdir is None
            folder = Path(tempfile.mkdtemp(prefix="metastudio-project-")) if workdir is None else Path(workdir)
            try:
                (folder / _IMAGES).mkdir(parents=True, exist_ok=True)
                (folder / _MODELS).mkdir(parents=True, exist_ok=True)
                unreadable: dict[str, str] = {}
                files = dict.fromkeys(i.file for i in parsed.all_items())
                for file in files:
                    reason = _extract(archive, f"{_IMAGES}/{file}", folder / _IMAGES / file, file[:16])
                    if reason:
                        unreadable[file] = reason
                for name in parsed.models:
                    reason = _extract(archive, f"{_MODELS}/{name}", folder / _MODELS / name, None)
                    if reason:
                        unreadable[name] = reason
                project = cls._build(parsed, folder, unreadable)
            except OSError as error:
                if owned:
                    shutil.rmtree(folder, ignore_errors=True)
                raise ProjectError(f"{where}: could not unpack it into {folder}: {os_reason(error)}") from None
            except BaseException:
                if owned:
                    shutil.rmtree(folder, ignore_errors=True)
                raise
        if owned:
            project._own_workdir()
        project.path = path
        return project


# ----------------------------------------------------------------------------------------------
# Manifest parsing


@dataclass
class _Manifest:
    classes: list[ClassEntry]
    queries: list[ImageItem]
    model: dict[str, Any]
    hyperparameters: dict[str, Any]
    settings: dict[str, Any]
    models: list[str]

    def all_items(self) -> Iterable[ImageItem]:
        for entry in self.classes:
            yield from entry.images
        yield from self.queries


def _parse_manifest(manifest: Any) -> _Manifest:
    """Check a manifest's shape and turn it into fresh objects; :class:`ProjectError` if wrong."""
    if not isinstance(manifest, Mapping):
        raise ProjectError("its manifest is not a JSON object")
    if manifest.get("format") != FORMAT:
        raise ProjectError(f"it is not a MetaStudio project (its manifest's format is {manifest.get('format')!r})")
    version = manifest.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ProjectError(f"its manifest has an invalid format_version: {version!r}")
    if version > FORMAT_VERSION:
        raise ProjectError(
            f"it was made by a newer MetaStudio (project format version {version}; MetaStudio "
            f"{__version__} reads up to version {FORMAT_VERSION}); please update MetaStudio"
        )
    ids: set[str] = set()

    def item(raw: Any, where: str) -> ImageItem:
        if not isinstance(raw, Mapping):
            raise ProjectError(f"the manifest's {where} is not an object")
        item_id = _text(raw.get("id"), f"{where}.id", nonempty=True)
        if item_id in ids:
            raise ProjectError(f"the manifest's {where}.id {item_id!r} is used twice")
        ids.add(item_id)
        file = _text(raw.get("file"), f"{where}.file")
        if not _IMAGE_FILE.fullmatch(file):
            raise ProjectError(f"the manifest's {where}.file is not a valid image file name: {file!r}")
        return ImageItem(id=item_id, file=file, source=_text(raw.get("source", ""), f"{where}.source"))

    classes = []
    for c, raw in enumerate(_list(manifest.get("classes", []), "classes")):
        where = f"classes[{c}]"
        if not isinstance(raw, Mapping):
            raise ProjectError(f"the manifest's {where} is not an object")
        class_id = _text(raw.get("id"), f"{where}.id", nonempty=True)
        if class_id in ids:
            raise ProjectError(f"the manifest's {where}.id {class_id!r} is used twice")
        ids.add(class_id)
        name = _text(raw.get("name"), f"{where}.name")
        colour = _text(raw.get("colour"), f"{where}.colour")
        if not _COLOUR.fullmatch(colour):
            raise ProjectError(f"the manifest's {where}.colour is not a '#rrggbb' colour: {colour!r}")
        raw_images = _list(raw.get("images", []), f"{where}.images")
        images = [item(r, f"{where}.images[{i}]") for i, r in enumerate(raw_images)]
        classes.append(ClassEntry(id=class_id, name=name, colour=colour, images=images))
    queries = [item(r, f"queries[{i}]") for i, r in enumerate(_list(manifest.get("queries", []), "queries"))]
    models = []
    for i, name in enumerate(_list(manifest.get("models", []), "models")):
        if not isinstance(name, str) or not _is_safe_model_name(name):
            raise ProjectError(f"the manifest's models[{i}] is not a valid model file name: {name!r}")
        models.append(name)
    return _Manifest(
        classes=classes,
        queries=queries,
        model=_json_copy(_object(manifest.get("model", DEFAULT_MODEL), "model")),
        hyperparameters=_json_copy(_object(manifest.get("hyperparameters", {}), "hyperparameters")),
        settings=_json_copy(_object(manifest.get("settings", {}), "settings")),
        models=list(dict.fromkeys(models)),
    )


def _text(value: Any, where: str, nonempty: bool = False) -> str:
    if not isinstance(value, str) or (nonempty and not value):
        raise ProjectError(f"the manifest's {where} is not {'a non-empty' if nonempty else 'a'} string: {value!r}")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise ProjectError(f"the manifest's {where} is not a list")
    return value


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ProjectError(f"the manifest's {where} is not an object")
    return dict(value)


def _json_copy(value: dict[str, Any]) -> dict[str, Any]:
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as error:
        raise ProjectError(f"the manifest holds data that is not plain JSON: {error}") from None


def _item_json(item: ImageItem) -> dict[str, str]:
    return {"id": item.id, "file": item.file, "source": item.source}


def _manifest_items(manifest: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [i for c in manifest["classes"] for i in c["images"]] + list(manifest["queries"])


def _read_manifest(archive: zipfile.ZipFile) -> Any:
    try:
        info = archive.getinfo(MANIFEST)
    except KeyError:
        raise ProjectError(f"it has no {MANIFEST}: it is not a MetaStudio project, or it is damaged") from None
    if info.file_size > _MAX_MANIFEST_BYTES:
        raise ProjectError(f"its {MANIFEST} is implausibly large ({info.file_size:,} bytes)")
    try:
        data = archive.read(info)
    except (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError, EOFError, ValueError) as error:
        raise ProjectError(f"its {MANIFEST} cannot be read: {message_of(error)}") from None
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ProjectError(f"its {MANIFEST} is not UTF-8 text") from None
    except json.JSONDecodeError as error:
        raise ProjectError(f"its {MANIFEST} is not valid JSON ({error})") from None


# ----------------------------------------------------------------------------------------------
# Zip members


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _zip_info(name: str, compression: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_dt.datetime.now().timetuple()[:6])
    info.compress_type = compression
    info.external_attr = 0o644 << 16
    return info


def _add_file(archive: zipfile.ZipFile, arcname: str, source: Path) -> None:
    """Store ``source`` (uncompressed) as ``arcname``; the entry's date is now (zip dates
    cannot be before 1980, which some copied files' times are)."""
    info = _zip_info(arcname, zipfile.ZIP_STORED)
    with open(source, "rb") as src:
        info.file_size = os.fstat(src.fileno()).st_size
        with archive.open(info, "w", force_zip64=info.file_size >= zipfile.ZIP64_LIMIT) as dst:
            shutil.copyfileobj(src, dst, _CHUNK)


def _extract(archive: zipfile.ZipFile, member: str, target: Path, digest_prefix: str | None) -> str | None:
    """Copy ``member`` to ``target`` (atomically); return why it could not be, or ``None``.

    Problems reading the archive (member missing or damaged, content not matching the
    ``digest_prefix`` its name promises) are returned; a problem writing ``target`` raises
    ``OSError``.
    """
    try:
        info = archive.getinfo(member)
    except KeyError:
        return "is missing from the project file"
    if info.is_dir():
        return "is missing from the project file"
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.part")
    digest = hashlib.sha256()
    try:
        try:
            src = archive.open(info)
        except _ZIP_READ_ERRORS as error:
            return f"cannot be read from the project file ({message_of(error)})"
        with src, open(tmp, "wb") as dst:
            while True:
                try:
                    chunk = src.read(_CHUNK)
                except _ZIP_READ_ERRORS as error:
                    return f"is damaged in the project file ({message_of(error)})"
                if not chunk:
                    break
                digest.update(chunk)
                dst.write(chunk)
        if digest_prefix is not None and digest.hexdigest()[:16] != digest_prefix:
            return "is damaged in the project file (its content does not match its name)"
        os.replace(tmp, target)
        return None
    finally:
        tmp.unlink(missing_ok=True)


def _write_bytes_atomically(target: Path, data: bytes) -> None:
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.part")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX; best effort)."""
    if os.name != "posix":
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------------------------
# Checks and names


def _check_image_header(data: bytes, label: str) -> None:
    """Raise :class:`ImageLoadError` unless Pillow recognises ``data`` as an image of an
    acceptable size. Only the header is read."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
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


def _is_safe_model_name(name: str) -> bool:
    return bool(_MODEL_NAME.fullmatch(name)) and name.split(".")[0].rstrip(" ").lower() not in _WINDOWS_RESERVED


def _safe_model_name(raw: str) -> str:
    """A safe ``.safetensors`` base name made from ``raw`` (accents dropped, odd characters
    replaced by ``-``)."""
    base = re.split(r"[\\/]", raw)[-1]
    if base.lower().endswith(_MODEL_SUFFIX):
        base = base[: -len(_MODEL_SUFFIX)]
    base = unicodedata.normalize("NFKD", base).encode("ascii", "ignore").decode("ascii")
    base = re.sub(r"[^A-Za-z0-9._ -]+", "-", base)
    base = re.sub(r"-{2,}", "-", base).strip(" ._-")[:80].rstrip(" ._-")
    name = f"{base or 'model'}{_MODEL_SUFFIX}"
    return name if _is_safe_model_name(name) else f"model-{name}"




# ----------------------------------------------------------------------------------------------
# Recovery


def recovery_dir() -> Path:
    """Where autosaves go (``METASTUDIO_RECOVERY_DIR`` overrides)."""
    env = os.environ.get("METASTUDIO_RECOVERY_DIR")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_data_dir("metastudio")) / "recovery"


@dataclass
class RecoveryInfo:
    """An autosave left behind by a session that is no longer running."""

    path: Path
    project_path: str | None
    saved_at: str
    pid: int


_AUTOSAVE = re.compile(r"autosave-(\d+)-([0-9a-f]{8})\.metastudio")


class Recovery:
    """The autosave of one running app session.

    Its files are ``autosave-<pid>-<8 hex>.metastudio`` (the project) and a sidecar
    ``autosave-<pid>-<8 hex>.json`` (``{"pid", "project_path", "saved_at"}``) in
    ``directory`` (default :func:`recovery_dir`). Nothing is written before :meth:`write`.
    """

    def __init__(self, directory: Path | None = None):
        self.directory = Path(directory) if directory is not None else recovery_dir()
        self.pid = os.getpid()
        self.path = self.directory / f"autosave-{self.pid}-{secrets.token_hex(4)}{PROJECT_SUFFIX}"
        self.sidecar = self.path.with_suffix(".json")

    def write(self, project: Project) -> None:
        """Autosave ``project`` (``project.path`` is unchanged); :class:`ProjectError` on failure."""
        project.write(self.path)
        info = {
            "pid": self.pid,
            "project_path": str(project.path) if project.path is not None else None,
            "saved_at": _now(),
        }
        data = json.dumps(info, indent=2, ensure_ascii=False).encode("utf-8")
        try:
            atomic_write(self.sidecar, lambda tmp: tmp.write_bytes(data))
        except CheckpointError as error:
            raise ProjectError(str(error)) from error.__cause__

    def discard(self) -> None:
        """Delete this session's autosave (on a clean exit)."""
        for path in (self.path, self.sidecar):
            path.unlink(missing_ok=True)

    @staticmethod
    def find(directory: Path | None = None) -> list[RecoveryInfo]:
        """Autosaves of sessions that are no longer running (crashed), newest first."""
        folder = Path(directory) if directory is not None else recovery_dir()
        try:
            names = os.listdir(folder)
        except OSError:
            return []
        found: list[tuple[float, RecoveryInfo]] = []
        for name in names:
            match = _AUTOSAVE.fullmatch(name)
            path = folder / name
            if not match or not path.is_file():
                continue
            try:
                modified = path.stat().st_mtime
            except OSError:
                continue
            pid = int(match.group(1))
            project_path: str | None = None
            saved_at = _dt.datetime.fromtimestamp(modified, _dt.timezone.utc).isoformat(timespec="seconds")
            try:
                side = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                side = None
            if isinstance(side, dict):
                if isinstance(side.get("pid"), int) and not isinstance(side.get("pid"), bool):
                    pid = side["pid"]
                if isinstance(side.get("project_path"), str):
                    project_path = side["project_path"]
                if isinstance(side.get("saved_at"), str):
                    saved_at = side["saved_at"]
            if _pid_running(pid):
                continue
            found.append((_timestamp(saved_at, modified), RecoveryInfo(path, project_path, saved_at, pid)))
        found.sort(key=lambda pair: pair[0], reverse=True)
        return [info for _, info in found]

    @staticmethod
    def remove(info: RecoveryInfo) -> None:
        """Delete an autosave found by :meth:`find` (and its sidecar)."""
        Path(info.path).unlink(missing_ok=True)
        Path(info.path).with_suffix(".json").unlink(missing_ok=True)


def _timestamp(iso: str, fallback: float) -> float:
    try:
        moment = _dt.datetime.fromisoformat(iso)
    except ValueError:
        return fallback
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_dt.timezone.utc)
    return moment.timestamp()


def _pid_running(pid: int) -> bool:
    """Whether a process ``pid`` exists (our own counts as running). When unsure, ``True``:
    an autosave is then kept rather than offered while its session may still be alive."""
    if pid == os.getpid():
        return True
    if pid <= 0:
        return False
    if sys.platform == "win32":  # os.kill(pid, 0) would terminate the process on Windows
        return _windows_pid_running(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, as another user's process
    except OverflowError:
        return False  # no process can have such a pid
    except OSError:
        return True
    return True


def _windows_pid_running(pid: int) -> bool:  # pragma: no cover - Windows only
    import ctypes

    kernel32 = getattr(ctypes, "windll").kernel32
    handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
    if not handle:
        return kernel32.GetLastError() == 5  # access denied: it exists
    try:
        code = ctypes.c_ulong()
        if not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)):
            return True
        return code.value == 259  # STILL_ACTIVE
    finally:
        kernel32.CloseHandle(handle)
