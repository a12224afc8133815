#!/usr/bin/env python
"""Meta-training speed of MAML: MetaStudio's against learn2learn's, on the same tasks.

Setting: Omniglot 5-way 1-shot, 15 queries per class, meta-batch 32, one inner SGD
step (lr 0.4), second order, Conv-4 with batch norm on batch statistics (learn2learn runs its
model in training mode, so both normalise with the statistics of each forward pass:
MetaStudio's ``batch_norm=transductive``). Both get the same episodes, as uint8 tensors, and the
same Conv-4 weights; learn2learn's model is that Conv-4 plus a 64 -> 5 linear layer, adapted with
``l2l.algorithms.MAML(model, lr=0.4).clone().adapt(loss)`` task by task, as its examples do.

A fourth implementation, ``vmap``, maps one functional MAML step (``torch.func``: ``grad`` inside,
``functional_call``) over the tasks with ``torch.func.vmap``, on the same model as learn2learn's.

Each implementation runs in its own process (clean peak memory): tasks per second over
``--iters`` meta-iterations after ``--warmup`` ones, and peak memory (CUDA: the allocator's peak;
CPU: the process's peak resident set).

    bash benchmarks/tools/setup_learn2learn_env.sh
    benchmarks/.venv-l2l/bin/python benchmarks/harnesses/maml_speed.py --root ../shared/data/omniglot --device cpu \\
        --json benchmarks/results/cpu-2core/maml-speed.json
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

from common import cpu_name, write_json

IMPLEMENTATIONS = ("metastudio-loop", "metastudio-grouped", "vmap", "learn2learn")


def episodes(root: str | None, count: int, seed: int = 0):
    from metastudio.data.episodes import EpisodeSampler

    if root:
        from metastudio_builtins.datasets.omniglot import load_omniglot

        ds = load_omniglot(root, "train", "vinyals")
    else:
        from metastudio.plugins.testkit import synthetic_dataset

        ds = synthetic_dataset(classes=40, per_class=20)
    sampler = EpisodeSampler(ds, 5, 1, 15, seed=seed)
    return [sampler.episode(i) for i in range(count)]


def import_learn2learn():
    """learn2learn, imported for its MAML alone. Its package import also loads qpth (for
    MetaOptNet), which imports cvxpy at the top but uses it only when it solves a problem; where
    cvxpy is missing (the GPU machines have no solver packages and no network), an empty module
    stands in for it."""
    import importlib.util
    import types

    if importlib.util.find_spec("cvxpy") is None:
        sys.modules["cvxpy"] = types.ModuleType("cvxpy")
    import learn2learn

    return learn2learn


def metastudio_step(impl: str, backbone, device, total: int):
    """One meta-training step of MetaStudio's MAML, tasks looped or grouped (``impl`` metastudio-loop|-grouped)."""
    from metastudio_builtins.algorithms.maml import MAML

    algo = MAML(backbone, backbone_name="conv4", image_size=28, channels=1,
                hparams={"inner_lr": 0.4, "inner_steps": 1, "batch_norm": "transductive",
                         "task_batching": impl.split("-")[1]}).to(device)
    algo.use_amp = False
    algo.configure_training(total)
    algo.train()

    def step(batch):
        return algo.meta_train_step(batch)["loss"]
    return step


def vmap_step(backbone, device):
    """The tasks batched by torch.func.vmap instead of grouped convolutions: one functional MAML step per
    task, mapped over the meta-batch (batch norm on each pass's statistics, no running statistics: vmap
    cannot update shared buffers), on the same model as learn2learn's."""
    import torch
    import torch.nn.functional as F
    from torch.func import functional_call, grad, replace_all_batch_norm_modules_, vmap

    model = torch.nn.Sequential(backbone, torch.nn.Linear(64, 5)).to(device)
    replace_all_batch_norm_modules_(model)
    params = dict(model.named_parameters())
    opt = torch.optim.Adam(params.values(), lr=1e-3)

    def task_loss(weights, xs, ys, xq, yq):
        inner = grad(lambda w: F.cross_entropy(functional_call(model, w, (xs,)), ys))(weights)
        fast = {k: weights[k] - 0.4 * inner[k] for k in weights}
        return F.cross_entropy(functional_call(model, fast, (xq,)), yq)

    def step(batch):
        opt.zero_grad()
        xs = torch.stack([e.support_images for e in batch]).to(device).float().div_(255)
        xq = torch.stack([e.query_images for e in batch]).to(device).float().div_(255)
        ys = torch.stack([e.support_labels for e in batch]).to(device)
        yq = torch.stack([e.query_labels for e in batch]).to(device)
        loss = vmap(task_loss, in_dims=(None, 0, 0, 0, 0))(params, xs, ys, xq, yq).mean()
        loss.backward()  # second order: through the inner gradient
        opt.step()
        return float(loss.detach())
    return step


def learn2learn_step(backbone, device):
    """learn2learn's MAML, task by task as its examples do: ``clone()``, ``adapt(loss)``, query loss."""
    import torch
    import torch.nn.functional as F

    l2l = import_learn2learn()
    model = torch.nn.Sequential(backbone, torch.nn.Linear(64, 5)).to(device)
    maml = l2l.algorithms.MAML(model, lr=0.4, first_order=False)
    opt = torch.optim.Adam(maml.parameters(), lr=1e-3)

    def step(batch):
        opt.zero_grad()
        value = 0.0
        for e in batch:
            learner = maml.clone()
            xs = e.support_images.to(device).float().div_(255)
            xq = e.query_images.to(device).float().div_(255)
            learner.adapt(F.cross_entropy(learner(xs), e.support_labels.to(device)))
            loss = F.cross_entropy(learner(xq), e.query_labels.to(device)) / len(batch)
            loss.backward()
            value += float(loss)
        opt.step()
        return value
    return step


def run_one(impl: str, args) -> dict:
    """Time one implementation: tasks/s over ``--iters`` meta-iterations after ``--warmup``, and peak memory."""
    import torch

    from metastudio_builtins.backbones.networks import Conv4

    torch.manual_seed(0)
    device = torch.device(args.device)
    torch.set_num_threads(args.threads) if args.threads else None
    total = args.warmup + args.iters
    eps = episodes(args.root, total * args.meta_batch)
    batches = [eps[i * args.meta_batch : (i + 1) * args.meta_batch] for i in range(total)]
    backbone = Conv4(1, 28)
    if impl.startswith("metastudio"):
        step = metastudio_step(impl, backbone, device, total)
    elif impl == "vmap":
        step = vmap_step(backbone, device)
    else:
        step = learn2learn_step(backbone, device)

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for batch in batches[: args.warmup]:
        step(batch)
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    losses = [step(batch) for batch in batches[args.warmup :]]
    sync()
    elapsed = time.perf_counter() - start
    peak = (torch.cuda.max_memory_allocated() if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"implementation": impl, "device": args.device, "tasks_per_second": args.iters * args.meta_batch / elapsed,
            "seconds_per_iteration": elapsed / args.iters, "peak_memory_mib": peak / 2**20,
            "last_loss": losses[-1], "threads": torch.get_num_threads()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default=None, help="Omniglot folder (default: synthetic characters)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--meta-batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    p.add_argument("--impl", default="all", choices=("all", *IMPLEMENTATIONS))
    p.add_argument("--json", default=None, help="also write the results to this file")
    args = p.parse_args()
    if args.impl != "all":
        row = run_one(args.impl, args)
        print(json.dumps(row))
        if args.json:  # one implementation: its row, with the same context as the full table
            write_json(args.json, {"date": time.strftime("%Y-%m-%d"), "machine": cpu_name(),
                                   "command": " ".join(sys.argv), "results": [row]})
        return
    rows = []
    for impl in IMPLEMENTATIONS:
        cmd = [sys.executable, __file__, "--impl", impl, "--device", args.device, "--iters", str(args.iters),
               "--warmup", str(args.warmup), "--meta-batch", str(args.meta_batch), "--threads", str(args.threads)]
        if args.root:
            cmd += ["--root", args.root]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            rows.append({"implementation": impl, "error": out.stderr.strip().splitlines()[-1:]})
        else:
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    base = next((r for r in rows if r["implementation"] == "learn2learn" and "tasks_per_second" in r), None)
    for r in rows:
        if base and "tasks_per_second" in r:
            r["speed_vs_learn2learn"] = r["tasks_per_second"] / base["tasks_per_second"]
            r["memory_vs_learn2learn"] = r["peak_memory_mib"] / base["peak_memory_mib"]
    result = {"date": time.strftime("%Y-%m-%d"), "machine": cpu_name(),
              "command": " ".join(sys.argv), "setting": "Omniglot 5-way 1-shot 15-query, meta-batch "
              f"{args.meta_batch}, 1 inner step, second order, Conv-4", "results": rows}
    print(json.dumps(result, indent=2))
    if args.json:
        write_json(args.json, result)


if __name__ == "__main__":
    main()
