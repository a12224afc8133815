"""Matching Networks (Vinyals, Blundell, Lillicrap, Kavukcuoglu and Wierstra, NeurIPS 2016).

A query is classified by attention over the labelled support images: the softmax of its cosine
similarities to every support embedding weighs their one-hot labels, so the class
probabilities are ``P(y | x) = sum_i a(x, x_i) y_i``. Meta-training minimises the negative log
of the true class's probability on the queries of each episode.

Full context embeddings (FCE, ``fce=true``) make the embeddings depend on the whole support set:
a bidirectional LSTM reads the support embeddings, ``g(x_i) = fwd_i + bwd_i + g'(x_i)``, and an
attention LSTM refines each query's embedding over ``fce_steps`` steps of reading the support
set. The paper found FCE helps on mini-ImageNet and not on Omniglot; it is off by default.

Cosine similarities are multiplied by a temperature before the softmax. The paper used the
plain cosine; with it the attention over 20-60 support images is nearly uniform and training is
slow. By default the temperature is meta-learned (starting at 10; it settles near 24 on
Omniglot): with a fixed 10, validation 20-way 1-shot accuracy plateaued at 91.6 %, with the
learned one it reached 94.0 % after only 1500 episodes. ``learn_temperature=false,
temperature=1`` is the paper's form.

``projection`` > 0 puts a learned linear layer of that width after the backbone (shared by
support and queries). On a frozen pretrained backbone this is the embedding that meta-training
learns, and it keeps FCE's LSTMs small: on EfficientNet-Lite0's 1280-d features the two FCE
LSTMs alone would hold about 40 million weights, on a 256-d projection about 2.6 million.

Adaptation is one forward pass over the support set (instant), and any number of shots and
ways works; the learner keeps the support embeddings and their labels.

``feature_transform`` (``cl2n`` or ``power-cl2n``, see :mod:`metastudio.algorithms.feature_transform`)
centres a frozen pretrained backbone's features on the training set's mean and scales them to
unit length before the projection, FCE and the cosine: on EfficientNet-Lite0 features of
held-out mini-ImageNet training classes, untrained Matching Networks (no FCE, no projection) got
84 % (5-way 1-shot) and 93 % (5-shot) with power-cl2n. The mean is fitted on the training
features before meta-training (:func:`metastudio.app.runs.prepare_run`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from metastudio.api import (
    FEATURE_TRANSFORM, TRAINING_HYPERPARAMETERS, AdaptProgress, Algorithm, Episode,
    FeatureTransformMixin, hookimpl, HyperParameter, Learner, ProgressCallback, projection_hyperparameter,
    projection_layer, query_accuracy, SupportSet
)

EPS = 1e-8


def log_probabilities(probs: torch.Tensor) -> torch.Tensor:
    """log P(y | query) [Q, N], floored at log(EPS) so that it stays finite: the loss of
    meta-training and the logits of the learner (their softmax is ``probs`` again, to within
    the floor)."""
    return probs.clamp_min(EPS).log()


class SupportContext(nn.Module):
    """FCE for the support set: a bidirectional LSTM over the support embeddings, whose two
    directions are added to the embedding (a residual connection)."""

    def __init__(self, dim: int):
        super().__init__()
        self.lstm = nn.LSTM(dim, dim, batch_first=True, bidirectional=True)

    def forward(self, support: torch.Tensor) -> torch.Tensor:  # [S, D] -> [S, D]
        out, _ = self.lstm(support.unsqueeze(0))
        fwd, bwd = out[0].chunk(2, dim=1)
        return support + fwd + bwd


class QueryAttention(nn.Module):
    """FCE for the queries: an LSTM that reads the support set by attention ``steps`` times,
    starting from the query's own embedding (Vinyals et al., appendix A.1)."""

    def __init__(self, dim: int, steps: int):
        super().__init__()
        self.cell = nn.LSTMCell(dim, dim)
        self.steps = steps

    def forward(self, queries: torch.Tensor, support: torch.Tensor) -> torch.Tensor:  # [Q, D], [S, D]
        h = torch.zeros_like(queries)
        c = torch.zeros_like(queries)
        readout = torch.zeros_like(queries)
        for _ in range(self.steps):
            h_hat, c = self.cell(queries, (h + readout, c))
            h = h_hat + queries
            attention = (h @ support.t()).softmax(dim=1)
            readout = attention @ support
        return h


class MatchingNetworks(FeatureTransformMixin, Algorithm):
    name = "matchingnet"
    version = "1"
    title = "Matching Networks"
    family = "metric"
    description = ("Classifies by attention over every example: cosine similarity to each one, softmax, "
                   "and a weighted vote of their labels. Optional full context embeddings (LSTMs).")
    hyperparameters = TRAINING_HYPERPARAMETERS + (
        HyperParameter("fce", bool, False, "Full context embeddings: a bidirectional LSTM over the examples and an "
                       "attention LSTM for each query, so embeddings depend on the whole support set (helps on "
                       "photos, not on characters, in the paper).", role="architecture"),
        HyperParameter("fce_steps", int, 5, "With FCE: how many times the attention LSTM reads the support set.", 1, 20,
                       role="architecture"),
        HyperParameter("temperature", float, 10.0, "Cosine similarities are multiplied by this before the softmax "
                       "(1 = the paper's plain cosine; larger = sharper attention). With learn_temperature, only the "
                       "starting value: a trained model then uses the temperature it learned.", 0.1, 100.0,
                       log_scale=True, role="adaptation"),
        projection_hyperparameter("Width of a learned linear layer after the backbone (0 = none). Give a frozen "
                                  "pretrained backbone one (e.g. 256) to learn an embedding and keep FCE small."),
        HyperParameter("learn_temperature", bool, True, "Meta-learn the temperature along with the embedding "
                       "(a learned scale, as cosine classifiers since Gidaris & Komodakis 2018 do).",
                       role="architecture"),
        FEATURE_TRANSFORM,
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.projection, dim = projection_layer(int(self.backbone.out_features), self.hparams["projection"])
        if self.hparams["learn_temperature"]:
            self.log_temperature = nn.Parameter(torch.tensor(math.log(self.hparams["temperature"])))
        if self.hparams["fce"]:
            self.support_context = SupportContext(dim)
            self.query_attention = QueryAttention(dim, self.hparams["fce_steps"])

    # -- the model ------------------------------------------------------------------------------
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Backbone features [B, D], transformed (``feature_transform``), then through the
        projection when there is one."""
        features = super().embed(images)
        return self.projection(features) if self.projection is not None else features

    @property
    def scale(self) -> torch.Tensor | float:
        """The temperature in use (a tensor when it is learned)."""
        return self.log_temperature.exp() if self.hparams["learn_temperature"] else self.hparams["temperature"]

    def contextualise(self, support: torch.Tensor, queries: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """g(support) and f(queries | support): the embeddings that are compared."""
        g = self.context(support)
        return g, self.attend(queries, g)

    def context(self, support: torch.Tensor) -> torch.Tensor:
        """g(support): with FCE, the support embeddings read by the bidirectional LSTM."""
        return self.support_context(support) if self.hparams["fce"] else support

    def attend(self, queries: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """f(queries | g): with FCE, the query embeddings refined by attention over the
        contextualised support ``g``; without, the embeddings as they are."""
        return self.query_attention(queries, g) if self.hparams["fce"] else queries

    def class_probabilities(self, queries: torch.Tensor, support: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
        """P(y | query) = sum_i softmax_i(temperature * cos(f(q), g(x_i))) * y_i  -> [Q, N]."""
        similarity = F.normalize(queries, dim=1) @ F.normalize(support, dim=1).t()
        attention = (self.scale * similarity).softmax(dim=1)
        return attention @ onehot

    def episode_probabilities(self, episode: Episode) -> torch.Tensor:
        n_support = len(episode.support_images)
        features = self.embed(torch.cat([episode.support_images, episode.query_images]))
        support, queries = self.contextualise(features[:n_support], features[n_support:])
        onehot = F.one_hot(episode.support_labels.to(features.device), episode.ways).to(features.dtype)
        return self.class_probabilities(queries, support, onehot)

    # -- meta-training ----------------------------------------------------------------------------
    def episode_loss(self, episode: Episode) -> tuple[torch.Tensor, int]:
        """Negative log-likelihood of the queries' classes and how many are classified right."""
        probs = self.episode_probabilities(episode)
        labels = episode.query_labels.to(probs.device)
        return F.nll_loss(log_probabilities(probs), labels), int((probs.argmax(1) == labels).sum())

    def meta_train_step(self, episodes: Sequence[Episode]) -> dict[str, float]:
        return self.episodes_step(episodes, self.episode_loss)

    def evaluate_episode(self, episode: Episode) -> float:
        with torch.inference_mode():
            probs = self.episode_probabilities(episode)
        return query_accuracy(probs, episode)

    # -- adaptation ---------------------------------------------------------------------------------

    def adapt(self, support: SupportSet, progress: ProgressCallback | None = None) -> Learner:
        with torch.inference_mode(), self.evaluating():
            features = self.embed_all(support.images)
            g = self.context(features)
        onehot = F.one_hot(support.labels.to(g.device), support.ways).float()
        if progress:
            progress(AdaptProgress(1, 1, None))
        return MatchingLearner(self, g, onehot, support.class_names)

    def restore_learner(self, class_names: Sequence[str], state: Mapping[str, torch.Tensor]) -> Learner:
        return MatchingLearner(self, state["support"].to(self.device), state["onehot"].to(self.device), class_names)


class MatchingLearner(Learner):
    """The contextualised support embeddings g(x_i) and their one-hot labels (buffers)."""

    def __init__(self, algorithm: MatchingNetworks, support: torch.Tensor, onehot: torch.Tensor,
                 class_names: Sequence[str]):
        super().__init__(class_names, algorithm)
        self.register_buffer("support", support)  # g(x_i), already contextualised when FCE is on
        self.register_buffer("onehot", onehot)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        algo = self.algorithm
        queries = algo.attend(algo.embed(images), self.support)
        return log_probabilities(algo.class_probabilities(queries, self.support, self.onehot))

    def learner_state(self) -> dict[str, torch.Tensor]:
        return {"support": self.support, "onehot": self.onehot}


@hookimpl
def metastudio_algorithms():
    return [MatchingNetworks]
