"""Listing files and folders: which entries are pictures to read, and why each other one can't be used.

One set of rules serves the query files of ``metastudio classify`` (:func:`find_images`) and the
class folders of a dataset (:func:`scan_folder` for a folder, :func:`scan_zip` for a zip's
members), so that a folder means the same everywhere:

* a file is a picture when :func:`is_image_name` accepts its name (a format Pillow decodes here,
  in this process); one named like a picture format that is not read (SVG, PDF, EPS, HEIC where
  this Pillow lacks it...) is named as unsupported, and other files pass unsaid;
* hidden entries (``.thumbnails``, ``._photo.jpg``) and ``__MACOSX`` folders are passed over;
* links to folders are followed, except back into a folder they are in (a loop); a folder reached
  a second time (through a link) is named, not walked again, so no picture is listed twice and
  no web of links makes the walk grow without end;
* every entry that can't be used -- a name that is not UTF-8 text, a name or path too long, a
  link to nothing, a link loop, a pipe, device or socket, a folder that can't be opened -- is an
  :class:`~metastudio.errors.ImageLoadError` naming it (its ``path`` printable: non-UTF-8 bytes
  as ``\\xff``) with its reason in everyday words, and the rest is used.

Nothing here opens a file: whether a picture decodes is for :mod:`metastudio.data.images`, which
asks :func:`unrecognised` why a file Pillow did not recognise is not a picture it can read.
"""

from __future__ import annotations

import errno
import functools
import os
import re
import stat
import zipfile
from collections.abc import Iterable
from pathlib import Path

from PIL import Image, ImageFile

from metastudio.errors import ImageLoadError, os_reason

__all__ = [
    "IMAGE_EXTENSIONS",
    "pixel_formats",
    "entry_problem",
    "find_images",
    "is_image_name",
    "printable",
    "unrecognised",
    "scan_folder",
    "scan_zip",
]

# Formats Pillow identifies but cannot decode on its own (MPEG is only recognised).
_IDENTIFY_ONLY_FORMATS = frozenset({"MPEG"})
# Formats never handed to Pillow: EPS is read by running an external interpreter (Ghostscript),
# WMF/EMF are drawings (Pillow renders them only through Windows' own drawing code).
EXTERNAL_FORMATS = frozenset({"EPS", "WMF"})
# Picture formats a person may well have (phones, cameras, editors, documents) that are not read
# here: a file with one of these names is an unsupported picture, not "not a picture".
PICTURE_EXTENSIONS = frozenset({
    ".heic", ".heif", ".avif", ".webp", ".jxl", ".jp2", ".j2k", ".svg", ".psd", ".xcf", ".raw", ".dng",
    ".cr2", ".cr3", ".nef", ".arw", ".orf", ".rw2", ".raf", ".eps", ".ps", ".pdf", ".svgz", ".ai",
    ".wmf", ".emf",
})
# Formats whose decoder is an optional part of the Pillow build (feature name for PIL.features).
_OPTIONAL_DECODERS = {"AVIF": "avif", "WEBP": "webp", "JPEG2000": "jpg_2000"}

# Why an entry can't be used, or a file Pillow did not recognise (see unrecognised): what a
# person reads (ImageLoadError.reason).
NOT_FOUND = "file not found"
NO_PERMISSION = "you don't have permission to open this file"
FOLDER_NO_PERMISSION = "you don't have permission to open this folder"
NOT_A_FILE = "it is not an ordinary file"
UNREADABLE = "the file could not be read"
UNSUPPORTED = "this picture format isn't supported"
NOT_A_PICTURE = "this file is not a picture (or it is damaged)"
TEXT_FILE = "this file is not a picture: it contains text"
DAMAGED = "the picture is damaged and can't be read"
BAD_NAME, NAME_TOO_LONG = "its name is not valid text (UTF-8): rename it", "the name is too long"
BROKEN_LINK, LINK_LOOP = "it is a link to nothing (what it pointed to is gone)", "it is a link that goes round in a loop"
FOLDER_LOOP = "it is a link to a folder it is in (a loop)"
ALREADY_LISTED = "it is the same folder as one already listed (through a link)"
#: The reasons that belong to one file (not to a folder): the file was meant as a picture and isn't one.
FILE_REASONS = frozenset({NOT_FOUND, NO_PERMISSION, NOT_A_FILE, UNREADABLE, UNSUPPORTED, BAD_NAME, NAME_TOO_LONG,
                          BROKEN_LINK, LINK_LOOP})


def pixel_formats() -> tuple[str, ...]:
    """Pillow's format names that it decodes itself, in this process: the ``formats`` allowlist
    every ``Image.open`` of the application passes. Left out: EPS (Ghostscript), WMF (drawings),
    MPEG (identified only) and stubs that need a handler registered from outside (BUFR, GRIB, HDF5).
    A plugin that registers a format later (pillow-heif, say) adds to it."""
    Image.init()
    return _allowed(tuple(Image.OPEN))


@functools.lru_cache(maxsize=8)
def _allowed(registered: tuple[str, ...]) -> tuple[str, ...]:
    allowed = []
    for fmt in registered:
        factory = Image.OPEN[fmt][0]
        if fmt in EXTERNAL_FORMATS or fmt in _IDENTIFY_ONLY_FORMATS:
            continue
        if isinstance(factory, type) and issubclass(factory, ImageFile.StubImageFile):
            continue
        allowed.append(fmt)
    return tuple(allowed)


def _readable_extensions() -> frozenset[str]:
    """Lower-case extensions (with the dot) of every format in :func:`pixel_formats` whose decoder
    this Pillow build has."""
    from PIL import features

    extensions, allowed = set(), pixel_formats()
    for extension, fmt in Image.registered_extensions().items():
        if fmt == "MPO":  # opened by the JPEG plugin, which recognises the MPO markers
            extensions.add(extension.lower())
            continue
        if fmt not in allowed:
            continue
        feature = _OPTIONAL_DECODERS.get(fmt)
        if feature is not None:
            try:
                if not features.check(feature):
                    continue
            except Exception:  # pragma: no cover - feature unknown to an older Pillow
                pass
        extensions.add(extension.lower())
    return frozenset(extensions)


IMAGE_EXTENSIONS: frozenset[str] = _readable_extensions()
"""Lower-case file extensions (``".jpg"``, ``".png"``, ...) of the formats Pillow can read here."""


def is_image_name(name: str | os.PathLike[str]) -> bool:
    """Whether a file name (or a path inside a folder or an archive) looks like a readable image.

    The test is by extension, case-insensitive. Hidden files (base name starting with ``.``,
    such as macOS ``._photo.jpg`` resource forks) and anything under a ``__MACOSX/`` folder
    are not images.
    """
    text = os.fspath(name).replace("\\", "/")
    parts = text.split("/")
    if "__MACOSX" in parts:
        return False
    base = parts[-1]
    if not base or base.startswith("."):
        return False
    return os.path.splitext(base)[1].lower() in IMAGE_EXTENSIONS


def is_unsupported_picture_name(name: str) -> bool:
    """Whether ``name`` ends like a picture or document format that is not read (SVG, PDF, HEIC...)."""
    return os.path.splitext(name)[1].lower() in PICTURE_EXTENSIONS and not is_image_name(name)


def printable(path: str | os.PathLike[str]) -> str:
    """``path`` as text that can be printed: bytes that are not UTF-8 become ``\\xff`` escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def os_problem(label: str, error: BaseException) -> ImageLoadError:
    """The operating system refused to show or open the file ``label``."""
    if isinstance(error, (FileNotFoundError, NotADirectoryError)):
        return ImageLoadError(label, NOT_FOUND, os_reason(error))
    if isinstance(error, PermissionError):
        return ImageLoadError(label, NO_PERMISSION, "permission denied")
    return ImageLoadError(label, UNREADABLE, os_reason(error))


# How documents and drawings start, so that they are refused whatever their names.
_VECTOR_START = re.compile(rb"(%!PS|\xc5\xd0\xd3\xc6)|(%PDF-)|\s*(<\?xml[^>]*>\s*)?(<!--.*?-->\s*|<!DOCTYPE[^>]*>\s*)*<svg",
                           re.IGNORECASE | re.DOTALL)


def unrecognised(head: bytes, label: str) -> ImageLoadError:
    """Why the file ``label``, which Pillow did not recognise as a picture it opens, can't be used,
    from its first bytes ``head`` (512 are plenty): a document or a drawing, a format that is not
    opened here, a picture whose header is damaged, text, or something else."""
    vector = _VECTOR_START.match(head.removeprefix(b"\xef\xbb\xbf"))
    if vector:
        kind = "PostScript (EPS/PS)" if vector.group(1) else "PDF" if vector.group(2) else "SVG"
        return ImageLoadError(label, UNSUPPORTED, f"{kind} files are not opened: only pictures made of pixels are read")
    for fmt in list(Image.ID):
        factory, accept = Image.OPEN.get(fmt, (None, None))
        if not accept:
            continue
        try:
            recognised = accept(head[:16])
        except Exception:
            continue
        if isinstance(recognised, str):  # e.g. "AVIF support not installed"
            return ImageLoadError(label, UNSUPPORTED, f"not an image format that can be read ({recognised})")
        if recognised and fmt not in pixel_formats():  # a drawing (WMF/EMF) or a stub (GRIB, HDF5...)
            return ImageLoadError(label, UNSUPPORTED, f"{fmt} files are not opened: only pictures that Pillow "
                                                      "decodes itself are read")
        if recognised:
            return ImageLoadError(label, DAMAGED, f"the file is truncated or corrupt: it starts like a {fmt} file, "
                                                  "but its header cannot be read")
    extension = os.path.splitext(label)[1].lower()
    reason = NOT_A_PICTURE
    if _looks_like_text(head):
        reason, detail = TEXT_FILE, "the file contains text, not image data"
    elif extension in IMAGE_EXTENSIONS:
        detail = f"the name ends in '{extension}' but the contents are not a known image format"
    elif extension:
        detail = f"'{extension}' files are not an image format Pillow reads"
        if extension in PICTURE_EXTENSIONS:
            reason = UNSUPPORTED
    else:
        detail = "the contents are not a known image format"
    return ImageLoadError(label, reason, f"not an image format that can be read ({detail})")


def _looks_like_text(head: bytes) -> bool:
    if not head or b"\x00" in head:
        return False
    text = head.decode("utf-8", errors="replace")
    shown = sum(1 for char in text if char.isprintable() or char in "\t\r\n")
    return shown >= 0.95 * len(text)


# ----------------------------------------------------------------------------------------------
# Walking folders


def find_images(items: Iterable[str | os.PathLike[str]]) -> tuple[list[Path], list[ImageLoadError]]:
    """The image files that ``items`` (files; folders, searched to any depth) name, and an ImageLoadError
    for each entry that can't be used (see the module's rules). A file given by name is kept whatever
    its name (loading it tells); in a folder, the files :func:`is_image_name` accepts are, sorted by
    name, folder by folder. A given item is never passed over for being hidden."""
    files: list[Path] = []
    problems: list[ImageLoadError] = []
    walked: dict[tuple[int, int], str] = {}  # each folder walked -> the label it was first reached by
    # (path, its DirEntry when found in a folder, the folders it is in, whether it was given)
    stack = [(Path(item).expanduser(), None, (), True) for item in reversed(list(items))]
    while stack:
        path, entry, ancestors, given = stack.pop()
        if not given and (path.name.startswith(".") or path.name == "__MACOSX"):
            continue
        try:
            os.fspath(path).encode("utf-8")
            # A plain file found in a folder is known from the folder's listing; anything else is looked at.
            plain = entry is not None and entry.is_file(follow_symlinks=False)
            info = None if plain else os.stat(path)
        except (OSError, UnicodeError, ValueError) as error:
            problems.append(entry_problem(path, printable(path), error))
            continue
        if info is not None and stat.S_ISDIR(info.st_mode):
            if path.name == "__MACOSX":
                continue
            inside = _folder_children(path, printable(path), info, ancestors, walked, given, problems)
            stack += [(path / child.name, child, (*ancestors, (info.st_dev, info.st_ino)), False) for child in inside]
        elif plain or stat.S_ISREG(info.st_mode):
            if given or is_image_name(path.name):
                files.append(path)
            elif is_unsupported_picture_name(path.name):
                problems.append(ImageLoadError(printable(path), UNSUPPORTED,
                                               "only pictures made of pixels that Pillow reads are opened"))
        else:
            problems.append(ImageLoadError(printable(path), NOT_A_FILE, "it is not a regular file (a device, a pipe or a socket)"))
    return files, problems


def _folder_children(path: Path, label: str, info: os.stat_result, ancestors: tuple, walked: dict,
                     given: bool, problems: list[ImageLoadError]) -> list[os.DirEntry]:
    """The entries of the folder ``path``, last name first (the walk pops them in order), or none
    and a problem when it is a loop, a folder already walked, or can't be opened."""
    key = (info.st_dev, info.st_ino)
    if key in ancestors:
        problems.append(ImageLoadError(label, FOLDER_LOOP, f"it leads to '{printable(os.path.realpath(path))}'"))
        return []
    if key in walked and not given:
        problems.append(ImageLoadError(label, ALREADY_LISTED, f"its pictures are listed as those of '{walked[key]}'"))
        return []
    walked.setdefault(key, label)
    try:
        with os.scandir(path) as entries:
            return sorted(entries, key=lambda entry: entry.name, reverse=True)
    except PermissionError:
        problems.append(ImageLoadError(label, FOLDER_NO_PERMISSION, "permission denied"))
    except OSError as error:
        problems.append(entry_problem(path, label, error))
    return []


def entry_problem(path: Path, label: str, error: BaseException) -> ImageLoadError:
    """Why the name, link or folder ``path`` can't be used, from the error that looking at it raised."""
    if isinstance(error, UnicodeError):
        return ImageLoadError(label, BAD_NAME, "the name has bytes that are not UTF-8 text")
    if isinstance(error, ValueError):  # a NUL character, which no file name can hold
        return ImageLoadError(label, BAD_NAME, "the name holds a NUL character")
    if isinstance(error, FileNotFoundError) and os.path.islink(path):
        return ImageLoadError(label, BROKEN_LINK, "the link points to a file that doesn't exist")
    reason = {errno.ELOOP: LINK_LOOP, errno.ENAMETOOLONG: NAME_TOO_LONG}.get(getattr(error, "errno", None))
    return ImageLoadError(label, reason, os_reason(error)) if reason else os_problem(label, error)


def scan_folder(root: str | os.PathLike[str]) -> tuple[list[str], list[ImageLoadError]]:
    """The pictures under the folder ``root`` as posix paths relative to it (folder by folder,
    sorted by name) and the entries that can't be used, by the rules of :func:`find_images`."""
    root = Path(root)
    files, problems = find_images([root])
    start = len(os.fspath(root / "x")) - 1  # where a path inside root goes on from root
    return [os.fspath(path)[start:].replace(os.sep, "/") for path in files if path != root], problems


# ----------------------------------------------------------------------------------------------
# Zip members


def scan_zip(path: str | os.PathLike[str], members: Iterable[zipfile.ZipInfo]) -> tuple[list[str], list[ImageLoadError]]:
    """The picture members of a zip (the zip at ``path``; ``members``: its entries) sorted by name,
    and the members that can't be used: links and special files stored in the zip, and pictures
    in formats that are not read. Folders, hidden members and ``__MACOSX`` pass unsaid."""
    pictures, problems = [], []
    for info in members:
        name = info.filename
        parts = [part for part in name.split("/") if part]
        if info.is_dir() or not parts or "__MACOSX" in parts or any(part.startswith(".") for part in parts):
            continue
        label = f"{printable(path)}!{name}"
        kind = stat.S_IFMT(info.external_attr >> 16) if info.create_system == 3 else 0  # 3: Unix
        if kind and kind != stat.S_IFREG:
            if is_image_name(name) or is_unsupported_picture_name(name):
                problems.append(ImageLoadError(label, NOT_A_FILE, "the zip stores it as a link or a special file"))
        elif is_image_name(name):
            pictures.append(name)
        elif is_unsupported_picture_name(name):
            problems.append(ImageLoadError(label, UNSUPPORTED, "only pictures made of pixels that Pillow reads are opened"))
    return sorted(pictures), problems
