"""The webcam windows, offscreen with pytest-qt: pictures are fed in by hand (a FrameSource) or
come through a stand-in for Qt Multimedia, so no camera (and no libpulse) is needed. Time for
the held shutter and the live pictures is a fake clock the tests move on."""

from __future__ import annotations

import enum
import io
import sys
import threading
import types

import pytest
from PIL import Image

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PySide6.QtCore import QByteArray, QEvent, QObject, QSize, Qt, Signal  # noqa: E402
from PySide6.QtGui import QColor, QImage, QKeyEvent, QPainter  # noqa: E402
from PySide6.QtTest import QTest  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from metastudio.gui import camera  # noqa: E402
from metastudio.gui.camera import (CAMERA_FAILED, CAMERA_UNPLUGGED, NO_CAMERA, CameraSource,  # noqa: E402
                                   CameraView, CaptureDialog, FrameSource, LiveDialog, camera_status,
                                   picture_bytes)

MULTIMEDIA = "PySide6.QtMultimedia"


class Clock:
    """A clock the test moves on by hand."""

    def __init__(self):
        self.now = 64.0  # steps of 1/8 s and 1/32 s stay exact

    def __call__(self) -> float:
        return self.now


def halves(width: int, height: int, left: str = "red", right: str = "blue") -> QImage:
    """A picture whose left half and right half have different colours (to see mirroring)."""
    image = QImage(width, height, QImage.Format.Format_RGB32)
    image.fill(QColor(right))
    painter = QPainter(image)
    painter.fillRect(0, 0, width // 2, height, QColor(left))
    painter.end()
    return image


def opened(data: bytes) -> Image.Image:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


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


# --- camera_status and the lazy import ---------------------------------------------------------


def test_camera_status_here_is_a_plain_answer():
    ok, sentence = camera_status()
    assert isinstance(ok, bool)
    if ok:
        assert sentence == ""
    else:
        assert sentence in (NO_CAMERA,) or sentence.startswith("Camera support is not available on this computer (")
        for word in ("QCamera", "QtMultimedia", "Traceback", "ImportError", "frame", "sink"):
            assert word not in sentence


def test_camera_status_without_the_module(monkeypatch):
    monkeypatch.setitem(sys.modules, MULTIMEDIA, None)  # any import of it fails
    ok, sentence = camera_status()
    assert not ok
    assert sentence == "Camera support is not available on this computer (its camera part could not be loaded)."


def test_camera_status_names_a_missing_system_library(monkeypatch):
    def fail():
        raise ImportError("libpulse.so.0: cannot open shared object file: No such file or directory")

    monkeypatch.setattr(camera, "_multimedia", fail)
    assert camera_status() == (False, "Camera support is not available on this computer "
                                      "(the system library libpulse.so.0 is missing).")


@pytest.mark.parametrize("inputs, expected", [([], (False, NO_CAMERA)), (["a camera"], (True, ""))])
def test_camera_status_counts_cameras(monkeypatch, inputs, expected):
    fake = types.SimpleNamespace(QMediaDevices=types.SimpleNamespace(videoInputs=lambda: list(inputs)))
    monkeypatch.setitem(sys.modules, MULTIMEDIA, fake)
    assert camera_status() == expected


def test_camera_source_needs_the_module(monkeypatch, qtbot):
    monkeypatch.setitem(sys.modules, MULTIMEDIA, None)
    with pytest.raises(ImportError):
        CameraSource()


# --- pictures and the view ---------------------------------------------------------------------


@pytest.mark.parametrize("size, expected", [((1280, 720), (640, 360)), ((480, 1000), (307, 640)),
                                            ((200, 100), (200, 100))])
def test_picture_bytes_are_png_at_most_640(qapp, size, expected):
    image = opened(picture_bytes(halves(*size)))
    assert image.size == expected
    assert image.mode == "RGB"


def test_picture_bytes_of_nothing(qapp):
    assert picture_bytes(None) == b""
    assert picture_bytes(QImage()) == b""


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


# --- taking photos -----------------------------------------------------------------------------


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


# --- live predictions --------------------------------------------------------------------------


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


# --- the real camera path, through a stand-in for Qt Multimedia --------------------------------


class FakeFormat:
    def __init__(self, width: int, height: int, fps: float):
        self._size, self._fps = QSize(width, height), fps

    def resolution(self) -> QSize:
        return self._size

    def maxFrameRate(self) -> float:
        return self._fps


class FakeDevice:
    def __init__(self, ident: bytes = b"", name: str = "", formats=()):
        self._id, self._name, self._formats = ident, name, list(formats)

    def id(self) -> QByteArray:
        return QByteArray(self._id)

    def description(self) -> str:
        return self._name

    def isNull(self) -> bool:
        return not self._id

    def videoFormats(self):
        return self._formats


class FakeFrame:
    def __init__(self, other):
        self.image = other.image if isinstance(other, FakeFrame) else other

    def isValid(self) -> bool:
        return not self.image.isNull()

    def toImage(self) -> QImage:
        return self.image


def fake_multimedia():
    """A module with the parts of Qt Multimedia that CameraSource uses, recording what happens."""
    mm = types.ModuleType(MULTIMEDIA)
    mm.inputs, mm.cameras, mm.device_lists = [], [], []

    class QMediaDevices(QObject):
        videoInputsChanged = Signal()

        def __init__(self, parent=None):
            super().__init__(parent)
            mm.device_lists.append(self)

        @staticmethod
        def videoInputs():
            return list(mm.inputs)

        @staticmethod
        def defaultVideoInput():
            return mm.inputs[0] if mm.inputs else FakeDevice()

    class QCamera(QObject):
        errorOccurred = Signal(object, str)

        class Error(enum.Enum):
            NoError = 0
            CameraError = 1

        def __init__(self, device, parent=None):
            super().__init__(parent)
            self.device, self.active, self.format = device, False, None
            mm.cameras.append(self)

        def cameraDevice(self):
            return self.device

        def setCameraFormat(self, f):
            self.format = f

        def start(self):
            self.active = True

        def stop(self):
            self.active = False

    class QMediaCaptureSession(QObject):
        def setCamera(self, c):
            self.camera = c

        def setVideoSink(self, s):
            self.sink = s

    class QVideoSink(QObject):
        videoFrameChanged = Signal(object)

    mm.QMediaDevices, mm.QCamera, mm.QMediaCaptureSession, mm.QVideoSink = (
        QMediaDevices, QCamera, QMediaCaptureSession, QVideoSink)
    mm.QVideoFrame = FakeFrame
    return mm


@pytest.fixture
def mm(monkeypatch):
    module = fake_multimedia()
    module.inputs[:] = [FakeDevice(b"cam0", "Built-in camera",
                                   [FakeFormat(320, 240, 30), FakeFormat(640, 480, 30), FakeFormat(640, 480, 60),
                                    FakeFormat(1920, 1080, 30), FakeFormat(4000, 3000, 5)])]
    monkeypatch.setitem(sys.modules, MULTIMEDIA, module)
    return module


def sink_of(source: CameraSource, mm):
    """The video sink of the camera ``source`` opened last."""
    return [c for c in source.children() if isinstance(c, mm.QVideoSink)][-1]


def test_camera_source_opens_the_camera_and_keeps_only_the_latest_frame(qtbot, mm):
    source = CameraSource()
    got = []
    source.frame.connect(got.append)
    source.start()
    assert len(mm.cameras) == 1
    cam = mm.cameras[0]
    assert cam.active and cam.device is mm.inputs[0]
    assert (cam.format.resolution(), cam.format.maxFrameRate()) == (QSize(640, 480), 30)
    sink = sink_of(source, mm)
    a, b, c = halves(64, 48), halves(64, 48, "green", "white"), halves(64, 48, "black", "yellow")
    for image in (a, b, c):  # three frames before the window had time: only the last is shown
        sink.videoFrameChanged.emit(FakeFrame(image))
    assert got == []
    qtbot.waitUntil(lambda: len(got) == 1, timeout=2000)
    qtbot.wait(20)
    assert len(got) == 1 and got[0].pixelColor(0, 0) == QColor("black")  # c, the latest
    source.stop()
    assert not cam.active
    sink.videoFrameChanged.emit(FakeFrame(a))
    qtbot.wait(20)
    assert len(got) == 1  # nothing after stop


def test_camera_source_frames_from_another_thread_reach_the_window_thread(qtbot, mm):
    source = CameraSource()
    got = []
    source.frame.connect(lambda image: got.append(threading.current_thread()))
    source.start()
    sink = sink_of(source, mm)
    worker = threading.Thread(target=lambda: [sink.videoFrameChanged.emit(FakeFrame(halves(32, 24)))
                                              for _ in range(5)])
    worker.start()
    worker.join(5)
    assert not worker.is_alive()
    qtbot.waitUntil(lambda: len(got) >= 1, timeout=2000)
    assert all(t is threading.main_thread() for t in got)
    assert len(got) <= 5
    source.stop()


def test_camera_source_error_and_unplug_are_plain_and_release_the_camera(qtbot, mm):
    source = CameraSource()
    failures = []
    source.failed.connect(failures.append)
    source.start()
    cam = mm.cameras[0]
    cam.errorOccurred.emit(mm.QCamera.Error.CameraError, "V4L2: device busy (EBUSY)")
    assert failures == [CAMERA_FAILED] and not cam.active
    assert source.last_error_detail == "V4L2: device busy (EBUSY)"
    mm.device_lists[0].videoInputsChanged.emit()  # still listed: opened again
    assert len(mm.cameras) == 2 and mm.cameras[1].active
    unplugged = mm.inputs.pop()
    mm.device_lists[0].videoInputsChanged.emit()
    assert failures[-1] == CAMERA_UNPLUGGED and not mm.cameras[1].active
    mm.inputs.append(unplugged)
    mm.device_lists[0].videoInputsChanged.emit()
    assert len(mm.cameras) == 3 and mm.cameras[2].active
    source.stop()
    assert not any(c.active for c in mm.cameras)
    mm.device_lists[0].videoInputsChanged.emit()
    assert len(mm.cameras) == 3  # stopped: plugging in does not start it


def test_camera_source_asks_permission_and_respects_a_no(qtbot, mm, monkeypatch):
    app = QApplication.instance()
    monkeypatch.setattr(type(app), "checkPermission", lambda self, p: Qt.PermissionStatus.Denied)
    source = CameraSource()
    failures = []
    source.failed.connect(failures.append)
    source.start()
    assert mm.cameras == [] and failures == [camera.CAMERA_DENIED]
    source.stop()
    answers = []

    def request(self, permission, context, callback):
        answers.append(context)
        callback(types.SimpleNamespace(status=lambda: Qt.PermissionStatus.Granted))

    monkeypatch.setattr(type(app), "checkPermission", lambda self, p: Qt.PermissionStatus.Undetermined)
    monkeypatch.setattr(type(app), "requestPermission", request)
    source.start()
    assert answers == [source] and len(mm.cameras) == 1 and mm.cameras[0].active
    source.stop()


def test_capture_window_runs_the_real_camera_only_while_shown(qtbot, mm):
    mm.inputs.append(FakeDevice(b"cam1", "USB camera", [FakeFormat(1280, 720, 30)]))
    dialog = CaptureDialog("cat")
    qtbot.addWidget(dialog)
    photos = []
    dialog.captured.connect(photos.append)
    assert isinstance(dialog.source, CameraSource) and mm.cameras == []
    assert not dialog.camera_choice.isHidden() and dialog.camera_choice.count() == 2
    dialog.show()
    cam = mm.cameras[-1]
    assert cam.active and cam.device.description() == "Built-in camera"
    sink_of(dialog.source, mm).videoFrameChanged.emit(FakeFrame(halves(1280, 720)))
    qtbot.waitUntil(dialog.take_button.isEnabled, timeout=2000)
    dialog.take_button.click()
    assert opened(photos[0]).size == (640, 360)
    dialog.camera_choice.setCurrentIndex(1)
    assert not cam.active and mm.cameras[-1].active and mm.cameras[-1].device.description() == "USB camera"
    dialog.done_button.click()
    assert not any(c.active for c in mm.cameras)
