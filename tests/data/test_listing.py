"""metastudio.data.listing: the one set of rules by which folders (query folders and dataset folders)
and zips are listed; each entry that can't be used is named with its reason. Trees built in tmp_path."""

from __future__ import annotations

import os
import stat
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from metastudio.data import listing
from metastudio.data.listing import (ALREADY_LISTED, FOLDER_LOOP, FOLDER_NO_PERMISSION, NAME_TOO_LONG, NOT_A_FILE,
                                     UNSUPPORTED, find_images, is_image_name, scan_folder, scan_zip)


def _picture(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), "red").save(path)
    return path


def _reasons(problems, root: Path) -> dict[str, str]:
    return {p.path[len(str(root)) + 1:]: p.reason for p in problems}


def test_hidden_entries_and_macos_folders_pass_unsaid(tmp_path):
    root = tmp_path / "tree"
    kept = [_picture(root / "a" / "1.png"), _picture(root / "a" / "2.png")]
    _picture(root / ".thumbnails" / "a.png")
    _picture(root / "__MACOSX" / "a" / "._1.png")
    _picture(root / "a" / "._1.png")
    (root / "a" / ".gone.png").symlink_to(root / "nothing")
    assert find_images([root]) == (kept, [])
    assert scan_folder(root) == (["a/1.png", "a/2.png"], [])
    assert find_images([root / ".thumbnails"])[0] == [root / ".thumbnails" / "a.png"]  # given: walked


def test_a_folder_that_cannot_be_opened_is_named_and_the_rest_is_listed(tmp_path, monkeypatch):
    root = tmp_path / "tree"
    good = _picture(root / "open" / "1.png")
    _picture(root / "locked" / "1.png")
    scandir = os.scandir

    def refuse(path):
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refuse)
    files, problems = find_images([root])
    assert files == [good]
    assert _reasons(problems, root) == {"locked": FOLDER_NO_PERMISSION}
    assert str(problems[0]) == f"cannot use image '{root / 'locked'}': you don't have permission to open this folder"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="the superuser may open any folder: permissions can't be tested as root")
def test_a_folder_without_permission_on_disk(tmp_path):
    root = tmp_path / "tree"
    good = _picture(root / "open" / "1.png")
    _picture(root / "locked" / "1.png")
    (root / "locked").chmod(0)
    try:
        files, problems = find_images([root])
    finally:
        (root / "locked").chmod(stat.S_IRWXU)
    assert files == [good] and _reasons(problems, root) == {"locked": FOLDER_NO_PERMISSION}


def test_a_path_too_long_for_the_system_is_named(tmp_path):
    """Folders nested deeper than PATH_MAX allows: the deepest entry can't even be looked at."""
    root = tmp_path / "tree"
    good = _picture(root / "ok.png")
    name = "d" * 200
    fd = os.open(root, os.O_RDONLY)
    depth = 0
    try:
        while len(os.fsencode(root)) + depth * (len(name) + 1) < 4200:
            os.mkdir(name, dir_fd=fd)
            inner = os.open(name, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd, depth = inner, depth + 1
    finally:
        os.close(fd)
    files, problems = find_images([root])
    assert files == [good]
    assert [p.reason for p in problems] == [NAME_TOO_LONG]
    assert problems[0].path.count(name) > 4000 // len(name) - 2


def test_a_folder_reached_twice_through_links_is_walked_once(tmp_path):
    root = tmp_path / "tree"
    pictures = [_picture(root / "b" / "1.png")]
    (root / "a").symlink_to(root / "b")  # sorts first: walked, its target is then already listed
    (root / "c").symlink_to(root / "b")
    files, problems = find_images([root])
    assert files == [root / "a" / "1.png"] and len(pictures) == 1
    assert _reasons(problems, root) == {"b": ALREADY_LISTED, "c": ALREADY_LISTED}
    assert "its pictures are listed as those of" in problems[0].detail and str(root / "a") in problems[0].detail


def test_a_web_of_links_ends_quickly(tmp_path):
    """Each of 20 folders links twice to the next: walked blindly, 2**20 paths; each folder is walked once."""
    root = tmp_path / "web"
    for level in range(20):
        (root / f"f{level}").mkdir(parents=True)
    _picture(root / "f19" / "deep.png")
    for level in range(19):
        for link in ("x", "y"):
            (root / f"f{level}" / link).symlink_to(root / f"f{level + 1}")
    files, problems = find_images([root / "f0"])
    assert files == [root.joinpath("f0", *["x"] * 19, "deep.png")]
    assert {p.reason for p in problems} == {ALREADY_LISTED} and len(problems) < 40


def test_a_link_back_up_is_a_loop_not_an_endless_walk(tmp_path):
    root = tmp_path / "tree"
    good = _picture(root / "class" / "1.png")
    (root / "class" / "again").symlink_to(root)
    files, problems = find_images([root])
    assert files == [good] and _reasons(problems, root) == {"class/again": FOLDER_LOOP}


def test_a_nul_in_a_given_name_is_a_bad_name():
    files, problems = find_images(["bad\x00name.png"])
    assert files == [] and problems[0].reason == listing.BAD_NAME and "NUL" in problems[0].detail


def test_zip_members_follow_the_same_rules(tmp_path):
    path = tmp_path / "set.zip"
    link = zipfile.ZipInfo("cats/link.png")
    link.create_system, link.external_attr = 3, (stat.S_IFLNK | 0o777) << 16
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("cats/b.png", b"x")
        zf.writestr("cats/a.png", b"x")
        zf.writestr("cats/drawing.svg", b"<svg/>")
        zf.writestr("cats/notes.txt", b"not said")
        zf.writestr("cats/.hidden.png", b"x")
        zf.writestr(".git/x.png", b"x")
        zf.writestr("__MACOSX/cats/._a.png", b"x")
        zf.writestr("cats/sub/", b"")
        zf.writestr(link, b"a.png")
    with zipfile.ZipFile(path) as zf:
        members, problems = scan_zip(path, zf.infolist())
    assert members == ["cats/a.png", "cats/b.png"]
    assert {p.path: p.reason for p in problems} == {f"{path}!cats/drawing.svg": UNSUPPORTED,
                                                    f"{path}!cats/link.png": NOT_A_FILE}


def test_picture_names():
    assert is_image_name("a/b/photo.JPG") and is_image_name("x.tiff")
    assert not is_image_name("a/.photo.jpg") and not is_image_name("__MACOSX/photo.jpg")
    assert not is_image_name("drawing.svg") and not is_image_name("figure.eps") and not is_image_name("d.wmf")
    assert listing.is_unsupported_picture_name("figure.EPS") and listing.is_unsupported_picture_name("d.emf")
    assert not listing.is_unsupported_picture_name("photo.png") and not listing.is_unsupported_picture_name("a.txt")
