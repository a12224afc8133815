"""Image loading: the one place where the application turns an image file into pixels.

Every part of MetaStudio (datasets, the CLI, the GUI, benchmarks) loads images through
:func:`load_image` / :func:`load_array`, so that every image is read the same way:

* any format Pillow can read; multi-frame files (GIF, TIFF, APNG, MPO) give their first frame;
* EXIF orientation is applied, so a photo is the right way up;
* transparency (``RGBA``, ``LA``, ``PA``, ``P`` or ``L``/``RGB`` with a transparent colour) is
  composited onto a **white** background instead of being dropped;
* 16-bit, 32-bit integer and float greyscale are scaled to 8 bit (see :func:`_scale_to_uint8`);
* CMYK is converted with its embedded ICC profile when LittleCMS is available;
* a decompression-bomb guard refuses images whose header announces more than ``max_pixels``
  pixels *before* anything is decoded;
* every failure is an :class:`~metastudio.errors.ImageLoadError` whose message names the
  file and whose ``reason`` says why in everyday words (the constants below), never a raw
  Pillow or ``OSError``; the technical wording (Pillow's message, the format it recognised)
  is its ``detail``.

This module depends on numpy and Pillow only (no Qt, no torch).
"""

from __future__ import annotations

import errno
import functools
import io
import os
import re
import stat
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Union

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from metastudio.errors import ImageLoadError, message_of, os_reason

__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_PIXELS",
    "ImageSource",
    "find_images",
    "is_image_name",
    "load_array",
    "load_image",
    "to_array",
]

MAX_PIXELS: int = 120_000_000
"""Largest width x height :func:`load_image` decodes by default (decompression-bomb guard)."""

ImageSource = Union[str, os.PathLike[str], bytes, bytearray, memoryview, IO[bytes]]
"""What :func:`load_image` accepts: a path, the raw bytes of a file, or a binary file object."""

_MODES = ("RGB", "L")
#: How an image of another shape becomes a square (see to_array).
FITS = ("stretch", "center-crop")
_WHITE = {"RGB": (255, 255, 255), "L": 255}
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I;16S", "I;16BS", "I;16LS"})

# Formats Pillow identifies but cannot decode on its own: stubs that need a handler the
# application would have to register (BUFR, GRIB, HDF5, WMF outside Windows) and MPEG, which
# Pillow only recognises.
_IDENTIFY_ONLY_FORMATS = frozenset({"MPEG"})
# Formats Pillow reads by running an external interpreter (EPS: Ghostscript): never opened.
_EXTERNAL_FORMATS = frozenset({"EPS"})
# How documents and drawings start, so that they are refused whatever their names.
_VECTOR_START = re.compile(rb"(%!PS|\xc5\xd0\xd3\xc6)|(%PDF-)|\s*(<\?xml[^>]*>\s*)?(<!--.*?-->\s*|<!DOCTYPE[^>]*>\s*)*<svg",
                           re.IGNORECASE | re.DOTALL)
# Picture formats a person may well have (phones, cameras, editors) that this Pillow may not
# read: a file with one of these names is an unsupported picture, not "not a picture".
_PICTURE_EXTENSIONS = frozenset({
    ".heic", ".heif", ".avif", ".webp", ".jxl", ".jp2", ".j2k", ".svg", ".psd", ".xcf", ".raw", ".dng",
    ".cr2", ".cr3", ".nef", ".arw", ".orf", ".rw2", ".raf", ".eps", ".ps", ".pdf", ".svgz", ".ai",
})
# Formats whose decoder is an optional part of the Pillow build (feature name for PIL.features).
_OPTIONAL_DECODERS = {"AVIF": "avif", "WEBP": "webp", "JPEG2000": "jpg_2000"}


# What a person reads when a file can't be used (ImageLoadError.reason); the technical wording
# goes to ImageLoadError.detail.
NOT_FOUND = "file not found"
NO_PERMISSION = "you don't have permission to open this file"
A_FOLDER = "it is a folder, not a picture"
NOT_A_FILE = "it is not an ordinary file"
EMPTY = "the file is empty"
UNREADABLE = "the file could not be read"
NOT_A_PICTURE = "this file is not a picture (or it is damaged)"
TEXT_FILE = "this file is not a picture: it contains text"
UNSUPPORTED = "this picture format isn't supported"
DAMAGED = "the picture is damaged and can't be read"
PARTLY_READ = "the picture is damaged: only part of it could be read"
NO_MEMORY = "there isn't enough memory to open this picture"
COLOURS_UNSUPPORTED = "the colours of this picture are stored in a way that isn't supported"
TOO_BIG = "the picture is too big: {size}, more than the {limit:,} pixels that can be opened"


def _readable_extensions() -> frozenset[str]:
    """Lower-case extensions (with the dot) of every format this Pillow can actually decode."""
    Image.init()
    from PIL import features

    extensions = set()
    for extension, fmt in Image.registered_extensions().items():
        if fmt == "MPO":  # opened by the JPEG plugin, which recognises the MPO markers
            extensions.add(extension.lower())
            continue
        if fmt not in Image.OPEN or fmt in _IDENTIFY_ONLY_FORMATS or fmt in _EXTERNAL_FORMATS:
            continue
        feature = _OPTIONAL_DECODERS.get(fmt)
        if feature is not None:
            try:
                if not features.check(feature):
                    continue
            except Exception:  # pragma: no cover - feature unknown to an older Pillow
                pass
        factory = Image.OPEN[fmt][0]
        if isinstance(factory, type) and issubclass(factory, ImageFile.StubImageFile):
            continue
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


# Why a folder's entry, or a file given by name, can't be used (beside the reasons below).
BAD_NAME, NAME_TOO_LONG = "its name is not valid text (UTF-8): rename it", "the name is too long"
BROKEN_LINK, LINK_LOOP = "it is a link to nothing (what it pointed to is gone)", "it is a link that goes round in a loop"
FOLDER_LOOP = "it is a link to a folder it is in (a loop)"


def find_images(items: Iterable[str | os.PathLike[str]]) -> tuple[list[Path], list[ImageLoadError]]:
    """The image files that ``items`` (files; folders, searched to any depth) name, and an ImageLoadError
    (``path`` printable: non-UTF-8 bytes as ``\\xff``) for each entry that can't be used. A file given
    by name is kept (loading it tells); in a folder, files :func:`is_image_name` accepts are, sorted;
    other files pass unsaid unless named like a picture format that isn't read (SVG, PDF, EPS...);
    links to folders are followed except back into one they are in; ``__MACOSX`` and problems of
    hidden entries are passed over."""
    files, problems = [], []
    stack = [(Path(item).expanduser(), (), True) for item in reversed(list(items))]
    while stack:
        path, ancestors, given = stack.pop()
        label = os.fsencode(path).decode("utf-8", "backslashreplace")
        report = problems.append if given or not path.name.startswith(".") else (lambda problem: None)
        try:
            os.fsdecode(path).encode("utf-8")
            info = os.stat(path)
            if stat.S_ISDIR(info.st_mode) and path.name != "__MACOSX":
                if (info.st_dev, info.st_ino) in ancestors:
                    report(ImageLoadError(label, FOLDER_LOOP, f"it leads to '{os.path.realpath(path)}'"))
                    continue
                with os.scandir(path) as entries:
                    inside = sorted((path / entry.name for entry in entries), reverse=True)
                stack += [(child, (*ancestors, (info.st_dev, info.st_ino)), False) for child in inside]
        except (OSError, UnicodeError, ValueError) as error:
            report(_entry_error(path, label, error))
            continue
        regular = stat.S_ISREG(info.st_mode)
        if regular and (given or is_image_name(path.name)):
            files.append(path)
        elif regular and os.path.splitext(path.name)[1].lower() in _PICTURE_EXTENSIONS:
            report(ImageLoadError(label, UNSUPPORTED, "only pictures made of pixels that Pillow reads are opened"))
        elif not regular and not stat.S_ISDIR(info.st_mode):
            report(ImageLoadError(label, NOT_A_FILE, "it is not a regular file (a device, a pipe or a socket)"))
    return files, problems


def _entry_error(path: Path, label: str, error: BaseException) -> ImageLoadError:
    """Why the name, link or folder ``path`` can't be used, from the error that looking at it raised."""
    if isinstance(error, UnicodeError):
        return ImageLoadError(label, BAD_NAME, "the name has bytes that are not UTF-8 text")
    if isinstance(error, FileNotFoundError) and os.path.islink(path):
        return ImageLoadError(label, BROKEN_LINK, "the link points to a file that doesn't exist")
    reason = {errno.ELOOP: LINK_LOOP, errno.ENAMETOOLONG: NAME_TOO_LONG}.get(getattr(error, "errno", None))
    return ImageLoadError(label, reason, os_reason(error)) if reason else _os_error(label, error)


# ----------------------------------------------------------------------------------------------
# Loading


def load_image(
    source: ImageSource,
    *,
    mode: str = "RGB",
    name: str | None = None,
    max_pixels: int = MAX_PIXELS,
    draft_size: int | None = None,
) -> Image.Image:
    """Read an image and return it fully loaded, in exactly ``mode`` (``"RGB"`` or ``"L"``).

    ``source`` is a path, the raw bytes of an image file, or a binary file object (read from
    its start; it is not closed). ``name`` is the file name used in error messages; it
    defaults to the path, the file object's ``name`` or ``"<bytes>"``.

    ``max_pixels`` is checked against the size in the file's header before any pixel is
    decoded. Pillow's own hard limit (``2 * PIL.Image.MAX_IMAGE_PIXELS``) still applies above it.

    ``draft_size``: for JPEG files, let the decoder produce a reduced-scale image (1/2, 1/4 or
    1/8) that is still at least ``draft_size`` pixels on both sides, which is much faster
    when the image is only going to be shrunk to that size.

    The returned image holds no open file. Raises :class:`ImageLoadError` for every problem
    with the file and ``ValueError`` for a bad argument.
    """
    if mode not in _MODES:
        raise ValueError(f"mode must be 'RGB' or 'L', not {mode!r}")
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be at least 1, not {max_pixels!r}")
    if draft_size is not None and draft_size < 1:
        raise ValueError(f"draft_size must be at least 1, not {draft_size!r}")

    label, stream, owned = _open_source(source, name)
    try:
        return _decode(stream, label, mode, max_pixels, draft_size)
    finally:
        if owned:
            stream.close()


def _open_source(source: ImageSource, name: str | None) -> tuple[str, IO[bytes], bool]:
    """Turn ``source`` into ``(label for messages, seekable binary stream, whether we own it)``."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        label = name if name is not None else "<bytes>"
        data = io.BytesIO(source)
        if not data.getbuffer().nbytes:
            raise ImageLoadError(label, EMPTY)
        return label, data, True

    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        label = name if name is not None else os.fsdecode(path)
        try:
            info = os.stat(path)
        except (OSError, ValueError) as error:
            raise _os_error(label, error) from None
        if stat.S_ISDIR(info.st_mode):
            raise ImageLoadError(label, A_FOLDER, "it is a directory, not an image file")
        if not stat.S_ISREG(info.st_mode):
            raise ImageLoadError(label, NOT_A_FILE, "it is not a regular file (a device, a pipe or a socket)")
        if info.st_size == 0:
            raise ImageLoadError(label, EMPTY)
        try:
            handle = open(path, "rb")  # noqa: SIM115 - closed by load_image
        except OSError as error:
            raise _os_error(label, error) from None
        return label, handle, True

    if hasattr(source, "read"):
        given = getattr(source, "name", None)
        label = name if name is not None else (given if isinstance(given, str) else "<file>")
        try:
            seekable = bool(source.seekable()) if hasattr(source, "seekable") else False
            if not seekable:
                buffered = io.BytesIO(source.read())
                if not buffered.getbuffer().nbytes:
                    raise ImageLoadError(label, EMPTY)
                return label, buffered, True
            # Pillow reads a stream from its start, whatever its position.
            size = source.seek(0, io.SEEK_END)
            source.seek(0)
        except ImageLoadError:
            raise
        except (OSError, ValueError) as error:
            raise ImageLoadError(label, UNREADABLE, f"the file cannot be read: {os_reason(error)}") from None
        if size == 0:
            raise ImageLoadError(label, EMPTY)
        return label, source, False

    raise TypeError(
        "source must be a path, bytes or a binary file object, not " f"{type(source).__name__}"
    )


def _decode(
    stream: IO[bytes], label: str, mode: str, max_pixels: int, draft_size: int | None
) -> Image.Image:
    """Open, check, decode and normalise the image in ``stream``."""
    with warnings.catch_warnings():
        # Pillow warns (DecompressionBombWarning) above Image.MAX_IMAGE_PIXELS (~89 MP) and
        # raises above twice that. The warning is silenced here, locally, because this module
        # applies its own limit, max_pixels, to the header size right after opening: the
        # application's limit decides, and no warning leaks out of the loader. Pillow's error
        # is caught below and turned into an ImageLoadError. (Before Python 3.14,
        # catch_warnings swaps the process-wide filter list; concurrent loads in threads can at
        # worst leave this one harmless "ignore" filter installed.)
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(stream, formats=[f for f in Image.OPEN if f not in _EXTERNAL_FORMATS])
        except Image.DecompressionBombError as error:
            raise _pillow_bomb_error(stream, label, max_pixels, error) from None
        except UnidentifiedImageError:
            raise _unidentified_error(stream, label) from None
        except MemoryError:
            raise ImageLoadError(label, NO_MEMORY, "not enough memory to read the file") from None
        except Exception as error:
            raise _corrupt_error(label, error) from None

        width, height = image.size
        if width * height > max_pixels:
            raise _bomb_error(label, width, height, max_pixels)

        if draft_size is not None and image.format in ("JPEG", "MPO"):
            try:
                image.draft(mode, (draft_size, draft_size))
            except Exception:  # a draft is only a speed-up
                pass

        try:
            image.load()  # the first frame of a multi-frame file
        except Image.DecompressionBombError as error:
            raise _pillow_bomb_error(None, label, max_pixels, error) from None
        except MemoryError:
            raise ImageLoadError(
                label, NO_MEMORY, f"not enough memory to decode a {width}x{height} image"
            ) from None
        except Exception as error:
            raise _corrupt_error(label, error) from None

        _apply_exif_orientation(image)
        try:
            result = _to_mode(image, mode, label)
        except ImageLoadError:
            raise
        except MemoryError:
            raise ImageLoadError(
                label, NO_MEMORY, f"not enough memory to convert a {width}x{height} image"
            ) from None
        except Exception as error:
            detail = f"the image cannot be converted: {message_of(error)}"
            raise ImageLoadError(label, COLOURS_UNSUPPORTED, detail) from None

    if result is image and image.format != "JPEG":
        # Multi-frame plugins (PNG, GIF, TIFF, MPO, ...) keep a reference to the stream after
        # loading; a copy holds only pixels. A single-frame JPEG already dropped its stream.
        result = image.copy()
    return result


def _apply_exif_orientation(image: Image.Image) -> None:
    """Rotate/flip ``image`` in place as its EXIF Orientation says; unreadable EXIF is ignored."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Corrupt EXIF data" and similar
            ImageOps.exif_transpose(image, in_place=True)
    except Exception:
        pass  # a broken EXIF block does not make the pixels unusable


# ----------------------------------------------------------------------------------------------
# Pixel formats


def _to_mode(image: Image.Image, mode: str, label: str) -> Image.Image:
    """Return ``image`` converted to ``mode`` ("RGB" or "L"); ``image`` itself if already there."""
    source_mode = image.mode
    has_transparency = "transparency" in image.info

    if source_mode == mode and not has_transparency:
        return image
    if source_mode in ("RGB", "L", "1") and has_transparency:
        # A transparent colour (PNG tRNS chunk): let Pillow build the alpha channel from it.
        try:
            return _flatten(image.convert("LA" if source_mode in ("L", "1") else "RGBA"), mode)
        except ValueError:
            return image.convert(mode)
    if source_mode in ("RGB", "L", "1"):
        return image.convert(mode)
    if source_mode == "P":
        palette_mode = image.palette.mode if image.palette is not None else "RGB"
        if has_transparency or palette_mode.endswith("A"):
            return _flatten(image.convert("RGBA"), mode)
        return image.convert(mode)
    if source_mode in ("RGBA", "LA"):
        return _flatten(image, mode)
    if source_mode in ("RGBa", "PA"):
        return _flatten(image.convert("RGBA"), mode)
    if source_mode == "La":
        # Pillow has no direct La -> LA conversion; un-premultiply by hand.
        grey, alpha = (np.asarray(band, dtype=np.float32) for band in image.split())
        safe = np.where(alpha > 0, alpha, 1.0)
        grey = np.clip(np.rint(grey * 255.0 / safe), 0, 255).astype(np.uint8)
        straight = Image.merge("LA", (Image.fromarray(grey, "L"), image.getchannel("A")))
        return _flatten(straight, mode)
    if source_mode in _SIXTEEN_BIT_MODES or source_mode in ("I", "F"):
        grey = Image.fromarray(_scale_to_uint8(image), "L")
        return grey if mode == "L" else grey.convert("RGB")
    if source_mode == "CMYK":
        rgb = _cmyk_to_rgb(image)
        return rgb if mode == "RGB" else rgb.convert("L")
    # YCbCr, LAB, HSV, RGBX and anything else Pillow knows how to turn into RGB.
    try:
        rgb = image.convert("RGB")
    except ValueError:
        raise ImageLoadError(label, COLOURS_UNSUPPORTED, f"unsupported pixel format '{source_mode}'") from None
    return rgb if mode == "RGB" else rgb.convert("L")


def _flatten(image: Image.Image, mode: str) -> Image.Image:
    """Composite an ``RGBA`` or ``LA`` image onto white and return it in ``mode``."""
    alpha = image.getchannel("A")
    base_mode = "L" if image.mode == "LA" else "RGB"
    opaque = image.convert(base_mode)
    if alpha.getextrema() != (255, 255):
        background = Image.new(base_mode, image.size, _WHITE[base_mode])
        background.paste(opaque, (0, 0), alpha)
        opaque = background
    return opaque if base_mode == mode else opaque.convert(mode)


def _scale_to_uint8(image: Image.Image) -> np.ndarray:
    """Scale a 16-bit, 32-bit integer or float greyscale image to a uint8 array [H, W].

    The rule:

    * 16-bit modes (``I;16``, ``I;16B``, ...): the full 0..65535 range maps to 0..255
      (value / 257, rounded), so 65535 -> 255 and 32768 -> 128.
    * ``I`` (32-bit signed): treated as 16-bit data (value / 257) when every value lies in
      0..65535, which is what PNG/TIFF 16-bit images give; only when some value is negative
      or above 65535 is the actual range min..max stretched to 0..255 (a constant image then
      gives 0).
    * ``F`` (32-bit float): 0..1 data when the largest finite value is <= 1 (scaled by 255),
      otherwise 0..255 data; then clipped to 0..255. NaN gives 0, +inf 255, -inf 0.
    """
    if image.mode == "F":
        values = np.asarray(image, dtype=np.float32)
        finite = values[np.isfinite(values)]
        peak = float(finite.max()) if finite.size else 0.0
        scaled = values * np.float32(255.0) if peak <= 1.0 else values.astype(np.float32)
        scaled = np.nan_to_num(scaled, nan=0.0, posinf=255.0, neginf=0.0)
        return np.rint(np.clip(scaled, 0.0, 255.0)).astype(np.uint8)

    try:
        values = np.asarray(image)
        if values.dtype.kind not in "iu" or values.ndim != 2:
            raise TypeError(values.dtype)
    except Exception:  # a 16-bit variant numpy cannot view directly
        values = np.asarray(image.convert("I"))
    values = values.astype(np.int64)
    low = int(values.min()) if values.size else 0
    high = int(values.max()) if values.size else 0
    if low >= 0 and high <= 65535:
        # round(v * 255 / 65535) == round(v / 257), in exact integer arithmetic
        return ((values * 255 + 32767) // 65535).astype(np.uint8)
    if high == low:
        return np.zeros(values.shape, dtype=np.uint8)
    stretched = (values - low).astype(np.float64) * (255.0 / (high - low))
    return np.rint(stretched).astype(np.uint8)


def _cmyk_to_rgb(image: Image.Image) -> Image.Image:
    """CMYK -> RGB via the embedded ICC profile (to sRGB) when possible, else Pillow's formula."""
    profile = image.info.get("icc_profile")
    if profile:
        transform = _cmyk_transform(bytes(profile))
        if transform is not None:
            try:
                from PIL import ImageCms

                return ImageCms.applyTransform(image, transform)
            except Exception:
                pass
    return image.convert("RGB")


@functools.lru_cache(maxsize=8)
def _cmyk_transform(profile: bytes):  # -> ImageCms.ImageCmsTransform | None
    """A cached CMYK (embedded profile) -> sRGB transform, or None if it cannot be built."""
    try:
        from PIL import ImageCms

        return ImageCms.buildTransform(
            ImageCms.ImageCmsProfile(io.BytesIO(profile)),
            ImageCms.createProfile("sRGB"),
            "CMYK",
            "RGB",
        )
    except Exception:  # no LittleCMS, or a profile it cannot use
        return None


# ----------------------------------------------------------------------------------------------
# Arrays


def to_array(image: Image.Image, size: int, *, fit: str = "stretch") -> np.ndarray:
    """Resize an ``L`` or ``RGB`` image to ``size`` x ``size`` and return a uint8 array [C, H, W].

    ``fit="stretch"`` resizes to a square, ignoring the aspect ratio; ``fit="center-crop"``
    scales the shorter side to ``size`` and keeps the centre square. Shrinking uses Lanczos
    (antialiased) with ``reducing_gap=3.0``, which first shrinks big images by an integer
    factor for speed; enlarging (a small image for a big input) uses bilinear interpolation,
    which does not ring: with 84-px mini-ImageNet images enlarged to 224 px, pretrained
    features classify about one point better than after Lanczos (docs/benchmarks.md).
    C is 1 for ``L`` and 3 for ``RGB``; the array is C-contiguous and writable.
    """
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < 1:
        raise ValueError(f"size must be a positive integer, not {size!r}")
    if fit not in FITS:
        raise ValueError(f"fit must be 'stretch' or 'center-crop', not {fit!r}")
    if image.mode not in _MODES:
        raise ValueError(f"to_array needs an 'L' or 'RGB' image, not {image.mode!r}")
    size = int(size)
    width, height = image.size
    box: tuple[float, float, float, float] | None = None
    if fit == "center-crop" and width != height:
        side = min(width, height)
        left = (width - side) / 2
        top = (height - side) / 2
        box = (left, top, left + side, top + side)
    if box is None and (width, height) == (size, size):
        resized = image
    else:
        enlarging = min(width, height) < size
        resample = Image.Resampling.BILINEAR if enlarging else Image.Resampling.LANCZOS
        resized = image.resize((size, size), resample, box=box, reducing_gap=None if enlarging else 3.0)
    pixels = np.asarray(resized, dtype=np.uint8)
    if pixels.ndim == 2:
        return np.array(pixels[np.newaxis], dtype=np.uint8, order="C")
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))


def load_array(
    source: ImageSource,
    size: int,
    *,
    channels: int = 3,
    fit: str = "stretch",
    name: str | None = None,
) -> np.ndarray:
    """Load an image and return it as a uint8 array [channels, size, size].

    ``channels`` is 1 (greyscale) or 3 (RGB). JPEGs are decoded at reduced scale when that
    still gives at least ``size`` pixels on both sides. See :func:`load_image` and :func:`to_array`.
    """
    return load_sized_array(source, size, channels=channels, fit=fit, name=name)[0]


def load_sized_array(source: ImageSource, size: int, *, channels: int = 3, fit: str = "stretch",
                     name: str | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """uint8 [channels, size, size] for an image, as :func:`load_array`
    makes it, with the image's (width, height) in pixels as decoded (the right way up).

    A JPEG may be decoded at a reduced scale that still has at least ``size`` pixels on both
    sides, so the width and height are the file's own whenever either is below ``size`` (and at
    least ``size`` otherwise): exact where the size of a small image matters. Raises
    ImageLoadError like ``load_array``."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, not {channels!r}")
    image = load_image(source, mode="L" if channels == 1 else "RGB", name=name, draft_size=size)
    return to_array(image, size, fit=fit), (int(image.width), int(image.height))


# ----------------------------------------------------------------------------------------------
# Error messages


def _bomb_error(label: str, width: int, height: int, limit: int) -> ImageLoadError:
    return ImageLoadError(
        label,
        TOO_BIG.format(size=f"{width} x {height} pixels", limit=limit),
        f"image is {width}x{height} pixels, more than the {limit:,}-pixel limit "
        "(possible decompression bomb)",
    )


def _pillow_bomb_error(
    stream: IO[bytes] | None, label: str, max_pixels: int, error: Exception
) -> ImageLoadError:
    """Pillow refused the image itself (above 2 * Image.MAX_IMAGE_PIXELS): say how big it is."""
    pillow_limit = 2 * Image.MAX_IMAGE_PIXELS if Image.MAX_IMAGE_PIXELS else max_pixels
    limit = min(max_pixels, pillow_limit)
    size = _header_size(stream) if stream is not None else None
    if size is not None:
        return _bomb_error(label, size[0], size[1], limit)
    found = re.search(r"\((\d+) pixels\)", str(error))
    amount = f"{int(found.group(1)):,} pixels" if found else "too many pixels"
    return ImageLoadError(
        label,
        TOO_BIG.format(size=amount, limit=limit),
        f"image has {amount}, more than the {limit:,}-pixel limit (possible decompression bomb)",
    )


def _header_size(stream: IO[bytes]) -> tuple[int, int] | None:
    """Width and height from the file header, read with the plugin's own parser and no size check.

    Only used to word the message when Pillow's own decompression-bomb check refused the file.
    """
    try:
        stream.seek(0)
        prefix = stream.read(16)
        for fmt in list(Image.ID):
            factory, accept = Image.OPEN[fmt]
            if not accept:
                continue
            recognised = accept(prefix)
            if not recognised or isinstance(recognised, str):
                continue
            stream.seek(0)
            try:
                width, height = factory(stream, "").size
            except Exception:
                continue
            return int(width), int(height)
    except Exception:
        pass
    return None


def _unidentified_error(stream: IO[bytes], label: str) -> ImageLoadError:
    """Explain why Pillow did not recognise the file."""
    try:
        stream.seek(0)
        head = stream.read(512)
    except Exception:
        head = b""
    vector = _VECTOR_START.match(head.removeprefix(b"\xef\xbb\xbf"))
    if vector:  # Image.open was not allowed the EPS plugin, which would run Ghostscript
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
        if recognised:
            return ImageLoadError(
                label,
                DAMAGED,
                f"the file is truncated or corrupt: it starts like a {fmt} file, "
                "but its header cannot be read",
            )
    extension = os.path.splitext(label)[1].lower()
    reason = NOT_A_PICTURE
    if _looks_like_text(head):
        reason, detail = TEXT_FILE, "the file contains text, not image data"
    elif extension in IMAGE_EXTENSIONS:
        detail = f"the name ends in '{extension}' but the contents are not a known image format"
    elif extension:
        detail = f"'{extension}' files are not an image format Pillow reads"
        if extension in _PICTURE_EXTENSIONS:
            reason = UNSUPPORTED
    else:
        detail = "the contents are not a known image format"
    return ImageLoadError(label, reason, f"not an image format that can be read ({detail})")


def _looks_like_text(head: bytes) -> bool:
    if not head or b"\x00" in head:
        return False
    text = head.decode("utf-8", errors="replace")
    printable = sum(1 for char in text if char.isprintable() or char in "\t\r\n")
    return printable >= 0.95 * len(text)


def _corrupt_error(label: str, error: BaseException) -> ImageLoadError:
    """Pillow recognised the file but could not decode it: the data ends early or is damaged."""
    message = message_of(error)
    reason = PARTLY_READ if "truncated" in message.lower() else DAMAGED
    return ImageLoadError(label, reason, f"the file is truncated or corrupt: {message}")


def _os_error(label: str, error: BaseException) -> ImageLoadError:
    """The operating system refused to show or open the file."""
    if isinstance(error, (FileNotFoundError, NotADirectoryError)):
        return ImageLoadError(label, NOT_FOUND, os_reason(error))
    if isinstance(error, PermissionError):
        return ImageLoadError(label, NO_PERMISSION, "permission denied")
    return ImageLoadError(label, UNREADABLE, os_reason(error))


