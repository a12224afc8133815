"""The LSTM meta-learner (Ravi and Larochelle, "Optimization as a Model for Few-Shot Learning", ICLR 2017).

Gradient descent, theta_t = theta_{t-1} - alpha * grad_t, looks like the cell-state update of
an LSTM, c_t = f_t * c_{t-1} + i_t * c~_t, with f_t = 1, i_t = alpha and c~_t = -grad_t. The
meta-learner is such an LSTM whose cell state *is* the learner's weights: it learns the
forget gate f_t (how much of the current weights to keep: shrinkage) and the input gate i_t (a
learning rate per weight and per step) from the current gradient, loss, weights and its own
previous gates, and it learns the starting weights c_0 = theta_0.

It is applied coordinate-wise, with the same meta-learner parameters for every weight of the
learner (Conv-4 has about 112,000), which keeps it small:

* a first LSTM layer (``hidden`` units, 20 in the paper) reads, for each coordinate, the
  preprocessed gradient and the preprocessed loss of the task (4 numbers);
* the gates are i_t = sigmoid(W_I [h_t, theta_{t-1}, i_{t-1}] + b_I) and
  f_t = sigmoid(W_F [h_t, theta_{t-1}, f_{t-1}] + b_F), and
  theta_t = f_t * theta_{t-1} - i_t * grad_t.

The paper's preprocessing (from Andrychowicz et al. 2016) turns a value x into two numbers:
(log|x| / p, sign x) when |x| >= e^-p, and (-1, e^p x) otherwise, with p = 10, so gradients and
losses of any magnitude reach the LSTM at a similar scale. As in the paper, f starts near 1 and
i near a small learning rate (here ``inner_lr``); the gradients and losses fed to the
meta-learner are treated as constants (no second derivatives), while the meta-gradient flows
through the unrolled weight updates into the gates, the LSTM and theta_0. The paper's batch
norm used the statistics of each batch at training and test time (``batch_norm=transductive``);
the default here, ``support``, normalises queries with the support set's statistics so that one
query never affects another. The network, output layer and task batching are shared with MAML:
see :mod:`metastudio.algorithms.gradient`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from metastudio.api import (
    TRAINING_HYPERPARAMETERS, Episode, GradientAlgorithm, hookimpl, HyperParameter, inner_hyperparameters,
    preprocess_gradient as preprocess, with_changes
)

class MetaLearnerLSTM(GradientAlgorithm):
    name = "metalstm"
    version = "1"
    title = "LSTM meta-learner"
    description = ("An LSTM learns how to train the classifier: its own learning rate and weight decay for every "
                   "weight and step, and the starting weights. Adapts in a few learned steps on your examples.")
    hyperparameters = TRAINING_HYPERPARAMETERS + with_changes(
        inner_hyperparameters(0.1, 5),
        # Only the input gate's starting value: a trained model's learning rates are in its weights.
        inner_lr={"help": "The learning rate the meta-learner starts from: its input gate starts near this value "
                  "(then it is learned, per weight and per step).", "role": "training"},
        adapt_steps={"help": "Updates by the meta-learner when adapting (evaluation and the app); best equal to the "
                     "training steps, which it was trained to make."},
    ) + (
        HyperParameter("inner_steps", int, 5, "Updates by the meta-learner on each training task (the unrolled "
                       "steps the meta-gradient goes through).", 1, 100, role="training"),
        HyperParameter("hidden", int, 20, "Units of the meta-learner's first LSTM layer (20 in the paper).", 1, 256,
                       role="architecture"),
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        hidden = self.hparams["hidden"]
        self.lstm = nn.LSTMCell(4, hidden)
        self.input_gate = nn.Linear(hidden + 2, 1)
        self.forget_gate = nn.Linear(hidden + 2, 1)
        with torch.no_grad():
            for gate in (self.input_gate, self.forget_gate):
                gate.weight.uniform_(-0.01, 0.01)
            # f ~ 1 (keep the weights), i ~ inner_lr (plain SGD) at the start, as in the paper.
            self.forget_gate.bias.fill_(5.0)
            lr = min(max(self.hparams["inner_lr"], 1e-4), 0.99)
            self.input_gate.bias.fill_(math.log(lr / (1 - lr)))

    def inner_update(self, fast: dict[str, torch.Tensor], grads: dict[str, torch.Tensor], loss: torch.Tensor,
                     step: int, state: Any) -> tuple[dict[str, torch.Tensor], Any]:
        keys = list(fast)
        tasks = fast[keys[0]].shape[0]
        theta = torch.cat([fast[k].reshape(tasks, -1) for k in keys], 1)  # [T, P]
        gradient = torch.cat([grads[k].reshape(tasks, -1) for k in keys], 1).detach()
        count = theta.shape[1]
        features = torch.cat([preprocess(gradient), preprocess(loss.detach().float().reshape(tasks, 1).expand(tasks, count))],
                             -1).reshape(tasks * count, 4)
        if state is None:
            zeros = theta.new_zeros(tasks * count, 1)
            hc, f_prev, i_prev = None, zeros, zeros
        else:
            hc, f_prev, i_prev = state
        h, c = self.lstm(features, hc)
        flat = theta.reshape(-1, 1)
        f = torch.sigmoid(self.forget_gate(torch.cat([h, flat, f_prev], 1)))
        i = torch.sigmoid(self.input_gate(torch.cat([h, flat, i_prev], 1)))
        updated = (f * flat - i * gradient.reshape(-1, 1)).reshape(tasks, count)
        out, start = {}, 0
        for k in keys:
            size = fast[k][0].numel()
            out[k] = updated[:, start : start + size].reshape(fast[k].shape)
            start += size
        return out, ((h, c), f, i)

    # -- meta-training: the query loss after the unrolled updates ----------------------------
    def meta_train_step(self, episodes: Sequence[Episode]) -> dict[str, float]:
        # The gradients fed to the meta-learner are constants (create_graph=False), as in the paper.
        return self.backprop_meta_step(episodes, create_graph=False)

    def clip_meta_gradients(self) -> None:
        # The paper clips the meta-gradient (norm 0.25): unrolled updates can give large gradients.
        nn.utils.clip_grad_norm_([p for p in self.parameters() if p.requires_grad], 0.25)


@hookimpl
def metastudio_algorithms():
    return [MetaLearnerLSTM]
