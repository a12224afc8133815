"""The Model box for a trained model: settings only meta-training uses are left out, those the
trained weights depend on are shown read-only with the model's values, and only the rest become
hyperparameter overrides. A project edited by hand to change a fixed one is refused clearly."""

from __future__ import annotations

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from test_gui_app import WAIT_MS, images, make_window, populate, wait_predictions  # noqa: E402,F401


def _window_with(make_window, qtbot, model: str, hyperparameters: dict | None = None):
    from metastudio.core.project import Project

    project = Project()
    project.model = {"kind": "shipped", "name": model}
    project.hyperparameters = dict(hyperparameters or {})
    w = make_window(project)
    qtbot.waitUntil(lambda: w.catalog is not None and w.model_box.hp_form is not None, timeout=WAIT_MS)
    return w


def test_siamese_model_shows_projection_read_only_and_no_training_settings(make_window, qtbot):
    from metastudio.gui.modelbox import FIXED_REASON

    w = _window_with(make_window, qtbot, "siamese-omniglot")
    box = w.model_box
    assert box.model_combo.currentText() == "siamese-omniglot"
    form = box.hp_form
    assert set(form.values()) == {"projection", "feature_transform"}  # no pairs, distort, distort_prob, lr...
    editor = form.editor("projection")
    assert not editor.isEnabled() and editor.value() == 0  # the model's own value
    assert editor.toolTip().startswith(FIXED_REASON)
    assert form.values()["feature_transform"] == "none"  # a model saved before it existed: the default
    assert form.read_only() == {"projection": FIXED_REASON, "feature_transform": FIXED_REASON}
    assert box.form_note.isVisible()
    note = box.form_note.text()
    assert "fixed when this model was trained" in note and "pairs, distort, distort_prob" in note


def test_changing_an_adaptation_setting_overrides_only_it(make_window, qtbot, images):
    w = _window_with(make_window, qtbot, "protonet-omniglot")
    form = w.model_box.hp_form
    assert set(form.values()) == {"distance", "temperature", "feature_transform"}
    assert not form.editor("feature_transform").isEnabled()
    assert form.editor("distance").isEnabled() and form.editor("temperature").isEnabled()
    populate(qtbot, w, images)
    wait_predictions(qtbot, w)
    combo = form.editor("distance")
    with qtbot.waitSignal(w.model_box.choice_changed, timeout=WAIT_MS) as blocker:
        combo.setCurrentIndex(combo.findData("cosine"))
    assert blocker.args == [{"kind": "shipped", "name": "protonet-omniglot"}, {"distance": "cosine"}]
    assert w.controller.project.hyperparameters == {"distance": "cosine"}
    qtbot.waitUntil(lambda: w.model_info is not None and w.model_info["hyperparameters"]["distance"] == "cosine",
                    timeout=WAIT_MS)
    result = wait_predictions(qtbot, w)
    assert result["status"] == "ok"


def test_a_hand_edited_override_of_a_fixed_setting_is_refused_clearly(make_window, qtbot):
    w = _window_with(make_window, qtbot, "siamese-omniglot", {"projection": 512})
    form = w.model_box.hp_form
    assert form.values() == {"projection": 0, "feature_transform": "none"}  # the model's values, not the project's
    qtbot.waitUntil(lambda: w.notification.isVisible() and "Could not adapt" in w.notification.text.text(),
                    timeout=WAIT_MS)
    text = w.notification.text.text()
    assert "projection is fixed by the trained model" in text and "projection=512" in text


def test_many_settings_scroll_instead_of_overlapping_in_a_laptop_sized_window(make_window, qtbot):
    """MANN shows a dozen settings: in a 1280 x 800 window they scroll; no row is squeezed below
    the height it needs (they used to overlap into an unreadable strip)."""
    w = _window_with(make_window, qtbot, "mann-omniglot")
    w.resize(1280, 800)
    qtbot.waitUntil(lambda: w.height() <= 800, timeout=WAIT_MS)
    box = w.model_box
    qtbot.waitUntil(lambda: box.hp_scroll.verticalScrollBar().maximum() > 0, timeout=WAIT_MS)
    form = box.hp_form
    for name in form.values():
        editor = form.editor(name)
        assert editor.height() >= editor.minimumSizeHint().height(), name
    assert box.hp_scroll.height() < form.height()  # part of it is out of view, reachable by scrolling
