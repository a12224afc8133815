"""``metastudio sort`` and ``metastudio sort --undo`` through the installed command, on generated images."""

from __future__ import annotations

import csv
import hashlib
import json
import re
import subprocess
from pathlib import Path

import pytest

from conftest import METASTUDIO_COMMAND, make_class_tree

MODEL = "protonet-omniglot"


def metastudio(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([METASTUDIO_COMMAND, *argv], capture_output=True, text=True, timeout=180)


def tree_state(root: Path) -> dict[str, tuple[str, int]]:
    """``{relative path: (sha256, mtime_ns)}`` of every file under ``root`` (folders as ``("", 0)``)."""
    return {p.relative_to(root).as_posix(): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            if p.is_file() else ("", 0) for p in sorted(root.rglob("*"))}


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture
def photos(tmp_path):
    """``support/`` (3 classes x 3), and two query folders whose files have the same names."""
    make_class_tree(tmp_path / "support", classes=3, per_class=3, size=28)
    make_class_tree(tmp_path / "roll1", classes=3, per_class=2, size=28, seed=5)
    make_class_tree(tmp_path / "roll2", classes=3, per_class=2, size=28, seed=6)
    return tmp_path


def undo_command(stdout: str) -> str:
    match = re.search(r"^to undo: metastudio sort --undo (.+)$", stdout, re.M)
    assert match, stdout
    return match.group(1)


def test_help_says_where_the_files_go_and_how_to_undo():
    run = metastudio("sort", "--help")
    assert run.returncode == 0
    text = " ".join(run.stdout.split())
    for words in ("OUT/_unsure/", "another \"_\" in front", "--min-confidence", "(80%)", "--dry-run",
                  "OUT/labels.csv", "OUT/.metastudio-sort-<date>-<time>.json", "metastudio sort --undo LOG",
                  "nothing is ever overwritten", "your examples are always copied"):
        assert words in text, words


def test_dry_run_prints_the_plan_and_touches_nothing(photos):
    before = tree_state(photos)
    run = metastudio("sort", "--model", MODEL, "--support", str(photos / "support"), "--query", str(photos / "roll1"),
                     str(photos / "roll2"), "--out", str(photos / "out"), "--move", "--dry-run", "--device", "cpu")
    assert run.returncode == 0, run.stderr
    assert f"sorting 21 files into {photos / 'out'} (the queries moved, the support images copied):" in run.stdout
    counted = sum(int(m) for m in re.findall(r"^  \S+/\s+(\d+)  \(", run.stdout, re.M))
    assert counted == 21
    assert "the first 8 of 21:" in run.stdout and "dry run: nothing was copied or moved" in run.stdout
    assert tree_state(photos) == before and not (photos / "out").exists()


def test_move_sorts_as_classify_predicts_and_undo_puts_every_file_back(photos):
    before = tree_state(photos)
    queries = [str(photos / "roll1"), str(photos / "roll2")]
    classify = metastudio("classify", "--model", MODEL, "--support", str(photos / "support"), "--query", *queries,
                          "--csv", str(photos.parent / f"{photos.name}-predictions.csv"), "--device", "cpu")
    assert classify.returncode == 0, classify.stderr
    predicted = {row["file"]: row for row in read_csv(photos.parent / f"{photos.name}-predictions.csv")}
    labels = photos.parent / f"{photos.name}-labels.csv"
    run = metastudio("sort", "--model", MODEL, "--support", str(photos / "support"), "--query", queries[0],
                     "--query", queries[1], "--out", str(photos / "out"), "--move", "--csv", str(labels), "--device", "cpu")
    assert run.returncode == 0, run.stderr
    assert f"copied 9, moved 12 files into {photos / 'out'}; labels in {labels}" in run.stdout
    rows = {row["original"]: row for row in read_csv(labels)}
    assert len(rows) == 21 and len(predicted) == 12
    names = set()
    for original, expected in predicted.items():
        row = rows[original]
        folder = "_unsure" if expected["unsure"] else expected["predicted"]
        assert not Path(original).exists() and (photos / "out" / row["file"]).parent == photos / "out" / folder
        assert row["status"] == ("unsure" if expected["unsure"] else "predicted")
        assert row["predicted"] == expected["predicted"]
        names.add(row["file"])
    assert len(names) == 12  # the two rolls' files of the same name both kept
    for row in rows.values():
        if row["original"].startswith(str(photos / "support")):
            assert row["status"] == "confirmed" and Path(row["original"]).exists()
            assert row["file"] == f"{row['label']}/{Path(row['original']).name}"

    undo = metastudio("sort", "--undo", undo_command(run.stdout))
    assert undo.returncode == 0, undo.stderr
    assert "put back 12 moved file(s) and deleted 10 copied or written file(s)" in undo.stdout
    assert tree_state(photos) == before and not labels.exists() and not (photos / "out").exists()


def test_min_confidence_routes_to_unsure_and_undo_refuses_a_changed_copy_naming_a_damaged_field(photos):
    out = photos / "out"
    run = metastudio("sort", "--model", MODEL, "--support", str(photos / "support"), "--query", str(photos / "roll1"),
                     "--out", str(out), "--min-confidence", "99.5%", "--device", "cpu")
    assert run.returncode == 0, run.stderr
    rows = read_csv(out / "labels.csv")
    queries = [r for r in rows if r["status"] != "confirmed"]
    assert len(queries) == 6 and all(r["status"] == "unsure" and r["file"].startswith("_unsure/") for r in queries)
    assert all(r["unsure"] == "not like any of your classes" or r["unsure"].endswith("below the 99.5% asked for")
               for r in queries)
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["_unsure", "class00", "class01", "class02"]
    ambiguous = metastudio("sort", "--model", MODEL, "--support", str(photos / "support"), "--query",
                           str(photos / "roll1"), "--out", str(out), "--min-confidence", "80")
    assert ambiguous.returncode == 2 and "write 80% for a percentage" in ambiguous.stderr

    log = Path(undo_command(run.stdout))
    assert log.parent == out and log.name.startswith(".metastudio-sort-")
    edited = out / "class01" / "img000.png"
    edited.write_bytes(b"my own edit")
    undo = metastudio("sort", "--undo", str(log))
    assert undo.returncode == 1
    assert f"kept: '{edited}' changed since it was copied there" in undo.stderr
    assert "1 file(s) were left as they are" in undo.stderr
    assert edited.read_bytes() == b"my own edit" and sorted(p.name for p in out.rglob("*.png")) == ["img000.png"]

    doc = json.loads(log.read_text())
    doc["operations"][0]["size"] = "big"
    log.write_text(json.dumps(doc))
    damaged = metastudio("sort", "--undo", str(log))
    assert damaged.returncode == 1 and "Traceback" not in damaged.stderr
    assert damaged.stderr.strip() == (f"error: undo log '{log}': field 'operations[0].size' must be a whole number, "
                                      "not 'big'")
    assert edited.read_bytes() == b"my own edit"


def test_wrong_flag_combinations_are_told_with_exit_status_2(photos):
    alone = metastudio("sort", "--model", MODEL, "--support", str(photos / "support"), "--query", str(photos / "roll1"))
    assert alone.returncode == 2 and "metastudio sort needs --out (or --undo LOG to undo a sort)" in alone.stderr
    mixed = metastudio("sort", "--undo", str(photos / "log.json"), "--move")
    assert mixed.returncode == 2 and "--undo takes only the undo log: leave out --move" in mixed.stderr
    missing = metastudio("sort", "--undo", str(photos / "log.json"))
    assert missing.returncode == 1 and f"error: undo log '{photos / 'log.json'}' does not exist" in missing.stderr
