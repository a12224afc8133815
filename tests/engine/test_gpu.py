"""Checks that need a CUDA GPU (skipped elsewhere): mixed-precision meta-training on the device,
episodes gathered on the GPU, CPU/GPU agreement after a save/load, and flat memory over many
adaptations (no graph kept alive)."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch
from conftest import NINE_ALGORITHMS

from metastudio.engine.checkpoint import load_model, save_model
from metastudio.engine.devices import describe_device, resolve_device
from metastudio.data.episodes import EpisodeSampler
from metastudio.engine.evaluator import evaluate
from metastudio.plugins.testkit import synthetic_dataset

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_training_on_the_gpu_with_mixed_precision(host, tmp_path):
    device = resolve_device("auto")
    assert device.type == "cuda" and describe_device(device)
    ds = synthetic_dataset(classes=20, per_class=10).to(device)
    sampler = EpisodeSampler(ds, 5, 1, 5, seed=0)
    cls, spec = host.algorithm("protonet"), host.backbone("conv4")
    algo = cls(spec.build(1, 28), backbone_name="conv4", image_size=28, channels=1).to(device)
    algo.configure_training(40)
    first = [algo.meta_train_step([sampler.episode(i)])["loss"] for i in range(5)]
    for i in range(5, 35):
        algo.meta_train_step([sampler.episode(i)])
    last = [algo.meta_train_step([sampler.episode(i)])["loss"] for i in range(35, 40)]
    assert sum(last) < sum(first)
    assert sampler.episode(0).support_images.device.type == "cuda"
    with algo.autocast():
        assert algo.backbone(algo.prepare(sampler.episode(0).query_images)).dtype == torch.bfloat16
    algo.eval()
    ep = sampler.episode(100)
    gpu = algo.adapt(ep.support).predict_proba(ep.query_images)
    path = save_model(algo, tmp_path / "m.safetensors")
    cpu_model = load_model(path, host, "cpu").algorithm
    cpu = cpu_model.adapt(ep.support.to("cpu")).predict_proba(ep.query_images.cpu())
    assert (gpu.argmax(1) == cpu.argmax(1)).float().mean() >= 0.9  # bf16 on the GPU, fp32 on the CPU
    assert torch.allclose(gpu, cpu, atol=0.05)


@pytest.mark.parametrize("name, hparams", [("protonet", {}), ("maml", {"adapt_steps": 3, "inner_lr": 0.05}),
                                           ("reptile", {"adapt_steps": 3, "inner_lr": 0.05}),
                                           ("metalstm", {"adapt_steps": 3, "inner_lr": 0.05})])
def test_memory_stays_flat_over_many_adaptations(host, name, hparams):
    """No graph may outlive an adaptation, also where adapting runs gradient steps."""
    device = torch.device("cuda")
    ds = synthetic_dataset(classes=20, per_class=10).to(device)
    sampler = EpisodeSampler(ds, 5, 5, 5, seed=1)
    algo = host.algorithm(name)(host.backbone("conv4").build(1, 28), backbone_name="conv4", image_size=28,
                                channels=1, hparams=hparams).to(device).eval()
    evaluate(algo, sampler, 5)
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    learner = None
    for i in range(200):
        ep = sampler.episode(i)
        learner = algo.adapt(ep.support)
        learner.predict_proba(ep.query_images)
    del learner
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() - before < 1 << 20


@contextmanager
def exact_float32_convolutions():
    """True float32 and fixed convolution algorithms for the duration, restored afterwards (plain
    attribute assignments: torch's backend flags are properties that monkeypatch cannot undo on
    every torch version)."""
    flags = [(torch.backends.cudnn, "allow_tf32", False), (torch.backends.cuda.matmul, "allow_tf32", False),
             (torch.backends.cudnn, "benchmark", False), (torch.backends.cudnn, "deterministic", True)]
    saved = [getattr(obj, attr) for obj, attr, _ in flags]
    try:
        for obj, attr, value in flags:
            setattr(obj, attr, value)
        yield
    finally:
        for (obj, attr, _), value in zip(flags, saved):
            setattr(obj, attr, value)


def test_maml_grouped_tasks_match_the_loop_on_the_gpu(host):
    """All tasks of a meta-batch in one grouped pass give the per-task loop's loss and meta-gradient."""
    # In true float32: with TF32 (on by default for the device, see devices.py) grouped and per-task
    # convolutions round differently, by about 1e-4 relative (measured on an H100). And the same
    # convolution algorithms on every call: with cudnn.benchmark (devices.py) the choice depends on
    # timing, so on a busy GPU (an H200 training four models beside this test) another algorithm,
    # rounding otherwise, was picked and an element-wise check failed.
    with exact_float32_convolutions():
        check_grouped_tasks_match_the_loop(host, torch.device("cuda"))


def check_grouped_tasks_match_the_loop(host, device):
    ds = synthetic_dataset(classes=20, per_class=10).to(device)
    episodes = [EpisodeSampler(ds, 5, 1, 5, seed=2).episode(i) for i in range(4)]
    algo = host.algorithm("maml")(host.backbone("conv4").build(1, 28), backbone_name="conv4", image_size=28,
                                  channels=1, hparams={"batch_norm": "transductive"}).to(device).train()
    algo.use_amp = False  # compare in float32
    meta = algo.meta_parameters()
    grouped, _ = algo.query_loss(episodes, create_graph=True)
    looped = torch.stack([algo.query_loss([e], create_graph=True)[0] for e in episodes]).mean()
    assert float(grouped.detach()) == pytest.approx(float(looped.detach()), rel=1e-4)
    ga = torch.autograd.grad(grouped, list(meta.values()))
    gb = torch.autograd.grad(looped, list(meta.values()))
    # The whole meta-gradient to 1e-3 relative, and each tensor to 1e-3 of the whole gradient's norm:
    # not of its own, since some are zero but for rounding (a convolution's bias, cancelled by the
    # batch norm after it, gets a gradient of norm 1e-6 whose relative error is anything; H200).
    whole = torch.cat([g.flatten() for g in gb]).norm()
    assert float(torch.cat([(a - b).flatten() for a, b in zip(ga, gb)]).norm() / whole) < 1e-3
    for name, a, b in zip(meta, ga, gb):
        assert float((a - b).norm() / whole) < 1e-3, name


ALGORITHMS = list(NINE_ALGORITHMS)


@pytest.mark.parametrize("name", ALGORITHMS)
def test_every_built_in_algorithm_meta_trains_adapts_and_predicts_on_the_gpu(host, name):
    """Nothing on the CPU mixes with CUDA tensors (MANN's sequence order once did: a device error
    at its first meta-training step on an H200)."""
    device = torch.device("cuda")
    ds = synthetic_dataset(classes=20, per_class=10).to(device)
    sampler = EpisodeSampler(ds, 5, 1, 3, seed=3)
    hparams = {"max_ways": 5} if name in ("mann", "metanet") else {}
    algo = host.algorithm(name)(host.backbone("conv4").build(1, 28), backbone_name="conv4", image_size=28,
                                channels=1, hparams=hparams).to(device)
    algo.configure_training(4)
    for i in range(2):
        metrics = algo.meta_train_step([sampler.episode(2 * i), sampler.episode(2 * i + 1)])
        assert torch.isfinite(torch.tensor(metrics["loss"]))
    algo.eval()
    ep = sampler.episode(10)
    probs = algo.adapt(ep.support).predict_proba(ep.query_images)
    assert probs.shape == (15, 5) and torch.allclose(probs.sum(1).float().cpu(), torch.ones(15), atol=1e-3)
    if name == "mann":  # the paper's sequence protocol too
        correct, counted = algo.sequence_accuracy([sampler.episode(11)], instances=4)
        assert counted.sum() > 0 and (correct <= counted).all()
