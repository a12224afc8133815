"""Pretrained features for photos: CL2N prototypes on a frozen backbone, the feature cache in the
adapt path, and the shipped `photos` model on generated photos."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from PIL import Image

from metastudio.algorithms.base import Algorithm
from metastudio.engine.checkpoint import load_model, save_model
from metastudio.data.episodes import EpisodeSampler
from metastudio.data.feature_cache import FeatureCache
from metastudio.plugins.testkit import synthetic_dataset

from conftest import class_pattern, real_data


def frozen_protonet(host, seed=0, backbone="conv4", **hparams):
    torch.manual_seed(seed)
    cls, spec = host.algorithm("protonet"), host.backbone(backbone)
    return cls(spec.build(1, 28), backbone_name=spec.name, image_size=28, channels=1, freeze_backbone=True,
               hparams={"feature_transform": "cl2n", **hparams}).eval()


def test_cl2n_centres_normalises_and_round_trips(host, tmp_path, seeded_conv4):
    algo = frozen_protonet(host, backbone=seeded_conv4.name, temperature=20.0)
    ds = synthetic_dataset(classes=8, per_class=6)
    n = algo.fit_feature_mean([ds.images[:24], ds.images[24:]])
    assert n == 48
    raw = Algorithm.embed(algo, ds.images)  # the backbone features, before the transform
    assert torch.allclose(algo.feature_mean, raw.mean(0), atol=1e-5)
    f = algo.embed(ds.images[:5])
    assert torch.allclose(f.norm(dim=1), torch.ones(5), atol=1e-5)
    q, p = f[:2], f[2:5]
    assert torch.allclose(algo.logits(q, p), -20.0 * torch.cdist(q, p) ** 2, atol=1e-3)
    assert set(algo.state_dict()) == {"feature_mean"}
    ep = EpisodeSampler(ds, 3, 2, 2, seed=0).episode(0)
    before = algo.adapt(ep.support).predict_proba(ep.query_images)
    loaded = load_model(save_model(algo, tmp_path / "m.safetensors"), host).algorithm
    assert loaded.hparams["feature_transform"] == "cl2n" and loaded.fit == "stretch"
    assert torch.allclose(loaded.adapt(ep.support).predict_proba(ep.query_images), before, atol=1e-6)


def test_readapting_after_adding_one_image_embeds_only_that_image(host, tmp_path):
    algo = frozen_protonet(host)
    algo.feature_cache = FeatureCache(tmp_path / "features")
    ds = synthetic_dataset(classes=4, per_class=6)
    ep = EpisodeSampler(ds, 3, 3, 2, seed=0).episode(0)
    first = algo.adapt(ep.support).predict_proba(ep.query_images)
    misses = algo.feature_cache.misses
    assert misses == len(ep.support_images) + len(ep.query_images)
    again = algo.adapt(ep.support).predict_proba(ep.query_images)
    assert algo.feature_cache.misses == misses and torch.equal(first, again)
    from metastudio.data.episodes import SupportSet

    new_image = 255 - ep.support_images[:1]  # an image not seen before
    grown = SupportSet(torch.cat([ep.support_images, new_image]),
                       torch.cat([ep.support_labels, torch.tensor([0])]), ep.class_names)
    algo.adapt(grown)
    assert algo.feature_cache.misses == misses + 1


def test_features_of_other_weights_never_mix(host, tmp_path):
    a, b = frozen_protonet(host, seed=1), frozen_protonet(host, seed=2)
    assert a.feature_namespace() != b.feature_namespace()
    assert a.feature_namespace() == frozen_protonet(host, seed=1).feature_namespace()


@pytest.mark.parametrize("model", ["photos", "matchingnet-photos", "siamese-photos"])
def test_classify_with_the_shipped_photos_models(tmp_path, capsys, model):
    """Generated photos of three patterns. (relationnet-photos is left out: its learned relation
    module labels these synthetic patterns at chance; it is tested on real photos below.)"""
    from metastudio.cli import main
    from metastudio.app.catalogue import shipped_models

    if model not in shipped_models():
        pytest.fail(f"resources/models/{model}.safetensors is missing")
    rng = np.random.default_rng(3)
    names = ["red-mug", "green-leaf", "blue-part"]
    truth = {}
    for c, name in enumerate(names):
        (tmp_path / "support" / name).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(class_pattern(60 + c, 64, rng)).resize((320, 240)).save(tmp_path / "support" / name / f"{i}.jpg")
        for i in range(2):
            q = tmp_path / "query" / f"{name}-{i}.jpg"
            q.parent.mkdir(exist_ok=True)
            Image.fromarray(class_pattern(60 + c, 64, rng)).resize((320, 240)).save(q)
            truth[str(q)] = name
    out = tmp_path / "p.csv"
    assert main(["classify", "--model", model, "--support", str(tmp_path / "support"), "--query",
                 str(tmp_path / "query"), "--csv", str(out), "--device", "cpu"]) == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 6 and sum(r["predicted"] == truth[r["file"]] for r in rows) >= 5


def test_power_cl2n_centres_signed_square_roots(host):
    import torch.nn.functional as F

    algo = frozen_protonet(host, feature_transform="power-cl2n")
    ds = synthetic_dataset(classes=6, per_class=4)
    algo.fit_feature_mean([ds.images])
    raw = Algorithm.embed(algo, ds.images)
    before = F.normalize(raw.sign() * raw.abs().sqrt(), dim=1)
    assert torch.allclose(algo.feature_mean, before.mean(0), atol=1e-5)
    assert torch.allclose(algo.embed(ds.images), F.normalize(before - before.mean(0), dim=1), atol=1e-5)


@pytest.mark.realdata
@pytest.mark.parametrize("model", ["photos", "matchingnet-photos", "siamese-photos", "relationnet-photos"])
def test_shipped_photos_models_classify_real_photos_of_unseen_classes(tmp_path, model):
    """A 5-way 5-shot task of mini-ImageNet val photos (classes no model was trained on) through
    `metastudio classify`: every shipped photos model labels most of its 50 queries right."""
    import zipfile

    from metastudio.cli import main

    archive = zipfile.ZipFile(real_data("mini-imagenet", "val.zip"))
    names = sorted(n for n in archive.namelist() if n.endswith(".jpg"))
    classes = sorted({n.split("/")[1] for n in names})[::3][:5]
    assert len(classes) == 5
    truth = {}
    for c in classes:
        files = [n for n in names if n.split("/")[1] == c][:15]
        for i, name in enumerate(files):
            target = tmp_path / ("support" if i < 5 else "query") / (c if i < 5 else "") / name.split("/")[-1]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(archive.read(name))
            if i >= 5:
                truth[str(target)] = c
    out = tmp_path / "p.csv"
    assert main(["classify", "--model", model, "--support", str(tmp_path / "support"), "--query",
                 str(tmp_path / "query"), "--csv", str(out), "--device", "cpu"]) == 0
    rows = list(csv.DictReader(out.open()))
    right = sum(r["predicted"] == truth[r["file"]] for r in rows)
    # 600-episode 5-shot accuracies are 88-93 %; 35 of 50 leaves room for one hard task.
    assert len(rows) == 50 and right >= 35, f"{model}: {right} of 50"
