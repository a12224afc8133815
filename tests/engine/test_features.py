"""Meta-training heads on a frozen backbone's precomputed features."""

from __future__ import annotations

import pytest
import torch

from metastudio.algorithms.base import Algorithm
from metastudio.data.episodes import EpisodeSampler
from metastudio.engine.features import precompute_features, resize_batch
from metastudio.plugins.testkit import synthetic_dataset

from conftest import make_class_tree


def frozen(host, spec, name="matchingnet", size=28, **hparams):
    torch.manual_seed(0)
    cls = host.algorithm(name)
    return cls(spec.build(1, size), backbone_name=spec.name, image_size=size, channels=1, freeze_backbone=True,
               hparams=hparams)


def test_features_are_the_backbones_and_episodes_give_the_same_results(host, seeded_conv4):
    algo = frozen(host, seeded_conv4).eval()
    ds = synthetic_dataset(classes=6, per_class=5)
    feats = precompute_features(algo, ds, batch=7)
    assert feats.is_features and feats.images.shape == (30, 64) and feats.images.dtype == torch.float16
    assert feats.class_names == ds.class_names and feats.class_sizes == ds.class_sizes
    assert torch.allclose(feats.images.float(), Algorithm.embed(algo, ds.images), atol=1e-2)
    # the same episode, from images and from features: same predictions
    image_episode = EpisodeSampler(ds, 3, 2, 2, seed=4).episode(0)
    feature_episode = EpisodeSampler(feats, 3, 2, 2, seed=4).episode(0)
    assert feature_episode.support_images.shape == (6, 64)
    assert algo.evaluate_episode(image_episode) == algo.evaluate_episode(feature_episode)
    with torch.inference_mode():
        a = algo.episode_probabilities(image_episode)
        b = algo.episode_probabilities(feature_episode)
    assert torch.allclose(a, b, atol=1e-2)


def test_a_head_trains_on_features(host, seeded_conv4):
    algo = frozen(host, seeded_conv4, fce=True, lr=3e-3)
    feats = precompute_features(algo, synthetic_dataset(classes=12, per_class=6))
    sampler = EpisodeSampler(feats, 5, 1, 3, seed=0)
    algo.configure_training(20)
    algo.train()
    before = {k: v.clone() for k, v in algo.backbone.state_dict().items()}
    losses = [algo.meta_train_step([sampler.episode(i)])["loss"] for i in range(20)]
    assert sum(losses[-4:]) < sum(losses[:4])
    assert all(torch.equal(v, before[k]) for k, v in algo.backbone.state_dict().items())


def test_features_need_a_frozen_backbone_and_resize(host, seeded_conv4):
    cls = host.algorithm("matchingnet")
    trainable = cls(seeded_conv4.build(1, 28), backbone_name="seeded-conv4", image_size=28, channels=1)
    with pytest.raises(ValueError, match="frozen"):
        precompute_features(trainable, synthetic_dataset(classes=3, per_class=2))
    with pytest.raises(ValueError, match="frozen"):
        trainable.embed(torch.zeros(2, 64))
    small = torch.randint(0, 256, (2, 1, 14, 14), dtype=torch.uint8)
    big = resize_batch(small, 28)
    assert big.shape == (2, 1, 28, 28) and big.dtype == torch.uint8
    assert resize_batch(big, 28) is big


def test_cli_trains_a_head_on_frozen_features(host, seeded_conv4, tmp_path, capsys, monkeypatch):
    from metastudio.cli import main
    from metastudio.engine.checkpoint import load_model
    from metastudio.plugins import manager

    monkeypatch.setattr(manager, "_HOST", host)  # the CLI uses the host that knows seeded-conv4
    root = make_class_tree(tmp_path / "d", classes=6, per_class=5, size=20)
    out = tmp_path / "head.safetensors"
    code = main(["train", "--algorithm", "matchingnet", "--backbone", "seeded-conv4", "--freeze-backbone",
                 "--dataset", "folder", "--root", str(root), "--episodes", "6", "--ways", "3", "--queries", "2",
                 "--val-split", "none", "--out", str(out), "--device", "cpu", "--hp", "fce=true"])
    assert code == 0
    err = capsys.readouterr().err
    assert "meta-training the head on 64-d seeded-conv4 features" in err
    loaded = load_model(out, host)
    assert loaded.algorithm.image_size == 28  # the backbone's size, though the data was decoded at 84
    assert loaded.algorithm.backbone_frozen
