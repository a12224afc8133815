"""The query files of ``metastudio classify``: every entry that can't be used is named with its
reason and the rest is classified (generated files and folders, built in tmp_path)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import EpsImagePlugin, Image

from metastudio.cli.classifying import query_files as _query_files
from metastudio.data.images import load_image
from metastudio.data.listing import (BAD_NAME, BROKEN_LINK, FOLDER_LOOP, LINK_LOOP, NAME_TOO_LONG, NOT_A_FILE, NOT_FOUND,
                                     UNSUPPORTED, find_images)
from metastudio.errors import ImageLoadError, MetaStudioError

from conftest import make_class_tree

EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n0 0 moveto 8 8 lineto stroke\nshowpage\n"
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
SVG = b'<?xml version="1.0"?>\n<!-- a drawing -->\n<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"/>\n'
BAD = os.fsdecode(b"bad\xff.png")  # a name that is not UTF-8 (as the file system hands it over)


def _bad_folder(root: Path) -> tuple[Path, list[Path], dict[str, str]]:
    """A query folder with good images and one of each bad entry: (folder, good files, {name: reason})."""
    folder = root / "query"
    (folder / "sub").mkdir(parents=True)
    good = [folder / "a.png", folder / "sub" / "b.jpg", folder / "z.png"]
    for i, path in enumerate(good):
        Image.new("RGB", (16, 16), (40 * i, 90, 200)).save(path)
    Image.new("RGB", (16, 16)).save(folder / BAD)
    (folder / "gone.png").symlink_to(folder / "nothing.png")
    (folder / "loop1.png").symlink_to(folder / "loop2.png")
    (folder / "loop2.png").symlink_to(folder / "loop1.png")
    (folder / "sub" / "up").symlink_to(folder)
    os.mkfifo(folder / "pipe.png")
    (folder / "drawing.svg").write_bytes(SVG)
    (folder / "report.pdf").write_bytes(PDF)
    (folder / "figure.eps").write_bytes(EPS)
    (folder / "notes.txt").write_text("not a picture, not said")
    (folder / ".hidden-gone.png").symlink_to(folder / "nothing.png")
    bad = {"bad\\xff.png": BAD_NAME, "gone.png": BROKEN_LINK, "loop1.png": LINK_LOOP, "loop2.png": LINK_LOOP,
           "sub/up": FOLDER_LOOP, "pipe.png": NOT_A_FILE, "drawing.svg": UNSUPPORTED, "report.pdf": UNSUPPORTED,
           "figure.eps": UNSUPPORTED}
    return folder, good, bad


def test_find_images_names_every_bad_entry_and_keeps_the_good(tmp_path):
    folder, good, bad = _bad_folder(tmp_path)
    files, problems = find_images([folder])
    assert files == sorted(good)
    assert {p.path[len(str(folder)) + 1:]: p.reason for p in problems} == bad
    assert all(p.path.isprintable() for p in problems)  # printable: no surrogates, no codec error


def test_queries_given_by_name(tmp_path):
    folder, good, _ = _bad_folder(tmp_path)
    long_name = folder / ("x" * 256 + ".png")  # over NAME_MAX: it can't exist
    files, problems = find_images([good[0], long_name, tmp_path / "nope.png", folder / BAD, folder / "loop1.png",
                                   folder / "pipe.png", folder / "notes.txt"])
    assert files == [good[0], folder / "notes.txt"]  # a file given by name is tried whatever its name
    assert [p.reason for p in problems] == [NAME_TOO_LONG, NOT_FOUND, BAD_NAME, LINK_LOOP, NOT_A_FILE]


def test_query_files_warns_and_fails_only_when_nothing_is_left(tmp_path, capsys):
    folder, good, bad = _bad_folder(tmp_path)
    long_name = str(folder / ("x" * 256 + ".png"))
    assert _query_files([str(folder), str(tmp_path / "nope.png"), long_name]) == sorted(good)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == len(bad) + 2 and all(line.startswith("warning: cannot use image '") for line in err)
    assert f"warning: cannot use image '{tmp_path / 'nope.png'}': file not found; skipped" in err
    assert any(NAME_TOO_LONG in line and "x" * 256 in line for line in err)

    with pytest.raises(MetaStudioError, match="query '.*nope.png' does not exist"):
        _query_files([str(tmp_path / "nope.png")])
    with pytest.raises(MetaStudioError, match="no query images to classify"):
        _query_files([str(folder / "pipe.png"), str(folder / "gone.png")])
    assert "it is not an ordinary file" in capsys.readouterr().err


WMF = b"\xd7\xcd\xc6\x9a\x00\x00" + bytes(16) + b"\x01\x00\x09\x00" + bytes(40)  # placeable metafile
EMF = b"\x01\x00\x00\x00" + bytes(36) + b" EMF" + bytes(40)


@pytest.mark.parametrize("content", [EPS, PDF, SVG, b"\xc5\xd0\xd3\xc6" + EPS, WMF, EMF],
                         ids=["eps", "pdf", "svg", "dos-eps", "wmf", "emf"])
def test_documents_and_drawings_are_refused_by_content(tmp_path, monkeypatch, content):
    """Named .png, an EPS is still refused, and Pillow's EPS plugin (which runs Ghostscript) is never tried."""
    def never(self):
        raise AssertionError("the EPS plugin was asked to open the file")

    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", never)
    path = tmp_path / "renamed.png"
    path.write_bytes(content)
    with pytest.raises(ImageLoadError) as caught:
        load_image(path)
    assert caught.value.reason == UNSUPPORTED and "files are not opened" in caught.value.detail


def test_classify_command_uses_the_good_files_and_names_the_bad(tmp_path):
    support = make_class_tree(tmp_path / "support", classes=2, per_class=2, size=28)
    folder, good, bad = _bad_folder(tmp_path)
    renamed = folder / "renamed-eps.png"
    renamed.write_bytes(EPS)
    run = subprocess.run([sys.executable, "-m", "metastudio", "classify", "--model", "protonet-omniglot",
                          "--support", str(support), "--query", str(folder), str(tmp_path / "nope.png"),
                          "--device", "cpu"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stdout + run.stderr
    rows = run.stdout.splitlines()
    assert sorted(row.split()[0] for row in rows) == sorted(str(f) for f in good)
    warnings = [line for line in run.stderr.splitlines() if line.startswith("warning: ")]
    for name, reason in [*bad.items(), ("renamed-eps.png", UNSUPPORTED)]:
        assert any(f"{name}': {reason}" in line for line in warnings), (name, run.stderr)
    assert any(f"nope.png': {NOT_FOUND}" in line for line in warnings)
