"""Pillow's warnings never reach stderr: while a file is decoded they are collected for that thread
alone; one that says a TIFF is cut short refuses it as damaged, the others are notes for a person.
Every file is generated here."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import threading
import warnings

import numpy as np
import pytest
from PIL import Image, ImageFile

from metastudio.data.images import PART_MISSING, PARTLY_READ, decoding_warnings, load_image
from metastudio.data.imagestore import ImageStore
from metastudio.data.listing import EXTERNAL_FORMATS, pixel_formats
from metastudio.errors import ImageLoadError

EXIF_NOTE = "its EXIF information (camera details, orientation) is damaged: what could not be read was ignored"
MPO_NOTE = "its extra pictures (MPO) are damaged: the main picture is used"


def _jpeg(size=(8, 4), colour="blue", **options) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, "JPEG", **options)
    return out.getvalue()


def corrupt_exif_jpeg() -> bytes:
    """A JPEG whose EXIF block is cut short: Pillow warns "Corrupt EXIF data" (and "Tag data larger than file")."""
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "Maker" * 20
    return _jpeg(exif=exif.tobytes()[:40])


def malformed_mpo() -> bytes:
    """A JPEG with an APP2 "MPF" segment that is not a multi-picture header: "malformed MPO file"."""
    jpeg = _jpeg()
    payload = b"MPF\x00" + b"garbage!" * 4
    return jpeg[:2] + b"\xff\xe2" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def tiff_with_tag_past_the_end() -> bytes:
    """A 4x4 greyscale TIFF whose description tag points past the end of the file (it was cut):
    Pillow warns "Tag data larger than file" and still reads the pixels."""
    entries = [(256, 3, 1, 4), (257, 3, 1, 4), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1), (273, 4, 1, 0),
               (278, 3, 1, 4), (279, 4, 1, 16), (270, 2, 1000, 100_000)]
    start = 8 + 2 + 12 * len(entries) + 4
    out = b"II*\x00" + struct.pack("<IH", 8, len(entries))
    for tag, kind, count, value in entries:
        value = start if tag == 273 else value
        out += struct.pack("<HHIHH", tag, kind, count, value, 0) if kind == 3 else struct.pack("<HHII", tag, kind, count, value)
    return out + struct.pack("<I", 0) + bytes(range(0, 256, 16))


def palette_png_with_byte_transparency() -> bytes:
    """A palette PNG whose transparency is a table of bytes (converting it to RGB makes Pillow warn)."""
    image = Image.new("P", (4, 4), 0)
    image.putpalette([value for i in range(256) for value in (i, 0, 0)])
    image.putpixel((1, 1), 1)
    image.putpixel((2, 2), 2)
    out = io.BytesIO()
    image.save(out, "PNG", transparency=bytes([0, 255, 128] + [255] * 253))  # colour 0 transparent, 2 half
    return out.getvalue()


def _heard_by_pillow(data: bytes) -> list[str]:
    """The warnings Pillow itself gives when opening, reading and converting ``data``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        image = Image.open(io.BytesIO(data))
        image.load()
        image.getexif()
        image.convert("RGB")
    return [str(w.message) for w in caught]


@pytest.fixture(autouse=True)
def _warnings_are_errors():
    """Any warning that leaves the loader fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def test_the_test_files_do_make_pillow_warn():
    assert any("Corrupt EXIF data" in text for text in _heard_by_pillow(corrupt_exif_jpeg()))
    assert any("malformed MPO" in text for text in _heard_by_pillow(malformed_mpo()))
    assert any("Tag data larger than file" in text for text in _heard_by_pillow(tiff_with_tag_past_the_end()))
    assert any("Palette images with Transparency" in text for text in _heard_by_pillow(palette_png_with_byte_transparency()))


def test_a_damaged_exif_block_is_a_note_and_the_picture_is_used():
    notes: list[str] = []
    image = load_image(corrupt_exif_jpeg(), notes=notes)
    assert image.size == (4, 8) and notes == [EXIF_NOTE]  # the orientation (6) was read before the cut
    assert load_image(corrupt_exif_jpeg()).size == (4, 8)  # no notes list: nothing said, nothing leaks


def test_a_malformed_mpo_gives_its_main_picture_and_a_note():
    notes: list[str] = []
    image = load_image(malformed_mpo(), notes=notes)
    assert image.size == (8, 4) and notes == [MPO_NOTE]
    assert np.asarray(image)[0, 0, 2] > 200  # the blue JPEG


def test_a_tiff_cut_short_is_refused_as_damaged():
    with pytest.raises(ImageLoadError) as caught:
        load_image(tiff_with_tag_past_the_end(), name="scan.tif")
    assert caught.value.reason == PART_MISSING
    assert caught.value.detail == "the file is truncated or corrupt: Tag data larger than file. Skipping tag 270"
    assert str(caught.value) == "cannot use image 'scan.tif': the picture is damaged: part of it is missing"


def test_a_palette_with_byte_transparency_is_composited_without_a_word():
    notes: list[str] = []
    pixels = np.asarray(load_image(palette_png_with_byte_transparency(), notes=notes))
    assert notes == []
    assert pixels[0, 0].tolist() == [255, 255, 255]  # transparent: white background
    assert pixels[1, 1].tolist() == [1, 0, 0]  # opaque
    assert pixels[2, 2].tolist() == [128, 127, 127]  # half transparent: half white


def test_the_decompression_bomb_warning_is_dropped(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)  # warns above 2000 pixels, refuses above 4000
    notes: list[str] = []
    out = io.BytesIO()
    Image.new("RGB", (50, 50), "red").save(out, "PNG")  # 2500 pixels: in Pillow's warning range
    assert load_image(out.getvalue(), notes=notes).size == (50, 50) and notes == []


@pytest.mark.parametrize("cut", [2, 3])
def test_truncated_files_are_partly_read_and_say_nothing_more(cut):
    out = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(out, "PNG")
    data = out.getvalue()
    with pytest.raises(ImageLoadError) as caught:
        load_image(data[: len(data) * (cut - 1) // cut])
    assert caught.value.reason == PARTLY_READ and ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_warnings_heard_on_the_way_to_a_failure_end_its_detail():
    cut = tiff_with_tag_past_the_end()[:60]  # the directory itself is cut: Pillow warns, then gives up
    with pytest.raises(ImageLoadError) as caught:
        load_image(cut)
    assert caught.value.reason == "the picture is damaged and can't be read"
    assert "; Pillow warned: Corrupt EXIF data.  Expecting to read 12 bytes" in caught.value.detail


def test_warnings_of_other_threads_and_of_other_code_are_left_alone():
    """While a thread decodes, a warning raised in another thread goes through the usual filters."""
    started, done = threading.Event(), threading.Event()

    def decode():
        started.set()
        while not done.is_set():
            load_image(corrupt_exif_jpeg())

    worker = threading.Thread(target=decode)
    worker.start()
    try:
        started.wait()
        with pytest.raises(UserWarning, match="raised by the test itself"):  # simplefilter("error") applies here
            warnings.warn("raised by the test itself", UserWarning)
    finally:
        done.set()
        worker.join()
    with decoding_warnings() as heard:
        warnings.warn("heard inside the block", UserWarning)
    assert heard == ["heard inside the block"]


def test_two_threads_decoding_at_once_each_get_their_own_notes(monkeypatch):
    """The GUI decodes thumbnails and adapts in two threads: neither's warnings leak or cross over.
    Each decode waits, before Pillow opens its file (and warns), until the other thread's decode
    has come as far, so that the two are always under way together."""
    files = {"exif": (corrupt_exif_jpeg(), [EXIF_NOTE]), "mpo": (malformed_mpo(), [MPO_NOTE])}
    together = threading.Barrier(2, timeout=20)
    pillow_open = Image.open

    def meet_then_open(*args, **kwargs):
        together.wait()
        return pillow_open(*args, **kwargs)

    monkeypatch.setattr(Image, "open", meet_then_open)
    results: dict[str, list] = {}

    def decode(kind: str):
        data, _ = files[kind]
        results[kind] = []
        for _ in range(40):
            notes: list[str] = []
            load_image(data, notes=notes)
            results[kind].append(notes)

    threads = [threading.Thread(target=decode, args=(kind,)) for kind in files]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for kind, (_, expected) in files.items():
        assert results[kind] == [expected] * 40, kind


def test_no_raw_warning_line_reaches_stderr(tmp_path):
    """In a process that shows every warning (-W always), two threads decode warning-raising files."""
    for name, data in [("exif.jpg", corrupt_exif_jpeg()), ("mpo.jpg", malformed_mpo()),
                       ("cut.tif", tiff_with_tag_past_the_end()), ("palette.png", palette_png_with_byte_transparency())]:
        (tmp_path / name).write_bytes(data)
    script = (
        "import sys, threading\n"
        "from pathlib import Path\n"
        "from metastudio.data.images import load_image\n"
        "from metastudio.errors import ImageLoadError\n"
        "def run(paths):\n"
        "    for _ in range(10):\n"
        "        for p in paths:\n"
        "            try: load_image(p)\n"
        "            except ImageLoadError as e: assert 'damaged' in e.reason\n"
        "files = sorted(Path(sys.argv[1]).iterdir())\n"
        "threads = [threading.Thread(target=run, args=(files[i::2],)) for i in range(2)]\n"
        "[t.start() for t in threads]; [t.join() for t in threads]\n"
        "print('done')\n"
    )
    run = subprocess.run([sys.executable, "-W", "always", "-c", script, str(tmp_path)], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0 and run.stdout == "done\n", run.stderr
    assert run.stderr == ""


def test_the_store_keeps_the_notes_of_each_file(tmp_path):
    exif, plain = tmp_path / "exif.jpg", tmp_path / "plain.jpg"
    exif.write_bytes(corrupt_exif_jpeg())
    plain.write_bytes(_jpeg())
    store = ImageStore(8)
    store.get(exif), store.get(plain)
    assert store.notes_for(exif) == [EXIF_NOTE] and store.notes_for(plain) == []
    assert store.notes_for(tmp_path / "never-decoded.png") == []


def test_only_formats_pillow_decodes_itself_are_opened(monkeypatch):
    allowed = pixel_formats()
    assert not EXTERNAL_FORMATS & set(allowed) and {"EPS", "WMF", "MPEG"}.isdisjoint(allowed)
    assert {"PNG", "JPEG", "GIF", "TIFF", "BMP"} <= set(allowed)
    assert all(not issubclass(Image.OPEN[f][0], ImageFile.StubImageFile) for f in allowed
               if isinstance(Image.OPEN[f][0], type))
    monkeypatch.setitem(Image.OPEN, "LATE", (Image.OPEN["PNG"][0], None))  # a plugin registered afterwards
    assert pixel_formats() == (*allowed, "LATE")
