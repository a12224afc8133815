#!/usr/bin/env python
"""Build the shipped "photos" model: Prototypical Networks on frozen EfficientNet-Lite0 features
(ImageNet weights, 224x224 input), power-transformed (signed square root), L2-normalised,
centred and L2-normalised again (``power-cl2n``; ``--transform cl2n`` is SimpleShot's CL2N).

The centring mean is estimated on mini-ImageNet *train* (the first --per-class images of each of
its 64 classes); nothing is meta-trained, and mini-ImageNet val/test classes are never seen.

    python benchmarks/tools/build_photos_model.py --root ../shared/data/mini-imagenet --per-class 60 \
        --out resources/models/photos.safetensors
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from metastudio.engine.checkpoint import save_model
from metastudio.data.datasets import load_class_folders
from metastudio.plugins import get_host


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, help="folder with mini-ImageNet's train.zip (or train/)")
    p.add_argument("--per-class", type=int, default=60)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--temperature", type=float, default=10.0)
    p.add_argument("--transform", default="power-cl2n", choices=("cl2n", "power-cl2n"))
    p.add_argument("--out", default="resources/models/photos.safetensors")
    args = p.parse_args()

    host = get_host()
    cls, spec = host.algorithm("protonet"), host.backbone("efficientnet-lite0")
    algo = cls(spec.build(3, args.image_size), backbone_name=spec.name, image_size=args.image_size, channels=3,
               hparams={"feature_transform": args.transform, "temperature": args.temperature}, freeze_backbone=True,
               fit="center-crop").eval()
    root = Path(args.root)
    train = root / "train.zip" if (root / "train.zip").exists() else root / "train"
    t0 = time.perf_counter()
    ds = load_class_folders(train, image_size=args.image_size, channels=3, fit="center-crop",
                            max_per_class=args.per_class, use_cache=False)
    t1 = time.perf_counter()
    batches = (ds.images[i : i + 64] for i in range(0, len(ds), 64))
    n = algo.fit_feature_mean(batches)
    t2 = time.perf_counter()
    print(f"{ds.num_classes} classes, {n} images: decoded in {t1 - t0:.0f} s, embedded in {t2 - t1:.0f} s "
          f"({n / (t2 - t1):.1f} images/s)")
    save_model(algo, args.out, dataset={"name": "mini-imagenet", "split": "train", "per_class": args.per_class,
                                        "images": n, "purpose": "CL2N feature mean"})
    print(f"saved {args.out} ({Path(args.out).stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
