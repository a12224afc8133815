"""The Model box of the Classify page: which model adapts to the classes, and how.

It shows the algorithms of the installed plugins (a broken one greyed out with its error), the
models for the chosen algorithm (shipped, trained in the project, or opened from a file) and
the hyperparameters that matter when adapting; it emits ``choice_changed`` and never changes
the project itself.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QFrame,
    QGroupBox,
    QLabel,
    QPushButton,
    QScrollArea,
    QStyle,
    QVBoxLayout,
    QWidget,
)

#: Why a hyperparameter of a trained model is greyed out in the Model box (its tooltip starts so).
FIXED_REASON = "Fixed when this model was trained: its weights depend on it, so it cannot change here."
#: The note under the Model box's form when some rows are greyed out.
FIXED_NOTE = "Greyed-out settings were fixed when this model was trained."
#: The note under the Model box's form when settings used only for meta-training are left out.
TRAINING_NOTE = "Settings used only for meta-training ({names}) are in the Meta-train tab."


class ModelBox(QGroupBox):
    """Algorithm and model pickers, the algorithm's hyperparameters, and the device in use."""

    choice_changed = Signal(dict, dict)  # model choice, hyperparameter overrides

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Model", parent)
        form = QFormLayout(self)
        self.algorithm_combo = QComboBox()
        self.algorithm_combo.setAccessibleName("Algorithm")
        self.algorithm_combo.setToolTip("The few-shot algorithm (from the installed plugins)")
        self.model_combo = QComboBox()
        self.model_combo.setAccessibleName("Model")
        self.model_combo.setToolTip("The meta-trained model the algorithm adapts to your classes")
        self.open_model = QPushButton("Open model file…")
        self.about = QLabel()
        self.about.setWordWrap(True)
        self.about.setForegroundRole(self.about.foregroundRole())
        self.device = QLabel("starting…")
        self.device.setAccessibleName("Device")
        form.addRow("Algorithm", self.algorithm_combo)
        form.addRow("Model", self.model_combo)
        form.addRow("", self.open_model)
        form.addRow(self.about)
        self.hp_box = QWidget()
        self.hp_layout = QVBoxLayout(self.hp_box)
        self.hp_layout.setContentsMargins(0, 0, 0, 0)
        self.form_note = QLabel()
        self.form_note.setWordWrap(True)
        self.form_note.setObjectName("form_note")
        self.form_note.hide()
        self.hp_layout.addWidget(self.form_note)
        # The settings scroll where the window is too short for them all (MANN has a dozen), rather
        # than being squeezed until their rows overlap.
        self.hp_scroll = QScrollArea()
        self.hp_scroll.setWidget(self.hp_box)
        self.hp_scroll.setWidgetResizable(True)
        self.hp_scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.hp_scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        form.addRow(self.hp_scroll)
        form.addRow("Device", self.device)
        self.catalog: dict = {"algorithms": [], "failed": [], "models": []}
        self.extra_models: list[dict] = []
        self.hp_form = None
        self._saved_hparams: dict = {}
        self._adaptation_names: set[str] = set()
        self._updating = False
        self.algorithm_combo.currentIndexChanged.connect(self._algorithm_picked)
        self.model_combo.currentIndexChanged.connect(self._model_picked)

    # -- filling ----------------------------------------------------------------------------------------
    def set_catalog(self, catalog: dict, current: dict, hyperparameters: dict) -> None:
        self.catalog = catalog
        self.device.setText(catalog.get("device", "?"))
        self._updating = True
        try:
            self.algorithm_combo.clear()
            for algo in catalog["algorithms"]:
                self.algorithm_combo.addItem(f"{algo['title']} ({algo['family']})", algo["name"])
                self.algorithm_combo.setItemData(self.algorithm_combo.count() - 1, algo["description"],
                                                 Qt.ItemDataRole.ToolTipRole)
            warn = self.style().standardIcon(QStyle.StandardPixmap.SP_MessageBoxWarning)
            for fail in catalog["failed"]:
                self.algorithm_combo.addItem(warn, f"{fail['plugin']} — failed to load", None)
                index = self.algorithm_combo.count() - 1
                self.algorithm_combo.setItemData(
                    index, f"Plugin '{fail['plugin']}' ({fail['package']} {fail['version']}) is disabled:\n{fail['error']}",
                    Qt.ItemDataRole.ToolTipRole)
                item = self.algorithm_combo.model().item(index)
                item.setEnabled(False)
        finally:
            self._updating = False
        self.select(current, hyperparameters)

    def models(self) -> list[dict]:
        return [m for m in self.catalog.get("models", []) + self.extra_models if not m.get("error")]

    def model_for(self, choice: dict) -> dict | None:
        for m in self.models():
            if choice.get("kind") == "shipped" and m["origin"] == "shipped" and m["name"] == choice.get("name"):
                return m
            if choice.get("kind") in ("file", "project") and m.get("choice") == choice:
                return m
        return None

    def select(self, choice: dict, hyperparameters: dict) -> None:
        model = self.model_for(choice)
        algorithm = model["algorithm"] if model else None
        self._updating = True
        try:
            index = self.algorithm_combo.findData(algorithm) if algorithm else -1
            if index >= 0:
                self.algorithm_combo.setCurrentIndex(index)
            self._fill_models(algorithm)
            for i in range(self.model_combo.count()):
                if self.model_combo.itemData(i) == choice:
                    self.model_combo.setCurrentIndex(i)
        finally:
            self._updating = False
        self._show_form(algorithm, model, hyperparameters)

    def _fill_models(self, algorithm: str | None) -> None:
        self.model_combo.clear()
        for m in self.models():
            if m.get("algorithm") != algorithm:
                continue
            choice = m.get("choice") or {"kind": "shipped", "name": m["name"]}
            label = m["name"] if m["origin"] == "shipped" else f"{m['name']} ({'this project' if choice['kind'] == 'project' else 'file'})"
            dataset = f" · meta-trained on {m['dataset']}" if m.get("dataset") else ""
            self.model_combo.addItem(label, choice)
            self.model_combo.setItemData(self.model_combo.count() - 1, f"{m['path']}\n{m.get('backbone')}{dataset}",
                                         Qt.ItemDataRole.ToolTipRole)
        if self.model_combo.count() == 0:
            self.model_combo.addItem("no model yet: meta-train one (Meta-train tab)", None)

    def _show_form(self, algorithm: str | None, model: dict | None, hyperparameters: dict) -> None:
        from .training import HyperParameterForm

        spec = next((a for a in self.catalog["algorithms"] if a["name"] == algorithm), None)
        if self.hp_form is not None:
            self.hp_layout.removeWidget(self.hp_form)
            self.hp_form.deleteLater()
            self.hp_form = None
        self.form_note.hide()
        self._saved_hparams, self._adaptation_names = {}, set()
        if spec is None:
            self.about.setText("")
            return
        details = f" Backbone {model['backbone']}, {model['image_size']} px" if model else ""
        self.about.setText(f"<small>{spec['description']}{details}</small>")
        # Only what matters when adapting is offered here: settings used only in meta-training are
        # left out, and those the trained weights depend on show the model's values, read-only.
        specs = spec["hyperparameters"]
        if model is None:  # nothing trained to show
            shown = [h for h in specs if _role(h) == "adaptation"]
        else:
            shown = [h for h in specs if _role(h) != "training"]
        fixed = [h["name"] for h in shown if _role(h) == "architecture"]
        left_out = [h["name"] for h in specs if _role(h) == "training" and h["name"] not in _OPTIMISER]
        notes = ([FIXED_NOTE] if fixed else []) + ([TRAINING_NOTE.format(names=", ".join(left_out))]
                                                   if model is not None and left_out else [])
        if notes:
            self.form_note.setText(f"<small>{' '.join(notes)}</small>")
            self.form_note.show()
        if shown:
            self.hp_form = HyperParameterForm([_hyperparameter(h) for h in shown])
            saved = dict((model or {}).get("hyperparameters") or {})
            names = {h["name"] for h in shown}
            self._adaptation_names = names - set(fixed)
            self._saved_hparams = {k: v for k, v in saved.items() if k in names}
            # The model's values first (the fixed ones keep them), then the project's overrides
            # of what may change; a bad value leaves the rest shown.
            for values in (self._saved_hparams,
                           {k: v for k, v in hyperparameters.items() if k in self._adaptation_names}):
                try:
                    self.hp_form.set_values(values)
                except ValueError:
                    pass
            if fixed:
                self.hp_form.set_read_only(fixed, FIXED_REASON)
            self.hp_form.changed.connect(self._hp_changed)
            self.hp_layout.insertWidget(0, self.hp_form)

    # -- reacting -----------------------------------------------------------------------------------------
    def _algorithm_picked(self, index: int) -> None:
        if self._updating or index < 0:
            return
        algorithm = self.algorithm_combo.itemData(index)
        self._updating = True
        try:
            self._fill_models(algorithm)
        finally:
            self._updating = False
        self._model_picked(self.model_combo.currentIndex())

    def _model_picked(self, index: int) -> None:
        if self._updating or index < 0:
            return
        choice = self.model_combo.itemData(index)
        if choice is None:
            return
        self._show_form(self.algorithm_combo.currentData(), self.model_for(choice), {})
        self.choice_changed.emit(choice, {})

    def _hp_changed(self) -> None:
        if self._updating:
            return
        choice = self.model_combo.currentData()
        if choice is None or self.hp_form is None:
            return
        try:
            values = self.hp_form.values()
        except ValueError:
            return
        # Only what may change and differs from the model's own settings is an override.
        self.choice_changed.emit(choice, {k: v for k, v in values.items()
                                          if k in self._adaptation_names and self._saved_hparams.get(k) != v})


def _hyperparameter(described: dict):
    """A HyperParameter back from its JSON description (the catalogue crosses threads as plain data)."""
    from metastudio.core.algorithm import HyperParameter

    types = {"int": int, "float": float, "bool": bool, "str": str}
    choices = described.get("choices")
    return HyperParameter(described["name"], types[described["type"]], described["default"], described["help"],
                          described.get("minimum"), described.get("maximum"),
                          tuple(choices) if choices is not None else None, bool(described.get("log_scale")),
                          role=_role(described))


#: The shared optimiser settings: only ever for meta-training, whatever a plugin declares.
_OPTIMISER = ("lr", "weight_decay", "lr_schedule", "lr_step")


def _role(described: dict) -> str:
    """The role of a described hyperparameter (``adaptation`` when a plugin gave none)."""
    return "training" if described["name"] in _OPTIMISER else described.get("role") or "adaptation"
