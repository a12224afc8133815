"""Baseline++ (Chen, Liu, Kira, Wang and Huang, ICLR 2019): a network trained as a cosine
classifier over every training class, and a new cosine classifier fine-tuned on the support set.

Training is not episodic (``trains_on = "batches"``): the backbone and a classifier whose
scores are scaled cosine similarities between a feature and one weight vector per training
class learn with cross-entropy on labelled batches; that classifier is only for training and
is left out of the model file. Adapting keeps the backbone fixed, computes the support features
once, starts one weight vector per new class at its mean feature and fine-tunes them on the
support set with Adam for ``adapt_steps`` steps (each step is reported, so the app plots the
loss); a query goes to the class of highest cosine score.

Written only against :mod:`metastudio.api`, as a reference for plugin authors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from metastudio.api import (
    TRAINING_HYPERPARAMETERS, AdaptProgress, Algorithm, HyperParameter, LabelledBatch, Learner, ProgressCallback,
    SupportSet, class_means, hookimpl,
)


class CosineClassifier(nn.Module):
    """Scores ``scale * cos(feature, w_c)`` for each class ``c`` of the weight matrix [classes, D]."""

    def __init__(self, weight: torch.Tensor, scale: float):
        super().__init__()
        self.weight = nn.Parameter(weight)
        self.scale = float(scale)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.scale * F.normalize(features, dim=1) @ F.normalize(self.weight, dim=1).t()


class BaselinePlusPlus(Algorithm):
    name = "baselinepp"
    version = "1"
    title = "Baseline++"
    family = "optimization"
    reports_adaptation_loss = True
    description = ("Trains a cosine classifier on every training class, then fine-tunes a new one on your "
                   "examples. A strong, simple baseline.")
    trains_on = "batches"
    hyperparameters = TRAINING_HYPERPARAMETERS + (
        HyperParameter("scale", float, 10.0, "Cosine similarities are multiplied by this before the softmax, in "
                       "training and when adapting.", 1.0, 100.0, log_scale=True, role="architecture"),
        HyperParameter("adapt_steps", int, 50, "Steps of fine-tuning the new classifier on the examples.", 0, 1000,
                       role="adaptation"),
        HyperParameter("adapt_lr", float, 0.01, "Learning rate of that fine-tuning (Adam).", 1e-5, 1.0,
                       log_scale=True, role="adaptation"),
    )

    def start_batch_training(self, classes: int) -> None:
        weight = torch.randn(classes, int(self.backbone.out_features)) * 0.01
        self.training_modules["classifier"] = CosineClassifier(weight, self.hparams["scale"])

    def batch_train_step(self, batch: LabelledBatch) -> dict[str, float]:
        with self.autocast():
            features = self.embed(batch.images)
        logits = self.training_modules["classifier"](features.float())
        labels = batch.labels.to(logits.device)
        loss = F.cross_entropy(logits, labels)
        self.optimizer_step(loss)
        return {"loss": float(loss.detach()), "accuracy": float((logits.argmax(1) == labels).float().mean())}

    def adapt(self, support: SupportSet, progress: ProgressCallback | None = None) -> Learner:
        with torch.inference_mode():
            features = self.embed_all(support.images).float()
        steps = int(self.hparams["adapt_steps"])
        # The fine-tuning differentiates whatever mode the caller is in (inference mode included).
        with torch.inference_mode(False), torch.enable_grad():
            features = features.clone()  # a tensor autograd may use
            labels = support.labels.to(features.device)
            head = CosineClassifier(class_means(features, labels, support.ways), self.hparams["scale"])
            optimizer = torch.optim.Adam(head.parameters(), lr=self.hparams["adapt_lr"])
            for step in range(1, steps + 1):
                loss = F.cross_entropy(head(features), labels)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if progress:
                    progress(AdaptProgress(step, steps, float(loss.detach())))
        if progress and not steps:
            progress(AdaptProgress(1, 1, None))
        return CosineLearner(self, head.weight.detach(), support.class_names)

    def restore_learner(self, class_names: Sequence[str], state: Mapping[str, torch.Tensor]) -> Learner:
        return CosineLearner(self, state["weight"].to(self.device), class_names)


class CosineLearner(Learner):
    """A cosine classifier over the support set's classes, its weights fine-tuned (saved with
    the learner)."""

    def __init__(self, algorithm: BaselinePlusPlus, weight: torch.Tensor, class_names: Sequence[str]):
        super().__init__(class_names, algorithm)
        self.head = CosineClassifier(weight, algorithm.hparams["scale"]).requires_grad_(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.algorithm.embed(images).float())

    def learner_state(self) -> dict[str, torch.Tensor]:
        return {"weight": self.head.weight.detach()}


@hookimpl
def metastudio_algorithms():
    return [BaselinePlusPlus]
