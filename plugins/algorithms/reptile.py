"""Reptile (Nichol, Achiam and Schulman, "On First-Order Meta-Learning Algorithms", 2018).

Reptile meta-learns an initialisation like MAML, without differentiating through the inner
loop: for each task of a meta-batch it takes ``inner_steps`` plain SGD steps from the shared
weights theta to task weights phi_t, then moves theta toward their mean,

    theta <- theta + epsilon * (mean_t phi_t - theta),

with the meta step size epsilon (``lr``, 1.0 by default) falling linearly to 0 over the run, as
in the paper. The update is applied through the optimiser as a "gradient" theta - mean phi
(plain SGD), so schedules, checkpoints and resuming work as for every algorithm.

As in the paper, the inner steps train on more images per class than the test tasks have
(``train_on=episode``: the support *and* query images of each training episode, e.g. 1 + 9 per
class for 10 "train shots"), in mini-batches of ``inner_batch`` images drawn in a random order.
Adaptation -- evaluation and the app -- is ``adapt_steps`` full-batch SGD steps on the support
set, reported step by step for the app's live plot.

The paper's inner optimiser was Adam with beta1 = 0; here it is SGD, so that adaptation is the
same gradient descent as MAML's and costs nothing to set up. The network, the output layer
(one meta-learned row repeated for every class), batch norm and task batching are shared with
MAML: see :mod:`metastudio.algorithms.gradient`. The meta-update of the repeated row moves it toward
the mean of all classes' adapted rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from metastudio.api import (
    HEAD, TRAINING_HYPERPARAMETERS, Episode, GradientAlgorithm, hookimpl, HyperParameter,
    inner_hyperparameters, with_changes
)


class Reptile(GradientAlgorithm):
    name = "reptile"
    version = "1"
    title = "Reptile"
    description = ("Meta-learns starting weights by moving them toward the weights a few SGD steps reach on each "
                   "task: first-order, simple and cheap. Adapts by gradient descent on your examples.")
    hyperparameters = with_changes(
        TRAINING_HYPERPARAMETERS,
        lr={"default": 1.0, "maximum": 10.0, "help": "Meta step size epsilon: how far the shared weights move "
            "toward the tasks' adapted weights (1 = all the way)."},
        lr_schedule={"default": "linear"},
    ) + inner_hyperparameters(0.1, 20) + (
        HyperParameter("inner_steps", int, 5, "SGD steps on each training task before the meta-update.", 1, 1000,
                       role="training"),
        HyperParameter("inner_batch", int, 10, "Images per inner SGD step during meta-training (0 = all of the "
                       "task's images at every step).", 0, 100_000, role="training"),
        HyperParameter("train_on", str, "episode", "Which images of a training episode the inner steps use: all "
                       "of them (episode; the queries act as extra shots, as the paper's 'train shots') or only the "
                       "support set (support).", choices=("episode", "support"), role="training"),
    )

    def _adapted(self, episodes: Sequence[Episode]) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        """Task weights after the training inner steps for ``episodes`` (same shapes), with the
        images and labels they trained on."""
        use_queries = self.hparams["train_on"] == "episode"
        x = self.inputs([torch.cat([e.support_images, e.query_images]) if use_queries else e.support_images
                         for e in episodes])
        y = torch.stack([torch.cat([e.support_labels, e.query_labels]) if use_queries else e.support_labels
                         for e in episodes]).to(self.device)
        meta = {k: v.detach() for k, v in self.meta_parameters().items()}
        batch = self.hparams["inner_batch"] or None
        fast = self.inner_loop(self.task_weights(meta, len(episodes), episodes[0].ways), x, y,
                               self.hparams["inner_steps"], create_graph=False, training=True, batch=batch)
        return fast, x, y

    def meta_train_step(self, episodes: Sequence[Episode]) -> dict[str, float]:
        assert self.optimizer is not None, "configure_training() must be called before meta-training"
        same_shape = len({(e.ways, len(e.support_labels), len(e.query_labels)) for e in episodes}) == 1
        groups = [list(episodes)] if self.task_batching() == "grouped" and same_shape else [[e] for e in episodes]
        sums: dict[str, torch.Tensor] = {}
        loss_sum, correct, total = 0.0, 0, 0
        with torch.no_grad():  # torch.func.grad still differentiates the inner steps
            for group in groups:
                fast, x, y = self._adapted(group)
                for name, value in fast.items():
                    # Each task's adapted weights; the repeated output row: the mean over the classes.
                    value = value.mean(1) if name in HEAD else value
                    sums[name] = sums.get(name, 0) + value.sum(0)
                logits = self.logits(fast, x, bn="batch")  # what the last inner step saw
                ways = logits.shape[-1]
                loss_sum += float(torch.nn.functional.cross_entropy(logits.reshape(-1, ways), y.reshape(-1),
                                                                    reduction="sum"))
                correct += int((logits.argmax(2) == y).sum())
                total += y.numel()
            if not all(torch.isfinite(v).all() for v in sums.values()):
                raise FloatingPointError(f"{self.title}: the adapted weights are not finite; lower inner_lr")
            tasks = len(episodes)
            for name, param in self.meta_parameters().items():
                param.grad = param.detach() - sums[name] / tasks
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.scheduler is not None:
            self.scheduler.step()
        return {"loss": loss_sum / max(total, 1), "accuracy": correct / max(total, 1)}

    def make_optimizer(self, parameters: list) -> torch.optim.Optimizer:
        # The meta-update is an interpolation: plain SGD on theta - mean(phi), never Adam.
        return torch.optim.SGD(parameters, lr=self.hparams["lr"], weight_decay=self.hparams["weight_decay"])


@hookimpl
def metastudio_algorithms():
    return [Reptile]
