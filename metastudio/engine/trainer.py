"""The meta-training loop.

:class:`Trainer` runs an algorithm's :meth:`~metastudio.algorithms.base.Algorithm.meta_train_step`
over a seeded stream of episodes and reports what happens through events, plain dataclasses
of plain numbers handed to a ``listener`` callable (the CLI prints them, the GUI forwards them
as Qt signals). It

* validates every ``val_every`` steps on a fixed list of episodes and saves the best model to
  ``out`` (a model file, see :mod:`metastudio.engine.checkpoint`); with
  ``TrainConfig.validate_before_training`` also before the first step (step 0, a history entry
  without training loss), so an untrained model that training only makes worse is kept;
* writes a resume checkpoint (weights, optimiser, schedule, random state, history) to
  ``<out>.resume.safetensors`` every ``checkpoint_every`` steps and when stopped;
* checks its :class:`~metastudio.engine.control.Control` before every step, so cancelling or
  pausing takes effect within one step;
* stops on a non-finite loss with a clear error, leaving the best model and the last good
  resume checkpoint as they were.

Step ``t`` always trains on episodes ``t*B .. t*B+B-1`` of the sampler, so a resumed run sees
exactly the episodes an uninterrupted one would have seen.

An algorithm that trains on labelled batches (``trains_on`` ``"batches"`` or
``"batches+episodes"``) makes its first ``TrainConfig.batch_steps`` steps on batch ``t`` of a
:class:`~metastudio.data.batches.BatchSampler` instead (the engine tells it the number of
training classes once, :meth:`~metastudio.algorithms.base.Algorithm.prepare_batch_training`);
its step events and history entries say ``kind`` ``"batch"``, so their accuracy (over every
training class) is never shown as if it were an episode's. Validation is on episodes always.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from metastudio.algorithms.base import Algorithm
from metastudio.engine.checkpoint import (
    load_training_checkpoint,
    model_metadata,
    save_model,
    save_training_checkpoint,
)
from metastudio.engine.control import Control
from metastudio.data.batches import BatchSampler
from metastudio.data.episodes import EpisodeSampler
from metastudio.errors import TrainingError
from metastudio.engine.evaluator import EvaluationCancelled, evaluate


@dataclass
class TrainConfig:
    steps: int
    meta_batch: int = 1
    val_every: int = 500
    val_episodes: int = 200
    checkpoint_every: int | None = None  # default: val_every
    log_every: int = 10
    seed: int = 0
    #: Validate the untrained model too (step 0) and keep it as the best model if nothing after
    #: beats it: for heads on pretrained features that may only get worse with training.
    validate_before_training: bool = False
    #: The first steps that train on labelled batches (of ``Trainer.batch_sampler``); the rest
    #: train on episodes. ``steps`` for an algorithm that trains on batches only.
    batch_steps: int = 0


@dataclass
class StepEvent:
    """Averages over the steps since the previous StepEvent."""

    step: int
    steps: int
    loss: float
    accuracy: float
    episodes_per_second: float  # batches per second for kind "batch"
    lr: float
    elapsed: float
    #: "episode" (loss and accuracy over episodes' queries) or "batch" (over labelled batches,
    #: accuracy among every training class).
    kind: str = "episode"


@dataclass
class ValidationEvent:
    step: int
    accuracy: float  # percent
    ci95: float
    best_accuracy: float
    improved: bool


@dataclass
class CheckpointEvent:
    step: int
    path: str
    kind: str  # "best" (the model file) or "resume"


@dataclass
class FinishedEvent:
    status: str  # "completed" or "cancelled"
    step: int
    best_accuracy: float | None
    model_path: str
    elapsed: float


Event = StepEvent | ValidationEvent | CheckpointEvent | FinishedEvent


@dataclass
class TrainResult:
    status: str
    steps_done: int
    best_accuracy: float | None
    model_path: Path
    history: list[dict[str, Any]] = field(default_factory=list)
    elapsed: float = 0.0


def resume_path_for(out: str | Path) -> Path:
    out = Path(out)
    stem = out.name[: -len(".safetensors")] if out.name.endswith(".safetensors") else out.name
    return out.with_name(stem + ".resume.safetensors")


class Trainer:
    def __init__(
        self,
        algorithm: Algorithm,
        train_sampler: EpisodeSampler,
        config: TrainConfig,
        out: str | Path,
        *,
        val_sampler: EpisodeSampler | None = None,
        listener: Callable[[Event], None] | None = None,
        control: Control | None = None,
        dataset_info: Mapping[str, Any] | None = None,
        batch_sampler: BatchSampler | None = None,
    ):
        if config.steps < 1:
            raise ValueError("training needs at least one step")
        _check_kinds(algorithm, config, train_sampler, batch_sampler)
        self.algorithm = algorithm
        self.train_sampler = train_sampler
        self.batch_sampler = batch_sampler
        self.val_sampler = val_sampler
        self.config = config
        self.out = Path(out)
        self.resume_path = resume_path_for(self.out)
        self.listener = listener or (lambda event: None)
        self.control = control or Control()
        self.dataset_info = dict(dataset_info or {})
        self.history: list[dict[str, Any]] = []
        self.best: float | None = None
        self._val_specs = val_sampler.fixed(config.val_episodes) if val_sampler is not None else None

    # ------------------------------------------------------------------------------------------
    def _save_resume(self, step: int, since_val: _Meter, pending_validation: bool = False) -> None:
        """Everything needed to continue exactly where this run is: see :meth:`run` (resume)."""
        state = {"step": step, "best": self.best, "history": self.history, "elapsed": self._elapsed(),
                 "pending_validation": pending_validation, "since_validation": since_val.state(),
                 "config": self.config.__dict__}
        meta = model_metadata(self.algorithm, history=self.history, dataset=self.dataset_info)
        save_training_checkpoint(self.algorithm, self.resume_path, state, meta)
        self.listener(CheckpointEvent(step, str(self.resume_path), "resume"))

    def _save_model(self, step: int) -> None:
        save_model(self.algorithm, self.out, history=self.history, dataset=self.dataset_info,
                   extra={"trained_steps": step, "best_val_accuracy": self.best})
        self.listener(CheckpointEvent(step, str(self.out), "best"))

    def _validate(self, step: int) -> tuple[float | None, bool]:
        """Validation accuracy (percent; None without a validation set) and whether it improved."""
        if self.val_sampler is None:
            return None, True
        result = evaluate(self.algorithm, self.val_sampler, self._val_specs, control=self.control)
        improved = self.best is None or result.accuracy > self.best
        if improved:
            self.best = result.accuracy
        self.listener(ValidationEvent(step, result.accuracy, result.ci95, self.best, improved))
        return result.accuracy, improved

    # ------------------------------------------------------------------------------------------
    def _end_of_interval(self, step: int, meter: _Meter) -> None:
        """Validate, record the interval's history entry and save the model if it improved.
        Raises EvaluationCancelled (nothing recorded) when cancelled during validation.
        At step 0 (before training) the entry's loss and accuracy are None."""
        val_accuracy, improved = self._validate(step)
        trained = step > 0
        entry = {
            "step": step, "loss": meter.mean("loss") if trained else None,
            "accuracy": meter.mean("accuracy") if trained else None, "val_accuracy": val_accuracy,
            "lr": self.algorithm.learning_rate, "elapsed": round(self._elapsed(), 2),
        }
        if self.config.batch_steps:  # the loss and accuracy of the steps up to this one
            entry["kind"] = self._kind(step - 1) if trained else None
        self.history.append(entry)
        meter.reset()
        if improved:
            self._save_model(step)
        self.algorithm.train()

    def run(self, resume: bool = False) -> TrainResult:
        cfg = self.config
        algo = self.algorithm
        if cfg.batch_steps:
            algo.prepare_batch_training(self.batch_sampler.classes)
        algo.configure_training(cfg.steps)
        step, pending_validation, self._elapsed_before = 0, False, 0.0
        since_val = _Meter()
        if resume and self.resume_path.exists():
            saved = load_training_checkpoint(algo, self.resume_path)
            state = saved["trainer"]
            # A run started from another model (dataset.init) keeps saying so when resumed without --init.
            started_from = (saved.get("dataset") or {}).get("init")
            if started_from and "init" not in self.dataset_info:
                self.dataset_info["init"] = started_from
            step, self.best = int(state["step"]), state.get("best")
            self.history = list(state.get("history", []))
            self._elapsed_before = float(state.get("elapsed", 0.0))
            pending_validation = bool(state.get("pending_validation"))
            since_val.restore(state.get("since_validation"))
        else:
            torch.manual_seed(cfg.seed)
        checkpoint_every = cfg.checkpoint_every or cfg.val_every
        self._started = time.perf_counter()
        algo.train()
        window = _Meter()
        status = "completed"
        if cfg.validate_before_training and step == 0 and not self.history and self.val_sampler is not None:
            try:
                self._end_of_interval(0, since_val)
            except EvaluationCancelled:
                status = "cancelled"
            window.reset()
        while status != "cancelled" and (step < cfg.steps or pending_validation):
            if self.control.should_stop():
                status = "cancelled"
                break
            if not pending_validation:
                kind = self._kind(step)
                if kind != window.kind and window.n:  # the batch stage ends: its averages stand apart
                    self._report(step, window)
                window.kind = kind
                metrics = self._train_step(step)
                loss = float(metrics["loss"])
                if not math.isfinite(loss):
                    kept = f"the best model so far is in '{self.out}'" if self.out.exists() else "no model was saved yet"
                    raise TrainingError(
                        f"the training loss became {loss} at step {step + 1}; {kept} and the last resume checkpoint "
                        f"is unchanged. Try a lower learning rate (--hp lr=...)"
                    )
                step += 1
                accuracy = float(metrics.get("accuracy", float("nan")))
                window.add(loss, accuracy)
                since_val.add(loss, accuracy)
                if step % cfg.log_every == 0 or step == cfg.steps:
                    self._report(step, window)
            if step % cfg.val_every == 0 or step == cfg.steps:
                pending_validation = True
                paused = time.perf_counter()
                try:
                    self._end_of_interval(step, since_val)
                except EvaluationCancelled:
                    status = "cancelled"
                    break
                pending_validation = False
                window.started += time.perf_counter() - paused  # validation time is not training throughput
            if step % checkpoint_every == 0 or step == cfg.steps:
                self._save_resume(step, since_val)
        if status == "cancelled":
            self._save_resume(step, since_val, pending_validation)
            if not self.out.exists() and step > 0:
                self._save_model(step)
        self.listener(FinishedEvent(status, step, self.best, str(self.out), self._elapsed()))
        return TrainResult(status, step, self.best, self.out, self.history, self._elapsed())

    def _elapsed(self) -> float:
        return self._elapsed_before + time.perf_counter() - self._started

    def _kind(self, step: int) -> str:
        """What step ``step`` (counted from 0) trains on: "batch" or "episode"."""
        return "batch" if step < self.config.batch_steps else "episode"

    def _train_step(self, step: int) -> dict[str, float]:
        """Step ``step`` (from 0): labelled batch ``step``, or the episodes of step ``step``."""
        algo, cfg = self.algorithm, self.config
        if self._kind(step) == "batch":
            return algo.batch_train_step(self.batch_sampler.batch(step).to(algo.device, non_blocking=True))
        episodes = [self.train_sampler.episode(step * cfg.meta_batch + j).to(algo.device, non_blocking=True)
                    for j in range(cfg.meta_batch)]
        return algo.meta_train_step(episodes)

    def _report(self, step: int, window: _Meter) -> None:
        """A StepEvent of the steps in ``window`` (ending with ``step``), which then starts anew."""
        per_step = 1 if window.kind == "batch" else self.config.meta_batch
        self.listener(StepEvent(step, self.config.steps, window.mean("loss"), window.mean("accuracy"),
                                window.n * per_step / window.seconds(), self.algorithm.learning_rate, self._elapsed(),
                                window.kind))
        window.reset()


def _check_kinds(algorithm: Algorithm, config: TrainConfig, episodes: EpisodeSampler | None,
                 batches: BatchSampler | None) -> None:
    """What the algorithm trains on (its ``trains_on``) agrees with the steps and samplers."""
    trains_on = getattr(algorithm, "trains_on", "episodes")
    name = getattr(algorithm, "name", type(algorithm).__name__)
    if not 0 <= config.batch_steps <= config.steps:
        raise ValueError(f"batch_steps must be from 0 to the {config.steps} steps, got {config.batch_steps}")
    if trains_on == "batches" and config.batch_steps != config.steps:
        raise ValueError(f"{name} trains on labelled batches only: every one of its {config.steps} steps must be a "
                         f"batch step, not {config.batch_steps}")
    if trains_on == "episodes" and config.batch_steps:
        raise ValueError(f"{name} trains on episodes only: it has no batch steps (got batch_steps={config.batch_steps})")
    if config.batch_steps and batches is None:
        raise ValueError("batch steps need a batch sampler (batch_sampler=BatchSampler(...))")
    if config.batch_steps < config.steps and episodes is None:
        raise ValueError("episode steps need an episode sampler")


class _Meter:
    """Running sums of loss and accuracy over a stretch of steps, and when the stretch began."""

    def __init__(self):
        self.reset()

    kind = "episode"  # what the steps measured train on ("batch" or "episode")

    def reset(self) -> None:
        self.sums = {"loss": 0.0, "accuracy": 0.0}
        self.n = 0
        self.started = time.perf_counter()

    def add(self, loss: float, accuracy: float) -> None:
        self.sums["loss"] += loss
        self.sums["accuracy"] += accuracy
        self.n += 1

    def mean(self, key: str) -> float:
        return self.sums[key] / max(self.n, 1)

    def seconds(self) -> float:
        return max(time.perf_counter() - self.started, 1e-9)

    def state(self) -> dict:
        return {"sums": self.sums, "n": self.n}

    def restore(self, state: dict | None) -> None:
        if state:
            self.sums, self.n = dict(state["sums"]), int(state["n"])
