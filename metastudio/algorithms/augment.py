"""Random affine distortions of training images (Koch, Zemel and Salakhutdinov 2015).

Omniglot's variation within a class is mostly how differently people draw the same character:
a little rotated, sheared, larger or smaller, off centre. Koch et al. simulated that on training
images with small random affine transformations -- rotation in [-10, 10] degrees, shear in
[-0.3, 0.3] along each axis, scale in [0.8, 1.2] along each axis and translation by up to 2 of
105 pixels along each axis, each component present with probability 0.5. :func:`random_affine`
applies them to a float batch with ``affine_grid``/``grid_sample`` (bilinear, edges repeated,
which keeps Omniglot's white background white), drawing every image's transformation
independently.

Algorithms offer it by declaring the :data:`DISTORT` and :data:`DISTORT_PROB` hyperparameters
(role ``training``) and embedding training images with
:meth:`~metastudio.algorithms.base.Algorithm.training_embed`: only meta-training distorts;
adaptation, prediction and validation never do. A frozen backbone refuses ``distort``: heads on
it train on features computed once per image.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from metastudio.algorithms.hyperparameters import HyperParameter

#: Ranges of the distortions: rotation (degrees), shear, scale, translation (fraction of the side).
ROTATION, SHEAR, SCALE, TRANSLATION = 10.0, 0.3, (0.8, 1.2), 2.0 / 105.0

DISTORT = HyperParameter(
    "distort", bool, False, "Randomly distort training images (rotation, shear, scale, translation, as in Koch et "
    "al. 2015). Never applied when adapting or predicting.", role="training")
DISTORT_PROB = HyperParameter(
    "distort_prob", float, 0.5, "With distort: the probability of each of the four components.", 0.0, 1.0,
    role="training")


def random_affine(images: torch.Tensor, prob: float) -> torch.Tensor:
    """Koch et al.'s distortions applied to float images [B, C, H, W]: each image gets its own
    random rotation, shear, scale and translation, each component present with probability
    ``prob`` (identity otherwise). Uses the global torch random generator."""
    n, dev = images.shape[0], images.device

    def component(low: float, high: float, identity: float) -> torch.Tensor:
        value = torch.empty(n, device=dev).uniform_(low, high)
        return torch.where(torch.rand(n, device=dev) < prob, value, torch.full_like(value, identity))

    angle = component(-ROTATION, ROTATION, 0.0) * (math.pi / 180.0)
    shear_x, shear_y = component(-SHEAR, SHEAR, 0.0), component(-SHEAR, SHEAR, 0.0)
    scale_x, scale_y = component(*SCALE, 1.0), component(*SCALE, 1.0)
    # affine_grid works in [-1, 1] coordinates, where the whole side spans 2.
    shift_x, shift_y = component(-TRANSLATION, TRANSLATION, 0.0) * 2, component(-TRANSLATION, TRANSLATION, 0.0) * 2
    cos, sin = angle.cos(), angle.sin()
    rotation = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)  # [n, 2, 2]
    ones = torch.ones_like(shear_x)
    shear = torch.stack([torch.stack([ones, shear_x], 1), torch.stack([shear_y, ones], 1)], 1)
    scale = torch.diag_embed(torch.stack([scale_x, scale_y], 1))
    theta = torch.cat([rotation @ shear @ scale, torch.stack([shift_x, shift_y], 1).unsqueeze(2)], 2)  # [n, 2, 3]
    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
