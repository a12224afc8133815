"""The built-in embedding networks: Conv-4, Conv-4 with feature maps and ResNet-12.

A backbone maps float images [B, C, H, W] to feature vectors [B, D]. It is built by a
:class:`BackboneSpec` factory for a given number of input channels and image size, and it
carries ``out_features`` (D). Plugins offer backbones through the ``metastudio_backbones`` hook.
"""

from __future__ import annotations

import torch
from torch import nn


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
        """The layers in order, for :class:`~metastudio.algorithms.taskbatch.TaskBatchedChain`."""
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
        """The layers in order, for :class:`~metastudio.algorithms.taskbatch.TaskBatchedChain`."""
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
