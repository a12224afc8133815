"""The shared feature transform (none / cl2n / power-cl2n) and the metric heads that use it:
the transform's numbers, fitting the stored mean, and Matching, Siamese and Relation Networks
with power-cl2n on a frozen backbone, on tiny synthetic feature episodes and on images (export)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from metastudio.algorithms.base import Algorithm
from metastudio.engine.checkpoint import load_model, save_model
from metastudio.data.datasets import FewShotDataset
from metastudio.data.episodes import EpisodeSampler
from metastudio.algorithms.feature_transform import (
    FEATURE_TRANSFORM,
    FEATURE_TRANSFORMS,
    apply_feature_transform,
    before_centring,
    feature_transform_hyperparameter,
)
from metastudio.engine.features import precompute_features
from metastudio.plugins.testkit import check_algorithm, synthetic_dataset

from conftest import assert_round_trip

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.filterwarnings("ignore:`torch.jit.trace.*` is deprecated:FutureWarning")]

#: The three heads, as tested: (algorithm, hyperparameters besides the transform).
HEADS = [
    ("matchingnet", {}),
    ("matchingnet", {"projection": 16, "fce": True, "fce_steps": 2}),
    ("siamese", {}),
    ("siamese", {"projection": 16}),
    ("relationnet", {"mlp_hidden": 32}),
    ("relationnet", {"mlp_hidden": 32, "pair_input": "concat-product"}),
]
HEAD_IDS = ["matchingnet", "matchingnet-fce-projection", "siamese", "siamese-projection", "relationnet-concat",
            "relationnet-concat-product"]


# -- the transform ---------------------------------------------------------------------------------

def test_the_transform_against_a_hand_computation():
    # power-cl2n: sqrt([9, 16, 0]) = [3, 4, 0] -> [0.6, 0.8, 0]; sqrt([0, 0, 4]) = [0, 0, 2] -> [0, 0, 1];
    # their mean is [0.3, 0.4, 0.5]; centred, [0.3, 0.4, -0.5] and its negative, of norm sqrt(0.5).
    x = torch.tensor([[9.0, 16.0, 0.0], [0.0, 0.0, 4.0]])
    assert torch.allclose(before_centring(x, "power-cl2n"), torch.tensor([[0.6, 0.8, 0.0], [0.0, 0.0, 1.0]]))
    mean = torch.tensor([0.3, 0.4, 0.5])
    expected = torch.tensor([[0.3, 0.4, -0.5], [-0.3, -0.4, 0.5]]) / math.sqrt(0.5)
    assert torch.allclose(apply_feature_transform(x, "power-cl2n", mean), expected, atol=1e-6)
    # the square root keeps the sign: [-4, 0, 0] -> [-2, 0, 0] -> [-1, 0, 0]
    assert torch.allclose(before_centring(torch.tensor([[-4.0, 0.0, 0.0]]), "power-cl2n"), torch.tensor([[-1.0, 0.0, 0.0]]))
    # cl2n: ([3, 4, 0] - [1, 1, 1]) / |.| = [2, 3, -1] / sqrt(14); no power step
    got = apply_feature_transform(torch.tensor([[3.0, 4.0, 0.0]]), "cl2n", torch.ones(3))
    assert torch.allclose(got, torch.tensor([[2.0, 3.0, -1.0]]) / math.sqrt(14.0), atol=1e-6)
    assert torch.equal(before_centring(x, "cl2n"), x)
    assert apply_feature_transform(x, "none", None) is x
    # exact zeros (ReLU features) keep a finite gradient through the power step
    z = torch.tensor([[0.0, 4.0, 1.0], [2.0, 0.0, 0.0]], requires_grad=True)
    apply_feature_transform(z, "power-cl2n", mean).square().mul(torch.arange(3.0)).sum().backward()
    assert torch.isfinite(z.grad).all()
    with pytest.raises(ValueError, match="needs the stored feature mean"):
        apply_feature_transform(x, "cl2n", None)
    with pytest.raises(ValueError, match="must be one of none, cl2n, power-cl2n"):
        apply_feature_transform(x, "l2", torch.zeros(3))


def test_the_hyperparameter_is_an_architecture_choice():
    assert FEATURE_TRANSFORM.name == "feature_transform" and FEATURE_TRANSFORM.default == "none"
    assert FEATURE_TRANSFORM.role == "architecture" and FEATURE_TRANSFORM.choices == FEATURE_TRANSFORMS
    assert feature_transform_hyperparameter("cl2n").default == "cl2n"
    with pytest.raises(ValueError, match="must be one of"):
        feature_transform_hyperparameter("whiten")


def test_protonet_declares_the_shared_hyperparameter(host):
    assert FEATURE_TRANSFORM in host.algorithm("protonet").hyperparameters


# -- synthetic pretrained features ----------------------------------------------------------------

def feature_dataset(classes: int = 12, per_class: int = 10, dim: int = 64, seed: int = 0,
                    noise: float = 1.0) -> FewShotDataset:
    """Pooled-ReLU-like feature rows [classes * per_class, dim]: non-negative, with a large
    component every row shares (so raw rows are all alike), a class-specific sparse part, noise,
    and an overall strength that varies from row to row."""
    g = torch.Generator().manual_seed(seed)
    shared = 2.0 + torch.rand(dim, generator=g)
    rows = []
    for _ in range(classes):
        centre = shared + 1.5 * torch.rand(dim, generator=g) * (torch.rand(dim, generator=g) < 0.3)
        scale = 0.5 + 1.5 * torch.rand(per_class, 1, generator=g)  # activations vary in strength from image to image
        rows.append((scale * (centre + noise * torch.randn(per_class, dim, generator=g))).clamp_min(0))
    return FewShotDataset(torch.cat(rows), [f"class{c:02d}" for c in range(classes)], [per_class] * classes,
                          name="features")


def build(host, spec, name: str, transform: str = "power-cl2n", **hparams) -> Algorithm:
    torch.manual_seed(0)
    return host.algorithm(name)(spec.build(1, 28), backbone_name=spec.name, image_size=28, channels=1,
                                freeze_backbone=True, hparams={"feature_transform": transform, **hparams})


def test_fitting_the_mean_centres_the_features(host, seeded_conv4):
    ds = feature_dataset()
    rows = ds.images
    algo = build(host, seeded_conv4, "matchingnet")
    assert algo.fit_feature_mean([rows[:50], rows[50:0], rows[50:]]) == len(rows)  # an empty batch is skipped
    before = F.normalize(rows.sign() * rows.abs().sqrt(), dim=1)  # written out, not before_centring()
    assert torch.allclose(algo.feature_mean, before.mean(0), atol=1e-6)
    out = algo.embed(rows)
    assert torch.allclose(out.norm(dim=1), torch.ones(len(rows)), atol=1e-5), "unit length"
    assert torch.allclose(out, F.normalize(before - before.mean(0), dim=1), atol=1e-5)
    # Raw rows all point the same way; transformed ones are spread around the origin.
    assert F.normalize(rows, dim=1).mean(0).norm() > 0.9
    assert out.mean(0).norm() < 0.2
    with pytest.raises(ValueError, match="no images"):
        algo.fit_feature_mean([])
    with pytest.raises(ValueError, match="no feature mean to fit"):
        build(host, seeded_conv4, "matchingnet", "none").fit_feature_mean([rows])


def test_fitting_on_images_and_on_their_precomputed_features_agree(host, seeded_conv4):
    images = synthetic_dataset(classes=4, per_class=6)
    a = build(host, seeded_conv4, "relationnet", "cl2n")
    b = build(host, seeded_conv4, "relationnet", "cl2n")
    assert a.fit_feature_mean([images.images[:10], images.images[10:]]) == 24
    features = precompute_features(b, images)  # float16 rows
    b.fit_feature_mean([features.images])
    assert torch.allclose(a.feature_mean, Algorithm.embed(a, images.images).mean(0), atol=1e-5)
    assert torch.allclose(a.feature_mean, b.feature_mean, atol=1e-2)
    assert a.feature_mean.abs().max() > 0.01


@pytest.mark.parametrize("name", ["protonet", "matchingnet", "siamese", "relationnet"])
def test_the_mean_is_a_saved_buffer_only_with_a_transform(host, seeded_conv4, name):
    assert "feature_mean" not in build(host, seeded_conv4, name, "none").state_dict()
    state = build(host, seeded_conv4, name, "cl2n").state_dict()
    assert state["feature_mean"].shape == (64,)


# -- the heads on feature episodes ----------------------------------------------------------------

def learns_predicts_and_round_trips(host, tmp_path, algo, train, test, meta_batch: int = 1) -> None:
    """Meta-train ``algo`` (feature_transform=power-cl2n, mean fitted) on a fixed few 5-way
    1-shot episodes of ``train``: its loss falls; it predicts probabilities on an episode of
    ``test``; saved and loaded, the mean and the predictions come back."""
    sampler = EpisodeSampler(train, 5, 1, 3, seed=0)
    episodes = [sampler.episode(i) for i in range(4)]  # a fixed few, so that losses are comparable
    algo.configure_training(40)
    algo.train()
    losses = [algo.meta_train_step([episodes[(i + j) % 4] for j in range(meta_batch)])["loss"] for i in range(40)]
    assert all(math.isfinite(x) for x in losses)
    assert sum(losses[-4:]) < sum(losses[:4]), losses
    # probabilities over the classes of a new episode
    algo.eval()
    episode = EpisodeSampler(test, 3, 2, 3, seed=1).episode(0)
    learner = algo.adapt(episode.support)
    probs = learner.predict_proba(episode.query_images)
    assert probs.shape == (9, 3) and probs.dtype == torch.float32 and (probs >= 0).all()
    assert torch.allclose(probs.sum(1), torch.ones(9), atol=1e-5)
    # save and load: the mean comes back with the weights
    loaded = load_model(save_model(algo, tmp_path / f"{algo.name}.safetensors", learner=learner), host)
    assert loaded.algorithm.hparams["feature_transform"] == "power-cl2n"
    assert torch.equal(loaded.algorithm.feature_mean, algo.feature_mean)
    assert torch.allclose(loaded.algorithm.adapt(episode.support).predict_proba(episode.query_images), probs, atol=1e-6)
    assert torch.allclose(loaded.learner.predict_proba(episode.query_images), probs, atol=1e-6)


@pytest.mark.parametrize(("name", "hparams"), HEADS, ids=HEAD_IDS)
def test_heads_with_power_cl2n_learn_predict_and_round_trip_on_feature_episodes(host, seeded_conv4, tmp_path,
                                                                                name, hparams):
    ds = feature_dataset()
    train, test = ds.subset(range(8)), ds.subset(range(8, 12))
    algo = build(host, seeded_conv4, name, lr=3e-3, **hparams)
    algo.fit_feature_mean([train.images])
    rows = test.images[:6]
    with torch.no_grad():
        transformed = apply_feature_transform(rows, "power-cl2n", algo.feature_mean)
        expected = transformed
        if getattr(algo, "projection", None) is not None:
            expected = algo.projection(transformed)
            if name == "siamese":
                expected = torch.sigmoid(expected)
        assert torch.allclose(algo.embed(rows), expected, atol=1e-5), "the transform comes before the head's layers"
    learns_predicts_and_round_trips(host, tmp_path, algo, train, test)


def test_power_cl2n_helps_an_untrained_head_on_raw_looking_features(host, seeded_conv4):
    """What the transform is for: the untrained Siamese head (weighted L1, no projection) on
    features dominated by a shared component does better once they are centred and normalised."""
    ds = feature_dataset(classes=10, per_class=10, seed=3)
    train, test = ds.subset(range(5)), ds.subset(range(5, 10))
    accuracy = {}
    for transform in ("none", "power-cl2n"):
        algo = build(host, seeded_conv4, "siamese", transform).eval()
        if transform != "none":
            algo.fit_feature_mean([train.images])
        sampler = EpisodeSampler(test, 5, 1, 5, seed=2)
        accuracy[transform] = sum(algo.evaluate_episode(sampler.episode(i)) for i in range(20)) / 20
    assert accuracy["power-cl2n"] > accuracy["none"], accuracy


# -- export: the stand-alone learners apply the transform ---------------------------------------------

@pytest.mark.parametrize(("name", "hparams"), HEADS, ids=HEAD_IDS)
@pytest.mark.parametrize("transform", ["cl2n", "power-cl2n"])
def test_the_exported_module_applies_the_transform(host, seeded_conv4, tmp_path, name, hparams, transform):
    images = synthetic_dataset(classes=6, per_class=6)
    algo = build(host, seeded_conv4, name, transform, **hparams).eval()
    algo.fit_feature_mean([images.images])
    assert algo.feature_mean.abs().max() > 0.01  # a mean that matters: skipping it would change the answer
    episode = EpisodeSampler(images, 3, 2, 2, seed=0).episode(0)
    probs = assert_round_trip(host, tmp_path, algo, episode)  # predict_proba == loaded == exported
    module = algo.adapt(episode.support).standalone()
    mean = module.algorithm.feature_mean
    assert module.algorithm.feature_transform_mode == transform and torch.equal(mean, algo.feature_mean)
    with torch.no_grad():
        mean.zero_()
        assert not torch.allclose(module(episode.query_images.float() / 255).softmax(1), probs, atol=1e-4)


def test_copy_feature_transform_still_works_with_a_deprecation_warning(host, seeded_conv4):
    from torch import nn

    from metastudio.algorithms.feature_transform import copy_feature_transform

    algo = build(host, seeded_conv4, "siamese", "cl2n")
    algo.feature_mean.fill_(0.5)
    module = nn.Module()
    with pytest.warns(DeprecationWarning, match="copy_feature_transform is deprecated"):
        assert copy_feature_transform(module, algo) == "cl2n"
    assert torch.equal(module.feature_mean, algo.feature_mean) and module.feature_mean is not algo.feature_mean


def test_heads_follow_the_algorithm_contract_with_a_transform(tmp_path):
    from metastudio_builtins.algorithms.matchingnet import MatchingNetworks
    from metastudio_builtins.algorithms.relationnet import RelationNetworks

    # A trainable backbone: the mean stays at zero (prepare_run refuses this combination, the
    # algorithms themselves do not); what is checked is that everything else holds.
    check_algorithm(MatchingNetworks, tmp_path=tmp_path, hparams={"feature_transform": "power-cl2n"})
    check_algorithm(RelationNetworks, tmp_path=tmp_path,
                    hparams={"feature_transform": "cl2n", "pair_input": "concat-product", "lr": 3e-3})


def test_relation_networks_refuse_vector_options_on_feature_maps(host):
    from metastudio_builtins.algorithms.relationnet import RelationNetworks

    spec = host.backbone("conv4-maps")
    for hparams, name in (({"feature_transform": "cl2n"}, "feature_transform"),
                          ({"pair_input": "concat-product"}, "pair_input")):
        with pytest.raises(ValueError, match=f"{name}=.* applies to feature vectors; the backbone 'conv4-maps' "
                                             "gives feature maps"):
            RelationNetworks(spec.build(1, 28), backbone_name=spec.name, image_size=28, channels=1, hparams=hparams)
