"""A generated corpus of odd and hostile inputs, for the fault-injection tests
(tests/test_robustness.py) and the corpus report (benchmarks/tools/robustness.py).

:func:`make_image_corpus` writes well over 100 picture files and folder entries, each with what
MetaStudio must do with it: ``GOOD`` (it is a picture: it must be classified), ``BAD`` (it must be
named with its reason, the rest classified) or ``EITHER`` (randomly damaged bytes: a decoder may
still read a picture from them; it must be classified or named, never silently skipped).
:func:`make_model_corpus` and :func:`make_project_corpus` write hostile model and project files
from a real one; each must be refused with a MetaStudioError naming the file (or opened, where a
damaged part is only reported). Everything is made from a seed, so a failure can be reproduced.
"""

from __future__ import annotations

import io
import json
import os
import random
import struct
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

GOOD, BAD, EITHER = "good", "bad", "either"
_FORMATS = {"png": "PNG", "jpg": "JPEG", "gif": "GIF", "bmp": "BMP", "tiff": "TIFF", "webp": "WEBP"}


def _picture(seed: int, size: tuple[int, int] = (40, 32), mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (size[1] // 4 + 1, size[0] // 4 + 1, 3), dtype=np.uint8)
    image = Image.fromarray(base).resize(size, Image.Resampling.NEAREST)
    return image.convert(mode) if mode != "RGB" else image


def _encoded(image: Image.Image, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` (a header bomb: far more pixels than allowed)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def _bmp_bomb() -> bytes:
    data = bytearray(_encoded(_picture(1, (4, 4)), "BMP"))
    struct.pack_into("<ii", data, 18, 60000, 60000)
    return bytes(data)


def _gif_bomb() -> bytes:
    data = bytearray(_encoded(_picture(2, (4, 4)), "GIF"))
    struct.pack_into("<HH", data, 6, 65535, 65535)  # the logical screen
    return bytes(data)


def _good_files(seed: int) -> dict[str, bytes]:
    """Odd but valid pictures: every one must be classified."""
    pic = _picture(seed)
    files = {f"good-{ext}.{ext}": _encoded(pic, fmt) for ext, fmt in _FORMATS.items()}
    files.update({
        "good-1x1.png": _encoded(_picture(seed, (1, 1)), "PNG"),
        "good-strip.png": _encoded(_picture(seed, (2000, 3)), "PNG"),
        "good-grey.jpg": _encoded(pic.convert("L"), "JPEG"),
        "good-cmyk.jpg": _encoded(pic.convert("CMYK"), "JPEG"),
        "good-progressive.jpg": _encoded(pic, "JPEG", progressive=True, quality=70),
        "good-palette.png": _encoded(pic.convert("P"), "PNG"),
        "good-palette-transparent.png": _encoded(pic.convert("P"), "PNG", transparency=0),
        "good-rgba.png": _encoded(pic.convert("RGBA"), "PNG"),
        "good-la.png": _encoded(pic.convert("LA"), "PNG"),
        "good-1bit.png": _encoded(pic.convert("1"), "PNG"),
        "good-1bit.bmp": _encoded(pic.convert("1"), "BMP"),
        "good-16bit.png": _encoded(Image.fromarray((np.asarray(pic.convert("L"), np.uint16) * 257)), "PNG"),
        "good-float.tiff": _encoded(Image.fromarray(np.asarray(pic.convert("L"), np.float32) / 255), "TIFF"),
        "good-interlaced.png": _encoded(pic, "PNG", optimize=True),
        "good-webp-lossless.webp": _encoded(pic, "WEBP", lossless=True),
        "good-ico.ico": _encoded(pic, "ICO"),
        "good-tga.tga": _encoded(pic, "TGA"),
        "good-ppm.ppm": _encoded(pic, "PPM"),
        "good-pgm.pgm": _encoded(pic.convert("L"), "PPM"),
        "good-tiff-lzw.tiff": _encoded(pic, "TIFF", compression="tiff_lzw"),
        "png-named-jpg.jpg": _encoded(pic, "PNG"),
        "jpeg-named-png.png": _encoded(pic, "JPEG"),
        "UPPER-CASE.JPG": _encoded(pic, "JPEG"),
        "name with spaces & ünïcode.png": _encoded(pic, "PNG"),
    })
    frames = [_picture(seed + i) for i in range(3)]
    out = io.BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    files["good-animated.gif"] = out.getvalue()
    out = io.BytesIO()
    frames[0].save(out, "TIFF", save_all=True, append_images=frames[1:])
    files["good-multipage.tiff"] = out.getvalue()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: the orientation tag says turn it
    files["good-exif-rotated.jpg"] = _encoded(pic, "JPEG", exif=exif.tobytes())
    return files


def _bad_files(seed: int) -> dict[str, bytes]:
    """Files that are not usable pictures: every one must be named with its reason."""
    pic = _picture(seed)
    files: dict[str, bytes] = {}
    for ext, fmt in _FORMATS.items():
        data = _encoded(pic, fmt)
        files[f"empty.{ext}"] = b""
        files[f"one-byte.{ext}"] = data[:1]
        files[f"signature-only.{ext}"] = data[:8]
        files[f"text-named.{ext}"] = b"this is a note, not a picture\n" * 3
    files.update({
        "header-bomb.png": _png_header_only(100_000, 100_000),
        "header-bomb.bmp": _bmp_bomb(),
        "header-bomb.gif": _gif_bomb(),
        "zero-size.png": _png_header_only(0, 0),
        "html.jpg": b"<!DOCTYPE html><html><body>not a picture</body></html>",
        "json.png": json.dumps({"not": "a picture"}).encode(),
        "zip.png": _zip_bytes(),
        "random-bytes.png": random.Random(seed).randbytes(2048),
        "nul-bytes.jpg": b"\x00" * 4096,
        "drawing.svg": b'<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"/>',
        "drawing-named.png": b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>',
        "document.pdf": b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n",
        "document-named.jpg": b"%PDF-1.4\n%%EOF\n",
        "figure.eps": b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n",
        "postscript-named.png": b"%!PS-Adobe-3.0\n{ } loop\n",  # loops forever in Ghostscript
        "postscript.ps": b"%!PS\nshowpage\n",
        "binary-eps.jpg": b"\xc5\xd0\xd3\xc6" + b"\x00" * 28,
    })
    return files


def _zip_bytes() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("a.txt", "zip")
    return out.getvalue()


def _damaged_files(seed: int) -> dict[str, bytes]:
    """Truncated or corrupted pictures: a decoder may read part of them or none."""
    rng = random.Random(seed)
    pic = _picture(seed, (64, 48))
    files: dict[str, bytes] = {}
    for ext, fmt in _FORMATS.items():
        data = _encoded(pic, fmt)
        for cut in (0.3, 0.6, 0.95):
            files[f"truncated-{int(cut * 100)}.{ext}"] = data[: max(9, int(len(data) * cut))]
        for trial in range(3):
            damaged = bytearray(data)
            for _ in range(8):
                at = rng.randrange(min(len(damaged), 12), len(damaged))
                damaged[at] = rng.randrange(256)
            files[f"flipped-{trial}.{ext}"] = bytes(damaged)
    jpeg = bytearray(_encoded(pic, "JPEG", exif=Image.Exif().tobytes() + b"\xff" * 40))
    files["corrupt-exif.jpg"] = bytes(jpeg)
    return files


def _links_and_specials(folder: Path, good_name: str) -> dict[str, str]:
    """Folder entries that are not files (links, loops, a pipe, odd names, a folder named like a picture)."""
    made: dict[str, str] = {}

    def entry(name: str, make: Callable[[Path], None], expected: str = BAD) -> None:
        try:
            make(folder / name)
        except OSError:  # the file system refuses it (some refuse non-UTF-8 names): not in the corpus
            return
        made[name] = expected

    entry("dangling-link.png", lambda p: p.symlink_to(folder / "nothing-here.png"))
    entry("loop-a.png", lambda p: (p.symlink_to(folder / "loop-b.png"), (folder / "loop-b.png").symlink_to(p)))
    made["loop-b.png"] = BAD
    entry("link-to-good.png", lambda p: p.symlink_to(folder / good_name), GOOD)
    entry("link-to-dev-zero.png", lambda p: p.symlink_to("/dev/zero"))
    entry("link-to-dev-urandom.jpg", lambda p: p.symlink_to("/dev/urandom"))
    entry("pipe.png", lambda p: os.mkfifo(p))
    entry("folder-named.png", lambda p: (p.mkdir(), (p / "inside.png").write_bytes(_encoded(_picture(9), "PNG"))))
    made.pop("folder-named.png", None)  # a folder is looked into, not used: what counts is the picture in it
    if (folder / "folder-named.png" / "inside.png").exists():
        made["folder-named.png/inside.png"] = GOOD
    entry(os.fsdecode(b"not-utf8-\xff\xfe.png"), lambda p: p.write_bytes(_encoded(_picture(7), "PNG")))
    entry("x" * 251 + ".png", lambda p: p.write_bytes(_encoded(_picture(8), "PNG")), GOOD)
    entry("loop-folder", lambda p: p.symlink_to(folder))
    return made


def make_image_corpus(folder: Path, seed: int = 0) -> dict[str, str]:
    """Write the picture corpus into ``folder``: ``{entry name: GOOD | BAD | EITHER}``."""
    folder.mkdir(parents=True, exist_ok=True)
    expected: dict[str, str] = {}
    for files, kind in ((_good_files(seed), GOOD), (_bad_files(seed), BAD), (_damaged_files(seed), EITHER)):
        for name, data in files.items():
            (folder / name).write_bytes(data)
            expected[name] = kind
    expected.update(_links_and_specials(folder, "good-png.png"))
    return expected


# ----------------------------------------------------------------------------------------------
# Model files


def _safetensors(header: dict | list | str, tensors: dict[str, bytes] | None = None, raw_header: bytes | None = None) -> bytes:
    body = b""
    if raw_header is None:
        header = dict(header) if isinstance(header, dict) else header
        if isinstance(header, dict):
            offset = 0
            for name, data in (tensors or {}).items():
                header[name] = {"dtype": "F32", "shape": [len(data) // 4], "data_offsets": [offset, offset + len(data)]}
                offset += len(data)
                body += data
        raw_header = json.dumps(header).encode()
    return struct.pack("<Q", len(raw_header)) + raw_header + body


def _with_metadata(model: bytes, change: Callable[[dict], object]) -> bytes:
    """``model`` (a safetensors file) with its MetaStudio metadata changed by ``change``
    (which edits the dict in place, or returns a replacement: any JSON value, or raw text)."""
    size = struct.unpack("<Q", model[:8])[0]
    header = json.loads(model[8:8 + size])
    meta = json.loads(header["__metadata__"]["metastudio"])
    replaced = change(meta)
    text = replaced if isinstance(replaced, str) else json.dumps(meta if replaced is None else replaced)
    header["__metadata__"]["metastudio"] = text
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + model[8 + size:]


def _with_tensor_bytes(model: bytes, value: float) -> bytes:
    """``model`` with the first float32 of its first tensor replaced by ``value`` (NaN, inf)."""
    size = struct.unpack("<Q", model[:8])[0]
    header = json.loads(model[8:8 + size])
    first = min((v["data_offsets"][0], k) for k, v in header.items() if k != "__metadata__" and v["dtype"] == "F32")
    at = 8 + size + first[0]
    return model[:at] + struct.pack("<f", value) + model[at + 4:]


def model_mutations() -> dict[str, Callable[[bytes], bytes]]:
    """Named ways to spoil a good model file."""
    meta = _with_metadata

    def deep(_meta):
        return '{"a":' * 100_000 + "1" + "}" * 100_000

    return {
        "empty": lambda m: b"",
        "eight-bytes": lambda m: m[:8],
        "header-length-huge": lambda m: struct.pack("<Q", 1 << 62) + m[8:],
        "header-length-past-end": lambda m: struct.pack("<Q", len(m)) + m[8:],
        "header-not-json": lambda m: _safetensors({}, raw_header=b"{not json"),
        "header-a-list": lambda m: _safetensors([1, 2, 3]),
        "header-a-string": lambda m: _safetensors("hello"),
        "truncated-half": lambda m: m[: len(m) // 2],
        "truncated-last-byte": lambda m: m[:-1],
        "no-metadata": lambda m: _safetensors({}, {"w": b"\x00" * 16}),
        "metadata-a-list": lambda m: meta(m, lambda d: [1, 2]),
        "metadata-a-string": lambda m: meta(m, lambda d: "just text"),
        "metadata-not-json": lambda m: meta(m, lambda d: "{nope"),
        "metadata-deep": lambda m: meta(m, deep),
        "metadata-huge-int": lambda m: meta(m, lambda d: json.dumps(d)[:-1] + ', "x": ' + "9" * 5000 + "}"),
        "metadata-nan": lambda m: meta(m, lambda d: json.dumps(d)[:-1] + ', "x": NaN}'),
        "algorithm-a-list": lambda m: meta(m, lambda d: d.update(algorithm=["protonet"])),
        "algorithm-unknown": lambda m: meta(m, lambda d: d.update(algorithm="no-such-algorithm")),
        "backbone-unknown": lambda m: meta(m, lambda d: d.update(backbone="no-such-backbone")),
        "channels-negative": lambda m: meta(m, lambda d: d.update(channels=-3)),
        "channels-two": lambda m: meta(m, lambda d: d.update(channels=2)),
        "image-size-huge": lambda m: meta(m, lambda d: d.update(image_size=10**9)),
        "image-size-zero": lambda m: meta(m, lambda d: d.update(image_size=0)),
        "image-size-text": lambda m: meta(m, lambda d: d.update(image_size="28")),
        "hyperparameters-a-list": lambda m: meta(m, lambda d: d.update(hyperparameters=[1])),
        "hyperparameter-an-object": lambda m: meta(m, lambda d: d["hyperparameters"].update(distance={"a": 1})),
        "hyperparameter-bad-value": lambda m: meta(m, lambda d: d["hyperparameters"].update(distance="manhattan?")),
        "class-names-a-string": lambda m: meta(m, lambda d: d.update(class_names="cats")),
        "class-names-too-few": lambda m: meta(m, lambda d: d.update(class_names=["only one"])),
        "class-names-numbers": lambda m: meta(m, lambda d: d.update(class_names=[1, 2, 3])),
        "format-missing": lambda m: meta(m, lambda d: d.pop("format")),
        "format-newer": lambda m: meta(m, lambda d: d.update(format_version=999)),
        "fit-unknown": lambda m: meta(m, lambda d: d.update(fit="squash")),
        "weights-nan": lambda m: _with_tensor_bytes(m, float("nan")),
        "weights-inf": lambda m: _with_tensor_bytes(m, float("inf")),
        "random-bytes": lambda m: random.Random(1).randbytes(len(m)),
    }


def make_model_corpus(folder: Path, model: Path) -> list[Path]:
    """Hostile model files made from the good ``model`` (one that holds adapted classes)."""
    folder.mkdir(parents=True, exist_ok=True)
    data = model.read_bytes()
    paths = []
    for name, spoil in model_mutations().items():
        path = folder / f"{name}.safetensors"
        path.write_bytes(spoil(data))
        paths.append(path)
    return paths


# ----------------------------------------------------------------------------------------------
# Project files


def _zip(members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


def project_mutations() -> dict[str, Callable[[dict[str, bytes]], dict[str, bytes] | bytes]]:
    """Named ways to spoil a good project (its members by name); each returns members or raw bytes."""

    def manifest(change: Callable[[dict], object]):
        def spoil(members: dict[str, bytes]) -> dict[str, bytes]:
            document = json.loads(members["manifest.json"])
            replaced = change(document)
            text = replaced if isinstance(replaced, str) else json.dumps(document if replaced is None else replaced)
            return {**members, "manifest.json": text.encode()}
        return spoil

    def first_image(members):
        return next(n for n in members if n.startswith("images/"))

    def members_plus(extra: dict[str, bytes]):
        return lambda members: {**members, **extra}

    return {
        "not-a-zip": lambda m: b"just some text, not a project",
        "empty-file": lambda m: b"",
        "truncated": lambda m: _zip(m)[: len(_zip(m)) // 2],
        "no-manifest": lambda m: {k: v for k, v in m.items() if k != "manifest.json"},
        "manifest-not-json": lambda m: {**m, "manifest.json": b"{nope"},
        "manifest-not-utf8": lambda m: {**m, "manifest.json": b"\xff\xfe{}"},
        "manifest-a-list": manifest(lambda d: [1, 2]),
        "manifest-deep": manifest(lambda d: '{"a":' * 100_000 + "1" + "}" * 100_000),
        "manifest-huge-number": manifest(lambda d: json.dumps(d)[:-1] + ', "x": ' + "7" * 5000 + "}"),
        "manifest-nan": manifest(lambda d: json.dumps(d)[:-1] + ', "x": NaN}'),
        "format-other": manifest(lambda d: d.update(format="something-else")),
        "format-newer": manifest(lambda d: d.update(format_version=99)),
        "classes-an-object": manifest(lambda d: d.update(classes={"a": 1})),
        "class-name-a-number": manifest(lambda d: d["classes"][0].update(name=5)),
        "colour-bad": manifest(lambda d: d["classes"][0].update(colour="red")),
        "ids-twice": manifest(lambda d: d["classes"][1].update(id=d["classes"][0]["id"])),
        "image-file-escapes": manifest(lambda d: d["classes"][0]["images"][0].update(file="../../evil.png")),
        "image-file-absolute": manifest(lambda d: d["classes"][0]["images"][0].update(file="/tmp/evil.png")),
        "model-name-escapes": manifest(lambda d: d.update(models=["../evil.safetensors"])),
        "settings-a-list": manifest(lambda d: d.update(settings=[1])),
        "zip-slip-member": members_plus({"../../escaped.txt": b"x", "/abs.txt": b"y"}),
        "image-missing": lambda m: {k: v for k, v in m.items() if k != first_image(m)},
        "image-damaged": lambda m: {**m, first_image(m): b"not the picture its name promises"},
    }


def make_project_corpus(folder: Path, project: Path, bomb_mib: int = 64) -> list[Path]:
    """Hostile project files made from the good ``project`` file (with at least two classes),
    and one whose model entry inflates to ``bomb_mib`` MiB of zeros (about 1/1000 of it on disk)."""
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(project) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    paths = []
    for name, spoil in project_mutations().items():
        spoiled = spoil(dict(members))
        path = folder / f"{name}.metastudio"
        path.write_bytes(spoiled if isinstance(spoiled, bytes) else _zip(spoiled))
        paths.append(path)
    bomb = folder / "model-bomb.metastudio"
    with zipfile.ZipFile(bomb, "w") as archive:
        document = json.loads(members["manifest.json"])
        document["models"] = ["big.safetensors"]
        for name, data in members.items():
            if name != "manifest.json":
                archive.writestr(name, data)
        archive.writestr("manifest.json", json.dumps(document))
        entry = zipfile.ZipInfo("models/big.safetensors")
        entry.compress_type = zipfile.ZIP_DEFLATED
        with archive.open(entry, "w", force_zip64=True) as out:
            zeros = b"\x00" * (1 << 20)
            for _ in range(bomb_mib):
                out.write(zeros)
    paths.append(bomb)
    return paths


__all__ = ["BAD", "EITHER", "GOOD", "make_image_corpus", "make_model_corpus", "make_project_corpus",
           "model_mutations", "project_mutations"]
