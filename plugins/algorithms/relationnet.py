"""Relation Networks (Sung, Yang, Zhang, Xiang, Torr and Hospedales, CVPR 2018).

Instead of a fixed distance, a small network -- the relation module -- learns to compare: it
takes a query's embedding together with a class's embedding and gives a relation score in
(0, 1). Meta-training fits the embedding and the relation module jointly by regressing the
scores onto one-hot targets with a mean squared error (1 for the query's class, 0 for the
others). A class is represented by the sum of its shots' embeddings, as in the paper, or their
mean (the ``class_embedding`` hyperparameter); adaptation is one forward pass over the support
set.

Two relation modules, chosen by the backbone:

* a backbone with a ``feature_shape`` (C, H, W), such as ``conv4-maps``, gives feature maps:
  the relation module is the paper's -- the class and query maps concatenated along the
  channels, two blocks of conv3x3 - batch norm - ReLU - max-pool, then FC(``relation_hidden``)
  - ReLU - FC(1) - sigmoid;
* any other backbone gives vectors (a frozen EfficientNet-Lite0, say): the relation module is
  an MLP on the concatenated vectors, FC(``mlp_hidden``) - ReLU - FC(``mlp_hidden``) - ReLU -
  FC(1) - sigmoid. ``pair_input=concat-product`` gives it ``[class, query, class * query]``
  instead of ``[class, query]``: an MLP on a concatenation cannot easily compute a similarity
  (on power-CL2N EfficientNet-Lite0 features of held-out mini-ImageNet training classes the
  concat MLP scored 22 % at step 0 and 65 % after 1000 steps), while the product term lets the
  first layer start from a weighted dot product. ``feature_transform`` (``cl2n``,
  ``power-cl2n``; see :mod:`metastudio.algorithms.feature_transform`) centres and normalises the
  vectors before the relation module; both apply to vectors only, and a feature-map backbone
  refuses other values than the defaults.

The first layer of either module is linear in the concatenation, so it is applied to the
classes and to the queries separately and the results are added for every (query, class) pair
-- the same numbers as on the concatenated pairs, with the largest layer run N + Q instead of
N x Q times. In the conv module the batch norm that follows is folded into the two sides too
(its statistics over all pairs come from per-side sums) and max-pool is taken before the ReLU
(they commute), so the only tensor with one map per pair is the pooled region of the sum. This
is what makes 20-way episodes affordable on a CPU; ``tests/builtins/test_relationnet.py`` checks
outputs, gradients and batch-norm statistics against the module run on concatenated pairs.

Relation scores need not sum to one over the classes. :meth:`RelationNetworks.class_logits`
turns them into logits whose softmax is the probabilities: by default each score divided by
the sum of the scores (``probabilities=ratio``, computed as a softmax of log-sigmoids, which is
the same and never divides by zero), or a softmax of the scores times ``temperature``
(``softmax``). Either way the most probable class is the one with the highest relation score.

``distort`` (off by default) trains on randomly distorted images (small rotations, shears,
scalings and shifts; :mod:`metastudio.algorithms.augment`); adaptation, prediction and validation
never distort. It needs a trainable backbone: a frozen one's head trains on features computed
once per image.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from metastudio.api import (
    DISTORT, DISTORT_PROB, FEATURE_TRANSFORM, TRAINING_HYPERPARAMETERS, AdaptProgress, Algorithm,
    Episode, FeatureTransformMixin, hookimpl, HyperParameter, Learner, ProgressCallback,
    query_accuracy, SupportSet
)

#: (query, class) pairs scored per pass of the relation module when predicting (bounds memory:
#: with 64 x 7 x 7 maps, 4096 pairs hold about 50 MB of activations).
PAIR_CHUNK = 4096


def class_embeddings(features: torch.Tensor, labels: torch.Tensor, ways: int, how: str) -> torch.Tensor:
    """Each class's embedding [ways, D]: the ``sum`` or the ``mean`` of its shots' features
    (classes may have different numbers of shots)."""
    onehot = F.one_hot(labels, ways).to(features.dtype)  # [M, ways]
    total = onehot.t() @ features
    if how == "sum":
        return total
    return total / onehot.sum(0).clamp_min(1).unsqueeze(1)


def _pool(side: int) -> tuple[nn.Module, int]:
    """Max-pool 2 (floor), or nothing when the maps are already 1 pixel wide."""
    return (nn.MaxPool2d(2), side // 2) if side >= 2 else (nn.Identity(), side)


class ConvRelation(nn.Module):
    """The paper's relation module on feature maps [C, H, W]: conv3x3(``channels``) - BN - ReLU -
    max-pool, twice, on the channel-concatenated (class, query) pair, then FC(``hidden``) -
    ReLU - FC(1). Returns logits (the relation score is their sigmoid)."""

    def __init__(self, feature_shape: Sequence[int], channels: int = 64, hidden: int = 8):
        super().__init__()
        c, h, w = (int(v) for v in feature_shape)
        self.feature_shape = (c, h, w)
        # One conv over 2C channels, as in the paper; forward applies its two halves separately.
        self.conv1 = nn.Conv2d(2 * c, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        pool1, h1 = _pool(min(h, w))
        pool2, h2 = _pool(h1)
        self.pool1 = pool1
        self.block2 = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(inplace=True), pool2,
        )
        hh, ww = h, w
        for pool in (pool1, pool2):
            if isinstance(pool, nn.MaxPool2d):
                hh, ww = hh // 2, ww // 2
        self.fc1 = nn.Linear(channels * hh * ww, hidden)
        self.fc2 = nn.Linear(hidden, 1)

    def forward(self, queries: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """Logits [Q, N] for flattened query maps [Q, C*H*W] and class maps [N, C*H*W].

        The same numbers as conv1 - bn1 - ReLU - pool1 on every concatenated (class, query)
        pair, computed without the Q x N x 2C maps: conv1 is applied to each side with its half
        of the weights; bn1's batch statistics over all pairs (training) follow from per-side
        sums, so its scale and shift fold into each side; max-pool commutes with ReLU. Only the
        pooled region of the pair sum is ever formed.
        """
        c, h, w = self.feature_shape
        n = classes.shape[0]
        weight = self.conv1.weight
        fq = F.conv2d(queries.reshape(-1, c, h, w), weight[:, c:], padding=1)  # [Q, K, H, W]
        fc = F.conv2d(classes.reshape(-1, c, h, w), weight[:, :c], padding=1)  # [N, K, H, W]
        scale, shift = self._bn1_scale_shift(fq, fc)
        fq = fq * scale
        fc = fc * scale + shift
        if isinstance(self.pool1, nn.MaxPool2d):  # floor pooling reads only the top-left even region
            fq, fc = fq[:, :, : h // 2 * 2, : w // 2 * 2], fc[:, :, : h // 2 * 2, : w // 2 * 2]
        x = (fq.unsqueeze(1) + fc.unsqueeze(0)).flatten(0, 1)  # [Q*N, K, H, W]: bn1(conv1(pair))
        x = F.relu(self.pool1(x))
        x = self.block2(x).flatten(1)
        return self.fc2(F.relu(self.fc1(x))).reshape(-1, n)

    def _bn1_scale_shift(self, fq: torch.Tensor, fc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """bn1 as ``y = x * scale + shift`` (per channel, [K, 1, 1]) for the pair maps
        ``x = fq[i] + fc[j]``: with the batch statistics of all Q x N pairs in training (and
        the running statistics updated as nn.BatchNorm2d does), the running ones otherwise."""
        bn = self.bn1
        if self.training or not bn.track_running_stats:
            # Centre each side on its own channel mean: a pair's mean is the sum of the two means,
            # and its variance E_p[E_i a^2 + 2 E_i a E_j b + E_j b^2] needs only per-side sums.
            mq, mc = fq.mean((0, 2, 3), keepdim=True), fc.mean((0, 2, 3), keepdim=True)
            aq, ac = fq - mq, fc - mc
            ma, mb = aq.mean(0), ac.mean(0)  # [K, H, W]
            var = (aq.pow(2).mean(0) + 2 * ma * mb + ac.pow(2).mean(0)).mean((1, 2))  # biased, [K]
            mean = (mq + mc).reshape(-1)
            if self.training and bn.track_running_stats:
                with torch.no_grad():
                    bn.num_batches_tracked.add_(1)
                    momentum = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
                    count = fq.shape[0] * fc.shape[0] * fq.shape[2] * fq.shape[3]
                    bn.running_mean.mul_(1 - momentum).add_(momentum * mean.detach())
                    bn.running_var.mul_(1 - momentum).add_(momentum * var.detach() * count / max(count - 1, 1))
        else:
            mean, var = bn.running_mean, bn.running_var
        scale = bn.weight * torch.rsqrt(var + bn.eps)
        shift = bn.bias - mean * scale
        return scale.reshape(-1, 1, 1), shift.reshape(-1, 1, 1)


#: What the vector relation module reads for a (class c, query q) pair (``pair_input``).
PAIR_INPUTS = ("concat", "concat-product")


class MLPRelation(nn.Module):
    """Relation module on feature vectors [D]: FC(``hidden``) - ReLU - FC(``hidden``) - ReLU -
    FC(1) on the (class, query) pair. Returns logits.

    ``pair_input`` says what the pair is: ``concat`` is the paper's ``[c, q]`` (2D inputs);
    ``concat-product`` adds their elementwise product, ``[c, q, c * q]`` (3D inputs), so that
    the first layer can compute a similarity (a weighted dot product) directly, which an MLP on
    ``[c, q]`` can only approximate."""

    def __init__(self, dim: int, hidden: int = 256, pair_input: str = "concat"):
        super().__init__()
        if pair_input not in PAIR_INPUTS:
            raise ValueError(f"pair_input must be one of {', '.join(PAIR_INPUTS)}, got {pair_input!r}")
        self.dim = int(dim)
        self.pair_input = pair_input
        parts = 3 if pair_input == "concat-product" else 2
        self.fc1 = nn.Linear(parts * self.dim, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc3 = nn.Linear(hidden, 1)

    def forward(self, queries: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """Logits [Q, N] for query vectors [Q, D] and class vectors [N, D].

        fc1 is linear in the pair's parts, so it is applied to the classes and to the queries
        separately and the results are added for every pair; only the product part, which
        differs for every pair, is formed per pair ([Q, N, D]; callers bound Q x N, see
        PAIR_CHUNK)."""
        d, n = self.dim, classes.shape[0]
        weight = self.fc1.weight
        hc = F.linear(classes, weight[:, :d], self.fc1.bias)  # [N, hidden]
        hq = F.linear(queries, weight[:, d : 2 * d])  # [Q, hidden]
        x = hq.unsqueeze(1) + hc.unsqueeze(0)  # [Q, N, hidden]: fc1 of each pair
        if self.pair_input == "concat-product":
            x = x + F.linear(queries.unsqueeze(1) * classes.unsqueeze(0), weight[:, 2 * d :])
        return self.fc3(F.relu(self.fc2(F.relu(x)))).reshape(-1, n)


def relation_class_logits(logits: torch.Tensor, how: str, temperature: float) -> torch.Tensor:
    """Logits over the classes, whose softmax is the probabilities, from relation logits [Q, N]
    (scores = sigmoid(logits)): the log-scores for ``ratio`` (score_i / sum_j score_j ==
    softmax(log score)_i; logsigmoid keeps tiny scores apart), the scores times the temperature
    for ``softmax``."""
    if how == "softmax":
        return temperature * torch.sigmoid(logits)
    return F.logsigmoid(logits)


class RelationNetworks(FeatureTransformMixin, Algorithm):
    name = "relationnet"
    version = "1"
    title = "Relation Networks"
    family = "metric"
    distorts_training_images = True
    description = ("Compares each query with each class through a learned relation module (a small network) "
                   "instead of a fixed distance. Use the conv4-maps backbone for the paper's version.")
    hyperparameters = TRAINING_HYPERPARAMETERS + (
        HyperParameter("class_embedding", str, "mean", "How a class's shots make its embedding: their mean (the same "
                       "scale for any number of shots, so a model trained with one shot count works with others) or "
                       "their sum (the paper's choice).", choices=("mean", "sum"), role="adaptation"),
        HyperParameter("relation_channels", int, 64, "With feature maps (conv4-maps): filters of the relation "
                       "module's two conv blocks.", 1, 1024, role="architecture"),
        HyperParameter("relation_hidden", int, 8, "With feature maps (conv4-maps): width of the relation module's "
                       "hidden fully connected layer (8 in the paper).", 1, 4096, role="architecture"),
        HyperParameter("mlp_hidden", int, 256, "With feature vectors (any other backbone): width of the two hidden "
                       "layers of the relation MLP.", 1, 8192, role="architecture"),
        HyperParameter("pair_input", str, "concat", "With feature vectors: what the relation MLP reads for a (class, "
                       "query) pair: the two vectors concatenated (concat, the paper's), or also their elementwise "
                       "product (concat-product), from which it can compute a similarity at once (helps on "
                       "pretrained features).", choices=PAIR_INPUTS, role="architecture"),
        HyperParameter("probabilities", str, "ratio", "How relation scores (each in 0..1, not summing to 1) become "
                       "probabilities: each score divided by their sum (ratio), or a softmax of the scores times "
                       "the temperature (softmax).", choices=("ratio", "softmax"), role="adaptation"),
        HyperParameter("temperature", float, 10.0, "With probabilities=softmax: the scores are multiplied by this "
                       "before the softmax (larger = more confident).", 0.01, 1000.0, log_scale=True,
                       role="adaptation"),
        FEATURE_TRANSFORM,
        DISTORT,
        DISTORT_PROB,
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        hp = self.hparams
        shape = getattr(self.backbone, "feature_shape", None)
        if shape is not None:
            # The conv module compares maps position by position: a transform of the flattened
            # maps (one norm and mean over all positions) and a product input are not defined for it.
            for name, vector_only in (("feature_transform", "none"), ("pair_input", "concat")):
                if hp[name] != vector_only:
                    raise ValueError(
                        f"{name}={hp[name]} applies to feature vectors; the backbone '{self.backbone_name}' gives "
                        f"feature maps, whose relation module takes the concatenated maps as they are. Use "
                        f"{name}={vector_only}, or a backbone that gives vectors (e.g. a frozen pretrained one)")
            self.relation: nn.Module = ConvRelation(shape, hp["relation_channels"], hp["relation_hidden"])
        else:
            self.relation = MLPRelation(self.backbone.out_features, hp["mlp_hidden"], hp["pair_input"])

    # -- scores ----------------------------------------------------------------------------
    def class_embeddings(self, features: torch.Tensor, labels: torch.Tensor, ways: int) -> torch.Tensor:
        return class_embeddings(features, labels.to(features.device), ways, self.hparams["class_embedding"])

    def relation_logits(self, queries: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """Relation logits [Q, N] (float32): the relation score of query i and class j is
        ``sigmoid(logits[i, j])``."""
        with self.autocast():
            return self.relation(queries, classes).float()

    def class_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits over the classes (``probabilities``: their softmax) from relation logits [Q, N]."""
        return relation_class_logits(logits.float(), self.hparams["probabilities"], self.hparams["temperature"])

    def episode_logits(self, episode: Episode) -> torch.Tensor:
        n_support = len(episode.support_images)
        features = self.training_embed(torch.cat([episode.support_images, episode.query_images]))
        classes = self.class_embeddings(features[:n_support], episode.support_labels, episode.ways)
        return self.relation_logits(features[n_support:], classes)

    # -- meta-training -------------------------------------------------------------------------
    def episode_loss(self, episode: Episode) -> tuple[torch.Tensor, int]:
        """Mean squared error of the queries' relation scores against one-hot targets, and how
        many queries are classified right."""
        logits = self.episode_logits(episode)
        labels = episode.query_labels.to(logits.device)
        targets = F.one_hot(labels, episode.ways).to(logits.dtype)
        return F.mse_loss(torch.sigmoid(logits), targets), int((logits.argmax(1) == labels).sum())

    def meta_train_step(self, episodes: Sequence[Episode]) -> dict[str, float]:
        return self.episodes_step(episodes, self.episode_loss)

    # -- adaptation and prediction -------------------------------------------------------------
    @torch.inference_mode()
    def logits_all(self, queries: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """Relation logits [Q, N] for query features in chunks of about PAIR_CHUNK pairs, in eval mode."""
        step = max(1, PAIR_CHUNK // max(1, len(classes)))
        with self.evaluating():
            return torch.cat([self.relation_logits(queries[i : i + step], classes) for i in range(0, len(queries), step)])

    def adapt(self, support: SupportSet, progress: ProgressCallback | None = None) -> Learner:
        features = self.embed_all(support.images)
        classes = self.class_embeddings(features, support.labels, support.ways)
        if progress:
            progress(AdaptProgress(1, 1, None))
        return RelationLearner(self, classes, support.class_names)

    def evaluate_episode(self, episode: Episode) -> float:
        n_support = len(episode.support_images)
        features = self.embed_all(torch.cat([episode.support_images, episode.query_images]))
        classes = self.class_embeddings(features[:n_support], episode.support_labels, episode.ways)
        logits = self.logits_all(features[n_support:], classes)
        return query_accuracy(logits, episode)

    def restore_learner(self, class_names: Sequence[str], state: Mapping[str, torch.Tensor]) -> Learner:
        return RelationLearner(self, state["class_embeddings"].to(self.device), class_names)


class RelationLearner(Learner):
    """The class embeddings (a buffer) the relation module compares queries with."""

    def __init__(self, algorithm: RelationNetworks, classes: torch.Tensor, class_names: Sequence[str]):
        super().__init__(class_names, algorithm)
        self.register_buffer("classes", classes)

    def query_chunk(self, count: int) -> int:
        """At most about PAIR_CHUNK (query, class) pairs per forward pass."""
        return min(super().query_chunk(count), max(1, PAIR_CHUNK // len(self.class_names)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        algo = self.algorithm
        return algo.class_logits(algo.relation_logits(algo.embed(images), self.classes))

    def learner_state(self) -> dict[str, torch.Tensor]:
        return {"class_embeddings": self.classes}


@hookimpl
def metastudio_algorithms():
    return [RelationNetworks]
