"""Conv-4 and ResNet-12 as served by the plugin host."""

from __future__ import annotations

import pytest
import torch


@pytest.mark.parametrize("name,channels,size,dim", [("conv4", 1, 28, 64), ("conv4", 3, 84, 1600), ("resnet12", 3, 84, 640),
                                                    ("resnet12", 1, 28, 640)])
def test_feature_sizes(host, name, channels, size, dim):
    net = host.backbone(name).build(channels, size)
    assert net.out_features == dim
    net.eval()
    with torch.no_grad():
        assert net(torch.rand(2, channels, size, size)).shape == (2, dim)


def test_conv4_is_the_standard_architecture(host):
    net = host.backbone("conv4").build(1, 28)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [(1, 64, (3, 3))] + [(64, 64, (3, 3))] * 3
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules()) == 4
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in net.modules()) == 4


def test_resnet12_size_and_a_training_step(host):
    net = host.backbone("resnet12").build(3, 32)
    params = sum(p.numel() for p in net.parameters())
    assert 12e6 < params < 13e6
    algo = host.algorithm("protonet")(net, backbone_name="resnet12", image_size=32, channels=3)
    algo.configure_training(1)
    from metastudio.data.episodes import EpisodeSampler
    from metastudio.plugins.testkit import synthetic_dataset

    ep = EpisodeSampler(synthetic_dataset(classes=4, per_class=3, channels=3, image_size=32), 3, 1, 1).episode(0)
    metrics = algo.meta_train_step([ep])
    assert set(metrics) >= {"loss", "accuracy"} and metrics["loss"] > 0


def test_conv4_omniglot_is_the_shipped_pretrained_conv4(host):
    from importlib import resources

    from safetensors.torch import load

    spec = host.backbone("conv4-omniglot")
    assert spec.pretrained and spec.default_image_size == 28
    a, b = spec.build(1, 28), spec.build(1, 28)
    assert a.out_features == 64
    shipped = load(resources.files("metastudio_builtins.backbones").joinpath("data/conv4-omniglot.safetensors").read_bytes())
    for name, value in a.state_dict().items():
        assert torch.equal(value, shipped[name]), name  # every weight, batch-norm statistics included
        assert torch.equal(value, b.state_dict()[name])  # the same weights every time: it may be frozen
    assert float(shipped["encoder.0.1.running_var"].std()) > 0  # trained statistics, not a fresh layer's ones


def test_conv4_omniglot_refuses_colour_images_with_a_clear_message(host):
    with pytest.raises(ValueError, match="1-channel.*'conv4' to train one from scratch"):
        host.backbone("conv4-omniglot").build(3, 28)

