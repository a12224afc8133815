"""The camera windows, fed pictures by hand: the view, taking photos (a click, a held button or
Space bar), failures said plainly, the camera running only while a window is shown, and live
pictures throttled and sent one at a time."""

from __future__ import annotations

import sys

import pytest

from PySide6.QtCore import QEvent, QSize, Qt
from PySide6.QtGui import QColor, QKeyEvent
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

from gui_helpers import MULTIMEDIA, halves, opened
from metastudio.gui import camera
from metastudio.gui.camera import CameraView, CaptureDialog, LiveDialog
from metastudio.gui.camera_source import CAMERA_FAILED, NO_CAMERA, FrameSource


class Clock:
    """A clock the test moves on by hand."""

    def __init__(self):
        self.now = 64.0  # steps of 1/8 s and 1/32 s stay exact

    def __call__(self) -> float:
        return self.now


def key(dialog, kind: QEvent.Type, autorepeat: bool = False) -> None:
    QApplication.sendEvent(dialog, QKeyEvent(kind, Qt.Key.Key_Space, Qt.KeyboardModifier.NoModifier, " ",
                                             autorepeat))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def capture(qtbot, clock):
    """A shown CaptureDialog for 'cat' with a hand-fed source, and the photos it emitted."""
    source = FrameSource()
    dialog = CaptureDialog("cat", source=source, clock=clock)
    qtbot.addWidget(dialog)
    photos: list[bytes] = []
    dialog.captured.connect(photos.append)
    dialog.show()
    qtbot.waitExposed(dialog)
    yield dialog, source, photos
    dialog.close()
    assert not source.is_active()


def test_view_keeps_the_latest_picture_mirrored_and_fits_it(qtbot):
    view = CameraView()
    qtbot.addWidget(view)
    view.resize(400, 400)
    assert view.latest_image() is None and not view.has_image()
    view.set_image(halves(1000, 1000))
    view.set_image(halves(200, 100))  # only the latest is kept
    shown = view.latest_image()
    assert shown.size() == QSize(200, 100)
    assert shown.pixelColor(10, 50) == QColor("blue") and shown.pixelColor(190, 50) == QColor("red")
    assert view.image_rect().size() == QSize(400, 200)  # its shape kept
    assert view.image_rect().top() == 100  # centred
    view.mirrored = False
    view.set_image(halves(200, 100))
    assert view.latest_image().pixelColor(10, 50) == QColor("red")
    view.show()
    view.mirrored = True
    view.set_image(halves(200, 100))
    drawn = view.grab().toImage()  # drawn mirrored: blue on the left, red on the right
    assert drawn.pixelColor(20, 200) == QColor("blue") and drawn.pixelColor(380, 200) == QColor("red")
    assert drawn.pixelColor(200, 50) != QColor("blue")  # above the picture: background
    view.flash()
    assert view.is_flashing()
    view.grab()  # paints without error, flashing or not
    qtbot.waitUntil(lambda: not view.is_flashing(), timeout=2000)
    view.clear()
    view.set_message(NO_CAMERA)
    view.grab()
    assert view.latest_image() is None and view.message() == NO_CAMERA


def test_take_photo_emits_a_png_of_the_picture_shown(capture, qtbot):
    dialog, source, photos = capture
    assert dialog.windowTitle() == "Take photos of 'cat'"
    assert source.is_active()
    assert not dialog.take_button.isEnabled()  # no picture yet
    assert dialog.count_label.text() == "No photos yet"
    source.feed(halves(1280, 960))
    assert dialog.take_button.isEnabled()
    dialog.take_button.click()
    assert len(photos) == 1
    photo = opened(photos[0])
    assert photo.size == (640, 480)
    assert photo.getpixel((20, 240))[2] > 200 and photo.getpixel((620, 240))[0] > 200  # mirrored as shown
    assert dialog.count_label.text() == "1 photo taken"
    assert dialog.view.is_flashing()
    QTest.mouseClick(dialog.take_button, Qt.MouseButton.LeftButton)
    QTest.mouseClick(dialog.take_button, Qt.MouseButton.LeftButton)
    assert len(photos) == 3  # one per click, however quick
    assert dialog.count_label.text() == "3 photos taken"
    assert dialog.photo_count == 3


def test_holding_space_takes_a_photo_every_fifth_of_a_second(capture, clock, qtbot):
    dialog, source, photos = capture
    source.feed(halves(320, 240))
    key(dialog, QEvent.Type.KeyPress)
    assert len(photos) == 1 and dialog.is_holding()
    for _ in range(40):  # 1.25 s of the key's own repeats, X11 style: release + press, both auto
        clock.now += 1 / 32
        source.feed(halves(320, 240))
        key(dialog, QEvent.Type.KeyRelease, autorepeat=True)
        key(dialog, QEvent.Type.KeyPress, autorepeat=True)
    assert dialog.is_holding()
    assert 6 <= len(photos) <= 7, len(photos)  # 1 + 1.25 s / 0.2 s, not one per repeat (41)
    key(dialog, QEvent.Type.KeyRelease)
    assert not dialog.is_holding()
    taken = len(photos)
    clock.now += 1.0
    source.feed(halves(320, 240))
    qtbot.wait(3 * camera.HOLD_POLL_MS)
    assert len(photos) == taken
    assert all(opened(p).size == (320, 240) for p in photos)
    assert dialog.count_label.text() == f"{taken} photos taken"


def test_a_held_shutter_never_takes_the_same_picture_twice(capture, clock, qtbot):
    dialog, source, photos = capture
    source.feed(halves(64, 48))
    key(dialog, QEvent.Type.KeyPress)
    clock.now += 1.0  # long past due, but the camera sent nothing new
    qtbot.wait(4 * camera.HOLD_POLL_MS)
    assert len(photos) == 1
    source.feed(halves(64, 48))
    qtbot.waitUntil(lambda: len(photos) == 2, timeout=2000)  # the timer takes it, no key repeat needed
    qtbot.wait(4 * camera.HOLD_POLL_MS)
    assert len(photos) == 2  # and no burst to catch up
    key(dialog, QEvent.Type.KeyRelease)


def test_holding_the_button_down_takes_photos_until_it_goes_up(capture, clock, qtbot):
    dialog, source, photos = capture
    source.feed(halves(64, 48))
    QTest.mousePress(dialog.take_button, Qt.MouseButton.LeftButton)
    assert len(photos) == 1
    for n in (2, 3):
        clock.now += camera.HOLD_INTERVAL_S
        source.feed(halves(64, 48))
        qtbot.waitUntil(lambda: len(photos) == n, timeout=2000)
    QTest.mouseRelease(dialog.take_button, Qt.MouseButton.LeftButton)
    assert not dialog.is_holding()
    clock.now += 1.0
    source.feed(halves(64, 48))
    qtbot.wait(4 * camera.HOLD_POLL_MS)
    assert len(photos) == 3


def test_space_goes_to_the_shutter_whatever_was_clicked(capture, qtbot):
    dialog, source, photos = capture
    source.feed(halves(64, 48))
    for button in (dialog.take_button, dialog.done_button):
        assert button.focusPolicy() == Qt.FocusPolicy.NoFocus
    QTest.mouseClick(dialog.take_button, Qt.MouseButton.LeftButton)
    QTest.keyClick(dialog, Qt.Key.Key_Space)
    assert len(photos) == 2 and dialog.isVisible()  # Space did not click Done


def test_without_a_camera_the_window_says_so_and_takes_nothing(qtbot, monkeypatch):
    monkeypatch.setattr(camera, "camera_status", lambda: (False, NO_CAMERA))
    dialog = CaptureDialog("cat")
    qtbot.addWidget(dialog)
    photos = []
    dialog.captured.connect(photos.append)
    dialog.show()
    qtbot.waitExposed(dialog)
    assert dialog.source is None
    assert dialog.message.text() == NO_CAMERA and dialog.view.message() == NO_CAMERA
    assert not dialog.take_button.isEnabled()
    dialog.take_button.click()
    key(dialog, QEvent.Type.KeyPress)
    key(dialog, QEvent.Type.KeyRelease)
    assert not dialog.take_photo()
    assert photos == [] and dialog.count_label.text() == "No photos yet"
    dialog.done_button.click()
    assert not dialog.isVisible()


def test_without_camera_support_both_windows_say_so(qtbot, monkeypatch):
    monkeypatch.setitem(sys.modules, MULTIMEDIA, None)
    capture = CaptureDialog("dog")
    live = LiveDialog()
    for dialog in (capture, live):
        qtbot.addWidget(dialog)
        dialog.show()
        assert dialog.source is None
        assert dialog.message.text().startswith("Camera support is not available on this computer")
    assert not capture.take_button.isEnabled()
    assert live.bars.caption.text().startswith("Camera support is not available")


def test_a_camera_failure_disables_the_shutter_until_pictures_come_back(capture):
    dialog, source, photos = capture
    source.feed(halves(64, 48))
    assert dialog.take_button.isEnabled()
    source.failed.emit(CAMERA_FAILED)
    assert not dialog.take_button.isEnabled()
    assert dialog.message.text() == CAMERA_FAILED and dialog.view.latest_image() is None
    assert not dialog.take_photo()
    source.feed(halves(64, 48))
    assert dialog.take_button.isEnabled() and dialog.message.text() == ""
    assert dialog.take_photo() and len(photos) == 1
    source.failed.emit(CAMERA_FAILED)
    dialog.hide()
    dialog.show()  # opened again: it tries the camera again
    assert source.is_active() and dialog.message.text() == "" and dialog.view.message() == camera.CAMERA_STARTING


@pytest.mark.parametrize("how", ["done", "escape", "close", "hide"])
def test_closing_stops_the_camera_and_opening_starts_it(qtbot, how):
    source = FrameSource()
    dialog = CaptureDialog("cat", source=source)
    qtbot.addWidget(dialog)
    assert not source.is_active()  # not before it is shown
    dialog.show()
    assert source.is_active()
    source.feed(halves(64, 48))
    {"done": dialog.done_button.click, "escape": lambda: QTest.keyClick(dialog, Qt.Key.Key_Escape),
     "close": dialog.close, "hide": dialog.hide}[how]()
    assert not dialog.isVisible() and not source.is_active()
    dialog.show()
    assert source.is_active()
    assert not dialog.take_button.isEnabled()  # the old picture is not shown as if live
    dialog.close()
    assert not source.is_active()


def test_live_pictures_are_throttled_and_wait_for_the_answer(qtbot, clock):
    source = FrameSource()
    dialog = LiveDialog(source=source, clock=clock)
    qtbot.addWidget(dialog)
    sent: list[bytes] = []
    dialog.frame_for_prediction.connect(sent.append)
    dialog.show()
    source.feed(halves(1920, 1080))
    assert len(sent) == 1 and dialog.waiting_for_prediction()
    assert opened(sent[0]).size == (640, 360)
    for _ in range(20):  # 2 s of pictures, no answer yet: nothing more goes
        clock.now += 0.1
        source.feed(halves(1920, 1080))
    assert len(sent) == 1
    dialog.show_prediction(["cat", "dog"], ["#ff0000", "#0000ff"], [0.7, 0.3], "cat (70%)")
    assert not dialog.waiting_for_prediction()
    assert dialog.bars.values == pytest.approx([70.0, 30.0]) and dialog.bars.caption.text() == "cat (70%)"
    source.feed(halves(1920, 1080))
    assert len(sent) == 2  # long past the interval: at once
    dialog.show_prediction(["cat", "dog"], ["#ff0000", "#0000ff"], [0.4, 0.6], "dog (60%)")
    clock.now += 0.2
    source.feed(halves(1920, 1080))
    assert len(sent) == 2  # answered, but too soon
    clock.now += 0.3
    source.feed(halves(1920, 1080))
    assert len(sent) == 3
    dialog.show_prediction([], [], [], "Give at least two classes a few examples first.")
    assert dialog.bars.values == [] and dialog.bars.plot.isHidden()
    assert dialog.bars.caption.text() == "Give at least two classes a few examples first."
    dialog.close()
    assert not source.is_active()
    clock.now += 5
    source.feed(halves(64, 48))
    assert len(sent) == 3  # nothing once closed


def test_live_window_with_a_fast_model_answering_at_once(qtbot, clock):
    source = FrameSource()
    dialog = LiveDialog(source=source, clock=clock)
    qtbot.addWidget(dialog)
    answered = []

    def model(data: bytes) -> None:
        answered.append(opened(data).size)
        dialog.show_prediction(["a", "b"], ["#111111", "#222222"], [0.5, 0.5], "a (50%)")

    dialog.frame_for_prediction.connect(model)
    dialog.show()
    for _ in range(24):  # 3 s at 8 pictures a second
        source.feed(halves(320, 240))
        clock.now += 0.125
    assert len(answered) == 6  # one every 0.5 s
    assert not dialog.waiting_for_prediction()
    dialog.close()


def test_reopened_live_window_does_not_wait_for_a_lost_answer(qtbot, clock):
    source = FrameSource()
    dialog = LiveDialog(source=source, clock=clock)
    qtbot.addWidget(dialog)
    sent = []
    dialog.frame_for_prediction.connect(sent.append)
    dialog.show()
    source.feed(halves(64, 48))
    dialog.close()  # its answer never comes
    dialog.show()
    clock.now += 1
    source.feed(halves(64, 48))
    assert len(sent) == 2
    dialog.close()
