"""SimpleShot (Wang, Chao, Weinberger and van der Maaten, 2019): nearest class mean on
centred, L2-normalised features of a plainly trained network.

Training is not episodic: the backbone and a linear classifier over every training class learn
with cross-entropy on labelled batches (``trains_on = "batches"``); the classifier is only for
training and is left out of the model file. Adapting is one forward pass: the support features
are centred on the mean feature of the training images, scaled to unit length (CL2N), and
averaged per class; a query goes to the nearest class mean. The mean is kept up to date while
training (an exponential moving average of features in evaluation mode), so it is the one the
trained network gives.

This module is written only against :mod:`metastudio.api`, as a reference for plugin authors:
the hook, the class attributes, a batch training step and a learner.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from metastudio.api import (
    TRAINING_HYPERPARAMETERS, AdaptProgress, Algorithm, FeatureTransformMixin, HyperParameter, LabelledBatch,
    Learner, ProgressCallback, SupportSet, class_means, feature_transform_hyperparameter, hookimpl,
)

#: The moving average of the feature mean takes this share of each new estimate.
MEAN_MOMENTUM = 0.02
#: Each batch's first images (at most this many) give the estimate: one more forward pass of
#: them, in evaluation mode, per step.
MEAN_IMAGES = 16


class SimpleShot(FeatureTransformMixin, Algorithm):
    name = "simpleshot"
    version = "1"
    title = "SimpleShot"
    family = "metric"
    description = ("Trains a plain classifier on every training class, then classifies by the nearest class mean of "
                   "centred, unit-length features. A strong, simple baseline.")
    trains_on = "batches"
    feature_mean_fitted = "by the algorithm"
    hyperparameters = TRAINING_HYPERPARAMETERS + (
        feature_transform_hyperparameter("cl2n"),
        HyperParameter("temperature", float, 10.0, "The similarities (negative squared distances between unit "
                       "vectors) are multiplied by this before the softmax: larger means more confident.",
                       0.01, 1000.0, log_scale=True, role="adaptation"),
    )

    def start_batch_training(self, classes: int) -> None:
        self.training_modules["classifier"] = nn.Linear(int(self.backbone.out_features), classes)

    def batch_train_step(self, batch: LabelledBatch) -> dict[str, float]:
        with self.autocast():
            features = self.backbone_features(batch.images)  # before the transform: what the classifier learns from
            logits = self.training_modules["classifier"](features).float()
        labels = batch.labels.to(logits.device)
        loss = F.cross_entropy(logits, labels)
        self.optimizer_step(loss)
        self.update_feature_mean(batch.images[:MEAN_IMAGES], MEAN_MOMENTUM)  # the centring mean follows the network
        return {"loss": float(loss.detach()), "accuracy": float((logits.argmax(1) == labels).float().mean())}

    def logits(self, queries: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
        distances = (queries.pow(2).sum(1, keepdim=True) - 2 * queries @ means.t() + means.pow(2).sum(1)).clamp_min(0)
        return -self.hparams["temperature"] * distances

    def adapt(self, support: SupportSet, progress: ProgressCallback | None = None) -> Learner:
        with torch.inference_mode(), self.evaluating():
            features = self.embed_all(support.images)  # transformed: CL2N by default
        means = class_means(features.float(), support.labels.to(features.device), support.ways)
        if progress:
            progress(AdaptProgress(1, 1, None))
        return NearestMeanLearner(self, means, support.class_names)

    def restore_learner(self, class_names: Sequence[str], state: Mapping[str, torch.Tensor]) -> Learner:
        return NearestMeanLearner(self, state["means"].to(self.device), class_names)


class NearestMeanLearner(Learner):
    """The class means to classify by (a buffer, saved with the learner)."""

    def __init__(self, algorithm: SimpleShot, means: torch.Tensor, class_names: Sequence[str]):
        super().__init__(class_names, algorithm)
        self.register_buffer("means", means)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.algorithm.logits(self.algorithm.embed(images).float(), self.means)

    def learner_state(self) -> dict[str, torch.Tensor]:
        return {"means": self.means}


@hookimpl
def metastudio_algorithms():
    return [SimpleShot]
