"""The meta-training worker: prepares and runs one run in its own ``QThread``, and sends the
panel plain dicts, numbers and strings through signals (at most about 20 step signals a
second). It never touches widgets. See :class:`metastudio.gui.training.panel.TrainingPanel`."""

from __future__ import annotations

import contextlib
import gc
import math
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal, Slot

from metastudio.app.runs import RunCancelled, TrainingPlan, prepare_run
from metastudio.engine.control import Control
from metastudio.errors import for_person

#: Seconds between two step signals of the worker (steps in between are merged).
STEP_SIGNAL_INTERVAL = 0.05
#: How much lower than the GUI the training thread (and the compute threads it starts) runs: a
#: Linux nice increment. Without it, on a machine with few cores, torch's threads keep every core
#: busy and the GUI thread waits tens of milliseconds for one; with it, the scheduler lets the GUI
#: in at once (see docs/benchmarks.md, "GUI stalls while meta-training").
WORKER_NICE_INCREMENT = 5


@contextlib.contextmanager
def _collector_tuned(enabled: bool = True):
    """Keep Python's cyclic garbage collector from stopping the GUI thread during a run.

    A full collection scans every tracked object of the application (~370k with torch, Qt and
    pyqtgraph loaded: 100-170 ms on a 2-core CPU) while holding the GIL, so the GUI thread
    stops too. Loading a dataset allocates tens of thousands of objects and triggered several
    such collections. So the collector is off while the run is prepared (reference counting
    still frees almost everything); then everything alive (application, data, model) is frozen
    (``gc.freeze``), so that collections during training scan only what training allocates; it
    is unfrozen when the run ends, so nothing can leak. Yields a function to call once the
    run is prepared."""
    if not enabled:
        yield lambda: None
        return
    was_enabled = gc.isenabled()
    frozen = False
    gc.disable()

    def prepared() -> None:
        nonlocal frozen
        if not frozen:
            gc.freeze()  # before collecting again: the first collection would scan the new data
            frozen = True
            if was_enabled:
                gc.enable()

    try:
        yield prepared
    finally:
        if frozen:
            gc.unfreeze()
        if was_enabled:
            gc.enable()


def _plain_float(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


class TrainingWorker(QObject):
    """Prepares and runs one meta-training run; lives in its own ``QThread``.

    Start it by connecting ``thread.started`` to :meth:`run`. It emits plain Python data only:

    * ``loading(stage, done, total)`` while preparing (``total`` -1 when unknown);
    * ``prepared(dict)``: device, steps, dataset summaries and ``warnings`` (list of str);
    * ``step(dict)``: step, steps, loss, accuracy (0..1), episodes_per_second, lr, elapsed;
      at most one every :data:`STEP_SIGNAL_INTERVAL` seconds (steps in between are averaged);
    * ``validation(dict)``: step, accuracy and ci95 (percent), best_accuracy, improved;
    * ``status(str)``;
    * then exactly one of ``finished(dict)`` (status "completed" or "cancelled", model_path,
      model_exists, best_accuracy, elapsed, steps_done, steps, warnings) and
      ``failed(message, details)``, and last ``done()``.

    :meth:`pause`, :meth:`resume` and :meth:`cancel` may be called from any thread.
    """

    loading = Signal(str, int, int)
    prepared = Signal(dict)
    step = Signal(dict)
    validation = Signal(dict)
    status = Signal(str)
    finished = Signal(dict)
    failed = Signal(str, str)
    done = Signal()

    def __init__(self, plan: TrainingPlan, host=None, *, torch_threads: int | None = None,
                 step_interval: float = STEP_SIGNAL_INTERVAL, nice_increment: int = WORKER_NICE_INCREMENT,
                 gc_tuning: bool = True, parent: QObject | None = None):
        super().__init__(parent)
        self.plan = plan
        self.host = host
        self.control = Control()
        self.torch_threads = torch_threads
        self.step_interval = step_interval
        self.nice_increment = nice_increment
        self.gc_tuning = gc_tuning
        self._pending: dict[str, Any] | None = None
        self._pending_steps = 0
        self._last_step_emit = 0.0
        self._last_loading_emit = 0.0
        self._warnings: list[str] = []

    # -- steering (any thread) -------------------------------------------------------------------
    def pause(self) -> None:
        self.control.pause()

    def resume(self) -> None:
        self.control.resume()

    def cancel(self) -> None:
        self.control.cancel()

    def is_paused(self) -> bool:
        return self.control.paused

    # -- the run (worker thread) -----------------------------------------------------------------
    @Slot()
    def run(self) -> None:
        try:
            self._run()
        finally:
            self.done.emit()

    def _lower_priority(self) -> None:
        """Lower this thread's scheduling priority (Linux: nice is per thread, and the compute
        threads torch starts from this thread inherit it). Elsewhere QThread's priority, set by
        the panel, does the job."""
        if self.nice_increment <= 0 or not sys.platform.startswith("linux"):
            return
        try:
            tid = threading.get_native_id()
            current = os.getpriority(os.PRIO_PROCESS, tid)
            os.setpriority(os.PRIO_PROCESS, tid, min(19, current + self.nice_increment))
        except (OSError, AttributeError):
            pass  # not allowed or not supported: only responsiveness suffers

    def _run(self) -> None:
        threads_before = None
        try:
            self._lower_priority()
            if self.torch_threads:
                import torch

                threads_before = torch.get_num_threads()
                torch.set_num_threads(self.torch_threads)
            host = self.host
            if host is None:
                from metastudio.plugins import get_host

                host = get_host()
            self.status.emit("preparing the run…")
            with _collector_tuned(self.gc_tuning) as prepared:
                run = prepare_run(self.plan, host, progress=self._on_loading, control=self.control,
                                  listener=self._on_event)
                prepared()
                self._train(run)
        except RunCancelled:
            self.finished.emit({"status": "cancelled", "model_path": "", "model_exists": False, "best_accuracy": None,
                                "elapsed": 0.0, "steps_done": 0, "steps": self.plan.steps,
                                "warnings": list(self._warnings)})
        except BaseException as exc:  # noqa: BLE001 - report everything; never die silently
            self._flush_steps()
            said = for_person(exc)
            self.failed.emit(said.message, said.details)
        finally:
            if threads_before is not None:
                import torch

                torch.set_num_threads(threads_before)  # the setting is process-wide

    def _train(self, run) -> None:
        self._warnings = list(run.warnings)
        steps = run.config.steps
        self.prepared.emit({
            "device": run.device_description, "steps": steps, "warnings": list(run.warnings),
            "train": run.train_dataset.summary(),
            "validation": run.val_dataset.summary() if run.val_dataset is not None else None,
            "model_path": str(run.out),
        })
        self.status.emit("meta-training…")
        result = run.run()
        self._flush_steps()
        model = Path(result.model_path)
        if result.status == "completed":
            run.resume_path.unlink(missing_ok=True)  # the app does not resume finished runs
        self.finished.emit({
            "status": result.status, "model_path": str(model), "model_exists": model.is_file(),
            "best_accuracy": _plain_float(result.best_accuracy), "elapsed": float(result.elapsed),
            "steps_done": int(result.steps_done), "steps": steps, "warnings": list(self._warnings),
        })

    def _on_loading(self, stage: str, done: int, total: int | None) -> None:
        now = time.perf_counter()
        if done == 0 or (total is not None and done >= total) or now - self._last_loading_emit >= self.step_interval:
            self._last_loading_emit = now
            self.loading.emit(stage, int(done), -1 if total is None else int(total))

    def _on_event(self, event) -> None:
        from metastudio.engine.trainer import StepEvent, ValidationEvent

        if isinstance(event, StepEvent):
            self._merge_step(event)
            now = time.perf_counter()
            if now - self._last_step_emit >= self.step_interval or event.step >= event.steps:
                self._flush_steps()
        elif isinstance(event, ValidationEvent):
            self._flush_steps()
            self.validation.emit({"step": int(event.step), "accuracy": float(event.accuracy), "ci95": float(event.ci95),
                                  "best_accuracy": float(event.best_accuracy), "improved": bool(event.improved)})

    def _merge_step(self, event) -> None:
        kind = getattr(event, "kind", "episode")
        if self._pending is not None and self._pending.get("kind") != kind:
            self._flush_steps()  # batch and episode numbers are never averaged together
        previous = self._pending
        d = {"step": int(event.step), "steps": int(event.steps), "loss": float(event.loss),
             "accuracy": float(event.accuracy), "episodes_per_second": float(event.episodes_per_second),
             "lr": float(event.lr), "elapsed": float(event.elapsed), "kind": kind}
        if previous is None:
            d["first_step"] = int(event.step)
            self._pending, self._pending_steps = d, 1
            return
        # A weighted running mean of loss and accuracy over the merged events.
        n = self._pending_steps
        for key in ("loss", "accuracy"):
            d[key] = (previous[key] * n + d[key]) / (n + 1)
        d["first_step"] = previous["first_step"]
        self._pending, self._pending_steps = d, n + 1

    def _flush_steps(self) -> None:
        if self._pending is None:
            return
        d = self._pending
        self._pending, self._pending_steps = None, 0
        self._last_step_emit = time.perf_counter()
        self.step.emit(d)

