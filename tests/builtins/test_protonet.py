"""Prototypical Networks: prototypes, distances, probabilities, and learning on tiny episodes."""

from __future__ import annotations

import pytest
import torch

from metastudio.data.episodes import EpisodeSampler, SupportSet
from metastudio.plugins.testkit import synthetic_dataset
from metastudio_builtins.algorithms.protonet import PrototypicalNetworks, class_means

from helpers import accuracy_before_and_after_training, adapt_and_predict


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
    learner, probs = adapt_and_predict(algo, ep)
    assert learner.predict(ep.query_images)[0][0] in ep.class_names
    # A support image is closest to its own prototype when each class has one shot.
    one_shot = SupportSet(ep.support_images[::2], torch.arange(3), ep.class_names)
    assert algo.adapt(one_shot).predict_proba(one_shot.images).argmax(1).tolist() == [0, 1, 2]


def test_more_training_ways_than_test_ways_and_learning(host):
    before, after, metrics = accuracy_before_and_after_training(build(host, lr=3e-3), train_ways=10, steps=30)
    losses = [m["loss"] for m in metrics]
    assert sum(losses[-5:]) < sum(losses[:5])
    assert after >= before
    assert after > 0.8


def test_adapting_a_model_left_in_training_mode_changes_nothing(host):
    algo = build(host)
    algo.train()
    before = {k: v.clone() for k, v in algo.state_dict().items()}
    ep = EpisodeSampler(synthetic_dataset(classes=6, per_class=6), 3, 2, 4, seed=0).episode(0)
    algo.adapt(ep.support).predict_proba(ep.query_images)
    assert algo.training, "the mode is restored"
    for k, v in algo.state_dict().items():
        assert torch.equal(v, before[k]), f"{k} changed (batch-norm statistics must not move when adapting)"
