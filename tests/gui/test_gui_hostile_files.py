"""Hostile project and model files opened the way a person opens them: File > Open… and the
Model box's "Open a model file…" button, with the file dialogs answering. Each is refused with a
notification naming the file (or opens without its damaged part, reported), no exception escapes
a slot, and the window keeps working: the pictures the person had are still there, and so is
the model they were using."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFileDialog

from corpus import make_model_corpus, make_project_corpus
from gui_helpers import WAIT_MS, populate, wait_predictions
from test_robustness import make_adapted_model, make_good_project

#: Projects whose damage is in one part: they open, and that part is reported and left out.
OPEN_WITH_PROBLEMS = {"image-missing", "image-damaged", "model-bomb", "zip-slip-member"}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    (root / "model").mkdir()
    (root / "project").mkdir()
    model = make_adapted_model(root / "model")
    good = make_good_project(root / "project", model)
    return make_project_corpus(root / "projects", good, bomb_mib=64), make_model_corpus(root / "models", model)


def answer_open_dialog(monkeypatch, path) -> None:
    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(lambda *a, **k: (str(path), "")))


def test_opening_each_hostile_project_tells_the_person_and_keeps_the_window_working(
        hostile, make_window, qtbot, monkeypatch):
    projects, _ = hostile
    window = make_window()
    for path in projects:
        window.notification.hide()
        before = window.controller.project
        answer_open_dialog(monkeypatch, path)
        window.actions_by_name["open"].trigger()
        assert window.notification.isVisible(), path.name
        text = window.notification.text.text()
        if path.stem in OPEN_WITH_PROBLEMS:
            assert window.controller.project is not before, path.name
        else:
            assert window.controller.project is before, path.name  # the open project is kept
            assert path.name in text, (path.name, text)
        assert "Traceback" not in text
        window.controller.mark_saved()  # the next open does not ask to save the one just opened


def test_each_hostile_model_file_is_refused_and_the_pictures_stay(hostile, make_window, qtbot, monkeypatch, images):
    _, models = hostile
    window = make_window()
    populate(qtbot, window, images)
    first = wait_predictions(qtbot, window)
    pictures = len(window.controller.project.all_images())
    chosen, kept = dict(window.controller.project.model), window.controller.project.model_files()
    for path in models:
        window.notification.hide()
        answer_open_dialog(monkeypatch, path)
        qtbot.mouseClick(window.model_box.open_model, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(window.notification.isVisible, timeout=WAIT_MS)
        text = window.notification.text.text()
        assert path.name in text or path.stem in text, (path.name, text)
        assert "Traceback" not in text
        assert len(window.controller.project.all_images()) == pictures
        # the model in use stays, and the refused file is not copied into the project
        assert window.controller.project.model == chosen and window.controller.project.model_files() == kept
    window.last_result = None
    window.actions_by_name["adapt"].trigger()
    assert wait_predictions(qtbot, window)["class_names"] == first["class_names"]
