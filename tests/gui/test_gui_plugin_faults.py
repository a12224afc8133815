"""The app survives faulty plugins (issue 22).

The six faults of tests/faulty_plugins.py are installed as third-party packages before the
window loads its plugins. The two that fail as they load are listed in Help > Plugins with the
plugin's name and package; choosing a model of one that fails at run time (``adapt`` raises, NaN
probabilities, probabilities of the wrong shape) shows a notification naming the plugin and its
package; one whose ``adapt`` hangs is stopped with the Cancel button. After each, the built-in
model chosen in the Model box still adapts and predicts, and the project is as it was.
"""

from __future__ import annotations

import sys
import threading

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDialog

import faulty_plugins as fp
from gui_helpers import WAIT_MS, populate, wait_predictions
from metastudio.engine.guard import abandoned_calls
from metastudio.plugins import reset_host

HANDWRITING = "Handwriting and symbols"  # the Model box's entry of the built-in test model


@pytest.fixture
def faults(tmp_path, monkeypatch, one_thread):
    """Every fault installed on sys.path for this test and a plugin host that loads them (the
    window's worker loads it); afterwards a hanging adapt is released and nothing is left behind."""
    site = tmp_path / "site"
    fp.install(site, monkeypatch)
    reset_host()
    yield site
    fp.release()
    for call in abandoned_calls():  # the released calls end: none outlives the test
        call.join(WAIT_MS / 1000)
    reset_host()
    for name in [m for m in sys.modules if m.startswith("mstest_fault_")]:
        del sys.modules[name]


def model_of(site, kind, tmp_path):
    return fp.make_model(site, kind, tmp_path / f"{kind}.safetensors", tmp_path / "fault-files")


def predicting_window(make_window, qtbot, images):
    """A window with three classes and six images to classify, predicted by the built-in model."""
    w = make_window()
    qtbot.waitUntil(lambda: w.catalog is not None, timeout=WAIT_MS)
    populate(qtbot, w, images)
    assert wait_predictions(qtbot, w)["status"] == "ok"
    return w


def project_state(w):
    project = w.controller.project
    return [(c.name, [i.id for i in c.images]) for c in project.classes], [q.id for q in project.queries]


def the_builtin_model_still_works(qtbot, w, before):
    """Choose the built-in model in the Model box as a person would: it adapts and predicts
    every image, and the classes and images are those there were."""
    box = w.model_box
    box.purpose_combo.setCurrentIndex(box.purpose_combo.findText(HANDWRITING))
    result = wait_predictions(qtbot, w)
    assert result["status"] == "ok" and len(result["probabilities"]) == 6
    assert w.model_info["algorithm"] == "protonet"
    assert project_state(w) == before


def test_plugins_that_fail_to_load_are_listed_with_name_and_package(faults, make_window, qtbot, images):
    w = make_window()
    qtbot.waitUntil(lambda: w.catalog is not None, timeout=WAIT_MS)
    said = w.notification.text.text()
    for kind in fp.LOAD_FAULTS:
        assert fp.origin_words(kind).removeprefix("plugin ") in said, said
    w.actions_by_name["plugins"].trigger()
    dialog = next(d for d in w.findChildren(QDialog) if d.isVisible() and d.windowTitle() == "Plugins")
    tree = dialog.tree
    rows = {tree.topLevelItem(i).text(0): tree.topLevelItem(i) for i in range(tree.topLevelItemCount())}
    for kind in fp.LOAD_FAULTS:
        item = rows[fp.entry_point(kind)]
        assert fp.distribution(kind) in item.text(1)
        assert item.text(2).startswith("failed: ") and fp.RAISED[kind] in item.text(2)
        tree.setCurrentItem(item)
        assert "Traceback" in dialog.details.toPlainText()  # what a bug report to the plugin needs
    # the faults that load are algorithms like any other, beside the built-in ones
    assert rows["Faulty (raising_adapt)"].text(2) == "loaded" and rows["Prototypical Networks"].text(2) == "loaded"
    dialog.close()
    # and the app works with the other algorithms
    populate(qtbot, w, images)
    result = wait_predictions(qtbot, w)
    assert result["status"] == "ok", (result, [len(c.images) for c in w.controller.project.classes])


#: What each fault's notification says besides the plugin's name and package.
RUN_FAULT_WORDS = {
    "raising_adapt": fp.RAISED["raising_adapt"],
    "nan_output": "NaN",
    "wrong_shape": "shape",
}


@pytest.mark.parametrize("kind", sorted(RUN_FAULT_WORDS))
def test_a_plugin_that_fails_at_run_time_is_named_and_the_app_goes_on(kind, faults, make_window, qtbot, images,
                                                                        tmp_path):
    w = predicting_window(make_window, qtbot, images)
    before = project_state(w)
    assert w.use_model_file(str(model_of(faults, kind, tmp_path)))
    qtbot.waitUntil(lambda: not w.engine.busy and not w._adapt_timer.isActive()
                    and fp.origin_words(kind) in w.notification.text.text(), timeout=WAIT_MS)
    said = w.notification.text.text()
    assert said.startswith("Could not learn the classes: ") and said.endswith(fp.origin_words(kind)), said
    assert RUN_FAULT_WORDS[kind] in said
    assert "Traceback" not in said and "\n" not in said
    assert "Traceback" in w.notification.details  # behind Details…
    assert w.model_info["algorithm"] == fp.algorithm_name(kind)
    assert w.last_result is None and project_state(w) == before
    the_builtin_model_still_works(qtbot, w, before)


def test_a_hanging_plugin_is_cancelled_with_the_button_and_the_app_goes_on(faults, make_window, qtbot, images,
                                                                             tmp_path):
    w = predicting_window(make_window, qtbot, images)
    before = project_state(w)
    assert not w.cancel_button.isVisible()
    assert w.use_model_file(str(model_of(faults, "hanging_adapt", tmp_path)))
    qtbot.waitUntil(w.cancel_button.isVisible, timeout=WAIT_MS)
    assert w.engine.busy and w.busy.isVisible()
    qtbot.mouseClick(w.cancel_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not w.engine.busy and "Stopped waiting" in w.notification.text.text(), timeout=WAIT_MS)
    said = w.notification.text.text()
    assert "Faulty (hanging_adapt)" in said and fp.origin_words("hanging_adapt") in said, said
    assert "another model" in said and "unchanged" in said
    assert not w.cancel_button.isVisible() and not w.busy.isVisible()
    assert w.last_result is None and project_state(w) == before
    # the plugin still hangs in its abandoned thread; the worker is free all the same
    assert any(t.name.startswith("plugin call: adapting") for t in abandoned_calls())
    the_builtin_model_still_works(qtbot, w, before)
    assert abandoned_calls(), "the hung call was expected to still be running"


def test_closing_the_window_does_not_wait_for_a_hanging_plugin(faults, make_window, qtbot, images, tmp_path):
    w = predicting_window(make_window, qtbot, images)
    assert w.use_model_file(str(model_of(faults, "hanging_adapt", tmp_path)))
    qtbot.waitUntil(lambda: w.engine.busy and bool(_adapting_calls()), timeout=WAIT_MS)
    w.controller.mark_saved()
    w.shutdown()  # waits for the worker thread up to 30 s; the plugin hangs for 600
    assert w.engine.thread.isFinished()


def _adapting_calls():
    """The plugin calls adapting now (each runs in its own thread, see metastudio.engine.guard)."""
    return [t for t in threading.enumerate() if t.name.startswith("plugin call: adapting")]
