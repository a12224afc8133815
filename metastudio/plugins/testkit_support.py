"""What the test kit's checks share (:mod:`metastudio.plugins.testkit` and
:mod:`metastudio.plugins.testkit_engine`): the episode shape and tolerances, how a failure is
worded (the step in brackets, then what to change) and how anything the code under test raises
becomes one, the report of what ran, and small helpers to adapt, predict and train."""

from __future__ import annotations

import contextlib
import contextvars
import math
from dataclasses import dataclass, field
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from metastudio.algorithms.backbone import BackboneSpec
from metastudio.algorithms.base import AdaptProgress, Algorithm, Learner
from metastudio.data.datasets import FewShotDataset
from metastudio.data.episodes import Episode, EpisodeSampler, SupportSet, stack_support

#: Episode shape used by :func:`check_algorithm`: 5-way, 1-shot, 2 queries per class.
WAYS, SHOTS, QUERIES = 5, 1, 2
#: Images per labelled batch, for an algorithm that trains on batches.
BATCH = 16
#: Tolerance when comparing the predictions of a reloaded model with the original's.
ATOL, RTOL = 1e-5, 1e-4
#: Tolerance when comparing the stand-alone copy's probabilities (CPU, float32, NCHW) with predict_proba.
EXPORT_ATOL = 1e-4
#: The checks that ``check_algorithm(..., skip=...)`` may leave out.
OPTIONAL_CHECKS = ("resume", "empty queries", "export", "onnx", "frozen backbone", "cuda", "bf16")


# ----------------------------------------------------------------------------------------------
# helpers


class _KitFailure(AssertionError):
    """A part of the contract that the code under test does not meet (the kit's own finding)."""


def _fail(step: str, message: str) -> AssertionError:
    return _KitFailure(f"[{step}] {message}")


def _check(condition: Any, step: str, message: str) -> None:
    if not condition:
        raise _fail(step, message)


#: The step running now, named in the message when the code under test raises.
_STEP: contextvars.ContextVar[str] = contextvars.ContextVar("metastudio_testkit_step", default="check")


def _at(step: str) -> None:
    """Say which step runs from here on (for the message if the code under test raises)."""
    _STEP.set(step)


@contextlib.contextmanager
def _reporting(who: str):
    """Anything raised inside, but the kit's own findings, becomes an AssertionError naming the
    step and ``who`` (the algorithm, backbone or dataset), with the original exception chained."""
    token = _STEP.set("check")
    try:
        yield
    except _KitFailure:
        raise
    except (Exception, SystemExit) as e:  # noqa: BLE001 - the code under test may raise anything
        text = str(e).strip().splitlines()[0] if str(e).strip() else "(no message)"
        raise _fail(_STEP.get(), f"{who} raised {type(e).__name__}: {text[:500]} (the original exception and "
                    "its traceback are chained to this one: 'The above exception was the direct cause')") from e
    finally:
        _STEP.reset(token)


def _who(cls: Any) -> str:
    name = getattr(cls, "name", "")
    return f"algorithm '{name}' ({getattr(cls, '__qualname__', cls)!s})" if name else f"algorithm {cls!r}"


@dataclass
class CheckReport:
    """What :func:`check_algorithm` did: the checks that ran (``passed``) and those it left out,
    each with the reason (``skipped``: a check name -> why), and how long it took."""

    algorithm: str
    passed: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def ran(self, check: str) -> None:
        self.passed.append(check)

    def skip(self, check: str, reason: str) -> None:
        self.skipped[check] = reason
        _SKIPPED.append((self.algorithm, check, reason))


#: (algorithm, check, reason) of every check skipped in this process (see :func:`skipped_checks`).
_SKIPPED: list[tuple[str, str, str]] = []


def skipped_checks() -> list[tuple[str, str, str]]:
    """Every check the kit skipped in this process so far, as (algorithm, check, reason): what
    the MetaStudio pytest plugin lists at the end of a test run."""
    return list(_SKIPPED)


@contextlib.contextmanager
def _one_thread():
    """One intra-op thread for the tiny tensors of the checks: on a busy machine (a CI runner,
    a computer that is training) threads that wait for each other cost far more than they win."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class _Registry:
    """The algorithm under test by its name, everything else from the host (for load_model),
    and the backbones the kit makes itself (``extra``)."""

    def __init__(self, cls: type[Algorithm], host):
        self.cls, self.host = cls, host
        self.extra: dict[str, BackboneSpec] = {}

    def algorithm(self, name: str) -> type[Algorithm]:
        return self.cls if name == self.cls.name else self.host.algorithm(name)

    def backbone(self, name: str) -> BackboneSpec:
        return self.extra[name] if name in self.extra else self.host.backbone(name)


def _support(ds: FewShotDataset, classes: Sequence[int], shots: Sequence[int]) -> SupportSet:
    return stack_support([ds.class_images(c)[:k] for c, k in zip(classes, shots)],
                         [ds.class_names[c] for c in classes])


def _queries(ds: FewShotDataset, classes: Sequence[int], skip: int, count: int) -> torch.Tensor:
    return torch.cat([ds.class_images(c)[skip : skip + count] for c in classes])


def _state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _check_proba(probs: Any, queries: int, support: SupportSet, step: str) -> torch.Tensor:
    ways = support.ways
    _check(isinstance(probs, torch.Tensor), step, f"predict_proba must return a torch.Tensor, got {type(probs).__name__}")
    _check(probs.device.type == "cpu", step, f"predict_proba must return a CPU tensor, got one on {probs.device}")
    _check(probs.dtype == torch.float32, step, f"predict_proba must return float32, got {probs.dtype}")
    _check(tuple(probs.shape) == (queries, ways), step,
           f"predict_proba must return [queries, ways] = [{queries}, {ways}] for a {ways}-way support set "
           f"(one column per class of the support set, in its order), got {list(probs.shape)}")
    _check(not probs.requires_grad, step, "predict_proba must not return a tensor with autograd history "
           "(use torch.inference_mode() or .detach())")
    _check(bool(torch.isfinite(probs).all()), step, "predict_proba returned NaN or infinite values")
    _check(bool((probs >= 0).all()) and bool((probs <= 1).all()), step,
           "predict_proba must return probabilities in [0, 1] (apply a softmax to scores or logits)")
    sums = probs.sum(1)
    _check(bool(torch.allclose(sums, torch.ones_like(sums), atol=1e-4)), step,
           f"each row of predict_proba must sum to 1 over the support set's classes (got row sums "
           f"{[round(float(s), 4) for s in sums[:5]]}...); apply a softmax to scores or logits")
    return probs


def _adapt(algorithm: Algorithm, support: SupportSet, step: str) -> Learner:
    _at(step)
    calls: list[Any] = []
    learner = algorithm.adapt(support, progress=calls.append)
    _check(isinstance(learner, Learner), step, f"adapt must return a metastudio.algorithms.base.Learner, got {type(learner).__name__}")
    _check(tuple(learner.class_names) == tuple(support.class_names), step,
           f"the learner's class_names must be the support set's, in order: expected {list(support.class_names)}, "
           f"got {list(learner.class_names)}")
    _check(calls, step, "adapt must call its progress callback at least once (AdaptProgress(step, total, loss)), "
           "even when adaptation is one step")
    for p in calls:
        _check(isinstance(p, AdaptProgress), step,
               f"adapt must report AdaptProgress objects to its progress callback, got {type(p).__name__}: {p!r}")
        _check(isinstance(p.step, int) and isinstance(p.total, int) and 1 <= p.step <= p.total, step,
               f"AdaptProgress needs 1 <= step <= total (1-based), got step={p.step!r} total={p.total!r}")
        _check(p.loss is None or (isinstance(p.loss, float) and math.isfinite(p.loss)), step,
               f"AdaptProgress.loss must be None or a finite plain float, got {p.loss!r}")
    steps = [p.step for p in calls]
    _check(steps == sorted(steps), step, f"AdaptProgress steps must not go backwards, got {steps}")
    if type(algorithm).reports_adaptation_loss:
        _check(any(p.loss is not None for p in calls), step,
               "the algorithm declares reports_adaptation_loss = True, so adapt must report the support loss of its "
               "steps (AdaptProgress(step, total, loss) with a float loss) for the app to plot; it reported none")
    _check(calls[-1].step == calls[-1].total, step,
           f"the last AdaptProgress must have step == total (adaptation finished), got {calls[-1]!r}")
    return learner


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and bool(torch.allclose(a, b, atol=ATOL, rtol=RTOL))


def _check_metrics(metrics: Any, step: str) -> float:
    method = "batch_train_step" if step.startswith("batch_train_step") else "meta_train_step"
    _check(isinstance(metrics, dict), step, f"{method} must return a dict, got {type(metrics).__name__}")
    for key in ("loss", "accuracy"):
        _check(key in metrics, step, f"{method} must return '{key}' (got keys {sorted(metrics)})")
    for key, value in metrics.items():
        _check(type(value) is float, step,
               f"{method} must return plain Python floats; '{key}' is {type(value).__module__}."
               f"{type(value).__name__} ({value!r}); use float(tensor.detach())")
    _check(math.isfinite(metrics["loss"]), step, f"the loss is not finite: {metrics['loss']}")
    _check(0.0 <= metrics["accuracy"] <= 1.0, step, f"accuracy must be a fraction in [0, 1], got {metrics['accuracy']}")
    return metrics["loss"]


def trains_on(algorithm: Algorithm | type[Algorithm]) -> list[str]:
    """What the algorithm trains on, in order: ``["episode"]``, ``["batch"]`` or both (its
    ``trains_on``: labelled batches first)."""
    parts = str(getattr(algorithm, "trains_on", "episodes")).split("+")
    return (["batch"] if "batches" in parts else []) + (["episode"] if "episodes" in parts else [])


def step_functions(algorithm: Algorithm, kind: str, ds: FewShotDataset, seed: int = 0):
    """``(step, fixed)`` for training on ``kind`` (``"batch"`` or ``"episode"``) of ``ds``:
    ``step(i)`` trains on batch ``i`` (or on episodes ``2i+1`` and ``2i+2``), ``fixed()`` on
    the same batch or episode each time; both return the metrics."""
    if kind == "batch":
        from metastudio.data.batches import BatchSampler

        batches = BatchSampler(ds, BATCH, seed=seed)
        fixed_batch = batches.batch(0)
        return (lambda i: algorithm.batch_train_step(batches.batch(i + 1))), (lambda: algorithm.batch_train_step(fixed_batch))
    sampler = EpisodeSampler(ds, WAYS, SHOTS, QUERIES, seed=seed)
    fixed: list[Episode] = [sampler.episode(0)]
    return ((lambda i: algorithm.meta_train_step([sampler.episode(2 * i + 1), sampler.episode(2 * i + 2)])),
            (lambda: algorithm.meta_train_step(fixed)))


def configure(algorithm: Algorithm, ds: FewShotDataset, steps: int) -> None:
    """Get the algorithm ready to train as the trainer does: batch training prepared (where it
    trains on labelled batches of ``ds``), then the optimiser for ``steps`` steps, training mode."""
    if "batch" in trains_on(algorithm):
        algorithm.prepare_batch_training(ds.num_classes)
    algorithm.configure_training(steps)
    algorithm.train()
