"""metastudio.app.compare: every model cross-validated on a person's own examples (leave-one-out
or K-fold), each through the classifier session, one failing model never stopping the others."""

from __future__ import annotations

import json
import re
import threading
import time
import zipfile
from collections import Counter

import pytest

import faulty_plugins as fp
from conftest import make_class_tree

FAST = ("protonet-omniglot", "simpleshot-omniglot")


def _support(root):
    from metastudio.app.compare import read_support_folder

    return read_support_folder(root).support


def _run(host, support, names, **options):
    from metastudio.app.compare import candidate_models, compare_models

    return compare_models(host, support, candidate_models(names, host), device="cpu", **options)


# -- folds and the interval ------------------------------------------------------------------------


def test_leave_one_out_holds_out_each_example_once_and_keeps_the_classes_balanced():
    from metastudio.app.compare import make_folds

    sizes = [4, 4, 1, 3]
    folds = make_folds(sizes, "loo", seed=0)
    held = [pair for f in folds for pair in f.held_out]
    assert all(len(f.held_out) == 1 for f in folds)
    assert sorted(held) == [(c, i) for c, n in enumerate(sizes) if n >= 2 for i in range(n)]
    for fold in folds:
        (c, i), = fold.held_out
        # one example of every other class that can spare one; none of the held-out's class
        assert sorted(k for k, _ in fold.set_aside) == [k for k, n in enumerate(sizes) if n >= 2 and k != c]
        assert all(0 <= j < sizes[k] for k, j in fold.set_aside)
    # the single example of class 2 is always adapted to; each example of class 0 is set aside in turn
    assert not any(k == 2 for f in folds for k, _ in f.held_out + f.set_aside)
    aside = Counter(j for f in folds for k, j in f.set_aside if k == 0)
    assert set(aside) == set(range(4)) and max(aside.values()) - min(aside.values()) <= 1
    assert make_folds(sizes, "loo", seed=0) == folds
    assert all(f.set_aside == () for f in make_folds(sizes, "loo", balanced=False))


def test_k_fold_is_stratified_and_fixed_by_its_seed():
    from metastudio.app.compare import make_folds

    sizes = [5, 4, 1, 6]
    folds = make_folds(sizes, 3, seed=7)
    assert len(folds) == 3
    held = [pair for f in folds for pair in f.held_out]
    assert sorted(held) == [(c, i) for c, n in enumerate(sizes) if n >= 2 for i in range(n)]
    for fold in folds:
        per_class = Counter(c for c, _ in fold.held_out)
        for c, n in enumerate(sizes):
            if n >= 2:  # its share of the fold, never all of it
                assert per_class[c] in (n // 3, -(-n // 3)) and per_class[c] < n
        assert per_class[2] == 0 and fold.set_aside == ()
    assert make_folds(sizes, 3, seed=7) == folds
    assert any(make_folds(sizes, 3, seed=s) != folds for s in range(1, 6))
    assert len(make_folds([2, 3], 10)) == 3  # no empty folds


def test_parse_folds_and_the_wilson_interval():
    from metastudio.app.compare import parse_folds, wilson_interval

    assert parse_folds("LOO") == "loo" and parse_folds("5") == 5 and parse_folds(2) == 2
    for bad in ("1", "0", "many"):
        with pytest.raises(ValueError, match="loo"):
            parse_folds(bad)
    # Published values (Newcombe 1998, Table I): 0/10 -> 0 to 0.2775, 5/10 -> 0.2366 to 0.7634.
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    low, high = wilson_interval(25, 25)
    assert high == 1.0 and 0.85 < low < 0.9  # all right still leaves room for doubt
    with pytest.raises(ValueError):
        wilson_interval(0, 0)


# -- the use case ------------------------------------------------------------------------------


def test_leave_one_out_scores_every_model_on_every_usable_example(host, tmp_path):
    from metastudio.app.compare import ModelComparison, candidate_models

    root = make_class_tree(tmp_path / "ex", classes=3, per_class=4, size=28)
    (root / "lonely").mkdir()
    make_class_tree(tmp_path / "one", classes=1, per_class=1, size=28)
    (tmp_path / "one" / "class00" / "img000.png").rename(root / "lonely" / "only.png")
    (root / "class01" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    seen = []
    comparison = ModelComparison(host, _support(root), candidate_models(FAST, host), device="cpu",
                                 progress=seen.append)
    result = comparison.run()
    assert result.classes == ["class00", "class01", "class02", "lonely"]
    assert result.examples == 13 and result.held_out == 12 and result.adaptations == 12
    for score in result.scores:
        assert score.status == "ok", score.reason
        assert score.predicted == 12 and score.adaptations == 12 and 0 <= score.correct <= 12
        assert score.accuracy == pytest.approx(100 * score.correct / 12)
        assert score.ci95_low <= score.accuracy <= score.ci95_high
        assert score.adapt_seconds > 0 and score.seconds_per_image > 0
    assert any("'lonely' has a single example" in n for n in result.notes)
    assert any("broken.png" in n and n.startswith("left out") for n in result.notes)
    best = max(result.scores, key=lambda s: s.correct)
    assert result.best == best.name and result.verdict.startswith(f"Best: {best.name}, right on {best.correct} of 12")
    # progress: each fold of each model, then its row
    assert [(p.model, p.folds_done) for p in seen if p.score is None] == [(m, f) for m in FAST for f in range(12)]
    assert [p.score.name for p in seen if p.score is not None] == list(FAST)
    json.dumps(result.as_dict())  # plain values
    again = _run(host, _support(root), FAST)
    assert [s.correct for s in again.scores] == [s.correct for s in result.scores]


def test_k_fold_predicts_every_example_once_over_k_adaptations(host, tmp_path):
    root = make_class_tree(tmp_path / "ex", classes=3, per_class=5, size=28)
    result = _run(host, _support(root), FAST[:1], folds=3, seed=4)
    (score,) = result.scores
    assert (result.folds, result.seed, result.adaptations, result.held_out) == (3, 4, 3, 15)
    assert score.status == "ok" and score.adaptations == 3 and score.predicted == 15


def test_a_model_that_cannot_serve_the_examples_is_listed_with_why_and_the_others_run(host, tmp_path, monkeypatch):
    from metastudio.app.compare import candidate_models

    models = tmp_path / "models"
    models.mkdir()
    (models / "broken.safetensors").write_bytes(b"not a model file")
    monkeypatch.setenv("METASTUDIO_MODELS_DIR", str(models))
    everything = [c.name for c in candidate_models(None, host)]
    assert "broken" in everything and "photos" in everything and "protonet-omniglot" in everything
    root = make_class_tree(tmp_path / "ex", classes=6, per_class=2, size=28)
    result = _run(host, _support(root), ["broken", "mann-omniglot", "protonet-omniglot"])
    broken, mann, protonet = result.scores
    assert broken.status == "unusable" and broken.reason.startswith("cannot be loaded: ") and "broken" in broken.reason
    assert mann.status == "unusable" and "at most 5 classes apart" in mann.reason and "6 classes" in mann.reason
    assert mann.adaptations == broken.adaptations == 0
    assert protonet.status == "ok" and protonet.predicted == 12
    assert result.best == "protonet-omniglot"


def test_a_failing_or_hanging_plugin_fails_its_row_only(host, tmp_path, monkeypatch):
    from metastudio.app.compare import Candidate, ModelComparison, candidate_models, compare_models
    from metastudio.plugins import get_host, reset_host

    site = tmp_path / "site"
    fp.install(site, monkeypatch, kinds=("raising_adapt", "hanging_adapt"))
    reset_host()
    paths = {k: fp.make_model(site, k, tmp_path / f"{k}.safetensors", tmp_path) for k in ("raising_adapt", "hanging_adapt")}
    registry = get_host()
    candidates = [Candidate(k, p) for k, p in paths.items()] + candidate_models(FAST[:1], registry)
    root = make_class_tree(tmp_path / "ex", classes=2, per_class=3, size=28)
    try:
        result = compare_models(registry, _support(root), candidates, device="cpu", time_limit=1.0)
        # Cancel (the app's button, from another thread) while the hanging plugin call runs.
        comparison = ModelComparison(registry, _support(root), candidates[1:], device="cpu")
        threading.Timer(0.5, comparison.cancel).start()
        started = time.perf_counter()
        cancelled = comparison.run()
        waited = time.perf_counter() - started
    finally:
        fp.release()
    raising, hanging, protonet = result.scores
    assert raising.status == "failed" and raising.reason.startswith("failed after 0 of 6 adaptations")
    assert fp.RAISED["raising_adapt"] in raising.reason and fp.origin_words("raising_adapt") in raising.reason
    assert hanging.status == "failed" and "did not finish within 1 s" in hanging.reason
    assert fp.origin_words("hanging_adapt") in hanging.reason
    assert protonet.status == "ok" and protonet.predicted == 6 and result.best == protonet.name
    assert [(s.status, s.reason) for s in cancelled.scores] == [("cancelled", "cancelled after 0 of 6 adaptations"),
                                                                ("cancelled", "not run: cancelled")]
    assert cancelled.cancelled and waited < 5


def test_cancel_stops_the_model_being_scored_and_runs_no_other(host, tmp_path):
    from metastudio.app.compare import ModelComparison, candidate_models

    root = make_class_tree(tmp_path / "ex", classes=2, per_class=4, size=28)
    comparison = ModelComparison(host, _support(root), candidate_models(FAST, host), device="cpu")

    def progress(p):
        if p.folds_done == 2:
            comparison.cancel()

    comparison.progress = progress
    result = comparison.run()
    first, second = result.scores
    assert first.status == "cancelled" and first.reason == "cancelled after 2 of 8 adaptations"
    assert second.status == "cancelled" and second.reason == "not run: cancelled" and second.adaptations == 0
    assert result.cancelled and result.best is None and "cancelled" in result.verdict


def test_the_photos_model_embeds_each_image_once_for_all_its_folds(host, tmp_path):
    from metastudio.app.compare import ModelComparison, candidate_models

    root = make_class_tree(tmp_path / "ex", classes=3, per_class=3, size=48)
    comparison = ModelComparison(host, _support(root), candidate_models(["photos"], host), device="cpu")
    (score,) = comparison.run().scores
    assert score.status == "ok" and score.predicted == 9 and score.adaptations == 9
    cache = comparison.session.algorithm.feature_cache
    # 9 adaptations to 6 images each (2 a class) and 9 predictions: each image's first look-up
    # embeds it, every later one is a hit
    assert cache.misses == 9 and cache.hits == 9 * 6 + 9 - 9


def test_candidates_support_folders_and_what_cannot_be_compared(host, tmp_path):
    from metastudio.app.compare import ModelComparison, candidate_models, read_support_folder
    from metastudio.errors import CheckpointError, MetaStudioError

    assert {c.name for c in candidate_models(["*-omniglot"], host)} >= {"protonet-omniglot", "mann-omniglot"}
    assert all(c.name.endswith("-omniglot") and c.path.is_file() for c in candidate_models(["*-omniglot"], host))
    with pytest.raises(CheckpointError, match=re.escape("no model's name matches 'nothing-*' (models: ")):
        candidate_models(["nothing-*"], host)
    with pytest.raises(CheckpointError, match="model 'no-such-model' not found"):
        candidate_models(["no-such-model"], host)
    root = make_class_tree(tmp_path / "ex", classes=2, per_class=2, size=28)
    archive = tmp_path / "ex.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted(root.rglob("*.png")):
            zf.write(f, f.relative_to(root).as_posix())
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    from_zip = read_support_folder(archive, unpack_to=unpacked)
    assert [(n, len(items)) for n, items in from_zip.support] == [("class00", 2), ("class01", 2)]
    assert all(path.is_file() and str(archive) in image_id for _, items in from_zip.support for image_id, path in items)
    with pytest.raises(MetaStudioError, match="at least two classes"):
        ModelComparison(host, _support(root)[:1], [], device="cpu")
    singles = [(name, items[:1]) for name, items in _support(root)]
    with pytest.raises(MetaStudioError, match="single example"):
        ModelComparison(host, singles, [], device="cpu")


def test_balanced_leave_one_out_is_fair_to_a_model_that_adapts_by_gradient_steps(host, tmp_path):
    # MAML adapts with one large step: a class one example short of the others is nearly never
    # predicted, which plain leave-one-out does to every held-out example's class.
    root = make_class_tree(tmp_path / "ex", classes=3, per_class=3, size=28)
    balanced, = _run(host, _support(root), ["maml-omniglot"]).scores
    plain, = _run(host, _support(root), ["maml-omniglot"], balanced=False).scores
    assert balanced.predicted == plain.predicted == 9
    assert balanced.correct >= 7 and plain.correct <= 2


def test_the_verdict_names_ties_and_models_within_the_margin_of_error():
    from metastudio.app.compare import Comparison, ModelScore, best_model, wilson_interval

    def scored(name, correct, adapt):
        low, high = wilson_interval(correct, 20)
        return ModelScore(name, name, "ok", correct=correct, predicted=20, accuracy=5.0 * correct, ci95_low=100 * low,
                          ci95_high=100 * high, adapt_seconds=adapt, seconds_per_image=0.001)

    scores = [scored("slow", 19, 0.5), scored("quick", 19, 0.01), scored("close", 17, 0.01), scored("poor", 5, 0.01),
              ModelScore("gone", "gone", "unusable", "cannot be loaded: no such file")]
    assert best_model(scores).name == "quick"
    said = Comparison("loo", 0, ["a", "b"], 20, 20, scores, "quick").verdict
    assert said.startswith("Best: quick, right on 19 of 20 held-out examples (95.0 %, 95 % interval 76.4 to 99.1 %); "
                           "as accurate as slow, and faster.")
    assert "close is within the margin of error" in said and "poor" not in said
    nothing = Comparison("loo", 0, ["a", "b"], 20, 20, scores[-1:], None)
    assert nothing.verdict == "No best model: no model could be scored on these examples."
