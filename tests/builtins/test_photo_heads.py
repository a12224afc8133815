"""The optimization- and model-based algorithms on a frozen pretrained backbone (the ``-photos``
models): the feature transform before them, MAML / Reptile / the LSTM meta-learner with a
meta-learned hidden layer (``head_hidden``), MANN and Meta Networks on feature rows -- on tiny
synthetic feature episodes and on images (export)."""

from __future__ import annotations

import pytest
import torch

from metastudio.data.episodes import EpisodeSampler
from metastudio.algorithms.feature_transform import apply_feature_transform
from metastudio.plugins.testkit import synthetic_dataset

from conftest import assert_round_trip
from helpers import assert_exports_match
from test_feature_transform import build, feature_dataset, learns_predicts_and_round_trips

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.filterwarnings("ignore:`torch.jit.trace.*` is deprecated:FutureWarning")]

#: (algorithm, hyperparameters besides the transform, learning rate for the loss test)
HEADS = [
    ("maml", {"head_hidden": 16, "inner_lr": 0.5, "adapt_steps": 2}, 3e-3),
    ("maml", {"head_hidden": 16, "inner_lr": 0.5, "first_order": True}, 3e-3),
    ("reptile", {"head_hidden": 16, "inner_steps": 3, "inner_batch": 0, "adapt_steps": 3}, 0.5),
    ("metalstm", {"head_hidden": 8, "inner_steps": 2, "adapt_steps": 2}, 3e-3),
    ("mann", {"controller": 24, "slots": 16, "slot_size": 8, "reads": 1, "max_ways": 5}, 3e-3),
    ("metanet", {"hidden": 16, "key_dim": 8, "meta_hidden": 8, "max_ways": 5}, 3e-3),
]
IDS = ["maml", "fomaml", "reptile", "metalstm", "mann", "metanet"]


@pytest.mark.parametrize(("name", "hparams", "lr"), HEADS, ids=IDS)
def test_heads_learn_predict_and_round_trip_on_transformed_features(host, seeded_conv4, tmp_path, name, hparams, lr):
    ds = feature_dataset()
    train, test = ds.subset(range(8)), ds.subset(range(8, 12))
    algo = build(host, seeded_conv4, name, lr=lr, **hparams)
    algo.fit_feature_mean([train.images])
    rows = test.images[:6]
    with torch.no_grad():
        assert torch.allclose(algo.embed(rows), apply_feature_transform(rows, "power-cl2n", algo.feature_mean),
                              atol=1e-5), "the head sees transformed features"
    learns_predicts_and_round_trips(host, tmp_path, algo, train, test, meta_batch=2)


@pytest.mark.parametrize(("name", "hparams", "lr"), HEADS, ids=IDS)
def test_the_exported_classifier_applies_the_transform_and_the_hidden_layer(host, seeded_conv4, tmp_path, name,
                                                                            hparams, lr):
    images = synthetic_dataset(classes=6, per_class=6)
    algo = build(host, seeded_conv4, name, "cl2n", **hparams).eval()
    algo.fit_feature_mean([images.images])
    assert algo.feature_mean.abs().max() > 0.01  # a mean that matters: skipping it would change the answer
    episode = EpisodeSampler(images, 3, 2, 2, seed=0).episode(0)
    probs = assert_round_trip(host, tmp_path, algo, episode)  # predict_proba == loaded == stand-alone copy
    learner = algo.adapt(episode.support)
    assert_exports_match(learner, algo, tmp_path / "export", episode.query_images)
    x = episode.query_images.float() / 255
    copy = learner.standalone()
    with torch.no_grad():
        assert torch.allclose(copy(x).softmax(1), probs, atol=1e-5)
        copy.algorithm.feature_mean.zero_()
        assert not torch.allclose(copy(x).softmax(1), probs, atol=1e-4), "the copy centres with its own mean"
    if "head_hidden" in hparams:
        copy = learner.standalone()
        with torch.no_grad():
            copy.tensors["fast.body_weight"].zero_()
            assert not torch.allclose(copy(x).softmax(1), probs, atol=1e-4), "the adapted hidden layer is used"
    assert torch.equal(learner.predict_proba(episode.query_images), probs), "the copies are the learner's own"


def _meta_gradient_norms(algo, episodes) -> dict[str, float]:
    algo.configure_training(1)
    algo.train()
    algo.optimizer.zero_grad(set_to_none=True)
    loss, _ = algo.query_loss(episodes, create_graph=True)
    loss.backward()
    return {k: float(v.grad.norm()) if v.grad is not None else 0.0 for k, v in algo.meta_parameters().items()}


def test_the_output_layer_alone_has_nothing_to_meta_learn_and_the_hidden_layer_does(host, seeded_conv4):
    """Why ``head_hidden`` exists: on fixed features, MAML's shared output row cancels in the
    softmax, so its meta-gradient is zero; a hidden layer gets one (and so does the row then,
    through the hidden layer's adaptation)."""
    ds = feature_dataset()
    episodes = [EpisodeSampler(ds, 5, 1, 3, seed=0).episode(i) for i in range(2)]
    alone = build(host, seeded_conv4, "maml", inner_lr=0.5)
    alone.fit_feature_mean([ds.images])
    with torch.no_grad():
        alone.head_weight.normal_()  # any starting row, not only zeros
    norms = _meta_gradient_norms(alone, episodes)
    assert set(norms) == {"head_weight", "head_bias"}
    assert max(norms.values()) < 1e-6, norms
    hidden = build(host, seeded_conv4, "maml", inner_lr=0.5, head_hidden=16)
    hidden.fit_feature_mean([ds.images])
    norms = _meta_gradient_norms(hidden, episodes)
    assert norms["body_weight"] > 1e-4 and norms["body_bias"] > 1e-6, norms


def test_a_hidden_layer_needs_a_frozen_backbone(host):
    spec = host.backbone("conv4")
    with pytest.raises(ValueError, match="head_hidden=8 adds a layer on a frozen pretrained backbone"):
        host.algorithm("maml")(spec.build(1, 28), backbone_name="conv4", image_size=28, channels=1,
                               hparams={"head_hidden": 8})
