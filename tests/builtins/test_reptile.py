"""Reptile: the meta-update is an interpolation toward the adapted weights; learning, adaptation, saving."""

from __future__ import annotations

import pytest
import torch

from metastudio_builtins.backbones.networks import Conv4
from metastudio.data.episodes import EpisodeSampler
from metastudio.algorithms.gradient import HEAD
from metastudio.plugins.testkit import check_algorithm, synthetic_dataset
from metastudio_builtins.algorithms.reptile import Reptile

from conftest import assert_round_trip
from helpers import assert_exports_match, meta_train_on_tiny_episodes

pytestmark = [pytest.mark.filterwarnings("ignore:`torch.jit.trace.*` is deprecated:FutureWarning"), pytest.mark.usefixtures("one_thread")]



def build(**hparams) -> Reptile:
    torch.manual_seed(0)
    return Reptile(Conv4(1, 28), backbone_name="conv4", image_size=28, channels=1, hparams=hparams)


def episodes(count=2, ways=3, shots=1, queries=3, seed=0):
    ds = synthetic_dataset(classes=12, per_class=shots + queries + 2)
    sampler = EpisodeSampler(ds, ways, shots, queries, seed=seed)
    return [sampler.episode(i) for i in range(count)]


@pytest.mark.parametrize("batching", ["loop", "grouped"])
def test_meta_update_moves_the_weights_toward_the_mean_of_the_adapted_ones(batching):
    algo = build(lr=0.5, lr_schedule="constant", inner_batch=0, inner_steps=3, inner_lr=0.05, task_batching=batching)
    algo.configure_training(10)
    algo.train()
    eps = episodes()
    before = {k: v.detach().clone() for k, v in algo.meta_parameters().items()}
    adapted = [algo._adapted([e])[0] for e in eps]  # what each task's inner steps reach
    expected = {}
    for name, theta in before.items():
        phis = [(f[name].mean(1) if name in HEAD else f[name])[0] for f in adapted]
        expected[name] = theta + 0.5 * (torch.stack(phis).mean(0) - theta)
    metrics = algo.meta_train_step(eps)
    assert 0 <= metrics["accuracy"] <= 1 and metrics["loss"] > 0
    for name, param in algo.meta_parameters().items():
        assert torch.allclose(param.detach(), expected[name], atol=1e-5), name
        assert not torch.equal(param.detach(), before[name]), f"{name} did not move"


def test_meta_step_size_falls_linearly_to_zero():
    algo = build(lr=1.0)
    algo.configure_training(4)
    seen = []
    for _ in range(4):
        seen.append(algo.learning_rate)
        algo.optimizer.step()
        algo.scheduler.step()
    assert seen == pytest.approx([1.0, 0.75, 0.5, 0.25])
    assert isinstance(algo.optimizer, torch.optim.SGD)


def test_learns_on_tiny_episodes():
    algo = build(inner_lr=0.1, inner_steps=5, inner_batch=6, adapt_steps=10)
    _, before, after = meta_train_on_tiny_episodes(algo, 40, per_class=10, train_queries=5)
    assert after > max(before, 0.6)


def test_adapts_step_by_step_round_trips_and_exports(host, tmp_path):
    algo = build(adapt_steps=5, inner_lr=0.05).eval()
    ep = episodes(1)[0]
    steps = []
    learner = algo.adapt(ep.support, progress=steps.append)
    assert [s.step for s in steps] == [1, 2, 3, 4, 5] and steps[-1].loss < steps[0].loss
    probs = assert_round_trip(host, tmp_path, algo, ep)
    assert torch.allclose(learner.predict_proba(ep.query_images), probs)
    assert_exports_match(learner, algo, tmp_path / "export", ep.query_images)


def test_passes_the_algorithm_contract(host, tmp_path):
    check_algorithm(Reptile, host=host, tmp_path=tmp_path, hparams={"inner_lr": 0.05})


def test_shared_hyperparameters_get_reptile_s_defaults_and_unknown_changes_are_refused():
    from metastudio.algorithms.hyperparameters import TRAINING_HYPERPARAMETERS, with_changes

    declared = {h.name: h for h in Reptile.hyperparameters}
    assert declared["lr"].default == 1.0 and declared["lr_schedule"].default == "linear"
    shared = {h.name: h for h in TRAINING_HYPERPARAMETERS}
    assert declared["lr_step"] == shared["lr_step"] and shared["lr"].default == 1e-3
    with pytest.raises(ValueError, match="no hyperparameter colour"):
        with_changes(TRAINING_HYPERPARAMETERS, colour={"default": 1})
