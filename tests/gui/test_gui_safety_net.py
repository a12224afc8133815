"""One safety net per entry point of the app (issue 22).

A menu or toolbar command that raises shows one line in the window's notification, worded by
metastudio.errors.for_person ("…, in plugin X (package Y Z)" when plugin code raised), with the
traceback behind Details…; the exception never reaches sys.excepthook (pytest-qt would fail the
test if it did), and the app goes on. While the app runs, anything else nothing caught (a slot
Qt called, a Python thread) is shown the same way and printed to stderr.
"""

from __future__ import annotations

import sys
import threading
import types
from argparse import Namespace

import pytest
from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QShortcut
from PySide6.QtWidgets import QApplication, QMessageBox

from gui_helpers import WAIT_MS, wait_predictions
from metastudio import errors
from metastudio.errors import PluginOrigin, ProjectError, for_person
from metastudio.gui.safety import ExceptionHooks, install_exception_hooks

ORIGIN = PluginOrigin("gui-helper", "metastudio-gui-helper", "2.3")


def raiser(error: BaseException):
    """A function that raises ``error``, and the list that holds it once raised."""
    raised: list[BaseException] = []

    def fail(*_: object) -> None:
        raised.append(error)
        raise error

    return fail, raised


@pytest.fixture
def plugin_code(monkeypatch):
    """A function whose code is a plugin's (its module is registered as the plugin ``ORIGIN``)."""
    module = types.ModuleType("mstest_gui_helper_plugin")
    exec("def hook():\n    raise RuntimeError('the helper plugin ran out of licences')\n", module.__dict__)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(errors._PLUGIN_MODULES, module.__name__, ORIGIN)
    return module.hook


def test_a_command_that_raises_becomes_one_line_with_details_and_the_app_goes_on(make_window, qtbot, monkeypatch):
    w = make_window()
    qtbot.waitUntil(lambda: w.catalog is not None, timeout=WAIT_MS)
    fail, raised = raiser(RuntimeError("the about box fell over\nwhile opening"))
    monkeypatch.setattr(w, "about", fail)
    w.actions_by_name["about"].trigger()  # as the Help menu does
    assert raised, "the action did not call the window's method"
    said = w.notification.text.text()
    assert w.notification.isVisible()
    assert said == f"'About MetaStudio' did not work: {for_person(raised[0]).message}"
    assert said.startswith("'About MetaStudio' did not work: RuntimeError: the about box fell over; while opening.")
    assert "fault in MetaStudio itself" in said and "\n" not in said
    details = w.notification.details
    assert "Traceback" in details and "the about box fell over" in details and "in fail" in details
    # Details… shows the traceback
    qtbot.mouseClick(w.notification.details_button, Qt.MouseButton.LeftButton)
    box = next(b for b in w.notification.findChildren(QMessageBox) if b.isVisible())
    assert box.detailedText() == details
    box.close()
    # the app goes on: another command works, and adapting too
    classes = len(w.controller.project.classes)
    w.actions_by_name["add_class"].trigger()
    assert len(w.controller.project.classes) == classes + 1
    assert wait_predictions(qtbot, w)["status"] == "hint"


def test_a_command_that_runs_plugin_code_names_the_plugin(make_window, qtbot, monkeypatch, plugin_code):
    w = make_window()
    monkeypatch.setattr(w, "show_plugins", plugin_code)
    w.actions_by_name["plugins"].trigger()
    assert w.notification.text.text() == ("'Plugins' did not work: RuntimeError: the helper plugin ran out of "
                                          "licences, in plugin gui-helper (package metastudio-gui-helper 2.3)")
    assert "mstest_gui_helper_plugin" not in w.notification.text.text()
    assert "Traceback" in w.notification.details


def test_a_metastudio_error_of_a_command_is_shown_as_written(make_window, qtbot, monkeypatch, capsys):
    w = make_window()
    fail, _ = raiser(ProjectError("the project file 'trip.metastudio' is read-only: save it under another name"))
    monkeypatch.setattr(w.documents, "save", fail)
    w.actions_by_name["save"].trigger()
    assert w.notification.text.text() == ("'Save' did not work: the project file 'trip.metastudio' is read-only: "
                                          "save it under another name")
    assert "Traceback" not in capsys.readouterr().err  # a message for a person is not a bug report
    # the key for a class is guarded too
    fail, raised = raiser(RuntimeError("moving broke"))
    monkeypatch.setattr(w, "move_selected_to", fail)
    key = next(k for k in w.queries.list.findChildren(QShortcut) if k.key().toString() == "2")
    key.activated.emit()  # what pressing 2 in the grid does (the grid is hidden while it is empty)
    assert raised and w.notification.text.text().startswith("'Move to class 2' did not work: RuntimeError: moving broke")
    assert "Traceback" in capsys.readouterr().err  # a fault: also on stderr, for a bug report


def test_hooks_show_what_slots_and_threads_raise_and_put_the_old_hooks_back(make_window, qtbot, capsys, plugin_code):
    w = make_window()
    before = (sys.excepthook, threading.excepthook)
    hooks = install_exception_hooks(w)
    try:
        assert sys.excepthook == hooks._sys_hook and threading.excepthook == hooks._thread_hook
        # a slot Qt calls, raising in plugin code
        QTimer.singleShot(0, plugin_code)
        qtbot.waitUntil(lambda: "ran out of licences" in w.notification.text.text(), timeout=WAIT_MS)
        assert w.notification.text.text() == ("RuntimeError: the helper plugin ran out of licences, in plugin "
                                              "gui-helper (package metastudio-gui-helper 2.3)")
        assert "Traceback" in w.notification.details
        assert "the helper plugin ran out of licences" in capsys.readouterr().err
        # a Python thread: shown in the window's thread
        fail, _ = raiser(ValueError("a thread saw a bad value"))
        thread = threading.Thread(target=fail, name="helper-thread")
        thread.start()
        thread.join()
        qtbot.waitUntil(lambda: w.notification.text.text() == "a thread saw a bad value", timeout=WAIT_MS)
        err = capsys.readouterr().err
        assert "Exception in thread helper-thread" in err and "Traceback" in err
    finally:
        hooks.uninstall()
    assert (sys.excepthook, threading.excepthook) == before


def test_the_running_app_installs_the_hooks_and_removes_them_on_exit(make_window, qtbot, monkeypatch):
    """``metastudio`` (gui.app.run) with the window and the event loop stood in for."""
    from metastudio.gui import app as gui_app

    seen = {}

    def window(project, **_):
        seen["window"] = make_window(project)
        return seen["window"]

    def event_loop(_app) -> int:
        seen["hook"] = sys.excepthook
        fail, _ = raiser(RuntimeError("a slot broke"))
        QTimer.singleShot(0, fail)
        notification = seen["window"].notification
        qtbot.waitUntil(lambda: "a slot broke" in notification.text.text(), timeout=WAIT_MS)
        return 0

    monkeypatch.setattr("metastudio.gui.mainwindow.MainWindow", window)
    monkeypatch.setattr(QApplication, "exec", event_loop)
    app = QApplication.instance()
    names = app.applicationName(), app.organizationName(), app.applicationDisplayName()
    before = sys.excepthook
    args = Namespace(support=None, query=None, model=None, device="cpu", screenshot=None, project=None, timing=False)
    try:
        assert gui_app.run(args) == 0
    finally:
        app.setApplicationName(names[0])
        app.setOrganizationName(names[1])
        app.setApplicationDisplayName(names[2])
    assert isinstance(getattr(seen["hook"], "__self__", None), ExceptionHooks)
    assert sys.excepthook is before
