"""Model-Agnostic Meta-Learning (Finn, Abbeel and Levine, ICML 2017), second and first order.

MAML meta-learns an initialisation: for each task, a few steps of plain SGD on the support set
turn the shared weights theta into task weights theta' = theta - alpha * grad L_support(theta)
(repeated ``inner_steps`` times), and the meta-objective is the loss of theta' on the task's
queries. Its gradient with respect to theta goes *through* the inner steps (second order: the
Hessian-vector products of the inner gradients are included). First-order MAML
(``first_order=true``) treats the inner gradients as constants, which is cheaper and nearly as
good on Omniglot.

Written with ``torch.func``: the network is a pure function of a dict of weights, the inner
gradients come from ``torch.func.grad`` and the task weights are new tensors -- no module's
parameters are ever overwritten, so adapting in the app cannot change the model.

The network, the inner loop, the output layer (one meta-learned row repeated for every class,
so any number of classes works), the batch-norm modes (``support``, ``transductive`` as in the
paper, ``running``), task batching and adaptation are shared with the other gradient-based
algorithms: see :mod:`metastudio.algorithms.gradient`. With a frozen pretrained backbone only the
output layer adapts (ANIL).

The inner-loop loss of every adaptation step is reported through ``progress``, so the app
plots it live while a person's support set is learned.
"""

from __future__ import annotations

from collections.abc import Sequence

from metastudio.api import (
    TRAINING_HYPERPARAMETERS, Episode, GradientAlgorithm, hookimpl, HyperParameter, inner_hyperparameters
)


class MAML(GradientAlgorithm):
    name = "maml"
    version = "1"
    title = "MAML"
    description = ("Meta-learns starting weights from which a few gradient steps on your examples give a good "
                   "classifier. Second order by default, first order as an option.")
    hyperparameters = TRAINING_HYPERPARAMETERS + inner_hyperparameters(0.4, 3) + (
        HyperParameter("inner_steps", int, 1, "SGD steps on each task's support set during meta-training.", 1, 100,
                       role="training"),
        HyperParameter("first_order", bool, False, "First-order MAML: ignore the second derivatives through the "
                       "inner steps (cheaper, slightly less accurate).", role="training"),
    )

    def meta_train_step(self, episodes: Sequence[Episode]) -> dict[str, float]:
        return self.backprop_meta_step(episodes, create_graph=not self.hparams["first_order"])


@hookimpl
def metastudio_algorithms():
    return [MAML]
