"""Feature transforms for frozen pretrained features, shared by the metric heads.

Pooled ReLU features of a pretrained network (EfficientNet-Lite0's 1280-d vectors, say) are all
non-negative, heavy-tailed and far from the origin: every two of them have a large cosine
similarity, and distances between them are dominated by a few large components. Centring them
on the mean of a base (training) set and scaling them to unit length (CL2N, the SimpleShot
recipe of Wang et al. 2019) makes nearest-neighbour comparisons work much better; taking signed
square roots first and normalising (``power-cl2n``) helps further on pooled ReLU features. The
modes, for features ``x`` [B, D] and a stored mean ``m`` [D]:

* ``none``: ``x`` unchanged;
* ``cl2n``: ``normalize(x - m)``;
* ``power-cl2n``: ``normalize(normalize(sign(x) * sqrt(|x|)) - m)``.

``m`` is the mean over base-class images of the features as they are just before centring
(``x`` for cl2n, ``normalize(sign(x) sqrt|x|)`` for power-cl2n); it is a buffer of the algorithm
(``feature_mean``), saved with the trained model, which is why ``feature_transform`` is an
``architecture`` hyperparameter. It is fitted by :meth:`FeatureTransformMixin.fit_feature_mean`
(:func:`metastudio.app.runs.prepare_run` does so before meta-training on a frozen backbone).

A head may also learn a linear layer after the backbone (and the transform): it declares
:func:`projection_hyperparameter` and builds the layer with :func:`projection_layer`.

An algorithm gets the transform by declaring :data:`FEATURE_TRANSFORM` (or a variant from
:func:`feature_transform_hyperparameter`) and inheriting :class:`FeatureTransformMixin` before
:class:`~metastudio.algorithms.base.Algorithm`: its :meth:`~FeatureTransformMixin.embed` is
then transformed, and so is what a learner's ``forward`` computes with it (the stored mean is a
buffer of the algorithm, so a stand-alone copy of the learner carries it).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from metastudio.algorithms.base import Algorithm
from metastudio.algorithms.hyperparameters import HyperParameter
from metastudio.errors import MetaStudioDeprecationWarning

#: The modes, in the order forms show them.
FEATURE_TRANSFORMS = ("none", "cl2n", "power-cl2n")

_HELP = ("What is done to features before comparing them: nothing; centre them on a stored mean and scale them "
         "to unit length (cl2n, the SimpleShot recipe for pretrained features); or first take signed square roots "
         "and scale to unit length, then centre and scale again (power-cl2n, better for pooled ReLU features). The "
         "centring mean is stored with the trained model, so this is fixed by it.")


def feature_transform_hyperparameter(default: str = "none", help: str = _HELP) -> HyperParameter:
    """The ``feature_transform`` hyperparameter (choices :data:`FEATURE_TRANSFORMS`, role
    ``architecture``: the stored mean is part of the trained weights), with its own default or
    help when an algorithm needs them."""
    return HyperParameter("feature_transform", str, default, help, choices=FEATURE_TRANSFORMS, role="architecture")


#: ``feature_transform`` as most algorithms declare it (default ``none``).
FEATURE_TRANSFORM = feature_transform_hyperparameter()


def _check_mode(mode: str) -> None:
    if mode not in FEATURE_TRANSFORMS:
        raise ValueError(f"feature_transform must be one of {', '.join(FEATURE_TRANSFORMS)}, got {mode!r}")


def before_centring(features: torch.Tensor, mode: str) -> torch.Tensor:
    """Features [B, D] as they are just before centring: signed square roots scaled to unit
    length for ``power-cl2n``, unchanged otherwise (the feature mean is their mean).

    The magnitudes are clamped to the smallest normal float before the square root: the same
    numbers (a zero stays zero through its sign; only subnormal inputs would move, by less than
    1e-19), but a finite gradient at exact zeros, which ReLU features are full of (the plain
    ``sqrt`` gives 0 * inf = NaN there when the backbone is trained through the transform)."""
    if mode == "power-cl2n":
        tiny = torch.finfo(features.dtype).tiny
        return F.normalize(features.sign() * features.abs().clamp_min(tiny).sqrt(), dim=1)
    return features


def apply_feature_transform(features: torch.Tensor, mode: str, mean: torch.Tensor | None) -> torch.Tensor:
    """Features [B, D] transformed by ``mode`` (see the module docstring) with the centring
    ``mean`` [D] (unused, and may be None, for ``none``). Pure tensor operations, so a module
    calling it traces and exports (``mode`` is a Python constant)."""
    if mode == "none":
        return features
    _check_mode(mode)
    if mean is None:
        raise ValueError(f"feature_transform={mode} needs the stored feature mean")
    return F.normalize(before_centring(features, mode) - mean, dim=1)


def copy_feature_transform(module: nn.Module, algorithm: Algorithm) -> str:
    """Deprecated (a learner is a module: its stand-alone copy, ``Learner.standalone``, carries
    the algorithm's ``feature_mean``): register a float32 CPU copy of the algorithm's
    ``feature_mean`` as the buffer ``feature_mean`` of ``module`` (when the transform is not
    ``none``) and return the mode, for ``apply_feature_transform(x, mode, module.feature_mean)``."""
    warnings.warn("copy_feature_transform is deprecated: a Learner is a module whose stand-alone copy "
                  "(Learner.standalone) carries the feature mean", MetaStudioDeprecationWarning, stacklevel=2)
    mode = str(algorithm.hparams.get("feature_transform", "none"))
    if mode != "none":
        with torch.no_grad():  # cloned outside inference mode: the original may be an inference tensor
            module.register_buffer("feature_mean", algorithm.feature_mean.detach().to("cpu", torch.float32).clone())
    return mode


def projection_hyperparameter(help: str) -> HyperParameter:  # noqa: A002 - HyperParameter's own word
    """The ``projection`` hyperparameter of a head on backbone features: the width of a learned
    linear layer after the backbone, 0 for none (at most 16384; role ``architecture``), with the
    head's own ``help``. :func:`projection_layer` builds the layer."""
    return HyperParameter("projection", int, 0, help, 0, 16384, role="architecture")


def projection_layer(in_features: int, width: int) -> tuple[nn.Linear | None, int]:
    """The linear layer from ``in_features`` that ``projection=width`` declares (None for 0) and
    the width of the features after it."""
    if width > 0:
        return nn.Linear(in_features, width), width
    return None, in_features


class FeatureTransformMixin:
    """Gives an :class:`~metastudio.algorithms.base.Algorithm` the ``feature_transform``
    hyperparameter's behaviour: put it before ``Algorithm`` in the bases and declare
    :data:`FEATURE_TRANSFORM` among the hyperparameters.

    * When the mode is not ``none``, a buffer ``feature_mean`` [backbone.out_features] (zeros
      until fitted) is registered, so it is saved and loaded with the model.
    * :meth:`embed` is the backbone's features (``Algorithm.embed``, which also passes
      precomputed feature rows through) transformed: a head's own layers (projection, FCE,
      distance, relation module) come after it.
    * :meth:`fit_feature_mean` sets the mean from base-class images or feature rows (what the
      engine calls before training for ``feature_mean_fitted = "before training"``), and
      :meth:`update_feature_mean` keeps it up to date step by step for an algorithm that fits it
      itself while the backbone trains (``"by the algorithm"``); :meth:`backbone_features` are
      the features before the transform.
    """

    #: Who sets the centring mean, declared by the algorithm: ``"before training"`` (the engine
    #: fits it on the training images before meta-training, which needs a frozen backbone: a
    #: trained one changes its features) or ``"by the algorithm"`` (it keeps the mean up to
    #: date while it trains, as SimpleShot does, so the backbone may train too).
    feature_mean_fitted: ClassVar[str] = "before training"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _check_mode(self.feature_transform_mode)
        if self.feature_transform_mode != "none":
            self.register_buffer("feature_mean", torch.zeros(int(self.backbone.out_features)))

    @property
    def feature_transform_mode(self) -> str:
        """The ``feature_transform`` hyperparameter's value."""
        return str(self.hparams.get("feature_transform", "none"))

    def transform_features(self, features: torch.Tensor) -> torch.Tensor:
        """Backbone features [B, D] -> transformed features [B, D] (unchanged for ``none``)."""
        mode = self.feature_transform_mode
        return apply_feature_transform(features, mode, self.feature_mean if mode != "none" else None)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """The backbone's features (see :meth:`Algorithm.embed`), transformed."""
        return self.transform_features(super().embed(images))

    def backbone_features(self, images: torch.Tensor) -> torch.Tensor:
        """The backbone's own features [B, D] of ``images``, not transformed
        (:meth:`Algorithm.embed`, with gradients when training): what a classifier over the
        training classes learns from, when :meth:`embed` gives the transformed ones."""
        return Algorithm.embed(self, images)

    @torch.no_grad()
    def update_feature_mean(self, images: torch.Tensor, momentum: float = 0.02) -> None:
        """Keep the centring mean up to date while training, for ``feature_mean_fitted = "by the
        algorithm"``: move it the share ``momentum`` of the way to the mean of ``images``' features
        as the network now sees them (in evaluation mode, just before centring); the first call
        replaces the zeros it starts from. Call it after each training step on a few of the
        step's images (16 are plenty). The mean is a buffer, so resuming continues it. Does
        nothing when the transform is ``none``."""
        mode = self.feature_transform_mode
        if mode == "none" or not len(images):
            return
        with self.evaluating():
            raw = Algorithm.embed(self, images).float()
        estimate = before_centring(raw, mode).mean(0).to(self.feature_mean)
        if not bool(self.feature_mean.any()):
            self.feature_mean.copy_(estimate)
        else:
            self.feature_mean.lerp_(estimate, momentum)

    @torch.inference_mode()
    def fit_feature_mean(self, batches: Iterable[torch.Tensor]) -> int:
        """Set the centring mean (cl2n, power-cl2n) from batches of base classes (a training
        set): uint8 images [B, C, H, W] go through the backbone, floating-point rows [B, D] are
        taken as backbone features already computed (:mod:`metastudio.engine.features`). The mean
        is that of the features as they are just before centring (accumulated in float64).
        Returns the number of images or rows seen; raises ValueError when there were none or
        the transform is ``none``."""
        mode = self.feature_transform_mode
        if mode == "none":
            raise ValueError("feature_transform is none: there is no feature mean to fit")
        total, count = None, 0
        with self.evaluating():
            for batch in batches:
                if len(batch) == 0:
                    continue
                if batch.dim() == 2 and batch.is_floating_point():
                    raw = batch.to(self.feature_mean.device, torch.float32)
                else:
                    raw = Algorithm.embed(self, batch)  # the backbone's own features, not transformed
                part = before_centring(raw, mode).double().sum(0)
                total = part if total is None else total + part
                count += len(batch)
        if not count:
            raise ValueError("no images to estimate the feature mean from")
        self.feature_mean.copy_((total / count).to(self.feature_mean))
        return count


__all__ = ["FEATURE_TRANSFORM", "FEATURE_TRANSFORMS", "FeatureTransformMixin", "apply_feature_transform",
           "before_centring", "copy_feature_transform", "feature_transform_hyperparameter",
           "projection_hyperparameter", "projection_layer"]
