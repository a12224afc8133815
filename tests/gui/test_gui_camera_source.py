"""Where camera pictures come from: whether there is a camera (in plain words when not), the PNG
bytes of a picture, and the real camera source driven through a fake Qt Multimedia."""

from __future__ import annotations

import enum
import sys
import threading
import types

import pytest

from PySide6.QtCore import QByteArray, QObject, QSize, Qt, Signal
from PySide6.QtGui import QColor, QImage
from PySide6.QtWidgets import QApplication

from gui_helpers import MULTIMEDIA, halves, opened
from metastudio.gui import camera_source
from metastudio.gui.camera import CaptureDialog
from metastudio.gui.camera_source import (CAMERA_FAILED, CAMERA_UNPLUGGED, NO_CAMERA, CameraSource,
                                          camera_status, picture_bytes)


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

    monkeypatch.setattr(camera_source, "_multimedia", fail)
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


@pytest.mark.parametrize("size, expected", [((1280, 720), (640, 360)), ((480, 1000), (307, 640)),
                                            ((200, 100), (200, 100))])
def test_picture_bytes_are_png_at_most_640(qapp, size, expected):
    image = opened(picture_bytes(halves(*size)))
    assert image.size == expected
    assert image.mode == "RGB"


def test_picture_bytes_of_nothing(qapp):
    assert picture_bytes(None) == b""
    assert picture_bytes(QImage()) == b""


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
    assert mm.cameras == [] and failures == [camera_source.CAMERA_DENIED]
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
