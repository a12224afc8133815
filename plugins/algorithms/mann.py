"""Memory-Augmented Neural Networks (Santoro, Bartunov, Botvinick, Wierstra and Lillicrap, ICML 2016).

An LSTM controller with an external memory learns to *bind* an image to its label in one
exposure and to retrieve the label when the class shows up again. Episodes are sequences:
at step t the network sees image x_t together with the label of the *previous* image,
y_{t-1} (label delay), and must predict y_t; labels are assigned to the classes at random in
every episode, so the weights cannot memorise classes -- only how to use the memory.

The memory M holds ``slots`` rows of ``slot_size`` numbers. At each step the controller reads
[features(x_t), one-hot(y_{t-1}), previous reads] and emits, for each of ``reads`` heads, a key
k_t and a gate alpha_t:

* **write** (least-recently-used access): the least used row is cleared, then
  w^w_t = sigmoid(alpha_t) w^r_{t-1} + (1 - sigmoid(alpha_t)) w^lu_{t-1} and
  M_t = M_{t-1} + w^w_t k_t^T -- a head writes either over what it read last or into the least
  used row;
* **read**: w^r_t = softmax over rows of beta_t times the cosine similarity between k_t and
  M_t(i), and r_t = sum_i w^r_t(i) M_t(i). The key strength beta_t = 1 + softplus(.) >= 1
  comes from the controller, as in the Neural Turing Machine (``key_strength``, on by
  default). The paper has none (beta = 1): a cosine lies in [-1, 1], so over 128 rows its
  softmax is nearly flat and a matching row gets only a few per cent of the read. A strength
  lets a trained model read one row sharply; it did not shorten the long plateau at chance
  that MANN starts with (docs/benchmarks.md);
* **usage**: w^u_t = gamma w^u_{t-1} + w^r_t + w^w_t, and w^lu_t marks the ``reads`` least used
  rows, one per head (head i writes to the i-th least used row; in the paper all heads share
  the mask, so each of those rows would receive the sum of all heads' keys).

Two options beyond the paper, both off by default (the paper's MANN):

* ``write_keys``: each head writes a second key of its own, as the Neural Turing Machine's write
  heads do. With one key per head, the key emitted at step t must both find x_t's class (read) and
  store x_{t-1} with the label y_{t-1} that has just arrived (write).
* ``feature_keys`` (implies write keys): the image features also enter the keys directly, through
  one projection P shared by both: read keys tanh(W_r h_t + P f(x_t)), write keys
  tanh(W_w h_t + P f(x_{t-1})), with f(x_{t-1}) carried in the state. A row written when y_{t-1}
  arrived is then found again by the next image of that class from the first step of training,
  and the LSTM only has to put the label into the write key. On Omniglot this removed the paper
  variant's 9,000-step plateau at chance (docs/benchmarks.md).

The output is a softmax over ``max_ways`` label positions from [h_t, r_t]. An episode's N
classes get N of those positions at random, so one model serves up to ``max_ways`` classes.

The image features come from the backbone (Conv-4 for characters, trained jointly; a frozen
pretrained one for photos, whose features ``feature_transform`` can centre and normalise: see
:mod:`metastudio.algorithms.feature_transform`).

**The paper's protocol** (:meth:`MANN.sequence_accuracy`): 5 classes, 10 images each, in random
order, accuracy of the 1st, 2nd, ... 10th instance of a class. **The standard N-way K-shot
protocol** (:meth:`MANN.adapt`): the support set is fed as a sequence, classes interleaved,
each image with the previous one's label; then every query is read out as the next step from
that same state (with the last support image's label, as in the sequence), so queries never
affect one another. The learner keeps the memory and controller state.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from metastudio.api import (
    FEATURE_TRANSFORM, TRAINING_HYPERPARAMETERS, AdaptProgress, Algorithm, BufferDict, Episode,
    FeatureTransformMixin, HyperParameter, LabelPositionsMixin, Learner, ProgressCallback, SupportSet, hookimpl,
    max_ways_hyperparameter,
)


STATE_FIELDS = ("h", "c", "memory", "reads", "read_weights", "usage", "label", "previous")


@dataclass
class MemoryState:
    """Everything carried from one step to the next, batched over sequences [B, ...]."""

    h: torch.Tensor  # controller hidden [B, H]
    c: torch.Tensor  # controller cell [B, H]
    memory: torch.Tensor  # [B, slots, slot_size]
    reads: torch.Tensor  # last read vectors [B, reads, slot_size]
    read_weights: torch.Tensor  # w^r_{t-1} [B, reads, slots]
    usage: torch.Tensor  # w^u_{t-1} [B, slots]
    label: torch.Tensor  # one-hot of the previous label [B, max_ways] (zeros at the start)
    previous: torch.Tensor  # the previous image's features [B, D] (zeros at the start; read by feature_keys)

    def fields(self) -> dict[str, torch.Tensor]:
        return {k: getattr(self, k) for k in STATE_FIELDS}

    def expand(self, n: int) -> MemoryState:
        """One state (B = 1) repeated n times (for independent query read-outs)."""
        return MemoryState(**{k: v.expand(n, *v.shape[1:]) for k, v in self.fields().items()})


def least_used(usage: torch.Tensor, count: int) -> torch.Tensor:
    """w^lu per head [B, count, slots]: head i's row is one-hot at the i-th least used memory row.

    The paper's w^lu marks the ``count`` least used rows together, so every head would write its
    key into all of them and each row would hold the sum of the heads' keys; giving each head its
    own least used row keeps what is written retrievable by its key."""
    idx = usage.topk(count, dim=1, largest=False).indices  # [B, count], least used first
    return F.one_hot(idx, usage.shape[1]).to(usage.dtype)


class MemoryCore(nn.Module):
    """The memory network: controller, key and gate heads, output layer, and one time step."""

    def __init__(self, features: int, controller: int, slots: int, slot_size: int, reads: int, gamma: float,
                 max_ways: int, key_strength: bool = True, write_keys: bool = False, feature_keys: bool = False):
        super().__init__()
        self.sizes = {"features": features, "controller": controller, "slots": slots, "slot_size": slot_size,
                      "reads": reads, "max_ways": max_ways}
        self.gamma = gamma
        self.controller = nn.LSTMCell(features + max_ways + reads * slot_size, controller)
        self.keys = nn.Linear(controller, reads * slot_size)
        self.gates = nn.Linear(controller, reads)
        #: beta_t per head (None: the paper's reads, beta = 1)
        self.strengths = nn.Linear(controller, reads) if key_strength else None
        #: a key per head for writing, apart from the one it reads with (None: the paper's one key for both)
        self.write_keys = nn.Linear(controller, reads * slot_size) if write_keys or feature_keys else None
        #: the features' own part of every key, one projection for reading (this image's) and writing (the
        #: previous image's, whose label has just arrived) (None: keys come from the controller alone)
        self.feature_keys = nn.Linear(features, reads * slot_size, bias=False) if feature_keys else None
        self.output = nn.Linear(controller + reads * slot_size, max_ways)

    def initial_state(self, batch: int) -> MemoryState:
        s = self.sizes
        dev = self.output.weight.device
        return MemoryState(
            h=torch.zeros(batch, s["controller"], device=dev), c=torch.zeros(batch, s["controller"], device=dev),
            memory=torch.full((batch, s["slots"], s["slot_size"]), 1e-6, device=dev),
            reads=torch.zeros(batch, s["reads"], s["slot_size"], device=dev),
            read_weights=torch.zeros(batch, s["reads"], s["slots"], device=dev),
            usage=torch.zeros(batch, s["slots"], device=dev), label=torch.zeros(batch, s["max_ways"], device=dev),
            previous=torch.zeros(batch, s["features"], device=dev))

    def step(self, state: MemoryState, features: torch.Tensor) -> tuple[torch.Tensor, MemoryState]:
        """One time step for a batch of sequences: features [B, D] of x_t, with ``state.label``
        holding y_{t-1}. Returns the logits [B, max_ways] for y_t and the new state (whose label
        the caller sets to y_t before the next step)."""
        b, reads, width = features.shape[0], self.sizes["reads"], self.sizes["slot_size"]
        inputs = torch.cat([features, state.label, state.reads.reshape(b, -1)], 1)
        h, c = self.controller(inputs, (state.h, state.c))
        read_in, write_in = self.keys(h), (self.write_keys(h) if self.write_keys is not None else None)
        if self.feature_keys is not None:
            read_in = read_in + self.feature_keys(features)
            write_in = write_in + self.feature_keys(state.previous.to(features.dtype))
        keys = torch.tanh(read_in).reshape(b, reads, width)
        alpha = torch.sigmoid(self.gates(h)).unsqueeze(2)  # [B, reads, 1]
        lu_prev = least_used(state.usage, reads)  # from w^u_{t-1}
        write_weights = alpha * state.read_weights + (1 - alpha) * lu_prev  # [B, reads, slots]
        written = keys if write_in is None else torch.tanh(write_in).reshape(b, reads, width)
        # Clear the least used row, then add every head's key where it writes.
        cleared = F.one_hot(state.usage.argmin(1), state.usage.shape[1]).to(features.dtype)  # [B, slots]
        memory = state.memory * (1 - cleared).unsqueeze(2) + torch.einsum("brs,brw->bsw", write_weights, written)
        # Cosine similarity of every key with every row, as one batched product of unit vectors
        # (F.cosine_similarity on broadcast [B, reads, slots, width] tensors costs 3x as much).
        similarity = torch.bmm(F.normalize(keys, dim=2, eps=1e-8),
                               F.normalize(memory, dim=2, eps=1e-8).transpose(1, 2))  # [B, reads, slots]
        if self.strengths is not None:
            similarity = similarity * (1 + F.softplus(self.strengths(h))).unsqueeze(2)
        read_weights = similarity.softmax(2)
        read = torch.einsum("brs,bsw->brw", read_weights, memory)
        usage = self.gamma * state.usage + read_weights.sum(1) + write_weights.sum(1)
        logits = self.output(torch.cat([h, read.reshape(b, -1)], 1))
        new = MemoryState(h=h, c=c, memory=memory, reads=read, read_weights=read_weights, usage=usage,
                          label=state.label, previous=features)
        return logits, new


class MANN(LabelPositionsMixin, FeatureTransformMixin, Algorithm):
    name = "mann"
    version = "2"  # 2: key_strength
    title = "Memory-Augmented Neural Network"
    family = "model"
    description = ("An LSTM with an external memory learns to store each example with its label on sight and "
                   "to look labels up again: learning is reading and writing memory, no gradient steps.")
    hyperparameters = TRAINING_HYPERPARAMETERS + (
        HyperParameter("controller", int, 200, "Units of the LSTM controller (200 in the paper).", 8, 4096,
                       role="architecture"),
        HyperParameter("slots", int, 128, "Rows of the external memory (128 in the paper).", 4, 65536,
                       role="architecture"),
        HyperParameter("slot_size", int, 40, "Numbers per memory row (40 in the paper).", 4, 4096,
                       role="architecture"),
        HyperParameter("reads", int, 4, "Read heads (4 in the paper).", 1, 64, role="architecture"),
        HyperParameter("gamma", float, 0.95, "Decay of the usage weights (0.95 in the paper).", 0.0, 1.0,
                       role="adaptation"),
        max_ways_hyperparameter("Label positions of the output: the most classes the model can tell apart. Each "
                                "episode's classes get positions at random."),
        HyperParameter("key_strength", bool, True, "Sharpen each read with a strength the controller emits (as in "
                       "the Neural Turing Machine); off: the paper's reads, a softmax of plain cosine similarities, "
                       "which over many rows is nearly flat.", role="architecture"),
        HyperParameter("write_keys", bool, False, "Give each head a second key to write with, apart from the one it "
                       "reads with (as the Neural Turing Machine's separate write heads); off: the paper's one key "
                       "per head, both read with and written.", role="architecture"),
        HyperParameter("feature_keys", bool, False, "Pass the image features into the keys directly, through one "
                       "projection shared by reading (this image's features) and writing (the previous image's, "
                       "whose label has just arrived; implies write keys). Reads then find earlier images of the "
                       "same class from the start of training; off: keys come from the LSTM alone, as in the "
                       "paper.", role="architecture"),
        HyperParameter("grad_clip", float, 0.0, "Largest norm of a meta-training step's gradients (0: no limit); "
                       "keeps a rare large gradient through the 50 recurrent steps from throwing the LSTM off.",
                       0.0, 1e6, role="training"),
        FEATURE_TRANSFORM,
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        hp = self.hparams
        self.core = MemoryCore(int(self.backbone.out_features), hp["controller"], hp["slots"], hp["slot_size"],
                               hp["reads"], hp["gamma"], hp["max_ways"], hp["key_strength"],
                               hp["write_keys"], hp["feature_keys"])

    # -- the memory network ------------------------------------------------------------------------
    def initial_state(self, batch: int) -> MemoryState:
        return self.core.initial_state(batch)

    def step(self, state: MemoryState, features: torch.Tensor) -> tuple[torch.Tensor, MemoryState]:
        return self.core.step(state, features)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """[B, L, C, H, W] uint8 (or [B, L, D] features) -> [B, L, D]."""
        b, length = images.shape[0], images.shape[1]
        flat = images.reshape(b * length, *images.shape[2:])
        return self.embed(flat).reshape(b, length, -1)

    def run_sequences(self, features: torch.Tensor, labels: torch.Tensor,
                      state: MemoryState | None = None) -> tuple[torch.Tensor, MemoryState]:
        """Logits [B, L, max_ways] of sequences of features [B, L, D] whose labels (positions,
        [B, L]) arrive one step late; and the state after the last step, holding its label."""
        b, length = labels.shape
        state = state or self.initial_state(b)
        onehot = F.one_hot(labels, self.hparams["max_ways"]).to(features.dtype)
        outputs = []
        for t in range(length):
            logits, state = self.step(state, features[:, t])
            state.label = onehot[:, t]
            outputs.append(logits)
        return torch.stack(outputs, 1), state

    # -- episodes as sequences -------------------------------------------------------------------
    def _sequences(self, episodes: Sequence[Episode], generator: torch.Generator | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Each episode's images (support and queries) in a random order, with their labels mapped
        to random positions: images [B, L, ...], positions [B, L], class indices [B, L]."""
        ways_max = self.hparams["max_ways"]
        images, positions, classes = [], [], []
        for e in episodes:
            self.check_episode_ways(e.ways)
            x = torch.cat([e.support_images, e.query_images])
            y = torch.cat([e.support_labels, e.query_labels])
            # drawn on the CPU (where the generator lives), then moved to the episode's device
            order = torch.randperm(len(y), generator=generator).to(y.device)
            mapping = torch.randperm(ways_max, generator=generator)[: e.ways].to(y.device)
            images.append(x[order])
            classes.append(y[order])
            positions.append(mapping[y[order]])
        return torch.stack(images), torch.stack(positions).to(self.device), torch.stack(classes)

    def meta_train_step(self, episodes: Sequence[Episode]) -> dict[str, float]:
        x, positions, _ = self._sequences(episodes)
        logits, _ = self.run_sequences(self.features(x), positions)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), positions.reshape(-1))
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{self.title}: the meta-training loss is {float(loss)}; lower lr")
        self.optimizer_step(loss, self.hparams["grad_clip"])
        correct = (logits.detach().argmax(2) == positions).float().mean()
        return {"loss": float(loss.detach()), "accuracy": float(correct)}

    @torch.no_grad()
    def sequence_accuracy(self, episodes: Sequence[Episode], instances: int = 10,
                          generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The paper's protocol: (correct, counted) [instances] -- how often the k-th
        occurrence of a class in the sequence was labelled right (k = 1..instances)."""
        correct, counted = torch.zeros(instances), torch.zeros(instances)
        with self.evaluating():
            x, positions, classes = self._sequences(episodes, generator)
            logits, _ = self.run_sequences(self.features(x), positions)
            right = (logits.argmax(2) == positions).cpu()
        for b in range(classes.shape[0]):
            seen: dict[int, int] = {}
            for t, c in enumerate(classes[b].tolist()):
                k = seen.get(c, 0)
                seen[c] = k + 1
                if k < instances:
                    correct[k] += float(right[b, t])
                    counted[k] += 1
        return correct, counted

    # -- the standard protocol ---------------------------------------------------------------------
    @staticmethod
    def interleave(labels: torch.Tensor) -> torch.Tensor:
        """An order of support indices taking the classes in turn (0, 1, 2, 0, 1, 2, ...), each
        class's images in their given order."""
        per_class = [torch.nonzero(labels == c).flatten().tolist() for c in range(int(labels.max()) + 1)]
        order = []
        for k in range(max(len(p) for p in per_class)):
            order.extend(p[k] for p in per_class if k < len(p))
        return torch.tensor(order, dtype=torch.long)

    def adapt(self, support: SupportSet, progress: ProgressCallback | None = None) -> Learner:
        self.check_support_ways(support.ways)
        order = self.interleave(support.labels.cpu())
        with torch.no_grad(), self.evaluating():
            features = self.embed_all(support.images[order]).unsqueeze(0)
            _, state = self.run_sequences(features, support.labels.cpu()[order].to(self.device).unsqueeze(0))
        if progress:
            progress(AdaptProgress(1, 1, None))
        return MANNLearner(self, state, support.class_names)

    def restore_learner(self, class_names: Sequence[str], state: Mapping[str, torch.Tensor]) -> Learner:
        fields = {k: state[k].to(self.device) for k in STATE_FIELDS if k in state}
        if "previous" not in fields:  # saved before the state kept it: only feature_keys models read it
            fields["previous"] = torch.zeros(fields["h"].shape[0], self.core.sizes["features"], device=self.device)
        return MANNLearner(self, MemoryState(**fields), class_names)


class MANNLearner(Learner):
    """The memory and controller state after the support sequence (buffers, by field name);
    each query is read out as the next step from it, independently of the others."""

    def __init__(self, algorithm: MANN, state: MemoryState, class_names: Sequence[str]):
        super().__init__(class_names, algorithm)
        # Cloned: a field may be a view of an inference tensor (the support features).
        self.memory_state = BufferDict({k: v.detach().clone() for k, v in state.fields().items()})

    @property
    def state(self) -> MemoryState:
        return MemoryState(**self.memory_state.as_dict())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.algorithm.embed(images)
        logits, _ = self.algorithm.step(self.state.expand(features.shape[0]), features)
        return logits[:, : len(self.class_names)]

    def learner_state(self) -> dict[str, torch.Tensor]:
        return self.memory_state.as_dict()


@hookimpl
def metastudio_algorithms():
    return [MANN]
