#!/usr/bin/env python
"""Latency of the photos model from files to probabilities, as the app uses it.

5 classes x 5 support photos plus 20 query photos, camera-sized JPEGs (1600x1200, generated
with texture and noise so that they compress like photos). The model is loaded once (as in the
running app). Each run starts with an empty feature cache and image store:

- cold: decode every file, embed every image, adapt, predict;
- +1 support image: one more photo is added to a class and everything is re-adapted and
  re-predicted, as the app does after a drop (only the new file is decoded and embedded).

Medians of --runs runs; peak resident memory of the process.

    python benchmarks/harnesses/photos_latency.py --runs 5 [--json out.json]
"""

from __future__ import annotations

import argparse
import datetime
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

from common import cpu_name, seconds_series, write_json


def make_photo(path: Path, cls: int, idx: int, size=(1600, 1200)) -> None:
    """A camera-like JPEG: a textured background and a class-specific object, with noise."""
    rng = np.random.default_rng(cls * 1000 + idx)
    base = np.random.default_rng(cls)
    w, h = size
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    bg = base.integers(40, 200, 3)
    img = np.empty((h, w, 3), np.float32)
    for c in range(3):
        img[..., c] = bg[c] + 40 * np.sin(xx / (50 + 30 * c) + idx) * np.cos(yy / 70)
    img += rng.normal(0, 8, img.shape)
    pic = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pic)
    colour = tuple(int(v) for v in base.integers(0, 255, 3))
    cx, cy = w // 2 + int(rng.integers(-300, 300)), h // 2 + int(rng.integers(-200, 200))
    r = int(base.integers(150, 350))
    if cls % 2:
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    else:
        draw.rectangle([cx - r, cy - r // 2, cx + r, cy + r // 2], fill=colour)
    pic.filter(ImageFilter.GaussianBlur(1.2)).save(path, quality=90)


def make_photo_set(folder: Path) -> tuple[dict[int, list[Path]], list[Path]]:
    """5 classes x 6 support photos (the 6th is the "+1" one) and 20 query photos (4 per class)."""
    support = {c: [] for c in range(5)}
    for c in range(5):
        for i in range(6):
            f = folder / f"class{c}_{i}.jpg"
            make_photo(f, c, i)
            support[c].append(f)
    queries = []
    for q in range(20):
        f = folder / f"query{q}.jpg"
        make_photo(f, q % 5, 100 + q)
        queries.append(f)
    return support, queries


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--model", default="photos")
    p.add_argument("--json", default=None)
    args = p.parse_args()

    from metastudio.app.catalogue import resolve_model
    from metastudio.data.episodes import stack_support
    from metastudio.data.feature_cache import FeatureCache
    from metastudio.data.imagestore import ImageStore
    from metastudio.engine.checkpoint import load_model
    from metastudio.plugins import get_host

    tmp = Path(tempfile.mkdtemp(prefix="metastudio-latency-"))
    support, queries = make_photo_set(tmp)
    jpeg_kib = statistics.mean(f.stat().st_size for f in queries) / 1024

    t = time.perf_counter()
    host = get_host()
    algo = load_model(resolve_model(args.model), host, "cpu").algorithm
    load_s = time.perf_counter() - t
    names = [f"class{c}" for c in range(5)]

    def run(store: ImageStore, shots: list[int]) -> torch.Tensor:
        per_class = [torch.from_numpy(np.stack([store.get(f) for f in support[c][: shots[c]]])) for c in range(5)]
        learner = algo.adapt(stack_support(per_class, names))
        return learner.predict_proba(torch.from_numpy(np.stack([store.get(f) for f in queries])))

    cold, warm = [], []
    for r in range(args.runs):
        algo.feature_cache = FeatureCache(tmp / f"features{r}")
        store = ImageStore(algo.image_size, algo.channels, algo.fit)
        t = time.perf_counter()
        probs = run(store, [5] * 5)
        cold.append(time.perf_counter() - t)
        t = time.perf_counter()
        probs = run(store, [6, 5, 5, 5, 5])
        warm.append(time.perf_counter() - t)
        assert store.decoded == 46
    accuracy = float((probs.argmax(1) == torch.arange(20) % 5).float().mean())
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {
        "benchmark": "photos latency, 5 classes x 5 support + 20 queries, 1600x1200 JPEGs, files to probabilities",
        "model": args.model, "runs": args.runs, "jpeg_kib_mean": round(jpeg_kib, 1),
        "model_load_s": round(load_s, 3),
        **seconds_series(cold_s=cold, plus_one_support_s=warm),
        "peak_rss_mib": round(peak_mib), "query_accuracy_last_run": accuracy,
        "machine": {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                    "cpu": cpu_name(), "threads": torch.get_num_threads(),
                    "torch": torch.__version__, "python": platform.python_version()},
    }
    print(f"model load {load_s:.2f} s; cold {result['cold_s_median']:.3f} s (median of {args.runs}); "
          f"after adding one support image {result['plus_one_support_s_median']:.3f} s; peak memory {peak_mib:.0f} MiB; "
          f"query accuracy {accuracy:.2f}")
    if args.json:
        write_json(args.json, result)


if __name__ == "__main__":
    main()
