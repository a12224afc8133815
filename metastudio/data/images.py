"""Image loading: the one place where the application turns an image file into pixels.

Every part of MetaStudio (datasets, the CLI, the GUI, benchmarks) loads images through
:func:`load_image` / :func:`load_array`, so that every image is read the same way:

* only formats Pillow decodes itself, in this process (:func:`~metastudio.data.listing.pixel_formats`,
  passed to every ``Image.open``): EPS/PS (which Pillow reads by running Ghostscript), PDF, SVG and
  WMF/EMF drawings are named as unsupported, never handed to another program;
* multi-frame files (GIF, TIFF, APNG, MPO) give their first frame;
* EXIF orientation is applied, so a photo is the right way up;
* transparency (``RGBA``, ``LA``, ``PA``, ``P`` or ``L``/``RGB`` with a transparent colour) is
  composited onto a **white** background instead of being dropped;
* 16-bit, 32-bit integer and float greyscale are scaled to 8 bit (see :func:`_scale_to_uint8`);
* CMYK is converted with its embedded ICC profile when LittleCMS is available;
* a decompression-bomb guard refuses images whose header announces more than ``max_pixels``
  pixels *before* anything is decoded;
* Pillow's warnings never reach stderr: while a file is decoded they are collected for that
  thread alone (:func:`decoding_warnings`); one that says a TIFF is cut short makes it refused
  as damaged, the others become notes for the person or are dropped (see :func:`_judge_warnings`);
* every failure is an :class:`~metastudio.errors.ImageLoadError` whose message names the
  file and whose ``reason`` says why in everyday words (the constants below), never a raw
  Pillow or ``OSError``; the technical wording (Pillow's message, the format it recognised)
  is its ``detail``.

Which files of a folder are pictures is :mod:`metastudio.data.listing`'s; its names that callers
look for here (``is_image_name``, ``find_images``, the reasons) are available from this module too.
This module depends on numpy and Pillow only (no Qt, no torch).
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import re
import stat
import threading
import warnings
from collections.abc import Iterator
from typing import IO, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from metastudio.data.listing import (DAMAGED, IMAGE_EXTENSIONS, NOT_A_FILE, NOT_A_PICTURE, TEXT_FILE,
                                     UNREADABLE, UNSUPPORTED, find_images, is_image_name, os_problem, pixel_formats,
                                     printable, unrecognised)
from metastudio.errors import ImageLoadError, message_of, os_reason

__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_PIXELS",
    "ImageSource",
    "decoding_warnings",
    "find_images",
    "is_image_name",
    "load_array",
    "load_image",
    "to_array",
    # the reasons a person reads (ImageLoadError.reason), those of listing included
    "A_FOLDER", "COLOURS_UNSUPPORTED", "DAMAGED", "EMPTY", "NOT_A_FILE", "NOT_A_PICTURE", "NO_MEMORY", "PARTLY_READ",
    "PART_MISSING", "TEXT_FILE", "TOO_BIG", "UNREADABLE", "UNSUPPORTED",
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

# What a person reads when a file can't be used (ImageLoadError.reason), beside listing's reasons
# (NOT_A_FILE, UNREADABLE, UNSUPPORTED, NOT_A_PICTURE, TEXT_FILE, DAMAGED...); the technical
# wording goes to ImageLoadError.detail.
A_FOLDER = "it is a folder, not a picture"
EMPTY = "the file is empty"
PARTLY_READ = "the picture is damaged: only part of it could be read"
PART_MISSING = "the picture is damaged: part of it is missing"
NO_MEMORY = "there isn't enough memory to open this picture"
COLOURS_UNSUPPORTED = "the colours of this picture are stored in a way that isn't supported"
TOO_BIG = "the picture is too big: {size}, more than the {limit:,} pixels that can be opened"


# ----------------------------------------------------------------------------------------------
# Pillow's warnings


class _ThreadWarnings:
    """Catches the warnings raised in a thread while it decodes, for that thread alone.

    ``warnings.catch_warnings`` swaps the process-wide filter list, so two threads decoding at
    once (the GUI's thumbnails and its adapt worker, a dataset's decoding pool) would undo each
    other's filters and let warnings through, or swallow those of other code. Instead one filter
    is placed first in ``warnings.filters``, and kept first: its "message" is this object, whose
    ``match`` (what the warnings machinery calls for a filter's message pattern) records the text
    and says "this filter applies" -- its action being "ignore" -- only in a thread that is
    collecting; everywhere else it does not match and the usual filters decide."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._lock = threading.Lock()
        self.entry = ("ignore", self, Warning, None, 0)

    def __repr__(self) -> str:
        return "<MetaStudio: warnings raised while a thread decodes an image are collected>"

    def match(self, text: str) -> bool:
        heard = getattr(self._local, "heard", None)
        if heard is None:
            return False
        heard.append(str(text))
        return True

    @contextlib.contextmanager
    def collect(self) -> Iterator[list[str]]:
        self._put_first()
        outer = getattr(self._local, "heard", None)
        heard: list[str] = []
        self._local.heard = heard
        try:
            yield heard
        finally:
            self._local.heard = outer
            if outer is not None:
                outer.extend(heard)

    def _put_first(self) -> None:
        """Make the filter the first one again (a ``simplefilter`` call puts another before it)."""
        if warnings.filters and warnings.filters[0] is self.entry:
            return
        with self._lock:
            filters = warnings.filters
            if filters and filters[0] is self.entry:
                return
            while self.entry in filters:
                filters.remove(self.entry)
            filters.insert(0, self.entry)
            # Forget which warnings each module already showed once, or those would skip the filters.
            mutated = getattr(warnings, "_filters_mutated", None) or getattr(warnings, "_filters_mutated_lock_held", None)
            if mutated is not None:
                mutated()


_THREAD_WARNINGS = _ThreadWarnings()


def decoding_warnings() -> contextlib.AbstractContextManager[list[str]]:
    """``with decoding_warnings() as heard:``: every warning raised in this thread inside the
    block is kept out of stderr (and out of other threads' filters) and its text appended to
    ``heard``. :func:`load_image` decodes inside one; other code that opens images with Pillow
    (reading only a header, say) can use it too. Nested blocks pass what they heard outwards."""
    return _THREAD_WARNINGS.collect()


# Pillow's warnings that say the file ends before what its directory describes: for a TIFF (whose
# directory is the picture's own structure) the picture is damaged; in a JPEG, PNG or WebP they
# come from the EXIF block, which only holds camera details and the orientation.
_CUT_SHORT = re.compile(r"truncated|corrupt|larger than file|offset too large|expecting to read", re.IGNORECASE)
# Warnings dropped: DecompressionBombWarning (MAX_PIXELS, checked right after opening, decides the
# size a picture may have), "Palette images with Transparency expressed in bytes" (raised by a
# conversion this module never asks for: such images are composited onto white via RGBA) and
# deprecations (about this code's use of Pillow, nothing a person can act on).
_DROPPED = re.compile(r"could be decompression bomb|Palette images with Transparency|deprecated", re.IGNORECASE)


def _judge_warnings(heard: list[str], fmt: str | None) -> tuple[str | None, list[str]]:
    """From the warnings heard while decoding a ``fmt`` file: (the technical wording when they mean
    the picture is damaged, else None; the notes for a person, each said once)."""
    damage = list(dict.fromkeys(text for text in heard if fmt == "TIFF" and _CUT_SHORT.search(text)))
    notes: list[str] = []
    for text in heard:
        if _DROPPED.search(text) or text in damage:
            continue
        if "malformed MPO" in text:
            note = "its extra pictures (MPO) are damaged: the main picture is used"
        elif _CUT_SHORT.search(text) or "EXIF" in text:
            note = "its EXIF information (camera details, orientation) is damaged: what could not be read was ignored"
        else:
            note = f"the image library noted: {text}"
        if note not in notes:
            notes.append(note)
    return ("; ".join(damage) if damage else None), notes


def _with_warnings(error: ImageLoadError, heard: list[str]) -> ImageLoadError:
    """``error`` with the warnings Pillow gave on the way to it at the end of its technical detail."""
    said = list(dict.fromkeys(text for text in heard if not _DROPPED.search(text)))
    if said:
        error.detail = "; ".join(filter(None, [error.detail, "Pillow warned: " + "; ".join(said)]))
    return error


# ----------------------------------------------------------------------------------------------
# Loading


def load_image(
    source: ImageSource,
    *,
    mode: str = "RGB",
    name: str | None = None,
    max_pixels: int = MAX_PIXELS,
    draft_size: int | None = None,
    notes: list[str] | None = None,
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

    ``notes``: a list to which what a person may want to know about a picture that was read
    anyway is appended (its EXIF block is damaged, say); when the file can't be used, such notes
    end its error's ``detail`` instead.

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
        with decoding_warnings() as heard:
            try:
                image, fmt = _decode(stream, label, mode, max_pixels, draft_size)
            except ImageLoadError as error:
                raise _with_warnings(error, heard) from None
        damage, said = _judge_warnings(heard, fmt)
        if damage:
            raise ImageLoadError(label, PART_MISSING, f"the file is truncated or corrupt: {damage}")
        if notes is not None:
            notes.extend(said)
        return image
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
        label = name if name is not None else printable(path)
        try:
            info = os.stat(path)
        except (OSError, ValueError) as error:
            raise os_problem(label, error) from None
        if stat.S_ISDIR(info.st_mode):
            raise ImageLoadError(label, A_FOLDER, "it is a directory, not an image file")
        if not stat.S_ISREG(info.st_mode):
            raise ImageLoadError(label, NOT_A_FILE, "it is not a regular file (a device, a pipe or a socket)")
        if info.st_size == 0:
            raise ImageLoadError(label, EMPTY)
        try:
            handle = open(path, "rb")  # noqa: SIM115 - closed by load_image
        except OSError as error:
            raise os_problem(label, error) from None
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
) -> tuple[Image.Image, str | None]:
    """Open, check, decode and normalise the image in ``stream``: the image in ``mode`` and the
    format Pillow read it as. Pillow warns (DecompressionBombWarning) above its own
    Image.MAX_IMAGE_PIXELS (~89 MP) and raises above twice that; the warning is dropped (the
    caller collects warnings) because ``max_pixels``, checked on the header right after
    opening, decides; Pillow's error becomes an ImageLoadError."""
    try:
        image = Image.open(stream, formats=pixel_formats())
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
        raise ImageLoadError(label, NO_MEMORY, f"not enough memory to decode a {width}x{height} image") from None
    except Exception as error:
        raise _corrupt_error(label, error) from None

    _apply_exif_orientation(image)
    try:
        result = _to_mode(image, mode, label)
    except ImageLoadError:
        raise
    except MemoryError:
        raise ImageLoadError(label, NO_MEMORY, f"not enough memory to convert a {width}x{height} image") from None
    except Exception as error:
        detail = f"the image cannot be converted: {message_of(error)}"
        raise ImageLoadError(label, COLOURS_UNSUPPORTED, detail) from None

    if result is image and image.format != "JPEG":
        # Multi-frame plugins (PNG, GIF, TIFF, MPO, ...) keep a reference to the stream after
        # loading; a copy holds only pixels. A single-frame JPEG already dropped its stream.
        result = image.copy()
    return result, image.format


def _apply_exif_orientation(image: Image.Image) -> None:
    """Rotate/flip ``image`` in place as its EXIF Orientation says; unreadable EXIF is ignored."""
    try:
        ImageOps.exif_transpose(image, in_place=True)  # its warnings ("Corrupt EXIF data") are collected
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
    notes: list[str] | None = None,
) -> np.ndarray:
    """Load an image and return it as a uint8 array [channels, size, size].

    ``channels`` is 1 (greyscale) or 3 (RGB). JPEGs are decoded at reduced scale when that
    still gives at least ``size`` pixels on both sides. See :func:`load_image` (and its
    ``notes``) and :func:`to_array`.
    """
    return load_sized_array(source, size, channels=channels, fit=fit, name=name, notes=notes)[0]


def load_sized_array(source: ImageSource, size: int, *, channels: int = 3, fit: str = "stretch",
                     name: str | None = None, notes: list[str] | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """uint8 [channels, size, size] for an image, as :func:`load_array`
    makes it, with the image's (width, height) in pixels as decoded (the right way up).

    A JPEG may be decoded at a reduced scale that still has at least ``size`` pixels on both
    sides, so the width and height are the file's own whenever either is below ``size`` (and at
    least ``size`` otherwise): exact where the size of a small image matters. Raises
    ImageLoadError like ``load_array``."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, not {channels!r}")
    image = load_image(source, mode="L" if channels == 1 else "RGB", name=name, draft_size=size, notes=notes)
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
        for fmt in pixel_formats():
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
    """Explain why Pillow did not recognise the file (see :func:`~metastudio.data.listing.unrecognised`)."""
    try:
        stream.seek(0)
        head = stream.read(512)
    except Exception:
        head = b""
    return unrecognised(head, label)


def _corrupt_error(label: str, error: BaseException) -> ImageLoadError:
    """Pillow recognised the file but could not decode it: the data ends early or is damaged."""
    message = message_of(error)
    reason = PARTLY_READ if "truncated" in message.lower() else DAMAGED
    return ImageLoadError(label, reason, f"the file is truncated or corrupt: {message}")
