"""The Meta-train tab: the form (:mod:`~metastudio.gui.training.form`) on the left; on the
right how the run goes (:mod:`~metastudio.gui.training.progress`), where it computes, and
Start, Pause and Cancel. The panel runs a :class:`~metastudio.gui.training.worker.TrainingWorker`
in its own ``QThread`` and always joins it (:meth:`TrainingPanel.shutdown`).
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any

from PySide6.QtCore import QCoreApplication, QEvent, Qt, QThread, Signal, Slot
from PySide6.QtGui import QKeySequence
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QSizePolicy, QVBoxLayout, QWidget

from metastudio.app.runs import TrainingPlan
from metastudio.errors import MetaStudioError
from metastudio.gui.plots import LivePlot
from metastudio.gui.training.form import FormScroll, TrainingForm
from metastudio.gui.training.progress import RunProgress
from metastudio.gui.training.worker import WORKER_NICE_INCREMENT, TrainingWorker

#: The run buttons, Start, Pause and Cancel: (text, accessible name, shortcut, what it does).
RUN_BUTTONS = (
    ("Start", "Start meta-training", "F5", "Start meta-training"),
    ("Pause", "Pause meta-training", "F6", "Pause or resume meta-training"),
    ("Cancel", "Cancel meta-training", "Shift+F5", "Stop meta-training (the best model so far is kept)"),
)


def _run_button(text: str, name: str, key: str, tip: str) -> QPushButton:
    button = QPushButton(text)
    button.setAccessibleName(name)
    button.setShortcut(QKeySequence(key))
    button.setToolTip(f"{tip} ({QKeySequence(key).toString(QKeySequence.SequenceFormat.NativeText)})")
    return button


class TrainingPanel(QWidget):
    """The meta-training panel (see the module docstring): ``form``, ``progress``, ``device_label``
    and the ``start_button``, ``pause_button`` and ``cancel_button``.

    Signals: ``model_trained(path, title)`` when a run ends (completed, or cancelled after a
    model was saved) with a model file; ``message(text)`` for the status bar;
    ``error(message, details)`` when a run cannot start or fails; ``running_changed(bool)``.
    """

    model_trained = Signal(str, str)
    message = Signal(str)
    error = Signal(str, str)
    running_changed = Signal(bool)

    def __init__(self, host=None, parent: QWidget | None = None, *, output_dir: str | Path | None = None,
                 torch_threads: int | None = None, worker_nice: int = WORKER_NICE_INCREMENT, gc_tuning: bool = True):
        super().__init__(parent)
        self.worker_nice = worker_nice
        self.gc_tuning = gc_tuning
        if host is None:
            from metastudio.plugins import get_host

            host = get_host()
        self.host = host
        self.torch_threads = torch_threads
        if output_dir is None:
            from metastudio.data.datasets import cache_dir

            output_dir = cache_dir() / "models"
        self._output_dir = Path(output_dir)
        self._thread: QThread | None = None
        self._worker: TrainingWorker | None = None
        self._run_plan: TrainingPlan | None = None
        self._last_result: dict[str, Any] | None = None

        self.setAccessibleName("Meta-training")
        self.form = TrainingForm(host)
        self.progress = RunProgress()
        scroll = FormScroll()
        scroll.setWidget(self.form)
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setMinimumWidth(340)
        scroll.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Expanding)
        right = QVBoxLayout()
        right.addWidget(self.progress, 1)
        right.addLayout(self._build_run_row())
        layout = QHBoxLayout(self)
        layout.addWidget(scroll, 0)
        layout.addLayout(right, 1)
        self.form.message.connect(self.message)
        self.form.plan_shown.connect(self._plan_shown)
        self.form.load()
        self._show_running(False)

    def _build_run_row(self) -> QHBoxLayout:
        """Where it computes, and the Start, Pause and Cancel buttons."""
        self.device_label = QLabel()
        self.device_label.setAccessibleName("Device")
        self.start_button, self.pause_button, self.cancel_button = (_run_button(*spec) for spec in RUN_BUTTONS)
        row = QHBoxLayout()
        row.addWidget(self.device_label, 1)
        for button in (self.start_button, self.pause_button, self.cancel_button):
            row.addWidget(button)
        self.start_button.setDefault(True)
        self.start_button.clicked.connect(self.start)
        self.pause_button.clicked.connect(self.toggle_pause)
        self.cancel_button.clicked.connect(self.cancel)
        return row

    @property
    def output_dir(self) -> Path:
        """Where trained models are written."""
        return self._output_dir

    @output_dir.setter
    def output_dir(self, path: str | Path) -> None:
        self._output_dir = Path(path)

    @property
    def plot(self) -> LivePlot:
        """The meta-training curves."""
        return self.progress.plot

    # -- the plan ----------------------------------------------------------------------------------
    def plan(self) -> TrainingPlan:
        """The plan the form describes. Raises ValueError when a hyperparameter is invalid."""
        return self.form.plan()

    def set_plan(self, plan: TrainingPlan) -> None:
        """Show ``plan`` in the form (see :meth:`TrainingForm.set_plan`); what of it this host
        can't show is said on the status line."""
        self.form.set_plan(plan)

    def _plan_shown(self, plan: TrainingPlan, problems: list[str]) -> None:
        self._show_device(plan.device)
        if problems:
            self.progress.set_status("The saved settings could not all be used: " + "; ".join(problems) + ".",
                                     warning=True)

    def _show_device(self, device: str) -> None:
        try:
            from metastudio.engine.devices import describe_device, resolve_device

            text = describe_device(resolve_device(device))
        except MetaStudioError as e:
            text = str(e)
        self.device_label.setText(f"Device: {text}")

    def set_device_text(self, text: str) -> None:
        """Show where computing happens (the main window passes what its engine reports); while a
        run is going, the run's own device is shown instead."""
        if not self.is_running():
            self.device_label.setText(f"Device: {text}")

    def model_title(self, plan: TrainingPlan) -> str:
        cls = self.host.algorithms.get(plan.algorithm)
        name = (cls.title if cls is not None and cls.title else plan.algorithm)
        if getattr(cls, "trains_on", "episodes") == "batches":  # no practice rounds to describe
            return f"{name} on {plan.dataset} ({plan.batch_steps} batches of {plan.batch_size}, {plan.backbone})"
        return f"{name} on {plan.dataset} ({plan.ways}-way {plan.shots}-shot, {plan.backbone})"

    def _new_model_path(self, plan: TrainingPlan) -> Path:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{plan.algorithm}-{plan.dataset}-{stamp}")
        path = self.output_dir / f"{stem}.safetensors"
        n = 2
        while path.exists():
            path = self.output_dir / f"{stem}-{n}.safetensors"
            n += 1
        return path

    # -- the run's state -----------------------------------------------------------------------------
    def is_running(self) -> bool:
        return self._thread is not None

    def is_paused(self) -> bool:
        return self._worker is not None and self._worker.is_paused()

    @property
    def worker(self) -> TrainingWorker | None:
        """The running worker (tests, the main window), or None."""
        return self._worker

    def training_thread(self) -> QThread | None:
        """The running worker thread, or None."""
        return self._thread

    def last_result(self) -> dict[str, Any] | None:
        """The ``finished`` dict of the last run (None before the first one ends)."""
        return self._last_result

    def steps_received(self) -> int:
        """Step signals received during the current or last run (tests, benchmarks)."""
        return self.progress.steps_received

    def status_text(self) -> str:
        return self.progress.status_label.text()

    def adaptation_progress(self, step: int, total: int, loss: float | None = None) -> None:
        """Show one inner-loop adaptation step of the Classify page (forwarded by the main window)."""
        self.progress.adaptation_progress(step, total, loss)

    # -- running -----------------------------------------------------------------------------------
    @Slot()
    def start(self) -> bool:
        """Start meta-training with the form's plan. Returns False (with the reason shown and
        emitted through ``error``) when it cannot start."""
        if self.is_running():
            return False
        try:
            plan = self.plan()
        except ValueError as e:
            self._report_error(f"Cannot start: {e}", "")
            return False
        plan.out = str(self._new_model_path(plan))
        return self.start_plan(plan)

    def start_plan(self, plan: TrainingPlan) -> bool:
        """Start meta-training with ``plan`` as it is (its ``out`` is where the model goes)."""
        if self.is_running():
            return False
        if not plan.out:
            plan = TrainingPlan.from_dict({**plan.to_dict(), "out": str(self._new_model_path(plan))})
        self._run_plan = plan
        self._last_result = None
        trains_on = getattr(self.host.algorithms.get(plan.algorithm), "trains_on", "episodes")
        self.progress.begin(plan.meta_batch, trains_on if isinstance(trains_on, str) else "episodes")
        # No Qt parent: Python owns the thread and the worker, so a caller holding the thread
        # (a test) can still ask it isFinished() after the panel let go of it.
        thread = QThread()
        thread.setObjectName("metastudio-training")
        worker = TrainingWorker(plan, self.host, torch_threads=self.torch_threads, nice_increment=self.worker_nice,
                                gc_tuning=self.gc_tuning)
        worker.moveToThread(thread)
        thread.started.connect(worker.run)
        # Direct: quit() must not wait for the GUI thread (which may be blocked in shutdown()).
        worker.done.connect(thread.quit, Qt.ConnectionType.DirectConnection)
        worker.loading.connect(self.progress.show_loading)
        worker.prepared.connect(self._on_prepared)
        worker.step.connect(self.progress.add_step)
        worker.validation.connect(self.progress.show_validation)
        worker.status.connect(self.progress.show_worker_status)
        worker.finished.connect(self._on_finished)
        worker.failed.connect(self._on_failed)
        self._thread, self._worker = thread, worker
        self._show_running(True)
        self.progress.set_status(f"Starting: {self.model_title(plan)}.")
        self.message.emit(f"Meta-training {self.model_title(plan)}…")
        thread.start(QThread.Priority.LowPriority)
        return True

    @Slot()
    def toggle_pause(self) -> None:
        if self.is_paused():
            self.resume()
        else:
            self.pause()

    @Slot()
    def pause(self) -> None:
        self._steer(pause=True)

    @Slot()
    def resume(self) -> None:
        self._steer(pause=False)

    def _steer(self, *, pause: bool) -> None:
        """Pause or resume the run (nothing when there is none, or it already is so)."""
        if self._worker is None or self._worker.is_paused() == pause:
            return
        if pause:
            self._worker.pause()
        else:
            self._worker.resume()
        self._show_pause_button(paused=pause)
        self.progress.set_status("Paused (after the current step). Press Resume to continue." if pause
                                 else "Meta-training…")
        self.message.emit("Meta-training paused" if pause else "Meta-training resumed")
        self.progress.set_paused(pause)

    @Slot()
    def cancel(self) -> None:
        if self._worker is None:
            return
        self._worker.cancel()
        self.cancel_button.setEnabled(False)
        self.pause_button.setEnabled(False)
        self.progress.set_status("Stopping after the current step…")

    def shutdown(self) -> None:
        """Cancel a running run and wait for its thread to end (call before closing)."""
        if self._thread is None:
            return
        self._worker.cancel()
        self._thread.wait()
        self._cleanup()
        # Drop the worker's signals still queued for this panel: the run is over.
        for receiver in (self, self.progress):
            QCoreApplication.removePostedEvents(receiver, QEvent.Type.MetaCall)
        self.progress.set_status("Meta-training was stopped.")

    def _cleanup(self) -> None:
        thread, worker = self._thread, self._worker
        self._thread, self._worker = None, None
        if thread is not None:
            thread.wait()  # at most one step: the worker has finished or was cancelled
        del thread, worker  # owned by Python: freed here, in the GUI thread, after the thread ended
        self._show_running(False)

    def _is_current(self) -> bool:
        # Signals of a worker already cleaned up (left in the queue after shutdown) are ignored.
        return self._worker is not None

    # -- worker signals (GUI thread; the progress takes those it only shows) ---------------------
    @Slot(dict)
    def _on_prepared(self, info: dict) -> None:
        if not self._is_current():
            return
        self.device_label.setText(f"Device: {info['device']}")
        self.progress.show_prepared(info)
        for w in info.get("warnings") or ():
            self.message.emit(f"Warning: {w}")

    @Slot(dict)
    def _on_finished(self, d: dict) -> None:
        if not self._is_current():
            return
        plan = self._run_plan
        self._last_result = dict(d)
        self.progress.refresh_text()
        self._cleanup()
        self.message.emit(self.progress.show_finished(d))
        if d.get("model_exists") and d.get("model_path") and plan is not None:
            title = self.model_title(plan)
            if d["status"] != "completed":
                title += f", stopped at step {d['steps_done']}"
            self.model_trained.emit(d["model_path"], title)

    @Slot(str, str)
    def _on_failed(self, message: str, details: str) -> None:
        if not self._is_current():
            return
        self._last_result = {"status": "failed", "message": message}
        self._cleanup()
        self._report_error(message, details, failed_run=True)

    def _report_error(self, message: str, details: str, *, failed_run: bool = False) -> None:
        self.progress.show_error(message, failed_run=failed_run)
        self.message.emit(f"Error: {message}")
        self.error.emit(message, details)

    # -- state ---------------------------------------------------------------------------------------
    def _show_pause_button(self, *, paused: bool) -> None:
        self.pause_button.setText("Resume" if paused else "Pause")
        self.pause_button.setAccessibleName("Resume meta-training" if paused else "Pause meta-training")

    def _show_running(self, running: bool) -> None:
        """While a run goes: the form and Start disabled, Pause and Cancel enabled; else the opposite."""
        was_running = not self.start_button.isEnabled()
        self.form.setEnabled(not running)
        self.start_button.setEnabled(not running)
        self.pause_button.setEnabled(running)
        self.cancel_button.setEnabled(running)
        self._show_pause_button(paused=False)
        self.progress.set_running(running)
        if running != was_running:
            self.running_changed.emit(running)
