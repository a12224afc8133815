"""Meta-training a head on a frozen backbone's features, computed once.

When the backbone is frozen (a pretrained one), every episode would run the same images through
the same network again and again. :func:`precompute_features` runs each image through it once
and returns a :class:`~metastudio.data.datasets.FewShotDataset` whose rows are the features
[N, D] (float16 in memory); episodes sampled from it carry features instead of images, and
:meth:`Algorithm.embed <metastudio.algorithms.base.Algorithm.embed>` passes them through. The
features also go to the algorithm's feature cache (by image content), so a second run, the
validation split and the app itself reuse them.

Images may be stored smaller than the backbone's input (mini-ImageNet is 84 px, EfficientNet-
Lite0 takes 224): each batch is resized with bilinear interpolation on the way in, as the app's
loader enlarges a small photo (:func:`metastudio.data.images.to_array`), and rounded to uint8
as the loader does.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from metastudio.algorithms.base import Algorithm
from metastudio.data.datasets import FewShotDataset

Progress = Callable[[int, int], None]


def resize_batch(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 [B, C, h, w] -> uint8 [B, C, size, size] (bilinear; antialiased when shrinking)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    shrinking = images.shape[-1] > size or images.shape[-2] > size
    out = F.interpolate(images.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=shrinking)
    return out.round_().clamp_(0, 255).to(torch.uint8)


@torch.inference_mode()
def precompute_features(algorithm: Algorithm, dataset: FewShotDataset, *, batch: int = 64,
                        progress: Progress | None = None) -> FewShotDataset:
    """The frozen backbone's features of every image of ``dataset`` (same classes and order)."""
    if not algorithm.backbone_frozen:
        raise ValueError("features can only be precomputed for a frozen backbone")
    if dataset.is_features:
        return dataset
    if dataset.channels != algorithm.channels:
        raise ValueError(f"the model takes {algorithm.channels}-channel images, the dataset has {dataset.channels}")
    parts, total = [], len(dataset)
    with algorithm.evaluating():
        for start in range(0, total, batch):
            images = resize_batch(dataset.images[start : start + batch], algorithm.image_size)
            # The backbone's own features (Algorithm.embed, not a subclass's transformed ones).
            parts.append(Algorithm.embed(algorithm, images).to("cpu", torch.float16))
            if progress:
                progress(min(start + batch, total), total)
    features = torch.cat(parts) if parts else torch.zeros(0, 1, dtype=torch.float16)
    return FewShotDataset(features, list(dataset.class_names), list(dataset.class_sizes),
                          f"{dataset.name} ({algorithm.backbone_name} features)", list(dataset.problems))
