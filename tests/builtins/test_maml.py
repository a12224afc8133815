"""MAML: task-batched functional network, meta-gradients, adaptation, saving, export, memory."""

from __future__ import annotations

import gc
import warnings

import pytest
import torch
from torch import nn
from torch.func import functional_call

from metastudio.algorithms.base import AdaptProgress
from metastudio_builtins.backbones.networks import Conv4
from metastudio.data.episodes import EpisodeSampler
from metastudio.algorithms.taskbatch import TaskBatchedChain, UnsupportedNetwork
from metastudio.plugins.testkit import check_algorithm, synthetic_dataset
from metastudio_builtins.algorithms.maml import MAML

from conftest import assert_round_trip
from helpers import assert_exports_match, assert_standalone_reproduces, meta_train_on_tiny_episodes, meta_train_steps

pytestmark = [pytest.mark.filterwarnings("ignore:`torch.jit.trace.*` is deprecated:FutureWarning"), pytest.mark.usefixtures("one_thread")]



def tiny_net() -> nn.Module:
    """conv - batch norm - ReLU - pool - flatten - linear on 1x4x4 images: small enough for finite differences."""
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                        nn.Linear(8, 3))
    net.out_features = 3
    return net


def build(backbone=None, **hparams) -> MAML:
    torch.manual_seed(0)
    if backbone is None:
        backbone = Conv4(1, 28)
    size, name = (28, "conv4") if isinstance(backbone, Conv4) else (4, "test")
    return MAML(backbone, backbone_name=name, image_size=size, channels=1, hparams=hparams)


def episode(ways=3, shots=2, queries=3, index=0, seed=0, size=28):
    ds = synthetic_dataset(classes=8, per_class=shots + queries + 1, image_size=size)
    return EpisodeSampler(ds, ways, shots, queries, seed=seed).episode(index)


# -- the task-batched network ---------------------------------------------------------------------

@pytest.mark.parametrize("net", ["conv4", "tiny"])
def test_task_batched_chain_equals_each_task_run_alone(net):
    torch.manual_seed(1)
    module = Conv4(1, 28) if net == "conv4" else tiny_net()
    size = 28 if net == "conv4" else 4
    chain = TaskBatchedChain(module)
    params = {k: v.detach() + 0.05 * torch.randn(3, *v.shape) for k, v in module.named_parameters()}
    x = torch.rand(3, 5, 1, size, size)
    out = chain(params, x)
    for t in range(3):
        alone = functional_call(module.train(), {k: v[t] for k, v in params.items()}, (x[t],))
        assert torch.allclose(out[t], alone, atol=1e-5)
    # support statistics: the first 2 images normalise all 5, and themselves exactly as alone
    captured = []
    mixed = chain(params, x, stats_from=2, capture=captured)
    assert torch.allclose(mixed[:, :2], chain(params, x[:, :2]), atol=1e-5)
    assert len(captured) == sum(isinstance(m, nn.BatchNorm2d) for m in module.modules())
    assert torch.allclose(chain(params, x, bn="given", given=captured), mixed, atol=1e-6)
    # a query's output does not depend on the other queries with given statistics
    assert torch.allclose(chain(params, x[:, 3:4], bn="given", given=captured), mixed[:, 3:4], atol=1e-5)


def test_unsupported_backbones_are_refused_with_a_reason(host):
    with pytest.raises(UnsupportedNetwork):
        TaskBatchedChain(host.backbone("resnet12").build(3, 84))
    with pytest.raises(ValueError, match="chain of conv"):
        MAML(host.backbone("resnet12").build(3, 32), backbone_name="resnet12", image_size=32, channels=3)


# -- meta-gradients -----------------------------------------------------------------------------

def _query_loss(algo: MAML, meta, xs, ys, xq, yq, first_order: bool):
    fast = algo.task_weights(meta, xs.shape[0], 3)
    fast = algo.inner_loop(fast, xs, ys, 2, create_graph=not first_order, training=True)
    logits = algo.query_logits(fast, xs, xq, training=True)
    return torch.nn.functional.cross_entropy(logits.reshape(-1, 3), yq.reshape(-1))


def _tiny_problem():
    algo = build(tiny_net(), inner_lr=0.5).double()
    torch.manual_seed(3)
    with torch.no_grad():
        algo.head_weight.normal_()  # a non-zero start, so every path of the gradient is exercised
    xs, xq = torch.rand(2, 6, 1, 4, 4, dtype=torch.float64), torch.rand(2, 6, 1, 4, 4, dtype=torch.float64)
    ys = torch.tensor([[0, 1, 2, 0, 1, 2]] * 2)
    return algo, xs, ys, xq, ys.clone()


def test_second_order_meta_gradient_matches_finite_differences():
    algo, xs, ys, xq, yq = _tiny_problem()
    meta = algo.meta_parameters()
    loss = _query_loss(algo, meta, xs, ys, xq, yq, first_order=False)
    grads = torch.autograd.grad(loss, list(meta.values()))
    torch.manual_seed(4)
    direction = {k: torch.randn_like(v) for k, v in meta.items()}
    analytic = sum((g * direction[k]).sum() for g, k in zip(grads, meta))
    eps = 1e-6
    with torch.no_grad():
        plus = _query_loss(algo, {k: v + eps * direction[k] for k, v in meta.items()}, xs, ys, xq, yq, False)
        minus = _query_loss(algo, {k: v - eps * direction[k] for k, v in meta.items()}, xs, ys, xq, yq, False)
    numeric = (plus - minus) / (2 * eps)
    assert float(analytic) == pytest.approx(float(numeric), rel=1e-5, abs=1e-8)


def test_first_order_differs_from_second_order_but_points_the_same_way():
    algo, xs, ys, xq, yq = _tiny_problem()
    meta = algo.meta_parameters()
    second = torch.cat([g.flatten() for g in torch.autograd.grad(
        _query_loss(algo, meta, xs, ys, xq, yq, first_order=False), list(meta.values()))])
    first = torch.cat([g.flatten() for g in torch.autograd.grad(
        _query_loss(algo, meta, xs, ys, xq, yq, first_order=True), list(meta.values()))])
    assert not torch.allclose(first, second, rtol=1e-3, atol=1e-6)
    assert torch.nn.functional.cosine_similarity(first, second, dim=0) > 0.5


def test_grouped_tasks_give_the_loop_s_loss_and_gradients():
    eps = [episode(index=i) for i in range(3)]
    algo = build(inner_lr=0.4).train()
    meta = algo.meta_parameters()
    grouped, right = algo.query_loss(eps, create_graph=True)
    parts = [algo.query_loss([e], create_graph=True) for e in eps]
    looped = torch.stack([p[0] for p in parts]).mean()
    assert float(grouped.detach()) == pytest.approx(float(looped.detach()), rel=1e-5)
    assert right == sum(p[1] for p in parts)
    g1 = torch.autograd.grad(grouped, list(meta.values()))
    g2 = torch.autograd.grad(looped, list(meta.values()))
    for name, a, b in zip(meta, g1, g2):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-6), name


# -- learning, adaptation, saving -------------------------------------------------------------------

@pytest.mark.parametrize("first_order", [False, True])
def test_learns_on_tiny_episodes(first_order):
    algo = build(lr=3e-3, inner_lr=0.4, first_order=first_order, adapt_steps=1)
    losses, _, accuracy = meta_train_on_tiny_episodes(algo, 50)
    assert sum(losses[-5:]) < sum(losses[:5])
    assert accuracy > 0.6


@pytest.mark.parametrize("bn", ["support", "transductive", "running"])
def test_adapt_reports_each_step_and_predicts_without_changing_the_model(bn):
    algo = build(adapt_steps=4, batch_norm=bn, inner_lr=0.05).eval()
    before = {k: v.clone() for k, v in algo.state_dict().items()}
    ep = episode()
    steps = []
    learner = algo.adapt(ep.support, progress=steps.append)
    assert [s.step for s in steps] == [1, 2, 3, 4] and all(s.total == 4 for s in steps)
    assert all(isinstance(s, AdaptProgress) and s.loss > 0 for s in steps)
    assert steps[-1].loss < steps[0].loss, "the support loss falls while adapting"
    probs = learner.predict_proba(ep.query_images)
    assert probs.shape == (9, 3) and torch.allclose(probs.sum(1), torch.ones(9), atol=1e-5)
    assert all(torch.equal(v, before[k]) for k, v in algo.state_dict().items())
    assert all(t.grad_fn is None and not t.requires_grad for t in learner.fast.values())
    buffers = {id(b) for b in learner.buffers()}
    assert all(id(t) in buffers for t in [*learner.fast.values(), *(s for pair in learner.stats for s in pair)]), \
        "the task weights and statistics are the learner's buffers (they move and copy with it)"
    # only transductive batch norm needs all queries in one pass
    assert learner.joint_queries == (bn == "transductive")
    if bn != "transductive":  # a query's prediction does not depend on the others
        assert torch.allclose(learner.predict_proba(ep.query_images[:1]), probs[:1], atol=1e-5)
    # the learner predicts what evaluating the episode measures
    accuracy = float((probs.argmax(1) == ep.query_labels).float().mean())
    assert algo.evaluate_episode(ep) == pytest.approx(accuracy)


@pytest.mark.parametrize("bn", ["support", "transductive", "running"])
def test_save_load_round_trip_and_export(host, tmp_path, bn):
    algo = build(batch_norm=bn, adapt_steps=2)
    meta_train_steps(algo, [[episode(index=i)] for i in range(2)])
    ep = episode(index=5)
    probs = assert_round_trip(host, tmp_path, algo, ep)
    learner = algo.adapt(ep.support)
    saved = learner.learner_state()
    assert {k for k in saved if k.startswith("bn.")} == (
        {f"bn.{i}.{s}" for i in range(4) for s in ("mean", "var")} if bn == "support" else set())
    assert saved.keys() - {k for k in saved if k.startswith("bn.")} == {f"fast.{k}" for k in algo.meta_parameters()}
    assert_exports_match(learner, algo, tmp_path / "export", ep.query_images)
    assert torch.allclose(assert_standalone_reproduces(learner, algo, ep.query_images), probs, atol=1e-5)


def test_memory_does_not_grow_over_200_adaptations():
    algo = build(adapt_steps=2).eval()
    ep = episode()

    def live_tensor_bytes() -> int:
        gc.collect()
        with warnings.catch_warnings():  # isinstance on some torch module objects warns
            warnings.simplefilter("ignore")
            return sum(o.untyped_storage().nbytes() for o in gc.get_objects()
                       if isinstance(o, torch.Tensor) and not isinstance(o, nn.Parameter))

    for _ in range(5):  # warm up caches
        algo.adapt(ep.support).predict_proba(ep.query_images)
    before = live_tensor_bytes()
    for _ in range(200):
        learner = algo.adapt(ep.support)
        learner.predict_proba(ep.query_images)
    del learner
    after = live_tensor_bytes()
    assert after <= before + 64 * 1024, f"live tensors grew from {before} to {after} bytes"


def test_passes_the_algorithm_contract(host, tmp_path):
    check_algorithm(MAML, host=host, tmp_path=tmp_path)
    check_algorithm(MAML, host=host, tmp_path=tmp_path, hparams={"first_order": True, "batch_norm": "transductive"})
