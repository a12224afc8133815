"""The main window: classify with a few examples (cards, queries, bars) and meta-train.

Its parts live beside it: the menus and toolbar are declared in actions.py, the project as a
document (open, save, autosave, recovery) is documents.py, the exports exports.py, the words of
a result predictions.py, the Model box modelbox.py, the Meta-train tab training_page.py (its
panel: training/), the notification bar notification.py, the busy indicator with its Cancel
busy.py and the safety nets safety.py. The window wires them together and adapts in the worker
of engine.py whenever the classes or the images to classify change.
"""

from __future__ import annotations

import html
import math
import time
from pathlib import Path

from PySide6.QtCore import QSettings, Qt, QTimer, Signal
from PySide6.QtGui import QCloseEvent, QGuiApplication, QIcon
from PySide6.QtWidgets import (
    QApplication,
    QFileDialog,
    QFrame,
    QLabel,
    QMainWindow,
    QMessageBox,
    QScrollArea,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from metastudio.app.catalogue import check_model_file
from metastudio.app.project import Project
from metastudio.errors import MetaStudioError, for_person
from metastudio.gui.actions import build_actions, build_class_keys, build_menus
from metastudio.gui.busy import BusyIndicator, busy_cursor
from metastudio.gui.collector import MainThreadCollector
from metastudio.gui.controller import ProjectController
from metastudio.gui.documents import ProjectDocuments, starter_project
from metastudio.gui.engine import EngineClient, ThumbnailLoader, catalogue_entry
from metastudio.gui.exports import Exports
from metastudio.gui.modelbox import ModelBox
from metastudio.gui.notification import APP_NAME, NotificationBar
from metastudio.gui.predictions import (
    camera_caption,
    camera_failure,
    class_colours,
    image_caption,
    no_prediction_caption,
    problems_note,
    summary,
    tile_predictions,
)
from metastudio.gui.queries import QueryPanel
from metastudio.gui.training_page import TrainingPage
from metastudio.gui.widgets import ClassPanel, ProbabilityBars, image_filter, paste_image

ADAPT_DEBOUNCE_MS = 120
#: The window's size when the screen has room for it.
DEFAULT_SIZE = (1280, 800)
#: Room left for a title bar and borders before the window manager has said how big they are.
FRAME_ALLOWANCE = (16, 40)
#: The tabs of the window.
CLASSIFY_TAB, TRAINING_TAB = 0, 1


class MainWindow(QMainWindow):
    """The MetaStudio window. ``ask_restore=False`` skips the crash-recovery question (tests)."""

    #: Emitted after predictions (or a hint) are on screen for the current support and queries.
    predictions_shown = Signal()
    #: Emitted with the message whenever the window shows an error notification.
    error_shown = Signal(str)

    def __init__(self, project: Project | None = None, *, device: str = "auto", ask_restore: bool = True,
                 recovery_dir: Path | None = None, settings: QSettings | None = None):
        super().__init__()
        self.setWindowTitle(APP_NAME)
        self.fit_to_screen()
        self.settings = settings or QSettings("MetaStudio", "MetaStudio")
        self.controller = ProjectController(project or starter_project())
        self.thumbnails = ThumbnailLoader(parent=self)
        # Garbage is collected in this thread only, so no worker ever destroys a Qt object.
        self.collector = MainThreadCollector(self).install()
        self.engine = EngineClient(device, parent=self)
        self.documents = ProjectDocuments(self, recovery_dir)
        self.exports = Exports(self)
        self.catalog: dict | None = None
        self.last_result: dict | None = None
        self.model_info: dict | None = None
        self._adapt_started = 0.0
        self._closing = False
        self.live_dialog = None
        self.confirm = self._confirm  # tests replace it to answer dialogs

        self.notification = NotificationBar()
        self.classes = ClassPanel(self.controller, self.thumbnails)
        self.queries = QueryPanel(self.controller, self.thumbnails)
        self.bars = ProbabilityBars()
        self.model_box = ModelBox()
        self.busy_indicator = BusyIndicator()
        self.busy = self.busy_indicator.bar
        self.cancel_button = self.busy_indicator.cancel_button
        self._build_layout()
        self.actions_by_name = build_actions(self)
        self.recent_menu = build_menus(self, self.actions_by_name)
        self.recent_menu.aboutToShow.connect(lambda: self.documents.fill_recent_menu(self.recent_menu))
        build_class_keys(self)
        self._adapt_timer = QTimer(self)
        self._adapt_timer.setSingleShot(True)
        self._adapt_timer.setInterval(ADAPT_DEBOUNCE_MS)
        self._adapt_timer.timeout.connect(self.adapt_now)
        self._connect()

        self._update_title()
        self.statusBar().showMessage("Loading the model…")
        self.engine.request_catalog(self._project_model_paths())
        self.schedule_adapt()
        if ask_restore:
            QTimer.singleShot(0, self.documents.offer_recovery)

    # -- construction ------------------------------------------------------------------------------------
    def _connect(self) -> None:
        c = self.controller
        c.support_changed.connect(self.schedule_adapt)
        c.queries_changed.connect(self.schedule_adapt)
        c.reset.connect(self._project_replaced)
        c.problems.connect(self.report_problems)
        c.undo_stack.cleanChanged.connect(lambda _: self._update_title())
        c.undo_stack.indexChanged.connect(lambda _: self._update_title())
        c.model_changed.connect(self._model_changed)
        self.documents.title_changed.connect(self._update_title)
        self.queries.selection_changed.connect(lambda _: self._show_selected())
        self.queries.add_button.clicked.connect(self.add_queries)
        self.queries.camera_button.clicked.connect(self.open_live_camera)
        self.model_box.choice_changed.connect(lambda choice, hp: c.set_model(choice, hp))
        self.model_box.open_model.clicked.connect(self.open_model_file)
        self.model_box.untrained_changed.connect(self._untrained_changed)
        self.model_box.train_requested.connect(self.train_algorithm)
        self.thumbnails.changed.connect(self._thumbnail_changed)
        self.engine.catalog_ready.connect(self._catalog_ready)
        self.engine.loaded.connect(self._model_loaded)
        self.engine.result.connect(self._show_result)
        self.engine.failed.connect(self._adapt_failed)
        self.engine.cancelled.connect(self._adapt_cancelled)
        self.busy_indicator.cancel_requested.connect(self.cancel_adapting)
        self.engine.progress.connect(self._adapt_progress)
        self.engine.busy_changed.connect(self._busy_changed)
        self.engine.exported.connect(self.exports.exported)
        self.engine.live_result.connect(self._live_result)

    def _build_layout(self) -> None:
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self.classes)
        split.addWidget(self.queries)
        split.addWidget(self._build_right_column())
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 5)
        split.setStretchFactor(2, 2)
        split.setSizes([380, 600, 300])
        classify = QWidget()
        layout = QVBoxLayout(classify)
        layout.setContentsMargins(8, 8, 8, 8)
        layout.addWidget(split)
        self.tabs = QTabWidget()
        self.tabs.addTab(classify, "Classify")
        train_page = QWidget()
        QVBoxLayout(train_page)
        self.training = TrainingPage(self, train_page)
        self.tabs.addTab(train_page, "Meta-train")
        self.tabs.setTabToolTip(TRAINING_TAB, "Train a new base model on a large collection of labelled pictures "
                                              "(for researchers; the Classify page works without it)")
        self.tabs.currentChanged.connect(self._tab_changed)
        central = QWidget()
        outer = QVBoxLayout(central)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(self.notification)
        outer.addWidget(self.tabs, 1)
        self.setCentralWidget(central)
        self.device_label = QLabel()
        self.statusBar().addPermanentWidget(self.busy_indicator)
        self.statusBar().addPermanentWidget(self.device_label)

    def _build_right_column(self) -> QScrollArea:
        """The bars of the selected image, the live adaptation loss and the Model box; on a short
        screen this column scrolls instead of making the window taller than the screen."""
        from metastudio.gui.plots import LivePlot

        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.setContentsMargins(0, 0, 0, 0)
        right_layout.addWidget(self.bars, 1)
        # Optimization-based algorithms adapt by gradient steps: their inner-loop loss, live.
        self.adapt_plot = LivePlot("Adapting", x_label="inner step", left_label="support loss",
                                   empty_text="", legend=False)
        self.adapt_plot.add_series("adapt_loss", "support loss", "#d55e00")
        self.adapt_plot.setMinimumHeight(150)
        self.adapt_plot.setAccessibleName("Adaptation loss")
        self.adapt_plot.hide()
        right_layout.addWidget(self.adapt_plot)
        right_layout.addWidget(self.model_box)
        scroll = QScrollArea()
        scroll.setWidget(right)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        return scroll

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

    # -- titles, messages, questions -----------------------------------------------------------------------
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
        self.error_shown.emit(message)

    def _confirm(self, title: str, text: str, buttons=None, default=None):
        buttons = buttons or (QMessageBox.StandardButton.Save | QMessageBox.StandardButton.Discard
                              | QMessageBox.StandardButton.Cancel)
        return QMessageBox.question(self, title, text, buttons, default or QMessageBox.StandardButton.Save)

    # -- catalogue and model -------------------------------------------------------------------------
    def _project_model_paths(self) -> list[str]:
        """Model files the catalogue should describe besides the shipped ones (a model the
        project uses from a file)."""
        model = self.controller.project.model
        return [model["path"]] if model.get("kind") == "file" else []

    def _project_models(self) -> list[dict]:
        """The catalogue entries of the models trained in (or added to) the project and of those
        opened from a file, each with the choice that selects it."""
        project = self.controller.project
        folder = project.workdir / "models"
        names = sorted(p.name for p in folder.glob("*.safetensors")) if folder.is_dir() else []
        out = []
        for name in names:
            entry = catalogue_entry(project.model_path(name), "project")
            if not entry.get("error"):
                out.append({**entry, "choice": {"kind": "project", "name": name}})
        for m in (self.catalog or {}).get("models", []):
            if m.get("origin") == "extra" and not m.get("error"):
                out.append({**m, "choice": {"kind": "file", "path": m["path"]}})
        return out

    def _catalog_ready(self, catalog: dict) -> None:
        self.catalog = catalog
        if catalog.get("error"):
            self.show_error(f"The plugins could not be loaded: {catalog['error']}", catalog.get("details", ""))
        self._report_plugin_problems(catalog)
        self.device_label.setText(f"Device: {catalog.get('device', '?')}")
        self.refresh_model_box()
        self.schedule_adapt()

    def _report_plugin_problems(self, catalog: dict) -> None:
        """Say which plugins failed to load and which plugin models were left out (and why)."""
        failed, left_out = catalog.get("failed") or [], catalog.get("model_warnings") or []
        details = [f"{f['plugin']} ({f['package']}): {f['error']}\n{f['traceback']}" for f in failed]
        details += [f"{w['plugin']} ({w['package']} {w['version']}): {w['warning']}" for w in left_out]
        if failed:
            names = ", ".join(f"{f['plugin']} (package {f['package']} {f['version']})" for f in failed)
            text = f"Plugin(s) {names} failed to load and are disabled; everything else works. See Help > Plugins."
        elif left_out:
            first = left_out[0]
            more = f" ({len(left_out) - 1} more behind Details…)" if len(left_out) > 1 else ""
            text = f"Plugin {first['plugin']} (package {first['package']} {first['version']}): {first['warning']}.{more}"
        else:
            return
        self.notification.show_message(text, "\n\n".join(details), "warning")

    def refresh_model_box(self) -> None:
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
            self.show_error(f"The model can't be used: {for_person(e).message}. Pick another one in the Model box.")
            return None

    def open_model_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open a model", str(Path.home()), "MetaStudio models (*.safetensors)")
        if path:
            self.use_model_file(path)

    def use_model_file(self, path: str) -> bool:
        """Use a model file: it is checked as classifying with it would check it (a file that
        can't be used is named and refused, and the model in use stays), then copied into the
        project, so the project stays whole when the file moves or goes (a model file is small:
        a frozen backbone is never in it)."""
        try:
            with busy_cursor():
                check_model_file(path)
                name = self.controller.project.add_model_file(path)
        except Exception as e:  # noqa: BLE001 - a file from outside: whatever is wrong with it is shown
            said = for_person(e)
            named = str(path) in said.message  # most messages about a file name it already
            lead = "This model file" if named else f"The model file '{Path(path).name}'"
            self.show_error(f"{lead} can't be used: {said.message}", said.details)
            return False
        self.refresh_model_box()
        self.controller.set_model({"kind": "project", "name": name}, {})
        self.announce(f"Using the model {Path(path).name} (a copy is kept in the project).", 8000)
        return True

    def use_project_model(self, name: str) -> None:
        """Adapt with the project's model file ``name`` from now on (undoable)."""
        self.controller.set_model({"kind": "project", "name": name}, {})
        self.announce(f"Using the model '{Path(name).stem}'. Undo (Ctrl+Z) goes back to the previous one.", 8000)

    def _model_loaded(self, info: dict) -> None:
        self.model_info = info
        if not info.get("iterative"):
            self.adapt_plot.hide()
        self.device_label.setText(f"Device: {info['device']}")
        self.training.show_device(info["device"])

    # -- adapting ------------------------------------------------------------------------------------------
    def schedule_adapt(self) -> None:
        """Re-adapt soon (changes within ADAPT_DEBOUNCE_MS are adapted once)."""
        if not self._closing:
            self._adapt_timer.start()

    def adapt_now(self) -> None:
        self._adapt_timer.stop()
        if self._closing or self.catalog is None:
            return  # the catalogue arrives first; it schedules an adaptation
        if self.model_box.untrained:
            return  # the Model box shows an algorithm without a model: nothing to adapt with
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
        self.busy_indicator.set_busy(busy)
        if busy:
            self.announce("Learning your classes…")

    def cancel_adapting(self) -> None:
        """Stop waiting for the algorithm learning the classes (the Cancel button)."""
        if self.engine.cancel():
            self.announce("Stopping…")

    def _adapt_progress(self, step: int, total: int, loss: float) -> None:
        if total > 1:
            self.busy_indicator.set_progress(step, total)
            self.announce(f"Learning your classes: step {step} of {total}…")
        if math.isnan(loss) or not (self.model_info or {}).get("iterative"):
            return  # plotted for the algorithms that declare reports_adaptation_loss
        if step <= 1:
            self.adapt_plot.clear("adapt_loss")
        self.adapt_plot.show()
        self.adapt_plot.append("adapt_loss", float(step), float(loss))
        # short: pyqtgraph widens the plot to fit its title, and this column is narrow
        self.adapt_plot.set_title(f"Adapting: step {step}/{total}")
        self.adapt_plot.setAccessibleName(f"Adapting: step {step} of {total}, support loss {loss:.4g}")
        self.training.adaptation_progress(step, total, loss)

    def _adapt_failed(self, message: str, details: str) -> None:
        self.last_result = None
        self.queries.set_predictions({}, {})
        self.queries.status.setText(f"<span style='color:#c62828'>Could not learn the classes: {message}</span>")
        self.show_error(f"Could not learn the classes: {message}", details)
        self.predictions_shown.emit()

    def _adapt_cancelled(self, failure: dict) -> None:
        """A person cancelled: say that MetaStudio stopped waiting for which algorithm (and its
        plugin), and that another model can be picked; the project is as it was."""
        algorithm = (self.model_info or {}).get("algorithm_title") or "the algorithm"
        plugin = f"; it is the algorithm of {failure['plugin']}" if failure.get("plugin") else ""
        text = (f"Stopped waiting for {algorithm} to learn your classes{plugin}. Your project is unchanged: "
                "pick another model in the Model box, or press F5 to try again.")
        self.last_result = None
        self.queries.set_predictions({}, {})
        self.queries.status.setText(f"<b>Stopped waiting for {html.escape(algorithm)}.</b> "
                                    "Pick another model in the Model box.")
        self.notification.show_message(text, failure.get("details", ""), "warning")
        self.announce(f"Stopped waiting for {algorithm}.")
        self.predictions_shown.emit()

    # -- showing the predictions ---------------------------------------------------------------------------
    def _show_result(self, result: dict) -> None:
        if self.model_box.untrained:
            return  # adapted with the model of another algorithm than the one the Model box shows
        self.last_result = result
        project = self.controller.project
        predictions = tile_predictions(project, result)
        before = self.queries.predictions
        changed = {i for i, p in predictions.items() if i in before and before[i][0] != p[0]}
        self.queries.set_predictions(predictions, result["problems"], changed)
        if result["status"] == "hint":
            text = f"<b>{result['hint']}</b>"
            self.announce(result["hint"])
        else:
            text = summary(project, result, predictions, changed, time.perf_counter() - self._adapt_started)
            self.announce(text.replace("<i>", "").replace("</i>", ""))
        self.queries.status.setText(text + problems_note(project, result))
        self._show_selected()
        self.predictions_shown.emit()

    def _selected_item(self):
        """The query image selected in the grid (its first one), or None."""
        ids = self.queries.list.selected_ids()
        if not ids:
            return None
        project = self.controller.project
        try:
            entry, index = project.locate(ids[0])
        except KeyError:
            return None
        return project.queries[index] if entry is None else entry.images[index]

    def _show_selected(self) -> None:
        project = self.controller.project
        item = self._selected_item()
        if item is None:
            self.bars.show_image(None, "")
            ready = self.last_result and self.last_result["status"] == "ok" and project.queries
            self.bars.set_probabilities([], [], None, "Select an image to see how sure MetaStudio is about "
                                                      "each class." if ready else "")
            return
        self.bars.show_image(self.thumbnails.pixmap(item.file, str(project.image_path(item))), item.name)
        result = self.last_result or {}
        caption = image_caption(item.name, result, item.id)
        if caption is None:
            self.bars.set_probabilities([], [], None, no_prediction_caption(item.name, result, item.id))
            return
        names = result["class_names"]
        self.bars.set_probabilities(names, class_colours(project, names), result["probabilities"][item.id],
                                    caption)

    def _thumbnail_changed(self, key: str) -> None:
        item = self._selected_item()
        if item is not None and item.file == key:
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

    # -- the live camera -----------------------------------------------------------------------------------
    def open_live_camera(self):
        """The camera window with a bar per class for what the camera sees (the classifier of
        the last adaptation; the camera runs only while the window is open)."""
        from metastudio.gui.camera import LiveDialog

        if self.live_dialog is not None:
            self.live_dialog.raise_()
            return self.live_dialog
        dialog = LiveDialog(self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.frame_for_prediction.connect(self.engine.predict_picture)
        dialog.finished.connect(self._live_closed)
        self.live_dialog = dialog
        dialog.open()
        return dialog

    def _live_closed(self, *_: object) -> None:
        self.live_dialog = None

    def _live_result(self, result: dict) -> None:
        dialog = self.live_dialog
        if dialog is None:
            return
        if result.get("status") != "ok":
            dialog.show_prediction([], [], [], camera_failure(result))
            return
        names = result["class_names"]
        dialog.show_prediction(names, class_colours(self.controller.project, names), result["probabilities"],
                               camera_caption(result))

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
        files, _ = QFileDialog.getOpenFileNames(self, "Images to classify", self.documents.last_dir(), image_filter())
        if files:
            self.documents.remember_dir(files[0])
            self.controller.add_files(files, None)

    def import_folders(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder with one sub-folder per class", self.documents.last_dir())
        if folder:
            self.documents.remember_dir(folder)
            self.controller.import_class_folders(folder)

    def _project_replaced(self) -> None:
        self.last_result = None
        self.queries.set_predictions({}, {})
        self._update_title()
        self.refresh_model_box()
        if self.controller.project.model.get("kind") == "file":
            self.engine.request_catalog(self._project_model_paths())
        self.training.restore_plan()

    def _untrained_changed(self, algorithm: str) -> None:
        """The Model box shows an algorithm without a trained model (``algorithm``), or a model
        again (""). Meanwhile nothing is adapted: the predictions would be another model's."""
        if not algorithm:
            self.schedule_adapt()
            return
        self._adapt_timer.stop()
        self.last_result = None
        self.queries.set_predictions({}, {})
        title = next((a["title"] for a in (self.catalog or {}).get("algorithms", []) if a["name"] == algorithm),
                     algorithm)
        self.queries.status.setText(f"<b>There is no trained model of {html.escape(title)} yet.</b> Meta-train one "
                                    "(Meta-train tab), or pick a model in the Model box, to classify your images.")
        self.announce(f"There is no trained model of {title} yet.")
        self.predictions_shown.emit()

    def train_algorithm(self, algorithm: str) -> None:
        """Open the Meta-train tab with ``algorithm`` chosen there ("Meta-train a model…")."""
        chosen = self.training.select_algorithm(algorithm)
        self.show_training_page()
        if not chosen and self.training.is_running():
            self.announce("Meta-training is running: choose the algorithm once it has finished.", 8000)

    # -- the Meta-train tab ----------------------------------------------------------------------------------
    def show_classify_page(self) -> None:
        self.tabs.setCurrentIndex(CLASSIFY_TAB)

    def show_training_page(self) -> None:
        self.tabs.setCurrentIndex(TRAINING_TAB)

    def _tab_changed(self, index: int) -> None:
        if index == TRAINING_TAB:
            self.training.ensure_panel()

    def ensure_training_panel(self):
        """The Meta-train tab's panel, built on first use (see :class:`TrainingPage`)."""
        return self.training.ensure_panel()

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
    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt override
        if not self._closing and not self._may_close():
            event.ignore()
            return
        self.shutdown()
        event.accept()

    def _may_close(self) -> bool:
        """Whether the person lets the window close: a running meta-training stops, unsaved
        changes are saved or dropped."""
        if self.training.is_running():
            answer = self.confirm("Meta-training is running", "Stop meta-training and quit?",
                                  QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                                  QMessageBox.StandardButton.No)
            if answer != QMessageBox.StandardButton.Yes:
                return False
        return self.documents.maybe_save()

    def shutdown(self) -> None:
        """Cancel and join every worker, forget the recovery copy, close the project."""
        if self._closing:
            return
        self._closing = True
        stack = self.controller.undo_stack
        stack.cleanChanged.disconnect()
        stack.indexChanged.disconnect()
        self._adapt_timer.stop()
        if self.live_dialog is not None:
            self.live_dialog.close()
        for card in self.classes.cards.values():
            card.close_camera()
        self.training.shutdown()
        self.engine.shutdown()
        self.thumbnails.shutdown()
        self.documents.close()
        self.controller.project.close()
        self.collector.uninstall()


def app_icon() -> QIcon:
    path = Path(__file__).resolve().parents[2] / "resources" / "icon.png"
    return QIcon(str(path)) if path.is_file() else QIcon()
