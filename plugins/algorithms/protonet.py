"""Prototypical Networks (Snell, Swersky and Zemel, NeurIPS 2017).

Each class is represented by the mean of its support embeddings (its prototype); a query is
classified by a softmax over negative distances to the prototypes. Meta-training learns the
embedding so that this works on new classes. Adaptation is one forward pass over the support
set, so it is instant, and any number of shots per class works. Training with more ways than
testing (60-way for Omniglot) helps, and nothing in the model depends on the number of ways.

Its learners say when a query is not like any of the classes with the distance rule of
:mod:`metastudio.algorithms.openset` (distance to the nearest prototype relative to the spread of the
examples around their prototypes), taken in the feature space before the last normalisation
(see :meth:`PrototypicalNetworks.embed_open_set`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from metastudio.api import (
    FEATURE_TRANSFORM, TRAINING_HYPERPARAMETERS, AdaptProgress, Algorithm, before_centring,
    DistanceRule, Episode, FeatureTransformMixin,
    fit_distance_rule, hookimpl, HyperParameter, Learner, OpenSetPrediction, ProgressCallback,
    class_means, query_accuracy, SupportSet
)



class PrototypicalNetworks(FeatureTransformMixin, Algorithm):
    name = "protonet"
    version = "1"
    title = "Prototypical Networks"
    family = "metric"
    description = "Classifies by the nearest class mean (prototype) in a meta-learned embedding. Fast and strong."
    hyperparameters = TRAINING_HYPERPARAMETERS + (
        HyperParameter("distance", str, "euclidean", "How queries are compared with prototypes: squared Euclidean "
                       "distance (the paper's choice) or cosine similarity.", choices=("euclidean", "cosine"),
                       role="adaptation"),
        HyperParameter("temperature", float, 10.0, "With cosine distance or CL2N features: the similarities "
                       "(negative squared distances) are multiplied by this before the softmax (larger = more "
                       "confident).", 0.01, 1000.0, log_scale=True, role="adaptation"),
        FEATURE_TRANSFORM,
    )

    def logits(self, queries: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
        if self.hparams["distance"] == "cosine":
            return self.hparams["temperature"] * F.normalize(queries, dim=1) @ F.normalize(prototypes, dim=1).t()
        # -||q - p||^2, expanded; clamp guards tiny negative values from rounding.
        d = (queries.pow(2).sum(1, keepdim=True) - 2 * queries @ prototypes.t() + prototypes.pow(2).sum(1)).clamp_min(0)
        if self.hparams["feature_transform"] != "none":  # unit vectors: distances are small, so scale them
            return -self.hparams["temperature"] * d
        return -d

    def episode_logits(self, episode: Episode) -> torch.Tensor:
        n_support = len(episode.support_images)
        features = self.embed(torch.cat([episode.support_images, episode.query_images]))
        prototypes = class_means(features[:n_support], episode.support_labels.to(features.device), episode.ways)
        return self.logits(features[n_support:], prototypes)

    def episode_loss(self, episode: Episode) -> tuple[torch.Tensor, int]:
        """Cross-entropy of the episode's queries and how many of them are classified right."""
        logits = self.episode_logits(episode)
        labels = episode.query_labels.to(logits.device)
        return F.cross_entropy(logits, labels), int((logits.argmax(1) == labels).sum())

    def meta_train_step(self, episodes: Sequence[Episode]) -> dict[str, float]:
        return self.episodes_step(episodes, self.episode_loss)

    @torch.inference_mode()
    def embed_open_set(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The features of one or more images as :meth:`embed_all` gives them (compared with
        the prototypes), and as the unsure rule compares them (:mod:`metastudio.algorithms.openset`),
        from one backbone pass.

        With ``cl2n`` or ``power-cl2n`` the rule's features are the centred ones *before* the
        last L2-normalisation: that normalisation puts every image on the unit sphere and so
        throws away how far it is from the mean of the base photos, which is what sets nonsense
        apart. With the photos model, ``|x - mean|`` is 0.65-0.83 for 90 % of mini-ImageNet train
        photos but 0.81-0.90 for Omniglot characters, 0.83-1.07 for noise and 0.92-1.02 for flat
        colours (``benchmarks/harnesses/openset_photos.py --calibrate``). On mini-ImageNet val (5-way
        5-shot, about 5 % of the photos unsure) the rule marks 99.6-100 % of those unsure in this
        space and 66-91 % in the normalised one (docs/benchmarks.md, "Unsure predictions").
        With ``none`` both are the backbone's features."""
        with self.evaluating():
            chunk = self.embed_chunk
            raw = torch.cat([Algorithm.embed(self, images[i : i + chunk]) for i in range(0, len(images), chunk)])
        mode = self.feature_transform_mode
        if mode == "none":
            return raw, raw
        centred = before_centring(raw, mode) - self.feature_mean
        return F.normalize(centred, dim=1), centred  # the same operations as apply_feature_transform

    def adapt(self, support: SupportSet, progress: ProgressCallback | None = None) -> Learner:
        features, open_features = self.embed_open_set(support.images)
        labels = support.labels.to(features.device)
        prototypes = class_means(features, labels, support.ways)
        rule = fit_distance_rule(open_features, labels, support.ways)
        if progress:
            progress(AdaptProgress(1, 1, None))
        return ProtoLearner(self, prototypes, support.class_names, rule)

    def evaluate_episode(self, episode: Episode) -> float:
        # One forward pass over support and queries together (the evaluator runs in eval mode,
        # where batch norm uses its running statistics, so the queries do not affect each other).
        with torch.inference_mode():
            logits = self.episode_logits(episode)
        return query_accuracy(logits, episode)

    def restore_learner(self, class_names: Sequence[str], state: Mapping[str, torch.Tensor]) -> Learner:
        rule = None
        if "open_set_prototypes" in state and "open_set_expected" in state:
            rule = DistanceRule(state["open_set_prototypes"].to(self.device),
                                state["open_set_expected"].to(self.device))
        return ProtoLearner(self, state["prototypes"].to(self.device), class_names, rule)


class ProtoLearner(Learner):
    """Prototypes to classify by (a buffer), and the distance rule for unsure queries (None: the
    learner falls back to the maximum-probability rule, e.g. a learner saved without it)."""

    def __init__(self, algorithm: PrototypicalNetworks, prototypes: torch.Tensor, class_names: Sequence[str],
                 open_set: DistanceRule | None = None):
        super().__init__(class_names, algorithm)
        self.register_buffer("prototypes", prototypes)
        self.open_set = open_set

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.algorithm.logits(self.algorithm.embed(images), self.prototypes)

    @torch.inference_mode()
    def predict_open_set(self, images: torch.Tensor) -> OpenSetPrediction:
        if self.open_set is None or len(images) == 0:
            return super().predict_open_set(images)
        features, open_features = self.algorithm.embed_open_set(images)
        probs = self.algorithm.logits(features, self.prototypes).float().softmax(1).cpu()
        return self.open_set.predict(open_features, probs)

    def learner_state(self) -> dict[str, torch.Tensor]:
        state = {"prototypes": self.prototypes}
        if self.open_set is not None:
            state.update(open_set_prototypes=self.open_set.prototypes, open_set_expected=self.open_set.expected)
        return state


@hookimpl
def metastudio_algorithms():
    return [PrototypicalNetworks]
