"""The backbone contract: a :class:`BackboneSpec` names a factory that builds an embedding
network (float images [B, C, H, W] to features [B, D], with ``out_features`` = D) for a number
of input channels and an image size. Plugins offer backbones through the
``metastudio_backbones`` hook; the built-in ones live in ``metastudio_builtins.backbones``."""

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
