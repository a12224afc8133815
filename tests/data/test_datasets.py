"""Class-folder datasets from folders and zips, the decoded-image cache, Omniglot and downloads."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from metastudio.data import datasets as datasets_module
from metastudio.data.datasets import FewShotDataset, TreeSource, load_class_folders, load_folder_split
from metastudio.data.download import download
from metastudio.errors import DatasetError

from conftest import make_class_tree, real_data


def zip_tree(folder: Path, dest: Path, prefix: str = "") -> Path:
    with zipfile.ZipFile(dest, "w") as zf:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                zf.write(f, prefix + f.relative_to(folder).as_posix())
    return dest


def test_folder_dataset_reads_every_class(class_tree):
    ds = load_class_folders(class_tree, image_size=16, channels=3)
    assert ds.class_names == ["class00", "class01", "class02", "class03"]
    assert ds.class_sizes == [6, 6, 6, 6]
    assert ds.images.shape == (24, 3, 16, 16) and ds.images.dtype == torch.uint8
    assert ds.problems == []
    # Image j of class c is the j-th file, in sorted order.
    first = np.asarray(Image.open(class_tree / "class02" / "img000.png").convert("RGB").resize((16, 16), Image.Resampling.LANCZOS))
    assert np.abs(ds.class_images(2)[0].permute(1, 2, 0).numpy().astype(int) - first.astype(int)).max() <= 2


def test_zip_gives_the_same_dataset_as_the_folder(tmp_path, class_tree):
    plain = load_class_folders(class_tree, image_size=16, use_cache=False)
    wrapped = zip_tree(class_tree, tmp_path / "tree.zip", prefix="tree/")  # one wrapping top-level folder
    flat = zip_tree(class_tree, tmp_path / "flat.zip")
    for z in (wrapped, flat):
        ds = load_class_folders(z, image_size=16, use_cache=False)
        assert ds.class_names == plain.class_names
        assert torch.equal(ds.images, plain.images)


def test_zip_read_from_many_threads_loses_nothing(tmp_path):
    """One shared ZipFile read from several threads gives "Bad CRC-32" on Python >= 3.12."""
    tree = make_class_tree(tmp_path / "t", classes=6, per_class=20, size=40)
    z = zip_tree(tree, tmp_path / "t.zip")
    many = load_class_folders(z, image_size=16, use_cache=False, workers=8)
    one = load_class_folders(z, image_size=16, use_cache=False, workers=1)
    assert many.problems == [] and torch.equal(many.images, one.images)


def test_nested_groups_become_class_paths(tmp_path):
    root = make_class_tree(tmp_path / "nested", classes=4, per_class=3, nested=True)
    ds = load_class_folders(root, image_size=8, channels=1)
    assert ds.class_names == ["group0/class00", "group0/class02", "group1/class01", "group1/class03"]
    assert ds.channels == 1


def test_bad_files_are_reported_with_reason_and_the_rest_is_kept(tmp_path):
    root = make_class_tree(tmp_path / "t", classes=3, per_class=4)
    (root / "class01" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    (root / "class01" / "empty.jpg").write_bytes(b"")
    (root / "class02" / "notes.txt").write_text("not an image, and not named like one")
    empty = root / "class03"
    empty.mkdir()
    (empty / "bad.png").write_bytes(b"nope")
    ds = load_class_folders(root, image_size=8)
    assert ds.class_sizes == [4, 4, 4]
    assert ds.class_names == ["class00", "class01", "class02"]
    text = "\n".join(ds.problems)
    assert "broken.png" in text and "empty.jpg" in text and "empty" in text
    assert "class03" in text and "dropped" in text
    assert "notes.txt" not in text  # not an image name: not a class member at all


def test_no_classes_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no classes found"):
        load_class_folders(tmp_path / "empty", image_size=8)
    with pytest.raises(DatasetError, match="does not exist"):
        load_class_folders(tmp_path / "missing", image_size=8)
    (tmp_path / "file.bin").write_bytes(b"123")
    with pytest.raises(DatasetError, match="neither a folder nor a zip"):
        load_class_folders(tmp_path / "file.bin", image_size=8)


def test_second_load_comes_from_the_cache_and_changes_invalidate_it(tmp_path, monkeypatch):
    root = make_class_tree(tmp_path / "t", classes=2, per_class=3)
    first = load_class_folders(root, image_size=8)
    calls = []
    real = datasets_module.load_array
    monkeypatch.setattr(datasets_module, "load_array", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = load_class_folders(root, image_size=8)
    assert calls == [] and torch.equal(again.images, first.images)
    load_class_folders(root, image_size=12)  # other preprocessing: decoded anew
    assert len(calls) == 6
    calls.clear()
    Image.new("RGB", (10, 10), "red").save(root / "class00" / "new.png")
    changed = load_class_folders(root, image_size=8)
    assert changed.class_sizes == [4, 3] and len(calls) == 7


def test_gather_rotations_and_subset():
    images = torch.arange(3 * 2 * 4, dtype=torch.uint8).reshape(6, 1, 2, 2)
    ds = FewShotDataset(images, ["a", "b", "c"], [2, 2, 2])
    block = ds.gather(np.array([2, 0]), np.array([[1, 0], [0, 1]]))
    assert torch.equal(block[0, 0], images[5]) and torch.equal(block[1, 1], images[1])
    rot = ds.with_rotations()
    assert rot.num_classes == 12 and rot.class_names[3] == "a/rot090"
    assert torch.equal(rot.class_images(3)[0, 0], torch.rot90(images[0, 0], k=-1))
    assert torch.equal(rot.class_images(11)[1], torch.rot90(images[5], k=-3, dims=(1, 2)))
    sub = ds.subset([2, 0])
    assert sub.class_names == ["c", "a"] and torch.equal(sub.class_images(0), images[4:6])


def test_folder_dataset_uses_split_subfolders(tmp_path):
    make_class_tree(tmp_path / "d" / "train", classes=3, per_class=2)
    zip_tree(make_class_tree(tmp_path / "val_src", classes=2, per_class=2), tmp_path / "d" / "val.zip")
    assert load_folder_split(tmp_path / "d", "train", image_size=8).num_classes == 3
    assert load_folder_split(tmp_path / "d", "val", image_size=8).num_classes == 2
    plain = make_class_tree(tmp_path / "plain", classes=2, per_class=2)
    assert load_folder_split(plain, "test", image_size=8).num_classes == 2


def test_tree_source_ignores_root_images_and_hidden_folders(tmp_path):
    root = make_class_tree(tmp_path / "t", classes=2, per_class=2)
    Image.new("RGB", (4, 4)).save(root / "stray.png")
    hidden = root / ".thumbnails"
    hidden.mkdir()
    Image.new("RGB", (4, 4)).save(hidden / "x.png")
    assert list(TreeSource(root).list_classes()) == ["class00", "class01"]


# -- downloads -----------------------------------------------------------------------------------


class _FakeResponse(io.BytesIO):
    def __init__(self, data: bytes):
        super().__init__(data)
        self.length = len(data)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_download_checks_the_checksum_and_reports_progress(tmp_path, monkeypatch):
    payload = b"x" * 200_000
    monkeypatch.setattr("urllib.request.urlopen", lambda url, timeout=None: _FakeResponse(payload))
    seen = []
    path = download("https://example.invalid/f.zip", tmp_path / "f.zip", md5=hashlib.md5(payload).hexdigest(),
                    progress=lambda done, total: seen.append((done, total)))
    assert path.read_bytes() == payload and seen[-1] == (200_000, 200_000)
    with pytest.raises(DatasetError, match="not the expected one"):
        download("https://example.invalid/g.zip", tmp_path / "g.zip", sha256="0" * 64)
    assert not (tmp_path / "g.zip").exists() and not (tmp_path / "g.zip.part").exists()


def test_download_failure_says_what_to_do(tmp_path, monkeypatch):
    import urllib.error

    def offline(url, timeout=None):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr("urllib.request.urlopen", offline)
    with pytest.raises(DatasetError, match="--root"):
        download("https://example.invalid/f.zip", tmp_path / "f.zip")


def test_omniglot_without_files_and_without_download_names_the_files(tmp_path):
    from metastudio_builtins.datasets.omniglot import load_omniglot

    with pytest.raises(DatasetError, match="images_background.zip"):
        load_omniglot(tmp_path, "test", allow_download=False)


def test_omniglot_downloads_missing_files_with_md5(tmp_path, monkeypatch):
    from metastudio_builtins.datasets import omniglot

    calls = []
    monkeypatch.setattr(omniglot, "download", lambda url, dest, md5=None, progress=None: calls.append((url, md5)) or dest)
    omniglot.locate(tmp_path)
    assert [u.rsplit("/", 1)[1] for u, _ in calls] == ["images_background.zip", "images_evaluation.zip"]
    assert {m for _, m in calls} == set(omniglot.FILES.values())


# -- real data ----------------------------------------------------------------------------------


@pytest.mark.realdata
def test_real_omniglot_vinyals_test_split():
    from metastudio_builtins.datasets.omniglot import load_omniglot, vinyals_split

    root = real_data("omniglot")
    ds = load_omniglot(root, "test")
    assert ds.num_classes == 423 * 4 and set(ds.class_sizes) == {20}
    assert ds.images.shape[1:] == (1, 28, 28) and ds.problems == []
    # The splits are disjoint and together cover all 1623 characters.
    parts = [vinyals_split(s) for s in ("train", "val", "test")]
    names = [set(p["background"]) | {"E:" + c for c in p["evaluation"]} for p in parts]
    assert sum(len(n) for n in names) == len(set().union(*names)) == 1623
    # Strokes are dark on a light background, resized with antialiasing.
    assert ds.images.float().mean() > 150 and len(torch.unique(ds.images)) > 50


@pytest.mark.realdata
def test_real_omniglot_lake_split(tmp_path):
    from metastudio_builtins.datasets.omniglot import load_omniglot

    root = real_data("omniglot")
    local = tmp_path / "omni"
    local.mkdir()
    shutil.copy(root / "images_evaluation.zip", local)
    shutil.copy(root / "images_background.zip", local)
    test = load_omniglot(local, "test", "lake")
    assert test.num_classes == 659 and test.name == "omniglot-lake-test"


def test_mini_imagenet_reads_split_folders_or_zips(tmp_path, host):
    spec = host.dataset("mini-imagenet")
    make_class_tree(tmp_path / "mini" / "train", classes=4, per_class=3, size=20)
    zip_tree(make_class_tree(tmp_path / "src_val", classes=2, per_class=3, size=20), tmp_path / "mini" / "val.zip", prefix="val/")
    train = spec.load(tmp_path / "mini", "train")
    val = spec.load(tmp_path / "mini", "val")
    assert train.num_classes == 4 and val.num_classes == 2
    assert train.images.shape[1:] == (3, 84, 84)
    with pytest.raises(DatasetError, match="split 'test' not found"):
        spec.load(tmp_path / "mini", "test")
    with pytest.raises(DatasetError, match="no official download"):
        spec.load(None, "train")


@pytest.mark.realdata
def test_real_mini_imagenet_val_split_layout():
    from metastudio.data.datasets import TreeSource

    classes = TreeSource(real_data("mini-imagenet", "val.zip")).list_classes()
    assert len(classes) == 16 and {len(v) for v in classes.values()} == {600}
    assert all(name.startswith("n") and len(name) == 9 for name in classes)


def test_huge_decoded_datasets_are_not_written_to_the_disk_cache(tmp_path, monkeypatch):
    root = make_class_tree(tmp_path / "t", classes=2, per_class=2)
    monkeypatch.setattr(datasets_module, "MAX_DISK_CACHE_BYTES", 100)
    load_class_folders(root, image_size=16)
    assert not list((Path(datasets_module.cache_dir()) / "datasets").glob("*.npy"))


def test_per_class_keeps_the_first_images_of_each_class(tmp_path):
    root = make_class_tree(tmp_path / "d", classes=3, per_class=5, size=16)
    whole = load_folder_split(root, None, image_size=16)
    part = load_folder_split(root, None, image_size=16, per_class=2)
    assert part.class_sizes == [2, 2, 2] and whole.class_sizes == [5, 5, 5]
    assert "first 2 per class" in part.name
    # the first two by file name of each class, in the same order as in the whole dataset
    starts = np.cumsum([0] + whole.class_sizes[:-1])
    expected = torch.cat([whole.images[s : s + 2] for s in starts])
    assert torch.equal(part.images, expected)


# -- entries that can't be used never stop a load -------------------------------------------------

BAD_NAME = os.fsdecode(b"bad\xff.png")  # a name that is not UTF-8, as the file system hands it over


def hostile_tree(root: Path) -> tuple[Path, dict[str, str]]:
    """Four classes of good images, among them one of each entry that can't be used, and a fifth
    class folder with nothing usable: (root, {entry relative to root: words its problem holds})."""
    make_class_tree(root, classes=4, per_class=4, size=28)
    (root / "class00" / "loop1.png").symlink_to(root / "class00" / "loop2.png")
    (root / "class00" / "loop2.png").symlink_to(root / "class00" / "loop1.png")
    (root / "class00" / "gone.png").symlink_to(root / "nothing.png")
    (root / "class00" / "up").symlink_to(root)
    os.mkfifo(root / "class01" / "pipe.png")
    Image.new("RGB", (8, 8)).save(root / "class01" / BAD_NAME)
    (root / "class02" / "drawing.svg").write_bytes(b'<svg xmlns="http://www.w3.org/2000/svg"/>')
    (root / "class02" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    (root / "class03-again").symlink_to(root / "class03")
    (root / "class04").mkdir()
    (root / "class04" / "figure.pdf").write_bytes(b"%PDF-1.4\n%%EOF\n")
    (root / "class04" / "gone.jpg").symlink_to(root / "nothing.jpg")
    return root, {"class00/loop1.png": "goes round in a loop", "class00/loop2.png": "goes round in a loop",
                  "class00/gone.png": "link to nothing", "class00/up": "a folder it is in",
                  "class01/pipe.png": "not an ordinary file", "class01/bad\\xff.png": "not valid text",
                  "class02/drawing.svg": "format isn't supported", "class02/broken.png": "damaged",
                  "class03-again": "same folder as one already listed", "class04/figure.pdf": "format isn't supported",
                  "class04/gone.jpg": "link to nothing"}


def _assert_each_named(problems: list[str], root: Path, expected: dict[str, str]) -> None:
    for entry, words in expected.items():
        hits = [p for p in problems if f"'{root}/{entry}'" in p]
        assert len(hits) == 1 and words in hits[0], (entry, problems)


def test_a_hostile_folder_lists_each_bad_entry_and_uses_the_rest(tmp_path, monkeypatch):
    root, expected = hostile_tree(tmp_path / "hostile")
    locked = root / "class03" / "locked"  # a sub-folder that can't be opened (tests run as root: simulated)
    locked.mkdir()
    Image.new("RGB", (8, 8)).save(locked / "inside.png")
    scandir = os.scandir

    def refuse(path):
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refuse)
    ds = load_class_folders(root, image_size=16, use_cache=False)
    assert ds.class_names == ["class00", "class01", "class02", "class03"] and ds.class_sizes == [4, 4, 4, 4]
    _assert_each_named(ds.problems, root, {**expected, "class03/locked": "permission to open this folder"})
    assert "class 'class04' dropped: 0 usable images, at least 1 needed" in ds.problems
    assert len(ds.problems) == len(expected) + 2


def test_a_hostile_zip_lists_each_bad_member_and_uses_the_rest(tmp_path):
    path = tmp_path / "hostile.zip"
    good = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(good, "PNG")
    link = zipfile.ZipInfo("b/link.png")
    link.create_system, link.external_attr = 3, (stat.S_IFLNK | 0o777) << 16
    with zipfile.ZipFile(path, "w") as zf:
        for name in ("a/1.png", "a/2.png", "b/1.png", "b/2.png", "b/crc.png"):
            zf.writestr(name, good.getvalue())
        zf.writestr("b/drawing.svg", b"<svg/>")
        zf.writestr(link, b"1.png")
        zf.writestr("b/locked.png", good.getvalue())
        zf.writestr("c/notes.pdf", b"%PDF-1.4")
    data = bytearray(path.read_bytes())
    offset = data.index(b"b/crc.png") + len(b"b/crc.png") + 20  # inside the member's compressed bytes
    data[offset] ^= 0xFF
    entry = data.rindex(b"b/locked.png") - 46
    assert data[entry:entry + 4] == b"PK\x01\x02"  # its central directory record
    data[entry + 8] |= 0x1  # marked as encrypted: reading it asks for a password
    path.write_bytes(bytes(data))
    ds = load_class_folders(path, image_size=8, use_cache=False)
    assert ds.class_names == ["a", "b"] and ds.class_sizes == [2, 2]
    text = "\n".join(ds.problems)
    for member, words in {"b/drawing.svg": "format isn't supported", "b/link.png": "not an ordinary file",
                          "b/locked.png": "locked with a password", "b/crc.png": "damaged", "c/notes.pdf": "supported"}.items():
        assert f"'{path}!{member}': " in text and words in text.split(f"'{path}!{member}': ")[1].splitlines()[0]
    assert "class 'c' dropped: 0 usable images" in text


def test_when_no_class_is_left_the_error_says_why(tmp_path):
    root = tmp_path / "nothing-usable"
    (root / "a").mkdir(parents=True)
    (root / "a" / "drawing.svg").write_bytes(b"<svg/>")
    with pytest.raises(DatasetError, match=r"no classes found .*1 entries can't be used, e.g. cannot use image "
                                           r"'.*drawing.svg': this picture format isn't supported"):
        load_class_folders(root, image_size=8)
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(DatasetError, match="neither a folder nor a zip"):
        load_class_folders(tmp_path / "fifo", image_size=8)
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    with pytest.raises(DatasetError, match="cannot open dataset '.*loop': it is a link that goes round in a loop"):
        load_class_folders(tmp_path / "loop", image_size=8)


def test_a_file_that_cannot_be_opened_is_named_and_the_rest_is_used(tmp_path, monkeypatch):
    """Tests run as root, where file permissions do not bite: opening is refused here instead."""
    from metastudio.data import images

    root = make_class_tree(tmp_path / "t", classes=2, per_class=3)
    secret = root / "class01" / "img001.png"

    def refuse(path, *args, **kwargs):
        if Path(path) == secret:
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return open(path, *args, **kwargs)

    monkeypatch.setattr(images, "open", refuse, raising=False)
    ds = load_class_folders(root, image_size=8, use_cache=False)
    assert ds.class_sizes == [3, 2]
    assert ds.problems == [f"cannot use image '{secret}': you don't have permission to open this file"]


def test_a_fixed_bad_entry_is_not_reported_from_the_cache(tmp_path):
    root = make_class_tree(tmp_path / "t", classes=2, per_class=2)
    (root / "class00" / "gone.png").symlink_to(root / "nothing.png")
    assert len(load_class_folders(root, image_size=8).problems) == 1
    (root / "class00" / "gone.png").unlink()
    assert load_class_folders(root, image_size=8).problems == []


def test_eval_on_a_hostile_folder_runs_and_names_the_bad_entries(tmp_path):
    root, expected = hostile_tree(tmp_path / "hostile")
    run = subprocess.run([sys.executable, "-m", "metastudio", "eval", "--model", "protonet-omniglot", "--dataset", "folder",
                          "--root", str(root), "--ways", "3", "--shots", "1", "--queries", "2", "--episodes", "3",
                          "--device", "cpu"], capture_output=True, text=True, errors="backslashreplace", timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("accuracy ") and "Traceback" not in run.stderr
    assert "Warning:" not in run.stderr and "site-packages" not in run.stderr  # no raw warnings line
    count = len(expected) + 1  # and class04 dropped
    assert f"warning: {count} file(s) or folder(s) of hostile could not be used; the rest is used" in run.stderr
    named = [line[len("warning: "):] for line in run.stderr.splitlines() if line.startswith("warning: cannot use")]
    _assert_each_named(named, root, expected)  # each on its own line, with its reason


@pytest.mark.parametrize("index", [
    b'{"class_names": ["a"], "class_sizes": [-1], "name": "x", "problems": []}',  # against the schema
    b'[' * 100_000 + b']' * 100_000,  # nested past the reader's depth
    b'{"class_names": ["a", "b"], "class_sizes": [1, 1], "name": "x", "problems": []}',  # not its images
    b"\xff\xfe not text",
])
def test_a_damaged_cache_index_is_decoded_again(tmp_path, index):
    root = make_class_tree(tmp_path / "t", classes=2, per_class=3)
    first = load_class_folders(root, image_size=8)
    (cached,) = (Path(datasets_module.cache_dir()) / "datasets").glob("*.json")
    cached.write_bytes(index)
    again = load_class_folders(root, image_size=8)
    assert again.class_sizes == first.class_sizes == [3, 3]
    assert torch.equal(again.images, first.images)
