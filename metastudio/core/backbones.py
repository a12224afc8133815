"""Embedding networks (backbones) shared by the algorithms.

A backbone maps float images [B, C, H, W] to feature vectors [B, D]. It is built by a
:class:`BackboneSpec` factory for a given number of input channels and image size, and it
carries ``out_features`` (D). Plugins offer backbones through the ``metastudio_backbones`` hook.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class BackboneSpec:
    """A named backbone a plugin offers: ``factory(in_channels, image_size) -> nn.Module``."""

    name: str
    factory: Callable[[int, int], nn.Module]
    description: str = ""
    #: Image size the backbone is meant for (a hint for forms and defaults; None = any).
    default_image_size: int | None = None
    #: True when ``factory`` builds the same trained weights every time (pretrained weights
    #: shipped or downloaded): only such a backbone may be frozen, because a frozen backbone is
    #: not saved in model files and loading rebuilds it with the factory.
    pretrained: bool = False

    def build(self, in_channels: int, image_size: int) -> nn.Module:
        net = self.factory(in_channels, image_size)
        if not hasattr(net, "out_features"):
            net.out_features = feature_dim(net, in_channels, image_size)
        return net


def feature_dim(net: nn.Module, in_channels: int, image_size: int) -> int:
    was_training = net.training
    net.eval()
    with torch.no_grad():
        out = net(torch.zeros(2, in_channels, image_size, image_size))
    net.train(was_training)
    return int(out.shape[-1])


def conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class Conv4(nn.Module):
    """Four blocks of conv3x3 - batch norm - ReLU - max-pool 2 (Vinyals et al. 2016; Snell et al. 2017).

    With 64 filters a 28x28 Omniglot image becomes a 64-d vector, an 84x84 image 1600-d.
    The convolutions carry no bias: the batch norm that follows would cancel it.
    """

    def __init__(self, in_channels: int = 1, image_size: int = 28, hidden: int = 64):
        super().__init__()
        self.encoder = nn.Sequential(
            conv_block(in_channels, hidden), conv_block(hidden, hidden),
            conv_block(hidden, hidden), conv_block(hidden, hidden),
        )
        side = image_size
        for _ in range(4):
            side //= 2
        self.out_features = hidden * max(side, 1) ** 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x).flatten(1)

    def functional_chain(self) -> list[tuple[str, nn.Module]]:
        """The layers in order, for :class:`~metastudio.core.taskbatch.TaskBatchedChain`."""
        return [("encoder.", self.encoder), ("", nn.Flatten())]


class Conv4Maps(nn.Module):
    """Conv-4 that keeps spatial feature maps, the embedding of Relation Networks (Sung et al.
    2018) for characters: four blocks of conv3x3 - batch norm - ReLU, with max-pool 2 after the
    first two only. A 28x28 image becomes 64 maps of 7x7 (84x84: 64 x 21 x 21).

    ``forward`` returns the maps flattened to [B, C*H*W] (every backbone gives vectors);
    ``feature_shape`` = (C, H, W) says how to fold them back, for modules that compare maps.
    """

    def __init__(self, in_channels: int = 1, image_size: int = 28, hidden: int = 64):
        super().__init__()

        def block(cin: int, pool: bool) -> nn.Sequential:
            layers = [nn.Conv2d(cin, hidden, 3, padding=1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True)]
            return nn.Sequential(*layers, nn.MaxPool2d(2)) if pool else nn.Sequential(*layers)

        self.encoder = nn.Sequential(block(in_channels, True), block(hidden, True), block(hidden, False), block(hidden, False))
        side = max(image_size // 2 // 2, 1)
        self.feature_shape = (hidden, side, side)
        self.out_features = hidden * side * side

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x).flatten(1)

    def functional_chain(self) -> list[tuple[str, nn.Module]]:
        """The layers in order, for :class:`~metastudio.core.taskbatch.TaskBatchedChain`."""
        return [("encoder.", self.encoder), ("", nn.Flatten())]


class _ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
        )
        self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.out = nn.Sequential(nn.LeakyReLU(0.1, inplace=True), nn.MaxPool2d(2, ceil_mode=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(x) + self.shortcut(x))


class ResNet12(nn.Module):
    """ResNet-12 of TADAM / MetaOptNet / RFS: four residual blocks (64-160-320-640), each of
    three conv3x3 with batch norm and leaky ReLU, a 1x1 shortcut and max-pool 2, then global
    average pooling to a 640-d vector."""

    def __init__(self, in_channels: int = 3, image_size: int = 84, widths: tuple[int, ...] = (64, 160, 320, 640)):
        super().__init__()
        blocks, cin = [], in_channels
        for w in widths:
            blocks.append(_ResBlock(cin, w))
            cin = w
        self.blocks = nn.Sequential(*blocks)
        self.out_features = widths[-1]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="leaky_relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x).mean(dim=(2, 3))


def _lite0(in_channels: int, image_size: int) -> nn.Module:
    from .pretrained import Lite0Features

    return Lite0Features(in_channels)


#: The weights of ``conv4-omniglot`` (package data; written by benchmarks/extract_conv4_omniglot.py).
CONV4_OMNIGLOT_FILE = "data/conv4-omniglot.safetensors"


def _conv4_omniglot(in_channels: int, image_size: int) -> nn.Module:
    """Conv-4 with the weights Prototypical Networks meta-learned on the Omniglot train characters
    (Vinyals split: no val or test character ever trained it). For 1-channel character images;
    a 28x28 image becomes 64 numbers."""
    from importlib import resources

    from safetensors.torch import load

    from .errors import MetaStudioError

    if in_channels != 1:
        raise ValueError(f"the backbone 'conv4-omniglot' was trained on 1-channel (grey) character images; "
                         f"this data has {in_channels} channels: use 'conv4' to train one from scratch")
    try:
        state = load(resources.files("metastudio.core").joinpath(CONV4_OMNIGLOT_FILE).read_bytes())
    except (FileNotFoundError, OSError) as e:
        raise MetaStudioError(f"the weights of the backbone 'conv4-omniglot' are missing ({e}); reinstall MetaStudio") from e
    net = Conv4(1, image_size)
    net.load_state_dict(state)
    return net


def _on_demand(kind: str, name: str, *spec: str):
    def factory(in_channels: int, image_size: int) -> nn.Module:
        from . import pretrained

        if kind == "torchvision":
            return pretrained.torchvision_backbone(name, *spec, in_channels)
        return pretrained.timm_backbone(name, *spec, in_channels)

    return factory


BUILTIN_BACKBONES = (
    BackboneSpec("conv4", lambda c, s: Conv4(c, s), "Conv-4: 4 x (conv3x3 64, batch norm, ReLU, max-pool). Small, fast, the few-shot standard.", 28),
    BackboneSpec("conv4-omniglot", _conv4_omniglot, "Conv-4 meta-trained on Omniglot's train characters (shipped, "
                 "works offline), 64-d features at 28x28. For handwritten characters and symbols, frozen.", 28,
                 pretrained=True),
    BackboneSpec("conv4-maps", lambda c, s: Conv4Maps(c, s), "Conv-4 keeping 64 feature maps (max-pool in the first two "
                 "blocks only; 64x7x7 at 28x28), for Relation Networks.", 28),
    BackboneSpec("resnet12", lambda c, s: ResNet12(c, s), "ResNet-12 (64-160-320-640), 640-d features. Stronger on photos, ~12M parameters.", 84),
    BackboneSpec("efficientnet-lite0", _lite0, "EfficientNet-Lite0 with ImageNet weights (shipped, works offline), "
                 "1280-d features. For photos, at 224x224.", 224, pretrained=True),
    # Downloaded on first use (needs the internet once; cached by torch / huggingface_hub).
    BackboneSpec("resnet18-imagenet", _on_demand("torchvision", "resnet18-imagenet", "resnet18", "ResNet18_Weights.IMAGENET1K_V1"),
                 "torchvision ResNet-18, ImageNet weights (downloaded once, 45 MB), 512-d features.", 224, pretrained=True),
    BackboneSpec("resnet50-imagenet", _on_demand("torchvision", "resnet50-imagenet", "resnet50", "ResNet50_Weights.IMAGENET1K_V2"),
                 "torchvision ResNet-50, ImageNet weights (downloaded once, 98 MB), 2048-d features.", 224, pretrained=True),
    BackboneSpec("dino-vit-small", _on_demand("timm", "dino-vit-small", "vit_small_patch16_224.dino"),
                 "timm ViT-S/16 self-supervised with DINO (downloaded once, 87 MB), 384-d features; strong for few-shot.", 224, pretrained=True),
)
