"""Helpers of the GUI tests (their fixtures, ``make_window`` and ``images``, are in conftest.py):
waiting for predictions, dropping files as a person would, and test pictures."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image
from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QColor, QDragEnterEvent, QDropEvent, QImage, QPainter
from PySide6.QtWidgets import QApplication

#: The model of a test window: the shipped Omniglot ProtoNet (Conv-4, 28 px) adapts in milliseconds.
MODEL = {"kind": "shipped", "name": "protonet-omniglot"}
WAIT_MS = 60_000
#: The module the camera support needs (tests make it fail to import, or fake it).
MULTIMEDIA = "PySide6.QtMultimedia"


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


def halves(width: int, height: int, left: str = "red", right: str = "blue") -> QImage:
    """A picture whose left half and right half have different colours (to see mirroring)."""
    image = QImage(width, height, QImage.Format.Format_RGB32)
    image.fill(QColor(right))
    painter = QPainter(image)
    painter.fillRect(0, 0, width // 2, height, QColor(left))
    painter.end()
    return image


def opened(data: bytes) -> Image.Image:
    """PNG bytes, opened (and checked to be PNG)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    image = Image.open(io.BytesIO(data))
    image.load()
    return image
