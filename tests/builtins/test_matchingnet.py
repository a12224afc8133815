"""Matching Networks: attention over the support set, FCE, learning, saving and export."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from metastudio.engine.checkpoint import load_model, save_model
from metastudio.data.episodes import EpisodeSampler
from metastudio.plugins.testkit import check_algorithm, synthetic_dataset
from metastudio_builtins.algorithms.matchingnet import MatchingNetworks

from helpers import adapt_in_one_step, assert_standalone_reproduces


def build(host, **hparams) -> MatchingNetworks:
    torch.manual_seed(0)
    return MatchingNetworks(host.backbone("conv4").build(1, 28), backbone_name="conv4", image_size=28, channels=1,
                            hparams=hparams)


def test_probabilities_are_attention_weighted_labels(host):
    algo = build(host, temperature=3.0)
    support, queries = torch.randn(5, 64), torch.randn(4, 64)
    onehot = F.one_hot(torch.tensor([0, 1, 1, 2, 0]), 3).float()
    cos = F.cosine_similarity(queries[:, None], support[None], dim=2)
    expected = (3.0 * cos).softmax(1) @ onehot
    assert torch.allclose(algo.class_probabilities(queries, support, onehot), expected, atol=1e-5)


@pytest.mark.parametrize("fce", [False, True])
def test_adapt_predicts_probabilities_over_the_support_classes(host, fce):
    algo = build(host, fce=fce).eval()
    ep = EpisodeSampler(synthetic_dataset(classes=6, per_class=6), 3, 2, 4, seed=0).episode(0)
    learner = adapt_in_one_step(algo, ep.support)
    probs = learner.predict_proba(ep.query_images)
    assert probs.shape == (12, 3) and probs.dtype == torch.float32 and probs.device.type == "cpu"
    assert torch.allclose(probs.sum(1), torch.ones(12), atol=1e-5)
    assert learner.predict_proba(ep.query_images[:0]).shape == (0, 3)
    # adapting then predicting gives what one forward pass over the episode gives
    with torch.inference_mode():
        direct = algo.episode_probabilities(ep)
    assert torch.allclose(direct.cpu(), probs, atol=1e-5)


@pytest.mark.parametrize("fce, projection", [(False, 0), (True, 0), (True, 32)])
def test_learns_on_tiny_episodes(host, fce, projection):
    algo = build(host, lr=3e-3, fce=fce, projection=projection)
    ds = synthetic_dataset(classes=16, per_class=8)
    train, test = EpisodeSampler(ds, 8, 1, 3, seed=0), EpisodeSampler(ds, 3, 1, 3, seed=1)
    algo.configure_training(30)
    algo.train()
    losses = [algo.meta_train_step([train.episode(i)])["loss"] for i in range(30)]
    algo.eval()
    after = sum(algo.evaluate_episode(test.episode(i)) for i in range(10)) / 10
    assert sum(losses[-5:]) < sum(losses[:5])
    assert after > 0.7


@pytest.mark.filterwarnings("ignore:`torch.jit.trace:FutureWarning")
@pytest.mark.parametrize("fce, projection", [(False, 0), (True, 0), (False, 16), (True, 16)])
def test_save_load_round_trip_and_export_module(host, tmp_path, fce, projection):
    algo = build(host, fce=fce, projection=projection).eval()
    if projection:
        assert algo.embed(torch.zeros(2, 1, 28, 28, dtype=torch.uint8)).shape == (2, projection)
        if fce:  # the FCE LSTMs work at the projection's width
            assert algo.query_attention.cell.hidden_size == 16
    ep = EpisodeSampler(synthetic_dataset(classes=6, per_class=6), 3, 2, 4, seed=2).episode(0)
    learner = algo.adapt(ep.support)
    probs = learner.predict_proba(ep.query_images)
    path = tmp_path / "m.safetensors"
    save_model(algo, path, learner=learner)
    loaded = load_model(path, host)
    assert torch.equal(loaded.algorithm.adapt(ep.support).predict_proba(ep.query_images), probs)
    restored = loaded.algorithm.restore_learner(ep.class_names, learner.learner_state())
    assert torch.allclose(restored.predict_proba(ep.query_images), probs)
    assert_standalone_reproduces(learner, algo, ep.query_images)


def test_passes_the_algorithm_contract(host, tmp_path):
    check_algorithm(MatchingNetworks, host=host, tmp_path=tmp_path)
    check_algorithm(MatchingNetworks, host=host, tmp_path=tmp_path, hparams={"fce": True})


def test_a_saved_adapted_learner_comes_back_with_the_model(host, tmp_path):
    algo = build(host, fce=True).eval()
    ep = EpisodeSampler(synthetic_dataset(classes=6, per_class=6), 3, 2, 4, seed=3).episode(0)
    learner = algo.adapt(ep.support)
    path = tmp_path / "adapted.safetensors"
    save_model(algo, path, learner=learner)
    loaded = load_model(path, host)
    assert loaded.learner is not None and loaded.learner.class_names == ep.class_names
    assert torch.allclose(loaded.learner.predict_proba(ep.query_images), learner.predict_proba(ep.query_images))


def test_a_learned_temperature_is_trained_and_saved(host, tmp_path):
    algo = build(host, learn_temperature=True, temperature=5.0, lr=1e-2)
    assert float(algo.scale.detach()) == pytest.approx(5.0)
    ds = synthetic_dataset(classes=12, per_class=6)
    sampler = EpisodeSampler(ds, 5, 1, 3, seed=0)
    algo.configure_training(5)
    algo.train()
    for i in range(5):
        algo.meta_train_step([sampler.episode(i)])
    learned = float(algo.scale.detach())
    assert learned != pytest.approx(5.0)
    algo.eval()
    path = tmp_path / "t.safetensors"
    save_model(algo, path)
    assert float(load_model(path, host).algorithm.scale.detach()) == pytest.approx(learned)
    ep = sampler.episode(9)
    learner = algo.adapt(ep.support)
    with torch.no_grad():
        exported = learner.standalone()(ep.query_images.float() / 255).softmax(1)
    assert torch.allclose(exported, learner.predict_proba(ep.query_images), atol=1e-5)
