"""The window's Meta-train tab: a model trained there joins the project without replacing the
model in use (with a warning when it reads other pictures), and closing the window during a run
cancels and joins every worker."""

from __future__ import annotations

import pytest

from PySide6.QtWidgets import QMessageBox

from conftest import make_class_tree
from gui_helpers import MODEL, WAIT_MS, populate, wait_predictions


def test_a_model_trained_in_the_window_joins_the_project(make_window, qtbot, images, tmp_path):
    """What the training page emits when a run finishes (or is cancelled): the model is copied
    into the project but the model in use stays until the person clicks "Use this model"; then
    it is adapted with, saved inside the .metastudio file and reopened from it."""
    from metastudio.app.catalogue import resolve_model

    w = make_window()
    populate(qtbot, w, images)
    before = wait_predictions(qtbot, w)
    trained = tmp_path / "trained.safetensors"
    trained.write_bytes(resolve_model("protonet-omniglot").read_bytes())
    w.ensure_training_panel().model_trained.emit(str(trained), "my run, stopped at step 3")
    assert w.controller.project.model == MODEL, "a finished run must not replace the model in use"
    assert not w.engine.busy and w.last_result is before
    bar = w.notification
    assert bar.isVisible() and "unchanged" in bar.text.text() and "Note:" not in bar.text.text()
    assert bar.action_button.isVisible() and bar.action_button.text() == "Use this model"
    bar.action_button.click()
    assert w.controller.project.model == {"kind": "project", "name": "trained.safetensors"}
    assert not bar.isVisible()
    assert w.model_box.model_combo.currentText().startswith("trained")
    result = wait_predictions(qtbot, w)
    assert result["probabilities"] == before["probabilities"]  # same weights, same predictions
    path = tmp_path / "with-model.metastudio"
    assert w.documents.save_to(path)
    w.close()
    trained.unlink()
    w2 = make_window()
    assert w2.documents.open_project(path)
    assert w2.controller.project.model == {"kind": "project", "name": "trained.safetensors"}
    after = wait_predictions(qtbot, w2)
    assert w2.model_info["path"].startswith(str(w2.controller.project.workdir))
    for key, probs in before["probabilities"].items():
        assert after["probabilities"][key] == pytest.approx(probs, abs=1e-6)


def test_a_trained_model_for_other_pictures_is_offered_with_a_warning(make_window, qtbot, images, tmp_path):
    """A handwriting model (28 px, black and white) trained while photos are in use: it joins
    the project, the photos model stays, and the offer says the pictures differ."""
    from metastudio.app.catalogue import resolve_model
    from metastudio.app.project import Project

    project = Project()
    project.model = {"kind": "shipped", "name": "photos"}
    w = make_window(project)
    qtbot.waitUntil(lambda: w.model_info is not None, timeout=WAIT_MS)
    trained = tmp_path / "characters.safetensors"
    trained.write_bytes(resolve_model("protonet-omniglot").read_bytes())
    w.ensure_training_panel().model_trained.emit(str(trained), "characters")
    assert w.controller.project.model == {"kind": "shipped", "name": "photos"}
    text = w.notification.text.text()
    assert "black-and-white pictures of 28 pixels" in text and "colour pictures of 224 pixels" in text
    assert w.notification.action_button.text() == "Use this model"
    assert "characters.safetensors" in [p.name for p in (w.controller.project.workdir / "models").iterdir()]


def test_closing_the_window_during_meta_training_cancels_and_joins_every_worker(make_window, qtbot, tmp_path):
    from metastudio.app.runs import TrainingPlan

    root = make_class_tree(tmp_path / "train-data" / "train", classes=6, per_class=5, size=28).parent
    w = make_window(answer=QMessageBox.StandardButton.Yes)  # "stop meta-training and quit?" -> yes
    w.tabs.setCurrentIndex(1)
    panel = w.training.panel
    assert panel is not None, "the Meta-train tab builds its panel on first use"
    panel.output_dir = tmp_path / "models"
    panel.set_plan(TrainingPlan(algorithm="protonet", backbone="conv4", dataset="folder", root=str(root),
                                val_split=None, ways=3, shots=1, queries=2, episodes=100_000, image_size=28,
                                device="cpu", log_every=1))
    assert panel.start()
    qtbot.waitUntil(lambda: panel.progress.latest_step is not None, timeout=WAIT_MS)
    training_thread = panel.training_thread()
    assert training_thread is not None and training_thread.isRunning()
    assert w.close()
    assert training_thread.isFinished() and w.engine.thread.isFinished() and w.thumbnails.thread.isFinished()
    assert not panel.is_running()


def test_cancelling_meta_training_in_the_window_keeps_the_model_in_use(make_window, qtbot, images, tmp_path):
    """Meta-train tab, Start, then Cancel (the buttons a person clicks): the half-trained model
    joins the project, the model in use and its predictions stay, and the offer to use the new
    one is there."""
    from metastudio.app.runs import TrainingPlan

    w = make_window()
    populate(qtbot, w, images)
    before = wait_predictions(qtbot, w)
    root = make_class_tree(tmp_path / "train-data" / "train", classes=6, per_class=5, size=28).parent
    w.actions_by_name["train"].trigger()
    panel = w.training.panel
    panel.output_dir = tmp_path / "models"
    panel.set_plan(TrainingPlan(algorithm="protonet", backbone="conv4", dataset="folder", root=str(root),
                                val_split=None, ways=3, shots=1, queries=2, episodes=100_000, image_size=28,
                                device="cpu", log_every=1))
    panel.start_button.click()
    qtbot.waitUntil(lambda: panel.steps_received() >= 2, timeout=WAIT_MS)
    with qtbot.waitSignal(panel.model_trained, timeout=WAIT_MS):
        panel.cancel_button.click()
    qtbot.waitUntil(lambda: not panel.is_running(), timeout=WAIT_MS)
    assert w.controller.project.model == MODEL
    assert w.last_result is before and not w.engine.busy
    assert w.notification.action_button.text() == "Use this model" and "unchanged" in w.notification.text.text()
    assert len(list((w.controller.project.workdir / "models").glob("*.safetensors"))) == 1
