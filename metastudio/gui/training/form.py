"""The Meta-train form: a Preset picker (:data:`~metastudio.gui.training.presets.TRAINING_PRESETS`,
or Custom as soon as a field is edited), what to train (algorithm, backbone, dataset and where
its pictures are), the practice rounds (episodes), and behind an Advanced button the validation
details and the algorithm's hyperparameters. Every field explains itself in one plain line
(:data:`~metastudio.gui.training.presets.FIELD_TIPS`, a hyperparameter's help). The form shows
a :class:`~metastudio.app.runs.TrainingPlan` and gives one back; it never starts anything.
"""

from __future__ import annotations

import sys
from typing import Any

from PySide6.QtCore import QEvent, QObject, Qt, Signal
from PySide6.QtGui import QAction, QStandardItem, QStandardItemModel
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
    QScrollArea,
    QSpinBox,
    QStyle,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from metastudio.app.runs import TrainingPlan
from metastudio.gui.forms import HyperParameterForm
from metastudio.gui.training.presets import (
    CUSTOM,
    CUSTOM_NOTE,
    DATASET_DEFAULTS,
    DATASET_ORDER,
    DEFAULT_PRESET,
    BATCH_FIELDS,
    EPISODE_FIELDS,
    FIELD_TIPS,
    TRAINING_PRESETS,
    VALIDATION_FIELDS,
    SpinField,
)
from metastudio.gui.widgets import disclosure_button


class FormScroll(QScrollArea):
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


def select_data(combo: QComboBox, name: str | None) -> bool:
    """Make the entry of ``combo`` whose data is ``name`` current; False when there is none."""
    index = combo.findData(name, Qt.ItemDataRole.UserRole) if name is not None else -1
    if index >= 0:
        combo.setCurrentIndex(index)
        return True
    return False


def _label(text: str, buddy: QWidget) -> QLabel:
    """A label for ``buddy`` that explains it as its tooltip does."""
    label = QLabel(text)
    label.setBuddy(buddy)
    label.setToolTip(buddy.toolTip())
    return label


def _spin(field: SpinField) -> QSpinBox:
    w = QSpinBox()
    w.setRange(field.minimum, field.maximum)
    w.setValue(field.default)
    w.setAccessibleName(field.name)
    w.setToolTip(FIELD_TIPS[field.key])
    w.setAccelerated(True)
    w.setKeyboardTracking(False)
    return w


class TrainingForm(QWidget):
    """The form of a meta-training run (see the module docstring), empty until :meth:`load`.
    Its spin boxes are ``spins[key]`` by plan field (``spins["ways"]``); :meth:`plan` and
    :meth:`set_plan` read and fill the whole form.

    Signals: ``message(text)`` when the form changes a field by itself (the ways lowered to what
    the algorithm can tell apart); ``plan_shown(plan, problems)`` once :meth:`set_plan` (or a
    preset) filled it, with what of the plan could not be shown, in words.
    """

    message = Signal(str)
    plan_shown = Signal(object, list)

    def __init__(self, host, parent: QWidget | None = None):
        super().__init__(parent)
        self.host = host
        self._base_plan = TrainingPlan(log_every=1)
        self._setting_plan = False
        self._filling = 0  # > 0 while the form fills itself (not a person's edit)
        self.spins: dict[str, QSpinBox] = {}
        layout = QVBoxLayout(self)
        layout.addLayout(self._build_preset())
        layout.addWidget(self._build_components())
        self.batch_group = self._spin_box_group("Plain training (batches of every class)", BATCH_FIELDS)
        self.batch_group.hide()  # shown for the methods that train so (see _algorithm_changed)
        layout.addWidget(self.batch_group)
        self.episode_group = self._spin_box_group("Practice rounds (episodes)", EPISODE_FIELDS)
        layout.addWidget(self.episode_group)
        self.advanced_toggle = disclosure_button(
            "Advanced: validation and hyperparameters", "Advanced training settings",
            "Show how the model is tested while it learns, and the learning method's settings")
        self.advanced_toggle.toggled.connect(self._advanced_toggled)
        layout.addWidget(self.advanced_toggle)
        self.advanced = self._build_advanced()
        self.advanced.hide()
        layout.addWidget(self.advanced)
        layout.addStretch(1)
        self._connect()

    def load(self) -> None:
        """Fill the pickers with what the plugins offer, and the form with the default preset
        (or what matches it); ``plan_shown`` says what it shows."""
        self._filling += 1
        try:
            self._fill_components()
        finally:
            self._filling -= 1
        if self.preset_available(DEFAULT_PRESET):
            self.apply_preset(DEFAULT_PRESET)
        else:
            self._show_preset(self.matching_preset())

    # -- building ----------------------------------------------------------------------------------
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
        form.addRow(_label("Preset:", self.preset_combo), self.preset_combo)
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
        self.options_form = HyperParameterForm()
        self.options_form.setAccessibleName("Dataset options")

        run_box = QGroupBox("What to train")
        form = QFormLayout(run_box)
        form.addRow(_label("&Algorithm:", self.algorithm_combo), self.algorithm_combo)
        form.addRow(_label("&Backbone:", self.backbone_combo), self.backbone_combo)
        form.addRow("", self.freeze_check)
        form.addRow(_label("&Dataset:", self.dataset_combo), self.dataset_combo)
        form.addRow(_label("&Location:", self.root_edit), self._build_location_row())
        form.addRow(self.options_form)
        return run_box

    def _build_location_row(self) -> QHBoxLayout:
        """The dataset location and its Browse… menu (a folder or a zip file)."""
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
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.root_edit, 1)
        row.addWidget(self.browse_button)
        return row

    def _spin_box_group(self, title: str, fields: tuple[SpinField, ...]) -> QGroupBox:
        """A group of spin boxes, two to a row, each with its label; they join :attr:`spins`."""
        box = QGroupBox(title)
        grid = QGridLayout(box)
        for i, field in enumerate(fields):
            spin = self.spins[field.key] = _spin(field)
            row, column = divmod(i, 2)
            grid.addWidget(_label(field.label, spin), row, 2 * column)
            grid.addWidget(spin, row, 2 * column + 1)
        return box

    def _build_advanced(self) -> QWidget:
        """Validation details and the algorithm's hyperparameters, behind the Advanced button."""
        val_box = self._spin_box_group("Validation (tests while it learns)", VALIDATION_FIELDS)
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

    def _connect(self) -> None:
        self.preset_combo.currentIndexChanged.connect(self._preset_picked)
        self.algorithm_combo.currentIndexChanged.connect(self._algorithm_changed)
        self.backbone_combo.currentIndexChanged.connect(self._backbone_changed)
        self.dataset_combo.currentIndexChanged.connect(self._dataset_changed)
        # Any edit of a field means the form no longer is a preset (the location is not part of one).
        for combo in (self.algorithm_combo, self.backbone_combo, self.dataset_combo):
            combo.currentIndexChanged.connect(self._field_edited)
        for spin in self.spins.values():
            spin.valueChanged.connect(self._field_edited)
        self.freeze_check.toggled.connect(self._field_edited)
        self.hparam_form.changed.connect(self._field_edited)
        self.options_form.changed.connect(self._field_edited)

    def _advanced_toggled(self, shown: bool) -> None:
        self.advanced.setVisible(shown)

    # -- what the plugins offer --------------------------------------------------------------------
    def _fill_components(self) -> None:
        self._fill_algorithms()
        host = self.host
        self.backbone_combo.clear()
        for name in sorted(host.backbones):
            self.backbone_combo.addItem(name, name)
            self.backbone_combo.setItemData(self.backbone_combo.count() - 1, host.backbones[name].description,
                                            Qt.ItemDataRole.ToolTipRole)
        self.dataset_combo.clear()
        names = [n for n in DATASET_ORDER if n in host.datasets] + sorted(set(host.datasets) - set(DATASET_ORDER))
        for name in names:
            self.dataset_combo.addItem(name, name)
            self.dataset_combo.setItemData(self.dataset_combo.count() - 1, host.datasets[name].description,
                                           Qt.ItemDataRole.ToolTipRole)
        self._setting_plan = True
        try:
            select_data(self.algorithm_combo, self._base_plan.algorithm)
            select_data(self.backbone_combo, self._base_plan.backbone)
            select_data(self.dataset_combo, self._base_plan.dataset)
        finally:
            self._setting_plan = False
        self._algorithm_changed()
        self._backbone_changed()
        self._dataset_changed()
        self._mark_unavailable_presets()

    def _fill_algorithms(self) -> None:
        """Every loaded algorithm, then each plugin that may have offered some and did not load
        (greyed out, with its error)."""
        model: QStandardItemModel = self.algorithm_combo.model()
        model.clear()
        for name in sorted(self.host.algorithms):
            cls = self.host.algorithms[name]
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

    # -- reactions to the form ------------------------------------------------------------------------
    def _current_algorithm(self):
        name = self.algorithm_combo.currentData()
        return self.host.algorithms.get(name) if name else None

    def _algorithm_changed(self, *_: object) -> None:
        cls = self._current_algorithm()
        self.hparam_form.set_hyperparameters(cls.hyperparameters if cls is not None else ())
        trains_on = self._trains_on(cls)
        self.batch_group.setVisible(trains_on != "episodes")
        self.episode_group.setVisible(trains_on != "batches")
        steps = self.spins["batch_steps"]
        if trains_on != "episodes" and steps.value() <= steps.minimum():  # a plan without batch steps was shown
            steps.setValue(next(f.default for f in BATCH_FIELDS if f.key == "batch_steps"))
        if cls is not None and not self._setting_plan:
            self._keep_ways_within(cls)
        self._update_freeze()

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
        lowered = [spin for spin in (self.spins["ways"], self.spins["val_ways"]) if spin.value() > limit]
        for spin in lowered:
            spin.setValue(limit)
        if lowered:
            self.message.emit(f"Ways lowered to {limit}: {cls.title} tells at most {limit} classes apart "
                              "(its max ways setting).")

    def _backbone_changed(self, *_: object) -> None:
        self._update_freeze()

    def _update_freeze(self) -> None:
        """The freeze box is offered for a pretrained backbone and an algorithm that works on a
        frozen one (``supports_frozen_backbone``); its tooltip says why when it is not."""
        name = self.backbone_combo.currentData()
        spec = self.host.backbones.get(name) if name else None
        cls = self._current_algorithm()
        pretrained = bool(spec is not None and spec.pretrained)
        supported = cls is None or getattr(cls, "supports_frozen_backbone", True) is not False
        self.freeze_check.setEnabled(pretrained and supported)
        if not (pretrained and supported):
            self.freeze_check.setChecked(False)
        if not supported:
            self.freeze_check.setToolTip(f"{cls.title or cls.name} trains the whole network: it cannot keep a "
                                         "ready-made one as it is.")
        else:
            self.freeze_check.setToolTip(FIELD_TIPS["freeze"])

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
        for key, value in DATASET_DEFAULTS.get(dataset, DATASET_DEFAULTS["folder"]).items():
            self.spins[key].setValue(value)
        cls = self._current_algorithm()
        if cls is not None:
            self._keep_ways_within(cls)

    def _browse_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Choose the dataset folder", self.root_edit.text())
        if path:
            self.root_edit.setText(path)

    def _browse_zip(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose the dataset zip file", self.root_edit.text(),
                                              "Zip files (*.zip);;All files (*)")
        if path:
            self.root_edit.setText(path)

    # -- the plan ----------------------------------------------------------------------------------
    @property
    def base_plan(self) -> TrainingPlan:
        """The plan last shown: its fields without a widget (seed, device, splits) come back in :meth:`plan`."""
        return self._base_plan

    @staticmethod
    def _trains_on(cls) -> str:
        """What the algorithm class trains on ("episodes" when not known)."""
        trains_on = getattr(cls, "trains_on", "episodes") if cls is not None else "episodes"
        return trains_on if isinstance(trains_on, str) else "episodes"

    def plan(self) -> TrainingPlan:
        """The plan the form describes. Raises ValueError when a hyperparameter is invalid."""
        base = self._base_plan
        spins = {key: spin.value() for key, spin in self.spins.items()}
        if self._trains_on(self._current_algorithm()) == "episodes":
            spins["batch_steps"] = 0  # the field is hidden: it is not this method's
        return TrainingPlan.from_dict({
            **base.to_dict(),
            "algorithm": self.algorithm_combo.currentData() or base.algorithm,
            "backbone": self.backbone_combo.currentData() or base.backbone,
            "dataset": self.dataset_combo.currentData() or base.dataset,
            "root": self.root_edit.text().strip() or None,
            "options": self.options_form.values(),
            "hparams": self.hparam_form.values(),
            "freeze_backbone": self.freeze_check.isChecked(),
            **spins,
        })

    def set_plan(self, plan: TrainingPlan) -> None:
        """Show ``plan`` in the form. Components this host lacks are reported by ``plan_shown``
        (the form keeps its current choice); fields without a widget (seed, device, split, …)
        are kept and come back in :meth:`plan`. The Preset picker shows the preset the plan is,
        or Custom."""
        self._filling += 1
        try:
            problems = self._fill_plan(TrainingPlan.from_dict(plan.to_dict()))
        finally:
            self._filling -= 1
        self._show_preset(self.matching_preset())
        self.plan_shown.emit(self._base_plan, problems)

    def _fill_plan(self, plan: TrainingPlan) -> list[str]:
        problems = []
        self._setting_plan = True
        try:
            self._base_plan = plan
            for what, combo, name in (("algorithm", self.algorithm_combo, plan.algorithm),
                                      ("backbone", self.backbone_combo, plan.backbone),
                                      ("dataset", self.dataset_combo, plan.dataset)):
                if not select_data(combo, name):
                    problems.append(f"{what} '{name}' is not available")
            self._algorithm_changed()
            self._backbone_changed()
            self._dataset_changed()
        finally:
            self._setting_plan = False
        self.root_edit.setText(plan.root or "")
        for key, spin in self.spins.items():
            spin.setValue(getattr(plan, key))
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
        return problems

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
