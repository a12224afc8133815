"""Saves killed at random moments lose no project, and what killed processes leave is cleaned up.

The leftovers are the hidden temporary file of a save beside its project and the working folder
of an open project in the temporary folder; only those provably ours and abandoned are removed
(:mod:`metastudio.app.project.cleanup`). The kill trials run a real saving process and send it
SIGKILL (seeded random moments); after each, the project opens and holds one whole saved state.
"""

from __future__ import annotations

import json
import os
import random
import runpy
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import dead_pid
from PIL import Image

from metastudio.app.project import Project
from metastudio.app.project.cleanup import (
    MARKER,
    make_workdir,
    remove_abandoned_workdirs,
    remove_stale_temps,
)
from metastudio.data.fileio import host_tag, temp_owner, temp_path

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL and symbolic links are POSIX")


def saved_project(folder: Path) -> Path:
    with Project() as project:
        project.settings = {"generation": 0}
        project.save(folder / "p.metastudio")
    return folder / "p.metastudio"


def temps_of(target: Path) -> list[str]:
    return sorted(n for n in os.listdir(target.parent) if n.startswith(f".{target.name}.tmp"))


# ----------------------------------------------------------------------------------------------
# temporary files beside a project


def test_the_temporary_file_name_says_whose_it_is(tmp_path):
    name = temp_path(tmp_path / "p.metastudio").name
    assert name == f".p.metastudio.tmp{os.getpid()}-{host_tag()}"
    assert temp_owner(name, "p.metastudio") == (os.getpid(), host_tag())
    assert temp_owner(".p.metastudio.tmp123", "p.metastudio") == (123, None)
    for other in (".p.metastudio.tmp123-abc", ".p.metastudio.tmp123-0123abcd.x", ".p.metastudio.tmp0",
                  ".p.metastudio.tmp", "p.metastudio.tmp123", ".q.metastudio.tmp123", ".p.metastudio.tmpx12"):
        assert temp_owner(other, "p.metastudio") is None, other


def test_stale_temporary_files_are_removed_on_open_and_save_and_only_they(tmp_path):
    target = saved_project(tmp_path)
    dead, host = dead_pid(), host_tag()
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"keep me")
    stale, legacy_old = f".p.metastudio.tmp{dead}-{host}", f".p.metastudio.tmp{dead}"
    kept = {
        f".p.metastudio.tmp{os.getpid()}-{host}": "a save of a running process (this one)",
        f".p.metastudio.tmp{dead}-{'0' if host != '00000000' else '1'}0000000": "written on another computer",
        f".p.metastudio.tmp{dead + 1}": "older naming, but fresh: maybe another computer's save in progress",
        f".other.metastudio.tmp{dead}-{host}": "another file's",
        f".p.metastudio.tmp{dead}-{host}.bak": "not our exact name",
    }
    for name in [stale, legacy_old, *kept]:
        (tmp_path / name).write_bytes(b"half a project")
    two_hours_ago = time.time() - 7200
    os.utime(tmp_path / legacy_old, (two_hours_ago, two_hours_ago))
    (tmp_path / f".p.metastudio.tmp{dead + 2}-{host}").symlink_to(outside)
    (tmp_path / f".p.metastudio.tmp{dead + 3}-{host}").mkdir()

    with Project.open(target) as opened:
        assert opened.settings == {"generation": 0}
    left = set(os.listdir(tmp_path))
    assert stale not in left and legacy_old not in left
    assert set(kept) <= left, "kept: " + ", ".join(kept.values())
    assert {f".p.metastudio.tmp{dead + 2}-{host}", f".p.metastudio.tmp{dead + 3}-{host}"} <= left
    assert outside.read_bytes() == b"keep me"  # a link is never followed

    (tmp_path / stale).write_bytes(b"another killed save")
    with Project.open(target) as opened:
        opened.save(target)
    assert stale not in os.listdir(tmp_path)
    assert remove_stale_temps(tmp_path / "missing-folder" / "p.metastudio") == []


# ----------------------------------------------------------------------------------------------
# working folders


def fake_workdir(parent: Path, name: str, marker: object | None) -> Path:
    folder = parent / name
    (folder / "images").mkdir(parents=True)
    (folder / "images" / "0123456789abcdef.png").write_bytes(b"x" * 1000)
    if marker is not None:
        (folder / MARKER).write_text(json.dumps(marker))
    return folder


def test_only_abandoned_working_folders_of_ours_are_removed(tmp_path):
    dead, host = dead_pid(), host_tag()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("keep me")
    temp = tmp_path / "temp"
    temp.mkdir()
    mine = make_workdir(temp)
    assert mine.name.startswith(f"metastudio-project-{os.getpid()}-") and (mine / MARKER).is_file()
    abandoned = fake_workdir(temp, f"metastudio-project-{dead}-abcdefgh", {"pid": dead, "host": host})
    (abandoned / "link").symlink_to(outside)
    kept = [
        fake_workdir(temp, f"metastudio-project-{dead}-nomarker", None),
        fake_workdir(temp, f"metastudio-project-{dead}-otherpid", {"pid": dead + 1, "host": host}),
        fake_workdir(temp, f"metastudio-project-{dead}-otherhst", {"pid": dead, "host": "00000000"}),
        fake_workdir(temp, f"metastudio-project-{dead}-badjson_", None),
        fake_workdir(temp, f"metastudio-project-{dead}-toolong00", {"pid": dead, "host": host}),
        fake_workdir(temp, f"metastudio-{dead}-abcdefgh", {"pid": dead, "host": host}),
    ]
    (kept[3] / MARKER).write_text("{not json")
    elsewhere = fake_workdir(outside, "real", {"pid": dead, "host": host})
    (temp / f"metastudio-project-{dead}-symlinkd").symlink_to(elsewhere)

    assert remove_abandoned_workdirs(temp) == [abandoned]
    assert not abandoned.exists() and (outside / "precious.txt").read_text() == "keep me"
    assert mine.is_dir() and all(folder.is_dir() for folder in kept)
    assert (temp / f"metastudio-project-{dead}-symlinkd").is_symlink() and (elsewhere / MARKER).is_file()
    assert remove_abandoned_workdirs(tmp_path / "no-such-folder") == []


KILLED_HOLDER = """
import os, signal
from metastudio.app.project import Project
project = Project()
project.import_bytes(open(os.environ["IMAGE"], "rb").read())
print(project.workdir, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_the_next_process_removes_the_working_folder_of_a_killed_one(tmp_path):
    temp = tmp_path / "temp"
    temp.mkdir()
    image = tmp_path / "i.png"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(image)
    env = {**os.environ, "TMPDIR": str(temp), "IMAGE": str(image)}
    first = subprocess.run([sys.executable, "-c", KILLED_HOLDER], env=env, capture_output=True, text=True, timeout=60)
    assert first.returncode == -signal.SIGKILL, first.stderr
    left = Path(first.stdout.strip())
    assert left.parent == temp and len(list((left / "images").iterdir())) == 1  # what a kill leaves

    second = subprocess.run([sys.executable, "-c", KILLED_HOLDER], env=env, capture_output=True, text=True, timeout=60)
    assert not left.exists()  # the next start removed it
    assert [p.name for p in temp.iterdir()] == [Path(second.stdout.strip()).name]


# ----------------------------------------------------------------------------------------------
# kill -9 during saves


SAVER = """
import os, struct, sys
from pathlib import Path

POOL = 8
MODEL_BYTES = 3 << 20


def chosen(generation):
    # The pool images a generation holds (which ones, and how many, change every time).
    return [f"{(generation + k) % POOL}.png" for k in range(1 + generation % 4)]


def model_bytes(generation):
    header = ('{"w":{"dtype":"U8","shape":[%d],"data_offsets":[0,%d]}}' % (MODEL_BYTES, MODEL_BYTES)).encode()
    return struct.pack("<Q", len(header)) + header + bytes([generation % 251]) * MODEL_BYTES


def main(target, pool):
    from metastudio.app.project import Project

    assert "torch" not in sys.modules, "saving a project loads torch"
    project = Project.open(target)
    generation = project.settings["generation"]
    print("ready", flush=True)
    while True:
        generation += 1
        project.queries = [project.import_file(pool / name) for name in chosen(generation)]
        part = project.workdir / "model.part"
        part.write_bytes(model_bytes(generation))
        os.replace(part, project.model_path("model.safetensors"))
        project.settings = {"generation": generation}
        project.save(target)
        print(generation, flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
"""


def check_whole(opened: Project, saver: dict) -> int:
    """The generation ``opened`` holds, after checking it holds all of that one and nothing else."""
    generation = opened.settings["generation"]
    assert opened.problems == []
    if generation == 0:
        assert opened.queries == [] and opened.model_files() == []
        return 0
    assert [item.name for item in opened.queries] == saver["chosen"](generation)
    assert opened.model_path("model.safetensors").read_bytes() == saver["model_bytes"](generation)
    return generation


def kill_trials(tmp_path: Path, trials: int, seed: int) -> dict[str, int]:
    pool = tmp_path / "pool"
    pool.mkdir()
    for i in range(8):
        pixels = np.random.default_rng(i).integers(0, 256, (64, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(pool / f"{i}.png")
    script = tmp_path / "saver.py"
    script.write_text(SAVER)
    saver = runpy.run_path(str(script), run_name="saver")
    target = saved_project(tmp_path / "projects")
    rng = random.Random(seed)
    last, interrupted = 0, 0
    for trial in range(trials):
        child = subprocess.Popen([sys.executable, str(script), str(target), str(pool)], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        assert child.stdout.readline() == "ready\n", child.stderr.read()
        time.sleep(rng.uniform(0.0, 0.25))
        child.send_signal(signal.SIGKILL)
        out, err = child.communicate(timeout=60)  # reaped: its pid is no process now
        assert child.returncode == -signal.SIGKILL, err
        done = [int(line) for line in out.split()]
        interrupted += bool(temps_of(target))
        with Project.open(target) as opened:
            generation = check_whole(opened, saver)
        finished = done[-1] if done else last
        assert finished <= generation <= finished + 1, f"trial {trial}: {generation} after {done}"
        assert temps_of(target) == [], f"trial {trial}: a stale temporary file stayed"
        last = generation
    return {"generation": last, "interrupted": interrupted}


def test_saves_killed_at_random_moments_lose_no_project(tmp_path):
    start = time.monotonic()
    result = kill_trials(tmp_path, trials=30, seed=22)
    print(f"30 kill trials in {time.monotonic() - start:.1f} s: {result}")
    assert result["generation"] >= 1  # the saves went on, from where each killed one stopped
    assert result["interrupted"] >= 1  # some kills did land in the middle of a save


@pytest.mark.long
def test_fifty_more_kill_trials(tmp_path):
    result = kill_trials(tmp_path, trials=50, seed=2222)
    assert result["generation"] >= 1 and result["interrupted"] >= 1
