"""Siamese Networks: the weighted-L1 head, pair training, probabilities, distortions, saving and export."""

from __future__ import annotations

import pytest
import torch

from metastudio.engine.checkpoint import load_model, save_model
from metastudio.data.episodes import EpisodeSampler, SupportSet
from metastudio.plugins.testkit import check_algorithm, synthetic_dataset
from metastudio.algorithms.augment import random_affine
from metastudio_builtins.algorithms.siamese import SiameseNetworks, class_log_scores, class_weights

from helpers import (
    accuracy_before_and_after_training, adapt_and_predict, assert_exports_match, assert_standalone_reproduces,
)

# What a person's own code meets when tracing; not ours to silence elsewhere.
pytestmark = [pytest.mark.filterwarnings("ignore:`torch.jit.trace.*` is deprecated:FutureWarning"), pytest.mark.usefixtures("one_thread")]

# Small and quick: a narrow projection keeps the pair computations tiny.
FAST = {"projection": 64}



def build(host, backbone="conv4", freeze=False, **hparams) -> SiameseNetworks:
    torch.manual_seed(0)
    return SiameseNetworks(host.backbone(backbone).build(1, 28), backbone_name=backbone, image_size=28, channels=1,
                           hparams={**FAST, **hparams}, freeze_backbone=freeze)


def episode(classes=6, ways=3, shots=2, queries=3, index=0, seed=0):
    return EpisodeSampler(synthetic_dataset(classes=classes, per_class=shots + queries + 1), ways, shots, queries,
                          seed=seed).episode(index)


# -- the head -------------------------------------------------------------------------------------

def test_weighted_l1_score_matches_its_definition(host):
    algo = build(host, projection=0)
    d = algo.embedding_dim
    with torch.no_grad():
        algo.alpha.copy_(torch.linspace(-2.0, 0.5, d))
        algo.bias.fill_(0.7)
    a, b = torch.randn(4, d), torch.randn(3, d)
    expected = torch.empty(4, 3)
    for i in range(4):
        for j in range(3):
            expected[i, j] = torch.sigmoid(sum(algo.alpha[k] * (a[i, k] - b[j, k]).abs() for k in range(d)) + 0.7)
    assert torch.allclose(algo.similarity(a, b), expected, atol=1e-5)
    # Hand-made 3-d features: p = sigmoid(-1*|1-0| + 2*|0-3| - 0.5*|2-2| + 0.25) = sigmoid(5.25).
    alpha, bias = torch.tensor([-1.0, 2.0, -0.5]), torch.tensor(0.25)
    from metastudio_builtins.algorithms.siamese import weighted_l1

    logit = weighted_l1(torch.tensor([[1.0, 0.0, 2.0]]), torch.tensor([[0.0, 3.0, 2.0]]), alpha, bias)
    assert logit.item() == pytest.approx(5.25)
    # The fast form (two L1 distance matrices) equals the literal one for weights of any sign.
    a, b = torch.randn(5, 6), torch.randn(4, 6)
    for alpha in (torch.randn(6), -torch.rand(6), torch.rand(6), torch.zeros(6)):
        literal = (a.unsqueeze(1) - b.unsqueeze(0)).abs() @ alpha + bias
        assert torch.allclose(weighted_l1(a, b, alpha, bias), literal, atol=1e-5)
    a = torch.randn(4, d)
    # Identical embeddings score exactly sigmoid(bias).
    assert algo.similarity(a[:1], a[:1]).item() == pytest.approx(torch.sigmoid(torch.tensor(0.7)).item())


def test_class_probabilities_average_p_same_over_shots_and_normalise():
    labels = torch.tensor([0, 0, 1, 2, 2, 2])
    p = torch.tensor([[0.9, 0.5, 0.2, 0.1, 0.1, 0.4], [0.1, 0.1, 0.3, 0.8, 0.9, 0.7]])
    probs = class_log_scores(torch.logit(p), class_weights(labels, 3)).softmax(1)
    means = torch.stack([p[:, :2].mean(1), p[:, 2], p[:, 3:].mean(1)], 1)
    assert torch.allclose(probs, means / means.sum(1, keepdim=True), atol=1e-6)
    # Tiny probabilities everywhere: still finite, still the best match.
    scores = class_log_scores(torch.tensor([[-200.0, -300.0, -150.0, -400.0, -400.0, -400.0]]), class_weights(labels, 3))
    assert torch.isfinite(scores).all() and torch.isfinite(scores.softmax(1)).all() and scores.argmax(1).item() == 1


# -- training ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("pairs", ["all", "query-support"])
def test_loss_decreases(host, pairs):
    algo = build(host, lr=3e-3, pairs=pairs)
    ep = episode(classes=8, ways=5, shots=1, queries=3)
    algo.configure_training(12)
    algo.train()
    losses = [algo.meta_train_step([ep])["loss"] for _ in range(12)]
    assert all(isinstance(x, float) for x in losses)
    assert sum(losses[-3:]) < sum(losses[:3])


def test_learning_transfers_to_new_classes(host):
    before, after, metrics = accuracy_before_and_after_training(build(host, lr=3e-3), train_ways=8, steps=40)
    assert all(0.0 <= m["accuracy"] <= 1.0 for m in metrics)
    assert after > before and after > 0.8


# -- adaptation and prediction ----------------------------------------------------------------------

def test_outputs_are_probabilities_over_the_episode_classes(host):
    algo = build(host).eval()
    ep = episode()
    learner, probs = adapt_and_predict(algo, ep)
    # The argmax is the class whose support images the query matches best (mean p(same)).
    with torch.no_grad():
        p = algo.similarity(algo.embed_all(ep.query_images), algo.embed_all(ep.support_images))
    means = torch.stack([p[:, ep.support_labels == c].mean(1) for c in range(3)], 1)
    assert torch.equal(probs.argmax(1), means.argmax(1))
    assert torch.allclose(probs, means / means.sum(1, keepdim=True), atol=1e-5)
    # evaluate_episode (one pass over support and queries) agrees with adapt + predict_proba.
    assert algo.evaluate_episode(ep) == pytest.approx(float((probs.argmax(1) == ep.query_labels).float().mean()))


def test_unequal_shots_and_a_support_image_matches_itself(host):
    algo = build(host).eval()
    ep = episode(ways=3, shots=2)
    support = SupportSet(ep.support_images[1:], ep.support_labels[1:], ep.class_names)  # 1, 2 and 2 shots
    probs = algo.adapt(support).predict_proba(ep.query_images)
    assert probs.shape == (9, 3) and torch.allclose(probs.sum(1), torch.ones(9))
    one_shot = SupportSet(ep.support_images[::2], torch.arange(3), ep.class_names)
    learner = algo.adapt(one_shot)
    # Trained or not, identical embeddings have the largest score when alpha is negative.
    assert learner.predict_proba(one_shot.images).argmax(1).tolist() == [0, 1, 2]


def test_adapting_changes_nothing_and_memory_does_not_grow(host):
    algo = build(host)
    algo.train()
    before = {k: v.clone() for k, v in algo.state_dict().items()}
    ep = episode()
    learner = algo.adapt(ep.support)
    assert learner.support.is_inference() and not learner.support.requires_grad
    for _ in range(3):
        probs = algo.adapt(ep.support).predict_proba(ep.query_images)
        assert probs.grad_fn is None
    assert algo.training, "the mode is restored"
    for k, v in algo.state_dict().items():
        assert torch.equal(v, before[k]), f"{k} changed"


# -- distortions ------------------------------------------------------------------------------------

def test_random_affine_keeps_shape_and_is_identity_with_probability_zero():
    x = torch.rand(5, 1, 28, 28)
    torch.manual_seed(1)
    assert torch.allclose(random_affine(x, 0.0), x, atol=1e-5)
    y = random_affine(x, 1.0)
    assert y.shape == x.shape and not torch.allclose(y, x, atol=1e-3)
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    # Each image gets its own transformation.
    same = torch.rand(1, 1, 28, 28).expand(4, 1, 28, 28).contiguous()
    z = random_affine(same, 1.0)
    assert not torch.allclose(z[0], z[1], atol=1e-3)


def test_distortions_change_training_inputs_but_never_adaptation_or_prediction(host):
    distorting, reference = build(host, distort=True, distort_prob=1.0), build(host)  # same initial weights
    seen: list[torch.Tensor] = []
    distorting.backbone.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    ep = episode()
    exact = torch.cat([ep.support_images, ep.query_images]).float() / 255

    # Adaptation and prediction see the images as they are, even in training mode.
    for algo in (distorting, reference):
        algo.train()
    probs = distorting.adapt(ep.support).predict_proba(ep.query_images)
    assert torch.equal(probs, reference.adapt(ep.support).predict_proba(ep.query_images))
    assert [x.shape[0] for x in seen] == [6, 9]
    assert torch.equal(seen[0], exact[:6]) and torch.equal(seen[1], exact[6:])
    distorting.eval()
    reference.eval()
    assert distorting.evaluate_episode(ep) == reference.evaluate_episode(ep)
    assert torch.equal(seen[-1], exact)

    # Meta-training distorts every image.
    distorting.configure_training(1)
    distorting.train()
    seen.clear()
    distorting.meta_train_step([ep])
    assert len(seen) == 1 and seen[0].shape == exact.shape
    changed = (seen[0] - exact).abs().flatten(1).amax(1) > 1e-3
    assert bool(changed.all()), "each training image is distorted"


# -- persistence and export -------------------------------------------------------------------------

def test_save_load_round_trip_and_restored_learner(host, tmp_path):
    algo = build(host, lr=3e-3)
    algo.configure_training(3)
    algo.train()
    for i in range(3):
        algo.meta_train_step([episode(index=i)])
    algo.eval()
    ep = episode(seed=5)
    learner = algo.adapt(ep.support)
    expected = learner.predict_proba(ep.query_images)

    loaded = load_model(save_model(algo, tmp_path / "siamese.safetensors"), host)
    assert loaded.learner is None and loaded.metadata["hyperparameters"]["projection"] == FAST["projection"]
    assert torch.equal(loaded.algorithm.adapt(ep.support).predict_proba(ep.query_images), expected)

    loaded = load_model(save_model(algo, tmp_path / "with-learner.safetensors", learner=learner), host)
    assert loaded.learner.class_names == ep.class_names
    assert torch.equal(loaded.learner.predict_proba(ep.query_images), expected)


@pytest.mark.slow  # the dynamo ONNX export, ~3 s
def test_the_standalone_learner_gives_its_probabilities_and_exports(host, tmp_path):
    algo = build(host).eval()
    ep = episode(ways=3, shots=2)
    support = SupportSet(ep.support_images[1:], ep.support_labels[1:], ep.class_names)
    learner = algo.adapt(support)
    assert_exports_match(learner, algo, tmp_path, ep.query_images)  # ONNX has no cdist: the export writes it out
    assert_standalone_reproduces(learner, algo, ep.query_images)


def test_follows_the_algorithm_contract(tmp_path):
    check_algorithm(SiameseNetworks, tmp_path=tmp_path, hparams=FAST)


# -- a frozen pretrained backbone (feature vectors in) ----------------------------------------------

def test_frozen_backbone_trains_only_the_head_and_round_trips(host, seeded_conv4, tmp_path):
    algo = build(host, backbone=seeded_conv4.name, freeze=True, lr=3e-3, projection=32)
    backbone_before = {k: v.clone() for k, v in algo.backbone.state_dict().items()}
    head_before = algo.projection.weight.detach().clone()
    algo.configure_training(6)
    algo.train()
    ep = episode(classes=8, ways=5, shots=1, queries=3)
    losses = [algo.meta_train_step([ep])["loss"] for _ in range(6)]
    assert losses[-1] < losses[0]
    assert all(torch.equal(v, backbone_before[k]) for k, v in algo.backbone.state_dict().items())
    assert not torch.equal(algo.projection.weight, head_before)
    assert not any(k.startswith("backbone.") for k in algo.state_dict())

    algo.eval()
    learner = algo.adapt(ep.support)
    expected = learner.predict_proba(ep.query_images)
    loaded = load_model(save_model(algo, tmp_path / "frozen.safetensors", learner=learner), host)
    assert torch.equal(loaded.learner.predict_proba(ep.query_images), expected)


@pytest.mark.parametrize("projection", [0, 48])
def test_head_works_on_any_feature_vectors(host, projection):
    """With a frozen 1280-d feature extractor (EfficientNet-Lite0's width) the head sees plain
    [B, D] vectors: here a frozen 'backbone' that flattens and projects the image to 1280-d."""
    from torch import nn

    class Vectors(nn.Module):
        out_features = 1280

        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(28 * 28, 1280)

        def forward(self, x):
            return torch.relu(self.fc(x.flatten(1)))

    torch.manual_seed(0)
    algo = SiameseNetworks(Vectors(), backbone_name="vectors", image_size=28, channels=1,
                           hparams={"projection": projection, "lr": 3e-3}, freeze_backbone=True)
    assert algo.embedding_dim == (projection or 1280)
    algo.configure_training(8)
    algo.train()
    ep = episode(classes=8, ways=5, shots=1, queries=3)
    losses = [algo.meta_train_step([ep])["loss"] for _ in range(8)]
    assert losses[-1] < losses[0]
    algo.eval()
    probs = algo.adapt(ep.support).predict_proba(ep.query_images)
    assert probs.shape == (15, 5) and torch.allclose(probs.sum(1), torch.ones(15))
    assert algo.similarity(torch.rand(2, algo.embedding_dim), torch.rand(3, algo.embedding_dim)).shape == (2, 3)


def test_distortions_are_refused_on_a_frozen_backbone(host, seeded_conv4):
    # The head on a frozen backbone trains on features computed once per image: nothing to distort.
    with pytest.raises(ValueError, match="distort=true distorts training images, but the backbone 'seeded-conv4'"):
        build(host, backbone=seeded_conv4.name, freeze=True, distort=True)
