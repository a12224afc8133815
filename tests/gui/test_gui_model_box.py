"""The Model box for a trained model: settings only meta-training uses are left out, those the
trained weights depend on are shown read-only with the model's values, and only the rest become
hyperparameter overrides. A project edited by hand to change a fixed one is refused clearly."""

from __future__ import annotations

from gui_helpers import WAIT_MS, populate, wait_predictions


def _window_with(make_window, qtbot, model: str, hyperparameters: dict | None = None):
    from metastudio.app.project import Project

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
    qtbot.waitUntil(lambda: w.notification.isVisible() and "fixed by the trained model" in w.notification.text.text(),
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


# -- plain words by default -----------------------------------------------------------------------------

#: Words a person who has not read the docs should not meet in the Model box's default view.
JARGON = ("prototypical", "metric", "euclidean", "temperature", "feature transform", "efficientnet", " px",
          "backbone", "protonet", "conv4", "maml", "algorithm", "hyperparameter", "meta-trained", "omniglot")


def _visible_texts(box, window) -> list[str]:
    """What a person can read in the box: its labels, buttons and every entry of its pickers."""
    from PySide6.QtWidgets import QAbstractButton, QComboBox, QLabel

    texts = [label.text() for label in box.findChildren(QLabel) if label.isVisibleTo(window)]
    texts += [b.text() for b in box.findChildren(QAbstractButton) if b.isVisibleTo(window)]
    for combo in box.findChildren(QComboBox):
        if combo.isVisibleTo(window):
            texts += [combo.itemText(i) for i in range(combo.count())]
    return [t for t in texts if t]


def _starter_window(make_window, qtbot):
    from metastudio.gui.documents import starter_project

    w = make_window(starter_project())  # what `make run` opens: the photos model
    qtbot.waitUntil(lambda: w.catalog is not None and w.model_box.purpose_combo.count() > 0, timeout=WAIT_MS)
    return w


def test_a_new_window_says_what_the_model_is_for_in_plain_words(make_window, qtbot):
    from PySide6.QtCore import Qt

    w = _starter_window(make_window, qtbot)
    box = w.model_box
    assert box.purpose_combo.isVisibleTo(w) and box.purpose_combo.currentText() == "Photos"
    assert [box.purpose_combo.itemText(i) for i in range(box.purpose_combo.count())] == [
        "Photos", "Handwriting and symbols"]  # one per purpose, not the 23 shipped models
    assert "Works for most pictures" in box.purpose_note.text() and box.purpose_note.isVisibleTo(w)
    texts = _visible_texts(box, w)
    assert "Photos" in texts and "Open model file…" in texts and "Advanced" in texts
    shown = " | ".join(texts).lower()
    assert not [word for word in JARGON if word in shown], shown
    assert not box.advanced_toggle.isChecked()
    for hidden in (box.algorithm_combo, box.model_combo, box.about, box.hp_scroll):
        assert not hidden.isVisibleTo(w)

    qtbot.mouseClick(box.advanced_toggle, Qt.MouseButton.LeftButton)  # a person opens Advanced
    assert box.algorithm_combo.isVisibleTo(w) and box.model_combo.isVisibleTo(w)
    assert box.algorithm_combo.currentText().startswith("Prototypical Networks")
    assert box.model_combo.currentText() == "photos"
    assert box.model_combo.count() > 1  # every model of the algorithm is reachable here
    assert "efficientnet-lite0" in box.about.text() and box.hp_form.isVisibleTo(w)
    for name in box.hp_form.values():  # each setting explains itself in one line
        tip = box.hp_form.editor(name).toolTip()
        assert tip.strip() and "\n" not in tip, name
    qtbot.mouseClick(box.advanced_toggle, Qt.MouseButton.LeftButton)
    assert not box.algorithm_combo.isVisibleTo(w)


def test_choosing_handwriting_switches_the_project_to_the_handwriting_model(make_window, qtbot):
    w = _starter_window(make_window, qtbot)
    box = w.model_box
    with qtbot.waitSignal(box.choice_changed, timeout=WAIT_MS) as blocker:
        box.purpose_combo.setCurrentIndex(box.purpose_combo.findText("Handwriting and symbols"))
    handwriting = {"kind": "shipped", "name": "protonet-omniglot"}
    assert blocker.args == [handwriting, {}]
    assert w.controller.project.model == handwriting
    assert box.model_combo.currentText() == "protonet-omniglot" and box.algorithm_combo.currentData() == "protonet"
    assert "handwritten" in box.purpose_note.text()
    assert not box.advanced_toggle.isChecked()  # a preset: nothing more to show
    w.controller.undo_stack.undo()
    assert w.controller.project.model == {"kind": "shipped", "name": "photos"}
    assert box.purpose_combo.currentText() == "Photos"


def test_a_research_variant_in_use_is_named_plainly_and_opens_advanced(make_window, qtbot):
    w = _window_with(make_window, qtbot, "maml-omniglot")
    box = w.model_box
    qtbot.waitUntil(lambda: box.purpose_combo.count() > 0, timeout=WAIT_MS)
    assert box.purpose_combo.currentText() == "Handwriting: maml-omniglot"
    note = box.purpose_note.text()
    assert "research variant" in note and "handwritten characters" in note and "Advanced" in note
    assert box.advanced_toggle.isChecked() and box.model_combo.isVisibleTo(w)
    assert box.model_combo.currentText() == "maml-omniglot"
    # choosing a preset from there works, and the variant stays listed to come back to
    with qtbot.waitSignal(box.choice_changed, timeout=WAIT_MS) as blocker:
        box.purpose_combo.setCurrentIndex(box.purpose_combo.findText("Photos"))
    assert blocker.args == [{"kind": "shipped", "name": "photos"}, {}]
    assert box.purpose_combo.findText("Handwriting: maml-omniglot") >= 0


def test_a_model_of_the_project_shows_its_name_and_what_it_was_trained_on(make_window, qtbot, tmp_path):
    from metastudio.app.catalogue import resolve_model

    w = _starter_window(make_window, qtbot)
    mine = tmp_path / "my-letters.safetensors"
    mine.write_bytes(resolve_model("protonet-omniglot").read_bytes())
    assert w.use_model_file(str(mine))
    box = w.model_box
    qtbot.waitUntil(lambda: box.purpose_combo.currentText() == "my-letters", timeout=WAIT_MS)
    assert box.purpose_note.text() == "A model of this project, trained on handwritten characters."
    assert [box.purpose_combo.itemText(i) for i in range(box.purpose_combo.count())] == [
        "Photos", "Handwriting and symbols", "my-letters"]
    assert not box.advanced_toggle.isChecked()
