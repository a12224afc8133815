"""Tests of metastudio.app.project: projects, the .metastudio file and crash recovery.

Every image and model file is made here, in tmp_path; nothing is stubbed.
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import dead_pid
from PIL import Image
from safetensors.numpy import save as safetensors_bytes

from metastudio import __version__
from metastudio.errors import CheckpointError, ImageLoadError, MetaStudioError, ProjectError
from metastudio.app.project import (
    DEFAULT_COLOURS,
    FORMAT,
    FORMAT_VERSION,
    PROJECT_SUFFIX,
    ClassEntry,
    ImageItem,
    Project,
    Recovery,
    RecoveryInfo,
    recovery_dir,
)

# ----------------------------------------------------------------------------------------------
# helpers


@pytest.fixture(autouse=True)
def _isolated_recovery(tmp_path_factory, monkeypatch):
    """Never write the user's real recovery folder."""
    monkeypatch.setenv("METASTUDIO_RECOVERY_DIR", str(tmp_path_factory.mktemp("recovery")))


def make_image(path: Path, seed: int = 0, size: int = 12, fmt: str | None = None) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, "RGB").save(path, format=fmt)
    return path


def image_bytes(seed: int = 0, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(0, 256, (10, 10, 3), dtype=np.uint8)
    Image.fromarray(pixels, "RGB").save(buffer, format=fmt)
    return buffer.getvalue()


def make_model(path: Path, value: float = 1.0) -> Path:
    path.write_bytes(safetensors_bytes({"weight": np.full((4, 3), value, np.float32)}))
    return path


@pytest.fixture
def project():
    p = Project()
    yield p
    p.close()


def sample_project(tmp_path: Path) -> Project:
    """Two classes, a query sharing a file with a support image, a model, settings."""
    p = Project()
    cats = p.add_class("Cats")
    dogs = p.add_class("Dogs", "#123ABC")
    cats.images.append(p.import_file(make_image(tmp_path / "src" / "cat1.png", 1)))
    cats.images.append(p.import_file(make_image(tmp_path / "src" / "cat2.JPG", 2, fmt="JPEG")))
    dogs.images.append(p.import_bytes(image_bytes(3)))
    p.queries.append(p.import_file(tmp_path / "src" / "cat1.png"))  # same bytes as cats[0]
    p.queries.append(p.import_file(make_image(tmp_path / "src" / "query.png", 4), source="camera"))
    name = p.add_model_file(make_model(tmp_path / "src" / "trained.safetensors"), "My model")
    p.model = {"kind": "project", "name": name}
    p.hyperparameters = {"ways": 5, "lr": 0.001, "nested": {"on": True, "list": [1, 2.5, None]}}
    p.settings = {"training": {"episodes": 200, "backbone": "conv4"}, "unicode": "Gänse 🦢"}
    return p


def without_time(manifest: dict) -> dict:
    return {k: v for k, v in manifest.items() if k != "saved_at"}


def write_zip(path: Path, members: dict[str, bytes | str]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def minimal_manifest(**changes) -> dict:
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "classes": [],
        "queries": [],
        "model": {"kind": "shipped", "name": "photos"},
        "hyperparameters": {},
        "settings": {},
        "models": [],
    }
    manifest.update(changes)
    return manifest


# ----------------------------------------------------------------------------------------------
# importing images


def test_import_file_copies_once_per_content(project, tmp_path):
    original = make_image(tmp_path / "a" / "Photo.PNG", seed=1)
    copy = tmp_path / "b" / "same.png"
    copy.parent.mkdir()
    copy.write_bytes(original.read_bytes())

    first = project.import_file(original)
    second = project.import_file(original)
    third = project.import_file(copy)

    assert re.fullmatch(r"[0-9a-f]{16}\.png", first.file)
    assert first.file == second.file == third.file
    assert len({first.id, second.id, third.id}) == 3
    assert re.fullmatch(r"[0-9a-f]{32}", first.id)
    assert first.source == str(original.resolve())
    assert first.name == "Photo.PNG" and third.name == "same.png"
    assert project.image_path(first).read_bytes() == original.read_bytes()
    assert os.listdir(project.workdir / "images") == [first.file]


def test_import_bytes_and_clipboard_names(project, tmp_path):
    data = image_bytes(5)
    pasted = project.import_bytes(data)
    assert pasted.source == "clipboard" and pasted.name == "clipboard"
    assert pasted.file.endswith(".png")
    assert project.image_path(pasted).read_bytes() == data

    jpeg = project.import_bytes(image_bytes(6, "JPEG"), suffix="JPG", source="")
    assert jpeg.file.endswith(".jpg") and jpeg.name == jpeg.file

    on_disk = tmp_path / "x.png"
    on_disk.write_bytes(data)
    assert project.import_file(on_disk).file == pasted.file  # same bytes, same copy


def test_image_item_name_handles_both_separators():
    assert ImageItem("1", "0123456789abcdef.png", r"C:\Users\me\cat.png").name == "cat.png"
    assert ImageItem("1", "0123456789abcdef.png", "/home/me/dog.jpg").name == "dog.jpg"
    assert ImageItem("1", "0123456789abcdef.png").name == "0123456789abcdef.png"


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda d: d / "missing.png", "file not found"),
        (lambda d: (d / "folder.png").mkdir() or d / "folder.png", "it is a folder"),
        (lambda d: (d / "empty.png").write_bytes(b"") and None or d / "empty.png", "empty"),
        (lambda d: (d / "notes.txt").write_text("hello") and None or d / "notes.txt", "'.txt' files are not"),
        (lambda d: (d / "noext").write_bytes(image_bytes()) and None or d / "noext", "no ending such as .jpg"),
        (lambda d: (d / ".hidden.png").write_bytes(image_bytes()) and None or d / ".hidden.png", "hidden"),
        (lambda d: (d / "fake.png").write_bytes(b"this is not a png" * 10) and None or d / "fake.png",
         "this file is not a picture"),
    ],
    ids=["missing", "directory", "empty", "text", "no-extension", "hidden", "not-an-image"],
)
def test_import_file_refuses_bad_input_with_a_reason(project, tmp_path, make, reason):
    path = make(tmp_path)
    with pytest.raises(ImageLoadError) as caught:
        project.import_file(path)
    assert reason in caught.value.reason
    assert "Pillow" not in caught.value.reason and "directory" not in caught.value.reason  # everyday words
    assert caught.value.path == str(path)
    assert isinstance(caught.value, MetaStudioError)
    assert os.listdir(project.workdir / "images") == []  # no partial copy


def test_import_file_refuses_a_decompression_bomb_from_its_header(project, tmp_path):
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    huge = tmp_path / "huge.png"  # only a header announcing 20000 x 20000 pixels
    header = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)
    huge.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    with pytest.raises(ImageLoadError, match="too big: 20000×20000 pixels") as caught:
        project.import_file(huge)
    assert "decompression bomb" in caught.value.detail
    assert os.listdir(project.workdir / "images") == []


@pytest.mark.parametrize(
    ("data", "suffix", "reason"),
    [
        (b"", ".png", "empty"),
        (image_bytes(), ".exe", "format isn't supported"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 20, ".png", "this file is not a picture"),
    ],
    ids=["empty", "bad-suffix", "corrupt"],
)
def test_import_bytes_refuses_bad_data(project, data, suffix, reason):
    with pytest.raises(ImageLoadError) as caught:
        project.import_bytes(data, suffix=suffix)
    assert reason in caught.value.reason
    assert caught.value.path == "clipboard"
    assert os.listdir(project.workdir / "images") == []


# ----------------------------------------------------------------------------------------------
# classes


def test_default_colours_are_distinct_hex_colours():
    assert len(DEFAULT_COLOURS) >= 8
    assert len(set(DEFAULT_COLOURS)) == len(DEFAULT_COLOURS)
    assert all(re.fullmatch(r"#[0-9a-f]{6}", c) for c in DEFAULT_COLOURS)


def test_add_class_names_and_colours(project):
    a = project.add_class()
    b = project.add_class()
    assert (a.name, b.name) == ("Class 1", "Class 2")
    assert (a.colour, b.colour) == DEFAULT_COLOURS[:2]
    a.name = "class 3"  # taken, ignoring case
    assert project.unique_class_name() == "Class 1"
    project.add_class("Class 1")
    assert project.unique_class_name() == "Class 4"
    assert project.unique_class_name("Bird") == "Bird 1"

    a.colour = DEFAULT_COLOURS[3]
    assert project.add_class().colour == DEFAULT_COLOURS[0]  # the first unused one, freed above
    assert project.add_class(colour="#ABCDEF").colour == "#abcdef"
    with pytest.raises(ValueError, match="rrggbb"):
        project.add_class(colour="red")
    for _ in range(len(DEFAULT_COLOURS)):  # more classes than colours: colours repeat
        assert project.add_class().colour in DEFAULT_COLOURS
    assert len({c.id for c in project.classes}) == len(project.classes)


def test_finding_classes_and_images(project, tmp_path):
    cats = project.add_class("Cats")
    dogs = project.add_class("Dogs")
    cat = project.import_bytes(image_bytes(1))
    dog1, dog2 = project.import_bytes(image_bytes(2)), project.import_bytes(image_bytes(3))
    query = project.import_bytes(image_bytes(4))
    cats.images.append(cat)
    dogs.images += [dog1, dog2]
    project.queries.append(query)

    assert project.class_by_id(dogs.id) is dogs
    with pytest.raises(KeyError):
        project.class_by_id("nope")
    assert project.class_by_name("cATS") is cats
    assert project.class_by_name("Birds") is None
    assert project.locate(dog2.id) == (dogs, 1)
    assert project.locate(cat.id) == (cats, 0)
    assert project.locate(query.id) == (None, 0)
    with pytest.raises(KeyError):
        project.locate("nope")
    assert project.all_images() == [cat, dog1, dog2, query]


# ----------------------------------------------------------------------------------------------
# models


def test_add_model_file_names_are_safe_and_unique(project, tmp_path):
    source = make_model(tmp_path / "Trained.safetensors")
    assert project.add_model_file(source) == "Trained.safetensors"
    assert project.add_model_file(source) == "Trained-2.safetensors"
    assert project.add_model_file(source, "trained") == "trained-3.safetensors"  # unique ignoring case
    assert project.add_model_file(source, "../../Modèle: été/x?") == "x.safetensors"
    assert project.add_model_file(source, "Modèle: été") == "Modele- ete.safetensors"
    assert project.add_model_file(source, "con") == "model-con.safetensors"
    assert project.add_model_file(source, "...") == "model.safetensors"
    for name in project.model_files():
        assert project.model_path(name).read_bytes() == source.read_bytes()
    assert len(project.model_files()) == 7
    with pytest.raises(ValueError):
        project.model_path("../escape.safetensors")


def test_add_model_file_refuses_files_that_are_not_models(project, tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        project.add_model_file(tmp_path / "missing.safetensors")
    not_model = tmp_path / "notes.safetensors"
    not_model.write_text("hello, this is text")
    with pytest.raises(CheckpointError, match="not a safetensors"):
        project.add_model_file(not_model)
    assert project.model_files() == []


# ----------------------------------------------------------------------------------------------
# saving and opening


def test_save_then_open_round_trips_everything(tmp_path):
    p = sample_project(tmp_path)
    unused = p.import_bytes(image_bytes(99))  # imported but never placed: not saved
    target = tmp_path / f"mine{PROJECT_SUFFIX}"
    before = p.to_manifest()
    p.save(target)
    assert p.path == target

    q = Project.open(target)
    try:
        assert q.path == target
        assert q.problems == []
        after = q.to_manifest()
        assert without_time(after) == without_time(before)
        assert after["app_version"] == __version__ and after["format_version"] == FORMAT_VERSION
        assert [(c.id, c.name, c.colour) for c in q.classes] == [(c.id, c.name, c.colour) for c in p.classes]
        assert [c.images for c in q.classes] == [c.images for c in p.classes]
        assert q.queries == p.queries
        assert q.classes[1].colour == "#123abc"
        assert q.model == p.model and q.hyperparameters == p.hyperparameters and q.settings == p.settings
        for item in q.all_images():
            assert q.image_path(item).read_bytes() == p.image_path(item).read_bytes()
        assert q.model_files() == p.model_files() == ["My model.safetensors"]
        assert q.model_path("My model.safetensors").read_bytes() == p.model_path("My model.safetensors").read_bytes()

        with zipfile.ZipFile(target) as archive:
            infos = {i.filename: i for i in archive.infolist()}
            stored = json.loads(archive.read("manifest.json").decode("utf-8"))
        sizes = stored.pop("sizes")
        assert without_time(stored) == without_time(before)
        assert sizes == {n: i.file_size for n, i in infos.items() if n != "manifest.json"}  # what a later open checks
        assert infos["manifest.json"].compress_type == zipfile.ZIP_DEFLATED
        files = {i.file for i in p.all_images()}
        assert len(files) == 4 and unused.file not in files
        assert set(infos) == {"manifest.json", *(f"images/{f}" for f in files), "models/My model.safetensors"}
        assert all(i.compress_type == zipfile.ZIP_STORED for n, i in infos.items() if n != "manifest.json")

        # Saving the opened project again gives the same manifest (and it opens again).
        again = tmp_path / "again.metastudio"
        q.save(again)
        with Project.open(again) as r:
            assert without_time(r.to_manifest()) == without_time(before)
    finally:
        p.close()
        q.close()


PREVIOUS_VERSION_FILE = Path(__file__).parents[1] / "fixtures" / "project-format-1.metastudio"


def test_a_project_saved_by_the_previous_version_opens_and_saves_the_same(tmp_path):
    """tests/fixtures/project-format-1.metastudio was written by MetaStudio 0.1.0 (format version 1):
    three classes (one empty), a query sharing its file with a support image, a project model
    chosen as the model, nested hyperparameters and settings with non-ASCII text."""
    with zipfile.ZipFile(PREVIOUS_VERSION_FILE) as archive:
        stored = json.loads(archive.read("manifest.json").decode("utf-8"))
        members = {i.filename: (i.compress_type, archive.read(i)) for i in archive.infolist()}
    with Project.open(PREVIOUS_VERSION_FILE) as opened:
        assert opened.problems == [] and opened.path == PREVIOUS_VERSION_FILE
        assert [(c.name, c.colour, [i.name for i in c.images]) for c in opened.classes] == [
            ("Cats", "#0072b2", ["cat1.png", "cat2.JPG"]), ("Dogs", "#123abc", ["clipboard"]), ("Empty", "#e69f00", [])]
        assert [i.name for i in opened.queries] == ["cat1.png", "camera"]
        assert opened.queries[0].file == opened.classes[0].images[0].file
        assert opened.model == {"kind": "project", "name": "My model.safetensors"}
        assert opened.hyperparameters == {"ways": 5, "lr": 0.001, "nested": {"on": True, "list": [1, 2.5, None]}}
        assert opened.settings["unicode"] == "Gänse 🦢"
        for item in opened.all_images():
            assert opened.image_path(item).read_bytes() == members[f"images/{item.file}"][1]
            with Image.open(opened.image_path(item)) as image:
                assert image.size == (8, 8)
        assert opened.model_path("My model.safetensors").read_bytes() == members["models/My model.safetensors"][1]

        again = tmp_path / f"again{PROJECT_SUFFIX}"
        opened.save(again)
    with zipfile.ZipFile(again) as archive:
        resaved = json.loads(archive.read("manifest.json").decode("utf-8"))
        assert {i.filename: (i.compress_type, archive.read(i)) for i in archive.infolist() if i.filename != "manifest.json"} \
            == {n: m for n, m in members.items() if n != "manifest.json"}
        assert archive.getinfo("manifest.json").compress_type == members["manifest.json"][0]
    # The same keys, in the same order, and the sizes of the members, which version 0.1.0 did not record.
    assert resaved.pop("sizes") == {n: len(m[1]) for n, m in members.items() if n != "manifest.json"}
    assert list(resaved) == list(stored)
    assert stored["app_version"] == "0.1.0" and resaved["app_version"] == __version__
    assert without_time(resaved) | {"app_version": "0.1.0"} == without_time(stored)


def test_write_does_not_change_path_but_save_does(project, tmp_path):
    project.write(tmp_path / "copy.metastudio")
    assert project.path is None
    project.save(tmp_path / "real.metastudio")
    project.write(tmp_path / "copy.metastudio")
    assert project.path == tmp_path / "real.metastudio"


def test_an_empty_project_round_trips(project, tmp_path):
    project.save(tmp_path / "empty.metastudio")
    with Project.open(tmp_path / "empty.metastudio") as opened:
        assert opened.classes == [] and opened.queries == []
        assert opened.model == {"kind": "shipped", "name": "photos"}
        assert opened.hyperparameters == {} and opened.settings == {}


def _folder_listing(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


def test_a_failed_save_leaves_the_previous_file_intact(tmp_path, monkeypatch):
    p = sample_project(tmp_path)
    target = tmp_path / "out" / "p.metastudio"
    p.save(target)
    previous = target.read_bytes()
    listing = _folder_listing(target.parent)
    p.add_class("Birds")

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", no_space)
        with pytest.raises(ProjectError) as caught:
            p.save(target)
    assert "no space left on device" in str(caught.value)
    assert str(target) in str(caught.value) and "unchanged" in str(caught.value)
    assert target.read_bytes() == previous
    assert _folder_listing(target.parent) == listing  # no temporary file left behind

    with monkeypatch.context() as patch:  # the zip writer fails half way through
        patch.setattr(zipfile.ZipFile, "open", lambda *a, **k: no_space())
        with pytest.raises(ProjectError, match="no space left on device"):
            p.save(target)
    assert target.read_bytes() == previous
    assert _folder_listing(target.parent) == listing
    assert p.path == target

    p.save(target)  # and once the disk has room again, it works
    with Project.open(target) as opened:
        assert [c.name for c in opened.classes] == ["Cats", "Dogs", "Birds"]
    p.close()


def test_settings_that_are_not_json_are_refused_before_writing(project, tmp_path):
    project.settings = {"when": object()}
    with pytest.raises(ProjectError, match="not plain JSON"):
        project.save(tmp_path / "p.metastudio")
    project.settings = {"loss": float("nan")}
    with pytest.raises(ProjectError, match="not plain JSON"):
        project.save(tmp_path / "p.metastudio")
    assert not (tmp_path / "p.metastudio").exists() and project.path is None


def test_a_project_that_could_not_be_reopened_is_not_written(project, tmp_path):
    project.add_class(name=42)  # type: ignore[arg-type]  # a GUI bug
    with pytest.raises(ProjectError, match="classes\\[0\\].name"):
        project.write(tmp_path / "p.metastudio")
    assert not (tmp_path / "p.metastudio").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        (b"just some text, not a zip", "not a zip archive"),
        ({"readme.txt": "hi"}, "no manifest.json"),
        ({"manifest.json": "{not json"}, "not valid JSON"),
        ({"manifest.json": b"\xff\xfe\x00garbage"}, "not UTF-8"),
        ({"manifest.json": "[1, 2]"}, "the manifest must be an object, not a list"),
        ({"manifest.json": json.dumps({"format": "something-else", "format_version": 1})}, "not a MetaStudio project"),
        ({"manifest.json": json.dumps(minimal_manifest(format_version=FORMAT_VERSION + 1))}, "newer MetaStudio"),
        ({"manifest.json": json.dumps(minimal_manifest(format_version="1"))}, "field 'format_version' must be a whole number"),
        ({"manifest.json": json.dumps(minimal_manifest(classes={}))}, "field 'classes' must be a list"),
        (
            {"manifest.json": json.dumps(minimal_manifest(queries=[{"id": "q", "file": "../x"}])), "../x": b"boo"},
            "field 'queries[0].file' must be an image file name like '0123456789abcdef.png', not '../x'",
        ),
        (
            {"manifest.json": json.dumps(minimal_manifest(queries=[{"id": "q", "file": "/etc/passwd"}]))},
            "must be an image file name like '0123456789abcdef.png', not '/etc/passwd'",
        ),
        (
            {"manifest.json": json.dumps(minimal_manifest(models=["../evil.safetensors"]))},
            "must be a model file name like 'my model.safetensors'",
        ),
        (
            {"manifest.json": json.dumps(minimal_manifest(classes=[{"id": "c", "name": "A", "colour": "red"}]))},
            "field 'classes[0].colour' must be a '#rrggbb' colour, not 'red'",
        ),
        (
            {
                "manifest.json": json.dumps(
                    minimal_manifest(
                        queries=[{"id": "q", "file": "0123456789abcdef.png"}, {"id": "q", "file": "0123456789abcdef.png"}]
                    )
                )
            },
            "used twice",
        ),
    ],
    ids=[
        "missing", "not-zip", "no-manifest", "bad-json", "not-utf8", "not-object", "other-format", "future-version",
        "bad-version", "bad-shape", "traversal", "absolute", "model-traversal", "bad-colour", "duplicate-id",
    ],
)
def test_open_refuses_bad_files_naming_them(tmp_path, content, message):
    path = tmp_path / "bad.metastudio"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, dict):
        write_zip(path, content)
    workdir = tmp_path / "work"
    with pytest.raises(ProjectError) as caught:
        Project.open(path, workdir=workdir)
    assert message in str(caught.value)
    assert str(path) in str(caught.value)
    assert not (tmp_path / "x").exists()
    assert not workdir.exists()  # refused before anything was unpacked


def test_open_refuses_a_folder(tmp_path):
    with pytest.raises(ProjectError, match="folder"):
        Project.open(tmp_path)


def test_a_missing_or_damaged_image_is_left_out_and_reported(tmp_path):
    p = sample_project(tmp_path)
    target = tmp_path / "p.metastudio"
    p.save(target)
    lost = p.classes[0].images[1]  # cat2.JPG: not shared with another item
    damaged = p.queries[1]
    with zipfile.ZipFile(target) as archive:
        members = {i.filename: archive.read(i) for i in archive.infolist()}
    del members[f"images/{lost.file}"]
    members[f"images/{damaged.file}"] = image_bytes(123)  # content does not match its name
    broken = write_zip(tmp_path / "broken.metastudio", members)

    with Project.open(broken) as opened:
        assert len(opened.problems) == 2
        assert "cat2.JPG" in opened.problems[0] and "in class 'Cats'" in opened.problems[0]
        assert "missing" in opened.problems[0]
        assert "'camera'" in opened.problems[1] and "damaged" in opened.problems[1]
        assert [i.id for i in opened.classes[0].images] == [p.classes[0].images[0].id]
        assert [i.id for i in opened.queries] == [p.queries[0].id]
        assert len(opened.classes[1].images) == 1
        assert opened.model == p.model and opened.settings == p.settings
        assert not (opened.workdir / "images" / damaged.file).exists()
    p.close()


def test_a_missing_model_is_reported(tmp_path):
    p = sample_project(tmp_path)
    p.save(tmp_path / "p.metastudio")
    with zipfile.ZipFile(tmp_path / "p.metastudio") as archive:
        members = {i.filename: archive.read(i) for i in archive.infolist() if not i.filename.startswith("models/")}
    write_zip(tmp_path / "broken.metastudio", members)
    with Project.open(tmp_path / "broken.metastudio") as opened:
        assert any("My model.safetensors" in line and "missing" in line for line in opened.problems)
        assert opened.model_files() == []
    p.close()


def test_from_manifest_uses_files_already_in_the_workdir(tmp_path):
    p = sample_project(tmp_path)
    manifest = p.to_manifest()
    same = Project.from_manifest(manifest, p.workdir)
    assert same.problems == [] and without_time(same.to_manifest()) == without_time(manifest)
    assert same.path is None
    same.close()
    assert p.workdir.exists()  # a given workdir is never deleted

    elsewhere = Project.from_manifest(manifest, tmp_path / "empty-work")
    assert elsewhere.all_images() == []
    assert len([line for line in elsewhere.problems if line.startswith("image ")]) == 5
    assert any("My model.safetensors" in line for line in elsewhere.problems)
    with pytest.raises(ProjectError, match="newer MetaStudio"):
        Project.from_manifest({**manifest, "format_version": 99}, tmp_path / "w")
    p.close()


def test_close_removes_only_a_temporary_workdir(tmp_path):
    p = Project()
    p.queries.append(p.import_bytes(image_bytes()))
    assert p.workdir.is_dir() and p.workdir.name.startswith("metastudio-project-")
    p.close()
    assert not p.workdir.exists()
    p.close()  # idempotent

    mine = Project(tmp_path / "mine")
    mine.queries.append(mine.import_bytes(image_bytes()))
    mine.save(tmp_path / "p.metastudio")
    mine.close()
    assert (tmp_path / "mine" / "images").is_dir()

    opened = Project.open(tmp_path / "p.metastudio")
    assert opened.workdir.is_dir()
    opened.close()
    assert not opened.workdir.exists()

    given = Project.open(tmp_path / "p.metastudio", workdir=tmp_path / "given")
    given.close()
    assert len(os.listdir(tmp_path / "given" / "images")) == 1


# ----------------------------------------------------------------------------------------------
# recovery


def test_recovery_dir_honours_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("METASTUDIO_RECOVERY_DIR", str(tmp_path / "rec"))
    assert recovery_dir() == tmp_path / "rec"
    monkeypatch.delenv("METASTUDIO_RECOVERY_DIR")
    assert recovery_dir().name == "recovery"


def test_recovery_write_find_discard(tmp_path):
    p = sample_project(tmp_path)
    p.save(tmp_path / "mine.metastudio")
    recovery = Recovery()
    assert recovery.path.parent == recovery_dir()
    assert re.fullmatch(rf"autosave-{os.getpid()}-[0-9a-f]{{8}}\.metastudio", recovery.path.name)

    recovery.write(p)
    assert p.path == tmp_path / "mine.metastudio"
    sidecar = json.loads(recovery.path.with_suffix(".json").read_text())
    assert sidecar["pid"] == os.getpid() and sidecar["project_path"] == str(tmp_path / "mine.metastudio")
    assert Recovery.find() == []  # our own session is running

    recovery.discard()
    assert not recovery.path.exists() and not recovery.path.with_suffix(".json").exists()
    recovery.discard()  # idempotent
    p.close()


def test_recovery_finds_autosaves_of_dead_sessions_newest_first(tmp_path):
    pid = dead_pid()
    unsaved = Project()
    unsaved.add_class("Only class")
    older, newer = Recovery(), Recovery()
    older.write(unsaved)
    p = sample_project(tmp_path)
    p.save(tmp_path / "mine.metastudio")
    newer.write(p)
    for recovery, saved_at in ((older, "2024-01-01T10:00:00+00:00"), (newer, "2024-01-02T10:00:00+00:00")):
        side = recovery.path.with_suffix(".json")
        side.write_text(json.dumps({**json.loads(side.read_text()), "pid": pid, "saved_at": saved_at}))
    (recovery_dir() / "unrelated.metastudio").write_bytes(b"not ours")

    found = Recovery.find()
    assert [f.path for f in found] == [newer.path, older.path]
    assert found[0] == RecoveryInfo(newer.path, str(tmp_path / "mine.metastudio"), "2024-01-02T10:00:00+00:00", pid)
    assert found[1].project_path is None

    with Project.open(found[0].path) as restored:
        assert without_time(restored.to_manifest()) == without_time(p.to_manifest())

    Recovery.remove(found[1])
    assert not older.path.exists() and not older.path.with_suffix(".json").exists()
    assert Recovery.find() == found[:1]
    assert Recovery.find(tmp_path / "nowhere") == []
    unsaved.close()
    p.close()


def test_recovery_without_a_sidecar_uses_the_pid_in_its_name(tmp_path):
    pid = dead_pid()
    folder = tmp_path / "rec"
    p = Project()
    p.write(folder / f"autosave-{pid}-0123abcd.metastudio")
    found = Recovery.find(folder)
    assert len(found) == 1 and found[0].pid == pid and found[0].project_path is None and found[0].saved_at
    p.close()


def test_public_types():
    entry = ClassEntry("id", "Name", "#000000")
    assert entry.images == [] and ClassEntry("id", "Name", "#000000") == entry
    assert issubclass(ProjectError, MetaStudioError)
