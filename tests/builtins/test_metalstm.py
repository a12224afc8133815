"""The LSTM meta-learner: preprocessing, the learned update rule, meta-training, adaptation and saving."""

from __future__ import annotations

import math

import pytest
import torch

from metastudio_builtins.backbones.networks import Conv4
from metastudio.data.episodes import EpisodeSampler
from metastudio.plugins.testkit import check_algorithm, synthetic_dataset
from metastudio_builtins.algorithms.metalstm import MetaLearnerLSTM, preprocess

from conftest import assert_round_trip
from helpers import assert_exports_match, meta_train_on_tiny_episodes

pytestmark = [pytest.mark.filterwarnings("ignore:`torch.jit.trace.*` is deprecated:FutureWarning"), pytest.mark.usefixtures("one_thread")]



def build(**hparams) -> MetaLearnerLSTM:
    torch.manual_seed(0)
    return MetaLearnerLSTM(Conv4(1, 28), backbone_name="conv4", image_size=28, channels=1, hparams=hparams)


def episode(index=0, ways=3, shots=1, queries=3):
    ds = synthetic_dataset(classes=12, per_class=shots + queries + 2)
    return EpisodeSampler(ds, ways, shots, queries, seed=0).episode(index)


def test_preprocessing_follows_the_paper():
    x = torch.tensor([2.0, -0.5, 1e-6, -1e-5, 0.0])
    out = preprocess(x)
    p = 10.0
    assert out.shape == (5, 2)
    assert out[0].tolist() == pytest.approx([math.log(2.0) / p, 1.0])
    assert out[1].tolist() == pytest.approx([math.log(0.5) / p, -1.0])
    # below e^-10 (4.5e-5): (-1, e^p x)
    assert out[2].tolist() == pytest.approx([-1.0, math.exp(p) * 1e-6])
    assert out[3].tolist() == pytest.approx([-1.0, -math.exp(p) * 1e-5])
    assert out[4].tolist() == pytest.approx([-1.0, 0.0])


def test_with_open_gates_the_update_is_plain_sgd():
    algo = build(inner_lr=0.2)
    with torch.no_grad():
        algo.forget_gate.weight.zero_()
        algo.forget_gate.bias.fill_(50.0)  # f = 1
        algo.input_gate.weight.zero_()
        algo.input_gate.bias.fill_(math.log(0.2 / 0.8))  # i = 0.2
    fast = {"a": torch.randn(2, 3, 4), "b": torch.randn(2, 5)}
    grads = {"a": torch.randn(2, 3, 4), "b": torch.randn(2, 5)}
    new, state = algo.inner_update(fast, grads, torch.tensor([0.7, 1.3]), 0, None)
    for k in fast:
        assert torch.allclose(new[k], fast[k] - 0.2 * grads[k], atol=1e-6), k
    # the gates' previous values are carried to the next step
    (_, _), f, i = state
    assert f.shape == i.shape == (2 * (12 + 5), 1) and torch.allclose(i, torch.full_like(i, 0.2))


def test_meta_gradient_reaches_the_meta_learner_and_the_initial_weights():
    algo = build(inner_steps=2).train()
    algo.configure_training(1)
    loss, _ = algo.query_loss([episode(0), episode(1)], create_graph=False)
    loss.backward()
    for module in (algo.lstm, algo.input_gate, algo.forget_gate):
        grads = [p.grad for p in module.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        assert any(g.abs().sum() > 0 for g in grads), module
    assert algo.head_weight.grad is not None and algo.backbone.encoder[0][0].weight.grad.abs().sum() > 0


@pytest.mark.long  # ~35 s on 2 cores; the contract test's learning check runs in make test
def test_meta_training_lowers_the_loss_and_learns():
    algo = build(lr=3e-3, inner_lr=0.3, inner_steps=2, adapt_steps=2)
    losses, _, accuracy = meta_train_on_tiny_episodes(algo, 40)
    assert sum(losses[-5:]) < sum(losses[:5])
    assert accuracy > 0.6


def test_adapts_step_by_step_round_trips_and_exports(host, tmp_path):
    algo = build(adapt_steps=3, inner_lr=0.05).eval()
    ep = episode()
    steps = []
    learner = algo.adapt(ep.support, progress=steps.append)
    assert [s.step for s in steps] == [1, 2, 3] and steps[-1].loss < steps[0].loss
    probs = assert_round_trip(host, tmp_path, algo, ep)
    assert torch.allclose(learner.predict_proba(ep.query_images), probs)
    assert_exports_match(learner, algo, tmp_path / "export", ep.query_images)


def test_passes_the_algorithm_contract(host, tmp_path):
    check_algorithm(MetaLearnerLSTM, host=host, tmp_path=tmp_path, hparams={"inner_lr": 0.05, "lr": 3e-4})
