#!/usr/bin/env python
"""Unsure predictions with the photos model: how many out-of-domain images are marked unsure,
and how many photos of the person's own classes are.

Measure (the default): 5-way 5-shot draws of mini-ImageNet **val** classes (20 fixed draws),
each with 20 query photos per class (100 in-class) and 100 out-of-domain images, 25 of each
kind: Omniglot characters of the *evaluation* alphabets, random noise, flat colours and tiny
images (sides of 1 to 15 pixels, shrunk photos, noise and colours). For each rule it reports the
fraction marked unsure per kind, the fraction of in-class photos marked unsure and the accuracy
on the in-class photos left; also the fraction of photos of the other val classes (not in the
draw) marked unsure, for information. The rules:

- ``app``: what the app does: too small to recognise (``openset.MIN_SIDE``), else the distance
  rule of the protonet learner (``Learner.predict_open_set``);
- ``distance``: the distance rule alone;
- ``max-probability``: the plain maximum-probability rule (``openset.CONFIDENCE_THRESHOLD``);
- ``max-probability+size``: that, with the size check;
- ``distance-normalised``: for comparison, the distance rule on the features after the last
  L2-normalisation of power-cl2n instead of before it (``NORMALISED_THRESHOLD``).

``--calibrate`` computes the constants of ``metastudio/algorithms/openset.py`` on held-out data
only: mini-ImageNet **train** classes (images 60-84 of each class; the photos model's centring
mean used images 0-59) in 2- and 5-way episodes with 1, 2, 5 and 10 shots, and shows the rates
on out-of-domain images of other seeds and Omniglot's *background* alphabets.
``--size-sweep`` measures the 16-way accuracy on val photos shrunk to a few sizes (for
``MIN_SIDE``). Every run prints one JSON line and writes it to ``--out``.

Everything runs through the product's code (``load_model``, ``adapt``, ``predict_open_set``,
``load_sized_array``) on the CPU with one thread; the frozen backbone's features are cached
(``metastudio.data.feature_cache``), so a second run takes seconds.

    python benchmarks/harnesses/openset_photos.py --data ../shared/data
    python benchmarks/harnesses/openset_photos.py --data ../shared/data --calibrate
    python benchmarks/harnesses/openset_photos.py --data ../shared/data --size-sweep
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import platform
import time
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from metastudio.algorithms import openset
from metastudio.algorithms.base import Algorithm
from metastudio.app.catalogue import resolve_model
from metastudio.data.episodes import SupportSet
from metastudio.data.feature_cache import FeatureCache
from metastudio.data.images import load_image, load_sized_array
from metastudio.engine.checkpoint import load_model
from metastudio.plugins import get_host

from common import cpu_name, cpu_results_dir, write_json

OOD_KINDS = ("omniglot", "noise", "flat", "tiny")
RULES = ("app", "distance", "max-probability", "max-probability+size", "distance-normalised")
#: For comparison only, not what the app does: the distance rule on the features after power-cl2n's
#: last L2-normalisation (those the prototypes classify with), unsure above this ratio: the 95th
#: percentile of its in-class ratios in the --calibrate episodes, as for openset.DISTANCE_THRESHOLD.
NORMALISED_THRESHOLD = 1.32


# -- images ---------------------------------------------------------------------------------------
def png(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array.astype(np.uint8)).save(out, format="PNG")
    return out.getvalue()


def mini_imagenet(root: Path, split: str, first: int, last: int) -> dict[str, list[bytes]]:
    """The files first..last-1 (sorted by name) of each class of mini-ImageNet's split zip."""
    with zipfile.ZipFile(root / f"{split}.zip") as z:
        names: dict[str, list[str]] = {}
        for n in sorted(z.namelist()):
            if n.lower().endswith(".jpg"):
                names.setdefault(n.split("/")[1], []).append(n)
        return {c: [z.read(n) for n in files[first:last]] for c, files in sorted(names.items())}


def omniglot(root: Path, which: str, count: int, seed: int) -> list[bytes]:
    with zipfile.ZipFile(root / f"images_{which}.zip") as z:
        names = sorted(n for n in z.namelist() if n.endswith(".png"))
        pick = np.random.default_rng(seed).choice(len(names), count, replace=False)
        return [z.read(names[i]) for i in pick]


def noise(count: int, seed: int) -> list[bytes]:
    """Uniform, Gaussian and blurred colour noise of random sizes."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        h, w = (int(v) for v in rng.integers(32, 400, 2))
        if i % 3 == 0:
            a = rng.integers(0, 256, (h, w, 3))
        elif i % 3 == 1:
            a = np.clip(rng.normal(128, rng.uniform(10, 80), (h, w, 3)), 0, 255)
        else:
            small = rng.integers(0, 256, (int(rng.integers(2, 12)), int(rng.integers(2, 12)), 3)).astype(np.uint8)
            a = np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BILINEAR))
        out.append(png(a))
    return out


def flat(count: int, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        h, w = (int(v) for v in rng.integers(32, 1200, 2))
        out.append(png(np.broadcast_to(rng.integers(0, 256, 3), (h, w, 3))))
    return out


def tiny(count: int, seed: int, photos: list[bytes]) -> list[bytes]:
    """Images with sides of 1 to 15 pixels: shrunk photos, noise and flat colours, and a 1x1."""
    rng = np.random.default_rng(seed)
    out = [png(np.full((1, 1, 3), 200))]
    while len(out) < count:
        w, h = (int(v) for v in rng.integers(1, 16, 2))
        kind = len(out) % 3
        if kind == 0:
            photo = load_image(photos[int(rng.integers(len(photos)))]).resize((w, h), Image.Resampling.LANCZOS)
            a = np.asarray(photo)
        elif kind == 1:
            a = rng.integers(0, 256, (h, w, 3))
        else:
            a = np.broadcast_to(rng.integers(0, 256, 3), (h, w, 3))
        out.append(png(a))
    return out


# -- features -------------------------------------------------------------------------------------
class Embedder:
    """The photos model and raw backbone features of image files (cached), with their sizes."""

    def __init__(self):
        self.algorithm = load_model(resolve_model("photos"), get_host()).algorithm
        self.algorithm.feature_cache = FeatureCache()
        self.loaded = 0

    @torch.inference_mode()
    def __call__(self, files: list[bytes]) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        algo, size = self.algorithm, self.algorithm.image_size
        arrays, sizes = zip(*(load_sized_array(f, size, fit=algo.fit) for f in files))
        x = torch.from_numpy(np.stack(arrays))
        with algo.evaluating():
            raw = torch.cat([Algorithm.embed(algo, x[i : i + 64]) for i in range(0, len(x), 64)])
        self.loaded += len(files)
        return raw, list(sizes)


def adapt(algo, raw: torch.Tensor, ways: int):
    """A learner adapted to support features [ways * shots, D] grouped by class, and the distance
    rule fitted on the normalised features (the comparison ``distance-normalised``)."""
    labels = torch.arange(ways).repeat_interleave(len(raw) // ways)
    learner = algo.adapt(SupportSet(raw, labels, tuple(f"class{j}" for j in range(ways))))
    return learner, openset.fit_distance_rule(algo.embed_open_set(raw)[0], labels, ways)


def rule_flags(adapted, raw: torch.Tensor, sizes, image_size: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Which images each rule marks unsure, and the predicted classes."""
    learner, normalised = adapted
    prediction = learner.predict_open_set(raw)
    assert prediction.rule == "distance"
    small = np.array([openset.too_small_reason(w, h, image_size) is not None for w, h in sizes])
    msp = openset.max_probability_prediction(prediction.probabilities).unsure.numpy()
    distance = prediction.unsure.numpy()
    far = (normalised.ratios(learner.algorithm.embed_open_set(raw)[0]) > NORMALISED_THRESHOLD).numpy()
    flags = {"app": small | distance, "distance": distance, "max-probability": msp, "max-probability+size": small | msp,
             "distance-normalised": far}
    return flags, prediction.probabilities.argmax(1).numpy()


# -- measure --------------------------------------------------------------------------------------
def measure(args, embed: Embedder) -> dict:
    mini = Path(args.data) / "mini-imagenet"
    val = mini_imagenet(mini, "val", 0, args.pool)
    classes = sorted(val)
    features = {c: embed(val[c])[0] for c in classes}
    photos_for_tiny = [f for files in mini_imagenet(mini, "val", 40, 42).values() for f in files]
    ood_files = {"omniglot": omniglot(Path(args.data) / "omniglot", "evaluation", args.ood_pool, 2),
                 "noise": noise(args.ood_pool, 12), "flat": flat(args.ood_pool, 22),
                 "tiny": tiny(args.ood_pool, 32, photos_for_tiny)}
    ood = {k: embed(v) for k, v in ood_files.items()}
    algo, size = embed.algorithm, embed.algorithm.image_size
    groups = ("in", "other", *OOD_KINDS)
    unsure = {g: dict.fromkeys(RULES, 0) for g in groups}  # images marked unsure, per group and rule
    seen = dict.fromkeys(groups, 0)
    right_and_sure, sure, right = dict.fromkeys(RULES, 0), dict.fromkeys(RULES, 0), 0

    def tally(group: str, flags: dict[str, np.ndarray]) -> None:
        seen[group] += len(flags["app"])
        for r in RULES:
            unsure[group][r] += int(flags[r].sum())

    for draw in range(args.draws):
        rng = np.random.default_rng([args.seed, draw])
        chosen = [classes[i] for i in rng.choice(len(classes), args.ways, replace=False)]
        orders = [rng.permutation(args.pool) for _ in chosen]
        support = torch.cat([features[c][o[: args.shots]] for c, o in zip(chosen, orders)])
        queries = torch.cat([features[c][o[args.shots : args.shots + args.queries]] for c, o in zip(chosen, orders)])
        learner = adapt(algo, support, args.ways)
        flags, predicted = rule_flags(learner, queries, [(size, size)] * len(queries), size)
        tally("in", flags)
        correct = predicted == np.repeat(np.arange(args.ways), args.queries)
        right += int(correct.sum())
        for r in RULES:
            right_and_sure[r] += int((correct & ~flags[r]).sum())
            sure[r] += int((~flags[r]).sum())
        others = [c for c in classes if c not in chosen]  # photos of classes the person does not have
        other = torch.stack([features[others[int(rng.integers(len(others)))]][int(rng.integers(args.pool))]
                             for _ in range(args.queries)])
        tally("other", rule_flags(learner, other, [(size, size)] * len(other), size)[0])
        for kind in OOD_KINDS:
            raw, sizes = ood[kind]
            pick = rng.choice(len(raw), args.ood_per_kind, replace=False)
            tally(kind, rule_flags(learner, raw[pick], [sizes[i] for i in pick], size)[0])
    total_ood = sum(seen[k] for k in OOD_KINDS)
    return {
        "in_class_unsure": {r: unsure["in"][r] / seen["in"] for r in RULES},
        "out_of_domain_unsure": {r: sum(unsure[k][r] for k in OOD_KINDS) / total_ood for r in RULES},
        "out_of_domain_unsure_by_kind": {k: {r: unsure[k][r] / seen[k] for r in RULES} for k in OOD_KINDS},
        "other_val_classes_unsure": {r: unsure["other"][r] / seen["other"] for r in RULES},
        "accuracy_on_sure_in_class": {r: right_and_sure[r] / max(sure[r], 1) for r in RULES},
        "accuracy_on_all_in_class": right / seen["in"],
        "images": {"in_class": seen["in"], "out_of_domain": total_ood, "per_kind": {k: seen[k] for k in OOD_KINDS},
                   "other_val_classes": seen["other"]},
        "protocol": {"ways": args.ways, "shots": args.shots, "queries_per_class": args.queries, "draws": args.draws,
                     "seed": args.seed, "val_images_per_class": args.pool, "ood_pool_per_kind": args.ood_pool,
                     "ood_per_kind_per_draw": args.ood_per_kind,
                     "omniglot": "images_evaluation (alphabets never used for calibration)"},
    }


# -- calibrate ------------------------------------------------------------------------------------
def spread_ratio(algo, features: dict[str, torch.Tensor]) -> float:
    """Within-class over between-class variance of train classes in the rule's feature space
    (what ``openset.SPREAD_RATIO`` is), the class means' own noise taken out of the latter."""
    z = [algo.embed_open_set(f)[1].double() for f in features.values()]
    means = torch.stack([x.mean(0) for x in z])
    within = sum(float((x - x.mean(0)).pow(2).sum()) for x in z) / sum(len(x) - 1 for x in z)
    i, j = torch.triu_indices(len(means), len(means), 1)
    between = float((means[i] - means[j]).pow(2).sum(1).mean()) / 2 - within / np.mean([len(x) for x in z])
    return within / between


def calibration_scores(algo, features, ood, ways, shots, episodes, rng):
    """In-class and out-of-domain distance ratios (also on the normalised features) and
    confidences over episodes of train classes."""
    classes = sorted(features)
    per_class = min(len(f) for f in features.values())
    keys = ("ratio", "ratio_normalised", "confidence")
    ins = {k: [] for k in keys}
    outs = {name: {k: [] for k in keys} for name in ood}
    for _ in range(episodes):
        chosen = rng.choice(len(classes), ways, replace=False)
        support, queries = [], []
        for c in chosen:
            order = rng.permutation(per_class)
            support.append(features[classes[c]][order[:shots]])
            queries.append(features[classes[c]][order[shots:]])
        learner, normalised = adapt(algo, torch.cat(support), ways)
        batches = {"in": torch.cat(queries), **{k: v[rng.choice(len(v), 20, replace=False)] for k, v in ood.items()}}
        for name, x in batches.items():
            p = learner.predict_open_set(x)
            target = ins if name == "in" else outs[name]
            target["ratio"].append((p.scores * openset.DISTANCE_THRESHOLD).numpy())
            target["ratio_normalised"].append(normalised.ratios(algo.embed_open_set(x)[0]).numpy())
            target["confidence"].append(openset.confidence_above_chance(p.probabilities).numpy())
    cat = lambda d: {k: np.concatenate(v) for k, v in d.items()}  # noqa: E731
    return cat(ins), {k: cat(v) for k, v in outs.items()}


def rates(scores: dict[str, np.ndarray]) -> dict[str, float]:
    """Fractions marked unsure by each rule, from calibration_scores' ratios and confidences."""
    return {"distance": float(np.mean(scores["ratio"] > openset.DISTANCE_THRESHOLD)),
            "max-probability": float(np.mean(scores["confidence"] < openset.CONFIDENCE_THRESHOLD)),
            "distance-normalised": float(np.mean(scores["ratio_normalised"] > NORMALISED_THRESHOLD))}


def calibrate(args, embed: Embedder) -> dict:
    mini, omni = Path(args.data) / "mini-imagenet", Path(args.data) / "omniglot"
    train = mini_imagenet(mini, "train", 60, 60 + args.calibration_per_class)
    features = {c: embed(files)[0] for c, files in train.items()}
    ood = {"omniglot": embed(omniglot(omni, "background", args.ood_pool, 1))[0],
           "noise": embed(noise(args.ood_pool, 11))[0], "flat": embed(flat(args.ood_pool, 21))[0]}
    algo = embed.algorithm
    rng = np.random.default_rng(args.seed)
    settings = {f"{w}-way {s}-shot": calibration_scores(algo, features, ood, w, s, args.calibration_episodes, rng)
                for w in (2, 5) for s in (1, 2, 5, 10)}
    n = min(len(ins["ratio"]) for ins, _ in settings.values())  # every setting weighs the same
    pooled = {k: np.concatenate([rng.choice(ins[k], n, replace=False) for ins, _ in settings.values()])
              for k in ("ratio", "ratio_normalised", "confidence")}
    q = args.in_class_rate
    thresholds = {"distance": float(np.quantile(pooled["ratio"], 1 - q)),
                  "distance_normalised": float(np.quantile(pooled["ratio_normalised"], 1 - q)),
                  "confidence": float(np.quantile(pooled["confidence"], q))}
    report = {}
    for name, (ins, outs) in settings.items():
        report[name] = {
            "distance_95th_percentile": float(np.quantile(ins["ratio"], 1 - q)),
            "confidence_5th_percentile": float(np.quantile(ins["confidence"], q)),
            "in_class_unsure": rates(ins),
            "out_of_domain_unsure": {k: rates(o) for k, o in outs.items()},
        }
    # How far images lie from the base photos' mean before the last normalisation (5th, 50th, 95th percentiles).
    def far(raw: torch.Tensor) -> list[float]:
        return np.percentile(algo.embed_open_set(raw)[1].norm(dim=1).numpy(), [5, 50, 95]).round(3).tolist()

    distance_to_mean = {"photos": far(torch.cat(list(features.values()))), **{k: far(v) for k, v in ood.items()}}
    return {"calibrated": {**thresholds, "spread_ratio": spread_ratio(algo, features)},
            "distance_to_base_mean_percentiles_5_50_95": distance_to_mean,
            "in_use": {"distance": openset.DISTANCE_THRESHOLD, "confidence": openset.CONFIDENCE_THRESHOLD,
                       "distance_normalised": NORMALISED_THRESHOLD,
                       "spread_ratio": openset.SPREAD_RATIO, "prior_weight": openset.PRIOR_WEIGHT},
            "target_in_class_rate": q, "settings": report,
            "data": {"mini-imagenet": f"train, images 60-{59 + args.calibration_per_class} of each of 64 classes",
                     "omniglot": "images_background", "noise_seed": 11, "flat_seed": 21,
                     "episodes_per_setting": args.calibration_episodes}}


# -- size sweep -----------------------------------------------------------------------------------
def size_sweep(args, embed: Embedder) -> dict:
    """16-way accuracy with 5 full-size examples per val class, on val photos shrunk to s x s."""
    val = mini_imagenet(Path(args.data) / "mini-imagenet", "val", 0, 17)
    classes = sorted(val)
    algo, size = embed.algorithm, embed.algorithm.image_size
    learner, _ = adapt(algo, torch.cat([embed(val[c][:5])[0] for c in classes]), len(classes))
    truth = np.repeat(np.arange(len(classes)), 12)
    out = {}
    for side in (None, 48, 32, 24, 16, 12, 8, 4):
        files = [f for c in classes for f in val[c][5:17]]
        if side is not None:
            files = [png(np.asarray(load_image(f).resize((side, side), Image.Resampling.LANCZOS))) for f in files]
        raw, sizes = embed(files)
        p = learner.predict_open_set(raw)
        small = np.array([openset.too_small_reason(w, h, size) is not None for w, h in sizes])
        out["full (84)" if side is None else str(side)] = {
            "accuracy": float(np.mean(p.probabilities.argmax(1).numpy() == truth)),
            "distance_rule_unsure": float(p.unsure.float().mean()), "too_small": float(small.mean())}
    return {"sizes": out, "ways": len(classes), "support": "5 full-size photos per class (val images 0-4)",
            "queries": "val images 5-16 of each class, shrunk with Lanczos, saved as PNG, loaded as the app does"}


# -- main -----------------------------------------------------------------------------------------
def machine() -> dict:
    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "cpu": cpu_name(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="../shared/data", help="folder with mini-imagenet/ and omniglot/")
    p.add_argument("--calibrate", action="store_true", help="compute the thresholds on held-out data instead")
    p.add_argument("--size-sweep", action="store_true", help="accuracy on shrunk photos instead")
    p.add_argument("--draws", type=int, default=20)
    p.add_argument("--ways", type=int, default=5)
    p.add_argument("--shots", type=int, default=5)
    p.add_argument("--queries", type=int, default=20, help="in-class query photos per class and draw")
    p.add_argument("--pool", type=int, default=30, help="val images per class to draw support and queries from")
    p.add_argument("--ood-pool", type=int, default=60, help="out-of-domain images made per kind")
    p.add_argument("--ood-per-kind", type=int, default=25, help="out-of-domain images per kind and draw")
    p.add_argument("--calibration-per-class", type=int, default=25)
    p.add_argument("--calibration-episodes", type=int, default=200)
    p.add_argument("--in-class-rate", type=float, default=0.05, help="--calibrate: in-class photos to mark unsure")
    p.add_argument("--seed", type=int, default=20261203)
    p.add_argument("--out", default=None,
                   help="JSON file (default: benchmarks/results/cpu-<cores>core/openset-photos[-MODE]-DATE.json)")
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.set_grad_enabled(False)
    start = time.perf_counter()
    embed = Embedder()
    mode = "calibration" if args.calibrate else "sizes" if args.size_sweep else None
    run = calibrate if args.calibrate else size_sweep if args.size_sweep else measure
    result = run(args, embed)
    result = {"benchmark": "openset-photos" + (f"-{mode}" if mode else ""), "model": "photos", **result,
              "thresholds": {"distance": openset.DISTANCE_THRESHOLD, "confidence": openset.CONFIDENCE_THRESHOLD,
                             "min_side": openset.MIN_SIDE},
              "images_loaded": embed.loaded, "seconds": round(time.perf_counter() - start, 1), "machine": machine()}
    line = json.dumps(result)
    print(line)
    day = datetime.date.today().isoformat()
    write_json(args.out or cpu_results_dir() / f"openset-photos{'-' + mode if mode else ''}-{day}.json", result)


if __name__ == "__main__":
    main()
