"""The desktop window, driven offscreen with pytest-qt: classes, drops, adaptation in the worker,
predictions, corrections, undo/redo, save/open, export, broken plugins, bad files, recovery.

The model is the shipped ``protonet-omniglot`` (Conv-4, 28 px): it loads and adapts in
milliseconds, so these tests exercise the app, not the network.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PySide6.QtCore import QMimeData, QPointF, QSettings, Qt, QUrl  # noqa: E402
from PySide6.QtGui import QDragEnterEvent, QDropEvent  # noqa: E402
from PySide6.QtWidgets import QApplication, QMessageBox  # noqa: E402

from conftest import make_class_tree  # noqa: E402

MODEL = {"kind": "shipped", "name": "protonet-omniglot"}
WAIT_MS = 60_000


@pytest.fixture
def images(tmp_path) -> Path:
    """3 classes x 6 images of class-specific blobs, plus a 'query' folder of 6 more."""
    root = make_class_tree(tmp_path / "imgs", classes=3, per_class=8, size=40)
    query = tmp_path / "query"
    query.mkdir()
    for c in range(3):
        for i in (6, 7):
            src = root / f"class{c:02d}" / f"img{i:03d}.png"
            src.rename(query / f"q{c}_{i}.png")
    return tmp_path


@pytest.fixture
def make_window(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("METASTUDIO_RECOVERY_DIR", str(tmp_path / "recovery"))
    from metastudio.app.project import Project
    from metastudio.gui.mainwindow import MainWindow

    made = []

    def make(project=None, *, ask_restore=False, answer=QMessageBox.StandardButton.Discard):
        if project is None:
            project = Project()
            project.model = dict(MODEL)
        settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
        w = MainWindow(project, device="cpu", ask_restore=False, recovery_dir=tmp_path / "recovery", settings=settings)
        w.confirm = lambda *a, **k: answer
        qtbot.addWidget(w)
        w.show()
        made.append(w)
        if ask_restore:
            w.offer_recovery()
        return w

    yield make
    for w in made:
        w.controller.mark_saved()
        w.shutdown()
        qtbot.waitUntil(w.engine.thread.isFinished, timeout=WAIT_MS)
        qtbot.waitUntil(w.thumbnails.thread.isFinished, timeout=WAIT_MS)
        if w.training_panel is not None:
            assert not w.training_panel.is_running()


def settled(window) -> bool:
    return (window.catalog is not None and not window._adapt_timer.isActive() and not window.engine.busy
            and window.last_result is not None)


def wait_predictions(qtbot, window) -> dict:
    """Wait until the newest adaptation's result is shown; return it."""
    qtbot.waitUntil(lambda: settled(window), timeout=WAIT_MS)
    return window.last_result


def drop_files(qtbot, widget, paths) -> None:
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    send_drop(widget, mime)


def send_drop(widget, mime) -> None:
    pos = QPointF(widget.width() / 2, widget.height() / 2)
    enter = QDragEnterEvent(pos, Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                            Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(widget, enter)
    assert enter.isAccepted(), "the widget refused the drag"
    drop = QDropEvent(pos, Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(widget, drop)


def class_files(images: Path, c: int) -> list[Path]:
    return sorted((images / "imgs" / f"class{c:02d}").glob("*.png"))


def populate(qtbot, window, images) -> None:
    """Three classes by dropping files on cards, queries by dropping on the query grid."""
    c = window.controller
    while len(c.project.classes) < 3:
        window.classes.add_button.click()
    for n, entry in enumerate(c.project.classes):
        drop_files(qtbot, window.classes.cards[entry.id], class_files(images, n))
    drop_files(qtbot, window.queries, sorted((images / "query").glob("*.png")))


def test_new_window_starts_with_two_empty_classes_and_a_hint(make_window, qtbot):
    from metastudio.gui.mainwindow import MainWindow

    w = make_window(MainWindow._starter_project())
    assert [c.name for c in w.controller.project.classes] == ["Class 1", "Class 2"]
    result = wait_predictions(qtbot, w)
    assert result["status"] == "hint"
    assert "example images" in w.queries.status.text()
    assert w.queries.empty.isVisible() and "Drop new images" in w.queries.empty.text()
    assert not w.controller.modified
    assert "Device:" in w.device_label.text()
    assert w.model_box.model_combo.currentText() == "photos"


def test_each_class_gets_a_readable_bar_and_the_window_fits_a_laptop_screen(make_window, qtbot):
    """The probability chart grows with the classes (a row of BAR_HEIGHT each, up to BAR_ROWS) instead of
    squeezing their labels together, and the right-hand column scrolls rather than making the
    window taller than a 768-pixel screen, adaptation plot shown."""
    from metastudio.gui.mainwindow import MainWindow
    from metastudio.gui.widgets import BAR_HEIGHT, BAR_ROWS

    assert BAR_ROWS == 8
    w = make_window(MainWindow._starter_project())
    wait_predictions(qtbot, w)
    heights = {}
    for n in (2, 5, 8, 20):
        names = [f"class {i}" for i in range(n)]
        w.bars.set_probabilities(names, ["#0072b2"] * n, [1 / n] * n, "caption")
        heights[n] = w.bars.plot.minimumHeight()
        w.adapt_plot.show()
        assert w.minimumSizeHint().height() < 700, n
    assert heights[5] - heights[2] == 3 * BAR_HEIGHT and heights[20] == heights[8] > heights[5]


def test_classes_drops_predictions_corrections_and_undo(make_window, qtbot, images):
    w = make_window()
    c = w.controller
    # add a class with the button, rename, recolour, delete -- all undoable
    w.classes.add_button.click()
    w.classes.add_button.click()
    assert [e.name for e in c.project.classes] == ["Class 1", "Class 2"]
    first = c.project.classes[0]
    card = w.classes.cards[first.id]
    card.name_edit.setText("Blobs A")
    card.name_edit.editingFinished.emit()
    assert first.name == "Blobs A"
    c.recolour_class(first.id, "#123456")
    assert "#123456" in card.colour_button.styleSheet()
    c.undo_stack.undo()
    assert first.colour != "#123456"
    c.undo_stack.undo()
    assert first.name == "Class 1"
    c.undo_stack.redo()
    assert first.name == "Blobs A" and card.name_edit.text() == "Blobs A"

    # one class only: a hint, no predictions
    drop_files(qtbot, card, class_files(images, 0))
    assert len(first.images) == 6 and card.count_label.text() == "6 images"
    result = wait_predictions(qtbot, w)
    assert result["status"] == "hint" and not result["probabilities"]

    # three classes and six queries: every query is classified by the worker
    w.classes.add_button.click()
    for n, entry in enumerate(c.project.classes[1:], 1):
        drop_files(qtbot, w.classes.cards[entry.id], class_files(images, n))
    drop_files(qtbot, w.queries, sorted((images / "query").glob("*.png")))
    result = wait_predictions(qtbot, w)
    assert result["status"] == "ok"
    assert result["class_names"] == [e.name for e in c.project.classes]
    ids = [q.id for q in c.project.queries]
    assert sorted(result["probabilities"]) == sorted(ids)
    for probs in result["probabilities"].values():
        assert len(probs) == 3 and abs(sum(probs) - 1) < 1e-4
    # the grid shows a prediction for each, and selecting one shows its bars
    assert all(w.queries.list.item(i).data(Qt.ItemDataRole.UserRole + 4) for i in range(w.queries.list.count()))
    w.queries.list.setCurrentRow(0)
    assert len(w.bars.values) == 3 and abs(sum(w.bars.values) - 100) < 0.1
    assert "classified" in w.statusBar().currentMessage()

    # correct: press 2 on the first query -> it moves into class 2 and everything re-adapts
    moved = ids[0]
    w.queries.list.setFocus()
    w.queries.list.setCurrentRow(0)
    qtbot.keyClick(w.queries.list, Qt.Key.Key_2)
    second = c.project.classes[1]
    assert second.images[-1].id == moved and moved not in [q.id for q in c.project.queries]
    result = wait_predictions(qtbot, w)
    assert moved not in result["probabilities"] and len(result["probabilities"]) == 5

    # drag a query onto class 3's card (our own drag type)
    from metastudio.gui.widgets import ID_ROLE

    item = w.queries.list.item(0)
    dragged = item.data(ID_ROLE)
    mime = w.queries.list.mimeData([item])
    third = c.project.classes[2]
    send_drop(w.classes.cards[third.id], mime)
    assert third.images[-1].id == dragged

    # undo the drag and the key press: both images are queries again, in their places
    c.undo_stack.undo()
    c.undo_stack.undo()
    assert [q.id for q in c.project.queries] == ids
    c.undo_stack.redo()
    assert moved in [i.id for i in second.images]
    result = wait_predictions(qtbot, w)
    assert moved not in result["probabilities"]

    # delete a class and undo it
    c.delete_class(third.id)
    assert third.id not in w.classes.cards
    c.undo_stack.undo()
    assert third.id in w.classes.cards and len(third.images) == 6
    assert w.isWindowModified()


def test_save_close_open_gives_identical_predictions(make_window, qtbot, images, tmp_path):
    w = make_window()
    populate(qtbot, w, images)
    before = wait_predictions(qtbot, w)
    assert before["status"] == "ok"
    path = tmp_path / "blobs.metastudio"
    assert w._save_to(path)
    assert not w.controller.modified and "blobs.metastudio" in w.windowTitle()
    manifest = [c.name for c in w.controller.project.classes], [q.id for q in w.controller.project.queries]
    w.close()
    qtbot.waitUntil(w.engine.thread.isFinished, timeout=WAIT_MS)

    # the original image files may go away: the project holds copies
    for f in (images / "imgs").rglob("*.png"):
        f.unlink()
    w2 = make_window()
    assert w2.open_project(path)
    assert ([c.name for c in w2.controller.project.classes], [q.id for q in w2.controller.project.queries]) == manifest
    after = wait_predictions(qtbot, w2)
    assert after["class_names"] == before["class_names"]
    assert after["probabilities"].keys() == before["probabilities"].keys()
    for key, probs in before["probabilities"].items():
        assert after["probabilities"][key] == pytest.approx(probs, abs=1e-6)
    assert str(path) in w2._recent()


def test_export_csv_and_standalone_model(make_window, qtbot, images, tmp_path):
    import torch

    w = make_window()
    populate(qtbot, w, images)
    result = wait_predictions(qtbot, w)
    project = w.controller.project

    out = tmp_path / "predictions.csv"
    assert w.export_csv(str(out))
    rows = list(csv.reader(out.open(encoding="utf-8")))
    assert rows[0] == ["file", "predicted", *result["class_names"], "unsure"]
    assert len(rows) == 1 + len(project.queries)
    for row, item in zip(rows[1:], project.queries):
        probs = result["probabilities"][item.id]
        assert row[0] == item.source
        assert row[1] == result["class_names"][int(np.argmax(probs))]
        assert [float(x) for x in row[2:-1]] == pytest.approx(probs, abs=1e-5)
        assert row[-1] == (result["unsure"].get(item.id) or "")

    # TorchScript and ONNX: loaded with plain torch / onnxruntime, same predictions
    from metastudio.data.images import load_array

    arrays = np.stack([load_array(project.image_path(q), 28, channels=1, fit="stretch") for q in project.queries])
    batch = arrays.astype(np.float32) / 255.0
    expected = np.array([result["probabilities"][q.id] for q in project.queries])
    for fmt, name in (("torchscript", "model.pt"), ("onnx", "model.onnx")):
        target = tmp_path / fmt / name
        with qtbot.waitSignal(w.engine.exported, timeout=WAIT_MS) as blocker:
            assert w.export_model(str(target), fmt)
        paths, error = blocker.args
        assert error == "" and Path(paths[0]) == target
        labels = json.loads((target.parent / "labels.json").read_text())
        assert labels["classes"] == result["class_names"] if "classes" in labels else labels["class_names"] == result["class_names"]
        if fmt == "torchscript":
            probs = torch.jit.load(str(target))(torch.from_numpy(batch)).detach().numpy()
        else:
            import onnxruntime as ort

            session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
            probs = session.run(None, {session.get_inputs()[0].name: batch})[0]
        assert probs == pytest.approx(expected, abs=1e-4)
        assert (probs.argmax(1) == expected.argmax(1)).all()


def test_a_corrupt_file_is_reported_and_nothing_else_is_lost(make_window, qtbot, images, tmp_path):
    w = make_window()
    c = w.controller
    w.classes.add_button.click()
    w.classes.add_button.click()
    bad_header = tmp_path / "notes.png"
    bad_header.write_text("this is not an image")
    truncated = tmp_path / "cut.png"
    data = (class_files(images, 0)[0]).read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    card = w.classes.cards[c.project.classes[0].id]
    drop_files(qtbot, card, [*class_files(images, 0), bad_header])
    # the unreadable file is listed with its reason; the six good ones are in
    assert len(c.project.classes[0].images) == 6
    assert w.notification.isVisible() and "notes.png" in w.notification.text.text()
    assert "notes.png" in w.notification.details
    # a file that looks like an image but does not decode is caught by the worker
    drop_files(qtbot, w.classes.cards[c.project.classes[1].id], [*class_files(images, 1), truncated])
    drop_files(qtbot, w.queries, sorted((images / "query").glob("*.png")))
    result = wait_predictions(qtbot, w)
    if c.project.classes[1].images[-1].source.endswith("cut.png"):
        bad_id = c.project.classes[1].images[-1].id
        assert bad_id in result["problems"]
        assert "can't be used" in w.queries.status.text()
    assert result["status"] == "ok" and len(result["probabilities"]) == 6


def test_broken_plugin_is_shown_greyed_with_its_error(make_window, qtbot, tmp_path, monkeypatch):
    from test_plugins import install

    from metastudio.plugins import reset_host

    install(tmp_path / "site", monkeypatch, {"broken-algo": ("metastudio-broken-algo", "mstest_broken_algo",
                                                             "raise ImportError('needs the frobnicator package')\n")})
    reset_host()
    try:
        w = make_window()
        qtbot.waitUntil(lambda: w.catalog is not None, timeout=WAIT_MS)
        combo = w.model_box.algorithm_combo
        texts = [combo.itemText(i) for i in range(combo.count())]
        index = next(i for i, t in enumerate(texts) if "broken-algo" in t)
        item = combo.model().item(index)
        assert not item.isEnabled()
        assert "frobnicator" in combo.itemData(index, Qt.ItemDataRole.ToolTipRole)
        assert not combo.itemIcon(index).isNull()
        assert w.notification.isVisible() and "broken-algo" in w.notification.text.text()
        # everything else still works
        assert any("Prototypical" in t for t in texts)
    finally:
        reset_host()


def test_crash_recovery_restores_the_autosave(make_window, qtbot, images, tmp_path):
    from metastudio.app.project import Recovery

    w = make_window()
    populate(qtbot, w, images)
    wait_predictions(qtbot, w)
    names = [c.name for c in w.controller.project.classes]
    counts = [len(c.images) for c in w.controller.project.classes]
    assert w.autosave(wait=True)
    assert not w.autosave(wait=True), "nothing changed since the last autosave"
    # simulate a crash: the autosave stays, and its process is gone
    sidecar = w.recovery.sidecar
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
    w.recovery = Recovery(tmp_path / "other")  # so that closing this window does not discard it
    assert Recovery.find(tmp_path / "recovery")

    w2 = make_window(ask_restore=True, answer=QMessageBox.StandardButton.Yes)
    project = w2.controller.project
    assert [c.name for c in project.classes] == names
    assert [len(c.images) for c in project.classes] == counts
    assert w2.controller.modified, "restored work is unsaved work"
    assert not Recovery.find(tmp_path / "recovery")
    result = wait_predictions(qtbot, w2)
    assert result["status"] == "ok"


def test_dropping_a_folder_of_class_folders_makes_classes_and_paste_adds_an_image(make_window, qtbot, images):
    from PySide6.QtGui import QGuiApplication, QImage

    w = make_window()
    c = w.controller
    send_mime = QMimeData()
    send_mime.setUrls([QUrl.fromLocalFile(str(images / "imgs"))])
    send_drop(w.classes, send_mime)
    assert [e.name for e in c.project.classes] == ["class00", "class01", "class02"]
    assert [len(e.images) for e in c.project.classes] == [6, 6, 6]
    c.undo_stack.undo()  # one step undoes the whole import
    assert c.project.classes == []
    c.undo_stack.redo()
    assert len(c.project.classes) == 3

    # paste a picture from the clipboard into the current class (the card last used)
    image = QImage(str(class_files(images, 0)[0]))
    QGuiApplication.clipboard().setImage(image)
    qtbot.waitUntil(lambda: QGuiApplication.clipboard().mimeData().hasImage(), timeout=5000)
    card = w.classes.cards[c.project.classes[1].id]
    qtbot.mouseClick(card, Qt.MouseButton.LeftButton)
    assert w.classes.current == card.class_id
    w.paste()
    assert len(c.project.classes[1].images) == 7
    assert c.project.classes[1].images[-1].source == "clipboard"
    c.undo_stack.undo()
    assert len(c.project.classes[1].images) == 6
    # with no current class the paste goes to the images to classify
    w.classes.current = None
    w.paste()
    assert len(c.project.queries) == 1 and c.project.queries[0].source == "clipboard"


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
    assert w._save_to(path)
    w.close()
    trained.unlink()
    w2 = make_window()
    assert w2.open_project(path)
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
    panel = w.training_panel
    assert panel is not None, "the Meta-train tab builds its panel on first use"
    panel.output_dir = tmp_path / "models"
    panel.set_plan(TrainingPlan(algorithm="protonet", backbone="conv4", dataset="folder", root=str(root),
                                val_split=None, ways=3, shots=1, queries=2, episodes=100_000, image_size=28,
                                device="cpu", log_every=1))
    assert panel.start()
    qtbot.waitUntil(lambda: panel._latest_step is not None, timeout=WAIT_MS)
    training_thread = panel.training_thread()
    assert training_thread is not None and training_thread.isRunning()
    assert w.close()
    assert training_thread.isFinished() and w.engine.thread.isFinished() and w.thumbnails.thread.isFinished()
    assert not panel.is_running()


def test_delete_key_removes_queries_undoably_and_worker_errors_are_shown(make_window, qtbot, images, tmp_path):
    w = make_window()
    populate(qtbot, w, images)
    wait_predictions(qtbot, w)
    c = w.controller
    n = len(c.project.queries)
    w.queries.list.setFocus()
    w.queries.list.setCurrentRow(0)
    removed = w.queries.list.selected_ids()
    delete = next(a for a in w.queries.list.actions() if a.text() == "Remove")
    delete.trigger()
    assert len(c.project.queries) == n - 1 and removed[0] not in [q.id for q in c.project.queries]
    c.undo_stack.undo()
    assert [q.id for q in c.project.queries][0] == removed[0]

    # a file that is not a model at all is refused when chosen
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"not a safetensors file at all")
    assert not w.use_model_file(str(bad))
    assert "can't be used" in w.notification.text.text()
    # a model of an algorithm no plugin provides: the adapt worker's error becomes a notification
    import torch

    from metastudio.engine.checkpoint import save_tensors

    orphan = tmp_path / "orphan.safetensors"
    save_tensors(orphan, {"w": torch.zeros(1)}, {"format": "metastudio-model", "format_version": 1,
                                                 "algorithm": "no-such-algorithm", "backbone": "conv4",
                                                 "image_size": 28, "channels": 1, "hyperparameters": {}})
    assert w.use_model_file(str(orphan))
    qtbot.waitUntil(lambda: w.notification.isVisible() and "Could not learn the classes" in w.notification.text.text(),
                    timeout=WAIT_MS)
    assert "no-such-algorithm" in w.notification.text.text()
    assert w.notification.details  # the traceback, behind "Details…"
    assert w.last_result is None and "Could not learn the classes" in w.queries.status.text()
    # back to a good model: predictions again
    c.undo_stack.undo()
    result = wait_predictions(qtbot, w)
    assert result["status"] == "ok"


def test_inner_loop_loss_of_an_iterative_algorithm_is_plotted_live(make_window, qtbot, images, tmp_path):
    """An optimization-based algorithm reports a loss per adaptation step; the Classify page
    plots it (a tiny gradient-descent head, registered as a plugin would be)."""
    import types

    import torch

    from metastudio.algorithms.base import AdaptProgress, Algorithm, Learner
    from metastudio_builtins.backbones.networks import Conv4
    from metastudio.engine.checkpoint import save_model
    from metastudio.plugins import get_host, hookimpl, reset_host

    class Head(Learner):
        def __init__(self, algo, weight, names):
            super().__init__(names)
            self.algo, self.weight = algo, weight

        def predict_proba(self, images):
            with torch.no_grad():
                return (self.algo.embed(images) @ self.weight.t()).softmax(1).cpu()

    class GradientHead(Algorithm):
        name, title, family, description = "test-gradient-head", "Gradient head", "optimization", "test only"

        def meta_train_step(self, episodes):
            return {"loss": 0.0, "accuracy": 0.0}

        def adapt(self, support, progress=None):
            with self.evaluating(), torch.no_grad():
                features = self.embed(support.images)
            weight = torch.zeros(support.ways, features.shape[1], requires_grad=True)
            opt = torch.optim.SGD([weight], lr=0.5)
            for step in range(1, 6):
                loss = torch.nn.functional.cross_entropy(features @ weight.t(), support.labels)
                opt.zero_grad()
                loss.backward()
                opt.step()
                if progress:
                    progress(AdaptProgress(step, 5, float(loss.detach())))
            return Head(self, weight.detach(), support.class_names)

    reset_host()
    host = get_host()
    module = types.SimpleNamespace(metastudio_algorithms=hookimpl(lambda: [GradientHead]))
    host.register_module(module, "test-gradient-head")
    algo = GradientHead(Conv4(3), backbone_name="conv4", image_size=28, channels=3)
    path = tmp_path / "gradient-head.safetensors"
    save_model(algo, path)
    try:
        w = make_window()
        w.use_model_file(str(path))
        populate(qtbot, w, images)
        result = wait_predictions(qtbot, w)
        assert result["status"] == "ok" and len(result["adapt_losses"]) == 5
        assert w.model_info["iterative"]
        assert w.adapt_plot.isVisible() and w.adapt_plot.series_length("adapt_loss") == 5
        losses = w.adapt_plot.series_data("adapt_loss")[1]
        assert list(losses) == pytest.approx(result["adapt_losses"])
        assert losses[-1] < losses[0]
        # the title stays short; a screen reader also hears the last loss
        assert w.adapt_plot.accessibleName() == f"Adapting: step 5 of 5, support loss {losses[-1]:.4g}"
    finally:
        reset_host()
