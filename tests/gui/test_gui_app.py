"""The desktop window, driven offscreen with pytest-qt: classes, drops, adaptation in the worker,
predictions, corrections, undo/redo, broken plugins, bad files, the live adaptation loss.

The model is the shipped ``protonet-omniglot`` (Conv-4, 28 px): it loads and adapts in
milliseconds, so these tests exercise the app, not the network.
"""

from __future__ import annotations

import pytest

from PySide6.QtCore import QMimeData, Qt, QUrl

from gui_helpers import WAIT_MS, class_files, drop_files, populate, send_drop, wait_predictions
from metastudio.gui.documents import starter_project


def test_new_window_starts_with_two_empty_classes_and_a_hint(make_window, qtbot):
    w = make_window(starter_project())
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
    from metastudio.gui.widgets import BAR_HEIGHT, BAR_ROWS

    assert BAR_ROWS == 8
    w = make_window(starter_project())
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
    from plugin_packages import install

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
    # a model of an algorithm no plugin provides is refused when chosen, and the model in use stays
    import torch

    from metastudio.engine.checkpoint import save_tensors

    orphan = tmp_path / "orphan.safetensors"
    save_tensors(orphan, {"w": torch.zeros(1)}, {"format": "metastudio-model", "format_version": 1,
                                                 "algorithm": "no-such-algorithm", "backbone": "conv4",
                                                 "image_size": 28, "channels": 1, "hyperparameters": {}})
    chosen = dict(c.project.model)
    assert not w.use_model_file(str(orphan))
    assert "no algorithm named 'no-such-algorithm'" in w.notification.text.text()
    assert c.project.model == chosen
    # one already in the project (its plugin uninstalled since): the adapt worker's error becomes a notification
    w.use_project_model(c.project.add_model_file(orphan))
    qtbot.waitUntil(lambda: w.notification.isVisible() and "Could not learn the classes" in w.notification.text.text(),
                    timeout=WAIT_MS)
    assert "no-such-algorithm" in w.notification.text.text()
    assert w.notification.details  # the traceback, behind "Details…"
    # worded as the command line words it (metastudio.errors.for_person)
    from metastudio.app.session import ClassifierSession
    from metastudio.errors import for_person
    from metastudio.plugins import get_host

    with pytest.raises(Exception) as caught:
        ClassifierSession(get_host(), "cpu").load(w.model_path(), {})
    assert w.notification.text.text() == f"Could not learn the classes: {for_person(caught.value).message}"
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
        reports_adaptation_loss = True

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
