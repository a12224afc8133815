"""Optimization-based meta-learning: a network whose weights adapt to each task by gradient steps.

:class:`GradientAlgorithm` is the shared machinery of MAML, Reptile and the LSTM meta-learner
(and of any plugin in that family): the network as a pure function of a dict of weights, the
inner loop on a support set (``torch.func.grad``, never overwriting a module's parameters), the
output layer that serves any number of classes, three batch-norm modes, adaptation with a
per-step loss for the app's live plot, learners that save and export. A subclass says how the
shared weights are meta-trained (:meth:`Algorithm.meta_train_step`) and, if not by SGD, how one
inner step updates the weights (:meth:`GradientAlgorithm.inner_update`).

**All tasks of a meta-batch at once.** Conv-4 and other chains of conv / batch norm / ReLU /
pool / linear layers run through :class:`~metastudio.algorithms.taskbatch.TaskBatchedChain`: each
task's weights are one group of a grouped convolution, so a meta-batch of T tasks can be one
forward and one backward pass (``task_batching=grouped``; ``loop`` runs the tasks one after the
other, and always for episodes of different shapes). ``auto`` (the default) groups on a GPU and
loops on a CPU: on this project's 2-core CPU (1 thread, beside another job) the grouped pass
was about 1.6x *slower* than the loop, 11.5 against 7.4 s per meta-batch of 32 5-way 1-shot
15-query tasks (its activations, 0.5 GB per layer, do not stay in cache, and the element-wise
layers become memory-bound). On a GPU one pass replaces T rounds of small kernel launches: on an
H100 it made a meta-batch 14.5x faster than the loop (and 11.6x faster than learn2learn's MAML;
docs/benchmarks.md, "MAML meta-training speed against learn2learn").

**The output layer.** MAML's last layer has one row per class of a fixed N-way setting, so a
model only serves that N and its rows are tied to arbitrary label positions. Here every task's
last layer starts from one meta-learned row (and bias) repeated for each class, as in
Unicorn-MAML (Ye and Chao, ICLR 2022): the inner steps make the rows class-specific, any number
of classes works, and the order of the classes does not matter.

**Batch norm** (``batch_norm``), the same in meta-training and adaptation:

* ``support`` (default): every batch norm uses the statistics of the task's support images
  (computed with the current task weights); queries are normalised with them too, so a query's
  prediction never depends on the other queries (what the app needs);
* ``transductive``: MAML's published setting -- statistics of whatever batch is being
  processed, so queries are normalised with the statistics of all queries of the episode;
* ``running``: stored running statistics, accumulated from the query batches during
  meta-training, used for the support steps and the queries alike.

With a frozen pretrained backbone (photos), the backbone never adapts; its features, transformed
by ``feature_transform`` (:mod:`metastudio.algorithms.feature_transform`; ``power-cl2n`` suits pooled
ReLU features), go to a small head that does. The output layer alone (``head_hidden=0``) would
leave meta-training nothing to learn: every class's row starts from the same shared row, which
adds the same number to every class's logit and so cancels in the softmax, and SGD steps from
it do not depend on it either (one step from it is a nearest-class-mean classifier by dot
product). ``head_hidden`` > 0 adds a fully connected layer with a ReLU whose units the output
layer reads *beside* the features themselves ([x, relu(W x + b)]): it is meta-learned and
adapted in the inner loop with the output layer, and it starts from what the output layer alone
does instead of from random features (on mini-ImageNet power-CL2N features, one step on 256
random hidden units alone scored 59 % on held-out classes, on the features 79 %). That is
MAML, Reptile or the LSTM meta-learner on a small network over fixed features, close to ANIL
(Raghu et al., ICLR 2020).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import grad

from metastudio.algorithms.base import AdaptProgress, Algorithm, Learner, ProgressCallback, query_accuracy
from metastudio.algorithms.buffers import BufferDict
from metastudio.algorithms.feature_transform import FEATURE_TRANSFORM, FeatureTransformMixin
from metastudio.algorithms.hyperparameters import HyperParameter
from metastudio.algorithms.taskbatch import TaskBatchedChain, UnsupportedNetwork
from metastudio.data.episodes import Episode, SupportSet

#: The names, among a gradient algorithm's meta-parameters, of its output layer (one row shared by
#: every class, repeated for each class of a task).
HEAD = ("head_weight", "head_bias")
#: The prefix of the backbone's weights among the weights that adapt (:meth:`GradientAlgorithm.meta_parameters`).
BACKBONE = "backbone."

#: p of the gradient preprocessing.
PREPROCESS_P = 10.0


def preprocess_gradient(x: torch.Tensor, p: float = PREPROCESS_P) -> torch.Tensor:
    """The gradient preprocessing of Andrychowicz et al. (2016), used by the LSTM meta-learner
    and Meta Networks: [...] -> [..., 2], (log|x| / p, sign x) where |x| >= e^-p and (-1, e^p x)
    elsewhere, so values of any magnitude reach a network at a similar scale."""
    big = x.abs() >= math.exp(-p)
    first = torch.where(big, x.abs().clamp_min(math.exp(-p)).log() / p, torch.full_like(x, -1.0))
    second = torch.where(big, torch.sign(x), x * math.exp(p))
    return torch.stack([first, second], -1)


def inner_hyperparameters(inner_lr: float, adapt_steps: int) -> tuple[HyperParameter, ...]:
    """The hyperparameters every gradient-based algorithm has, with its own defaults."""
    return (
        HyperParameter("inner_lr", float, inner_lr, "Step size of the SGD steps on the support set.", 1e-5, 10.0,
                       log_scale=True, role="adaptation"),
        HyperParameter("adapt_steps", int, adapt_steps, "SGD steps on the support set when adapting (evaluation "
                       "and the app); may differ from the training steps.", 1, 1000, role="adaptation"),
        HyperParameter("batch_norm", str, "support", "Which statistics batch norm uses: those of the support set "
                       "(support; a query never affects another), of the batch being processed (transductive, as in "
                       "MAML's paper) or stored running statistics (running).",
                       choices=("support", "transductive", "running"), role="adaptation"),
        HyperParameter("task_batching", str, "auto", "How a meta-batch's tasks run: all at once as grouped "
                       "convolutions (grouped), one after the other (loop), or grouped on a GPU and looped on a CPU "
                       "(auto; on a CPU the loop measured faster).", choices=("auto", "grouped", "loop"),
                       role="training"),
        FEATURE_TRANSFORM,
        HyperParameter("head_hidden", int, 0, "With a frozen pretrained backbone: units of a hidden layer "
                       "(fully connected, ReLU) on its features, which the output layer reads beside the features; "
                       "meta-learned and adapted with it. 0: the output layer alone, whose starting weights "
                       "meta-training cannot improve (every class starts from the same row).", 0, 8192,
                       role="architecture"),
    )


class GradientAlgorithm(FeatureTransformMixin, Algorithm):
    """Base class of algorithms that adapt by gradient steps on the support set (see the module)."""

    family = "optimization"
    reports_adaptation_loss = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        dim = int(self.backbone.out_features)
        hidden = int(self.hparams.get("head_hidden", 0))
        self.body_weight: nn.Parameter | None = None
        self.body_bias: nn.Parameter | None = None
        if hidden:
            if not self.backbone_frozen:
                raise ValueError(f"head_hidden={hidden} adds a layer on a frozen pretrained backbone's features; "
                                 f"the backbone '{self.backbone_name}' is trained with the rest (use head_hidden=0)")
            layer = nn.Linear(dim, hidden)  # its default initialisation
            self.body_weight = nn.Parameter(layer.weight.detach().clone())
            self.body_bias = nn.Parameter(layer.bias.detach().clone())
            dim += hidden  # the output layer reads [features, hidden units]
        self.head_weight = nn.Parameter(torch.zeros(dim))
        self.head_bias = nn.Parameter(torch.zeros(()))
        self.chain: TaskBatchedChain | None = None
        if not self.backbone_frozen:
            try:
                self.chain = TaskBatchedChain(self.backbone)
            except UnsupportedNetwork as exc:
                raise ValueError(f"{self.title} adapts the backbone's weights functionally and needs a chain of "
                                 f"conv / batch norm / ReLU / pool / linear layers (conv4 is one): {exc}. Freeze a "
                                 "pretrained backbone to adapt only the output layer.") from None

    # -- the functional network ----------------------------------------------------------------
    def meta_parameters(self) -> dict[str, torch.Tensor]:
        """The weights that adapt: the backbone's (unless frozen), the hidden layer's on a frozen
        backbone (``head_hidden``) and the output layer's."""
        out = {}
        if not self.backbone_frozen:
            out.update({BACKBONE + k: v for k, v in self.backbone.named_parameters()})
        if self.body_weight is not None:
            out["body_weight"], out["body_bias"] = self.body_weight, self.body_bias
        out["head_weight"], out["head_bias"] = self.head_weight, self.head_bias
        return out

    def task_weights(self, meta: Mapping[str, torch.Tensor], tasks: int, ways: int) -> dict[str, torch.Tensor]:
        """Every task's starting weights: the shared ones expanded (no copy), the output layer's
        row repeated for each class."""
        fast = {k: v.unsqueeze(0).expand(tasks, *v.shape) for k, v in meta.items() if k not in HEAD}
        fast["head_weight"] = meta["head_weight"].expand(tasks, ways, -1)
        fast["head_bias"] = meta["head_bias"].expand(tasks, ways)
        return fast

    @property
    def adapts_features(self) -> bool:
        """Whether the adapted network reads the features of a frozen backbone (which does not
        adapt) rather than images; fixed when the algorithm is built (a stand-alone copy of a
        learner keeps it, see :meth:`Learner.standalone`)."""
        return self.chain is None

    def inputs(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        """Per-task images, uint8 or already prepared (:meth:`Algorithm.prepare`) -> [T, n, C, H, W]
        floats, or [T, n, D] features with a frozen backbone."""
        if self.adapts_features:
            return torch.stack([self.embed(x) for x in images])
        return torch.stack([self.prepare(x).contiguous() for x in images])

    def logits(self, fast: Mapping[str, torch.Tensor], x: torch.Tensor, **bn) -> torch.Tensor:
        """Logits [T, n, N] of inputs [T, n, ...] under task weights ``fast``; ``bn`` goes to the chain."""
        if self.adapts_features:
            features = x
            if "body_weight" in fast:
                hidden = F.relu(torch.einsum("tnd,thd->tnh", x, fast["body_weight"]) + fast["body_bias"].unsqueeze(1))
                features = torch.cat([x, hidden], -1)
        else:
            weights = {k[len(BACKBONE):]: v for k, v in fast.items() if k.startswith(BACKBONE)}
            with self.autocast():
                features = self.chain(weights, x, **bn).to(fast["head_weight"].dtype)
        return torch.einsum("tnd,tcd->tnc", features, fast["head_weight"]) + fast["head_bias"].unsqueeze(1)

    def _bn_support(self, training: bool) -> dict:
        """Batch-norm arguments for the support steps."""
        if self.hparams["batch_norm"] == "running" and not training:
            return {"bn": "running"}
        return {"bn": "batch"}

    def inner_loop(self, fast: dict[str, torch.Tensor], xs: torch.Tensor, ys: torch.Tensor, steps: int, *,
                   create_graph: bool, training: bool, progress=None, batch: int | None = None,
                   generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """``steps`` inner steps on each task's images ``xs`` [T, n, ...] with labels ``ys``
        [T, n] (all tasks at once). ``create_graph`` keeps the inner gradients differentiable
        (second-order MAML). ``batch`` < n takes each step on the next ``batch`` images of a
        random order (the same for every task; a new order after each pass), as Reptile does."""
        tasks, n, ways = xs.shape[0], xs.shape[1], fast["head_bias"].shape[1]
        bn = self._bn_support(training)
        update_running = training and self.hparams["batch_norm"] == "running" and not create_graph
        order: torch.Tensor | None = None
        position = 0

        def step_loss(weights, x, y):
            logits = self.logits(weights, x, **bn, **({"update_running": True} if update_running else {}))
            per_task = F.cross_entropy(logits.reshape(-1, ways), y.reshape(-1), reduction="none").reshape(tasks, -1)
            per_task = per_task.mean(1)
            # The sum of the tasks' losses: each task's gradient is that of its own loss.
            return per_task.sum(), per_task.detach()

        state = None
        for step in range(steps):
            x, y = xs, ys
            if batch is not None and batch < n:
                if order is None or position + batch > n:
                    order, position = torch.randperm(n, generator=generator).to(xs.device), 0
                pick = order[position : position + batch]
                position += batch
                x, y = xs[:, pick], ys[:, pick]
            grads, loss = grad(step_loss, has_aux=True)(fast, x, y)
            if not create_graph:
                grads = {k: g.detach() for k, g in grads.items()}
            fast, state = self.inner_update(fast, grads, loss, step, state)
            if progress is not None:
                progress(step + 1, float(loss.mean()))
        return fast

    def inner_update(self, fast: dict[str, torch.Tensor], grads: dict[str, torch.Tensor], loss: torch.Tensor,
                     step: int, state: Any) -> tuple[dict[str, torch.Tensor], Any]:
        """One inner step: the new task weights from the gradients of the support loss (``loss``,
        each task's, detached, [T]) and a state carried between steps (None at the first).
        Plain SGD with ``inner_lr`` here; the LSTM meta-learner learns this rule."""
        lr = self.hparams["inner_lr"]
        return {k: fast[k] - lr * grads[k] for k in fast}, state

    def task_batching(self) -> str:
        """``grouped`` or ``loop`` for this device (``auto``: grouped on CUDA)."""
        batching = self.hparams["task_batching"]
        if batching == "auto":
            batching = "grouped" if self.device.type == "cuda" else "loop"
        return batching

    def query_logits(self, fast: Mapping[str, torch.Tensor], xs: torch.Tensor, xq: torch.Tensor, *,
                     training: bool) -> torch.Tensor:
        """Logits [T, q, N] of the queries ``xq`` under the adapted weights, with the batch-norm
        statistics ``batch_norm`` names: the support images ``xs`` normalise themselves and the
        queries in one pass (``support``); while meta-training, batch statistics (``running``
        folds them into the stored ones); otherwise as :meth:`adapted_logits`."""
        if not self.adapts_features:
            mode = self.hparams["batch_norm"]
            if mode == "support":
                n = xs.shape[1]
                return self.logits(fast, torch.cat([xs, xq], 1), bn="batch", stats_from=n)[:, n:]
            if training:
                return self.logits(fast, xq, bn="batch", update_running=mode == "running")
        return self.adapted_logits(fast, xq)

    def adapted_logits(self, fast: Mapping[str, torch.Tensor], x: torch.Tensor,
                       stats: Sequence[tuple[torch.Tensor, torch.Tensor]] = ()) -> torch.Tensor:
        """Logits [T, n, N] of inputs ``x`` under adapted weights, outside meta-training: batch
        norm with the support set's statistics ``stats`` (``support``; captured by :meth:`adapt`),
        the stored running ones (``running``) or those of ``x`` itself (``transductive``)."""
        if self.adapts_features:
            return self.logits(fast, x)
        mode = self.hparams["batch_norm"]
        if mode == "support":
            return self.logits(fast, x, bn="given", given=list(stats))
        if mode == "running":
            return self.logits(fast, x, bn="running")
        return self.logits(fast, x, bn="batch")

    # -- meta-training by backpropagation through the inner loop (MAML, the LSTM meta-learner) --
    def query_loss(self, episodes: Sequence[Episode], *, create_graph: bool) -> tuple[torch.Tensor, int]:
        """Mean query loss over ``episodes`` (same shapes) after ``inner_steps`` inner steps from
        the shared weights, differentiable with respect to them, and the number of queries right."""
        ways = episodes[0].ways
        xs = self.inputs([e.support_images for e in episodes])
        xq = self.inputs([e.query_images for e in episodes])
        ys = torch.stack([e.support_labels for e in episodes]).to(self.device)
        yq = torch.stack([e.query_labels for e in episodes]).to(self.device)
        fast = self.inner_loop(self.task_weights(self.meta_parameters(), len(episodes), ways), xs, ys,
                               self.hparams["inner_steps"], create_graph=create_graph, training=True)
        logits = self.query_logits(fast, xs, xq, training=True)
        loss = F.cross_entropy(logits.reshape(-1, ways), yq.reshape(-1))
        return loss, int((logits.detach().argmax(2) == yq).sum())

    def backprop_meta_step(self, episodes: Sequence[Episode], *, create_graph: bool) -> dict[str, float]:
        """One meta-training step on the mean query loss of ``episodes``: all at once (grouped)
        or one task at a time, each task's graph freed after its backward pass (loop)."""
        assert self.optimizer is not None, "configure_training() must be called before meta-training"
        same_shape = len({(e.ways, len(e.support_labels), len(e.query_labels)) for e in episodes}) == 1
        groups = [list(episodes)] if self.task_batching() == "grouped" and same_shape else [[e] for e in episodes]
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum, correct = 0.0, 0
        for group in groups:
            loss, right = self.query_loss(group, create_graph=create_graph)
            if not torch.isfinite(loss):
                self.optimizer.zero_grad(set_to_none=True)
                raise FloatingPointError(f"{self.title}: the meta-training loss is {float(loss)}; lower lr or inner_lr")
            (loss * (len(group) / len(episodes))).backward()
            loss_sum += float(loss.detach()) * len(group)
            correct += right
        self.clip_meta_gradients()
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        total = sum(len(e.query_labels) for e in episodes)
        return {"loss": loss_sum / len(episodes), "accuracy": correct / max(total, 1)}

    def clip_meta_gradients(self) -> None:
        """Called between the backward passes and the optimiser step (nothing by default)."""

    # -- adaptation ------------------------------------------------------------------------------
    def adapted_weights(self, images: torch.Tensor, labels: torch.Tensor, ways: int,
                        progress=None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """A support set's inputs [1, n, ...] and the task weights after ``adapt_steps`` inner
        steps on it from the shared weights (no meta-gradient; ``progress(step, loss)`` after each)."""
        xs = self.inputs([images])
        ys = labels.to(self.device).unsqueeze(0)
        meta = {k: v.detach() for k, v in self.meta_parameters().items()}
        fast = self.inner_loop(self.task_weights(meta, 1, ways), xs, ys, self.hparams["adapt_steps"],
                               create_graph=False, training=False, progress=progress)
        return xs, {k: v.detach() for k, v in fast.items()}

    def adapt(self, support: SupportSet, progress: ProgressCallback | None = None) -> Learner:
        steps = self.hparams["adapt_steps"]
        report = (lambda step, loss: progress(AdaptProgress(step, steps, loss))) if progress else None
        with torch.no_grad(), self.evaluating():  # torch.func.grad still differentiates inside
            xs, fast = self.adapted_weights(support.images, support.labels, support.ways, report)
            stats = []
            if not self.adapts_features and self.hparams["batch_norm"] == "support":
                self.logits(fast, xs, bn="batch", capture=stats)
        return FastWeightsLearner(self, learner_tensors(fast, stats), support.class_names)

    def evaluate_episode(self, episode: Episode) -> float:
        with torch.no_grad(), self.evaluating():
            xs, fast = self.adapted_weights(episode.support_images, episode.support_labels, episode.ways)
            logits = self.query_logits(fast, xs, self.inputs([episode.query_images]), training=False)[0]
        return query_accuracy(logits, episode)

    def restore_learner(self, class_names: Sequence[str], state: Mapping[str, torch.Tensor]) -> Learner:
        return FastWeightsLearner(self, {k: v.to(self.device) for k, v in state.items()}, class_names)


def learner_tensors(fast: Mapping[str, torch.Tensor], stats: Sequence[tuple[torch.Tensor, torch.Tensor]]
                    ) -> dict[str, torch.Tensor]:
    """What a :class:`FastWeightsLearner` keeps and saves, by name: the task weights
    (``fast.<name>``, [1, ...] each) and the support set's batch-norm statistics
    (``bn.<i>.mean``, ``bn.<i>.var``, [1, C] each; none unless ``batch_norm=support``)."""
    state = {f"fast.{k}": v for k, v in fast.items()}
    for i, (mean, var) in enumerate(stats):
        state[f"bn.{i}.mean"], state[f"bn.{i}.var"] = mean, var
    return state


class FastWeightsLearner(Learner):
    """An adapted gradient-based classifier: the tensors of :func:`learner_tensors` as buffers
    (``tensors``), and :meth:`GradientAlgorithm.adapted_logits` under them as its forward."""

    def __init__(self, algorithm: GradientAlgorithm, tensors: Mapping[str, torch.Tensor], class_names: Sequence[str]):
        super().__init__(class_names, algorithm)
        self.tensors = BufferDict(tensors)
        #: Transductive batch norm normalises the queries with each other's statistics: one pass.
        self.joint_queries = algorithm.hparams["batch_norm"] == "transductive"

    @property
    def fast(self) -> dict[str, torch.Tensor]:
        """The task weights by parameter name ([1, ...] each)."""
        return self.tensors.with_prefix("fast.")

    @property
    def stats(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The support set's (mean, variance) for each batch norm, in order (``batch_norm=support``)."""
        count = sum(1 for name in self.tensors if name.startswith("bn.") and name.endswith(".mean"))
        return [(self.tensors[f"bn.{i}.mean"], self.tensors[f"bn.{i}.var"]) for i in range(count)]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        algorithm = self.algorithm
        return algorithm.adapted_logits(self.fast, algorithm.inputs([images]), self.stats)[0]

    def learner_state(self) -> dict[str, torch.Tensor]:
        return self.tensors.as_dict()


__all__ = ["BACKBONE", "HEAD", "PREPROCESS_P", "FastWeightsLearner", "GradientAlgorithm", "inner_hyperparameters",
           "learner_tensors", "preprocess_gradient"]
