"""The main window: classify with a few examples (cards, queries, bars) and meta-train.

Its project files (open, save, autosave, export) are in window_files.py, its camera window and
Meta-train page in window_tools.py, the notification bar in notification.py.
"""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path

from PySide6.QtCore import QSettings, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QCloseEvent, QGuiApplication, QIcon, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QApplication,
    QFileDialog,
    QFrame,
    QLabel,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QScrollArea,
    QSplitter,
    QStyle,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from metastudio.app.project import Project, Recovery

from metastudio.gui.controller import ProjectController
from metastudio.gui.engine import EngineClient, ThumbnailLoader
from metastudio.gui.modelbox import ModelBox
from metastudio.gui.notification import APP_NAME, NotificationBar
from metastudio.gui.queries import QueryPanel
from metastudio.gui.widgets import ClassPanel, ProbabilityBars, paste_image
from metastudio.gui.window_files import ProjectFilesMixin
from metastudio.gui.window_tools import CameraAndTrainingMixin

AUTOSAVE_MS = 60_000
ADAPT_DEBOUNCE_MS = 120
#: The window's size when the screen has room for it.
DEFAULT_SIZE = (1280, 800)
#: Room left for a title bar and borders before the window manager has said how big they are.
FRAME_ALLOWANCE = (16, 40)
class MainWindow(ProjectFilesMixin, CameraAndTrainingMixin, QMainWindow):
    """The MetaStudio window. ``ask_restore=False`` skips the crash-recovery question (tests)."""

    #: Emitted after predictions (or a hint) are on screen for the current support and queries.
    predictions_shown = Signal()
    autosave_failed = Signal(str)

    def __init__(self, project: Project | None = None, *, device: str = "auto", ask_restore: bool = True,
                 recovery_dir: Path | None = None, settings: QSettings | None = None):
        super().__init__()
        self.setWindowTitle(APP_NAME)
        self.fit_to_screen()
        self.settings = settings or QSettings("MetaStudio", "MetaStudio")
        self.controller = ProjectController(project or self._starter_project())
        self.thumbnails = ThumbnailLoader(parent=self)
        self.engine = EngineClient(device, parent=self)
        self.recovery = Recovery(recovery_dir)
        self.recovery_dir = recovery_dir
        self.catalog: dict | None = None
        self.last_result: dict | None = None
        self.model_info: dict | None = None
        self._class_names: list[str] = []
        self._adapt_started = 0.0
        self._autosaved_index = -1
        self._closing = False
        self.training_panel = None
        self.confirm = self._confirm  # tests replace it to answer dialogs

        self.notification = NotificationBar()
        self.classes = ClassPanel(self.controller, self.thumbnails)
        self.queries = QueryPanel(self.controller, self.thumbnails)
        self.bars = ProbabilityBars()
        self.model_box = ModelBox()
        self.busy = QProgressBar()
        self.busy.setMaximumWidth(160)
        self.busy.setTextVisible(False)
        self.busy.setAccessibleName("Adapting")
        self.busy.hide()
        self._build_layout()
        self._build_actions()

        c = self.controller
        c.support_changed.connect(self.schedule_adapt)
        c.queries_changed.connect(self.schedule_adapt)
        c.reset.connect(self._project_replaced)
        c.problems.connect(self.report_problems)
        c.undo_stack.cleanChanged.connect(lambda _: self._update_title())
        c.undo_stack.indexChanged.connect(lambda _: self._update_title())
        self.queries.selection_changed.connect(lambda _: self._show_selected())
        self.queries.add_button.clicked.connect(self.add_queries)
        self.model_box.choice_changed.connect(lambda choice, hp: c.set_model(choice, hp))
        self.model_box.open_model.clicked.connect(self.open_model_file)
        c.model_changed.connect(self._model_changed)
        self.thumbnails.changed.connect(self._thumbnail_changed)
        self.engine.catalog_ready.connect(self._catalog_ready)
        self.engine.loaded.connect(self._model_loaded)
        self.engine.result.connect(self._show_result)
        self.engine.failed.connect(self._adapt_failed)
        self.engine.progress.connect(self._adapt_progress)
        self.engine.busy_changed.connect(self._busy_changed)
        self.engine.exported.connect(self._exported)
        self.engine.live_result.connect(self._live_result)
        self.queries.camera_button.clicked.connect(self.open_live_camera)
        self.live_dialog = None

        self._adapt_timer = QTimer(self)
        self._adapt_timer.setSingleShot(True)
        self._adapt_timer.setInterval(ADAPT_DEBOUNCE_MS)
        self._adapt_timer.timeout.connect(self.adapt_now)
        self._autosave_thread: threading.Thread | None = None
        self.autosave_failed.connect(self._autosave_failed)
        self._autosave_timer = QTimer(self)
        self._autosave_timer.setInterval(AUTOSAVE_MS)
        self._autosave_timer.timeout.connect(self.autosave)
        self._autosave_timer.start()

        self._update_title()
        self.statusBar().showMessage("Loading the model…")
        self.engine.request_catalog(self._project_model_paths())
        self.schedule_adapt()
        if ask_restore:
            QTimer.singleShot(0, self.offer_recovery)

    # -- construction ------------------------------------------------------------------------------------
    @staticmethod
    def _starter_project() -> Project:
        project = Project()
        project.add_class("Class 1")
        project.add_class("Class 2")
        return project

    def _build_layout(self) -> None:
        classify = QWidget()
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self.classes)
        split.addWidget(self.queries)
        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.setContentsMargins(0, 0, 0, 0)
        right_layout.addWidget(self.bars, 1)
        from metastudio.gui.plots import LivePlot

        # Optimization-based algorithms adapt by gradient steps: their inner-loop loss, live.
        self.adapt_plot = LivePlot("Adapting", x_label="inner step", left_label="support loss",
                                   empty_text="", legend=False)
        self.adapt_plot.add_series("adapt_loss", "support loss", "#d55e00")
        self.adapt_plot.setMinimumHeight(150)
        self.adapt_plot.setAccessibleName("Adaptation loss")
        self.adapt_plot.hide()
        right_layout.addWidget(self.adapt_plot)
        right_layout.addWidget(self.model_box)
        # On a short screen this column scrolls instead of making the window taller than the screen.
        right_scroll = QScrollArea()
        right_scroll.setWidget(right)
        right_scroll.setWidgetResizable(True)
        right_scroll.setFrameShape(QFrame.Shape.NoFrame)
        right_scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        split.addWidget(right_scroll)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 5)
        split.setStretchFactor(2, 2)
        split.setSizes([380, 600, 300])
        layout = QVBoxLayout(classify)
        layout.setContentsMargins(8, 8, 8, 8)
        layout.addWidget(split)
        self.tabs = QTabWidget()
        self.tabs.addTab(classify, "Classify")
        self.train_page = QWidget()
        QVBoxLayout(self.train_page)
        self.tabs.addTab(self.train_page, "Meta-train")
        self.tabs.setTabToolTip(1, "Train a new base model on a large collection of labelled pictures "
                                   "(for researchers; the Classify page works without it)")
        self.tabs.currentChanged.connect(self._tab_changed)
        central = QWidget()
        outer = QVBoxLayout(central)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(self.notification)
        outer.addWidget(self.tabs, 1)
        self.setCentralWidget(central)
        self.device_label = QLabel()
        self.statusBar().addPermanentWidget(self.busy)
        self.statusBar().addPermanentWidget(self.device_label)

    def _action(self, text: str, slot, shortcut=None, tip: str = "", icon=None) -> QAction:
        action = QAction(text, self)
        if icon is not None:
            action.setIcon(self.style().standardIcon(icon))
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
        action.setToolTip(tip or text.replace("&", "").replace("…", ""))
        action.setStatusTip(tip)
        # ``triggered`` passes ``checked``; no slot here takes it (export_csv(path) would read it
        # as a path), so it is dropped.
        action.triggered.connect(lambda _checked=False: slot())
        self.addAction(action)
        return action

    def _build_actions(self) -> None:
        SP = QStyle.StandardPixmap
        K = QKeySequence.StandardKey
        a = self.actions_by_name = {}
        a["new"] = self._action("&New", self.new_project, K.New, "Start a new project", SP.SP_FileIcon)
        a["open"] = self._action("&Open…", self.open_project_dialog, K.Open, "Open a project", SP.SP_DialogOpenButton)
        a["save"] = self._action("&Save", self.save, K.Save, "Save the project", SP.SP_DialogSaveButton)
        a["save_as"] = self._action("Save &As…", self.save_as, K.SaveAs, "Save the project under a new name")
        a["import"] = self._action("&Import class folders…", self.import_folders, "Ctrl+I",
                                   "Make a class from each sub-folder of a folder")
        a["add_queries"] = self._action("Add images to &classify…", self.add_queries, "Ctrl+Shift+O",
                                        "Add images to classify")
        a["live_camera"] = self._action("Classify with the ca&mera…", self.open_live_camera, "Ctrl+Shift+C",
                                        "Point the camera at something and see which class it looks like")
        a["export_csv"] = self._action("Export predictions as &CSV…", self.export_csv, "Ctrl+E",
                                       "Save the predictions as a CSV file")
        a["export_model"] = self._action("Export &model…", self.export_model, "Ctrl+Shift+E",
                                         "Save the adapted classifier as a TorchScript or ONNX file")
        a["quit"] = self._action("&Quit", self.close, K.Quit, "Quit MetaStudio")
        a["undo"] = self.controller.undo_stack.createUndoAction(self, "&Undo")
        a["undo"].setShortcut(QKeySequence(K.Undo))
        a["undo"].setIcon(self.style().standardIcon(SP.SP_ArrowBack))
        a["redo"] = self.controller.undo_stack.createRedoAction(self, "&Redo")
        a["redo"].setShortcut(QKeySequence(K.Redo))
        a["redo"].setIcon(self.style().standardIcon(SP.SP_ArrowForward))
        a["paste"] = self._action("&Paste image", self.paste, K.Paste,
                                  "Paste an image: into the selected class, or to classify")
        a["add_class"] = self._action("Add &class", self.classes.add_class, "Ctrl+Shift+N", "Add a class",
                                      SP.SP_FileDialogNewFolder)
        a["adapt"] = self._action("&Learn the classes again", self.adapt_now, "F5",
                                  "Learn your classes again from their examples")
        a["train"] = self._action("&Meta-train…", lambda: self.tabs.setCurrentIndex(1), "Ctrl+T",
                                  "Open the meta-training page")
        a["classify_tab"] = self._action("C&lassify", lambda: self.tabs.setCurrentIndex(0), "Ctrl+1",
                                         "Open the classify page")
        a["plugins"] = self._action("&Plugins…", self.show_plugins, None, "Installed plugins and their state")
        a["about"] = self._action("&About MetaStudio", self.about, None, "About MetaStudio")

        menu = self.menuBar()
        file_menu = menu.addMenu("&File")
        for key in ("new", "open"):
            file_menu.addAction(a[key])
        self.recent_menu = file_menu.addMenu("Open &Recent")
        self.recent_menu.aboutToShow.connect(self._fill_recent)
        for key in ("save", "save_as", None, "import", "add_queries", "live_camera", None, "export_csv", "export_model", None, "quit"):
            file_menu.addSeparator() if key is None else file_menu.addAction(a[key])
        edit = menu.addMenu("&Edit")
        for key in ("undo", "redo", None, "paste", "add_class", None, "adapt"):
            edit.addSeparator() if key is None else edit.addAction(a[key])
        view = menu.addMenu("&View")
        view.addAction(a["classify_tab"])
        view.addAction(a["train"])
        help_menu = menu.addMenu("&Help")
        help_menu.addAction(a["plugins"])
        help_menu.addAction(a["about"])

        bar = self.addToolBar("Main")
        bar.setObjectName("mainToolbar")
        bar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        for key in ("new", "open", "save", None, "add_class", "import", None, "undo", "redo"):
            bar.addSeparator() if key is None else bar.addAction(a[key])
        # 1-9 move the selected query images into that class (only while the query grid has focus).
        for number in range(1, 10):
            shortcut = QShortcut(QKeySequence(str(number)), self.queries.list)
            shortcut.setContext(Qt.ShortcutContext.WidgetShortcut)
            shortcut.activated.connect(lambda n=number: self.move_selected_to(n))

    # -- size on screen ----------------------------------------------------------------------------------
    def fit_to_screen(self) -> None:
        """The default size, shrunk to fit the screen's free area (a 1366x768 laptop with its
        task bar included), title bar and borders counted, and moved onto the screen."""
        screen = self.screen() or QGuiApplication.primaryScreen()
        if screen is None:
            return
        area = screen.availableGeometry()
        frame_w = self.frameGeometry().width() - self.geometry().width()
        frame_h = self.frameGeometry().height() - self.geometry().height()
        if not self.isVisible() or (frame_w, frame_h) == (0, 0):
            frame_w, frame_h = (0, 0) if self.isVisible() else FRAME_ALLOWANCE
        width = min(DEFAULT_SIZE[0], area.width() - frame_w)
        height = min(DEFAULT_SIZE[1], area.height() - frame_h)
        self.resize(max(width, self.minimumSizeHint().width()), max(height, self.minimumSizeHint().height()))
        frame = self.frameGeometry()
        x = min(max(frame.left(), area.left()), area.right() + 1 - frame.width())
        y = min(max(frame.top(), area.top()), area.bottom() + 1 - frame.height())
        if (x, y) != (frame.left(), frame.top()):
            self.move(max(x, area.left()), max(y, area.top()))

    def showEvent(self, event) -> None:  # noqa: N802 - Qt override
        super().showEvent(event)
        if not getattr(self, "_fitted", False):
            self._fitted = True
            # Once shown, the real frame size is known: fit again with it.
            QTimer.singleShot(0, self.fit_to_screen)

    # -- titles and status -----------------------------------------------------------------------------
    def _update_title(self) -> None:
        path = self.controller.project.path
        name = path.name if path else "Untitled"
        self.setWindowModified(self.controller.modified)
        self.setWindowTitle(f"{name}[*] — {APP_NAME}")

    def announce(self, text: str, timeout_ms: int = 0) -> None:
        """Show ``text`` in the status bar (screen readers read the status bar)."""
        self.statusBar().showMessage(text, timeout_ms)

    def report_problems(self, problems: list) -> None:
        """Say which files can't be used and why, in everyday words; each file's full path and
        the technical wording go behind Details…. ``problems``: (path, reason[, detail])."""
        n = len(problems)
        lines = "\n".join(f"{p[0]}: {p[1]}" + (f" ({p[2]})" if len(p) > 2 and p[2] else "") for p in problems)
        first = problems[0][:2]
        text = (f"{Path(first[0]).name} can't be used: {first[1]}." if n == 1 else
                f"{n} files can't be used (e.g. {Path(first[0]).name}: {first[1]}). Everything else was added.")
        self.notification.show_message(text, lines, "warning")
        self.announce(text)

    def show_error(self, message: str, details: str = "") -> None:
        self.notification.show_message(message, details, "error")
        self.announce(message)

    # -- catalogue and model -------------------------------------------------------------------------
    def _project_model_paths(self) -> list[str]:
        project = self.controller.project
        paths = []
        if project.model.get("kind") == "file":
            paths.append(project.model["path"])
        return paths

    def _project_models(self) -> list[dict]:
        """Models trained in (or added to) the project, described like catalogue entries."""
        from metastudio.engine.checkpoint import read_metadata
        from metastudio.errors import MetaStudioError

        project = self.controller.project
        out = []
        names = sorted(p.name for p in (project.workdir / "models").glob("*.safetensors")) if (project.workdir / "models").is_dir() else []
        for name in names:
            path = project.model_path(name)
            try:
                meta = read_metadata(path)
            except MetaStudioError:
                continue
            out.append({"name": Path(name).stem, "path": str(path), "origin": "project",
                        "choice": {"kind": "project", "name": name}, "algorithm": meta.get("algorithm"),
                        "backbone": meta.get("backbone"), "dataset": (meta.get("dataset") or {}).get("name"),
                        "image_size": meta.get("image_size"), "hyperparameters": dict(meta.get("hyperparameters") or {})})
        for m in (self.catalog or {}).get("models", []):
            if m.get("origin") == "extra" and not m.get("error"):
                out.append({**m, "choice": {"kind": "file", "path": m["path"]}})
        return out

    def _catalog_ready(self, catalog: dict) -> None:
        self.catalog = catalog
        if catalog.get("error"):
            self.show_error(f"The plugins could not be loaded: {catalog['error']}", catalog.get("details", ""))
        if catalog.get("failed"):
            names = ", ".join(f["plugin"] for f in catalog["failed"])
            self.notification.show_message(
                f"Plugin(s) {names} failed to load and are disabled; everything else works. See Help > Plugins.",
                "\n\n".join(f"{f['plugin']} ({f['package']}): {f['error']}\n{f['traceback']}" for f in catalog["failed"]),
                "warning")
        self.device_label.setText(f"Device: {catalog.get('device', '?')}")
        self._refresh_model_box()
        self.schedule_adapt()

    def _refresh_model_box(self) -> None:
        if self.catalog is None:
            return
        self.model_box.extra_models = self._project_models()
        project = self.controller.project
        self.model_box.set_catalog(self.catalog, project.model, project.hyperparameters)

    def _model_changed(self) -> None:
        project = self.controller.project
        self.model_box.select(project.model, project.hyperparameters)

    def model_path(self) -> str | None:
        """The file of the chosen model, or None (with a notification saying why)."""
        from metastudio.app.catalogue import resolve_model
        from metastudio.errors import MetaStudioError

        project = self.controller.project
        choice = project.model
        try:
            if choice.get("kind") == "project":
                path = project.model_path(choice["name"])
                if not path.is_file():
                    raise MetaStudioError(f"the project's model '{choice['name']}' is missing")
                return str(path)
            if choice.get("kind") == "file":
                return str(resolve_model(choice["path"]))
            return str(resolve_model(choice.get("name", "photos")))
        except MetaStudioError as e:
            self.show_error(f"The model can't be used: {e}. Pick another one in the Model box.")
            return None

    def open_model_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open a model", str(Path.home()), "MetaStudio models (*.safetensors)")
        if path:
            self.use_model_file(path)

    def use_model_file(self, path: str) -> bool:
        """Use a model file: it is copied into the project, so the project stays whole when the
        file moves or goes (a model file is small: a frozen backbone is never in it)."""
        from metastudio.errors import MetaStudioError

        try:
            name = self.controller.project.add_model_file(path)
        except (MetaStudioError, OSError) as e:
            self.show_error(f"The model file can't be used: {e}")
            return False
        self._refresh_model_box()
        self.controller.set_model({"kind": "project", "name": name}, {})
        self.announce(f"Using the model {Path(path).name} (a copy is kept in the project).", 8000)
        return True

    def _model_loaded(self, info: dict) -> None:
        self.model_info = info
        if not info.get("iterative"):
            self.adapt_plot.hide()
        self.device_label.setText(f"Device: {info['device']}")
        if self.training_panel is not None and hasattr(self.training_panel, "set_device_text"):
            self.training_panel.set_device_text(info["device"])

    # -- adapting and predicting -------------------------------------------------------------------------
    def schedule_adapt(self) -> None:
        """Re-adapt soon (changes within ADAPT_DEBOUNCE_MS are adapted once)."""
        if not self._closing:
            self._adapt_timer.start()

    def adapt_now(self) -> None:
        self._adapt_timer.stop()
        if self._closing or self.catalog is None:
            return  # the catalogue arrives first; it schedules an adaptation
        path = self.model_path()
        if path is None:
            return
        project = self.controller.project
        support = [(c.name, [(it.id, str(project.image_path(it))) for it in c.images]) for c in project.classes]
        queries = [(it.id, str(project.image_path(it))) for it in project.queries]
        self._adapt_started = time.perf_counter()
        self.engine.submit({"model_path": path, "hyperparameters": dict(project.hyperparameters),
                            "support": support, "queries": queries})

    def _busy_changed(self, busy: bool) -> None:
        self.busy.setVisible(busy)
        self.busy.setRange(0, 0)
        if busy:
            self.announce("Learning your classes…")

    def _adapt_progress(self, step: int, total: int, loss: float) -> None:
        if total > 1:
            self.busy.setRange(0, total)
            self.busy.setValue(step)
            self.announce(f"Learning your classes: step {step} of {total}…")
        if math.isnan(loss):
            return
        if step <= 1:
            self.adapt_plot.clear("adapt_loss")
        self.adapt_plot.show()
        self.adapt_plot.append("adapt_loss", float(step), float(loss))
        # short: pyqtgraph widens the plot to fit its title, and this column is narrow
        self.adapt_plot.set_title(f"Adapting: step {step}/{total}")
        self.adapt_plot.setAccessibleName(f"Adapting: step {step} of {total}, support loss {loss:.4g}")
        if self.training_panel is not None:  # the Meta-train page's plot streams it too
            self.training_panel.adaptation_progress(step, total, loss)

    def _adapt_failed(self, message: str, details: str) -> None:
        self.last_result = None
        self.queries.set_predictions({}, {})
        self.queries.status.setText(f"<span style='color:#c62828'>Could not learn the classes: {message}</span>")
        self.show_error(f"Could not learn the classes: {message}", details)
        self.predictions_shown.emit()

    def _show_result(self, result: dict) -> None:
        self.last_result = result
        project = self.controller.project
        colours = {c.name: c.colour for c in project.classes}
        names = result["class_names"]
        unsure = result.get("unsure") or {}
        predictions = {}
        for image_id, probs in result["probabilities"].items():
            best = max(range(len(probs)), key=probs.__getitem__)
            predictions[image_id] = (names[best], colours.get(names[best], "#888888"), probs[best],
                                     unsure.get(image_id, ""))
        before = self.queries.predictions
        changed = {i for i, p in predictions.items() if i in before and before[i][0] != p[0]}
        self.queries.set_predictions(predictions, result["problems"], changed)
        self._class_names = names
        if result["status"] == "hint":
            text = f"<b>{result['hint']}</b>"
            self.announce(result["hint"])
        else:
            text = self._result_summary(result, predictions, changed)
            self.announce(text.replace("<i>", "").replace("</i>", ""))
        if result["problems"]:
            bad_support = [pid for pid in result["problems"] if project.locate(pid)[0] is not None]
            text += (f" <span style='color:#c62828'>{len(result['problems'])} file(s) can't be used"
                     f"{f', {len(bad_support)} of them examples' if bad_support else ''} (hover them for the reason).</span>")
        self.queries.status.setText(text)
        self._show_selected()
        self.predictions_shown.emit()

    def _result_summary(self, result: dict, predictions: dict, changed: set) -> str:
        """The status line of an adaptation: how long it took, what was predicted, what changed."""
        project = self.controller.project
        names = result["class_names"]
        n_images = sum(len(c.images) for c in project.classes)
        took = time.perf_counter() - self._adapt_started
        text = f"Learned {len(names)} classes from {n_images} examples in {took:.2f} s."
        if project.queries:
            counts: dict[str, int] = {}
            unsure = 0
            for name, _, _, doubt in predictions.values():
                if doubt:
                    unsure += 1
                else:
                    counts[name] = counts.get(name, 0) + 1
            summary = ", ".join(f"{counts[n]} × {n}" for n in names if n in counts)
            text += f" {len(predictions)} image{'s' if len(predictions) != 1 else ''} classified: {summary or 'none sure'}"
            text += f"; {unsure} unsure (not like any class)." if unsure else "."
        else:
            text += " Now drop images to classify here."
        if changed:
            n = len(changed)
            text += (f" <b>{n} prediction{'s' if n != 1 else ''} changed</b> (marked in orange; "
                     f"“Only the {n} changed” shows just {'them' if n != 1 else 'it'}).")
        for note in result.get("notes", []):
            text += f" <i>{note}</i>"
        return text

    def _show_selected(self) -> None:
        ids = self.queries.list.selected_ids()
        project = self.controller.project
        if not ids:
            self.bars.show_image(None, "")
            if self.last_result and self.last_result["status"] == "ok" and project.queries:
                caption = "Select an image to see how sure MetaStudio is about each class."
            else:
                caption = ""
            self.bars.set_probabilities([], [], None, caption)
            return
        image_id = ids[0]
        try:
            entry, index = project.locate(image_id)
        except KeyError:
            return
        item = project.queries[index] if entry is None else entry.images[index]
        self.bars.show_image(self.thumbnails.pixmap(item.file, str(project.image_path(item))), item.name)
        result = self.last_result or {}
        probs = (result.get("probabilities") or {}).get(image_id)
        problem = (result.get("problems") or {}).get(image_id)
        if probs is None:
            caption = f"{item.name}: can't be used ({problem})" if problem else f"{item.name}: no prediction yet"
            self.bars.set_probabilities([], [], None, caption)
            return
        names = result["class_names"]
        colours = {c.name: c.colour for c in project.classes}
        best = max(range(len(probs)), key=probs.__getitem__)
        doubt = (result.get("unsure") or {}).get(image_id)
        if doubt:
            caption = (f"<b>{item.name}</b>: unsure, {doubt}. The closest class is {names[best]} "
                       f"({100 * probs[best]:.0f}%). If it belongs to a class, drop it there.")
        else:
            caption = f"<b>{item.name}</b>: {names[best]} ({100 * probs[best]:.0f}%)"
        self.bars.set_probabilities(names, [colours.get(n, "#888888") for n in names], probs, caption)

    def _thumbnail_changed(self, key: str) -> None:
        ids = self.queries.list.selected_ids()
        if ids:
            try:
                entry, index = self.controller.project.locate(ids[0])
            except KeyError:
                return
            item = self.controller.project.queries[index] if entry is None else entry.images[index]
            if item.file == key:
                self._show_selected()

    def move_selected_to(self, number: int) -> None:
        classes = self.controller.project.classes
        ids = self.queries.list.selected_ids()
        if not ids or number > len(classes):
            return
        row = self.queries.list.currentRow()
        self.controller.move_images(ids, classes[number - 1].id)
        self.announce(f"Moved {len(ids)} image(s) into '{classes[number - 1].name}'; learning again.")
        if self.queries.list.count():
            self.queries.list.setCurrentRow(min(row, self.queries.list.count() - 1))

    # -- editing -------------------------------------------------------------------------------------------
    def paste_target(self) -> str | None:
        """Where a paste goes: the images to classify when the query grid has focus, else the
        current class (the card last clicked or dropped on, highlighted), else the queries."""
        focus = QApplication.focusWidget()
        if focus is not None and (focus is self.queries or self.queries.isAncestorOf(focus)):
            return None
        current = self.classes.current
        return current if current in self.classes.cards else None

    def paste(self) -> None:
        mime = QGuiApplication.clipboard().mimeData()
        target = self.paste_target()
        if mime is None or not paste_image(self.controller, mime, target):
            self.announce("The clipboard holds no image or image files.", 5000)
            return
        where = "the images to classify" if target is None else f"'{self.controller.project.class_by_id(target).name}'"
        self.announce(f"Pasted an image into {where}.", 5000)

    def add_queries(self) -> None:
        files, _ = QFileDialog.getOpenFileNames(self, "Images to classify", self._last_dir(), _image_filter())
        if files:
            self._remember_dir(files[0])
            self.controller.add_files(files, None)

    def import_folders(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder with one sub-folder per class", self._last_dir())
        if folder:
            self._remember_dir(folder)
            self.controller.import_class_folders(folder)

    def _last_dir(self) -> str:
        return str(self.settings.value("last_dir", str(Path.home())))

    def _remember_dir(self, path: str) -> None:
        p = Path(path)
        self.settings.setValue("last_dir", str(p if p.is_dir() else p.parent))

    # -- other dialogs ----------------------------------------------------------------------------------------
    def show_plugins(self) -> None:
        from metastudio.gui.plugins_dialog import PluginsDialog

        PluginsDialog(self.catalog or {}, self).open()

    def about(self) -> None:
        from metastudio import __version__

        QMessageBox.about(self, f"About {APP_NAME}",
                          f"<b>{APP_NAME} {__version__}</b><p>Few-shot image classification with meta-learning: "
                          "teach a classifier with a handful of examples per class.</p>")

    # -- closing ------------------------------------------------------------------------------------------------
    def closeEvent(self, event: QCloseEvent) -> None:
        if not self._closing:
            if self.training_panel is not None and self.training_panel.is_running():
                answer = self.confirm("Meta-training is running", "Stop meta-training and quit?",
                                      QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                                      QMessageBox.StandardButton.No)
                if answer != QMessageBox.StandardButton.Yes:
                    event.ignore()
                    return
            if not self.maybe_save():
                event.ignore()
                return
        self.shutdown()
        event.accept()

    def shutdown(self) -> None:
        """Cancel and join every worker, forget the recovery copy, close the project."""
        if self._closing:
            return
        self._closing = True
        stack = self.controller.undo_stack
        stack.cleanChanged.disconnect()
        stack.indexChanged.disconnect()
        self._adapt_timer.stop()
        self._autosave_timer.stop()
        if self.live_dialog is not None:
            self.live_dialog.close()
        for card in self.classes.cards.values():
            card.close_camera()
        if self.training_panel is not None:
            self.training_panel.shutdown()
        self.engine.shutdown()
        self.thumbnails.shutdown()
        if self._autosave_thread is not None:
            self._autosave_thread.join()
        self.recovery.discard()
        self.controller.project.close()


def _image_filter() -> str:
    from metastudio.data.images import IMAGE_EXTENSIONS

    patterns = " ".join(f"*{e}" for e in sorted(IMAGE_EXTENSIONS))
    return f"Images ({patterns});;All files (*)"


def app_icon() -> QIcon:
    path = Path(__file__).resolve().parents[2] / "resources" / "icon.png"
    return QIcon(str(path)) if path.is_file() else QIcon()
