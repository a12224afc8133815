"""The meta-training panel: choose an algorithm, a backbone, a dataset and hyperparameters,
then watch meta-training live (loss and accuracy curves, progress, ETA) with pause, resume
and cancel.

* :class:`HyperParameterForm` (in :mod:`metastudio.gui.forms`, re-exported here) builds a form
  from declared :class:`~metastudio.algorithms.base.HyperParameter` s (the algorithm's settings,
  the dataset's options; the Model box uses it too).
* :class:`TrainingWorker` (in :mod:`metastudio.gui.training_worker`, re-exported here) runs
  :func:`metastudio.app.runs.prepare_run` and the trainer in its own ``QThread``; it never
  touches widgets and sends plain dicts, numbers and strings through signals, at most about 20
  step signals a second.
* :class:`TrainingPanel` is the widget: a Preset picker (:data:`TRAINING_PRESETS`, or Custom as
  soon as a field is edited), what to train, the practice rounds (episodes), and behind an
  Advanced button the validation details and hyperparameters; every field explains itself in
  one plain line (:data:`FIELD_TIPS`, a hyperparameter's help). It keeps the GUI thread's work
  small (the plot redraws at most ~30 Hz, labels ~10 Hz) and always joins its thread
  (:meth:`TrainingPanel.shutdown`).
"""

from __future__ import annotations

import math
import re
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from PySide6.QtCore import QCoreApplication, QEvent, QObject, Qt, QThread, QTimer, Signal, Slot
from PySide6.QtGui import QAction, QKeySequence, QStandardItem, QStandardItemModel
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMenu,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSpinBox,
    QStyle,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from metastudio.errors import MetaStudioError
from metastudio.app.runs import TrainingPlan
from metastudio.gui.forms import HyperParameterForm, NumberSpinBox
from metastudio.gui.training_worker import WORKER_NICE_INCREMENT, TrainingWorker
from metastudio.gui.plots import LivePlot
from metastudio.gui.widgets import disclosure_button

#: Episode settings that suit each dataset (the shipped Omniglot model used 60-way 1-shot 5
#: queries; ProtoNet trained mini-ImageNet 1-shot with 20-30 ways). Unknown datasets get "folder".
DATASET_DEFAULTS: dict[str, dict[str, int]] = {
    "omniglot": dict(ways=60, shots=1, queries=5, episodes=8000, val_every=500, val_episodes=200,
                     val_ways=5, val_shots=1, val_queries=15),
    "mini-imagenet": dict(ways=20, shots=1, queries=15, episodes=20000, val_every=1000, val_episodes=200,
                          val_ways=5, val_shots=1, val_queries=15),
    "folder": dict(ways=3, shots=1, queries=2, episodes=200, val_every=50, val_episodes=20,
                   val_ways=3, val_shots=1, val_queries=2),
}
DATASET_ORDER = ("omniglot", "mini-imagenet", "folder")

#: The Preset picker's entries: a title, one plain sentence, and the plan fields they set (every
#: field with a widget but the location, plus ``fit``). The other fields of the plan (seed,
#: device, splits) stay as they are. Episode counts suit a laptop: minutes, not hours.
TRAINING_PRESETS: dict[str, dict[str, Any]] = {
    "handwriting": {
        "title": "Handwriting (Omniglot)",
        "note": "Trains a new model for handwritten characters and symbols on the Omniglot alphabets "
                "(downloaded the first time, unless Location points to a copy). A few minutes on a laptop.",
        "plan": dict(algorithm="protonet", backbone="conv4", dataset="omniglot", freeze_backbone=False,
                     ways=60, shots=1, queries=5, episodes=500, val_every=250, val_episodes=100,
                     val_ways=5, val_shots=1, val_queries=15, val_holdout=0, hparams={}, options={},
                     fit="stretch"),
    },
    # Matching Networks, not Prototypical Networks: on a frozen backbone ProtoNet has nothing to
    # train (the shipped photos model is that), while Matching Networks learn their temperature
    # (the recipe of matchingnet-photos, docs/benchmarks.md).
    "photos": {
        "title": "Photos",
        "note": "Trains a model for your kind of photos on top of a ready-made photo network. Choose a "
                "folder (or .zip) with one sub-folder of pictures per class as Location.",
        "plan": dict(algorithm="matchingnet", backbone="efficientnet-lite0", dataset="folder", freeze_backbone=True,
                     ways=3, shots=1, queries=2, episodes=200, val_every=50, val_episodes=20,
                     val_ways=3, val_shots=1, val_queries=2, val_holdout=0,
                     hparams={"feature_transform": "power-cl2n"}, options={}, fit="center-crop"),
    },
}
#: The preset a new panel starts with.
DEFAULT_PRESET = "handwriting"
#: The Preset picker's entry for settings of one's own (chosen as soon as a field is edited).
CUSTOM = "custom"
CUSTOM_NOTE = "Your own settings."

#: One plain line about each field of the form (its tooltip; the label shows it too).
FIELD_TIPS = {
    "preset": "Ready-made settings for a common case; changing any field makes it Custom.",
    "algorithm": "The learning method: how the model learns to tell new classes apart from a few examples.",
    "backbone": "The network that turns each picture into numbers for the learning method to compare.",
    "freeze": "Keep a ready-made (pretrained) network as it is and train only what sits on top: faster, "
              "and it keeps what it already knows.",
    "dataset": "The collection to learn from: Omniglot (handwriting), mini-ImageNet (photos) or a folder of your own.",
    "root": "Where the pictures are: a folder or .zip file with one sub-folder of pictures per class.",
    "browse": "Choose the folder or .zip file that holds the pictures.",
    "ways": "How many classes each practice round mixes.",
    "shots": "How many labelled examples of each class a practice round shows.",
    "queries": "How many more pictures of each class a practice round asks the model to sort.",
    "episodes": "How many practice rounds to train for: more takes longer and usually learns better.",
    "val_every": "How many practice rounds between two tests on classes it does not train on; the best model "
                 "so far is kept.",
    "val_episodes": "How many rounds each test has: more gives a steadier score and takes longer.",
    "val_ways": "How many classes each test round mixes.",
    "val_shots": "How many labelled examples of each class a test round shows.",
    "val_queries": "How many pictures of each class a test round asks the model to sort.",
    "val_holdout": "Test on this many classes kept out of the training data (0: on the dataset's own "
                   "validation classes).",
}

#: Milliseconds between two updates of the progress bar's text.
LABEL_INTERVAL_MS = 100

COLOURS = {"loss": "#d62728", "train_acc": "#1f77b4", "val_acc": "#2ca02c", "adapt_loss": "#9467bd"}


def _format_duration(seconds: float) -> str:
    if not math.isfinite(seconds) or seconds < 0:
        return "--:--"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class _FormScroll(QScrollArea):
    """The scroll area of the form: as wide as the form needs, whatever it shows now (the
    Advanced part, an algorithm's settings, a dataset's options), so nothing is clipped at its
    right edge; it only scrolls up and down."""

    def setWidget(self, widget: QWidget) -> None:  # noqa: N802 - Qt override
        super().setWidget(widget)
        widget.installEventFilter(self)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt override
        if watched is self.widget() and event.type() == QEvent.Type.LayoutRequest:
            self.updateGeometry()  # the form's size changed: ask the panel's layout again
        return super().eventFilter(watched, event)

    def _extra_width(self) -> int:
        return 2 * self.frameWidth() + self.verticalScrollBar().sizeHint().width()

    def sizeHint(self):  # noqa: N802 - Qt override
        hint = super().sizeHint()
        if self.widget() is not None:
            hint.setWidth(min(self.widget().sizeHint().width(), 40 * self.fontMetrics().height()) + self._extra_width())
        return hint

    def minimumSizeHint(self):  # noqa: N802 - Qt override
        hint = super().minimumSizeHint()
        if self.widget() is not None:
            hint.setWidth(max(self.minimumWidth(), self.widget().minimumSizeHint().width() + self._extra_width()))
        return hint


def _grid_rows(grid: QGridLayout, rows, label) -> None:
    """Put ``(label, widget, label, widget)`` rows in two columns of ``grid``."""
    for r, (l1, w1, l2, w2) in enumerate(rows):
        grid.addWidget(label(l1, w1), r, 0)
        grid.addWidget(w1, r, 1)
        grid.addWidget(label(l2, w2), r, 2)
        grid.addWidget(w2, r, 3)


def _spin(minimum: int, maximum: int, value: int, name: str, tip: str) -> QSpinBox:
    w = QSpinBox()
    w.setRange(minimum, maximum)
    w.setValue(value)
    w.setAccessibleName(name)
    w.setToolTip(tip)
    w.setAccelerated(True)
    w.setKeyboardTracking(False)
    return w


class TrainingPanel(QWidget):
    """The meta-training panel (see the module docstring).

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
        self._base_plan = TrainingPlan(log_every=1)
        self._thread: QThread | None = None
        self._worker: TrainingWorker | None = None
        self._run_plan: TrainingPlan | None = None
        self._last_result: dict[str, Any] | None = None
        self._last_model_path: str | None = None
        self._latest_step: dict[str, Any] | None = None
        self._eps_average: float | None = None
        self._steps_total = 0
        self._steps_received = 0
        self._loading_text = ""
        self._setting_plan = False
        self._filling = 0  # > 0 while the panel fills the form itself (not a person's edit)

        self._build()
        self._label_timer = QTimer(self)
        self._label_timer.setSingleShot(True)
        self._label_timer.setInterval(LABEL_INTERVAL_MS)
        self._label_timer.timeout.connect(self._refresh_progress_text)
        self._filling += 1
        try:
            self._fill_components()
        finally:
            self._filling -= 1
        if self.preset_available(DEFAULT_PRESET):
            self.apply_preset(DEFAULT_PRESET)
        else:
            self._show_preset(self.matching_preset())
        self._set_idle()

    # -- building ----------------------------------------------------------------------------------
    def _build(self) -> None:
        self.setAccessibleName("Meta-training")
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.addLayout(self._build_preset())
        left_layout.addWidget(self._build_components())
        left_layout.addWidget(self._build_episodes())
        self.advanced_toggle = disclosure_button(
            "Advanced: validation and hyperparameters", "Advanced training settings",
            "Show how the model is tested while it learns, and the learning method's settings")
        self.advanced_toggle.toggled.connect(self._advanced_toggled)
        left_layout.addWidget(self.advanced_toggle)
        self.advanced = self._build_advanced()
        self.advanced.hide()
        left_layout.addWidget(self.advanced)
        left_layout.addStretch(1)
        self.form_widget = left
        scroll = _FormScroll()
        scroll.setWidget(left)
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setMinimumWidth(340)
        scroll.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Expanding)

        layout = QHBoxLayout(self)
        layout.addWidget(scroll, 0)
        layout.addLayout(self._build_live_view(), 1)

        self.preset_combo.currentIndexChanged.connect(self._preset_picked)
        self.algorithm_combo.currentIndexChanged.connect(self._algorithm_changed)
        self.backbone_combo.currentIndexChanged.connect(self._backbone_changed)
        self.dataset_combo.currentIndexChanged.connect(self._dataset_changed)
        # Any edit of a field means the form no longer is a preset (the location is not part of one).
        for combo in (self.algorithm_combo, self.backbone_combo, self.dataset_combo):
            combo.currentIndexChanged.connect(self._field_edited)
        for spin in (*self._episode_spins().values(), self.val_holdout_spin):
            spin.valueChanged.connect(self._field_edited)
        self.freeze_check.toggled.connect(self._field_edited)
        self.hparam_form.changed.connect(self._field_edited)
        self.options_form.changed.connect(self._field_edited)

    def _build_preset(self) -> QFormLayout:
        self.preset_combo = QComboBox()
        self.preset_combo.setAccessibleName("Preset")
        self.preset_combo.setToolTip(FIELD_TIPS["preset"])
        for key, preset in TRAINING_PRESETS.items():
            self.preset_combo.addItem(preset["title"], key)
            self.preset_combo.setItemData(self.preset_combo.count() - 1, preset["note"], Qt.ItemDataRole.ToolTipRole)
        self.preset_combo.addItem("Custom", CUSTOM)
        self.preset_combo.setItemData(self.preset_combo.count() - 1, CUSTOM_NOTE, Qt.ItemDataRole.ToolTipRole)
        self.preset_note = QLabel()
        self.preset_note.setWordWrap(True)
        self.preset_note.setObjectName("preset_note")
        self.preset_note.setAccessibleName("About this preset")
        form = QFormLayout()
        form.addRow(self._label("Preset:", self.preset_combo), self.preset_combo)
        form.addRow(self.preset_note)
        return form

    def _build_components(self) -> QGroupBox:
        self.algorithm_combo = QComboBox()
        self.algorithm_combo.setModel(QStandardItemModel(self.algorithm_combo))
        self.algorithm_combo.setAccessibleName("Algorithm")
        self.algorithm_combo.setToolTip(FIELD_TIPS["algorithm"])
        self.backbone_combo = QComboBox()
        self.backbone_combo.setAccessibleName("Backbone")
        self.backbone_combo.setToolTip(FIELD_TIPS["backbone"])
        self.freeze_check = QCheckBox("Freeze the pretrained backbone")
        self.freeze_check.setAccessibleName("Freeze backbone")
        self.freeze_check.setToolTip(FIELD_TIPS["freeze"])
        self.dataset_combo = QComboBox()
        self.dataset_combo.setAccessibleName("Dataset")
        self.dataset_combo.setToolTip(FIELD_TIPS["dataset"])
        self.root_edit = QLineEdit()
        self.root_edit.setAccessibleName("Dataset location")
        self.root_edit.setToolTip(FIELD_TIPS["root"])
        self.browse_button = QToolButton()
        self.browse_button.setText("Browse…")
        self.browse_button.setAccessibleName("Browse for the dataset")
        self.browse_button.setToolTip(FIELD_TIPS["browse"])
        self.browse_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        menu = QMenu(self.browse_button)
        self.browse_folder_action = QAction("Folder…", menu)
        self.browse_zip_action = QAction("Zip file…", menu)
        menu.addAction(self.browse_folder_action)
        menu.addAction(self.browse_zip_action)
        self.browse_button.setMenu(menu)
        self.browse_folder_action.triggered.connect(self._browse_folder)
        self.browse_zip_action.triggered.connect(self._browse_zip)
        root_row = QHBoxLayout()
        root_row.setContentsMargins(0, 0, 0, 0)
        root_row.addWidget(self.root_edit, 1)
        root_row.addWidget(self.browse_button)
        self.options_form = HyperParameterForm()
        self.options_form.setAccessibleName("Dataset options")

        run_box = QGroupBox("What to train")
        form = QFormLayout(run_box)
        form.addRow(self._label("&Algorithm:", self.algorithm_combo), self.algorithm_combo)
        form.addRow(self._label("&Backbone:", self.backbone_combo), self.backbone_combo)
        form.addRow("", self.freeze_check)
        form.addRow(self._label("&Dataset:", self.dataset_combo), self.dataset_combo)
        form.addRow(self._label("&Location:", self.root_edit), root_row)
        form.addRow(self.options_form)
        return run_box

    def _build_episodes(self) -> QGroupBox:
        self.ways_spin = _spin(2, 10_000, 5, "Ways", FIELD_TIPS["ways"])
        self.shots_spin = _spin(1, 10_000, 1, "Shots", FIELD_TIPS["shots"])
        self.queries_spin = _spin(0, 10_000, 15, "Queries", FIELD_TIPS["queries"])
        self.episodes_spin = _spin(1, 100_000_000, 1000, "Episodes", FIELD_TIPS["episodes"])
        episodes_box = QGroupBox("Practice rounds (episodes)")
        grid = QGridLayout(episodes_box)
        # No mnemonics here: Alt+E, Alt+V, Alt+H... belong to the main window's menus.
        _grid_rows(grid, [("Ways:", self.ways_spin, "Shots:", self.shots_spin),
                          ("Queries:", self.queries_spin, "Episodes:", self.episodes_spin)], self._label)
        return episodes_box

    def _build_advanced(self) -> QWidget:
        """Validation details and the algorithm's hyperparameters, behind the Advanced button."""
        self.val_every_spin = _spin(1, 100_000_000, 500, "Validate every", FIELD_TIPS["val_every"])
        self.val_episodes_spin = _spin(1, 1_000_000, 200, "Validation episodes", FIELD_TIPS["val_episodes"])
        self.val_ways_spin = _spin(2, 10_000, 5, "Validation ways", FIELD_TIPS["val_ways"])
        self.val_shots_spin = _spin(1, 10_000, 1, "Validation shots", FIELD_TIPS["val_shots"])
        self.val_queries_spin = _spin(0, 10_000, 15, "Validation queries", FIELD_TIPS["val_queries"])
        self.val_holdout_spin = _spin(0, 1_000_000, 0, "Held-out classes", FIELD_TIPS["val_holdout"])
        val_box = QGroupBox("Validation (tests while it learns)")
        grid = QGridLayout(val_box)
        _grid_rows(grid, [("Validate every:", self.val_every_spin, "Val. episodes:", self.val_episodes_spin),
                          ("Val. ways:", self.val_ways_spin, "Val. shots:", self.val_shots_spin),
                          ("Val. queries:", self.val_queries_spin, "Held-out classes:", self.val_holdout_spin)],
                   self._label)
        self.hparam_form = HyperParameterForm()
        hp_box = QGroupBox("Hyperparameters")
        hp_layout = QVBoxLayout(hp_box)
        hp_layout.addWidget(self.hparam_form)
        advanced = QWidget()
        advanced.setObjectName("advanced")
        layout = QVBoxLayout(advanced)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(val_box)
        layout.addWidget(hp_box)
        return advanced

    def _build_live_view(self) -> QVBoxLayout:
        """The curves, the progress bar, the status line, the device and the buttons."""
        self.device_label = QLabel()
        self.device_label.setAccessibleName("Device")
        self.start_button = QPushButton("Start")
        self.pause_button = QPushButton("Pause")
        self.cancel_button = QPushButton("Cancel")
        for button, name, key, tip in (
            (self.start_button, "Start meta-training", "F5", "Start meta-training"),
            (self.pause_button, "Pause meta-training", "F6", "Pause or resume meta-training"),
            (self.cancel_button, "Cancel meta-training", "Shift+F5", "Stop meta-training (the best model so far is kept)"),
        ):
            button.setAccessibleName(name)
            button.setShortcut(QKeySequence(key))
            button.setToolTip(f"{tip} ({QKeySequence(key).toString(QKeySequence.SequenceFormat.NativeText)})")
        self.start_button.setDefault(True)
        self.start_button.clicked.connect(self.start)
        self.pause_button.clicked.connect(self.toggle_pause)
        self.cancel_button.clicked.connect(self.cancel)
        buttons = QHBoxLayout()
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.pause_button)
        buttons.addWidget(self.cancel_button)

        self.plot = LivePlot("Meta-training", x_label="step", left_label="loss", right_label="accuracy (%)",
                             right_range=(0, 100), empty_text="Press Start to meta-train; the curves appear here.")
        self.plot.add_series("loss", "train loss", COLOURS["loss"], axis="left")
        self.plot.add_series("train_acc", "train accuracy", COLOURS["train_acc"], axis="right")
        self.plot.add_series("val_acc", "validation accuracy", COLOURS["val_acc"], axis="right", symbol="o")
        self.adaptation_plot = LivePlot("Adaptation", x_label="adaptation step", left_label="support loss",
                                        empty_text="No adaptation yet.")
        self.adaptation_plot.add_series("adapt_loss", "adaptation loss", COLOURS["adapt_loss"], symbol="o")
        self.adaptation_plot.setVisible(False)
        self.adaptation_plot.setMaximumHeight(220)
        self.progress_bar = QProgressBar()
        self.progress_bar.setAccessibleName("Meta-training progress")
        self.progress_bar.setTextVisible(True)
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.progress_bar.setFormat("idle")
        self.status_label = QLabel()
        self.status_label.setAccessibleName("Meta-training status")
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        right = QVBoxLayout()
        right.addWidget(self.plot, 3)
        right.addWidget(self.adaptation_plot, 1)
        right.addWidget(self.progress_bar)
        right.addWidget(self.status_label)
        bottom = QHBoxLayout()
        bottom.addWidget(self.device_label, 1)
        bottom.addLayout(buttons)
        right.addLayout(bottom)
        return right

    def _advanced_toggled(self, shown: bool) -> None:
        self.advanced.setVisible(shown)

    @staticmethod
    def _label(text: str, buddy: QWidget) -> QLabel:
        label = QLabel(text)
        label.setBuddy(buddy)
        label.setToolTip(buddy.toolTip())
        return label

    def _fill_components(self) -> None:
        host = self.host
        model: QStandardItemModel = self.algorithm_combo.model()
        model.clear()
        for name in sorted(host.algorithms):
            cls = host.algorithms[name]
            item = QStandardItem(f"{cls.title} ({name})" if cls.title else name)
            item.setData(name, Qt.ItemDataRole.UserRole)
            item.setToolTip(cls.description or cls.title or name)
            model.appendRow(item)
        warning_icon = self.style().standardIcon(QStyle.StandardPixmap.SP_MessageBoxWarning)
        for record in self.broken_algorithm_plugins():
            what = "failed to load" if record.status == "failed" else "disabled"
            item = QStandardItem(f"{record.name} — {what}")
            item.setData(None, Qt.ItemDataRole.UserRole)
            item.setData(record.name, Qt.ItemDataRole.UserRole + 1)
            item.setEnabled(False)
            item.setSelectable(False)
            if record.status == "failed":
                item.setIcon(warning_icon)
            item.setToolTip(f"Plugin '{record.name}' ({record.package} {record.version}) {what}: {record.error}")
            item.setData(f"{record.name}, plugin {what}: {record.error}", Qt.ItemDataRole.AccessibleTextRole)
            model.appendRow(item)

        self.backbone_combo.clear()
        for name in sorted(host.backbones):
            spec = host.backbones[name]
            self.backbone_combo.addItem(name, name)
            self.backbone_combo.setItemData(self.backbone_combo.count() - 1, spec.description, Qt.ItemDataRole.ToolTipRole)
        self.dataset_combo.clear()
        names = [n for n in DATASET_ORDER if n in host.datasets] + sorted(set(host.datasets) - set(DATASET_ORDER))
        for name in names:
            self.dataset_combo.addItem(name, name)
            self.dataset_combo.setItemData(self.dataset_combo.count() - 1, host.datasets[name].description,
                                           Qt.ItemDataRole.ToolTipRole)
        self._setting_plan = True
        try:
            self._select(self.algorithm_combo, self._base_plan.algorithm)
            self._select(self.backbone_combo, self._base_plan.backbone)
            self._select(self.dataset_combo, self._base_plan.dataset)
        finally:
            self._setting_plan = False
        self._algorithm_changed()
        self._backbone_changed()
        self._dataset_changed()
        self._update_device_label(self._base_plan.device)
        self._mark_unavailable_presets()

    def broken_algorithm_plugins(self) -> list:
        """Plugin records that did not load and may have offered algorithms (the kind of a
        plugin that failed to import is unknown, so those count)."""
        out = []
        for record in self.host.records.values():
            if record.status == "ok":
                continue
            module = sys.modules.get(record.module.split(":")[0])
            if module is not None and not hasattr(module, "metastudio_algorithms"):
                continue  # imported, and offers no algorithms
            out.append(record)
        return out

    @staticmethod
    def _select(combo: QComboBox, name: str | None) -> bool:
        index = combo.findData(name, Qt.ItemDataRole.UserRole) if name is not None else -1
        if index >= 0:
            combo.setCurrentIndex(index)
            return True
        return False

    # -- reactions to the form ------------------------------------------------------------------------
    def _algorithm_changed(self, *_: object) -> None:
        name = self.algorithm_combo.currentData()
        cls = self.host.algorithms.get(name) if name else None
        self.hparam_form.set_hyperparameters(cls.hyperparameters if cls is not None else ())
        if cls is not None and not self._setting_plan:
            self._keep_ways_within(cls)

    def _keep_ways_within(self, cls) -> None:
        """Lower the episode ways to what the algorithm can tell apart with the settings in its form
        (MANN and Meta Networks have a fixed number of label positions, ``max_ways``)."""
        try:
            values = self.hparam_form.values()
        except ValueError:  # a half-typed setting: judge by the defaults until it is valid
            values = {}
        try:
            limit = cls.ways_limit(cls.resolve_hparams(values))
        except Exception:  # a plugin's broken method must not break the panel; the run reports it
            return
        if not limit:
            return
        lowered = [spin for spin in (self.ways_spin, self.val_ways_spin) if spin.value() > limit]
        for spin in lowered:
            spin.setValue(limit)
        if lowered:
            self.message.emit(f"Ways lowered to {limit}: {cls.title} tells at most {limit} classes apart "
                              "(its max ways setting).")

    def _backbone_changed(self, *_: object) -> None:
        name = self.backbone_combo.currentData()
        spec = self.host.backbones.get(name) if name else None
        pretrained = bool(spec is not None and spec.pretrained)
        self.freeze_check.setEnabled(pretrained)
        if not pretrained:
            self.freeze_check.setChecked(False)

    def _dataset_changed(self, *_: object) -> None:
        name = self.dataset_combo.currentData()
        spec = self.host.datasets.get(name) if name else None
        self.options_form.set_hyperparameters(spec.options if spec is not None else ())
        if name == "omniglot":
            self.root_edit.setPlaceholderText("default: downloaded to the MetaStudio data folder")
        else:
            self.root_edit.setPlaceholderText("required: a folder or .zip of class folders")
        if not self._setting_plan and name:
            self.apply_dataset_defaults(name)

    def apply_dataset_defaults(self, dataset: str) -> None:
        """Episode settings that suit ``dataset`` (see :data:`DATASET_DEFAULTS`)."""
        values = DATASET_DEFAULTS.get(dataset, DATASET_DEFAULTS["folder"])
        for key, spin in self._episode_spins().items():
            spin.setValue(values[key])
        name = self.algorithm_combo.currentData()
        cls = self.host.algorithms.get(name) if name else None
        if cls is not None:
            self._keep_ways_within(cls)

    def _episode_spins(self) -> dict[str, QSpinBox]:
        return {"ways": self.ways_spin, "shots": self.shots_spin, "queries": self.queries_spin,
                "episodes": self.episodes_spin, "val_every": self.val_every_spin,
                "val_episodes": self.val_episodes_spin, "val_ways": self.val_ways_spin,
                "val_shots": self.val_shots_spin, "val_queries": self.val_queries_spin}

    def _browse_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Choose the dataset folder", self.root_edit.text())
        if path:
            self.root_edit.setText(path)

    def _browse_zip(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose the dataset zip file", self.root_edit.text(),
                                              "Zip files (*.zip);;All files (*)")
        if path:
            self.root_edit.setText(path)

    def _update_device_label(self, device: str) -> None:
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

    # -- the plan ----------------------------------------------------------------------------------
    @property
    def output_dir(self) -> Path:
        """Where trained models are written."""
        return self._output_dir

    @output_dir.setter
    def output_dir(self, path: str | Path) -> None:
        self._output_dir = Path(path)

    def set_output_dir(self, path: str | Path) -> None:
        self.output_dir = path

    def plan(self) -> TrainingPlan:
        """The plan the form describes. Raises ValueError when a hyperparameter is invalid."""
        base = self._base_plan
        spins = {k: s.value() for k, s in self._episode_spins().items()}
        root = self.root_edit.text().strip() or None
        plan = TrainingPlan.from_dict({
            **base.to_dict(),
            "algorithm": self.algorithm_combo.currentData() or base.algorithm,
            "backbone": self.backbone_combo.currentData() or base.backbone,
            "dataset": self.dataset_combo.currentData() or base.dataset,
            "root": root,
            "options": self.options_form.values(),
            "hparams": self.hparam_form.values(),
            "freeze_backbone": self.freeze_check.isChecked(),
            "val_holdout": self.val_holdout_spin.value(),
            **spins,
        })
        return plan

    def set_plan(self, plan: TrainingPlan) -> None:
        """Show ``plan`` in the form. Components this host lacks are reported on the status line
        (the form keeps its current choice); fields without a widget (seed, device, split, …)
        are kept and come back in :meth:`plan`. The Preset picker shows the preset the plan is,
        or Custom."""
        self._filling += 1
        try:
            self._fill_plan(plan)
        finally:
            self._filling -= 1
        self._show_preset(self.matching_preset())

    def _fill_plan(self, plan: TrainingPlan) -> None:
        plan = TrainingPlan.from_dict(plan.to_dict())
        problems = []
        self._setting_plan = True
        try:
            self._base_plan = plan
            if not self._select(self.algorithm_combo, plan.algorithm):
                problems.append(f"algorithm '{plan.algorithm}' is not available")
            if not self._select(self.backbone_combo, plan.backbone):
                problems.append(f"backbone '{plan.backbone}' is not available")
            if not self._select(self.dataset_combo, plan.dataset):
                problems.append(f"dataset '{plan.dataset}' is not available")
            self._algorithm_changed()
            self._backbone_changed()
            self._dataset_changed()
        finally:
            self._setting_plan = False
        self.root_edit.setText(plan.root or "")
        for key, spin in self._episode_spins().items():
            spin.setValue(getattr(plan, key))
        self.val_holdout_spin.setValue(plan.val_holdout)
        self.freeze_check.setChecked(plan.freeze_backbone and self.freeze_check.isEnabled())
        for form, values, what in ((self.hparam_form, plan.hparams, "hyperparameters"),
                                   (self.options_form, plan.options, "dataset options")):
            known = {h.name for h in form.hyperparameters()}
            try:
                form.set_values({k: v for k, v in values.items() if k in known})
            except ValueError as e:
                problems.append(f"{what}: {e}")
            unknown = sorted(set(values) - known)
            if unknown:
                problems.append(f"{what} {', '.join(unknown)} do not apply and were left out")
        self._update_device_label(plan.device)
        if problems:
            self._set_status("The saved settings could not all be used: " + "; ".join(problems) + ".", warning=True)

    # -- presets -----------------------------------------------------------------------------------
    def preset_available(self, key: str) -> bool:
        """Whether this host has the algorithm, backbone and dataset of the preset ``key``."""
        values = TRAINING_PRESETS[key]["plan"]
        return (values["algorithm"] in self.host.algorithms and values["backbone"] in self.host.backbones
                and values["dataset"] in self.host.datasets)

    def apply_preset(self, key: str) -> None:
        """Fill the form with the preset ``key`` (see :data:`TRAINING_PRESETS`), as choosing it in
        the Preset picker does. The location stays when the dataset does; the fields without a
        widget (seed, device, splits) stay too."""
        values = dict(TRAINING_PRESETS[key]["plan"])
        same_data = self.dataset_combo.currentData() == values["dataset"]
        root = (self.root_edit.text().strip() or None) if same_data else None
        self.set_plan(TrainingPlan.from_dict({**self._base_plan.to_dict(), **values, "root": root}))

    def matching_preset(self) -> str:
        """The key of the preset the form shows, or :data:`CUSTOM`."""
        try:
            plan = self.plan()
        except ValueError:
            return CUSTOM
        return next((key for key, preset in TRAINING_PRESETS.items() if self._plan_is(plan, preset["plan"])), CUSTOM)

    def _plan_is(self, plan: TrainingPlan, values: dict[str, Any]) -> bool:
        """Whether ``plan`` has the preset's ``values`` (settings it leaves out at their defaults)."""
        if any(getattr(plan, name) != value for name, value in values.items() if name not in ("hparams", "options")):
            return False
        cls = self.host.algorithms.get(plan.algorithm)
        spec = self.host.datasets.get(plan.dataset)
        if cls is None or spec is None:
            return False
        for declared, given, wanted in ((cls.hyperparameters, plan.hparams, values["hparams"]),
                                        (spec.options, plan.options, values["options"])):
            defaults = {h.name: h.default for h in declared}
            if {**defaults, **given} != {**defaults, **wanted}:
                return False
        return True

    def _show_preset(self, key: str) -> None:
        self._filling += 1
        try:
            self.preset_combo.setCurrentIndex(self.preset_combo.findData(key))
        finally:
            self._filling -= 1
        self.preset_note.setText(TRAINING_PRESETS[key]["note"] if key in TRAINING_PRESETS else CUSTOM_NOTE)

    def _preset_picked(self, index: int) -> None:
        if self._filling or index < 0:
            return
        key = self.preset_combo.itemData(index)
        if key in TRAINING_PRESETS:
            self.apply_preset(key)
        else:
            self.preset_note.setText(CUSTOM_NOTE)

    def _field_edited(self, *_: object) -> None:
        if not self._filling and self.preset_combo.currentData() != CUSTOM:
            self._show_preset(CUSTOM)

    def _mark_unavailable_presets(self) -> None:
        """Grey out the presets whose algorithm, backbone or dataset this host lacks."""
        model: QStandardItemModel = self.preset_combo.model()
        for key, preset in TRAINING_PRESETS.items():
            item = model.item(self.preset_combo.findData(key))
            available = self.preset_available(key)
            item.setEnabled(available)
            values = preset["plan"]
            item.setToolTip(preset["note"] if available else
                            f"Not available: needs {values['algorithm']}, {values['backbone']} and the "
                            f"{values['dataset']} dataset, which the loaded plugins do not all offer.")

    # -- running -----------------------------------------------------------------------------------
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
        return self._steps_received

    def _new_model_path(self, plan: TrainingPlan) -> Path:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{plan.algorithm}-{plan.dataset}-{stamp}")
        path = self._output_dir / f"{stem}.safetensors"
        n = 2
        while path.exists():
            path = self._output_dir / f"{stem}-{n}.safetensors"
            n += 1
        return path

    def model_title(self, plan: TrainingPlan) -> str:
        cls = self.host.algorithms.get(plan.algorithm)
        name = (cls.title if cls is not None and cls.title else plan.algorithm)
        return f"{name} on {plan.dataset} ({plan.ways}-way {plan.shots}-shot, {plan.backbone})"

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
        self._latest_step = None
        self._eps_average = None
        self._steps_total = plan.steps
        self._steps_received = 0
        self.plot.clear()
        self.plot.set_empty_text("Loading the data…")
        self.progress_bar.setRange(0, 0)
        self.progress_bar.setFormat("preparing…")

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
        worker.loading.connect(self._on_loading)
        worker.prepared.connect(self._on_prepared)
        worker.step.connect(self._on_step)
        worker.validation.connect(self._on_validation)
        worker.checkpoint.connect(self._on_checkpoint)
        worker.status.connect(self._on_status)
        worker.finished.connect(self._on_finished)
        worker.failed.connect(self._on_failed)
        self._thread, self._worker = thread, worker
        self._set_running()
        self._set_status(f"Starting: {self.model_title(plan)}.")
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
        if self._worker is None or self._worker.is_paused():
            return
        self._worker.pause()
        self.pause_button.setText("Resume")
        self.pause_button.setAccessibleName("Resume meta-training")
        self._set_status("Paused (after the current step). Press Resume to continue.")
        self.message.emit("Meta-training paused")
        self._refresh_progress_text()

    @Slot()
    def resume(self) -> None:
        if self._worker is None or not self._worker.is_paused():
            return
        self._worker.resume()
        self.pause_button.setText("Pause")
        self.pause_button.setAccessibleName("Pause meta-training")
        self._set_status("Meta-training…")
        self.message.emit("Meta-training resumed")

    @Slot()
    def cancel(self) -> None:
        if self._worker is None:
            return
        self._worker.cancel()
        self.cancel_button.setEnabled(False)
        self.pause_button.setEnabled(False)
        self._set_status("Stopping after the current step…")

    def shutdown(self) -> None:
        """Cancel a running run and wait for its thread to end (call before closing)."""
        if self._thread is None:
            return
        self._worker.cancel()
        self._thread.wait()
        self._cleanup()
        # Drop the worker's signals still queued for this panel: the run is over.
        QCoreApplication.removePostedEvents(self, QEvent.Type.MetaCall)
        self._set_status("Meta-training was stopped.")

    def _cleanup(self) -> None:
        thread, worker = self._thread, self._worker
        self._thread, self._worker = None, None
        if thread is not None:
            thread.wait()  # at most one step: the worker has finished or was cancelled
        del thread, worker  # owned by Python: freed here, in the GUI thread, after the thread ended
        self._set_idle()

    def _is_current(self) -> bool:
        # Signals of a worker already cleaned up (left in the queue after shutdown) are ignored.
        return self._worker is not None

    # -- worker signals (GUI thread) --------------------------------------------------------------
    @Slot(str, int, int)
    def _on_loading(self, stage: str, done: int, total: int) -> None:
        if not self._is_current():
            return
        if total > 0:
            self.progress_bar.setRange(0, total)
            self.progress_bar.setValue(min(done, total))
            self.progress_bar.setFormat(f"{stage} · {done}/{total}")
        else:
            self.progress_bar.setRange(0, 0)
            self.progress_bar.setFormat(f"{stage}…")
        self._loading_text = stage

    @Slot(dict)
    def _on_prepared(self, info: dict) -> None:
        if not self._is_current():
            return
        self._steps_total = int(info["steps"])
        self.device_label.setText(f"Device: {info['device']}")
        self.progress_bar.setRange(0, max(1, self._steps_total))
        self.progress_bar.setValue(0)
        self.progress_bar.setFormat(f"step 0/{self._steps_total} · ETA --:-- · starting…")
        self.plot.set_empty_text("Waiting for the first steps…")
        if info.get("warnings"):
            text = " ".join(f"Warning: {w}." if not w.endswith(".") else f"Warning: {w}" for w in info["warnings"])
            self._set_status(text, warning=True)
            for w in info["warnings"]:
                self.message.emit(f"Warning: {w}")
        else:
            self._set_status(f"Meta-training on {info['device']}: {info['train']}")

    @Slot(dict)
    def _on_step(self, d: dict) -> None:
        if not self._is_current():
            return
        self._steps_received += 1
        step = float(d["step"])
        self.plot.append("loss", step, d["loss"])
        if math.isfinite(d["accuracy"]):
            self.plot.append("train_acc", step, 100.0 * d["accuracy"])
        eps = d["episodes_per_second"]
        if math.isfinite(eps) and eps > 0:
            self._eps_average = eps if self._eps_average is None else 0.7 * self._eps_average + 0.3 * eps
        self._latest_step = d
        if not self._label_timer.isActive():
            self._label_timer.start()

    def _refresh_progress_text(self) -> None:
        d = self._latest_step
        if d is None or self._thread is None:
            return
        step, steps = int(d["step"]), int(d["steps"])
        self.progress_bar.setRange(0, max(1, steps))
        self.progress_bar.setValue(step)
        plan = self._run_plan
        eps = self._eps_average or 0.0
        batch = plan.meta_batch if plan is not None else 1
        eta = (steps - step) * batch / eps if eps > 0 else float("inf")
        text = f"step {step}/{steps} · ETA {_format_duration(eta)} · {eps:.1f} episodes/s"
        if self.is_paused():
            text += " · paused"
        self.progress_bar.setFormat(text)
        self.progress_bar.setAccessibleDescription(
            f"step {step} of {steps}, loss {d['loss']:.3f}, training accuracy {100 * d['accuracy']:.1f} percent")

    @Slot(dict)
    def _on_validation(self, d: dict) -> None:
        if not self._is_current():
            return
        self.plot.append("val_acc", float(d["step"]), d["accuracy"])
        mark = " (best so far, saved)" if d["improved"] else f" (best {d['best_accuracy']:.2f} %)"
        self._set_status(f"Step {d['step']}: validation accuracy {d['accuracy']:.2f} ± {d['ci95']:.2f} %{mark}.")

    @Slot(dict)
    def _on_checkpoint(self, d: dict) -> None:
        if not self._is_current():
            return
        if d["kind"] == "best":
            self._last_model_path = d["path"]

    @Slot(str)
    def _on_status(self, text: str) -> None:
        if not self._is_current():
            return
        if not self.status_label.property("warning"):
            self._set_status(text[:1].upper() + text[1:])

    @Slot(dict)
    def _on_finished(self, d: dict) -> None:
        if not self._is_current():
            return
        plan = self._run_plan
        self._last_result = dict(d)
        self._refresh_progress_text()
        self._cleanup()
        best = f"; best validation accuracy {d['best_accuracy']:.2f} %" if d.get("best_accuracy") is not None else ""
        elapsed = _format_duration(d.get("elapsed", 0.0))
        if d["status"] == "completed":
            text = f"Finished {d['steps_done']} steps in {elapsed}{best}. Model saved to {d['model_path']}."
            self.progress_bar.setRange(0, max(1, d["steps"]))
            self.progress_bar.setValue(d["steps"])
            self.progress_bar.setFormat(f"done · {d['steps_done']}/{d['steps']} steps in {elapsed}")
        elif d.get("model_exists"):
            text = f"Cancelled after {d['steps_done']} of {d['steps']} steps{best}. The model so far is in {d['model_path']}."
            self.progress_bar.setFormat(f"cancelled at step {d['steps_done']}/{d['steps']}")
        else:
            text = "Cancelled before any model was saved."
            self.progress_bar.setRange(0, 1)
            self.progress_bar.setValue(0)
            self.progress_bar.setFormat("cancelled")
        self._set_status(text)
        self.message.emit(text)
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
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.progress_bar.setFormat("failed")
        self._report_error(message, details)

    def _report_error(self, message: str, details: str) -> None:
        self._set_status(f"Error: {message}", error=True)
        self.plot.set_empty_text("Meta-training did not run: see the message below.")
        self.message.emit(f"Error: {message}")
        self.error.emit(message, details)

    # -- adaptation (forwarded by the main window) ------------------------------------------------
    @Slot(int, int, object)
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

    # -- state ---------------------------------------------------------------------------------------
    def _set_status(self, text: str, *, warning: bool = False, error: bool = False) -> None:
        self.status_label.setText(text)
        self.status_label.setProperty("warning", warning or error)
        colour = "#b00020" if error else ("#8a5a00" if warning else "")
        self.status_label.setStyleSheet(f"color: {colour};" if colour else "")
        self.status_label.setAccessibleDescription(text)

    def status_text(self) -> str:
        return self.status_label.text()

    def _set_running(self) -> None:
        self.form_widget.setEnabled(False)
        self.start_button.setEnabled(False)
        self.pause_button.setEnabled(True)
        self.cancel_button.setEnabled(True)
        self.pause_button.setText("Pause")
        self.pause_button.setAccessibleName("Pause meta-training")
        self.running_changed.emit(True)

    def _set_idle(self) -> None:
        was_running = not self.start_button.isEnabled()
        self.form_widget.setEnabled(True)
        self.start_button.setEnabled(True)
        self.pause_button.setEnabled(False)
        self.cancel_button.setEnabled(False)
        self.pause_button.setText("Pause")
        self.pause_button.setAccessibleName("Pause meta-training")
        self._label_timer.stop()
        if was_running:
            self.running_changed.emit(False)


__all__ = ["CUSTOM", "DATASET_DEFAULTS", "FIELD_TIPS", "TRAINING_PRESETS", "HyperParameterForm", "NumberSpinBox",
           "TrainingPanel", "TrainingWorker"]
