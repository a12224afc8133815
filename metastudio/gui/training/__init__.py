"""The Meta-train tab: choose an algorithm, a backbone, a dataset and hyperparameters, then
watch meta-training live (loss and accuracy curves, progress, ETA) with pause, resume and cancel.

* :mod:`~metastudio.gui.training.presets`: the Preset picker's entries, dataset defaults and
  the plain line about every field;
* :mod:`~metastudio.gui.training.form`: :class:`TrainingForm`, which shows and gives back a
  :class:`~metastudio.app.runs.TrainingPlan`;
* :mod:`~metastudio.gui.training.progress`: :class:`RunProgress`, the curves, progress bar
  and status line of a run;
* :mod:`~metastudio.gui.training.worker`: :class:`TrainingWorker`, which runs
  :func:`metastudio.app.runs.prepare_run` and the trainer in its own ``QThread`` and sends
  plain values through signals;
* :mod:`~metastudio.gui.training.panel`: :class:`TrainingPanel`, the tab itself.

Importing this package loads the engine (torch): the main window builds the tab on first use.
"""

from metastudio.gui.training.panel import TrainingPanel

__all__ = ["TrainingPanel"]
