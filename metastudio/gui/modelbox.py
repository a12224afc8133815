"""The Model box of the Classify page: which model adapts to the classes, and how.

By default it shows one plain choice, what the model is for (:data:`PRESETS`: photos,
handwriting; the models plugins ship; the project's own models with what they were trained
on), and where it runs. The
researcher's view is behind the "Advanced" disclosure: the algorithms of the installed plugins
(a broken one greyed out with its error), every model of the chosen algorithm (shipped with
MetaStudio or by a plugin, trained in the project, or opened from a file), its backbone and
image size, and the hyperparameters that matter when adapting. An algorithm without a trained
model is described with a "Meta-train a model…" button instead (``train_requested``). The box
emits ``choice_changed`` and never changes the project itself.

The disclosure is a checkable tool button showing and hiding a plain widget rather than
superqt's QCollapsible: the hyperparameter form inside is rebuilt whenever the model changes
(MANN has a dozen rows), and QCollapsible animates a maximum height fixed when it opens, which
would clip a form that grew; a shown widget lets the layout size it, and a toggle button is
announced as such by screen readers.
"""

from __future__ import annotations

from typing import NamedTuple

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

from metastudio.gui.widgets import disclosure_button

#: Why a hyperparameter of a trained model is greyed out in the Model box (its tooltip starts so).
FIXED_REASON = "Fixed when this model was trained: its weights depend on it, so it cannot change here."
#: The note under the Model box's form when some rows are greyed out.
FIXED_NOTE = "Greyed-out settings were fixed when this model was trained."
#: The note under the Model box's form when settings used only for meta-training are left out.
TRAINING_NOTE = "Settings used only for meta-training ({names}) are in the Meta-train tab."


class Purpose(NamedTuple):
    """One entry of the plain model choice: its title, the model choice, one sentence more."""

    title: str
    choice: dict
    note: str


#: The shipped models offered by default, one per purpose: (model name, title, note). Every
#: other shipped model is a research variant, reachable under Advanced.
PRESETS: tuple[tuple[str, str, str], ...] = (
    ("photos", "Photos", "Works for most pictures: animals, objects, places, products. Ready to use."),
    ("protonet-omniglot", "Handwriting and symbols",
     "Small black-on-white drawings: handwritten letters, digits and signs. Ready to use."),
)
#: What a model's training data was, in everyday words (dataset name -> words).
DATASET_WORDS = {"omniglot": "handwritten characters", "mini-imagenet": "photos",
                 "folder": "a folder of your own pictures"}
#: The plain title of a research variant, by the data it was trained on.
_KIND_TITLES = {"omniglot": "Handwriting", "mini-imagenet": "Photos"}
#: The plain choice's note when the chosen model is missing.
MISSING_NOTE = "This model can't be found. Pick another one, or open a model file."
#: How many lines of text the settings take at most before they scroll.
SETTINGS_LINES = 12
#: What the box says when the algorithm picked under Advanced has no trained model.
NO_MODEL_TEXT = "There is no trained model of {title} yet. Meta-train one to classify with it."


def _trained_on(model: dict) -> str:
    """What a catalogued model was trained on, in everyday words."""
    return DATASET_WORDS.get(model.get("dataset"), model.get("dataset") or "pictures")


class ModelBox(QGroupBox):
    """What the model is for (``purpose_combo``, ``purpose_note``), where it runs (``device``),
    and behind ``advanced_toggle`` (the ``advanced`` widget): the algorithm and model pickers,
    the model's description and the algorithm's hyperparameters (``hp_form``)."""

    choice_changed = Signal(dict, dict)  # model choice, hyperparameter overrides
    #: The name of the algorithm shown without a trained model, "" once a model is shown again.
    untrained_changed = Signal(str)
    #: "Meta-train a model…" was clicked for the algorithm of this name.
    train_requested = Signal(str)

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Model", parent)
        layout = QVBoxLayout(self)
        layout.addLayout(self._build_plain())
        self.advanced_toggle = disclosure_button("Advanced", "Advanced model settings",
                                                 "Show the learning method, every model and their settings")
        layout.addWidget(self.advanced_toggle)
        self.advanced = self._build_advanced()
        self.advanced.hide()
        layout.addWidget(self.advanced)
        self.device = QLabel("starting…")
        self.device.setAccessibleName("Device")
        self.device.setToolTip("Where the computing happens: the processor (CPU) or a graphics card (GPU)")
        device_row = QFormLayout()
        device_row.addRow("Runs on:", self.device)
        layout.addLayout(device_row)
        self.catalog: dict = {"algorithms": [], "failed": [], "models": []}
        self.extra_models: list[dict] = []
        self.hp_form = None
        self.purposes: list[Purpose] = []
        self._saved_hparams: dict = {}
        self._adaptation_names: set[str] = set()
        self._shown_choice: dict | None = None
        self.untrained = ""  # the algorithm shown without a trained model, else ""
        self._updating = False
        self.advanced_toggle.toggled.connect(self._advanced_toggled)
        self.purpose_combo.currentIndexChanged.connect(self._purpose_picked)
        self.algorithm_combo.currentIndexChanged.connect(self._algorithm_picked)
        self.model_combo.currentIndexChanged.connect(self._model_picked)

    def _build_plain(self) -> QFormLayout:
        """The default view: what the model is for, and a way to open a model file."""
        form = QFormLayout()
        self.purpose_combo = QComboBox()
        self.purpose_combo.setAccessibleName("What the model is for")
        self.purpose_combo.setToolTip("What kind of pictures the model is made for")
        self.purpose_combo.setPlaceholderText("Loading the models…")
        self.purpose_note = QLabel()
        self.purpose_note.setWordWrap(True)
        self.purpose_note.setObjectName("purpose_note")
        self.purpose_note.setAccessibleName("About this model")
        self.open_model = QPushButton("Open model file…")
        self.open_model.setToolTip("Use a model saved as a file (.safetensors), e.g. one a colleague trained")
        form.addRow("Made for:", self.purpose_combo)
        form.addRow(self.purpose_note)
        form.addRow("", self.open_model)
        return form

    def _build_advanced(self) -> QWidget:
        """The researcher's view: algorithm, every model, their description and settings."""
        advanced = QWidget()
        advanced.setObjectName("advanced")
        form = QFormLayout(advanced)
        form.setContentsMargins(0, 0, 0, 0)
        self.algorithm_combo = QComboBox()
        self.algorithm_combo.setAccessibleName("Algorithm")
        self.algorithm_combo.setToolTip("The few-shot algorithm (from the installed plugins)")
        self.model_combo = QComboBox()
        self.model_combo.setAccessibleName("Model")
        self.model_combo.setToolTip("The meta-trained model the algorithm adapts to your classes")
        self.about = QLabel()
        self.about.setWordWrap(True)
        form.addRow("Algorithm", self.algorithm_combo)
        form.addRow("Model", self.model_combo)
        for combo in (self.purpose_combo, self.algorithm_combo, self.model_combo):
            _fit_narrow_column(combo)
        form.addRow(self.about)
        self.no_model = QLabel()
        self.no_model.setWordWrap(True)
        self.no_model.setObjectName("no_model")
        self.no_model.setAccessibleName("No trained model")
        self.no_model.setTextFormat(Qt.TextFormat.PlainText)
        self.train_button = QPushButton("Meta-train a model…")
        self.train_button.setToolTip("Open the Meta-train tab with this algorithm chosen")
        self.train_button.clicked.connect(lambda: self.train_requested.emit(self.untrained))
        form.addRow(self.no_model)
        form.addRow(self.train_button)
        self.no_model.hide()
        self.train_button.hide()
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
        self.hp_scroll = _SettingsScroll()
        self.hp_scroll.setWidget(self.hp_box)
        self.hp_scroll.setWidgetResizable(True)
        self.hp_scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.hp_scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        form.addRow(self.hp_scroll)
        return advanced

    def set_advanced_open(self, shown: bool) -> None:
        """Open or close the Advanced part (as clicking its button does)."""
        self.advanced_toggle.setChecked(shown)

    def _advanced_toggled(self, shown: bool) -> None:
        self.advanced.setVisible(shown)

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
        self.purposes = []  # the models may have changed: the plain choice is rebuilt
        self.select(current, hyperparameters)

    def models(self) -> list[dict]:
        return [m for m in self.catalog.get("models", []) + self.extra_models if not m.get("error")]

    def model_for(self, choice: dict) -> dict | None:
        for m in self.models():
            # A model chosen by name: shipped with MetaStudio (listed first) or by a plugin.
            if choice.get("kind") == "shipped" and m["origin"] in ("shipped", "plugin") and m["name"] == choice.get("name"):
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
            self._show_purpose(choice)
        finally:
            self._updating = False
        self._show_form(algorithm, model, hyperparameters)
        self._show_untrained("")
        # A research variant is named plainly in the default view, and its details open with it
        # (once: a person who closes them again keeps them closed).
        variant = model is not None and model["origin"] == "shipped" and not self.is_preset(choice)
        if variant and choice != self._shown_choice:
            self.set_advanced_open(True)
        self._shown_choice = dict(choice)

    # -- the plain choice ---------------------------------------------------------------------------------
    @staticmethod
    def is_preset(choice: dict) -> bool:
        """Whether ``choice`` is one of the shipped :data:`PRESETS`."""
        return choice.get("kind") == "shipped" and any(choice.get("name") == name for name, _, _ in PRESETS)

    def plain_purposes(self) -> list[Purpose]:
        """The default choices: the shipped presets there are, the plugins' models, then the
        project's own models."""
        shipped = {m["name"] for m in self.models() if m["origin"] == "shipped"}
        out = [Purpose(title, {"kind": "shipped", "name": name}, note)
               for name, title, note in PRESETS if name in shipped]
        out += [self._plugin_purpose(m) for m in self.models() if m["origin"] == "plugin"]
        for m in self.extra_models:
            if m.get("choice") and not m.get("error"):
                out.append(self._own_purpose(m))
        return out

    @staticmethod
    def _own_purpose(m: dict) -> Purpose:
        trained_on = _trained_on(m)
        if m["choice"]["kind"] == "project":
            note = f"A model of this project, trained on {trained_on}."
        else:
            note = f"A model opened from a file, trained on {trained_on}."
        return Purpose(m["name"], m["choice"], note)

    @staticmethod
    def _plugin_purpose(m: dict) -> Purpose:
        return Purpose(m.get("title") or m["name"], {"kind": "shipped", "name": m["name"]},
                       f"A model from the plugin {m.get('plugin') or '?'}, trained on {_trained_on(m)}.")

    def _variant_purpose(self, choice: dict) -> Purpose:
        """The plain entry of a model that is not a preset (a research variant, or a missing one)."""
        m = self.model_for(choice)
        if m is None:
            name = choice.get("name") or str(choice.get("path", "model")).rsplit("/", 1)[-1]
            return Purpose(f"{name} (not found)", choice, MISSING_NOTE)
        kind = _KIND_TITLES.get(m.get("dataset"), "Pictures")
        return Purpose(f"{kind}: {m['name']}", choice,
                       f"A research variant ({m['name']}), trained on {_trained_on(m)}. Its settings are under Advanced.")

    def _show_purpose(self, choice: dict) -> None:
        """Show ``choice`` in the plain picker (adding it when it is not a preset: a research
        variant stays listed until the catalogue is refreshed)."""
        rebuild = not self.purposes
        if rebuild:
            self.purposes = self.plain_purposes()
        if choice not in [p.choice for p in self.purposes]:
            self.purposes.append(self._variant_purpose(choice))
            rebuild = True
        if rebuild:
            self.purpose_combo.clear()
            for p in self.purposes:
                self.purpose_combo.addItem(p.title, p.choice)
                self.purpose_combo.setItemData(self.purpose_combo.count() - 1, p.note, Qt.ItemDataRole.ToolTipRole)
        index = [p.choice for p in self.purposes].index(choice)
        self.purpose_combo.setCurrentIndex(index)
        self.purpose_note.setText(self.purposes[index].note)

    def _fill_models(self, algorithm: str | None) -> None:
        self.model_combo.clear()
        for m in self.models():
            if m.get("algorithm") != algorithm:
                continue
            choice = m.get("choice") or {"kind": "shipped", "name": m["name"]}
            if m["origin"] == "shipped":
                label = m["name"]
            elif m["origin"] == "plugin":
                label = f"{m['name']} (plugin {m.get('plugin') or '?'})"
            else:
                label = f"{m['name']} ({'this project' if choice['kind'] == 'project' else 'file'})"
            dataset = f" · meta-trained on {m['dataset']}" if m.get("dataset") else ""
            self.model_combo.addItem(label, choice)
            self.model_combo.setItemData(self.model_combo.count() - 1, f"{m['path']}\n{m.get('backbone')}{dataset}",
                                         Qt.ItemDataRole.ToolTipRole)
        if self.model_combo.count() == 0:
            self.model_combo.addItem("no model yet: meta-train one (Meta-train tab)", None)

    def _show_form(self, algorithm: str | None, model: dict | None, hyperparameters: dict, *,
                   settings: bool = True) -> None:
        """Describe ``algorithm`` with ``model`` and show the settings that matter when adapting
        (none with ``settings=False``: an algorithm without a trained model has nothing to adapt)."""
        from metastudio.gui.forms import HyperParameterForm

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
        if not settings:
            self.hp_scroll.updateGeometry()
            return
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
        self.hp_scroll.updateGeometry()

    # -- reacting -----------------------------------------------------------------------------------------
    def _picked(self, combo: QComboBox, index: int) -> dict | None:
        """The model choice a person picked in ``combo``: None while the box fills itself, or
        for an entry that is no model."""
        if self._updating or index < 0:
            return None
        return combo.itemData(index)

    def _purpose_picked(self, index: int) -> None:
        choice = self._picked(self.purpose_combo, index)
        if choice is None:
            return
        self.select(choice, {})
        self.choice_changed.emit(choice, {})

    def _algorithm_picked(self, index: int) -> None:
        if self._updating or index < 0:
            return
        algorithm = self.algorithm_combo.itemData(index)
        self._updating = True
        try:
            self._fill_models(algorithm)
        finally:
            self._updating = False
        if algorithm is not None and self.model_combo.currentData() is None:
            # Nothing to adapt with: say so, and keep the project's model (no choice is emitted).
            self._show_form(algorithm, None, {}, settings=False)
            self._show_untrained(algorithm)
            return
        self._model_picked(self.model_combo.currentIndex())

    def _model_picked(self, index: int) -> None:
        choice = self._picked(self.model_combo, index)
        if choice is None:
            return
        self._updating = True
        try:
            self._show_purpose(choice)
        finally:
            self._updating = False
        self._shown_choice = dict(choice)
        self._show_form(self.algorithm_combo.currentData(), self.model_for(choice), {})
        self._show_untrained("")
        self.choice_changed.emit(choice, {})

    def _show_untrained(self, algorithm: str) -> None:
        """Show that the algorithm named ``algorithm`` has no trained model, with the button to
        meta-train one; ``""``: a model is shown. Emits ``untrained_changed`` when that changes."""
        spec = next((a for a in self.catalog["algorithms"] if a["name"] == algorithm), None) if algorithm else None
        if spec is not None:
            self.no_model.setText(NO_MODEL_TEXT.format(title=spec["title"] or spec["name"]))
        self.no_model.setVisible(spec is not None)
        self.train_button.setVisible(spec is not None)
        self.model_combo.setEnabled(spec is None)
        shown = spec["name"] if spec is not None else ""
        if shown != self.untrained:
            self.untrained = shown
            self.untrained_changed.emit(shown)

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


class _SettingsScroll(QScrollArea):
    """The scroll area of the settings: it asks for their height up to :data:`SETTINGS_LINES`
    lines of text and scrolls beyond, so a long form (MANN's dozen settings) does not push the
    rest of the column out of a laptop's screen."""

    def sizeHint(self):  # noqa: N802 - Qt override
        hint = super().sizeHint()
        inner = self.widget().sizeHint().height() if self.widget() is not None else 0
        hint.setHeight(min(inner, SETTINGS_LINES * self.fontMetrics().height()) + 2 * self.frameWidth())
        return hint


def _fit_narrow_column(combo: QComboBox) -> None:
    """Let ``combo`` narrow with the window's right-hand column (its text is then elided; the
    list that opens shows every entry whole) instead of widening the column to its longest entry."""
    combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    combo.setMinimumContentsLength(12)


def _hyperparameter(described: dict):
    """A HyperParameter back from its JSON description (the catalogue crosses threads as plain data)."""
    from metastudio.algorithms.hyperparameters import HyperParameter

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
