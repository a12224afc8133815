#!/usr/bin/env python
"""MANN in the paper's protocol (Santoro et al. 2016): per-instance accuracy on label-delayed sequences.

Each test sequence holds 5 classes of the Omniglot test split, 10 images each, in random order;
every image comes with the label of the previous one. The accuracy of the k-th occurrence of a
class (k = 1..10) is averaged over ``--sequences`` sequences; the paper reports the 1st, 2nd,
3rd, 5th and 10th instance (36.4 / 82.8 / 91.0 / 94.9 / 98.1 % for its MANN with LRU access).
The sequences are fixed (``--seed``), so runs are comparable.

    python benchmarks/harnesses/mann_sequence_eval.py --model runs/mann-omniglot.safetensors \\
        --root ../shared/data/omniglot --sequences 1000 --json runs/mann-omniglot-sequences.json
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from common import write_json


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--root", required=True, help="Omniglot folder")
    p.add_argument("--split", default="test")
    for name, default, meaning in (("sequences", 1000, "sequences to score"), ("classes", 5, "classes per sequence"),
                                   ("instances", 10, "images per class in a sequence"),
                                   ("batch", 50, "sequences run at once"), ("seed", 20160519, "draws the sequences")):
        p.add_argument(f"--{name}", type=int, default=default, help=f"{meaning} (default {default})")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", default=None, help="also write the result to this file")
    args = p.parse_args()

    from metastudio.app.catalogue import resolve_model
    from metastudio.data.episodes import EpisodeSampler
    from metastudio.engine.checkpoint import load_model
    from metastudio.plugins import get_host
    from metastudio_builtins.datasets.omniglot import load_omniglot

    algo = load_model(resolve_model(args.model), get_host(), torch.device(args.device)).algorithm
    if algo.name != "mann":
        raise SystemExit(f"{args.model} is a {algo.name} model; this protocol is for mann")
    data = load_omniglot(args.root, args.split, "vinyals", image_size=algo.image_size)
    # 1 support + (instances - 1) queries per class: every class appears `instances` times.
    sampler = EpisodeSampler(data, args.classes, 1, args.instances - 1, seed=args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    correct = torch.zeros(args.instances)
    counted = torch.zeros(args.instances)
    start = time.perf_counter()
    for first in range(0, args.sequences, args.batch):
        episodes = [sampler.episode(i) for i in range(first, min(first + args.batch, args.sequences))]
        c, n = algo.sequence_accuracy(episodes, args.instances, generator)
        correct += c
        counted += n
    accuracy = correct / counted
    # 95% interval of a proportion (normal approximation) per instance
    ci = 1.96 * torch.sqrt(accuracy * (1 - accuracy) / counted)
    result = {"model": args.model, "split": args.split, "sequences": args.sequences, "classes": args.classes,
              "seed": args.seed, "seconds": round(time.perf_counter() - start, 1),
              "instance_accuracy": [round(100 * float(a), 2) for a in accuracy],
              "ci95": [round(100 * float(c), 2) for c in ci]}
    for k in (1, 2, 3, 5, 10):
        if k <= args.instances:
            print(f"instance {k:2d}: {100 * float(accuracy[k - 1]):.2f} ± {100 * float(ci[k - 1]):.2f} %")
    print(json.dumps(result))
    if args.json:
        write_json(args.json, result)


if __name__ == "__main__":
    main()
