"""Where camera pictures come from, and whether there is a camera at all.

Qt Multimedia is imported only when a camera is actually used, and every failure to import it
(a missing system library, say) or to find a camera is turned into a plain sentence
(:func:`camera_status`): the rest of the app works without it. The camera windows
(:mod:`metastudio.gui.camera`) get their pictures from a :class:`FrameSource`, so everything but
the camera itself can be driven by feeding pictures in (tests do).

Frames may arrive at 30 per second: :class:`CameraSource` keeps only the latest one and converts
it to a picture at most once per turn of the event loop.
"""

from __future__ import annotations

import importlib
import re
import threading

from PySide6.QtCore import QBuffer, QByteArray, QCoreApplication, QIODevice, QObject, Qt, Signal
from PySide6.QtGui import QImage

MAX_SIDE = 640  # photos and live pictures are scaled down so that their longest side is at most this

NO_CAMERA = "No camera found. Connect one and try again."
CAMERA_DENIED = ("MetaStudio is not allowed to use the camera. Allow it in your computer's privacy settings "
                 "(on a Mac: System Settings > Privacy & Security > Camera), then try again.")
CAMERA_FAILED = ("The camera stopped working. Another program may be using it: close that program, "
                 "then close this window and open it again.")
CAMERA_UNPLUGGED = "The camera was disconnected. Connect it again and the picture comes back."


def _multimedia():
    """The QtMultimedia module; raises ImportError (or OSError) where it cannot be loaded."""
    return importlib.import_module("PySide6.QtMultimedia")


def _plain_reason(error: BaseException) -> str:
    """A short reason for a failed import of the camera support, naming a missing library."""
    missing = re.search(r"(lib[\w.+-]+\.so[\w.]*|[\w.+-]+\.(?:dll|dylib))", str(error))
    if missing:
        return f"the system library {missing.group(1)} is missing"
    return "its camera part could not be loaded"


def unavailable(error: BaseException) -> str:
    """The sentence for a computer whose camera support can't be loaded (``error`` says why)."""
    return f"Camera support is not available on this computer ({_plain_reason(error)})."


def camera_status() -> tuple[bool, str]:
    """Whether a camera can be used now, and when not, a plain sentence saying why."""
    try:
        multimedia = _multimedia()
    except (ImportError, OSError) as error:
        return False, unavailable(error)
    try:
        inputs = multimedia.QMediaDevices.videoInputs()
    except Exception as error:  # noqa: BLE001 -- a broken multimedia back end must not stop the app
        return False, unavailable(error)
    if not inputs:
        return False, NO_CAMERA
    return True, ""


def picture_bytes(image: QImage, max_side: int = MAX_SIDE) -> bytes:
    """``image`` as PNG bytes, scaled down (keeping its shape) so its longest side is at most
    ``max_side``; b"" when it cannot be encoded."""
    if image is None or image.isNull():
        return b""
    if max(image.width(), image.height()) > max_side:
        image = image.scaled(max_side, max_side, Qt.AspectRatioMode.KeepAspectRatio,
                             Qt.TransformationMode.SmoothTransformation)
    image = image.convertToFormat(QImage.Format.Format_RGB888)  # camera pictures are opaque
    data = QByteArray()
    buffer = QBuffer(data)
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    ok = image.save(buffer, "PNG")
    buffer.close()
    return bytes(data.data()) if ok else b""


class FrameSource(QObject):
    """Where the pictures come from: ``frame`` once per picture while started, ``failed`` with a
    plain sentence when the camera can't be used. This base is fed by hand with :meth:`feed`
    (tests, demos); :class:`CameraSource` reads a real camera."""

    frame = Signal(QImage)
    failed = Signal(str)

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._active = False

    def start(self) -> None:
        self._active = True

    def stop(self) -> None:
        self._active = False

    def is_active(self) -> bool:
        return self._active

    def feed(self, image: QImage) -> None:
        """Deliver a picture, as a camera would; dropped while the source is stopped."""
        if self._active and image is not None and not image.isNull():
            self.frame.emit(image)

    def cameras(self) -> list[tuple[bytes, str]]:
        """The cameras to choose from, as (id, name); empty where there is no choice."""
        return []

    def current_camera(self) -> bytes | None:
        return None

    def set_camera(self, camera_id: bytes) -> None:
        """Use another of :meth:`cameras` (restarting if running)."""


def _pick_format(formats):
    """The camera format to ask for: the smallest one at least MAX_SIDE on its longest side
    (photos are never bigger, and a small format is cheap to convert), at a smooth frame rate
    near 30 per second; None to leave the camera's own choice."""
    def long_side(f) -> int:
        size = f.resolution()
        return max(size.width(), size.height())

    usable = [f for f in formats if f.maxFrameRate() >= 15] or list(formats)
    if not usable:
        return None
    big = [f for f in usable if long_side(f) >= MAX_SIDE]
    if big:
        return min(big, key=lambda f: (long_side(f), abs(f.maxFrameRate() - 30)))
    return max(usable, key=lambda f: (long_side(f), -abs(f.maxFrameRate() - 30)))


class CameraSource(FrameSource):
    """A real camera (QCamera in a QMediaCaptureSession feeding a QVideoSink). The camera is
    opened by :meth:`start` (after asking for permission where the system requires it) and
    released by :meth:`stop`. Raises ImportError when Qt Multimedia can't be loaded: check
    :func:`camera_status` first."""

    _frame_waiting = Signal()

    def __init__(self, camera_id: bytes | None = None, parent: QObject | None = None):
        super().__init__(parent)
        self._mm = _multimedia()
        self._camera_id = camera_id
        self._camera = self._session = self._sink = None
        self._lock = threading.Lock()
        self._pending = None  # the latest video frame not yet turned into a picture
        self.last_error_detail = ""  # the camera's own words on the last failure, for support
        self._devices = self._mm.QMediaDevices(self)
        self._devices.videoInputsChanged.connect(self._inputs_changed)
        self._frame_waiting.connect(self._convert, Qt.ConnectionType.QueuedConnection)

    def cameras(self) -> list[tuple[bytes, str]]:
        return [(bytes(d.id().data()), d.description()) for d in self._mm.QMediaDevices.videoInputs()]

    def current_camera(self) -> bytes | None:
        device = self._device()
        return None if device is None else bytes(device.id().data())

    def set_camera(self, camera_id: bytes) -> None:
        self._camera_id = bytes(camera_id)
        if self._active:
            self._close()
            self._open()

    def start(self) -> None:
        if self._active:
            return
        self._active = True
        self._with_permission()

    def stop(self) -> None:
        self._active = False
        self._close()

    def _with_permission(self) -> None:
        """Open the camera once the system allows it (asks the person the first time on macOS)."""
        try:
            from PySide6.QtCore import QCameraPermission
        except ImportError:  # a Qt without permissions: nothing to ask
            self._open()
            return
        app = QCoreApplication.instance()
        permission = QCameraPermission()
        status = app.checkPermission(permission)
        if status == Qt.PermissionStatus.Granted:
            self._open()
        elif status == Qt.PermissionStatus.Undetermined:
            app.requestPermission(permission, self, self._permission_answered)
        else:
            self.failed.emit(CAMERA_DENIED)

    def _permission_answered(self, permission) -> None:
        if not self._active:
            return
        if permission.status() == Qt.PermissionStatus.Granted:
            self._open()
        else:
            self.failed.emit(CAMERA_DENIED)

    def _device(self):
        inputs = self._mm.QMediaDevices.videoInputs()
        for device in inputs:
            if self._camera_id is not None and bytes(device.id().data()) == self._camera_id:
                return device
        default = self._mm.QMediaDevices.defaultVideoInput()
        if not default.isNull():
            return default
        return inputs[0] if inputs else None

    def _open(self) -> None:
        if not self._active or self._camera is not None:
            return
        device = self._device()
        if device is None:
            self.failed.emit(NO_CAMERA)
            return
        mm = self._mm
        self._camera = mm.QCamera(device, self)
        chosen = _pick_format(device.videoFormats())
        if chosen is not None:
            self._camera.setCameraFormat(chosen)
        self._camera.errorOccurred.connect(self._camera_error)
        self._sink = mm.QVideoSink(self)
        # Direct: the back end may deliver frames on its own thread; only the latest one is kept.
        self._sink.videoFrameChanged.connect(self._frame_arrived, Qt.ConnectionType.DirectConnection)
        self._session = mm.QMediaCaptureSession(self)
        self._session.setCamera(self._camera)
        self._session.setVideoSink(self._sink)
        self._camera.start()

    def _close(self) -> None:
        """Stop and release the camera (its light goes off), dropping any frame not yet shown."""
        camera, session, sink = self._camera, self._session, self._sink
        self._camera = self._session = self._sink = None
        if sink is not None:
            sink.videoFrameChanged.disconnect(self._frame_arrived)
        if camera is not None:
            camera.stop()
        for obj in (session, camera, sink):
            if obj is not None:
                obj.deleteLater()
        with self._lock:
            self._pending = None

    def _frame_arrived(self, frame) -> None:
        """Any thread: keep this frame as the latest, and ask the GUI thread to show it unless
        it was already asked (then it shows this newer one instead)."""
        if not self._active or not frame.isValid():
            return
        with self._lock:
            ask = self._pending is None
            self._pending = self._mm.QVideoFrame(frame)
        if ask:
            self._frame_waiting.emit()

    def _convert(self) -> None:
        with self._lock:
            frame, self._pending = self._pending, None
        if frame is None or not self._active:
            return
        image = frame.toImage()
        if not image.isNull():
            self.frame.emit(image)

    def _camera_error(self, error, text: str) -> None:
        if error == self._mm.QCamera.Error.NoError:
            return
        self.last_error_detail = text
        self._close()
        self.failed.emit(CAMERA_FAILED)

    def _inputs_changed(self) -> None:
        """A camera was plugged in or out: let go of a vanished one, open one that came back."""
        if not self._active:
            return
        ids = {bytes(d.id().data()) for d in self._mm.QMediaDevices.videoInputs()}
        if self._camera is not None:
            if bytes(self._camera.cameraDevice().id().data()) not in ids:
                self._close()
                self.failed.emit(CAMERA_UNPLUGGED)
        elif ids:
            self._with_permission()
