"""Prototypical Networks: prototypes, distances, probabilities, and learning on tiny episodes."""

from __future__ import annotations

import pytest
import torch

from metastudio.algorithms.base import AdaptProgress
from metastudio.data.episodes import EpisodeSampler, SupportSet
from metastudio.plugins.testkit import synthetic_dataset
from metastudio_builtins.algorithms.protonet import PrototypicalNetworks, class_means


def build(host, **hparams) -> PrototypicalNetworks:
    torch.manual_seed(0)
    return PrototypicalNetworks(host.backbone("conv4").build(1, 28), backbone_name="conv4", image_size=28, channels=1,
                                hparams=hparams)


def test_class_means_with_unequal_shots():
    feats = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 5.0], [9.0, 9.0], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 1, 2, 1])
    assert torch.allclose(class_means(feats, labels, 3), torch.tensor([[2.0, 0.0], [0.0, 3.0], [9.0, 9.0]]))


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_logits_match_the_definition(host, distance):
    algo = build(host, distance=distance, temperature=7.0)
    q, p = torch.randn(6, 64), torch.randn(4, 64)
    if distance == "euclidean":
        expected = -torch.cdist(q, p) ** 2
    else:
        expected = 7.0 * torch.nn.functional.cosine_similarity(q[:, None], p[None], dim=2)
    assert torch.allclose(algo.logits(q, p), expected, atol=1e-3)


def test_adapt_reports_progress_and_predicts_the_support_classes(host):
    algo = build(host).eval()
    ds = synthetic_dataset(classes=6, per_class=6)
    ep = EpisodeSampler(ds, 3, 2, 4, seed=0).episode(0)
    steps = []
    learner = algo.adapt(ep.support, progress=steps.append)
    assert steps == [AdaptProgress(1, 1, None)]
    probs = learner.predict_proba(ep.query_images)
    assert probs.shape == (12, 3) and probs.dtype == torch.float32 and probs.device.type == "cpu"
    assert torch.allclose(probs.sum(1), torch.ones(12))
    assert learner.predict(ep.query_images)[0][0] in ep.class_names
    # A support image is closest to its own prototype when each class has one shot.
    one_shot = SupportSet(ep.support_images[::2], torch.arange(3), ep.class_names)
    assert algo.adapt(one_shot).predict_proba(one_shot.images).argmax(1).tolist() == [0, 1, 2]
    assert learner.predict_proba(ep.query_images[:0]).shape == (0, 3)


def test_more_training_ways_than_test_ways_and_learning(host):
    algo = build(host, lr=3e-3)
    ds = synthetic_dataset(classes=16, per_class=8)
    train = EpisodeSampler(ds, 10, 1, 3, seed=0)
    test = EpisodeSampler(ds, 3, 1, 3, seed=1)
    algo.configure_training(30)
    algo.eval()
    before = sum(algo.evaluate_episode(test.episode(i)) for i in range(10))
    algo.train()
    losses = [algo.meta_train_step([train.episode(i)])["loss"] for i in range(30)]
    algo.eval()
    after = sum(algo.evaluate_episode(test.episode(i)) for i in range(10))
    assert sum(losses[-5:]) < sum(losses[:5])
    assert after >= before
    assert after / 10 > 0.8


def test_adapting_a_model_left_in_training_mode_changes_nothing(host):
    algo = build(host)
    algo.train()
    before = {k: v.clone() for k, v in algo.state_dict().items()}
    ep = EpisodeSampler(synthetic_dataset(classes=6, per_class=6), 3, 2, 4, seed=0).episode(0)
    algo.adapt(ep.support).predict_proba(ep.query_images)
    assert algo.training, "the mode is restored"
    for k, v in algo.state_dict().items():
        assert torch.equal(v, before[k]), f"{k} changed (batch-norm statistics must not move when adapting)"
