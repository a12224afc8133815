"""How a meta-training run is going, live: the loss and accuracy curves, the inner-loop loss of
an adaptation, a progress bar with the rate and the time left, and a status line.

It only shows what the panel hands it (the worker's plain dicts) and keeps the GUI thread's
work small: the curves redraw at most ~30 times a second (:class:`~metastudio.gui.plots.LivePlot`)
and the progress bar's text at most every :data:`LABEL_INTERVAL_MS`.
"""

from __future__ import annotations

import math
from typing import Any

from PySide6.QtCore import Qt, QTimer, Slot
from PySide6.QtWidgets import QLabel, QProgressBar, QVBoxLayout, QWidget

from metastudio.gui.plots import LivePlot

#: Milliseconds between two updates of the progress bar's text.
LABEL_INTERVAL_MS = 100

COLOURS = {"loss": "#d62728", "train_acc": "#1f77b4", "val_acc": "#2ca02c", "adapt_loss": "#9467bd"}


def format_duration(seconds: float) -> str:
    """``mm:ss``, or ``h:mm:ss`` from an hour on; ``--:--`` when unknown."""
    if not math.isfinite(seconds) or seconds < 0:
        return "--:--"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class RunProgress(QWidget):
    """The curves (``plot``, ``adaptation_plot``), ``progress_bar`` and ``status_label`` of the
    Meta-train tab, and the latest numbers of the run they show. The worker's loading, step,
    validation and status signals come straight here; one left in the queue after its run ended
    is ignored."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.plot = LivePlot("Meta-training", x_label="step", left_label="loss", right_label="accuracy (%)",
                             right_range=(0, 100), empty_text="Press Start to meta-train; the curves appear here.")
        self.plot.add_series("loss", "train loss", COLOURS["loss"], axis="left")
        self.plot.add_series("train_acc", "train accuracy", COLOURS["train_acc"], axis="right")
        self.plot.add_series("val_acc", "validation accuracy", COLOURS["val_acc"], axis="right", symbol="o")
        # An algorithm that trains on labelled batches first: its numbers are over every training
        # class, not an episode's few, so they are curves of their own (dashed).
        dashed = Qt.PenStyle.DashLine
        self.plot.add_series("batch_loss", "batch loss", COLOURS["loss"], axis="left", style=dashed)
        self.plot.add_series("batch_acc", "batch accuracy (all training classes)", COLOURS["train_acc"], axis="right",
                             style=dashed)
        self.show_curves_of("episodes")  # until a run says otherwise
        self.adaptation_plot = LivePlot("Adaptation", x_label="adaptation step", left_label="support loss",
                                        empty_text="No adaptation yet.")
        self.adaptation_plot.add_series("adapt_loss", "adaptation loss", COLOURS["adapt_loss"], symbol="o")
        self.adaptation_plot.setVisible(False)
        self.adaptation_plot.setMaximumHeight(220)
        self.progress_bar = QProgressBar()
        self.progress_bar.setAccessibleName("Meta-training progress")
        self.progress_bar.setTextVisible(True)
        self._bar(0, 1, "idle")
        self.status_label = QLabel()
        self.status_label.setAccessibleName("Meta-training status")
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.plot, 3)
        layout.addWidget(self.adaptation_plot, 1)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status_label)

        self._label_timer = QTimer(self)
        self._label_timer.setSingleShot(True)
        self._label_timer.setInterval(LABEL_INTERVAL_MS)
        self._label_timer.timeout.connect(self.refresh_text)
        self._meta_batch = 1
        self._running = False
        self._paused = False
        self.latest_step: dict[str, Any] | None = None  #: the last ``step`` dict of the run
        self.steps_received = 0  #: step signals received during the current or last run
        self._eps_average: float | None = None

    def _bar(self, value: int, maximum: int, text: str) -> None:
        self.progress_bar.setRange(0, maximum)
        self.progress_bar.setValue(value)
        self.progress_bar.setFormat(text)

    # -- a run, from start to end ---------------------------------------------------------------
    def begin(self, meta_batch: int, trains_on: str = "episodes") -> None:
        """A new run starts (``meta_batch`` episodes a step): forget the last one. Only the
        curves of what the algorithm trains on (``trains_on``) are shown, and in the legend."""
        self.show_curves_of(trains_on)
        self._meta_batch = meta_batch
        self.latest_step = None
        self._eps_average = None
        self.steps_received = 0
        self.plot.clear()
        self.plot.set_empty_text("Loading the data…")
        self.progress_bar.setRange(0, 0)
        self.progress_bar.setFormat("preparing…")

    def show_curves_of(self, trains_on: str) -> None:
        """Show the training curves of an algorithm that trains on ``trains_on`` (episode ones,
        batch ones or both); validation, always on episodes, is always shown."""
        parts = trains_on.split("+")
        for key in ("loss", "train_acc"):
            self.plot.show_series(key, "episodes" in parts)
        for key in ("batch_loss", "batch_acc"):
            self.plot.show_series(key, "batches" in parts)

    def set_running(self, running: bool) -> None:
        self._running = running
        self._paused = False
        if not running:
            self._label_timer.stop()

    def set_paused(self, paused: bool) -> None:
        self._paused = paused
        self.refresh_text()

    @Slot(str, int, int)
    def show_loading(self, stage: str, done: int, total: int) -> None:
        if not self._running:
            return
        if total > 0:
            self._bar(min(done, total), total, f"{stage} · {done}/{total}")
        else:
            self.progress_bar.setRange(0, 0)
            self.progress_bar.setFormat(f"{stage}…")

    def show_prepared(self, info: dict) -> None:
        """The run is ready (``info``: device, steps, train, warnings): its first status line."""
        steps = int(info["steps"])
        self._bar(0, max(1, steps), f"step 0/{steps} · ETA --:-- · starting…")
        self.plot.set_empty_text("Waiting for the first steps…")
        if info.get("warnings"):
            text = " ".join(f"Warning: {w}." if not w.endswith(".") else f"Warning: {w}" for w in info["warnings"])
            self.set_status(text, warning=True)
        else:
            self.set_status(f"Meta-training on {info['device']}: {info['train']}")

    @Slot(dict)
    def add_step(self, d: dict) -> None:
        """A ``step`` dict: its points join the curves at once, the text follows within LABEL_INTERVAL_MS."""
        if not self._running:
            return
        self.steps_received += 1
        step = float(d["step"])
        batch = d.get("kind") == "batch"
        self.plot.append("batch_loss" if batch else "loss", step, d["loss"])
        if math.isfinite(d["accuracy"]):
            self.plot.append("batch_acc" if batch else "train_acc", step, 100.0 * d["accuracy"])
        eps = d["episodes_per_second"]
        if self.latest_step is not None and self.latest_step.get("kind") != d.get("kind"):
            self._eps_average = None  # batches a second and episodes a second are different rates
        if math.isfinite(eps) and eps > 0:
            self._eps_average = eps if self._eps_average is None else 0.7 * self._eps_average + 0.3 * eps
        self.latest_step = d
        if not self._label_timer.isActive():
            self._label_timer.start()

    def refresh_text(self) -> None:
        """The progress bar's text for the latest step: where it is, the time left, the rate."""
        d = self.latest_step
        if d is None or not self._running:
            return
        step, steps = int(d["step"]), int(d["steps"])
        self.progress_bar.setRange(0, max(1, steps))
        self.progress_bar.setValue(step)
        eps = self._eps_average or 0.0
        batch = d.get("kind") == "batch"
        per_step = 1 if batch else self._meta_batch
        eta = (steps - step) * per_step / eps if eps > 0 else float("inf")
        text = f"step {step}/{steps} · ETA {format_duration(eta)} · {eps:.1f} {'batches' if batch else 'episodes'}/s"
        if self._paused:
            text += " · paused"
        self.progress_bar.setFormat(text)
        self.progress_bar.setAccessibleDescription(
            f"step {step} of {steps}, loss {d['loss']:.3f}, {'batch' if batch else 'training'} accuracy "
            f"{100 * d['accuracy']:.1f} percent")

    @Slot(dict)
    def show_validation(self, d: dict) -> None:
        if not self._running:
            return
        self.plot.append("val_acc", float(d["step"]), d["accuracy"])
        mark = " (best so far, saved)" if d["improved"] else f" (best {d['best_accuracy']:.2f} %)"
        self.set_status(f"Step {d['step']}: validation accuracy {d['accuracy']:.2f} ± {d['ci95']:.2f} %{mark}.")

    def show_finished(self, d: dict) -> str:
        """The run ended (the worker's ``finished`` dict); returns the sentence it shows."""
        best = f"; best validation accuracy {d['best_accuracy']:.2f} %" if d.get("best_accuracy") is not None else ""
        elapsed = format_duration(d.get("elapsed", 0.0))
        if d["status"] == "completed":
            text = f"Finished {d['steps_done']} steps in {elapsed}{best}. Model saved to {d['model_path']}."
            self._bar(d["steps"], max(1, d["steps"]), f"done · {d['steps_done']}/{d['steps']} steps in {elapsed}")
        elif d.get("model_exists"):
            text = f"Cancelled after {d['steps_done']} of {d['steps']} steps{best}. The model so far is in {d['model_path']}."
            self.progress_bar.setFormat(f"cancelled at step {d['steps_done']}/{d['steps']}")
        else:
            text = "Cancelled before any model was saved."
            self._bar(0, 1, "cancelled")
        self.set_status(text)
        return text

    def show_error(self, message: str, *, failed_run: bool) -> None:
        """The run could not start, or failed (``failed_run``: the progress bar says so too)."""
        if failed_run:
            self._bar(0, 1, "failed")
        self.set_status(f"Error: {message}", error=True)
        self.plot.set_empty_text("Meta-training did not run: see the message below.")

    # -- the status line and the adaptation plot ------------------------------------------------
    def set_status(self, text: str, *, warning: bool = False, error: bool = False) -> None:
        self.status_label.setText(text)
        self.status_label.setProperty("warning", warning or error)
        colour = "#b00020" if error else ("#8a5a00" if warning else "")
        self.status_label.setStyleSheet(f"color: {colour};" if colour else "")
        self.status_label.setAccessibleDescription(text)

    @Slot(str)
    def show_worker_status(self, text: str) -> None:
        """The worker's own word on what it does, unless a warning or an error is showing."""
        if self._running and not self.status_label.property("warning"):
            self.set_status(text[:1].upper() + text[1:])

    def adaptation_progress(self, step: int, total: int, loss: float | None = None) -> None:
        """Show one inner-loop adaptation step (1-based ``step`` of ``total``) and its loss."""
        if not self.adaptation_plot.isVisible():
            self.adaptation_plot.setVisible(True)
        if step <= 1:  # a new adaptation
            self.adaptation_plot.clear("adapt_loss")
        if loss is not None and math.isfinite(float(loss)):
            self.adaptation_plot.append("adapt_loss", float(step), float(loss))
            self.adaptation_plot.set_title(f"Adaptation: step {step}/{total}, loss {float(loss):.4g}")
        else:
            self.adaptation_plot.set_title(f"Adaptation: step {step}/{total}")
