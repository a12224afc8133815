"""Sorting photos into class folders (metastudio.app.sorting): the plan, copying and moving with
an undo log, undo, and what happens when the disk fills, the process is killed or the person
cancels."""

from __future__ import annotations

import csv
import errno
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import make_class_tree

from metastudio.app import sorting, sortlog
from metastudio.app.sorting import (
    CONFIRMED, PREDICTED, UNSURE, QueryPrediction, SortError, SortLogError, execute_sort, labels_csv,
    parse_min_confidence, plan_sort, preview, read_sort_log, safe_folder_name, undo_sort,
)

CLASSES = ["class00", "class01", "class02"]


def tree_state(root: Path) -> dict[str, tuple[str, int]]:
    """``{relative path: (sha256, mtime_ns)}`` of every file under ``root``, and every folder (as "")."""
    state = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_dir():
            state[rel + "/"] = ("", 0)
        else:
            state[rel] = (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
    return state


@pytest.fixture
def photos(tmp_path):
    """``support/`` (3 classes x 2 images), ``query/`` (3 folders x 3 images), the support as
    ``{class: files}`` and the queries, each "predicted" as the class of its folder with 0.8."""
    support_root = make_class_tree(tmp_path / "support", classes=3, per_class=2, size=28)
    query_root = make_class_tree(tmp_path / "query", classes=3, per_class=3, size=28, seed=5)
    support = {c: sorted((support_root / c).iterdir()) for c in CLASSES}
    queries = []
    for c, name in enumerate(CLASSES):
        for file in sorted((query_root / name).iterdir()):
            probabilities = [0.1] * 3
            probabilities[c] = 0.8
            queries.append(QueryPrediction(file, probabilities))
    return tmp_path, support, queries


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


# ------------------------------------------------------------------------------------------------
# With a real model


def test_sorts_by_a_real_models_predictions_and_undo_removes_every_copy(host, tmp_path):
    from metastudio.app.catalogue import resolve_model
    from metastudio.app.session import ClassifierSession
    from metastudio.app.sorting import predictions_from_result, support_from_folder

    make_class_tree(tmp_path / "support", classes=3, per_class=3, size=28)
    make_class_tree(tmp_path / "query", classes=3, per_class=3, size=28, seed=7)
    before = tree_state(tmp_path)
    session = ClassifierSession(host, "cpu")
    session.load(resolve_model("protonet-omniglot"))
    classes, problems = support_from_folder(tmp_path / "support")
    assert problems == [] and [c for c, _ in classes] == CLASSES
    support = [(c, [(f"{c}/{f.name}", f) for f in files]) for c, files in classes]
    queries = [(f"q{i}", f) for i, f in enumerate(sorted((tmp_path / "query").rglob("*.png")))]
    result = session.run(support, queries)
    predictions = predictions_from_result(result, queries)
    assert len(predictions) == 9

    plan = plan_sort(tmp_path / "out", result.class_names, classes, predictions)
    report = execute_sort(plan)
    assert (report.status, report.done, report.copied, report.moved) == ("done", 18, 18, 0)
    rows = {row["original"]: row for row in read_csv(report.csv_path)}
    assert len(rows) == 18
    for image_id, file in queries:  # each query is where its prediction says, as a copy
        probabilities = result.probabilities[image_id]
        best = result.class_names[max(range(3), key=probabilities.__getitem__)]
        row = rows[str(file)]
        folder = "_unsure" if image_id in result.unsure else best
        assert row["status"] == (UNSURE if image_id in result.unsure else PREDICTED) and row["predicted"] == best
        assert row["file"] == f"{folder}/{file.name}" or row["file"].startswith(f"{folder}/{file.stem}-")
        assert (plan.out / row["file"]).read_bytes() == file.read_bytes()
        assert [float(row[c]) for c in result.class_names] == pytest.approx(probabilities, abs=1e-6)
    for name, files in classes:
        for file in files:
            assert rows[str(file)]["status"] == CONFIRMED and rows[str(file)]["label"] == name
            assert rows[str(file)]["file"].startswith(f"{name}/")
    assert {k: v for k, v in tree_state(tmp_path).items() if not k.startswith("out")} == before  # originals stay

    undone = undo_sort(report.log_path)
    assert (undone.removed, undone.refused) == (19, [])  # 18 copies and the CSV
    assert not (tmp_path / "out").exists()
    assert tree_state(tmp_path) == before


# ------------------------------------------------------------------------------------------------
# The plan


def test_min_confidence_is_a_fraction_or_a_percentage():
    assert parse_min_confidence("80%") == pytest.approx(0.8)
    assert parse_min_confidence(" 0.8 ") == pytest.approx(0.8)
    assert parse_min_confidence("0") == 0 and parse_min_confidence("100 %") == 1 and parse_min_confidence(1) == 1
    with pytest.raises(ValueError, match="write 80% for a percentage"):
        parse_min_confidence("80")
    for bad in ("-0.1", "101%", "abc", "nan", "inf", "", "%"):
        with pytest.raises(ValueError, match="minimum confidence"):
            parse_min_confidence(bad)


def test_min_confidence_and_the_models_unsure_route_to_the_unsure_folder(tmp_path):
    files = []
    for name in ("sure", "edge", "below", "unlike"):
        files.append(tmp_path / "in" / f"{name}.png")
        files[-1].parent.mkdir(exist_ok=True)
        files[-1].write_bytes(name.encode())
    queries = [QueryPrediction(files[0], [0.9, 0.1]), QueryPrediction(files[1], [0.3, 0.7]),
               QueryPrediction(files[2], [0.65, 0.35]), QueryPrediction(files[3], [0.95, 0.05], "not like any of your classes")]
    plan = plan_sort(tmp_path / "out", ["cat", "dog"], {}, queries, min_confidence=0.7)
    where = {i.source.name: (i.folder, i.status, i.label, i.predicted, i.reason) for i in plan.items}
    assert where["sure.png"] == ("cat", PREDICTED, "cat", "cat", "")
    assert where["edge.png"] == ("dog", PREDICTED, "dog", "dog", "")  # at the threshold is sure enough
    assert where["below.png"] == ("_unsure", UNSURE, "", "cat", "65% sure, below the 70% asked for")
    assert where["unlike.png"] == ("_unsure", UNSURE, "", "cat", "not like any of your classes")
    text = "\n".join(preview(plan))
    assert "_unsure/" in text and "1 below the minimum confidence of 70%" in text and "1 not like any" in text
    assert not (tmp_path / "out").exists()  # planning touches nothing
    # without a threshold only the model's own unsure one is unsure
    relaxed = plan_sort(tmp_path / "out", ["cat", "dog"], {}, queries)
    assert [i.status for i in relaxed.items] == [PREDICTED, PREDICTED, PREDICTED, UNSURE]
    rows = list(csv.DictReader(labels_csv(plan).splitlines()))
    assert [r["status"] for r in rows] == [PREDICTED, PREDICTED, UNSURE, UNSURE]
    assert rows[2]["label"] == "" and rows[2]["unsure"].startswith("65% sure") and rows[2]["cat"] == "0.650000"


def test_unsafe_class_names_get_safe_folders_said_in_the_preview(tmp_path):
    assert safe_folder_name("cat") == ("cat", "")
    assert safe_folder_name("a/b")[0] == "a_b" and "'/'" in safe_folder_name("a/b")[1]
    assert safe_folder_name("..")[0] == "unnamed" and safe_folder_name("")[0] == "unnamed"
    assert safe_folder_name("CON")[0] == "_CON" and safe_folder_name("nul.txt")[0] == "_nul.txt"
    assert safe_folder_name(".hidden")[0] == "_hidden" and safe_folder_name("end. ")[0] == "end"
    assert len(safe_folder_name("x" * 300)[0].encode()) <= 200

    names = ["a/b", "..", "CON", "", "Cat", "cat", "_unsure", "labels.csv", "../../escape", "a\\b:c"]
    files = []
    for i in range(len(names)):
        files.append(tmp_path / "in" / f"{i}.png")
        files[-1].parent.mkdir(exist_ok=True)
        files[-1].write_bytes(bytes([i]) * 10)
    queries = [QueryPrediction(f, [0.9 if j == i else 0.1 / (len(names) - 1) for j in range(len(names))])
               for i, f in enumerate(files)]
    extra = tmp_path / "in" / "odd.png"
    extra.write_bytes(b"odd")
    queries.append(QueryPrediction(extra, [1 / len(names)] * len(names), "not like any of your classes"))
    out = tmp_path / "out"
    plan = plan_sort(out, names, {}, queries)
    folders = list(plan.folders.values())
    assert len({f.casefold() for f in folders + [plan.unsure_folder]}) == len(names) + 1  # no two the same
    assert all("/" not in f and "\\" not in f and f not in (".", "..", "") for f in folders)
    assert plan.folders["Cat"] == "Cat" and plan.folders["cat"] == "cat-2"  # one folder on Windows and macOS
    assert plan.folders["_unsure"] == "_unsure" and plan.unsure_folder == "__unsure"
    assert plan.folders["labels.csv"] == "labels.csv-2"  # the CSV's name is taken
    text = "\n".join(preview(plan))
    for name in ("a/b", "..", "CON", "cat", "../../escape"):
        assert f"class '{name}' goes to the folder '{plan.folders[name]}'" in text
    report = execute_sort(plan)
    assert report.done == len(names) + 1
    made = [p for p in tmp_path.rglob("*") if p.is_file() and "in" not in p.relative_to(tmp_path).parts[:1]]
    assert all(out in p.parents for p in made)  # nothing written outside OUT
    assert (out / "__unsure" / "odd.png").read_bytes() == b"odd"
    for i, name in enumerate(names):
        assert (out / plan.folders[name] / f"{i}.png").read_bytes() == bytes([i]) * 10


def test_name_clashes_get_a_suffix_and_nothing_is_overwritten(tmp_path):
    out = tmp_path / "out"
    (out / "cat").mkdir(parents=True)
    (out / "cat" / "IMG_0001.jpg").write_bytes(b"there before")
    (out / "cat" / "IMG_0001-2.jpg").write_bytes(b"also there before")
    queries = []
    for camera in ("a", "b", "c"):
        file = tmp_path / camera / "IMG_0001.jpg"
        file.parent.mkdir()
        file.write_bytes(f"from {camera}".encode())
        queries.append(QueryPrediction(file, [0.9, 0.1]))
    plan = plan_sort(out, ["cat", "dog"], {}, queries, move=True)
    assert [i.destination.name for i in plan.items] == ["IMG_0001-3.jpg", "IMG_0001-4.jpg", "IMG_0001-5.jpg"]
    assert all(i.renamed for i in plan.items)
    assert "3 file(s) get a new name" in "\n".join(preview(plan))
    # a file that appears after the plan is not overwritten either: the next free name is taken
    (out / "cat" / "IMG_0001-3.jpg").write_bytes(b"appeared meanwhile")
    execute_sort(plan)
    assert (out / "cat" / "IMG_0001.jpg").read_bytes() == b"there before"
    assert (out / "cat" / "IMG_0001-2.jpg").read_bytes() == b"also there before"
    assert (out / "cat" / "IMG_0001-3.jpg").read_bytes() == b"appeared meanwhile"
    contents = sorted(p.read_bytes() for p in (out / "cat").iterdir())
    assert contents == sorted([b"there before", b"also there before", b"appeared meanwhile", b"from a", b"from b", b"from c"])
    # the CSV beside the existing one gets its own name; an existing --csv file is refused
    (out / "labels.csv").write_text("mine")
    other = tmp_path / "d" / "IMG_0002.jpg"
    other.parent.mkdir()
    other.write_bytes(b"d")
    assert plan_sort(out, ["cat", "dog"], {}, [QueryPrediction(other, [0.2, 0.8])]).csv_path.name == "labels-2.csv"
    with pytest.raises(sorting.MetaStudioError, match="already exists"):
        plan_sort(out, ["cat", "dog"], {}, [QueryPrediction(other, [0.2, 0.8])], csv_path=out / "labels.csv")


def test_a_file_already_in_its_folder_stays_and_a_support_query_is_sorted_once(photos):
    root, support, queries = photos
    out = root / "support"  # sorting into the support folder itself
    plan = plan_sort(out, CLASSES, support, queries + [QueryPrediction(support["class00"][0], [0.1, 0.8, 0.1])])
    assert len(plan.items) == 6 + 9
    assert [i.action for i in plan.items[:6]] == ["none"] * 6  # the examples are already there
    assert plan.items[0].status == CONFIRMED and plan.items[0].folder == "class00"
    assert "6 file(s) are already in their folder" in "\n".join(preview(plan))


# ------------------------------------------------------------------------------------------------
# Copy, move, undo


def test_copy_keeps_the_originals_and_undo_removes_copies_and_created_folders_only(photos):
    root, support, queries = photos
    out = root / "out"
    out.mkdir()
    (out / "mine.txt").write_text("the person's own file")
    before = tree_state(root)
    report = execute_sort(plan_sort(out, CLASSES, support, queries))
    assert (report.copied, report.moved) == (15, 0)
    for query in queries:
        assert query.path.exists()
    assert sorted(p.name for p in (out / "class01").iterdir()) == ["img000-2.png", "img000.png", "img001-2.png",
                                                                   "img001.png", "img002.png"]
    log = read_sort_log(report.log_path)
    assert log["mode"] == "copy" and len(log["operations"]) == 15
    assert all(op["state"] == "done" and len(op["after"]["sha256"]) == 64 for op in log["operations"])
    assert str(out) not in log["folders"]  # OUT was there before: not the sort's to remove
    undone = undo_sort(report.log_path)
    assert undone.refused == [] and undone.removed == 16
    assert tree_state(root) == before  # the person's file and OUT stay


def test_move_then_undo_restores_every_file_byte_identical(photos):
    root, support, queries = photos
    before = tree_state(root)
    out = root / "deep" / "out"
    plan = plan_sort(out, CLASSES, support, queries, move=True)
    text = "\n".join(preview(plan))
    assert "the queries moved, the support images copied" in text and "move " in text
    report = execute_sort(plan)
    assert (report.copied, report.moved) == (6, 9)
    for query in queries:
        assert not query.path.exists()
    for files in support.values():
        assert all(f.exists() for f in files)  # examples are copied, never moved
    log = read_sort_log(report.log_path)
    assert log["folders"][:2] == [str(root / "deep"), str(out)]
    undone = undo_sort(report.log_path)
    assert (undone.restored, undone.removed, undone.refused) == (9, 7, [])
    assert str(root / "deep") in map(str, undone.folders_removed)
    assert tree_state(root) == before  # every file back, same bytes, same time; the folders it made gone
    with pytest.raises(SortLogError, match="does not exist"):  # the log goes once all is undone
        undo_sort(report.log_path)


def test_move_across_devices_copies_fsyncs_and_removes(photos, monkeypatch):
    root, support, queries = photos
    before = tree_state(root)
    real_link, synced = os.link, []

    def no_link_across(src, dst, **kwargs):
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV), str(src))

    real_fsync = os.fsync
    monkeypatch.setattr(os, "link", no_link_across)
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    report = execute_sort(plan_sort(root / "out", CLASSES, support, queries, move=True))
    assert report.moved == 9 and not any(q.path.exists() for q in queries)
    assert len(synced) >= 9  # each moved file, and the log
    undone = undo_sort(report.log_path)  # moved back across devices too
    assert undone.refused == [] and undone.restored == 9
    monkeypatch.setattr(os, "link", real_link)
    assert tree_state(root) == before


def test_a_linked_query_is_copied_not_moved_and_a_source_that_cannot_go_stays(photos, monkeypatch):
    root, support, queries = photos
    link = root / "query" / "class00" / "link.png"
    link.symlink_to(queries[0].path)
    before = tree_state(root)
    plan = plan_sort(root / "out", CLASSES, {}, [QueryPrediction(link, [0.8, 0.1, 0.1]), queries[1]], move=True)
    assert [i.action for i in plan.items] == ["copy", "move"]
    assert "1 linked file(s) are copied, not moved" in "\n".join(preview(plan))
    real_unlink = os.unlink
    monkeypatch.setattr(os, "unlink", lambda path, *a, **k: (_ for _ in ()).throw(
        PermissionError(errno.EACCES, "Permission denied", str(path))) if Path(path) == queries[1].path
        else real_unlink(path, *a, **k))
    with pytest.raises(SortError, match="could not move .* permission denied. Stopped after 1 of 2"):
        execute_sort(plan)
    assert queries[1].path.exists() and not (root / "out" / "class00" / queries[1].path.name).exists()
    assert link.is_symlink() and (root / "out" / "class00" / "link.png").read_bytes() == queries[0].path.read_bytes()
    monkeypatch.setattr(os, "unlink", real_unlink)
    assert undo_sort(plan.log_path).refused == []
    assert tree_state(root) == before


def test_undo_refuses_a_changed_destination_file_by_file(photos):
    root, support, queries = photos
    out = root / "out"
    report = execute_sort(plan_sort(out, CLASSES, support, queries, move=True))
    moved = out / "class00" / "img000-2.png"
    copied = out / "class01" / "img000.png"
    assert moved.exists() and copied.exists()
    moved.write_bytes(moved.read_bytes() + b"edited")
    stat = copied.stat()
    copied.write_bytes(b"x" * stat.st_size)  # same size and time, other content
    os.utime(copied, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    support["class02"][0].unlink()  # the original of a copy is gone: that copy is the only one left
    undone = undo_sort(report.log_path)
    refused = dict(undone.refused)
    assert set(refused) == {moved, copied, out / "class02" / support["class02"][0].name}
    assert "changed since it was moved there" in refused[moved] and str(moved) in refused[moved]
    assert "changed since it was copied there" in refused[copied]
    assert "may be the only one left" in refused[out / "class02" / "img000.png"]
    assert moved.read_bytes().endswith(b"edited") and copied.read_bytes() == b"x" * stat.st_size
    assert undone.restored == 8 and undone.log_kept
    log = read_sort_log(report.log_path)  # now lists only what was refused
    assert sorted(op["destination"] for op in log["operations"]) == sorted(map(str, refused))
    assert (out / "class00").is_dir() and not (out / "_unsure").exists()
    # put the moved file back as the sort left it (content and time): the same undo carries on
    moved.write_bytes(moved.read_bytes()[: -len(b"edited")])
    after = next(op for op in log["operations"] if op["destination"] == str(moved))["after"]
    os.utime(moved, ns=(after["mtime_ns"], after["mtime_ns"]))
    second = undo_sort(report.log_path)
    assert second.restored == 1 and len(second.refused) == 2


@pytest.mark.parametrize("damage, field", [
    (lambda d: d["operations"][0].update(size="abc"), "field 'operations[0].size' must be a whole number, not 'abc'"),
    (lambda d: d["operations"][1].pop("after"), "field 'operations[1].after' is missing"),
    (lambda d: d["operations"][0].update(state="maybe"), "field 'operations[0].state' must be"),
    (lambda d: d["operations"][0].update(destination="/etc/passwd"), "field 'operations[0].destination' must be inside"),
    (lambda d: d["operations"][0].update(source="relative.png"), "field 'operations[0].source' must be an absolute"),
    (lambda d: d["operations"][0]["after"].update(sha256="nope"), "field 'operations[0].after.sha256' must be a SHA-256"),
    (lambda d: d["folders"].append(str(Path(d["out"]).parent / "elsewhere")), "field 'folders[4]' must be the output"),
    (lambda d: d.pop("mode"), "field 'mode' is missing"),
    (lambda d: d.update(format="something else"), "it is not a MetaStudio sort log"),
    (lambda d: d.update(version=2), "written by a newer MetaStudio"),
    (lambda d: d.update(operations={}), "field 'operations' must be a list, not an object"),
])
def test_a_damaged_undo_log_is_refused_naming_the_field(photos, damage, field):
    root, support, queries = photos
    report = execute_sort(plan_sort(root / "out", CLASSES, support, queries, move=True))
    doc = json.loads(report.log_path.read_text())
    damage(doc)
    report.log_path.write_text(json.dumps(doc))
    state = tree_state(root)
    with pytest.raises(SortLogError) as caught:
        undo_sort(report.log_path)
    assert str(caught.value).startswith(f"undo log '{report.log_path}': ") and field in str(caught.value)
    assert tree_state(root) == state  # nothing touched


def test_an_undo_log_that_is_not_json_or_not_there_is_refused(tmp_path):
    bad = tmp_path / "log.json"
    bad.write_bytes(b'{"format": "metastudio-sort-log", "operations": [')
    with pytest.raises(SortLogError, match=f"undo log '{bad}': the log is not valid JSON"):
        read_sort_log(bad)
    bad.write_bytes(b"\xff\xfe")
    with pytest.raises(SortLogError, match="not UTF-8"):
        read_sort_log(bad)
    with pytest.raises(SortLogError, match="does not exist"):
        read_sort_log(tmp_path / "missing.json")


# ------------------------------------------------------------------------------------------------
# Failures, kills and cancel


def fail_after(monkeypatch, name: str, count: int, error: BaseException):
    """Make ``sorting.<name>`` work ``count`` times, then raise ``error``."""
    real, calls = getattr(sorting, name), []

    def wrapped(*args, **kwargs):
        calls.append(args)
        if len(calls) > count:
            raise error
        return real(*args, **kwargs)

    monkeypatch.setattr(sorting, name, wrapped)
    return calls


def test_a_full_disk_midway_stops_keeps_the_log_and_undo_restores(photos, monkeypatch):
    root, support, queries = photos
    before = tree_state(root)
    fail_after(monkeypatch, "copy_file", 4, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    fail_after(monkeypatch, "move_file", 3, PermissionError(errno.EACCES, os.strerror(errno.EACCES)))
    plan = plan_sort(root / "out", CLASSES, support, queries, move=True)
    with pytest.raises(SortError) as caught:
        execute_sort(plan)
    message = str(caught.value)
    assert "could not copy" in message and "no space left on device" in message and str(plan.log_path) in message
    assert "Stopped after 4 of 15 files; nothing was lost" in message and caught.value.done == 4
    log = read_sort_log(plan.log_path)
    assert [op["state"] for op in log["operations"]] == ["done"] * 4 + ["planned"]  # not the rest of the batch
    assert not plan.csv_path.exists()
    assert undo_sort(plan.log_path).refused == []
    assert tree_state(root) == before
    # a refused permission while moving: the same
    monkeypatch.setattr(sorting, "copy_file", sortlog.copy_file)
    plan = plan_sort(root / "out", CLASSES, support, queries, move=True)
    with pytest.raises(SortError, match="could not move .* permission denied. Stopped after 9 of 15"):
        execute_sort(plan)
    assert sum(not q.path.exists() for q in queries) == 3
    assert undo_sort(plan.log_path).restored == 3
    assert tree_state(root) == before


def test_a_full_disk_while_writing_the_log_stops_before_the_batch(photos, monkeypatch):
    root, support, queries = photos
    before = tree_state(root)
    real, writes = sortlog.write_log, []

    def write_log(path, doc):
        writes.append(len(doc["operations"]))
        if len(writes) == 3:  # the third batch's log
            raise sorting.CheckpointError(f"could not write '{path}': no space left on device")
        real(path, doc)

    monkeypatch.setattr(sorting, "write_log", write_log)
    plan = plan_sort(root / "out", CLASSES, support, queries, move=True)
    with pytest.raises(SortError, match="could not go on: could not write .*no space left on device. Stopped after 5 "
                                        "of 15"):
        execute_sort(plan, batch_size=5)
    assert writes[1:3] == [5, 10] and len(read_sort_log(plan.log_path)["operations"]) == 5
    assert undo_sort(plan.log_path).refused == []
    assert tree_state(root) == before


class Killed(BaseException):
    """Stands for the process being killed: nothing after it runs (the log is not updated)."""


@pytest.mark.parametrize("where", ["mid-copy", "after-link", "after-move"])
def test_a_sort_killed_mid_batch_is_undone_from_its_planned_log(photos, monkeypatch, where):
    root, support, queries = photos
    before = tree_state(root)
    plan = plan_sort(root / "out", CLASSES, support, queries, move=True)
    if where == "mid-copy":  # a copy cut short: part of the file written
        def copy_file(source, destination, durable=False):
            with open(destination, "xb") as fh:
                fh.write(Path(source).read_bytes()[:50])
            raise Killed
        monkeypatch.setattr(sorting, "copy_file", copy_file)
    elif where == "after-link":  # linked on the same device, the old name not yet removed
        def move_file(source, destination):
            os.link(source, destination)
            raise Killed
        monkeypatch.setattr(sorting, "move_file", move_file)
    else:  # moved, the log not yet updated
        def move_file(source, destination):
            sortlog.move_file(source, destination)
            raise Killed
        monkeypatch.setattr(sorting, "move_file", move_file)
    with pytest.raises(Killed):
        execute_sort(plan)
    log = read_sort_log(plan.log_path)
    assert log["operations"] and log["operations"][-1]["state"] == "planned"
    undone = undo_sort(plan.log_path)
    assert undone.refused == []
    assert tree_state(root) == before


def test_cancel_stops_after_the_current_file_with_the_log_intact(photos):
    root, support, queries = photos
    before = tree_state(root)
    seen = []
    plan = plan_sort(root / "out", CLASSES, support, queries, move=True)
    report = execute_sort(plan, progress=lambda done, total: seen.append((done, total)),
                          should_stop=lambda: len(seen) > 7)
    assert report.status == "cancelled" and report.done == 7 and report.csv_path is None
    assert seen[0] == (0, 15) and seen[-1] == (7, 15)
    log = read_sort_log(report.log_path)
    assert [op["state"] for op in log["operations"]] == ["done"] * 7
    assert sum(not q.path.exists() for q in queries) == 1  # 6 examples copied, then one query moved
    progress = []
    assert undo_sort(report.log_path, progress=lambda d, t: progress.append((d, t))).restored == 1
    assert progress[-1] == (7, 7)
    assert tree_state(root) == before


KILL_SCRIPT = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from metastudio.app import sorting
    from metastudio.app.sorting import QueryPrediction, execute_sort, plan_sort

    root = Path(sys.argv[1])
    real = sorting.move_file
    def slow_move(source, destination):
        real(source, destination)
        time.sleep(0.004)
    sorting.move_file = slow_move
    files = sorted((root / "query").iterdir())
    queries = [QueryPrediction(f, [0.9, 0.1] if i % 2 else [0.2, 0.8]) for i, f in enumerate(files)]
    plan = plan_sort(root / "out", ["cat", "dog"], {}, queries, move=True)
    print(plan.log_path, flush=True)
    execute_sort(plan, batch_size=16)
    print("finished", flush=True)
""")


def test_kill_9_at_a_random_moment_leaves_a_log_that_undoes_everything(tmp_path):
    (tmp_path / "query").mkdir()
    rng = random.Random(24)
    for i in range(150):
        (tmp_path / "query" / f"IMG_{i:04d}.jpg").write_bytes(rng.randbytes(rng.randrange(1, 3000)))
    script = tmp_path / "sort.py"
    script.write_text(KILL_SCRIPT)
    before = tree_state(tmp_path)
    for trial in range(3):
        process = subprocess.Popen([sys.executable, str(script), str(tmp_path)], stdout=subprocess.PIPE, text=True)
        log = Path(process.stdout.readline().strip())
        time.sleep(rng.uniform(0.05, 0.4))
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert process.returncode == -signal.SIGKILL
        moved = sum(1 for _ in (tmp_path / "out").rglob("IMG_*")) if (tmp_path / "out").exists() else 0
        if log.exists():
            undone = undo_sort(log)
            assert undone.refused == [] and undone.restored == moved
        else:  # killed before the first log was written: nothing was moved, OUT may be left (empty)
            assert moved == 0
            shutil.rmtree(tmp_path / "out", ignore_errors=True)
        assert tree_state(tmp_path) == before, f"trial {trial}: not all back"
