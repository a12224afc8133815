"""The grid of predictions as a person reads it: a correction that changes other predictions
marks them and can show just them; class names are readable on every tile; unsure images and
images too small to recognise say so."""

from __future__ import annotations

import json

import pytest

from PySide6.QtCore import QByteArray, QMimeData
from PySide6.QtGui import QFont, QFontMetrics

from gui_helpers import WAIT_MS, populate, send_drop, wait_predictions


def drag_images(window, image_ids, card) -> None:
    from metastudio.gui.widgets import MIME_IMAGES

    mime = QMimeData()
    mime.setData(MIME_IMAGES, QByteArray(json.dumps(list(image_ids)).encode()))
    send_drop(card, mime)


def test_predictions_changed_by_a_correction_are_marked_counted_and_can_be_shown_alone(make_window, qtbot, images):
    from metastudio.gui.queries import CHANGED_ROLE
    from metastudio.gui.widgets import ID_ROLE

    w = make_window()
    populate(qtbot, w, images)
    before = wait_predictions(qtbot, w)
    project = w.controller.project
    first, second = project.classes[0], project.classes[1]
    names = before["class_names"]
    predicted = {i: names[max(range(len(p)), key=p.__getitem__)] for i, p in before["probabilities"].items()}
    expected = {i for i, name in predicted.items() if name == first.name}
    assert expected, "some images must be predicted as the first class to begin with"
    # The person drags every example of the first class into the second: the first class has no
    # examples left, so each image predicted as it must now get another class.
    w.queries._mark_timer.setInterval(300)
    w.last_result = None
    drag_images(w, [it.id for it in first.images], w.classes.cards[second.id])
    after = wait_predictions(qtbot, w)
    changed = {i for i, p in after["probabilities"].items()
               if after["class_names"][max(range(len(p)), key=p.__getitem__)] != predicted[i]}
    assert changed >= expected and w.queries.changed == changed
    n = len(changed)
    assert f"{n} prediction{'s' if n != 1 else ''} changed" in w.queries.status.text()
    button = w.queries.changed_button
    assert button.isVisible() and str(n) in button.text()
    marked = {w.queries.list.item(r).data(ID_ROLE) for r in range(w.queries.list.count())
              if w.queries.list.item(r).data(CHANGED_ROLE)}
    assert marked == changed
    button.click()
    assert set(w.queries.visible_ids()) == changed
    button.click()
    assert len(w.queries.visible_ids()) == len(project.queries)
    # the marks fade; the button stays until the next adaptation
    qtbot.waitUntil(lambda: not any(w.queries.list.item(r).data(CHANGED_ROLE) for r in range(w.queries.list.count())),
                    timeout=5000)
    assert button.isVisible()
    # an adaptation that changes nothing clears the count
    w.last_result = None
    w.actions_by_name["adapt"].trigger()
    wait_predictions(qtbot, w)
    assert not w.queries.changed and not button.isVisible() and "changed" not in w.queries.status.text()


def test_long_class_names_are_readable_on_every_tile_and_tiles_fill_the_row(make_window, qtbot, images):
    from metastudio.gui.queries import band_text

    w = make_window()
    populate(qtbot, w, images)
    wait_predictions(qtbot, w)
    c = w.controller
    for entry, name in zip(list(c.project.classes), ("golden retriever", "rhinoceros beetle", "Siamese cat")):
        c.rename_class(entry.id, name)
    w.resize(1366, 760)
    result = wait_predictions(qtbot, w)
    assert set(result["class_names"]) == {"golden retriever", "rhinoceros beetle", "Siamese cat"}
    from metastudio.gui.queries import BAND_MIN_SCALE, TILE_MIN_WIDTH

    spacing = 2 * w.queries.list.spacing()
    qtbot.waitUntil(lambda: w.queries.delegate.width > TILE_MIN_WIDTH, timeout=5000)
    font = QFont(w.queries.list.font())
    font.setBold(True)
    metrics = QFontMetrics(font)
    room = w.queries.delegate.width - 6 - 8 - 6  # tile margins, band inset, text padding
    for prediction in w.queries.predictions.values():
        text = band_text(prediction)
        assert metrics.horizontalAdvance(text) * BAND_MIN_SCALE <= room, f"{text!r} would be cut"
    view = w.queries.list.viewport().width() - 2
    columns = view // (TILE_MIN_WIDTH + spacing)
    tile = w.queries.delegate.width + spacing
    assert columns >= 3 and view // tile == columns, "as many tiles a row as the narrowest allows"
    assert view - tile < columns * tile <= view, "the tiles share out the row instead of leaving a gap"


def test_a_camera_picture_is_classified_like_the_same_image_dropped_to_classify(make_window, qtbot, images):
    """The live camera path: an encoded picture sent to the model worker gets the prediction the
    same picture gets as an image to classify."""
    w = make_window()
    with qtbot.waitSignal(w.engine.live_result, timeout=WAIT_MS) as early:
        w.engine.predict_picture(b"not yet")
    assert early.args[0]["status"] in ("hint", "error")
    populate(qtbot, w, images)
    result = wait_predictions(qtbot, w)
    project = w.controller.project
    for item in project.queries[:3]:
        data = project.image_path(item).read_bytes()
        with qtbot.waitSignal(w.engine.live_result, timeout=WAIT_MS) as blocker:
            w.engine.predict_picture(data)
        live = blocker.args[0]
        assert live["status"] == "ok" and live["class_names"] == result["class_names"]
        assert live["probabilities"] == pytest.approx(result["probabilities"][item.id], abs=1e-5)
    with qtbot.waitSignal(w.engine.live_result, timeout=WAIT_MS) as broken:
        w.engine.predict_picture(b"\x89PNG broken")
    assert broken.args[0]["status"] == "error" and "camera picture" in broken.args[0]["message"]


def test_an_image_too_small_to_recognise_is_shown_unsure_with_the_reason(make_window, qtbot, images, tmp_path):
    import csv

    from PIL import Image

    from metastudio.gui.queries import PREDICTION_ROLE
    from metastudio.gui.widgets import ID_ROLE
    from gui_helpers import drop_files

    w = make_window()
    populate(qtbot, w, images)
    wait_predictions(qtbot, w)
    dot = tmp_path / "dot.png"
    Image.new("RGB", (1, 1), (200, 30, 30)).save(dot)
    w.last_result = None
    drop_files(qtbot, w.queries, [dot])
    result = wait_predictions(qtbot, w)
    item = next(it for it in w.controller.project.queries if it.name == "dot.png")
    assert "too small" in result["unsure"][item.id] and "1×1" in result["unsure"][item.id]
    assert "1 unsure" in w.queries.status.text()
    row = next(r for r in range(w.queries.list.count()) if w.queries.list.item(r).data(ID_ROLE) == item.id)
    tile = w.queries.list.item(row)
    assert tile.data(PREDICTION_ROLE)[3] == result["unsure"][item.id] and "Unsure" in tile.toolTip()
    w.queries.list.setCurrentRow(row)
    assert "unsure" in w.bars.caption.text() and "too small" in w.bars.caption.text()
    out = tmp_path / "p.csv"
    assert w.exports.export_csv(str(out))
    rows = {r["file"]: r for r in csv.DictReader(out.open(encoding="utf-8"))}
    assert "too small" in rows[item.source]["unsure"]
    sure = [r for r in rows.values() if not r["unsure"]]
    assert len(sure) >= len(w.controller.project.queries) - 2
