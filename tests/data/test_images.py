"""Tests of metastudio.data.images: every image is generated here, in tmp_path."""

from __future__ import annotations

import io
import os
import random
import struct
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from metastudio.data import images
from metastudio.errors import ImageLoadError, MetaStudioError
from metastudio.data.images import (
    IMAGE_EXTENSIONS,
    MAX_PIXELS,
    is_image_name,
    load_array,
    load_image,
    to_array,
)

# ----------------------------------------------------------------------------------------------
# helpers


def _save(image: Image.Image, path: Path, **options) -> Path:
    image.save(path, **options)
    return path


def _noise(width: int, height: int, seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB")


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def _bilevel_png(path: Path, width: int, height: int) -> Path:
    """A valid, all-black 1-bit PNG of any size: it compresses to a few kilobytes."""
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(6)
    block = row * 1000
    data = b"".join(compressor.compress(block) for _ in range(height // 1000))
    data += compressor.compress(row * (height % 1000)) + compressor.flush()
    png = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
    png += _png_chunk(b"IDAT", data) + _png_chunk(b"IEND", b"")
    path.write_bytes(png)
    return path


def _close(actual, expected, tolerance: int = 3) -> bool:
    return all(abs(int(a) - int(e)) <= tolerance for a, e in zip(actual, expected))


def _load_error(source, **kwargs) -> ImageLoadError:
    with pytest.raises(ImageLoadError) as info:
        load_image(source, **kwargs)
    return info.value


def _assert_names_file(error: ImageLoadError, path: Path) -> None:
    assert error.path == str(path)
    assert str(path) in str(error)
    assert str(error).startswith(f"cannot use image '{path}': ")
    assert isinstance(error, MetaStudioError)


# ----------------------------------------------------------------------------------------------
# errors


def test_missing_file(tmp_path):
    path = tmp_path / "nowhere.png"
    error = _load_error(path)
    _assert_names_file(error, path)
    assert error.reason == "file not found"
    assert error.detail == "no such file or directory"  # the system's words


def test_reasons_are_everyday_words_and_the_technical_text_is_the_detail(tmp_path):
    """What a person reads next to a file never names the image library or its jargon; the
    library's wording is kept in ``detail`` (for Details…)."""
    text = tmp_path / "notes.jpg"
    text.write_text("shopping list\n" * 40)
    noise = tmp_path / "noise.png"
    noise.write_bytes(random.Random(7).randbytes(2048))
    whole = io.BytesIO()
    _noise(64, 64).save(whole, "JPEG")
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(whole.getvalue()[: len(whole.getvalue()) // 2])
    heic = tmp_path / "phone.heic"
    heic.write_bytes(b"\x00\x00\x00\x18ftypheic" + bytes(64))
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    expected = {
        text: "this file is not a picture: it contains text",
        noise: "this file is not a picture (or it is damaged)",
        cut: "the picture is damaged: only part of it could be read",
        heic: "this picture format isn't supported",
        empty: "the file is empty",
    }
    jargon = ("pillow", "pil ", "truncated", "corrupt", "header", "decompression", "format that can be read")
    for path, reason in expected.items():
        error = _load_error(path)
        assert error.reason == reason, path.name
        assert str(error) == f"cannot use image '{path}': {reason}"
        assert not any(word in error.reason.lower() for word in jargon), error.reason
    assert "text, not image data" in _load_error(text).detail
    assert _load_error(noise).detail.startswith("not an image format that can be read (")
    assert _load_error(cut).detail.startswith("the file is truncated or corrupt: ")
    assert "'.heic' files are not an image format Pillow reads" in _load_error(heic).detail
    assert _load_error(empty).detail == ""


def test_image_load_error_stays_backward_compatible():
    import pickle

    old_style = ImageLoadError("a.png", "file not found")
    assert (old_style.path, old_style.reason, old_style.detail) == ("a.png", "file not found", "")
    assert str(old_style) == "cannot use image 'a.png': file not found"
    new_style = ImageLoadError("b.png", reason="the file is empty", detail="0 bytes")
    copy = pickle.loads(pickle.dumps(new_style))
    assert (copy.path, copy.reason, copy.detail, str(copy)) == ("b.png", "the file is empty", "0 bytes", str(new_style))


def test_directory(tmp_path):
    path = tmp_path / "folder.png"
    path.mkdir()
    error = _load_error(path)
    _assert_names_file(error, path)
    assert error.reason == "it is a folder, not a picture"
    assert "directory" in error.detail


def test_empty_file(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    error = _load_error(path)
    _assert_names_file(error, path)
    assert error.reason == "the file is empty"
    assert _load_error(b"").reason == "the file is empty"
    assert _load_error(io.BytesIO()).reason == "the file is empty"


@pytest.mark.parametrize("name, content, reason, in_detail", [
    ("notes.jpg", b"these are my holiday notes, not a photo\n" * 20, "this file is not a picture: it contains text", "text"),
    ("noise.png", random.Random(1234).randbytes(4096), "this file is not a picture (or it is damaged)", ".png"),
], ids=["text named .jpg", "random bytes named .png"])
def test_a_file_that_is_not_a_picture(tmp_path, name, content, reason, in_detail):
    path = tmp_path / name
    path.write_bytes(content)
    error = _load_error(path)
    _assert_names_file(error, path)
    assert error.reason == reason
    assert error.detail.startswith("not an image format that can be read (")
    assert in_detail in error.detail


def test_png_with_broken_header(tmp_path):
    data = bytearray((_save(_noise(16, 16), tmp_path / "ok.png")).read_bytes())
    data[16:24] = b"\xff" * 8  # width/height in IHDR; the chunk CRC no longer matches
    path = tmp_path / "broken.png"
    path.write_bytes(bytes(data))
    error = _load_error(path)
    _assert_names_file(error, path)
    assert error.reason == "the picture is damaged and can't be read"
    assert "truncated or corrupt" in error.detail
    assert "PNG" in error.detail


@pytest.mark.parametrize("fmt, suffix", [("PNG", ".png"), ("JPEG", ".jpg")])
def test_truncated_file(tmp_path, fmt, suffix):
    whole = io.BytesIO()
    _noise(64, 64).save(whole, fmt)
    data = whole.getvalue()
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(data[: len(data) // 2])
    error = _load_error(path)
    _assert_names_file(error, path)
    assert error.reason == "the picture is damaged: only part of it could be read"
    assert error.detail.startswith("the file is truncated or corrupt: ")
    assert "truncated" in error.detail.split(": ", 1)[1]  # Pillow's own message follows
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_permission_denied(tmp_path):
    path = _save(_noise(8, 8), tmp_path / "secret.png")
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):
            pytest.skip("running with privileges that ignore file permissions")
        error = _load_error(path)
        _assert_names_file(error, path)
        assert error.reason == "you don't have permission to open this file"
        assert error.detail == "permission denied"
    finally:
        path.chmod(0o644)


def test_permission_denied_on_open(tmp_path, monkeypatch):
    path = _save(_noise(8, 8), tmp_path / "locked.png")

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(images, "open", refuse, raising=False)
    error = _load_error(path)
    _assert_names_file(error, path)
    assert error.reason == "you don't have permission to open this file"
    assert error.detail == "permission denied"


def test_bad_arguments(tmp_path):
    path = _save(_noise(8, 8), tmp_path / "ok.png")
    with pytest.raises(ValueError):
        load_image(path, mode="RGBA")
    with pytest.raises(ValueError):
        load_array(path, 8, channels=4)
    with pytest.raises(TypeError):
        load_image(12345)  # type: ignore[arg-type]


def test_name_overrides_label(tmp_path):
    error = _load_error(b"not an image at all", name="upload/cat.png")
    assert error.path == "upload/cat.png"
    assert _load_error(b"not an image at all").path == "<bytes>"


# ----------------------------------------------------------------------------------------------
# decompression bombs


def _no_decoding(monkeypatch):
    def fail(self, *args, **kwargs):
        raise AssertionError("pixels were decoded before the size check")

    monkeypatch.setattr(ImageFile.ImageFile, "load", fail)


def test_huge_image_refused_by_header(tmp_path, monkeypatch):
    # 20000 x 20000 = 400 MP: above Pillow's own hard limit as well as ours.
    path = _bilevel_png(tmp_path / "bomb.png", 20000, 20000)
    assert path.stat().st_size < 200_000
    _no_decoding(monkeypatch)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        error = _load_error(path)
    assert time.perf_counter() - start < 1.0
    _assert_names_file(error, path)
    assert error.reason == "the picture is too big: 20000 x 20000 pixels, more than the 120,000,000 pixels that can be opened"
    assert "20000x20000 pixels" in error.detail
    assert f"{MAX_PIXELS:,}-pixel limit" in error.detail
    assert "decompression bomb" in error.detail


def test_image_just_over_the_limit_is_refused_without_warning(tmp_path, monkeypatch):
    # 11000 x 11000 = 121 MP: in Pillow's warning range (> ~89 MP), above MAX_PIXELS.
    path = _bilevel_png(tmp_path / "big.png", 11000, 11000)
    _no_decoding(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        error = _load_error(path)
    _assert_names_file(error, path)
    assert error.reason == (
        "the picture is too big: 11000 x 11000 pixels, more than the 120,000,000 pixels that can be opened"
    )
    assert error.detail == (
        "image is 11000x11000 pixels, more than the 120,000,000-pixel limit "
        "(possible decompression bomb)"
    )


def test_max_pixels_argument(tmp_path):
    path = _save(_noise(100, 80), tmp_path / "small.png")
    error = _load_error(path, max_pixels=5000)
    _assert_names_file(error, path)
    assert "100 x 80 pixels" in error.reason and "5,000 pixels" in error.reason
    assert "100x80 pixels" in error.detail
    assert "5,000-pixel limit" in error.detail
    assert load_image(path, max_pixels=8000).size == (100, 80)


def test_pillow_limits_never_leak_a_warning(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)  # warns above 2000, refuses above 4000
    middle = _save(_noise(50, 50), tmp_path / "middle.png")  # 2500 pixels
    large = _save(_noise(100, 100), tmp_path / "large.png")  # 10000 pixels
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_image(middle).size == (50, 50)  # our limit decides, not Pillow's warning
        error = _load_error(large)
    _assert_names_file(error, large)
    assert "100 x 100 pixels" in error.reason and "4,000 pixels" in error.reason
    assert "100x100 pixels" in error.detail
    assert "4,000-pixel limit" in error.detail


# ----------------------------------------------------------------------------------------------
# pixel formats


def test_sixteen_bit_greyscale_png(tmp_path):
    values = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    ramp = np.linspace(0, 65535, 64).astype(np.uint16)[np.newaxis].repeat(4, axis=0)
    path = _save(Image.fromarray(values), tmp_path / "deep.png")
    ramp_path = _save(Image.fromarray(ramp), tmp_path / "ramp.png")
    assert Image.open(path).mode.startswith("I")

    grey = np.asarray(load_image(path, mode="L"))
    assert grey.tolist() == [[0, 1, 128, 255]]
    rgb = np.asarray(load_image(path))
    assert rgb.shape == (1, 4, 3)
    assert rgb[0, 3].tolist() == [255, 255, 255] and rgb[0, 2].tolist() == [128, 128, 128]

    row = np.asarray(load_image(ramp_path, mode="L"))[0].astype(int)
    assert row[0] == 0 and row[-1] == 255
    assert np.all(np.diff(row) >= 0) and len(set(row.tolist())) > 50


def test_sixteen_bit_big_endian_tiff(tmp_path):
    path = _save(Image.new("I;16B", (4, 4), 65535), tmp_path / "big_endian.tif")
    assert Image.open(path).mode == "I;16B"
    assert np.asarray(load_image(path, mode="L")).min() == 255


def test_thirty_two_bit_integer_range_rule(tmp_path):
    in_range = np.array([[0, 32768, 65535]], dtype=np.int32)
    out_of_range = np.array([[-100, 0, 155]], dtype=np.int32)
    a = _save(Image.fromarray(in_range), tmp_path / "a.tif")
    b = _save(Image.fromarray(out_of_range), tmp_path / "b.tif")
    assert Image.open(a).mode == "I"
    assert np.asarray(load_image(a, mode="L")).tolist() == [[0, 128, 255]]
    assert np.asarray(load_image(b, mode="L")).tolist() == [[0, 100, 255]]  # min..max stretched


def test_float_image(tmp_path):
    unit = _save(Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32)), tmp_path / "u.tif")
    wide = _save(
        Image.fromarray(np.array([[-3.0, 100.0, 300.0]], dtype=np.float32)), tmp_path / "w.tif"
    )
    assert Image.open(unit).mode == "F"
    assert np.asarray(load_image(unit, mode="L")).tolist() == [[0, 128, 255]]
    assert np.asarray(load_image(wide, mode="L")).tolist() == [[0, 100, 255]]


def test_cmyk_jpeg(tmp_path):
    cyan = Image.new("CMYK", (16, 16), (255, 0, 0, 0))
    path = _save(cyan, tmp_path / "cyan.jpg", quality=95)
    # An embedded profile that is not a usable CMYK profile: falls back to Pillow's formula.
    odd = _save(cyan, tmp_path / "cyan_icc.jpg", quality=95, icc_profile=b"not a profile")
    for source in (path, odd):
        image = load_image(source)
        assert image.mode == "RGB"
        assert _close(image.getpixel((8, 8)), (0, 255, 255), tolerance=4)


def test_palette_png(tmp_path):
    image = Image.new("P", (4, 4), 0)
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    image.putpixel((1, 1), 1)
    path = _save(image, tmp_path / "palette.png")
    loaded = load_image(path)
    assert loaded.mode == "RGB"
    assert loaded.getpixel((0, 0)) == (255, 0, 0)
    assert loaded.getpixel((1, 1)) == (0, 0, 255)
    assert load_image(path, mode="L").getpixel((0, 0)) == 76  # 0.299 * 255


def test_palette_png_with_transparency(tmp_path):
    image = Image.new("P", (4, 4), 0)
    image.putpalette([0, 0, 0, 0, 200, 0] + [0] * 762)
    image.putpixel((2, 2), 1)
    path = _save(image, tmp_path / "transparent.png", transparency=0)
    loaded = load_image(path)
    assert loaded.mode == "RGB"
    assert loaded.getpixel((0, 0)) == (255, 255, 255)  # transparent black -> white
    assert loaded.getpixel((2, 2)) == (0, 200, 0)
    assert load_image(path, mode="L").getpixel((0, 0)) == 255


def test_gif_transparency_and_first_frame(tmp_path):
    red = Image.new("P", (6, 6), 1)
    red.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * 759)
    red.putpixel((0, 0), 0)
    blue = red.copy()
    blue.paste(2, (0, 0, 6, 6))
    path = tmp_path / "anim.gif"
    red.save(path, save_all=True, append_images=[blue], transparency=0, duration=50)
    loaded = load_image(path)
    assert loaded.getpixel((3, 3)) == (255, 0, 0)
    assert loaded.getpixel((0, 0)) == (255, 255, 255)


def test_multi_page_tiff_uses_first_page(tmp_path):
    path = tmp_path / "pages.tif"
    Image.new("RGB", (5, 5), (10, 20, 30)).save(
        path, save_all=True, append_images=[Image.new("RGB", (5, 5), (200, 0, 0))]
    )
    loaded = load_image(path)
    assert loaded.getpixel((2, 2)) == (10, 20, 30)
    assert getattr(loaded, "fp", None) is None


def test_rgba_composited_on_white(tmp_path):
    pixels = np.zeros((2, 3, 4), dtype=np.uint8)
    pixels[0, 0] = (0, 0, 0, 0)  # fully transparent
    pixels[0, 1] = (10, 20, 30, 255)  # opaque
    pixels[0, 2] = (0, 0, 0, 128)  # half-transparent black
    pixels[1, :] = (255, 0, 0, 0)  # transparent red is still white
    path = _save(Image.fromarray(pixels, "RGBA"), tmp_path / "alpha.png")
    loaded = load_image(path)
    assert loaded.mode == "RGB"
    assert loaded.getpixel((0, 0)) == (255, 255, 255)
    assert loaded.getpixel((1, 0)) == (10, 20, 30)
    assert _close(loaded.getpixel((2, 0)), (127, 127, 127), tolerance=1)
    assert loaded.getpixel((0, 1)) == (255, 255, 255)
    assert load_image(path, mode="L").getpixel((0, 0)) == 255


def test_la_composited_on_white(tmp_path):
    pixels = np.array([[[0, 0], [0, 255], [100, 255]]], dtype=np.uint8)
    path = _save(Image.fromarray(pixels, "LA"), tmp_path / "grey_alpha.png")
    grey = load_image(path, mode="L")
    assert grey.mode == "L"
    assert [grey.getpixel((x, 0)) for x in range(3)] == [255, 0, 100]
    assert load_image(path).getpixel((0, 0)) == (255, 255, 255)


def test_rgb_png_with_transparent_colour(tmp_path):
    image = Image.new("RGB", (3, 1), (1, 2, 3))
    image.putpixel((2, 0), (9, 9, 9))
    path = _save(image, tmp_path / "keyed.png", transparency=(1, 2, 3))
    loaded = load_image(path)
    assert loaded.getpixel((0, 0)) == (255, 255, 255)
    assert loaded.getpixel((2, 0)) == (9, 9, 9)


def test_one_bit_image(tmp_path):
    image = Image.new("1", (8, 4), 0)
    image.putpixel((3, 2), 1)
    path = _save(image, tmp_path / "bits.png")
    rgb = load_image(path)
    assert rgb.mode == "RGB" and rgb.size == (8, 4)
    assert rgb.getpixel((3, 2)) == (255, 255, 255)
    assert rgb.getpixel((0, 0)) == (0, 0, 0)
    grey = load_image(path, mode="L")
    assert grey.mode == "L" and grey.getpixel((3, 2)) == 255


def test_lab_tiff(tmp_path):
    from PIL import ImageCms

    to_lab = ImageCms.buildTransform(
        ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB"), "RGB", "LAB"
    )
    lab = ImageCms.applyTransform(Image.new("RGB", (4, 4), (255, 0, 0)), to_lab)
    path = _save(lab, tmp_path / "lab.tif")
    assert Image.open(path).mode == "LAB"
    assert _close(load_image(path).getpixel((1, 1)), (255, 0, 0), tolerance=8)


def test_mode_l_versus_rgb(tmp_path):
    path = _save(Image.new("RGB", (6, 4), (255, 0, 0)), tmp_path / "red.png")
    rgb = load_image(path)
    grey = load_image(path, mode="L")
    assert rgb.mode == "RGB" and grey.mode == "L"
    assert rgb.size == grey.size == (6, 4)
    assert rgb.getpixel((0, 0)) == (255, 0, 0)
    assert grey.getpixel((0, 0)) == 76
    grey_path = _save(Image.new("L", (6, 4), 90), tmp_path / "grey.png")
    assert load_image(grey_path).getpixel((5, 3)) == (90, 90, 90)


# ----------------------------------------------------------------------------------------------
# EXIF orientation


def test_exif_orientation(tmp_path):
    # Stored 20 wide x 10 high, four quadrants; Orientation 6 means "rotate 90 degrees clockwise".
    stored = Image.new("RGB", (20, 10))
    stored.paste((255, 0, 0), (0, 0, 10, 5))  # top-left: red
    stored.paste((0, 0, 255), (10, 0, 20, 5))  # top-right: blue
    stored.paste((0, 255, 0), (0, 5, 10, 10))  # bottom-left: green
    stored.paste((255, 255, 255), (10, 5, 20, 10))  # bottom-right: white
    exif = Image.Exif()
    exif[0x0112] = 6
    path = _save(stored, tmp_path / "phone.jpg", exif=exif.tobytes(), quality=100, subsampling=0)

    loaded = load_image(path)
    assert loaded.size == (10, 20)
    assert _close(loaded.getpixel((7, 2)), (255, 0, 0), tolerance=12)  # top-right
    assert _close(loaded.getpixel((2, 2)), (0, 255, 0), tolerance=12)  # top-left
    assert _close(loaded.getpixel((7, 17)), (0, 0, 255), tolerance=12)  # bottom-right
    assert _close(loaded.getpixel((2, 17)), (255, 255, 255), tolerance=12)  # bottom-left
    assert load_image(path, mode="L").size == (10, 20)
    assert load_array(path, 8).shape == (3, 8, 8)


# ----------------------------------------------------------------------------------------------
# sources


def test_bytes_and_file_object_sources(tmp_path):
    path = _save(Image.new("RGB", (7, 5), (1, 2, 3)), tmp_path / "colour.png")
    data = path.read_bytes()

    from_bytes = load_image(data)
    assert from_bytes.size == (7, 5) and from_bytes.getpixel((0, 0)) == (1, 2, 3)
    assert load_image(bytearray(data)).size == (7, 5)
    assert load_image(memoryview(data)).size == (7, 5)
    assert load_image(str(path)).size == (7, 5)

    with path.open("rb") as handle:
        handle.seek(3)  # read from the start whatever the position
        from_file = load_image(handle)
        assert not handle.closed  # the caller's file is left open
    assert from_file.getpixel((6, 4)) == (1, 2, 3)

    class Unseekable(io.RawIOBase):
        def __init__(self, payload: bytes):
            self._inner = io.BytesIO(payload)

        def readable(self) -> bool:
            return True

        def readinto(self, buffer) -> int:
            chunk = self._inner.read(len(buffer))
            buffer[: len(chunk)] = chunk
            return len(chunk)

    assert load_image(Unseekable(data)).size == (7, 5)


def test_file_object_name_in_errors(tmp_path):
    path = tmp_path / "fake.png"
    path.write_bytes(b"\x01\x02\x03 definitely not a png \x00")
    with path.open("rb") as handle:
        error = _load_error(handle)
    _assert_names_file(error, path)


def test_result_is_loaded_and_detached(tmp_path):
    path = _save(_noise(12, 9), tmp_path / "noise.png")
    loaded = load_image(path)
    assert getattr(loaded, "fp", None) is None
    path.unlink()
    assert np.asarray(loaded).shape == (9, 12, 3)


# ----------------------------------------------------------------------------------------------
# draft, arrays


def test_draft_size_reduces_large_jpeg(tmp_path):
    big = Image.new("RGB", (1600, 1200), (40, 120, 200))
    path = _save(big, tmp_path / "camera.jpg", quality=90)
    full = load_image(path)
    assert full.size == (1600, 1200)
    small = load_image(path, draft_size=100)
    assert small.mode == "RGB"
    assert 100 <= min(small.size) < 1200
    assert small.size == (200, 150)  # 1/8 scale still covers 100 x 100
    assert _close(small.getpixel((10, 10)), (40, 120, 200), tolerance=4)
    grey = load_image(path, mode="L", draft_size=300)
    assert grey.mode == "L" and min(grey.size) >= 300 and grey.size[0] < 1600
    # Not a JPEG: draft_size changes nothing.
    png = _save(Image.new("RGB", (400, 300)), tmp_path / "big.png")
    assert load_image(png, draft_size=50).size == (400, 300)


def test_to_array_shapes_and_types():
    rgb = Image.new("RGB", (40, 20), (10, 20, 30))
    grey = Image.new("L", (20, 40), 77)
    for fit in ("stretch", "center-crop"):
        colour = to_array(rgb, 16, fit=fit)
        assert colour.shape == (3, 16, 16) and colour.dtype == np.uint8
        assert colour.flags.c_contiguous and colour.flags.writeable
        assert colour[:, 8, 8].tolist() == [10, 20, 30]
        mono = to_array(grey, 16, fit=fit)
        assert mono.shape == (1, 16, 16) and mono.dtype == np.uint8
        assert mono.flags.c_contiguous and mono.flags.writeable
        assert int(mono.min()) == int(mono.max()) == 77
    same = to_array(Image.new("RGB", (16, 16), (5, 6, 7)), 16)
    assert same.shape == (3, 16, 16) and same[:, 0, 0].tolist() == [5, 6, 7]


def test_to_array_fits():
    stripes = Image.new("RGB", (60, 20))
    stripes.paste((255, 0, 0), (0, 0, 20, 20))
    stripes.paste((0, 255, 0), (20, 0, 40, 20))
    stripes.paste((0, 0, 255), (40, 0, 60, 20))
    cropped = to_array(stripes, 10, fit="center-crop")
    assert np.all(np.abs(cropped[:, 1:-1, 1:-1].astype(int) - [[[0]], [[255]], [[0]]]) <= 3)
    stretched = to_array(stripes, 12, fit="stretch")
    assert _close(stretched[:, 6, 1], (255, 0, 0))  # stretch keeps the outer stripes
    assert _close(stretched[:, 6, 10], (0, 0, 255))


def test_to_array_rejects_bad_arguments():
    with pytest.raises(ValueError):
        to_array(Image.new("RGB", (4, 4)), 4, fit="zoom")
    with pytest.raises(ValueError):
        to_array(Image.new("RGBA", (4, 4)), 4)
    with pytest.raises(ValueError):
        to_array(Image.new("RGB", (4, 4)), 0)


def test_load_array(tmp_path):
    path = _save(Image.new("RGB", (1600, 1200), (200, 100, 50)), tmp_path / "photo.jpg")
    colour = load_array(path, 84)
    assert colour.shape == (3, 84, 84) and colour.dtype == np.uint8
    assert _close(colour[:, 40, 40], (200, 100, 50), tolerance=4)
    mono = load_array(path, 84, channels=1, fit="center-crop")
    assert mono.shape == (1, 84, 84) and mono.dtype == np.uint8
    assert abs(int(mono[0, 40, 40]) - round(0.299 * 200 + 0.587 * 100 + 0.114 * 50)) <= 4
    rgba = _save(Image.new("RGBA", (30, 20), (0, 0, 0, 0)), tmp_path / "clear.png")
    assert load_array(rgba, 8).min() == 255
    with pytest.raises(ImageLoadError) as info:
        load_array(tmp_path / "missing.jpg", 84)
    assert str(tmp_path / "missing.jpg") in str(info.value)


# ----------------------------------------------------------------------------------------------
# names


@pytest.mark.parametrize(
    "name, expected",
    [
        ("cat.jpg", True),
        ("CAT.JPEG", True),
        ("dir/sub/dog.Png", True),
        ("train\\n01\\x.TIFF", True),
        ("a.webp", True),
        ("scan.bmp", True),
        (".hidden.png", False),
        ("dir/._dog.jpg", False),
        ("__MACOSX/dir/dog.jpg", False),
        ("archive/__MACOSX/dog.jpg", False),
        ("notes.txt", False),
        ("report.pdf", False),
        ("data.h5", False),
        ("clip.mpeg", False),
        ("README", False),
        ("dir/", False),
        ("jpg", False),
    ],
)
def test_is_image_name(name, expected):
    assert is_image_name(name) is expected


def test_image_extensions():
    assert {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff"} <= IMAGE_EXTENSIONS
    assert all(ext.startswith(".") and ext == ext.lower() for ext in IMAGE_EXTENSIONS)
    assert ".pdf" not in IMAGE_EXTENSIONS
    assert MAX_PIXELS == 120_000_000


def test_module_imports_neither_qt_nor_torch():
    source = Path(images.__file__).read_text()
    for banned in ("PySide6", "PyQt", "qtpy", "import torch", "from torch"):
        assert banned not in source
