"""Built-in backbones: Conv-4 (also the one meta-trained on Omniglot, shipped), Conv-4 with
feature maps, ResNet-12, EfficientNet-Lite0 (ImageNet weights, shipped) and, downloaded on first
use, torchvision ResNets and a DINO ViT."""

from __future__ import annotations

from torch import nn

from metastudio.api import BackboneSpec, hookimpl, MetaStudioError

from .networks import Conv4, Conv4Maps, ResNet12


def _lite0(in_channels: int, image_size: int) -> nn.Module:
    from .pretrained import Lite0Features

    return Lite0Features(in_channels)


#: The weights of ``conv4-omniglot`` (package data; written by benchmarks/tools/extract_conv4_omniglot.py).
CONV4_OMNIGLOT_FILE = "data/conv4-omniglot.safetensors"


def _conv4_omniglot(in_channels: int, image_size: int) -> nn.Module:
    """Conv-4 with the weights Prototypical Networks meta-learned on the Omniglot train characters
    (Vinyals split: no val or test character ever trained it). For 1-channel character images;
    a 28x28 image becomes 64 numbers."""
    from importlib import resources

    from safetensors.torch import load

    if in_channels != 1:
        raise ValueError(f"the backbone 'conv4-omniglot' was trained on 1-channel (grey) character images; "
                         f"this data has {in_channels} channels: use 'conv4' to train one from scratch")
    try:
        state = load(resources.files(__package__).joinpath(CONV4_OMNIGLOT_FILE).read_bytes())
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


@hookimpl
def metastudio_backbones():
    return list(BUILTIN_BACKBONES)
