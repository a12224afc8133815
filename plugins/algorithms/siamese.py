"""Convolutional Siamese Networks (Koch, Zemel and Salakhutdinov, ICML deep learning workshop 2015).

Two images go through the same ("twin") embedding network: the backbone, then, when
``projection`` > 0, a learned linear layer with a sigmoid (the paper's 4096-d layer, here
``projection`` wide). The default is no projection: Conv-4's 64-d features are compared
directly, which learned faster and costs less than a 512-d sigmoid layer in short Omniglot runs
(see ``benchmarks/recipes/train_siamese.sh``). With a frozen pretrained backbone a projection is what
meta-training learns besides the distance weights. A learned weighted L1 distance turns a pair
of embeddings into the probability that both images show the same class::

    p(same | x1, x2) = sigmoid(sum_j alpha_j * |h1_j - h2_j| + b)

The head only sees [B, D] feature vectors, so it works on any backbone: Conv-4 trained from
scratch for characters, or a frozen pretrained network (EfficientNet-Lite0's 1280-d vectors,
say) for photos.

**Meta-training** uses binary cross-entropy on pairs built from each episode. With
``pairs=all`` (the default) every two distinct images of the episode, support and queries
alike, make a pair: a 60-way episode with 6 images per class gives 900 same-class pairs and
63,720 different-class pairs from one forward pass of 360 images. With ``pairs=query-support``
only each query against each support image is used. Either way the two kinds are weighted so
that both count equally: the loss is the mean BCE over the positive pairs plus the mean BCE
over the negative pairs, halved. The accuracy reported while training is that of classifying
the episode's queries as below.

**Distortions** (``distort``, off by default; :mod:`metastudio.algorithms.augment`): the paper's random
affine transformations of training images -- rotation in [-10, 10] degrees, shear in [-0.3, 0.3] along each axis, scale
in [0.8, 1.2] along each axis and translation by up to 2/105 of the side (the paper's 2 pixels
of 105) along each axis, each component applied with probability ``distort_prob`` -- drawn
independently for every image of every training episode and applied to the batch with
``affine_grid``/``grid_sample`` (bilinear, edges repeated, which keeps Omniglot's white
background white). Only meta-training distorts; adaptation, prediction and validation never do.

**Classification**: a query's score for a class is its mean p(same) over that class's support
images (any number of shots per class). The learner's logits are the logs of these scores
(:func:`class_log_scores`, computed in log space so that tiny probabilities do not underflow),
so the probabilities ``predict_proba`` returns are the scores divided by their sum over the
classes; the argmax is the best-matching class. Adaptation is one forward pass: it embeds the
support set and keeps the embeddings.

**Pretrained features** (``feature_transform``, see :mod:`metastudio.algorithms.feature_transform`):
``cl2n`` or ``power-cl2n`` centres a frozen backbone's features on the training set's mean and
scales them to unit length before the projection and the distance (the mean is fitted before
meta-training by :func:`metastudio.app.runs.prepare_run`). On EfficientNet-Lite0 features of
held-out mini-ImageNet training classes the untrained head (no projection) went from 64 % on raw
features to 78 % with power-cl2n; BCE training then lowered it to 65 %, so validate from step 0
(``TrainingPlan.val_holdout``) and keep the best.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from metastudio.api import (
    DISTORT, DISTORT_PROB, FEATURE_TRANSFORM, TRAINING_HYPERPARAMETERS, AdaptProgress, Algorithm,
    Episode, FeatureTransformMixin, hookimpl, HyperParameter, Learner, ProgressCallback,
    projection_hyperparameter, projection_layer, query_accuracy, SupportSet
)


def weighted_l1(a: torch.Tensor, b: torch.Tensor, alpha: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Logits of p(same) for every row of ``a`` [A, D] against every row of ``b`` [B, D]:
    ``sum_j alpha_j |a_j - b_j| + bias``, as [A, B].

    Computed as two L1 distance matrices (``torch.cdist``, which never materialises the
    [A, B, D] differences and is several times faster than broadcasting, forward and
    backward): one over the features scaled by the positive weights, minus one over those
    scaled by the magnitudes of the negative weights (``alpha_j |x - y| = |alpha_j x - alpha_j y|``
    for ``alpha_j >= 0``). (In this form a weight of exactly 0 gets no gradient; the weights
    start at -1/D and never land on 0 in practice.) The ONNX export writes ``cdist`` out
    (:mod:`metastudio.engine.export`)."""
    zeros = torch.zeros_like(alpha)
    positive = torch.where(alpha > 0, alpha, zeros)
    negative = torch.where(-alpha > 0, -alpha, zeros)
    return torch.cdist(a * positive, b * positive, p=1) - torch.cdist(a * negative, b * negative, p=1) + bias


def class_weights(labels: torch.Tensor, ways: int) -> torch.Tensor:
    """[M, ways] matrix averaging support columns per class (1 / shots of the class where the
    support image belongs to it, 0 elsewhere)."""
    onehot = F.one_hot(labels, ways).float()
    return onehot / onehot.sum(0, keepdim=True).clamp_min(1)


def class_log_scores(logits: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """log of each class's mean p(same) [Q, N] from pair logits [Q, M] against the support
    images, up to a constant per row: the learner's logits (their softmax is each class's mean
    p(same) divided by the sum over the classes). Computed from log-sigmoids shifted by their
    row maximum, so it is exact even where every p(same) is tiny."""
    logp = F.logsigmoid(logits.float())
    top = logp.max(1, keepdim=True).values
    return ((logp - top).exp() @ weights).clamp_min(1e-30).log() + top


class SiameseNetworks(FeatureTransformMixin, Algorithm):
    name = "siamese"
    version = "1"
    title = "Siamese Networks"
    family = "metric"
    distorts_training_images = True
    description = ("Learns whether two images show the same class (a twin network with a learned weighted L1 "
                   "distance); a query goes to the class whose examples it matches best.")
    hyperparameters = TRAINING_HYPERPARAMETERS + (
        projection_hyperparameter("Width of a learned linear layer with a sigmoid after the backbone (the paper "
                                  "used 4096); 0 compares the backbone's features directly (best for Conv-4 trained "
                                  "from scratch; give a frozen pretrained backbone a projection, e.g. 512, to learn)."),
        HyperParameter("pairs", str, "all", "Which pairs of an episode train the network: every two distinct images "
                       "(all) or each query against each support image (query-support). Same- and different-class "
                       "pairs count equally either way.", choices=("all", "query-support"), role="training"),
        DISTORT,
        DISTORT_PROB,
        FEATURE_TRANSFORM,
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.projection, dim = projection_layer(int(self.backbone.out_features), self.hparams["projection"])
        # Start with p(same) falling as the distance grows: alpha = -1/D with bias 0 gives
        # logits of minus the mean absolute difference.
        self.alpha = nn.Parameter(torch.full((dim,), -1.0 / dim))
        self.bias = nn.Parameter(torch.zeros(()))

    @property
    def embedding_dim(self) -> int:
        return int(self.alpha.shape[0])

    # -- embedding ----------------------------------------------------------------------------
    def head(self, features: torch.Tensor) -> torch.Tensor:
        """The twin network's last layer: backbone features [B, D] -> embeddings [B, projection]."""
        features = features.float()
        if self.projection is None:
            return features
        return torch.sigmoid(self.projection(features))

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Embeddings [B, projection] (or the backbone's [B, D] without a projection), from the
        backbone's features after ``feature_transform``."""
        return self.head(super().embed(images))

    def pair_logits(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Logits of p(same) [A, B] for embeddings ``a`` [A, D] against ``b`` [B, D]."""
        return weighted_l1(a, b, self.alpha, self.bias)

    def similarity(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """p(same) [A, B] for embeddings ``a`` [A, D] against ``b`` [B, D]."""
        return torch.sigmoid(self.pair_logits(a, b))

    # -- meta-training ------------------------------------------------------------------------
    def episode_loss(self, episode: Episode) -> tuple[torch.Tensor, int]:
        """Balanced pair BCE of one episode and the number of its queries classified right."""
        n_support = len(episode.support_images)
        h = self.training_embed(torch.cat([episode.support_images, episode.query_images]))
        labels = torch.cat([episode.support_labels, episode.query_labels]).to(h.device)
        logits = self.pair_logits(h, h)  # [M, M], symmetric
        same = labels.unsqueeze(1) == labels.unsqueeze(0)
        if self.hparams["pairs"] == "all":
            used = torch.ones_like(same).triu(1)  # every pair of distinct images once
        else:
            used = torch.zeros_like(same)
            used[n_support:, :n_support] = True  # each query against each support image
        bce = F.binary_cross_entropy_with_logits(logits, same.float(), reduction="none")
        positive, negative = used & same, used & ~same
        parts = [bce[mask].mean() for mask in (positive, negative) if bool(mask.any())]
        loss = torch.stack(parts).mean()
        with torch.no_grad():
            scores = class_log_scores(logits[n_support:, :n_support], class_weights(labels[:n_support], episode.ways))
            correct = int((scores.argmax(1) == labels[n_support:]).sum())
        return loss, correct

    def meta_train_step(self, episodes: Sequence[Episode]) -> dict[str, float]:
        return self.episodes_step(episodes, self.episode_loss)

    # -- adaptation and prediction ------------------------------------------------------------

    def adapt(self, support: SupportSet, progress: ProgressCallback | None = None) -> Learner:
        embeddings = self.embed_all(support.images)
        if progress:
            progress(AdaptProgress(1, 1, None))
        return SiameseLearner(self, embeddings, support.labels.to(embeddings.device), support.class_names)

    def evaluate_episode(self, episode: Episode) -> float:
        # One forward pass over support and queries together (eval mode: batch norm uses its
        # running statistics, so the images do not affect each other).
        n_support = len(episode.support_images)
        with torch.inference_mode():
            h = self.embed(torch.cat([episode.support_images, episode.query_images]))
            weights = class_weights(episode.support_labels.to(h.device), episode.ways)
            scores = class_log_scores(self.pair_logits(h[n_support:], h[:n_support]), weights)
        return query_accuracy(scores, episode)

    def restore_learner(self, class_names: Sequence[str], state: Mapping[str, torch.Tensor]) -> Learner:
        return SiameseLearner(self, state["support"].to(self.device), state["labels"].to(self.device).long(),
                              class_names)


class SiameseLearner(Learner):
    """The support embeddings, their labels and the per-class averaging matrix (buffers)."""

    def __init__(self, algorithm: SiameseNetworks, support: torch.Tensor, labels: torch.Tensor,
                 class_names: Sequence[str]):
        super().__init__(class_names, algorithm)
        self.register_buffer("support", support)
        self.register_buffer("labels", labels)
        self.register_buffer("weights", class_weights(labels, len(self.class_names)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        algo = self.algorithm
        return class_log_scores(algo.pair_logits(algo.embed(images), self.support), self.weights)

    def learner_state(self) -> dict[str, torch.Tensor]:
        return {"support": self.support, "labels": self.labels}


@hookimpl
def metastudio_algorithms():
    return [SiameseNetworks]
