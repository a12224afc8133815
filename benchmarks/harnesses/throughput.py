#!/usr/bin/env python
"""Meta-training throughput of MetaStudio's Prototypical Networks against easyfsl's, side by side.

Acceptance measurement: Omniglot (Vinyals train split, with rotated classes) 20-way 1-shot
15-query, Conv-4, episodes per second, in one process, on the same episodes (the same class and
image indices, drawn by MetaStudio's :class:`EpisodeSampler`), reported as a ratio.

Three variants are timed, each on exactly the same episode indices:

(a) MetaStudio: ``PrototypicalNetworks`` + ``conv4`` from the plugin host, ``configure_training``,
    then ``meta_train_step([episode])`` per episode, the episode built by the sampler from the
    in-memory uint8 dataset (moved to the device with ``dataset.to(device)`` on CUDA, as the CLI
    does). This is MetaStudio's real training pipeline.
(b) easyfsl as an easyfsl user runs it: ``easyfsl.methods.PrototypicalNetworks`` around the same
    Conv-4 (same initial weights), Adam(lr=1e-3) + CrossEntropyLoss, ``process_support_set`` then
    ``model(query_images)``; the data come from a torch Dataset that decodes each Omniglot PNG
    (from the zip or folder) and applies Grayscale, Resize(28), ToTensor (and the class's
    rotation) per item, through a DataLoader with a TaskSampler whose batches are the episode
    indices of (a) and easyfsl's ``TaskSampler.episodic_collate_fn``.
(c) easyfsl "compute only": the model and training step of (b), fed the float tensors
    MetaStudio builds (the sampler's uint8 episode / 255, on the device), so that a/c is the
    model/step difference and c/b the data-pipeline difference.

Run it with the environment made by ``benchmarks/tools/setup_easyfsl_env.sh``:

    benchmarks/.venv-easyfsl/bin/python benchmarks/harnesses/throughput.py --root PATH/TO/omniglot
"""

from __future__ import annotations

import argparse
import datetime
import io
import os
import platform
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

try:
    import easyfsl
    from easyfsl.methods import PrototypicalNetworks as EasyPrototypicalNetworks
    from easyfsl.samplers import TaskSampler
except ImportError as e:  # pragma: no cover - depends on the environment
    sys.exit(f"cannot import easyfsl ({e}); create the environment with benchmarks/tools/setup_easyfsl_env.sh and run "
             "this script with benchmarks/.venv-easyfsl/bin/python")
import torchvision
from PIL import Image
from torchvision import transforms

import metastudio
from metastudio.data.datasets import TreeSource
from metastudio.data.episodes import EpisodeSampler
from metastudio.plugins import get_host
from metastudio_builtins.backbones.networks import Conv4
from metastudio_builtins.datasets.omniglot import load_omniglot, locate, vinyals_split

from common import cpu_name, write_json

ANGLES = (0, 90, 180, 270)  # the rotations of FewShotDataset.with_rotations, in its class order


# ------------------------------------------------------------------------------------------------
# easyfsl side: a per-item PNG dataset and a TaskSampler that replays MetaStudio's episodes


class OmniglotPNGDataset(torch.utils.data.Dataset):
    """Omniglot read the way an easyfsl user reads it: each item decodes one PNG and transforms it.

    Item ``i`` is row ``i`` of MetaStudio's in-memory dataset (same class order, same image order,
    same rotation), so both sides can be given the same indices. Zips are opened lazily, once per
    process (DataLoader workers each get their own handle).
    """

    def __init__(self, items: list[tuple[str, str, int]], labels: list[int], sources: dict[str, Path], transform):
        self.items = items  # (part, member, quarter turns clockwise)
        self.labels = labels
        self.sources = {part: TreeSource(path) for part, path in sources.items()}
        self.transform = transform
        self._zips: dict[str, zipfile.ZipFile] = {}
        self._pid = None

    def __len__(self) -> int:
        return len(self.items)

    def get_labels(self) -> list[int]:  # what easyfsl's TaskSampler asks a dataset for
        return self.labels

    def _open(self, part: str, member: str):
        source = self.sources[part]
        if not source.is_zip:
            return Image.open(source.path / member)
        if self._pid != os.getpid():  # a forked worker must not share the parent's file handle
            self._zips, self._pid = {}, os.getpid()
        zf = self._zips.get(part)
        if zf is None:
            zf = self._zips[part] = zipfile.ZipFile(source.path)
        return Image.open(io.BytesIO(zf.read(member)))

    def __getitem__(self, index: int):
        part, member, quarter_turns = self.items[index]
        with self._open(part, member) as image:
            tensor = self.transform(image)
        if quarter_turns:  # the same operation as FewShotDataset.with_rotations
            tensor = torch.rot90(tensor, k=-quarter_turns, dims=(1, 2))
        return tensor, self.labels[index]


def omniglot_png_dataset(root, dataset, image_size: int) -> OmniglotPNGDataset:
    """The per-item PNG dataset whose rows match ``dataset`` (MetaStudio's Vinyals train split)."""
    paths = locate(root, allow_download=False)
    wanted = vinyals_split("train")
    base: list[tuple[str, str, list[str]]] = []  # (part, class, members) in MetaStudio's order
    for part, classes in wanted.items():  # background, then evaluation (omniglot.concat order)
        tree = TreeSource(paths[f"images_{part}"]).list_classes()
        base += [(part, c, tree[c]) for c in classes]
    items, labels, names, sizes = [], [], [], []
    for angle in ANGLES:
        for part, cls, members in base:
            label = len(names)
            names.append(f"{cls}/rot{angle:03d}")
            sizes.append(len(members))
            items += [(part, m, angle // 90) for m in members]
            labels += [label] * len(members)
    if names != list(dataset.class_names) or sizes != list(dataset.class_sizes) or dataset.problems:
        raise SystemExit("the PNG listing does not match MetaStudio's dataset row for row "
                         f"({len(names)} vs {dataset.num_classes} classes; problems: {dataset.problems[:3]})")
    transform = transforms.Compose([
        transforms.Grayscale(num_output_channels=1),
        transforms.Resize(image_size),
        transforms.ToTensor(),
    ])
    return OmniglotPNGDataset(items, labels, {p: paths[f"images_{p}"] for p in wanted}, transform)


class ReplayTaskSampler(TaskSampler):
    """easyfsl's TaskSampler, except that its batches are given lists of dataset indices
    (MetaStudio's episodes: class by class, support then queries) instead of random ones.
    ``episodic_collate_fn`` is easyfsl's own, inherited unchanged."""

    #: Whether easyfsl's own __init__ could not be used (see below).
    init_workaround = False

    def __init__(self, dataset, n_way: int, n_shot: int, n_query: int, batches: list[list[int]]):
        try:
            super().__init__(dataset, n_way=n_way, n_shot=n_shot, n_query=n_query, n_tasks=len(batches))
        except TypeError:
            # easyfsl <= 1.5.0 calls Sampler.__init__(data_source=None), an argument torch removed
            # (deprecated in 2.2): with a recent torch TaskSampler cannot be built at all. Do what
            # its __init__ does, minus that call.
            ReplayTaskSampler.init_workaround = True
            self.n_way, self.n_shot, self.n_query, self.n_tasks = n_way, n_shot, n_query, len(batches)
            self.items_per_label = {}
            for item, label in enumerate(dataset.get_labels()):
                self.items_per_label.setdefault(label, []).append(item)
            self._check_dataset_size_fits_sampler_parameters()
        self.batches = batches

    def __iter__(self):
        for batch in self.batches:
            yield list(batch)


def episode_indices(sampler: EpisodeSampler, index: int) -> list[int]:
    """Row indices of episode ``index`` in the flat dataset, in the order the sampler builds it."""
    spec = sampler.spec(index)
    offsets = np.cumsum([0] + list(sampler.dataset.class_sizes))[:-1]
    return (offsets[spec.classes][:, None] + spec.images).reshape(-1).tolist()


def easyfsl_step(model, optimizer, criterion, support_images, support_labels, query_images, query_labels, device):
    """One training step exactly as easyfsl's notebooks write it."""
    optimizer.zero_grad()
    model.process_support_set(support_images.to(device), support_labels.to(device))
    scores = model(query_images.to(device))
    loss = criterion(scores, query_labels.to(device))
    loss.backward()
    optimizer.step()
    return loss.item()


# ------------------------------------------------------------------------------------------------
# timing


def timed(batches, step, warmup: int, count: int, sync) -> tuple[float, list[float]]:
    """Run ``step`` on ``warmup`` then ``count`` items of ``batches``; seconds of the latter only.

    Getting each item from ``batches`` (building or loading the episode) is part of the time.
    """
    it = iter(batches)
    losses = []
    for _ in range(warmup):
        step(next(it))
    sync()
    start = time.perf_counter()
    for _ in range(count):
        losses.append(step(next(it)))
    sync()
    return time.perf_counter() - start, losses


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, help="folder with Omniglot's images_background(.zip) and images_evaluation(.zip)")
    p.add_argument("--episodes", type=int, default=100, help="timed episodes per variant and round (default 100)")
    p.add_argument("--warmup", type=int, default=10, help="untimed episodes before each timed block (default 10)")
    p.add_argument("--rounds", type=int, default=1, help="repeat a, b, c this many times, alternating (default 1)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--ways", type=int, default=20)
    p.add_argument("--shots", type=int, default=1)
    p.add_argument("--queries", type=int, default=15)
    p.add_argument("--seed", type=int, default=0, help="episode sampler and torch seed (default 0)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads for all variants (default: torch's, "
                   "normally the number of cores)")
    p.add_argument("--workers", type=int, default=None, help="DataLoader workers for easyfsl (default 2 on CPU, "
                   "min(12, cores) on CUDA as in easyfsl's notebooks)")
    p.add_argument("--no-amp", action="store_true", help="turn off MetaStudio's bfloat16 autocast on CUDA (fp32 like easyfsl)")
    p.add_argument("--variants", default="abc", help="which variants to run, e.g. 'ac' (default abc)")
    p.add_argument("--json", type=Path, default=None, help="write the results and machine information here")
    args = p.parse_args(argv)
    args.device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                               ("cpu" if args.device == "auto" else args.device))
    if args.device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: CUDA is not available")
    if args.workers is None:
        args.workers = 2 if args.device.type == "cpu" else min(12, os.cpu_count() or 1)
    return args


def pixel_check(dataset, png_dataset, sampler) -> dict:
    """Whether the easyfsl dataset gives the images MetaStudio has, rotation included, up to resampling
    (MetaStudio resizes with Lanczos, torchvision's Resize with antialiased bilinear): the mean absolute
    difference on episode 0, against the mean difference with the other rotations."""
    rows = episode_indices(sampler, 0)
    ours = dataset.images[rows].float() / 255
    theirs = torch.stack([png_dataset[i][0] for i in rows])
    pixel_diff = float((ours - theirs).abs().mean())
    wrong_rotation_diff = float(np.mean([(ours - torch.rot90(theirs, k, (2, 3))).abs().mean() for k in (1, 2, 3)]))
    print(f"pixel check (episode 0): mean |easyfsl - MetaStudio| = {pixel_diff:.4f} "
          f"(other rotations: {wrong_rotation_diff:.4f})", file=sys.stderr)
    if not pixel_diff < 0.5 * wrong_rotation_diff:
        print("warning: the easyfsl dataset's images do not match MetaStudio's", file=sys.stderr)
    return {"mean_abs_diff": pixel_diff, "other_rotations_mean_abs_diff": wrong_rotation_diff}


def build_models(args, dataset, total_steps: int):
    """MetaStudio's protonet, configured for ``total_steps``, and two easyfsl models (for b and c), each
    (model, optimizer, loss), all starting from the same Conv-4 weights."""
    device, image_size = args.device, dataset.image_size
    host = get_host()
    torch.manual_seed(args.seed)
    spec = host.backbone("conv4")
    algorithm = host.algorithm("protonet")(spec.build(dataset.channels, image_size), backbone_name=spec.name,
                                           image_size=image_size, channels=dataset.channels).to(device)
    if args.no_amp:
        algorithm.use_amp = False
    algorithm.configure_training(total_steps)
    algorithm.train()
    initial = {k: v.detach().clone() for k, v in algorithm.backbone.state_dict().items()}

    def easyfsl_model():
        torch.manual_seed(args.seed)
        backbone = Conv4(dataset.channels, image_size)  # 4 x conv3x3(64, no bias)-BN-ReLU-maxpool2, flatten
        backbone.load_state_dict(initial)
        model = EasyPrototypicalNetworks(backbone).to(device)
        model.train()
        with torch.no_grad():
            dim = model.compute_features(torch.zeros(2, dataset.channels, image_size, image_size, device=device)).shape
        assert dim == (2, 64), f"easyfsl's backbone gives features {tuple(dim)}, expected (2, 64)"
        return model, torch.optim.Adam(model.parameters(), lr=1e-3), nn.CrossEntropyLoss()

    return algorithm, easyfsl_model(), easyfsl_model()


def variant_runners(args, sampler, png_dataset, algorithm, easy_b, easy_c) -> tuple[dict, dict]:
    """The three variants' names, and for each a function of (first episode, count) that gives (a function
    making its source of batches, its training step)."""
    device = args.device

    def run_a(first: int, count: int):
        episodes = (sampler.episode(i) for i in range(first, first + count))
        return lambda: episodes, lambda ep: algorithm.meta_train_step([ep])["loss"]

    def run_b(first: int, count: int):
        batches = [episode_indices(sampler, i) for i in range(first, first + count)]
        task_sampler = ReplayTaskSampler(png_dataset, args.ways, args.shots, args.queries, batches)
        loader = torch.utils.data.DataLoader(
            png_dataset, batch_sampler=task_sampler, num_workers=args.workers, pin_memory=device.type == "cuda",
            collate_fn=task_sampler.episodic_collate_fn,
        )

        def step(batch):
            support_images, support_labels, query_images, query_labels, _class_ids = batch
            return easyfsl_step(*easy_b, support_images, support_labels, query_images, query_labels, device)

        return lambda: loader, step

    def run_c(first: int, count: int):
        episodes = (sampler.episode(i) for i in range(first, first + count))

        def step(ep):
            # MetaStudio's uint8 episode as floats in [0, 1] on the device: the tensors its model sees.
            return easyfsl_step(*easy_c, ep.support_images.float().div_(255), ep.support_labels,
                                ep.query_images.float().div_(255), ep.query_labels, device)

        return lambda: episodes, step

    names = {
        "a": "(a) MetaStudio protonet: sampler + meta_train_step",
        "b": f"(b) easyfsl: PNG Dataset + DataLoader({args.workers} workers) + episodic_collate_fn",
        "c": "(c) easyfsl model on MetaStudio's episode tensors",
    }
    return names, {"a": run_a, "b": run_b, "c": run_c}


def time_rounds(args, variants, names, runners, per_round: int):
    """Each variant timed in turn, ``--rounds`` times: seconds and losses per variant, episodes/s per round."""
    sync = torch.cuda.synchronize if args.device.type == "cuda" else (lambda: None)
    seconds = {v: 0.0 for v in variants}
    losses: dict[str, list[float]] = {v: [] for v in variants}
    rounds = []
    for r in range(args.rounds):
        first = r * per_round
        this_round = {}
        for v in variants:
            torch.manual_seed(args.seed + r)
            source, step = runners[v](first, per_round)
            elapsed, block_losses = timed(source(), step, args.warmup, args.episodes, sync)
            seconds[v] += elapsed
            losses[v] += block_losses
            this_round[v] = args.episodes / elapsed
            print(f"round {r + 1}/{args.rounds} {names[v]}: {this_round[v]:.2f} episodes/s", file=sys.stderr)
        rounds.append(this_round)
    return seconds, losses, rounds


def report(args, dataset, names, eps, losses, ratios, amp: bool, device_name: str) -> None:
    print()
    print(f"Omniglot (Vinyals train, {dataset.num_classes} classes) {args.ways}-way {args.shots}-shot "
          f"{args.queries}-query, Conv-4, {args.rounds} x {args.episodes} timed episodes after {args.warmup} warm-up")
    print(f"device {args.device} ({device_name}), torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"easyfsl {easyfsl.__version__}, MetaStudio amp {'on' if amp else 'off'}")
    width = max(len(n) for n in names.values())
    print(f"{'variant':<{width}}  {'episodes/s':>10}  {'mean loss':>9}")
    for v in eps:
        print(f"{names[v]:<{width}}  {eps[v]:>10.2f}  {np.mean(losses[v]):>9.3f}")
    labels = {"a/b": "MetaStudio vs easyfsl (acceptance ratio)", "a/c": "model/training step only",
              "c/b": "data pipeline only (same easyfsl model)"}
    for k, ratio in ratios.items():
        print(f"ratio {k} = {ratio:.2f}   {labels[k]}")
    if ReplayTaskSampler.init_workaround:
        print("note: easyfsl's TaskSampler.__init__ fails with this torch (Sampler(data_source=None)); "
              "its state was set up by this script instead")


def machine(device, device_name: str) -> dict:
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "hostname": platform.node(), "platform": platform.platform(), "python": platform.python_version(),
        "cpu_model": cpu_name(), "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "niceness": os.nice(0) if hasattr(os, "nice") else None,
        "device_name": device_name,
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "torch": torch.__version__, "torchvision": torchvision.__version__,
        "easyfsl": easyfsl.__version__, "metastudio": metastudio.__version__,
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    device = args.device
    if args.threads:
        torch.set_num_threads(args.threads)
    variants = [v for v in "abc" if v in args.variants]

    # -- data: one sampler, one in-memory dataset, one per-item PNG dataset, all row-aligned ------
    t0 = time.perf_counter()
    dataset = load_omniglot(args.root, "train", allow_download=False)
    print(f"{dataset.summary()} (loaded in {time.perf_counter() - t0:.1f} s)", file=sys.stderr)
    png_dataset = omniglot_png_dataset(args.root, dataset, dataset.image_size)
    device_dataset = dataset.to(device) if device.type != "cpu" else dataset
    sampler = EpisodeSampler(device_dataset, args.ways, args.shots, args.queries, seed=args.seed)
    per_round = args.warmup + args.episodes
    pixels = pixel_check(dataset, png_dataset, sampler)

    algorithm, easy_b, easy_c = build_models(args, dataset, args.rounds * per_round)
    names, runners = variant_runners(args, sampler, png_dataset, algorithm, easy_b, easy_c)
    seconds, losses, rounds = time_rounds(args, variants, names, runners, per_round)
    eps = {v: args.rounds * args.episodes / seconds[v] for v in variants}
    ratios = {f"{x}/{y}": eps[x] / eps[y] for x, y in (("a", "b"), ("a", "c"), ("c", "b")) if x in eps and y in eps}
    amp = bool(algorithm.use_amp and device.type == "cuda")
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    report(args, dataset, names, eps, losses, ratios, amp, device_name)

    if args.json:
        result = {
            "benchmark": "meta-training throughput, protonet vs easyfsl",
            "dataset": dataset.name, "classes": dataset.num_classes,
            "ways": args.ways, "shots": args.shots, "queries": args.queries, "seed": args.seed,
            "episodes": args.episodes, "warmup": args.warmup, "rounds": args.rounds,
            "episodes_per_second": eps, "ratios": ratios, "per_round_episodes_per_second": rounds,
            "mean_loss": {v: float(np.mean(losses[v])) for v in variants}, "variants": {v: names[v] for v in variants},
            "pixel_check": pixels,
            "settings": {"device": str(device), "threads": torch.get_num_threads(), "dataloader_workers": args.workers,
                         "pin_memory": device.type == "cuda",
                         "easyfsl_task_sampler_init_workaround": ReplayTaskSampler.init_workaround,
                         "metastudio_amp": amp},
            "machine": machine(device, device_name),
        }
        print(f"wrote {write_json(args.json, result)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
