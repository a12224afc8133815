"""The camera windows: take example photos for a class (:class:`CaptureDialog`), and watch live
predictions (:class:`LiveDialog`). Their pictures come from a
:class:`~metastudio.gui.camera_source.FrameSource`; without a camera they say why in a plain
sentence and the rest of the app works as before.

The view only stores the latest picture and schedules a repaint. Photos are encoded only when
taken (one per click, about five per second while held), and live pictures at most twice a
second, never while the previous one is still being classified.
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable

from PySide6.QtCore import QEvent, QRect, QSize, Qt, QTimer, Signal, Slot
from PySide6.QtGui import QColor, QFont, QImage, QPainter
from PySide6.QtWidgets import QComboBox, QDialog, QHBoxLayout, QLabel, QPushButton, QSizePolicy, QVBoxLayout, \
    QWidget

from metastudio.gui.camera_source import CameraSource, FrameSource, camera_status, picture_bytes, unavailable

HOLD_INTERVAL_S = 0.2  # one photo this often while the button or the Space bar is held down
HOLD_POLL_MS = 20  # how often a held shutter checks whether the next photo is due
LIVE_INTERVAL_S = 0.5  # at most one live picture this often goes to the model
FLASH_MS = 120  # how long the picture lights up when a photo is taken
CAMERA_STARTING = "Starting the camera…"


class CameraView(QWidget):
    """The latest camera picture, scaled to fit (keeping its shape), mirrored like a mirror by
    default; a sentence in its place while there is none."""

    def __init__(self, parent: QWidget | None = None, *, mirrored: bool = True):
        super().__init__(parent)
        self.mirrored = mirrored
        self._image: QImage | None = None
        self._shown: QImage | None = None  # the mirrored copy, made only when asked for
        self.picture_number = 0  # counts the pictures received, so a new one can be told from the last
        self._message = ""
        self._flash = QTimer(self)
        self._flash.setSingleShot(True)
        self._flash.setInterval(FLASH_MS)
        self._flash.timeout.connect(self.update)
        self.setMinimumSize(320, 240)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setAccessibleName("Camera picture")

    def sizeHint(self) -> QSize:
        return QSize(640, 480)

    def set_image(self, image: QImage) -> None:
        """Show a new picture: stored and repainted later, nothing else (cheap at any rate)."""
        self._image, self._shown = image, None
        self.picture_number += 1
        self.update()

    def clear(self) -> None:
        self._image = self._shown = None
        self.update()

    def set_message(self, text: str) -> None:
        """The sentence shown while there is no picture."""
        self._message = text
        self.setAccessibleDescription(text)
        self.update()

    def message(self) -> str:
        return self._message

    def latest_image(self) -> QImage | None:
        """The latest picture as it is shown (mirrored when the view is), or None."""
        if self._image is None:
            return None
        if not self.mirrored:
            return self._image
        if self._shown is None:
            if hasattr(self._image, "flipped"):  # Qt 6.9 and later
                self._shown = self._image.flipped(Qt.Orientation.Horizontal)
            else:
                self._shown = self._image.mirrored(True, False)
        return self._shown

    def has_image(self) -> bool:
        return self._image is not None

    def flash(self) -> None:
        """Light the picture up briefly: the photo was taken."""
        self._flash.start()
        self.update()

    def is_flashing(self) -> bool:
        return self._flash.isActive()

    def image_rect(self) -> QRect:
        """Where the picture is drawn: as large as fits, centred, its shape kept."""
        if self._image is None or self._image.isNull():
            return QRect()
        size = self._image.size().scaled(self.size(), Qt.AspectRatioMode.KeepAspectRatio)
        return QRect((self.width() - size.width()) // 2, (self.height() - size.height()) // 2,
                     size.width(), size.height())

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor(24, 24, 24))
        target = self.image_rect()
        if target.isValid():
            painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
            if self.mirrored:  # the painter mirrors it: no copy per picture
                painter.translate(target.x() + target.width(), target.y())
                painter.scale(-1, 1)
                painter.drawImage(QRect(0, 0, target.width(), target.height()), self._image)
                painter.resetTransform()
            else:
                painter.drawImage(target, self._image)
            if self._flash.isActive():
                painter.fillRect(target, QColor(255, 255, 255, 150))
        elif self._message:
            painter.setPen(QColor(235, 235, 235))
            painter.drawText(self.rect().adjusted(24, 24, -24, -24),
                             Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap, self._message)
        painter.end()


class _CameraDialog(QDialog):
    """What both camera windows share: the source (the real camera unless one is given), the
    view, a line of status, a camera choice where there are several, and the camera running
    exactly while the window is shown."""

    def __init__(self, title: str, parent: QWidget | None, source: FrameSource | None,
                 clock: Callable[[], float]):
        super().__init__(parent)
        self.setWindowTitle(title)
        self._clock = clock
        self.problem = ""  # the plain sentence while the camera can't be used, else ""
        if source is None:
            ok, sentence = camera_status()
            if ok:
                try:
                    source = CameraSource(parent=self)
                except (ImportError, OSError) as error:
                    ok, sentence = False, unavailable(error)
            self.problem = "" if ok else sentence
        self.source = source
        self.view = CameraView()
        self.message = QLabel(self.problem)
        self.message.setWordWrap(True)
        self.message.setAccessibleName("Camera status")
        self.camera_choice = QComboBox()
        self.camera_choice.setAccessibleName("Camera")
        self.camera_choice.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
        self.camera_choice.hide()
        self.view.set_message(self.problem or CAMERA_STARTING)
        if source is not None:
            source.frame.connect(self._frame)
            source.failed.connect(self._failed)
            self._fill_camera_choice()

    def _fill_camera_choice(self) -> None:
        cameras = self.source.cameras()
        if len(cameras) < 2:
            return
        current = self.source.current_camera()
        for camera_id, name in cameras:
            self.camera_choice.addItem(name, camera_id)
            if camera_id == current:
                self.camera_choice.setCurrentIndex(self.camera_choice.count() - 1)
        self.camera_choice.currentIndexChanged.connect(self._choose_camera)
        self.camera_choice.show()

    def _choose_camera(self, index: int) -> None:
        self.source.set_camera(self.camera_choice.itemData(index))
        self.setFocus()  # the keyboard back to the window (Space is the shutter)

    def camera_ready(self) -> bool:
        """A camera works and has shown a picture."""
        return self.source is not None and not self.problem and self.view.has_image()

    def showEvent(self, event) -> None:
        super().showEvent(event)
        if self.source is not None and not self.source.is_active():
            self._starting()
            self.source.start()

    def hideEvent(self, event) -> None:  # every way of closing the window hides it
        self.stop_camera()
        super().hideEvent(event)

    def stop_camera(self) -> None:
        """Release the camera (done whenever the window closes or hides)."""
        if self.source is not None and self.source.is_active():
            self.source.stop()

    def _starting(self) -> None:
        """The camera is about to start (again): nothing shown until its first picture."""
        self.problem = ""
        self.message.setText("")
        self.view.clear()
        self.view.set_message(CAMERA_STARTING)
        self._update_controls()

    @Slot(QImage)
    def _frame(self, image: QImage) -> None:
        if self.problem:  # pictures again: the camera came back
            self.problem = ""
            self.message.setText("")
        first = not self.view.has_image()
        self.view.set_image(image)
        if first:
            self._update_controls()
        self._after_frame()

    @Slot(str)
    def _failed(self, sentence: str) -> None:
        self.problem = sentence
        self.message.setText(sentence)
        self.view.clear()
        self.view.set_message(sentence)
        self._update_controls()

    def _update_controls(self) -> None:
        """Enable what can be used now (subclasses)."""

    def _after_frame(self) -> None:
        """A new picture is shown (subclasses)."""


class CaptureDialog(_CameraDialog):
    """Take example photos of one class: one per click of Take photo, or one every
    HOLD_INTERVAL_S while the button or the Space bar is held down. Each photo is emitted at
    once by ``captured`` as PNG bytes (longest side at most MAX_SIDE), for
    ``controller.add_bytes(data, ".png", class_id, source="camera")``."""

    captured = Signal(bytes)

    def __init__(self, class_name: str, parent: QWidget | None = None, *, source: FrameSource | None = None,
                 clock: Callable[[], float] = time.monotonic):
        super().__init__(f"Take photos of '{class_name}'", parent, source, clock)
        self.class_name = class_name
        self.photo_count = 0
        self._holding = False
        self._next_due = 0.0
        self._last_picture = -1  # the view's number of the picture last taken
        self._hold_timer = QTimer(self)
        self._hold_timer.setInterval(HOLD_POLL_MS)
        self._hold_timer.timeout.connect(self._hold_tick)
        heading = QLabel(f"Hold an example of <b>{html.escape(class_name)}</b> in front of the camera.<br>"
                         "Click <b>Take photo</b> for one photo, or hold it down (or hold the Space bar) "
                         "to take several while you move it around.")
        heading.setWordWrap(True)
        self.take_button = QPushButton("Take photo")
        font = QFont(self.take_button.font())
        font.setPointSizeF(font.pointSizeF() * 1.4)
        font.setBold(True)
        self.take_button.setFont(font)
        self.take_button.setMinimumHeight(48)
        self.take_button.setAutoDefault(False)
        # The buttons never take the keyboard: Space always reaches this window (the shutter)
        # instead of clicking whichever button has focus; Enter is Done, Escape closes.
        self.take_button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.take_button.setToolTip("Click for one photo; hold down (or hold Space) for one every 0.2 seconds")
        self.take_button.pressed.connect(self._hold_start)
        self.take_button.released.connect(self._hold_stop)
        self.count_label = QLabel()
        self.count_label.setAccessibleName("Photos taken")
        self.done_button = QPushButton("Done")
        self.done_button.setDefault(True)
        self.done_button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.done_button.clicked.connect(self.accept)
        self._layout(heading)
        self._update_count()
        self._update_controls()

    def _layout(self, heading: QLabel) -> None:
        layout = QVBoxLayout(self)
        layout.addWidget(heading)
        layout.addWidget(self.camera_choice)
        layout.addWidget(self.view, 1)
        layout.addWidget(self.message)
        layout.addWidget(self.take_button)
        row = QHBoxLayout()
        row.addWidget(self.count_label, 1)
        row.addWidget(self.done_button)
        layout.addLayout(row)

    def _update_controls(self) -> None:
        if hasattr(self, "take_button"):
            self.take_button.setEnabled(self.camera_ready())
            if not self.take_button.isEnabled():
                self._hold_stop()

    def _update_count(self) -> None:
        n = self.photo_count
        self.count_label.setText("No photos yet" if n == 0 else f"{n} photo taken" if n == 1 else f"{n} photos taken")

    def take_photo(self) -> bool:
        """Take the picture shown now: emitted at once by ``captured``. False when there is none."""
        image = self.view.latest_image() if self.camera_ready() else None
        data = picture_bytes(image) if image is not None else b""
        if not data:
            return False
        self._last_picture = self.view.picture_number
        self.photo_count += 1
        self._update_count()
        self.view.flash()
        self.captured.emit(data)
        return True

    def is_holding(self) -> bool:
        return self._holding

    def _hold_start(self) -> None:
        """The shutter went down: a photo now, then one every HOLD_INTERVAL_S until it goes up."""
        if self._holding or not self.take_button.isEnabled():
            return
        self._holding = True
        self.take_photo()
        self._next_due = self._clock() + HOLD_INTERVAL_S
        self._hold_timer.start()

    def _hold_stop(self) -> None:
        self._holding = False
        self._hold_timer.stop()

    def _hold_tick(self) -> None:
        """While held: take a photo when one is due and the camera has a new picture."""
        if not self._holding:
            return
        now = self._clock()
        if now < self._next_due or self.view.picture_number == self._last_picture:
            return
        if self.take_photo():
            # The next one is due an interval after this one was due; after a stall (no new
            # picture, a busy window), an interval from now: never a burst to catch up.
            late = now - self._next_due >= HOLD_INTERVAL_S
            self._next_due = (now if late else self._next_due) + HOLD_INTERVAL_S

    def keyPressEvent(self, event) -> None:
        if event.key() != Qt.Key.Key_Space:
            super().keyPressEvent(event)
            return
        event.accept()
        if not self._holding:  # the first press (or a repeat whose press went elsewhere)
            self._hold_start()
        elif event.isAutoRepeat():  # the key's own repeats never take more than the held rate
            self._hold_tick()

    def keyReleaseEvent(self, event) -> None:
        if event.key() != Qt.Key.Key_Space:
            super().keyReleaseEvent(event)
            return
        event.accept()
        if not event.isAutoRepeat():
            self._hold_stop()

    def changeEvent(self, event) -> None:
        # A window that loses the keyboard never hears the Space bar go up: stop then.
        if event.type() == QEvent.Type.ActivationChange and not self.isActiveWindow():
            self._hold_stop()
        super().changeEvent(event)

    def stop_camera(self) -> None:
        self._hold_stop()
        super().stop_camera()


class LiveDialog(_CameraDialog):
    """Live predictions: the camera picture, and a bar per class for it. ``frame_for_prediction``
    sends the picture shown (PNG bytes, longest side at most MAX_SIDE) at most every
    LIVE_INTERVAL_S, and only once :meth:`show_prediction` has answered the previous one, so a
    slow model never has pictures queueing up. Answer every picture, failures included (with
    empty lists and the reason as caption)."""

    frame_for_prediction = Signal(bytes)

    def __init__(self, parent: QWidget | None = None, *, source: FrameSource | None = None,
                 clock: Callable[[], float] = time.monotonic):
        super().__init__("Live predictions", parent, source, clock)
        from metastudio.gui.widgets import ProbabilityBars  # here: widgets may import this module

        self._waiting = False
        self._last_sent = float("-inf")
        heading = QLabel("Point the camera at something: MetaStudio shows which class it looks like.")
        heading.setWordWrap(True)
        self.bars = ProbabilityBars()
        self.bars.preview.hide()  # the camera picture is beside it
        self.bars.set_probabilities([], [], None, self.problem or "Waiting for the first picture…")
        self.close_button = QPushButton("Close")
        self.close_button.clicked.connect(self.accept)
        layout = QVBoxLayout(self)
        layout.addWidget(heading)
        layout.addWidget(self.camera_choice)
        row = QHBoxLayout()
        left = QVBoxLayout()
        left.addWidget(self.view, 1)
        left.addWidget(self.message)
        row.addLayout(left, 3)
        row.addWidget(self.bars, 2)
        layout.addLayout(row, 1)
        layout.addWidget(self.close_button, 0, Qt.AlignmentFlag.AlignRight)

    def waiting_for_prediction(self) -> bool:
        """A picture was sent and its prediction is not shown yet."""
        return self._waiting

    @Slot(list, list, list, str)
    def show_prediction(self, class_names: list[str], colours: list[str], probabilities: list[float],
                        caption: str) -> None:
        """Show the answer for the picture last sent (a bar per class; none when the lists are
        empty, e.g. with a hint or a failure as caption); the next picture may then go."""
        self._waiting = False
        self.bars.set_probabilities(list(class_names), list(colours), list(probabilities) or None, caption)

    def _starting(self) -> None:
        super()._starting()
        self._waiting = False  # an answer lost while the window was closed must not stop it for good

    def _after_frame(self) -> None:
        if self._waiting:
            return
        now = self._clock()
        if now - self._last_sent < LIVE_INTERVAL_S:
            return
        data = picture_bytes(self.view.latest_image())
        if not data:
            return
        self._waiting, self._last_sent = True, now
        self.frame_for_prediction.emit(data)

    def _failed(self, sentence: str) -> None:
        super()._failed(sentence)
        self.bars.set_probabilities([], [], None, "")
