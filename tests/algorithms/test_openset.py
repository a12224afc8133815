"""Unsure predictions (open set): the distance rule of Prototypical Networks, the
maximum-probability fallback of every other learner, images too small to recognise, and how
the session, the CSV export and ``metastudio classify`` report them."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from metastudio.algorithms import openset
from metastudio.data.episodes import stack_support

from conftest import class_pattern, make_class_tree, real_data

METASTUDIO = Path(sys.executable).with_name("metastudio")


def patterns(classes, count: int, size: int, rng, channels: int = 3) -> torch.Tensor:
    """uint8 [count * len(classes), C, size, size] images of the conftest class patterns."""
    return torch.from_numpy(np.stack([class_pattern(c, size, rng, channels).transpose(2, 0, 1)
                                      for c in classes for _ in range(count)]))


def noise_images(count: int, size: int, rng, channels: int = 3) -> torch.Tensor:
    return torch.from_numpy(rng.integers(0, 256, (count, channels, size, size)).astype(np.uint8))


def save_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8)).save(path)
    return path


# -- the rules, on their own ---------------------------------------------------------------------
@pytest.mark.parametrize("shots", [1, 2, 5])
def test_in_class_ratios_average_one_when_the_spread_prior_is_right(shots):
    """Isotropic Gaussian classes whose within-class variance is exactly spread_ratio times the
    between-class one: an image of a class lies, on average, at the distance the rule expects
    from its prototype (the 1 + 1/n term and the unbiased variance), with any number of shots."""
    gen = torch.Generator().manual_seed(shots)
    dim, ways, between, within = 64, 5, 1.0, 0.5  # per-coordinate variances
    means = torch.randn(200, ways, dim, generator=gen) * between ** 0.5
    ratios = []
    for m in means:
        support = (m.repeat_interleave(shots, 0) + torch.randn(ways * shots, dim, generator=gen) * within ** 0.5)
        labels = torch.arange(ways).repeat_interleave(shots)
        rule = openset.fit_distance_rule(support, labels, ways, spread_ratio=within / between)
        queries = m + torch.randn(ways, dim, generator=gen) * within ** 0.5
        d = ((queries - rule.prototypes) ** 2).sum(1)  # each query to its own prototype
        ratios.append(d / rule.expected)
    mean = float(torch.cat(ratios).mean())
    assert mean == pytest.approx(1.0, abs=0.08), mean
    # The variance itself: unbiased, per image, summed over coordinates.
    _, counts, s2 = openset.within_class_variance(support, labels, ways, prior_weight=0.0)
    if shots > 1:
        assert s2 == pytest.approx(dim * within, rel=0.35) and counts.tolist() == [shots] * ways


def test_the_distance_rule_needs_some_spread_and_scores_in_units_of_its_threshold():
    same = torch.ones(4, 8)
    assert openset.fit_distance_rule(same, torch.tensor([0, 0, 1, 1]), 2) is None  # identical images
    assert openset.fit_distance_rule(torch.randn(1, 8), torch.tensor([0]), 1) is None  # one image of one class
    feats = torch.tensor([[0.0, 0.0], [2.0, 0.0], [10.0, 0.0], [12.0, 0.0]])
    rule = openset.fit_distance_rule(feats, torch.tensor([0, 0, 1, 1]), 2, prior_weight=0.0)
    # s2 = (1 + 1 + 1 + 1) / (4 - 2) = 2, expected = 2 * (1 + 1/2) = 3 for both classes
    assert torch.allclose(rule.expected, torch.tensor([3.0, 3.0]))
    far = torch.tensor([[1.0, 30.0]])
    ratio = float(rule.ratios(far))
    assert ratio == pytest.approx(min(0.0 + 900.0, 100.0 + 900.0) / 3.0)  # prototypes (1, 0) and (11, 0)
    prediction = rule.predict(far, torch.tensor([[0.5, 0.5]]), threshold=2.0)
    assert prediction.rule == "distance" and float(prediction.scores) == pytest.approx(ratio / 2.0)
    assert prediction.unsure.tolist() == [True]
    assert rule.predict(torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.0]])).unsure.tolist() == [False]


def test_the_maximum_probability_rule():
    probs = torch.tensor([[0.2, 0.2, 0.2, 0.2, 0.2], [0.96, 0.01, 0.01, 0.01, 0.01], [0.44, 0.14, 0.14, 0.14, 0.14]])
    c = openset.confidence_above_chance(probs)
    assert torch.allclose(c, torch.tensor([0.0, 0.95, 0.3]), atol=1e-6)
    p = openset.max_probability_prediction(probs, threshold=0.34)
    assert p.rule == "max-probability" and p.unsure.tolist() == [True, False, True]
    assert torch.allclose(p.scores, (1 - c) / (1 - 0.34))
    assert torch.equal(p.probabilities, probs)
    assert openset.max_probability_prediction(probs, threshold=0.25).unsure.tolist() == [True, False, False]


def test_too_small_reasons():
    assert openset.too_small_reason(1, 1) == "too small to recognise (1×1 pixels)"
    assert openset.too_small_reason(10, 6) == "too small to recognise (10×6 pixels)"
    assert openset.too_small_reason(2000, 15) is not None
    assert openset.too_small_reason(16, 16) is None and openset.too_small_reason(640, 480) is None
    assert openset.too_small_reason(12, 12, image_size=12) is None  # as big as the model's input
    sizes = [(1, 1), (50, 50), (3, 90), (50, 50)]
    reasons = openset.unsure_reasons(["a", "b", "c", "d"], [False, True, True, False], sizes)
    assert reasons == {"a": "too small to recognise (1×1 pixels)", "b": openset.REASON_UNLIKE,
                       "c": "too small to recognise (3×90 pixels)"}


# -- learners -------------------------------------------------------------------------------------
def build(host, name: str, channels: int = 3, size: int = 32, **hparams):
    torch.manual_seed(0)
    cls = host.algorithm(name)
    return cls(host.backbone("conv4").build(channels, size), backbone_name="conv4", image_size=size,
               channels=channels, hparams=hparams).eval()


def test_protonet_marks_noise_unsure_and_its_classes_not(host, one_thread):
    rng = np.random.default_rng(0)
    algo = build(host, "protonet")
    learner = algo.adapt(stack_support([patterns([c], 4, 32, rng) for c in range(3)], ["a", "b", "c"]))
    queries = patterns(range(3), 8, 32, rng)
    prediction = learner.predict_open_set(queries)
    assert prediction.rule == "distance"
    assert torch.equal(prediction.probabilities, learner.predict_proba(queries))
    assert prediction.probabilities.argmax(1).tolist() == np.repeat(np.arange(3), 8).tolist()
    assert not prediction.unsure.any(), prediction.scores
    flat = torch.full((2, 3, 32, 32), 7, dtype=torch.uint8)
    strange = learner.predict_open_set(torch.cat([noise_images(6, 32, rng), flat]))
    assert strange.unsure.all(), strange.scores
    assert strange.probabilities.shape == (8, 3)


def test_protonet_keeps_its_rule_through_a_saved_learner_and_falls_back_without_it(host, tmp_path, one_thread):
    from metastudio.engine.checkpoint import load_model, save_model

    rng = np.random.default_rng(1)
    algo = build(host, "protonet", feature_transform="cl2n")
    algo.fit_feature_mean([patterns(range(6, 12), 3, 32, rng)])
    learner = algo.adapt(stack_support([patterns([c], 3, 32, rng) for c in range(2)], ["a", "b"]))
    queries = torch.cat([patterns([0, 1], 3, 32, rng), noise_images(3, 32, rng)])
    before = learner.predict_open_set(queries)
    assert before.unsure.tolist() == [False] * 6 + [True] * 3, before.scores
    save_model(algo, tmp_path / "m.safetensors", learner=learner)
    restored = load_model(tmp_path / "m.safetensors", host).learner
    after = restored.predict_open_set(queries)
    assert after.rule == "distance" and torch.allclose(after.scores, before.scores, atol=1e-5)
    old = algo.restore_learner(["a", "b"], {"prototypes": learner.prototypes})  # saved before the rule existed
    fallback = old.predict_open_set(queries)
    assert fallback.rule == "max-probability"
    assert torch.equal(fallback.unsure, openset.max_probability_prediction(old.predict_proba(queries)).unsure)


@pytest.mark.parametrize("name", ["matchingnet", "maml"])
def test_a_learner_without_an_embedding_rule_falls_back_to_max_probability(host, name, one_thread):
    rng = np.random.default_rng(2)
    hparams = {"adapt_steps": 2} if name == "maml" else {}
    algo = build(host, name, channels=1, size=28, **hparams)
    learner = algo.adapt(stack_support([patterns([c], 2, 28, rng, channels=1) for c in range(3)], ["a", "b", "c"]))
    queries = torch.cat([patterns(range(3), 2, 28, rng, channels=1), noise_images(3, 28, rng, channels=1)])
    prediction = learner.predict_open_set(queries)
    probs = learner.predict_proba(queries)
    assert prediction.rule == "max-probability"
    assert torch.allclose(prediction.probabilities, probs, atol=1e-6)
    confidence = (probs.max(1).values - 1 / 3) / (1 - 1 / 3)
    assert prediction.unsure.tolist() == (confidence < openset.CONFIDENCE_THRESHOLD).tolist()
    assert prediction.scores.shape == (9,) and prediction.scores.dtype == torch.float32


# -- the session ----------------------------------------------------------------------------------
def query_files(tmp_path: Path, rng) -> dict[str, Path]:
    return {
        "tiny": save_png(tmp_path / "q" / "tiny.png", np.full((1, 1, 3), 90)),
        "strip": save_png(tmp_path / "q" / "strip.png", rng.integers(0, 256, (6, 10, 3))),
        "noise": save_png(tmp_path / "q" / "noise.png", rng.integers(0, 256, (40, 40, 3))),
        "in0": save_png(tmp_path / "q" / "in0.png", class_pattern(0, 32, rng)),
        "in1": save_png(tmp_path / "q" / "in1.png", class_pattern(1, 32, rng)),
    }


@pytest.mark.parametrize("model", ["protonet-omniglot", "matchingnet-omniglot"])
def test_the_session_reports_unsure_images_with_their_reason(host, tmp_path, model, one_thread):
    from metastudio.app.catalogue import resolve_model
    from metastudio.app.session import ClassifierSession

    session = ClassifierSession(host, "cpu")
    session.load(resolve_model(model))
    root = make_class_tree(tmp_path / "s", classes=2, per_class=4)
    support = [(f"class{c:02d}", [(f"{c}-{i}", root / f"class{c:02d}" / f"img{i:03d}.png") for i in range(4)])
               for c in range(2)]
    files = query_files(tmp_path, np.random.default_rng(3))
    result = session.run(support, list(files.items()))
    assert result.status == "ok" and set(result.probabilities) == set(files)  # unsure images keep their bars
    assert result.unsure["tiny"] == "too small to recognise (1×1 pixels)"
    assert result.unsure["strip"] == "too small to recognise (10×6 pixels)"
    if model == "protonet-omniglot":  # the distance rule; the fallback may or may not find noise unlike
        assert result.unsure["noise"] == "not like any of your classes"
        assert "in0" not in result.unsure and "in1" not in result.unsure
    plain = result.as_dict()
    assert plain["unsure"] == result.unsure
    assert json.loads(json.dumps(plain))["unsure"] == result.unsure  # plain values only


# -- the CSV and the command line -----------------------------------------------------------------
def test_predictions_csv_has_an_unsure_column_only_when_asked(tmp_path):
    from metastudio.engine.export import write_predictions_csv

    rows = [("a.png", [0.9, 0.1]), ("b.png", [0.4, 0.6])]
    plain = write_predictions_csv(tmp_path / "plain.csv", rows, ["cat", "dog"])
    assert next(csv.reader(plain.open(encoding="utf-8"))) == ["file", "predicted", "cat", "dog"]
    path = write_predictions_csv(tmp_path / "u.csv", rows, ["cat", "dog"], unsure={"b.png": openset.REASON_UNLIKE})
    table = list(csv.reader(path.open(encoding="utf-8", newline="")))
    assert table[0] == ["file", "predicted", "cat", "dog", "unsure"]
    assert table[1] == ["a.png", "cat", "0.900000", "0.100000", ""]
    assert table[2] == ["b.png", "dog", "0.400000", "0.600000", "not like any of your classes"]
    named = write_predictions_csv(tmp_path / "n.csv", rows, ["unsure", "dog"], unsure={})
    assert next(csv.reader(named.open(encoding="utf-8")))[-1] == "unsure (reason)"


def test_classify_shows_unsure_images_in_its_output_and_csv(tmp_path):
    assert METASTUDIO.exists(), f"the metastudio command is not installed at {METASTUDIO}"
    rng = np.random.default_rng(4)
    support = make_class_tree(tmp_path / "support", classes=3, per_class=3, size=28, seed=5)
    query_files(tmp_path, rng)
    out_csv = tmp_path / "p.csv"
    run = subprocess.run([str(METASTUDIO), "classify", "--model", "protonet-omniglot", "--support", str(support),
                          "--query", str(tmp_path / "q"), "--csv", str(out_csv), "--device", "cpu"],
                         capture_output=True, text=True, timeout=180, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr
    lines = {Path(path).stem: rest for path, rest in (line.split(None, 1) for line in run.stdout.strip().splitlines())}
    assert "unsure: too small to recognise (1×1 pixels)" in lines["tiny"] and "closest:" in lines["tiny"]
    assert "unsure: not like any of your classes" in lines["noise"]
    assert "unsure" not in lines["in0"] and "class00" in lines["in0"]
    rows = {Path(r["file"]).stem: r for r in csv.DictReader(out_csv.open(encoding="utf-8"))}
    assert list(next(iter(rows.values())))[-1] == "unsure"
    assert rows["tiny"]["unsure"] == "too small to recognise (1×1 pixels)"
    assert rows["strip"]["unsure"] == "too small to recognise (10×6 pixels)"
    assert rows["noise"]["unsure"] == "not like any of your classes"
    assert rows["in0"]["unsure"] == "" and rows["in0"]["predicted"] == "class00"
    assert rows["in1"]["unsure"] == "" and rows["in1"]["predicted"] == "class01"


# -- real data ------------------------------------------------------------------------------------
@pytest.mark.realdata
def test_photos_model_marks_characters_and_noise_unsure_but_not_photos_of_the_classes(host, one_thread):
    """A small sample of the benchmark (docs/benchmarks.md, "Unsure predictions"): 3 mini-ImageNet
    val classes with 5 photos each, 6 query photos per class, 10 Omniglot characters of the
    evaluation alphabets and 5 noise images."""
    from metastudio.app.catalogue import resolve_model
    from metastudio.engine.checkpoint import load_model
    from metastudio.data.images import load_sized_array

    val, omniglot = real_data("mini-imagenet", "val.zip"), real_data("omniglot", "images_evaluation.zip")
    algo = load_model(resolve_model("photos"), host).algorithm
    load = lambda data: load_sized_array(data, 224, fit="center-crop")[0]  # noqa: E731
    with zipfile.ZipFile(val) as z:
        names = sorted(n for n in z.namelist() if n.endswith(".jpg"))
        classes = sorted({n.split("/")[1] for n in names})[:3]
        per_class = [[load(z.read(n)) for n in names if n.split("/")[1] == c][:11] for c in classes]
    with zipfile.ZipFile(omniglot) as z:
        chars = sorted(n for n in z.namelist() if n.endswith(".png"))[::1300][:10]
        strange = [load(z.read(n)) for n in chars]
    rng = np.random.default_rng(5)
    strange += [load(save_png_bytes(rng.integers(0, 256, (120, 160, 3)))) for _ in range(5)]
    learner = algo.adapt(stack_support([torch.from_numpy(np.stack(p[:5])) for p in per_class], classes))
    photos = learner.predict_open_set(torch.from_numpy(np.stack([a for p in per_class for a in p[5:]])))
    others = learner.predict_open_set(torch.from_numpy(np.stack(strange)))
    assert int(photos.unsure.sum()) <= 2, photos.scores
    assert int(others.unsure.sum()) >= 14, others.scores
    assert float((photos.probabilities.argmax(1) == torch.arange(3).repeat_interleave(6)).float().mean()) >= 0.8


def save_png_bytes(array: np.ndarray) -> bytes:
    import io

    out = io.BytesIO()
    Image.fromarray(array.astype(np.uint8)).save(out, format="PNG")
    return out.getvalue()
