"""Every menu and toolbar action, triggered through its QAction as a person's click would (found
by its id in the window's action table), with the file dialogs and message boxes patched to
answer like a person. pytest-qt fails a test on
any exception raised in a Qt slot (checked below with pytester), so a slot that breaks when
called from its menu fails here even if calling it directly works."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from PySide6.QtGui import QAction, QGuiApplication, QImage
from PySide6.QtWidgets import QColorDialog, QDialog, QFileDialog, QMessageBox

from gui_helpers import WAIT_MS, populate, wait_predictions
from metastudio.gui.actions import ACTIONS
from metastudio.gui.documents import starter_project


class Person:
    """Answers the dialogs: each ``answer(kind, value)`` is used once, in order; a dialog
    that was not expected fails the test."""

    def __init__(self, monkeypatch):
        self.answers: list[tuple[str, object]] = []
        self.asked: list[str] = []

        def respond(kind):
            def dialog(*args, **kwargs):
                self.asked.append(kind)
                assert self.answers and self.answers[0][0] == kind, f"unexpected {kind} dialog: {args[1:3]}"
                return self.answers.pop(0)[1]
            return staticmethod(dialog)

        for name in ("getOpenFileName", "getOpenFileNames", "getSaveFileName", "getExistingDirectory"):
            monkeypatch.setattr(QFileDialog, name, respond(name))
        for name in ("question", "information", "warning", "critical", "about"):
            monkeypatch.setattr(QMessageBox, name, respond(name))
        monkeypatch.setattr(QColorDialog, "getColor", respond("getColor"))

    def answer(self, kind: str, value) -> None:
        self.answers.append((kind, value))

    def done(self) -> None:
        assert not self.answers, f"dialogs that never opened: {self.answers}"


def all_actions(window) -> dict[str, QAction]:
    """Every action a person can reach in the menus (submenus included) and the toolbar."""
    from PySide6.QtWidgets import QToolBar

    found: dict[str, QAction] = {}

    def walk(menu):
        for action in menu.actions():
            if action.menu() is not None:
                walk(action.menu())
            elif not action.isSeparator():
                found.setdefault(action.text().replace("&", ""), action)

    for top in window.menuBar().actions():
        walk(top.menu())
    for bar in window.findChildren(QToolBar):
        for action in bar.actions():
            if not action.isSeparator() and action.text():
                found.setdefault(action.text().replace("&", ""), action)
    return found


def test_every_menu_and_toolbar_action_does_what_its_name_says(make_window, qtbot, images, tmp_path, monkeypatch):
    person = Person(monkeypatch)
    w = make_window(answer=QMessageBox.StandardButton.Discard)
    assert sorted(w.actions_by_name) == sorted(spec.id for spec in ACTIONS)
    # every action of the table is in a menu or the toolbar, and nothing else is there
    reachable = list(all_actions(w).values())
    placed = {key for key, action in w.actions_by_name.items() if any(action is r for r in reachable)}
    assert placed == set(w.actions_by_name), f"in no menu: {sorted(set(w.actions_by_name) - placed)}"
    assert len(reachable) == len(placed), "a menu holds an action that is not in the table"
    tested: set[str] = set()

    def trigger(action_id: str) -> None:
        tested.add(action_id)
        w.actions_by_name[action_id].trigger()

    project = w.controller.project
    # Import class folders: one class per sub-folder, one undo step
    person.answer("getExistingDirectory", str(images / "imgs"))
    trigger("import")
    assert [c.name for c in project.classes] == ["class00", "class01", "class02"]
    # Add images to classify, with a text file among them: reported by name, the rest added
    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture")
    queries = sorted((images / "query").glob("*.png"))
    person.answer("getOpenFileNames", ([str(p) for p in queries] + [str(notes)], "Images"))
    trigger("add_queries")
    assert len(project.queries) == len(queries)
    assert w.notification.isVisible() and "notes.txt" in w.notification.text.text()
    result = wait_predictions(qtbot, w)
    assert result["status"] == "ok"

    # Add class, Undo, Redo
    trigger("add_class")
    assert len(project.classes) == 4
    trigger("undo")
    assert len(project.classes) == 3
    trigger("redo")
    assert len(project.classes) == 4
    trigger("undo")

    # Paste image: a picture on the clipboard goes into the highlighted class
    image = QImage(20, 20, QImage.Format.Format_RGB32)
    image.fill(0x336699)
    QGuiApplication.clipboard().setImage(image)
    w.classes.current = project.classes[0].id
    before = len(project.classes[0].images)
    trigger("paste")
    assert len(project.classes[0].images) == before + 1
    trigger("undo")

    # Learn the classes again: a fresh adaptation of the same classes gives the same predictions
    wait_predictions(qtbot, w)
    w.last_result = None
    trigger("adapt")
    assert wait_predictions(qtbot, w)["probabilities"] == result["probabilities"]

    # Classify with the camera…: the live window opens (without a camera it says so) and closes
    trigger("live_camera")
    assert w.live_dialog is not None and w.live_dialog.isVisible()
    w.live_dialog.close()
    assert w.live_dialog is None

    # Export predictions as CSV: the dialog opens, the file holds one row per image
    out = tmp_path / "out.csv"
    person.answer("getSaveFileName", (str(out), "CSV files (*.csv)"))
    trigger("export_csv")
    rows = list(csv.reader(out.open(encoding="utf-8")))
    assert len(rows) == 1 + len(queries) and rows[0][:2] == ["file", "predicted"]

    # Export model: the dialog opens and the classifier is written where the person said
    target = tmp_path / "export" / "classifier.onnx"
    target.parent.mkdir()
    person.answer("getSaveFileName", (str(target), "ONNX (*.onnx)"))
    with qtbot.waitSignal(w.engine.exported, timeout=WAIT_MS) as blocker:
        trigger("export_model")
    assert blocker.args[1] == "" and target.is_file() and (target.parent / "labels.json").is_file()
    assert not (Path.cwd() / "False").exists()

    # Save (asks where, as the project has no file yet), Save As, New, Open, Open Recent
    saved = tmp_path / "mine.metastudio"
    person.answer("getSaveFileName", (str(saved), ""))
    trigger("save")
    assert saved.is_file() and not w.controller.modified
    copy = tmp_path / "copy.metastudio"
    person.answer("getSaveFileName", (str(copy), ""))
    trigger("save_as")
    assert copy.is_file() and w.controller.project.path == copy
    trigger("new")
    assert [c.name for c in w.controller.project.classes] == ["Class 1", "Class 2"]
    person.answer("getOpenFileName", (str(saved), ""))
    trigger("open")
    assert w.controller.project.path == saved and len(w.controller.project.queries) == len(queries)
    trigger("new")
    w.recent_menu.aboutToShow.emit()  # what opening the submenu does
    recent = {a.text(): a for a in w.recent_menu.actions()}
    assert set(recent) >= {"mine.metastudio", "copy.metastudio"}
    recent["mine.metastudio"].trigger()
    assert w.controller.project.path == saved

    # Meta-train… and Classify switch the page
    trigger("train")
    assert w.tabs.currentIndex() == 1 and w.training.panel is not None
    trigger("classify_tab")
    assert w.tabs.currentIndex() == 0

    # Plugins… opens the list; About says what MetaStudio is
    trigger("plugins")
    dialogs = [d for d in w.findChildren(QDialog) if d.isVisible() and d.windowTitle() == "Plugins"]
    assert len(dialogs) == 1 and dialogs[0].tree.topLevelItemCount() >= 9
    dialogs[0].close()
    person.answer("about", None)
    trigger("about")

    # Quit closes the window
    trigger("quit")
    assert not w.isVisible()
    person.done()
    untested = set(w.actions_by_name) - tested
    assert not untested, f"actions no test triggers: {sorted(untested)}"


def test_an_exception_in_a_qt_slot_fails_the_test(pytester):
    """The guard the test above relies on: pytest-qt turns an exception raised in a slot into a
    failure, and the project's pytest settings do not turn that off."""
    pytester.makepyfile(test_inner="""
        from PySide6.QtGui import QAction
        from PySide6.QtWidgets import QWidget

        def test_slot(qtbot):
            widget = QWidget()
            qtbot.addWidget(widget)
            action = QAction("Export", widget)
            action.triggered.connect(lambda checked: 1 / 0)
            action.trigger()
    """)
    result = pytester.runpytest_subprocess()
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*Exceptions caught in Qt event loop*", "*1 failed*"])
    import tomllib

    settings = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    assert "qt_no_exception_capture" not in settings["tool"]["pytest"]["ini_options"]


def test_import_replaces_the_empty_starter_classes_so_number_keys_match(make_window, qtbot, images, monkeypatch):
    person = Person(monkeypatch)
    w = make_window(starter_project())
    person.answer("getExistingDirectory", str(images / "imgs"))
    w.actions_by_name["import"].trigger()
    project = w.controller.project
    assert [c.name for c in project.classes] == ["class00", "class01", "class02"]
    assert [w.classes.cards[c.id].number.text() for c in project.classes] == ["1", "2", "3"]
    w.controller.undo_stack.undo()  # one step brings the starters back
    assert [c.name for c in project.classes] == ["Class 1", "Class 2"]
    # a starter class someone already filled stays
    w.controller.add_files(sorted((images / "query").glob("*.png"))[:1], project.classes[0].id)
    person.answer("getExistingDirectory", str(images / "imgs"))
    w.actions_by_name["import"].trigger()
    assert [c.name for c in project.classes] == ["Class 1", "class00", "class01", "class02"]
    person.done()


def test_every_button_of_a_class_card_and_the_query_grid_works(make_window, qtbot, images, monkeypatch):
    from PySide6.QtGui import QColor

    person = Person(monkeypatch)
    w = make_window()
    w.classes.add_button.click()
    w.classes.add_button.click()
    project = w.controller.project
    first, second = project.classes
    card = w.classes.cards[first.id]
    files = sorted((images / "imgs" / "class00").glob("*.png"))
    person.answer("getOpenFileNames", ([str(p) for p in files], "Images"))
    card.add_button.click()
    assert len(first.images) == len(files)
    person.answer("getColor", QColor("#123456"))
    card.colour_button.click()
    assert first.colour == "#123456"
    card.name_edit.setText(second.name)  # a name another class has: refused, with the reason
    person.answer("information", None)
    card.name_edit.editingFinished.emit()
    assert first.name == "Class 1" and card.name_edit.text() == "Class 1"
    person.answer("getOpenFileNames", ([str(p) for p in sorted((images / "query").glob("*.png"))], "Images"))
    w.queries.add_button.click()
    assert len(project.queries) == 6
    w.classes.cards[second.id].delete_button.click()
    assert [c.name for c in project.classes] == ["Class 1"]
    person.done()


@pytest.fixture
def fake_camera(monkeypatch):
    """A camera that shows the pictures the test feeds it (no device needed)."""
    from metastudio.gui import camera

    monkeypatch.setattr(camera, "camera_status", lambda: (True, ""))
    monkeypatch.setattr(camera, "CameraSource", lambda *args, parent=None, **kwargs: camera.FrameSource(parent))


def test_the_camera_button_of_a_class_adds_each_photo_taken(make_window, qtbot, images, fake_camera):
    w = make_window()
    w.classes.add_button.click()
    w.classes.add_button.click()
    entry = w.controller.project.classes[0]
    w.classes.cards[entry.id].camera_button.click()
    dialog = w.classes.cards[entry.id].camera_dialog
    assert dialog is not None and dialog.isVisible() and not dialog.problem
    picture = QImage(str(sorted((images / "imgs" / "class00").glob("*.png"))[0]))
    dialog.source.feed(picture)
    qtbot.waitUntil(dialog.take_button.isEnabled, timeout=5000)
    dialog.take_button.click()
    assert len(entry.images) == 1 and entry.images[0].source == "camera"
    assert w.controller.undo_stack.undoText() == f"Add a camera photo to '{entry.name}'"
    dialog.done_button.click()
    assert not dialog.isVisible() and not dialog.source.is_active()


def test_without_a_camera_the_camera_button_says_so(make_window, qtbot, monkeypatch):
    from metastudio.gui import camera

    sentence = "No camera found. Connect one and try again."
    monkeypatch.setattr(camera, "camera_status", lambda: (False, sentence))
    w = make_window()
    w.classes.add_button.click()
    card = next(iter(w.classes.cards.values()))
    card.camera_button.click()
    dialog = card.camera_dialog
    assert dialog.problem == sentence and not dialog.take_button.isEnabled()
    assert sentence in dialog.message.text() and card.camera_button.toolTip() == sentence
    dialog.close()
    # the live camera says the same
    w.actions_by_name["live_camera"].trigger()
    assert w.live_dialog is not None and w.live_dialog.problem == sentence
    w.live_dialog.close()


def test_live_camera_shows_the_prediction_of_what_the_camera_sees(make_window, qtbot, images, fake_camera):
    w = make_window()
    populate(qtbot, w, images)
    result = wait_predictions(qtbot, w)
    w.actions_by_name["live_camera"].trigger()
    dialog = w.live_dialog
    assert dialog is not None and dialog.isVisible()
    item = w.controller.project.queries[0]
    probs = result["probabilities"][item.id]
    expected = result["class_names"][max(range(len(probs)), key=probs.__getitem__)]
    picture = QImage(str(w.controller.project.image_path(item)))
    with qtbot.waitSignal(w.engine.live_result, timeout=WAIT_MS):
        # the window shows (and sends) the camera's picture mirrored, as a mirror would
        dialog.source.feed(picture.mirrored(True, False))
    qtbot.waitUntil(lambda: not dialog.waiting_for_prediction(), timeout=WAIT_MS)
    assert expected in dialog.bars.caption.text() and len(dialog.bars.values) == len(result["class_names"])
    w.queries.camera_button.click()  # the button brings the same window forward
    assert w.live_dialog is dialog
    dialog.close_button.click()
    assert w.live_dialog is None and not dialog.source.is_active()
