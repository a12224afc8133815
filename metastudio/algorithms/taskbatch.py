"""One network run with a different set of weights for each task, for many tasks at once.

Optimisation-based meta-learners (MAML, Reptile, the LSTM meta-learner) give every task of a
meta-batch its own copy of the network's weights and take gradient steps on it. Looping over the
tasks runs many small convolutions one after the other; ``torch.func.vmap`` over
``functional_call`` was slower still on a CPU (5.2 s per meta-batch of 32, against the loop's
2.1 s). :class:`TaskBatchedChain` instead runs all tasks in *one* pass: the images of task t
go to channel group t, every convolution becomes one grouped convolution with the T weight
sets stacked (``groups = T``), batch norm works per (task, channel) -- which is per-task batch
statistics by construction -- and a linear layer becomes one batched matrix product.

Weights are passed in a dict keyed like the network's own ``named_parameters`` with a leading
task dimension: ``params["encoder.0.0.weight"]`` is [T, 64, 1, 3, 3]. Images are
[T, n, C, H, W] (every task with the same number n of images) or features [T, n, D]; the
output is [T, n, D_out]. Because the function is plain tensor code of the weights,
``torch.func.grad`` gives each task's gradient at once (the tasks do not interact), and the
meta-gradient flows back through the stacked weights to the shared ones they were expanded
from.

Supported networks are chains of ``Conv2d``, ``BatchNorm2d``, ``ReLU``, ``LeakyReLU``,
``MaxPool2d``, ``AvgPool2d``, ``Flatten``, ``Linear``, ``Dropout`` (skipped) and ``Identity``,
nested in ``nn.Sequential`` s; a module can declare its own chain with a
``functional_chain()`` method returning ``(parameter prefix, layer)`` pairs (Conv-4 does).

Batch norm, per call (``bn``):

* ``"batch"``: the statistics of the images being processed, per task (training mode without
  touching the stored statistics). With ``stats_from=k`` only the first k images of each task
  give the statistics and all n are normalised with them -- the support set normalising itself
  and the queries, without the queries affecting one another. ``capture`` (a list) receives
  each batch norm's (mean, variance) [T, C], ``update_running`` folds them into the module's
  stored statistics (momentum, averaged over tasks, no gradient).
* ``"given"``: the (mean, variance) pairs of an earlier ``capture``, in order.
* ``"running"``: the module's stored running statistics (eval mode).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
import torch
import torch.nn.functional as F
from torch import nn

_PARAMETRIC = (nn.Conv2d, nn.BatchNorm2d, nn.Linear)
_PLAIN = (nn.ReLU, nn.LeakyReLU, nn.MaxPool2d, nn.AvgPool2d, nn.Flatten, nn.Identity, nn.Dropout)


class UnsupportedNetwork(ValueError):
    """The network is not a chain of layers :class:`TaskBatchedChain` can run."""


def chain_of(net: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """The network as (parameter prefix, layer) pairs in execution order, or UnsupportedNetwork."""
    out: list[tuple[str, nn.Module]] = []
    custom = getattr(net, "functional_chain", None)
    if callable(custom):
        for sub_prefix, layer in custom():
            out.extend(chain_of(layer, prefix + sub_prefix) if isinstance(layer, nn.Sequential) else [(prefix + sub_prefix, layer)])
        return out
    if isinstance(net, nn.Sequential):
        for name, child in net.named_children():
            out.extend(chain_of(child, f"{prefix}{name}."))
        return out
    if isinstance(net, _PARAMETRIC + _PLAIN):
        return [(prefix, net)]
    raise UnsupportedNetwork(f"{type(net).__name__} is not a chain of conv / batch norm / ReLU / pool / linear layers")


def is_chain(net: nn.Module) -> bool:
    try:
        chain_of(net)
    except UnsupportedNetwork:
        return False
    return True


class TaskBatchedChain:
    """Runs ``net`` (a chain, see :func:`chain_of`) for T tasks at once with per-task weights."""

    def __init__(self, net: nn.Module):
        self.net = net
        self.layers = chain_of(net)
        for prefix, layer in self.layers:
            if isinstance(layer, nn.Conv2d) and layer.padding_mode != "zeros":
                raise UnsupportedNetwork(f"{prefix}: only zero padding is supported")

    def __call__(self, params: Mapping[str, torch.Tensor], x: torch.Tensor, *, bn: str = "batch",
                 stats_from: int | None = None, capture: list | None = None,
                 given: list | None = None, update_running: bool = False) -> torch.Tensor:
        if bn not in ("batch", "given", "running"):
            raise ValueError(f"bn must be batch, given or running, got {bn!r}")
        if bn == "given" and given is None:
            raise ValueError("bn='given' needs the statistics of an earlier capture")
        tasks, n = x.shape[0], x.shape[1]
        spatial = x.dim() == 5
        # Working layouts: [n, T*C, H, W] for images, [n, T, D] for vectors.
        if spatial:  # channels_last: oneDNN's convolutions are about 1.4x faster in it (forward and backward)
            h = x.transpose(0, 1).reshape(n, tasks * x.shape[2], *x.shape[3:]).contiguous(memory_format=torch.channels_last)
        else:
            h = x.transpose(0, 1)
        given_iter: Iterator | None = iter(given) if given is not None else None
        for prefix, layer in self.layers:
            if isinstance(layer, nn.Conv2d):
                if h.dim() != 4:
                    raise UnsupportedNetwork(f"{prefix}: a convolution after the features were flattened")
                w = params[prefix + "weight"]
                b = params.get(prefix + "bias")
                h = F.conv2d(h, w.reshape(-1, *w.shape[2:]), None if b is None else b.reshape(-1), layer.stride,
                             layer.padding, layer.dilation, tasks * layer.groups)
            elif isinstance(layer, nn.BatchNorm2d):
                h = self._batch_norm(prefix, layer, h, params, tasks, bn, stats_from, capture, given_iter, update_running)
            elif isinstance(layer, nn.Linear):
                if h.dim() == 4:
                    raise UnsupportedNetwork(f"{prefix}: a linear layer on feature maps (flatten first)")
                w = params[prefix + "weight"]  # [T, out, in]
                h = torch.einsum("nti,toi->nto", h, w)
                b = params.get(prefix + "bias")
                if b is not None:
                    h = h + b.unsqueeze(0)
            elif isinstance(layer, nn.Flatten):
                if h.dim() == 4:
                    h = h.reshape(n, tasks, -1)
            elif isinstance(layer, nn.ReLU):
                h = F.relu(h)
            elif isinstance(layer, nn.LeakyReLU):
                h = F.leaky_relu(h, layer.negative_slope)
            elif isinstance(layer, (nn.MaxPool2d, nn.AvgPool2d)):
                h = layer(h)
            # Identity and Dropout (meta-learners adapt without dropout): nothing to do.
        if h.dim() == 4:  # a chain that never flattened: flatten each task's maps
            h = h.reshape(n, tasks, -1)
        return h.transpose(0, 1)

    @staticmethod
    def _batch_norm(prefix: str, layer: nn.BatchNorm2d, h: torch.Tensor, params: Mapping[str, torch.Tensor],
                    tasks: int, bn: str, stats_from: int | None, capture: list | None, given_iter: Iterator | None,
                    update_running: bool) -> torch.Tensor:
        channels = layer.num_features
        weight = params.get(prefix + "weight")
        bias = params.get(prefix + "bias")
        w = weight.reshape(-1) if weight is not None else None
        b = bias.reshape(-1) if bias is not None else None
        if bn == "running":
            if layer.running_mean is None:
                raise ValueError(f"{prefix}: this batch norm keeps no running statistics")
            mean = layer.running_mean.repeat(tasks)
            var = layer.running_var.repeat(tasks)
            return F.batch_norm(h, mean, var, w, b, False, 0.0, layer.eps)
        if bn == "given":
            mean, var = next(given_iter)
            mean, var = mean.reshape(-1), var.reshape(-1)
        else:
            if stats_from is None and capture is None and not update_running:
                return F.batch_norm(h, None, None, w, b, True, 0.0, layer.eps)  # fused, per task-channel
            source = h if stats_from is None else h[:stats_from]
            var, mean = torch.var_mean(source, dim=(0, 2, 3), unbiased=False)
            if capture is not None:
                capture.append((mean.reshape(tasks, channels), var.reshape(tasks, channels)))
            if update_running and layer.running_mean is not None:
                count = source.shape[0] * source.shape[2] * source.shape[3]
                with torch.no_grad():
                    m = layer.momentum if layer.momentum is not None else 0.1
                    unbiased = var.detach() * count / max(count - 1, 1)
                    layer.running_mean.mul_(1 - m).add_(mean.detach().reshape(tasks, channels).mean(0), alpha=m)
                    layer.running_var.mul_(1 - m).add_(unbiased.reshape(tasks, channels).mean(0), alpha=m)
                    layer.num_batches_tracked.add_(1)
        # One fused multiply-add over the maps: scale = w / sqrt(var + eps), shift = b - mean * scale
        # (the statistics stay differentiable, which F.batch_norm's eval path does not allow).
        scale = torch.rsqrt(var + layer.eps)
        if w is not None:
            scale = scale * w
        shift = -mean * scale
        if b is not None:
            shift = shift + b
        return torch.addcmul(shift.reshape(1, -1, 1, 1), h, scale.reshape(1, -1, 1, 1))


__all__ = ["TaskBatchedChain", "UnsupportedNetwork", "chain_of", "is_chain"]
