"""The project as a document in the window: saved, closed and opened again it gives the same
predictions (its images copied inside); after a crash the autosave is offered and restored."""

from __future__ import annotations

import json
import os

import pytest

from PySide6.QtWidgets import QMessageBox

from gui_helpers import WAIT_MS, populate, wait_predictions


def test_save_close_open_gives_identical_predictions(make_window, qtbot, images, tmp_path):
    w = make_window()
    populate(qtbot, w, images)
    before = wait_predictions(qtbot, w)
    assert before["status"] == "ok"
    path = tmp_path / "blobs.metastudio"
    assert w.documents.save_to(path)
    assert not w.controller.modified and "blobs.metastudio" in w.windowTitle()
    manifest = [c.name for c in w.controller.project.classes], [q.id for q in w.controller.project.queries]
    w.close()
    qtbot.waitUntil(w.engine.thread.isFinished, timeout=WAIT_MS)

    # the original image files may go away: the project holds copies
    for f in (images / "imgs").rglob("*.png"):
        f.unlink()
    w2 = make_window()
    assert w2.documents.open_project(path)
    assert ([c.name for c in w2.controller.project.classes], [q.id for q in w2.controller.project.queries]) == manifest
    after = wait_predictions(qtbot, w2)
    assert after["class_names"] == before["class_names"]
    assert after["probabilities"].keys() == before["probabilities"].keys()
    for key, probs in before["probabilities"].items():
        assert after["probabilities"][key] == pytest.approx(probs, abs=1e-6)
    assert str(path) in w2.documents.recent()


def test_crash_recovery_restores_the_autosave(make_window, qtbot, images, tmp_path):
    from metastudio.app.project import Recovery

    w = make_window()
    populate(qtbot, w, images)
    wait_predictions(qtbot, w)
    names = [c.name for c in w.controller.project.classes]
    counts = [len(c.images) for c in w.controller.project.classes]
    assert w.documents.autosave(wait=True)
    assert not w.documents.autosave(wait=True), "nothing changed since the last autosave"
    # simulate a crash: the autosave stays, and its process is gone
    sidecar = w.documents.recovery.sidecar
    info = json.loads(sidecar.read_text())
    dead = 2**22 + 12345
    while True:
        try:
            os.kill(dead, 0)
            dead += 1
        except ProcessLookupError:
            break
        except PermissionError:
            dead += 1
    info["pid"] = dead
    sidecar.write_text(json.dumps(info))
    w.documents.recovery = Recovery(tmp_path / "other")  # so that closing this window does not discard it
    assert Recovery.find(tmp_path / "recovery")

    w2 = make_window(ask_restore=True, answer=QMessageBox.StandardButton.Yes)
    project = w2.controller.project
    assert [c.name for c in project.classes] == names
    assert [len(c.images) for c in project.classes] == counts
    assert w2.controller.modified, "restored work is unsaved work"
    assert not Recovery.find(tmp_path / "recovery")
    result = wait_predictions(qtbot, w2)
    assert result["status"] == "ok"
