#!/usr/bin/env python
"""Compare feature transforms for the photos model on one protocol, through the product's code:
ProtoNet on frozen EfficientNet-Lite0 (224 px), mean from the first --train-per-class images of
each mini-ImageNet train class, evaluated on 600 fixed 5-way episodes (15 queries) drawn from the
first --val-per-class images of each val class (all 600 with --val-per-class 600).

    python benchmarks/harnesses/photos_transforms.py --root ../shared/data/mini-imagenet --val-per-class 60
"""

from __future__ import annotations

import argparse
import json
import tempfile

import torch

from metastudio.data.datasets import load_class_folders
from metastudio.data.episodes import EVAL_SEED, EpisodeSampler
from metastudio.data.feature_cache import FeatureCache
from metastudio.engine.evaluator import evaluate
from metastudio.plugins import get_host


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True)
    p.add_argument("--train-per-class", type=int, default=15)
    p.add_argument("--val-per-class", type=int, default=60)
    p.add_argument("--episodes", type=int, default=600)
    p.add_argument("--transforms", default="cl2n,power-cl2n")
    args = p.parse_args()
    torch.set_grad_enabled(False)
    host = get_host()
    cls, spec = host.algorithm("protonet"), host.backbone("efficientnet-lite0")
    backbone = spec.build(3, 224)
    cache = FeatureCache(tempfile.mkdtemp(prefix="metastudio-features-"))
    train = load_class_folders(f"{args.root}/train.zip", image_size=224, fit="center-crop",
                               max_per_class=args.train_per_class, use_cache=False)
    val = load_class_folders(f"{args.root}/val.zip", image_size=224, fit="center-crop",
                             max_per_class=args.val_per_class, use_cache=False)
    results = {}
    for transform in args.transforms.split(","):
        algo = cls(backbone, backbone_name=spec.name, image_size=224, channels=3, freeze_backbone=True,
                   fit="center-crop", hparams={"feature_transform": transform}).eval()
        algo.feature_cache = cache  # raw features are shared between transforms
        algo.fit_feature_mean(train.images[i : i + 64] for i in range(0, len(train), 64))
        row = {}
        for shots in (1, 5):
            r = evaluate(algo, EpisodeSampler(val, 5, shots, 15, seed=EVAL_SEED), args.episodes)
            row[f"5w{shots}s"] = f"{r.accuracy:.2f} ± {r.ci95:.2f}"
        results[transform] = row
        print(transform, row, flush=True)
    print(json.dumps({"train_per_class": args.train_per_class, "val_per_class": args.val_per_class, **results}))


if __name__ == "__main__":
    main()
