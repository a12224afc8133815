"""``metastudio compare``, run as a person runs the installed command: the table with the best
model marked and every model that could not serve the examples saying why (a plugin's model
that fails or hangs included, installed as a third party's package), ``--json``, and the errors."""

from __future__ import annotations

import json
import subprocess

import pytest

import faulty_plugins as fp
from conftest import METASTUDIO_COMMAND, make_class_tree
from plugin_packages import write_distribution

SHOP = '''
from pathlib import Path

from metastudio.api import ModelSpec, hookimpl

HERE = Path(__file__).resolve().parent / "mstest_compare_models"


@hookimpl
def metastudio_models():
    return [ModelSpec("shop-raising", HERE / "raising_adapt.safetensors"),
            ModelSpec("shop-hanging", HERE / "hanging_adapt.safetensors")]
'''


def _compare(*argv: str, env=None, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([METASTUDIO_COMMAND, "compare", *argv], capture_output=True, text=True, env=env,
                          timeout=timeout)


@pytest.fixture
def shop(tmp_path):
    """A site (for a subprocess's PYTHONPATH) with two faulty algorithm plugins and a third
    party's plugin shipping a model of each."""
    site = tmp_path / "site"
    fp.install(site, kinds=("raising_adapt", "hanging_adapt"))
    models = site / "mstest_compare_models"
    models.mkdir()
    for kind in ("raising_adapt", "hanging_adapt"):
        fp.make_model(site, kind, models / f"{kind}.safetensors", tmp_path)
    write_distribution(site, "compare-shop", "metastudio-compare-shop", "mstest_compare_shop", SHOP)
    return site


def test_the_table_marks_the_best_model_and_says_why_others_were_not_scored(shop, tmp_path):
    support = make_class_tree(tmp_path / "examples", classes=6, per_class=2, size=28)
    done = _compare("--support", str(support), "--models", "protonet-omniglot,mann-omniglot,shop-*",
                    "--timeout", "2", "--device", "cpu", env=fp.env(shop))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["MODEL", "ACCURACY", "(95%", "CI)", "ADAPT", "PER", "IMAGE", "NOTE"]
    rows = {line.split()[0] if not line.startswith("*") else line.split()[1]: line for line in lines[1:5]}
    assert set(rows) == {"protonet-omniglot", "mann-omniglot", "shop-raising", "shop-hanging"}
    assert rows["protonet-omniglot"].startswith("* protonet-omniglot") and rows["protonet-omniglot"].endswith("best")
    assert " % (" in rows["protonet-omniglot"] and " ms" in rows["protonet-omniglot"]
    assert "not run: tells at most 5 classes apart (max_ways=5) and the examples have 6 classes" in rows["mann-omniglot"]
    assert "failed after 0 of 12 adaptations" in rows["shop-raising"] and fp.RAISED["raising_adapt"] in rows["shop-raising"]
    assert fp.origin_words("raising_adapt") in rows["shop-raising"]
    assert "did not finish within 2 s" in rows["shop-hanging"] and fp.origin_words("hanging_adapt") in rows["shop-hanging"]
    text = done.stdout
    assert "6 classes, 12 examples: 12 held out over 12 adaptations a model (leave-one-out, seed 0)" in text
    assert "\nBest: protonet-omniglot, right on " in text


def test_json_with_k_folds_is_the_same_for_the_same_seed(tmp_path):
    support = make_class_tree(tmp_path / "examples", classes=3, per_class=4, size=28)
    (support / "one").mkdir()
    (support / "class00" / "img003.png").rename(support / "one" / "img.png")
    argv = ("--support", str(support), "--models", "protonet-omniglot,simpleshot-omniglot", "--folds", "2",
            "--seed", "5", "--json", "--device", "cpu")
    runs = [_compare(*argv) for _ in range(2)]
    assert all(r.returncode == 0 for r in runs), runs[0].stderr
    first, second = (json.loads(r.stdout) for r in runs)
    assert (first["folds"], first["seed"], first["adaptations"], first["held_out"]) == (2, 5, 2, 11)
    assert first["support"] == str(support) and first["best"] in ("protonet-omniglot", "simpleshot-omniglot")
    assert any("'one' has a single example" in n for n in first["notes"])
    for a, b in zip(first["scores"], second["scores"]):
        assert a["status"] == "ok" and a["predicted"] == 11 and a["adaptations"] == 2
        assert (a["name"], a["correct"], a["accuracy"], a["ci95_low"]) == (b["name"], b["correct"], b["accuracy"],
                                                                          b["ci95_low"])


def test_help_and_errors_are_in_plain_words(tmp_path):
    shown = subprocess.run([METASTUDIO_COMMAND, "compare", "--help"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0
    assert "leave-one-out" in shown.stdout and "95 % interval" in shown.stdout and "--folds loo|K" in shown.stdout
    bad_folds = _compare("--support", str(tmp_path), "--folds", "1")
    assert bad_folds.returncode == 2 and "folds must be 'loo' (leave-one-out) or a number of at least 2" in bad_folds.stderr
    support = make_class_tree(tmp_path / "examples", classes=2, per_class=2, size=28)
    unknown = _compare("--support", str(support), "--models", "no-such-model", "--device", "cpu")
    assert unknown.returncode == 1 and unknown.stderr.startswith("error: model 'no-such-model' not found")
    one_class = make_class_tree(tmp_path / "one", classes=1, per_class=3, size=28)
    lonely = _compare("--support", str(one_class), "--models", "protonet-omniglot", "--device", "cpu")
    assert lonely.returncode == 1 and "needs at least two classes with usable images" in lonely.stderr
