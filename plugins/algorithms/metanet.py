"""Meta Networks (Munkhdalai and Yu, ICML 2017).

A *base learner* classifies; a *meta learner* turns the base learner's loss gradients on the
support set -- the "meta information" -- into **fast weights**, which are combined with its slow
(meta-trained) weights by *layer augmentation*: every augmented layer runs twice, once with the
slow and once with the fast weights, through its non-linearity, and the two outputs are added.

Per episode (Algorithm 1 of the paper):

1. **Task-level fast weights** for the representation learner u: the gradient of a
   representation loss on the support set (a contrastive loss on all pairs of support
   embeddings: same class pulled together, different classes pushed below a cosine margin)
   with respect to u's slow weights goes through the meta learner d, giving u's fast weights
   Q* (``task_fast_weights``).
2. **Example-level fast weights** for the base learner b: for each support image i, the
   gradient of b's loss on (x_i, y_i) with respect to b's slow weights goes through the meta
   learner m, giving W*_i; it is stored in a memory together with the key r_i = u(x_i) (slow
   and fast weights of u).
3. **Queries**: a query's key r = u(x) attends over the support keys (softmax of scaled
   cosine similarities), its fast weights are the attention-weighted sum of the stored W*_i,
   and b with its slow weights augmented by those fast weights classifies it.

Meta-training minimises the cross-entropy of the queries; the gradients fed to d and m are
constants, as in the paper (its meta learners saw loss gradients as inputs, not through them).

Here, as in the paper's own implementation, d and m act coordinate-wise: a small MLP (``meta_hidden``
units, shared by all coordinates) maps each preprocessed gradient value (the (log|g|/p, sign g)
pair of Andrychowicz et al. 2016) to one fast weight. Fast weights augment the learners' fully
connected layers: b is a backbone (Conv-4 for characters), then FC(``hidden``) and an output
layer over ``max_ways`` label positions, both augmented; u is a second backbone of the same
kind, then an augmented FC(``key_dim``). An episode's classes take positions 0..N-1, and only
those are scored, so one model serves any number of classes up to ``max_ways``. With a frozen
pretrained backbone (photos) b and u share it and only the augmented layers learn, on its
features transformed by ``feature_transform`` (see :mod:`metastudio.algorithms.feature_transform`).

Adaptation (the app) runs steps 1 and 2 on the person's support set (instant: one forward pass
and per-example gradients of the small layers); the learner keeps u's fast weights, the keys
and the example-level fast weights.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import grad, vmap

from metastudio.api import (
    FEATURE_TRANSFORM, TRAINING_HYPERPARAMETERS, AdaptProgress, Algorithm, BufferDict, Episode, FeatureTransformMixin,
    HyperParameter, LabelPositionsMixin, Learner, ProgressCallback, SupportSet, hookimpl, max_ways_hyperparameter,
    preprocess_gradient as preprocess, query_accuracy,
)


class CoordinateMLP(nn.Module):
    """A meta learner applied to every coordinate of a gradient: an MLP of the preprocessed
    gradient plus a learned multiple of the gradient itself, ``mlp(prep(g)) + scale * g``.

    The second term (ours, not the paper's) starts at scale = -5, so before any meta-training a
    fast weight is an SGD step (of size 5) on its example: the fast output layer then already
    votes for the labels of the support examples a query attends to. With the MLP alone, fast
    weights start nearly label-independent and attention has no signal to learn from: on tiny
    synthetic episodes meta-training stayed at chance for 80 steps (with -1: 64 % after 80 steps,
    with -5: 74 %)."""

    def __init__(self, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 1))
        self.scale = nn.Parameter(torch.tensor(-5.0))

    def forward(self, gradients: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: self.net(preprocess(g.detach())).squeeze(-1) + self.scale * g.detach() for k, g in gradients.items()}


def augmented_linear(x: torch.Tensor, slow: Mapping[str, torch.Tensor], fast: Mapping[str, torch.Tensor] | None,
                     prefix: str, activation) -> torch.Tensor:
    """Layer augmentation: activation(slow layer) + activation(fast layer), with per-row fast
    weights (``fast[prefix+'weight']`` [B, out, in]) or one set ([out, in]); no fast: slow only."""
    out = activation(F.linear(x, slow[prefix + "weight"], slow[prefix + "bias"]))
    if fast is None:
        return out
    w, b = fast[prefix + "weight"], fast[prefix + "bias"]
    if w.dim() == 3:
        fast_out = torch.einsum("boi,bi->bo", w, x) + b
    else:
        fast_out = F.linear(x, w, b)
    return out + activation(fast_out)


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


class MetaNetworks(LabelPositionsMixin, FeatureTransformMixin, Algorithm):
    name = "metanet"
    version = "1"
    title = "Meta Networks"
    family = "model"
    description = ("A meta learner turns the classifier's loss gradients on your examples into fast weights, "
                   "remembered per example; each image is classified with the fast weights of the examples it "
                   "resembles.")
    hyperparameters = TRAINING_HYPERPARAMETERS + (
        HyperParameter("hidden", int, 128, "Units of the base learner's augmented hidden layer.", 4, 8192,
                       role="architecture"),
        HyperParameter("key_dim", int, 64, "Size of the representation learner's keys (its augmented layer).", 4, 8192,
                       role="architecture"),
        HyperParameter("meta_hidden", int, 20, "Units of the coordinate-wise meta learners d and m.", 2, 256,
                       role="architecture"),
        max_ways_hyperparameter("Label positions of the base learner: the most classes a model tells apart."),
        HyperParameter("task_fast_weights", bool, True, "Give the representation learner task-level fast weights "
                       "from a contrastive loss on the support set (step 1 of the paper).", role="adaptation"),
        HyperParameter("margin", float, 0.5, "Cosine margin of the contrastive representation loss.", -1.0, 1.0,
                       role="adaptation"),
        HyperParameter("temperature", float, 10.0, "Starting scale of the cosine attention over support keys (it is "
                       "meta-learned; a trained model uses its learned one).", 0.1, 100.0, log_scale=True,
                       role="training"),
        FEATURE_TRANSFORM,
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        hp = self.hparams
        dim = int(self.backbone.out_features)
        self.rep_backbone = None
        if not self.backbone_frozen:
            self.rep_backbone = copy.deepcopy(self.backbone)
            for module in self.rep_backbone.modules():
                if hasattr(module, "reset_parameters") and module is not self.rep_backbone:
                    module.reset_parameters()
        self.base = nn.ModuleDict({"fc": nn.Linear(dim, hp["hidden"]), "out": nn.Linear(hp["hidden"], hp["max_ways"])})
        self.rep = nn.ModuleDict({"fc": nn.Linear(dim, hp["key_dim"])})
        self.meta_base = CoordinateMLP(hp["meta_hidden"])  # m
        self.meta_rep = CoordinateMLP(hp["meta_hidden"])  # d
        self.log_temperature = nn.Parameter(torch.tensor(math.log(hp["temperature"])))

    # -- the two learners ------------------------------------------------------------------------
    def rep_features(self, images: torch.Tensor) -> torch.Tensor:
        """The representation learner's backbone features [B, D] (the shared one when frozen)."""
        if self.rep_backbone is None:
            return self.embed(images)
        with self.autocast():
            return self.rep_backbone(self.prepare(images)).float()

    def base_logits(self, features: torch.Tensor, fast: Mapping[str, torch.Tensor] | None, ways: int,
                    params: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        slow = params if params is not None else dict(self.base.named_parameters())
        h = augmented_linear(features, slow, fast, "fc.", F.relu)
        return augmented_linear(h, slow, fast, "out.", _identity)[:, :ways]

    def keys(self, features: torch.Tensor, fast: Mapping[str, torch.Tensor] | None) -> torch.Tensor:
        return augmented_linear(features, dict(self.rep.named_parameters()), fast, "fc.", F.relu)

    def task_fast_weights(self, features: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor] | None:
        """Step 1: u's fast weights Q* from the gradient of the contrastive loss on the support set."""
        if not self.hparams["task_fast_weights"] or len(labels) < 2:
            return None
        same = labels.unsqueeze(0) == labels.unsqueeze(1)
        pairs = ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
        margin = self.hparams["margin"]

        def contrastive(params):
            keys = F.normalize(F.relu(F.linear(features, params["fc.weight"], params["fc.bias"])), dim=1, eps=1e-8)
            cos = keys @ keys.t()
            loss = torch.where(same, 1 - cos, F.relu(cos - margin))
            return loss[pairs].mean()

        gradients = grad(contrastive)({k: v.detach() for k, v in self.rep.named_parameters()})
        return self.meta_rep(gradients)

    def example_fast_weights(self, features: torch.Tensor, labels: torch.Tensor, ways: int) -> dict[str, torch.Tensor]:
        """Step 2: W*_i = m(gradient of b's loss on support example i), for every i ([M, ...] each)."""
        slow = {k: v.detach() for k, v in self.base.named_parameters()}

        def loss(params, x, y):
            return F.cross_entropy(self.base_logits(x.unsqueeze(0), None, ways, params), y.unsqueeze(0))

        per_example = vmap(grad(loss), in_dims=(None, 0, 0))(slow, features.detach(), labels)
        return self.meta_base(per_example)

    def memory(self, support_images: torch.Tensor, labels: torch.Tensor, ways: int):
        """What the support set gives: u's fast weights, the support keys, the per-example fast weights."""
        labels = labels.to(self.device)
        base_features = self.embed(support_images)
        rep_features = self.rep_features(support_images) if self.rep_backbone is not None else base_features
        task_fast = self.task_fast_weights(rep_features, labels)
        keys = self.keys(rep_features, task_fast)
        return task_fast, keys, self.example_fast_weights(base_features, labels, ways)

    def classify(self, images: torch.Tensor, task_fast, keys, example_fast, ways: int) -> torch.Tensor:
        """Step 3: logits [Q, ways] of query images with fast weights read from the memory by attention."""
        base_features = self.embed(images)
        rep_features = self.rep_features(images) if self.rep_backbone is not None else base_features
        query_keys = self.keys(rep_features, task_fast)
        similarity = F.normalize(query_keys, dim=1, eps=1e-8) @ F.normalize(keys, dim=1, eps=1e-8).t()
        attention = (self.log_temperature.exp() * similarity).softmax(1)  # [Q, M]
        fast = {k: torch.einsum("qm,m...->q...", attention, v) for k, v in example_fast.items()}
        return self.base_logits(base_features, fast, ways)

    # -- meta-training -------------------------------------------------------------------------
    def meta_train_step(self, episodes: Sequence[Episode]) -> dict[str, float]:
        losses, correct, total = [], 0, 0
        for e in episodes:
            self.check_episode_ways(e.ways)
            memory = self.memory(e.support_images, e.support_labels, e.ways)
            logits = self.classify(e.query_images, *memory, e.ways)
            labels = e.query_labels.to(logits.device)
            losses.append(F.cross_entropy(logits, labels))
            correct += int((logits.detach().argmax(1) == labels).sum())
            total += len(labels)
        loss = torch.stack(losses).mean()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{self.title}: the meta-training loss is {float(loss)}; lower lr")
        self.optimizer_step(loss)
        return {"loss": float(loss.detach()), "accuracy": correct / max(total, 1)}

    def evaluate_episode(self, episode: Episode) -> float:
        with torch.no_grad(), self.evaluating():
            logits = self.classify(episode.query_images, *self.memory(episode.support_images, episode.support_labels,
                                                                       episode.ways), episode.ways)
        return query_accuracy(logits, episode)

    # -- adaptation ------------------------------------------------------------------------------
    def adapt(self, support: SupportSet, progress: ProgressCallback | None = None) -> Learner:
        self.check_support_ways(support.ways)
        with torch.no_grad(), self.evaluating():
            task_fast, keys, example_fast = self.memory(support.images, support.labels, support.ways)
        if progress:
            progress(AdaptProgress(1, 1, None))
        return MetaNetLearner(self, memory_tensors(task_fast, keys, example_fast), support.class_names)

    def restore_learner(self, class_names: Sequence[str], state: Mapping[str, torch.Tensor]) -> Learner:
        return MetaNetLearner(self, {k: v.to(self.device) for k, v in state.items()}, class_names)


def memory_tensors(task_fast: Mapping[str, torch.Tensor] | None, keys: torch.Tensor,
                   example_fast: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What a :class:`MetaNetLearner` keeps and saves, by name: the support keys (``keys``), the
    per-example fast weights (``example.<name>``) and u's task-level fast weights (``task.<name>``,
    absent with ``task_fast_weights=false``)."""
    state = {"keys": keys}
    state.update({f"example.{k}": v for k, v in example_fast.items()})
    if task_fast is not None:
        state.update({f"task.{k}": v for k, v in task_fast.items()})
    return state


class MetaNetLearner(Learner):
    """The memory of the support set (the tensors of :func:`memory_tensors`, as buffers), and
    :meth:`MetaNetworks.classify` with it as its forward."""

    def __init__(self, algorithm: MetaNetworks, tensors: Mapping[str, torch.Tensor], class_names: Sequence[str]):
        super().__init__(class_names, algorithm)
        self.memory = BufferDict(tensors)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        task_fast = self.memory.with_prefix("task.") or None
        return self.algorithm.classify(images, task_fast, self.memory["keys"], self.memory.with_prefix("example."),
                                       len(self.class_names))

    def learner_state(self) -> dict[str, torch.Tensor]:
        return self.memory.as_dict()


@hookimpl
def metastudio_algorithms():
    return [MetaNetworks]
