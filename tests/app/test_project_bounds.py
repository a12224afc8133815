"""A crafted project file cannot fill the disk or the memory, nor write outside its working folder.

The zip archives here are written byte by byte (:func:`craft`), so that an entry can be a real
deflated gigabyte of zeros (about 1 MB packed, made in a fraction of a second) or carry a header
that lies about its size. Each one is refused with a clear problem before anything large is
written, and the rest of the project opens.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.numpy import save as safetensors_bytes

from metastudio.app.project import Project
from metastudio.app.project import archive as archive_module
from metastudio.errors import ProjectError

GIB = 1 << 30
MIB = 1 << 20
STORED, DEFLATED = 0, 8


@dataclass
class Member:
    """One zip entry as written: ``payload`` (already compressed when ``method`` is DEFLATED) and
    what its headers say (``size``: unpacked bytes, ``packed``: defaults to ``len(payload)``)."""

    name: str
    payload: bytes
    method: int
    crc: int
    size: int
    packed: int | None = None


def stored(name: str, data: bytes) -> Member:
    return Member(name, data, STORED, zlib.crc32(data), len(data))


def deflated(name: str, data: bytes) -> Member:
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    return Member(name, packer.compress(data) + packer.flush(), DEFLATED, zlib.crc32(data), len(data))


@pytest.fixture(scope="module")
def zeros():
    """``make(name, mib)``: a deflated entry of ``mib`` MiB of zeros, built from one compressed MiB
    repeated (a full flush makes every MiB compress alike), so a gigabyte takes a moment."""
    chunk = bytes(MIB)
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    one = packer.compress(chunk) + packer.flush(zlib.Z_FULL_FLUSH)
    end = zlib.compressobj(9, zlib.DEFLATED, -15).flush()  # an empty final block
    crcs = [0]
    for _ in range(1024):
        crcs.append(zlib.crc32(chunk, crcs[-1]))

    def make(name: str, mib: int) -> Member:
        return Member(name, one * mib + end, DEFLATED, crcs[mib], mib * MIB)

    return make


def craft(path: Path, members: list[Member]) -> Path:
    """Write a zip archive of ``members`` exactly as their fields say."""
    local, central = bytearray(), bytearray()
    for m in members:
        name = m.name.encode("utf-8")
        packed = len(m.payload) if m.packed is None else m.packed
        offset = len(local)
        local += struct.pack("<4s2B4HL2L2H", b"PK\x03\x04", 20, 0, 0, m.method, 0, 33, m.crc, packed, m.size,
                             len(name), 0) + name + m.payload
        central += struct.pack("<4s4B4HL2L5H2L", b"PK\x01\x02", 20, 3, 20, 0, 0, m.method, 0, 33, m.crc, packed,
                               m.size, len(name), 0, 0, 0, 0, 0o644 << 16, offset) + name
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(members), len(members), len(central), len(local), 0)
    path.write_bytes(bytes(local + central + end))
    return path


def png(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (10, 10, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def image_name(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16] + ".png"


MODEL = safetensors_bytes({"weight": np.ones((4, 3), np.float32)})
GOOD = [png(1), png(2)]


def manifest(extra_images: list[str] = (), extra_models: list[str] = (), sizes: dict | None = None) -> dict:
    """Two good query images and a good model, plus the images and models named."""
    files = [image_name(d) for d in GOOD] + list(extra_images)
    document = {
        "format": "metastudio-project", "format_version": 1,
        "classes": [], "queries": [{"id": f"q{i}", "file": f, "source": f"{i}.png"} for i, f in enumerate(files)],
        "model": {"kind": "shipped", "name": "photos"}, "hyperparameters": {}, "settings": {},
        "models": ["good.safetensors", *extra_models],
    }
    if sizes is not None:
        document["sizes"] = sizes
    return document


def project_file(path: Path, extra: list[Member], document: dict) -> Path:
    members = [deflated("manifest.json", json.dumps(document).encode())]
    members += [stored(f"images/{image_name(d)}", d) for d in GOOD] + [stored("models/good.safetensors", MODEL)]
    return craft(path, members + extra)


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def assert_the_rest_opened(opened: Project) -> None:
    assert [i.file for i in opened.queries][:2] == [image_name(d) for d in GOOD]
    for item in opened.queries:
        assert opened.image_path(item).read_bytes() in GOOD
    assert opened.model_path("good.safetensors").read_bytes() == MODEL
    assert folder_bytes(opened.workdir) < MIB  # nothing large was written (and none is left)


def our_workdirs() -> set[str]:
    return {n for n in os.listdir(tempfile.gettempdir()) if n.startswith(f"metastudio-project-{os.getpid()}-")}


# ----------------------------------------------------------------------------------------------
# zip bombs


def test_a_model_that_inflates_a_thousand_fold_is_left_out(tmp_path, zeros):
    bomb = zeros("models/bomb.safetensors", 1024)  # 1 GiB of zeros, about 1 MB packed
    path = project_file(tmp_path / "p.metastudio", [bomb], manifest(extra_models=["bomb.safetensors"]))
    assert path.stat().st_size < 2 * MIB
    with Project.open(path) as opened:
        assert opened.problems == [
            "model 'bomb.safetensors' would unpack from 1.0 MB to 1.0 GB, far more than a real model grows; "
            "the file may be made to fill the disk; it was left out"
        ]
        assert opened.model_files() == ["good.safetensors"]
        assert_the_rest_opened(opened)


def test_an_image_that_inflates_a_thousand_fold_is_left_out(tmp_path, zeros):
    name = "0123456789abcdef.png"
    path = project_file(tmp_path / "p.metastudio", [zeros(f"images/{name}", 1024)], manifest([name]))
    with Project.open(path) as opened:
        assert len(opened.problems) == 1
        assert opened.problems[0].startswith("image '2.png' (a query image) is larger than a project image may be "
                                             "(1.0 GB; at most 256.0 MB)")
        assert opened.problems[0].endswith("; it was left out")
        assert len(opened.queries) == 2 and not (opened.workdir / "images" / name).exists()
        assert_the_rest_opened(opened)


def test_an_image_just_under_the_cap_is_still_refused_for_its_ratio(tmp_path, zeros):
    name = "0123456789abcdef.png"
    path = project_file(tmp_path / "p.metastudio", [zeros(f"images/{name}", 200)], manifest([name]))
    with Project.open(path) as opened:
        assert opened.problems == [
            "image '2.png' (a query image) would unpack from 202.5 KB to 200.0 MB, far more than a real image "
            "grows; the file may be made to fill the disk; it was left out"
        ]
        assert_the_rest_opened(opened)


def test_a_header_that_claims_a_small_size_is_not_trusted(tmp_path, zeros):
    bomb = zeros("models/bomb.safetensors", 1024)
    bomb.size = 4096  # the headers say 4 KB; the data inflates to 1 GiB
    path = project_file(tmp_path / "p.metastudio", [bomb], manifest(extra_models=["bomb.safetensors"]))
    with Project.open(path) as opened:
        assert opened.problems == ["model 'bomb.safetensors' is damaged in the project file (its content does not "
                                   "match the checksum stored with it); it was left out"]
        assert opened.model_files() == ["good.safetensors"]
        assert_the_rest_opened(opened)


def test_a_header_that_claims_a_huge_size_is_refused_before_reading(tmp_path):
    name = "0123456789abcdef.png"
    liar = stored(f"images/{name}", png(3))
    liar.size = liar.packed = 300 * MIB  # the ratio looks honest; the archive has no such data
    path = project_file(tmp_path / "p.metastudio", [liar], manifest([name]))
    with Project.open(path) as opened:
        assert opened.problems == [
            "image '2.png' (a query image) is larger than a project image may be (300.0 MB; at most 256.0 MB); "
            "it was left out"
        ]
        assert_the_rest_opened(opened)


def test_a_size_the_manifest_does_not_declare_is_refused(tmp_path):
    good_model = "models/good.safetensors"
    sizes = {good_model: len(MODEL) - 1, **{f"images/{image_name(d)}": len(d) for d in GOOD}}
    path = project_file(tmp_path / "p.metastudio", [], manifest(sizes=sizes))
    with Project.open(path) as opened:
        assert opened.problems == [
            f"model 'good.safetensors' does not have the size the project's manifest gives it ({len(MODEL):,} "
            f"bytes, not {len(MODEL) - 1:,}); the project file is damaged or was altered; it was left out"
        ]
        assert opened.model_files() == [] and len(opened.queries) == 2


def test_members_sharing_their_data_cannot_add_up_to_a_bomb(tmp_path, zeros):
    """Each member stays under the ratio floor (1 MiB), but 150 of them would unpack to 150 MB."""
    bombs = [zeros(f"images/{i:016x}.png", 1) for i in range(150)]
    for bomb in bombs:
        bomb.size -= 1  # just under the floor, so that only the total can catch them
        bomb.crc = zlib.crc32(bytes(bomb.size))
    document = manifest([b.name.split("/")[1] for b in bombs])
    path = project_file(tmp_path / "p.metastudio", bombs, document)
    before = our_workdirs()
    with pytest.raises(ProjectError) as caught:
        Project.open(path)
    message = str(caught.value)
    assert message.startswith(f"cannot open project '{path}': its images and models would unpack from ")
    assert "150.0 MB, far more than a real project grows" in message
    assert our_workdirs() == before  # the working folder made for it is gone
    with pytest.raises(ProjectError):
        Project.open(path, workdir=tmp_path / "work")
    assert not (tmp_path / "work").exists()  # refused before anything was written


def test_a_project_that_does_not_fit_on_the_disk_is_refused(tmp_path, monkeypatch):
    path = project_file(tmp_path / "p.metastudio", [], manifest())
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda where: real(where)._replace(free=100))
    with pytest.raises(ProjectError) as caught:
        Project.open(path, workdir=tmp_path / "work")
    needed = len(MODEL) + sum(len(d) for d in GOOD)
    assert str(caught.value) == (
        f"cannot open project '{path}': its images and models need {needed:,} bytes of disk space, but the disk "
        f"of {tmp_path} has only 100 bytes free; free some space and open it again"
    )
    assert not (tmp_path / "work").exists()


def test_a_manifest_that_inflates_a_thousand_fold_is_refused(tmp_path):
    text = json.dumps(manifest())[:-1] + " " * (8 * MIB) + "}"  # valid JSON, if it were read
    path = craft(tmp_path / "p.metastudio", [deflated("manifest.json", text.encode())])
    with pytest.raises(ProjectError, match=r"its manifest.json would unpack from 8\.\d KB to 8\.0 MB, far more "
                                           r"than a real one grows"):
        Project.open(path)


def test_streaming_stops_as_soon_as_more_comes_than_the_limit():
    source, target, digest = io.BytesIO(bytes(10 * MIB)), io.BytesIO(), hashlib.sha256()
    reason = archive_module._copy_bounded(source, target, MIB + 5, digest)
    assert reason == "is far larger than it says (it unpacks past 1.0 MB)"
    assert len(target.getvalue()) <= MIB + 5 and source.tell() <= MIB + 6
    exact = io.BytesIO()
    assert archive_module._copy_bounded(io.BytesIO(b"x" * 100), exact, 100, hashlib.sha256()) is None
    assert exact.getvalue() == b"x" * 100


# ----------------------------------------------------------------------------------------------
# names


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_members_the_manifest_does_not_name_are_reported_and_never_written(tmp_path):
    evil = [stored(name, b"boo") for name in ("../escape.txt", "/abs.txt", "images/../../up.png",
                                              "models/../../m.safetensors", "C:/win.txt", "images\\..\\..\\bs.png")]
    path = project_file(tmp_path / "p.metastudio", evil, manifest())
    before = tree(tmp_path)
    with Project.open(path, workdir=tmp_path / "w" / "work") as opened:
        [said] = opened.problems  # the person hears of them, as one line naming the first five
        assert "'../escape.txt', '/abs.txt'" in said and "and 1 more" in said and "ignored" in said
        assert_the_rest_opened(opened)
        written = tree(tmp_path) - before
    assert written == {"w", "w/work", "w/work/images", "w/work/models", "w/work/models/good.safetensors",
                       *(f"w/work/images/{image_name(d)}" for d in GOOD)}
    assert not any((tmp_path.parent / n).exists() for n in ("escape.txt", "up.png", "m.safetensors"))


@pytest.mark.parametrize("document", [
    manifest(["../../escape.png"]),
    manifest(["/tmp/abs.png"]),
    manifest(extra_models=["../evil.safetensors"]),
    manifest(extra_models=["/abs/evil.safetensors"]),
], ids=["image-traversal", "image-absolute", "model-traversal", "model-absolute"])
def test_a_manifest_naming_a_path_is_refused(tmp_path, document):
    path = project_file(tmp_path / "p.metastudio", [stored("../../escape.png", b"x")], document)
    before = tree(tmp_path)
    with pytest.raises(ProjectError, match="the manifest's field"):
        Project.open(path, workdir=tmp_path / "work")
    assert tree(tmp_path) == before


# ----------------------------------------------------------------------------------------------
# in a process that may not write a large file


CHILD = """
import json, resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
resource.setrlimit(resource.RLIMIT_FSIZE, (8 << 20, 8 << 20))
from metastudio.app.project import Project
with Project.open(sys.argv[1]) as opened:
    try:  # this process's peak memory (ru_maxrss would count the parent's, on Linux)
        status = open("/proc/self/status").read()
        peak_kb = int(status.split("VmHWM:")[1].split()[0])
    except (OSError, IndexError):
        peak_kb = None
    print(json.dumps({"problems": opened.problems, "queries": len(opened.queries), "peak_kb": peak_kb}))
"""


@pytest.mark.skipif(sys.platform == "win32", reason="resource limits are POSIX")
def test_bombs_open_in_a_process_that_may_not_write_8_mb_to_a_file(tmp_path, zeros):
    name = "0123456789abcdef.png"
    lying = zeros("models/liar.safetensors", 1024)
    lying.size = 4096
    extra = [zeros("models/bomb.safetensors", 1024), zeros(f"images/{name}", 1024), lying]
    path = project_file(tmp_path / "p.metastudio", extra, manifest([name], ["bomb.safetensors", "liar.safetensors"]))
    done = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert [line.split(" ")[1] for line in report["problems"]] == ["'2.png'", "'bomb.safetensors'", "'liar.safetensors'"]
    assert report["queries"] == 2
    if report["peak_kb"] is not None:
        assert report["peak_kb"] < 200_000  # nothing near a gigabyte was held in memory
