"""Every command of the main window's menus and toolbar, declared once in :data:`ACTIONS`: its
id, its text (with its mnemonic), the window's method it calls, its shortcut, the sentence its
tooltip and the status bar show, and its icon. :func:`build_actions` makes the ``QAction`` s
(``window.actions_by_name[id]``), :func:`build_menus` puts them in the menus and the toolbar
(:data:`MENUS`, :data:`TOOLBAR`), and :func:`build_class_keys` makes the keys 1-9 of the
query grid. Each command runs through :func:`metastudio.gui.safety.guarded`: whatever it raises
becomes the window's error notification, naming the command.
"""

from __future__ import annotations

from operator import attrgetter
from typing import NamedTuple

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QKeySequence, QShortcut, QUndoStack
from PySide6.QtWidgets import QMenu, QStyle

from metastudio.gui.safety import guarded

SP = QStyle.StandardPixmap
KEY = QKeySequence.StandardKey


class ActionSpec(NamedTuple):
    """One command: ``slot`` names what it calls on the window (``"documents.save"`` is
    ``window.documents.save``), called without arguments."""

    id: str
    text: str
    slot: str
    shortcut: QKeySequence.StandardKey | str | None = None
    tip: str = ""
    icon: QStyle.StandardPixmap | None = None

    @property
    def label(self) -> str:
        """The text as a message names the command ("Save As", "Open")."""
        return self.text.replace("&", "").replace("…", "")


ACTIONS: tuple[ActionSpec, ...] = (
    ActionSpec("new", "&New", "documents.new_project", KEY.New, "Start a new project", SP.SP_FileIcon),
    ActionSpec("open", "&Open…", "documents.open_dialog", KEY.Open, "Open a project", SP.SP_DialogOpenButton),
    ActionSpec("save", "&Save", "documents.save", KEY.Save, "Save the project", SP.SP_DialogSaveButton),
    ActionSpec("save_as", "Save &As…", "documents.save_as", KEY.SaveAs, "Save the project under a new name"),
    ActionSpec("import", "&Import class folders…", "import_folders", "Ctrl+I",
               "Make a class from each sub-folder of a folder"),
    ActionSpec("add_queries", "Add images to &classify…", "add_queries", "Ctrl+Shift+O", "Add images to classify"),
    ActionSpec("live_camera", "Classify with the ca&mera…", "open_live_camera", "Ctrl+Shift+C",
               "Point the camera at something and see which class it looks like"),
    ActionSpec("export_csv", "Export predictions as &CSV…", "exports.export_csv", "Ctrl+E",
               "Save the predictions as a CSV file"),
    ActionSpec("export_model", "Export &model…", "exports.export_model", "Ctrl+Shift+E",
               "Save the adapted classifier as a TorchScript or ONNX file"),
    ActionSpec("quit", "&Quit", "close", KEY.Quit, "Quit MetaStudio"),
    ActionSpec("undo", "&Undo", "controller.undo_stack.undo", KEY.Undo, icon=SP.SP_ArrowBack),
    ActionSpec("redo", "&Redo", "controller.undo_stack.redo", KEY.Redo, icon=SP.SP_ArrowForward),
    ActionSpec("paste", "&Paste image", "paste", KEY.Paste, "Paste an image: into the selected class, or to classify"),
    ActionSpec("add_class", "Add &class", "classes.add_class", "Ctrl+Shift+N", "Add a class", SP.SP_FileDialogNewFolder),
    ActionSpec("adapt", "&Learn the classes again", "adapt_now", "F5", "Learn your classes again from their examples"),
    ActionSpec("train", "&Meta-train…", "show_training_page", "Ctrl+T", "Open the meta-training page"),
    ActionSpec("classify_tab", "C&lassify", "show_classify_page", "Ctrl+1", "Open the classify page"),
    ActionSpec("plugins", "&Plugins…", "show_plugins", None, "Installed plugins and their state"),
    ActionSpec("about", "&About MetaStudio", "about", None, "About MetaStudio"),
)

#: The actions the undo stack makes: their text names what they undo or redo, and they are
#: disabled while there is nothing to.
UNDO_STACK_ACTIONS = {"undo": QUndoStack.createUndoAction, "redo": QUndoStack.createRedoAction}

#: Where the File menu has its Open Recent submenu.
RECENT = "recent"
#: The menus: a title and its entries (action ids; None is a separator).
MENUS: tuple[tuple[str, tuple[str | None, ...]], ...] = (
    ("&File", ("new", "open", RECENT, "save", "save_as", None, "import", "add_queries", "live_camera", None,
               "export_csv", "export_model", None, "quit")),
    ("&Edit", ("undo", "redo", None, "paste", "add_class", None, "adapt")),
    ("&View", ("classify_tab", "train")),
    ("&Help", ("plugins", "about")),
)
TOOLBAR: tuple[str | None, ...] = ("new", "open", "save", None, "add_class", "import", None, "undo", "redo")


def _make(window, spec: ActionSpec) -> QAction:
    if spec.id in UNDO_STACK_ACTIONS:
        action = UNDO_STACK_ACTIONS[spec.id](window.controller.undo_stack, window, spec.text)
    else:
        action = QAction(spec.text, window)
        action.setToolTip(spec.tip or spec.label)
        action.setStatusTip(spec.tip)
        find = attrgetter(spec.slot)
        find(window)  # a slot the window lacks is a mistake in ACTIONS: fail as the window is built
        # Looked up when triggered (so it is the window's method of the moment), called without
        # ``triggered``'s ``checked`` (export_csv(path) would read it as a path).
        action.triggered.connect(guarded(window, spec.label, lambda: find(window)()))
        window.addAction(action)
    if spec.icon is not None:
        action.setIcon(window.style().standardIcon(spec.icon))
    if spec.shortcut is not None:
        action.setShortcut(QKeySequence(spec.shortcut))
    return action


def build_actions(window) -> dict[str, QAction]:
    """The window's action of each of :data:`ACTIONS`, by id."""
    return {spec.id: _make(window, spec) for spec in ACTIONS}


def _fill(target, entries, actions: dict[str, QAction]) -> None:
    for key in entries:
        target.addSeparator() if key is None else target.addAction(actions[key])


def build_menus(window, actions: dict[str, QAction]) -> QMenu:
    """The menu bar and the toolbar of :data:`MENUS` and :data:`TOOLBAR`; returns the (empty)
    Open Recent submenu, for the window to fill each time it opens."""
    recent = None
    for title, entries in MENUS:
        menu = window.menuBar().addMenu(title)
        if RECENT in entries:
            at = entries.index(RECENT)
            _fill(menu, entries[:at], actions)
            recent = menu.addMenu("Open &Recent")
            entries = entries[at + 1:]
        _fill(menu, entries, actions)
    bar = window.addToolBar("Main")
    bar.setObjectName("mainToolbar")
    bar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
    _fill(bar, TOOLBAR, actions)
    return recent


def build_class_keys(window) -> None:
    """Keys 1-9 move the selected query images into that class (only while the query grid has focus)."""
    for number in range(1, 10):
        shortcut = QShortcut(QKeySequence(str(number)), window.queries.list)
        shortcut.setContext(Qt.ShortcutContext.WidgetShortcut)
        shortcut.activated.connect(guarded(window, f"Move to class {number}",
                                           lambda n=number: window.move_selected_to(n)))
