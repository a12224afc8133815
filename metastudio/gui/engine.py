"""Worker threads of the app: adapting and predicting, and making thumbnails.

Each worker is a ``QObject`` living in its own ``QThread``; the GUI sends it requests through
queued signals and it answers with signals carrying only plain Python values (dicts of names,
floats and strings -- never tensors or widgets). A worker's exception is caught and sent back
as a ``failed`` signal with the message and the traceback, worded by
:func:`metastudio.errors.for_person` as the command line words it, so the window can show it.

A plugin's ``adapt`` or ``predict`` may hang: :meth:`EngineClient.cancel` (a person's Cancel)
stops waiting for it from the GUI thread through the session's thread-safe
:meth:`~metastudio.app.session.ClassifierSession.cancel`. The plugin call is left running in its
own daemon thread, so the worker answers at once and stays free for the next request.

Why not superqt's ``thread_worker``: those run on a ``QThreadPool``, so one particular worker
cannot be joined, and the adapt worker must keep its loaded model and caches between requests
(one long-lived thread, requests coalesced to the newest). A plain ``QThread`` that
:meth:`EngineClient.shutdown` quits and waits for is simpler and testable
(``qtbot.waitUntil(thread.isFinished)``).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QThread, Signal, Slot

from metastudio.errors import ImageLoadError, MetaStudioError, PluginCancelled, PluginError, for_person


class _AdaptWorker(QObject):
    loaded = Signal(int, dict)  # request id, ModelInfo as dict
    progress = Signal(int, int, int, float)  # request id, step, total, loss (nan when none)
    result = Signal(int, dict)  # request id, SessionResult as dict
    failed = Signal(int, dict)  # request id, see failure()
    catalog_ready = Signal(dict)
    exported = Signal(list, str)  # written paths, error message ("" when fine)
    live_result = Signal(dict)  # a camera picture's prediction, see ClassifierSession.classify_picture

    def __init__(self, device: str = "auto"):
        super().__init__()
        self._device = device
        self._session = None
        self.latest = 0  # newest request id the GUI has issued (plain int: atomic to read)

    def _get_session(self):
        if self._session is None:
            from metastudio.app.session import ClassifierSession
            from metastudio.plugins import get_host

            self._session = ClassifierSession(get_host(), self._device)
        return self._session

    @Slot(list)
    def catalog(self, extra_model_paths: list) -> None:
        """Load the plugins (this imports torch: off the GUI thread) and describe what there is."""
        try:
            self.catalog_ready.emit(build_catalog(self._get_session(), extra_model_paths))
        except Exception as e:  # noqa: BLE001
            said = for_person(e)
            self.catalog_ready.emit({"error": said.message, "details": said.details, "algorithms": [], "failed": [],
                                     "models": []})

    @Slot(str, str)
    def export(self, path: str, fmt: str) -> None:
        """Export the classifier of the last adaptation (see metastudio.engine.export)."""
        try:
            session = self._get_session()
            if session.learner is None:
                raise MetaStudioError("there is nothing to export yet: add pictures to at least two classes first, "
                                      "so MetaStudio can learn them")
            from metastudio.engine.export import export_learner

            written = export_learner(session.learner, session.algorithm, path, fmt)
            self.exported.emit([str(p) for p in written], "")
        except Exception as e:  # noqa: BLE001
            self.exported.emit([], for_person(e).message)

    @Slot(bytes)
    def predict_picture(self, data: bytes) -> None:
        """Classify one picture held in memory (a camera's) with the classifier of the last
        adaptation; answers ``live_result`` with plain values (see ``ClassifierSession.classify_picture``)."""
        try:
            self.live_result.emit(self._get_session().classify_picture(data))
        except Exception as e:  # noqa: BLE001 -- every error reaches the person
            said = for_person(e)
            self.live_result.emit({"status": "error", "message": said.message, "details": said.details})

    @Slot(int, dict)
    def handle(self, request_id: int, request: dict) -> None:
        try:
            session = self._get_session()
            info = session.load(request["model_path"], request.get("hyperparameters") or {})
            self.loaded.emit(request_id, info.as_dict())
            if request.get("load_only"):
                return
            nan = float("nan")

            def progress(p) -> None:
                self.progress.emit(request_id, p.step, p.total, nan if p.loss is None else float(p.loss))

            outcome = session.run(request["support"], request["queries"], progress,
                                  should_stop=lambda: self.latest != request_id)
            self.result.emit(request_id, outcome.as_dict())
        except Exception as e:  # noqa: BLE001 -- every error reaches the person
            self.failed.emit(request_id, failure(e))

    def cancel(self) -> None:
        """Stop waiting for the plugin call running now (called from the GUI thread: the
        session's :meth:`~metastudio.app.session.ClassifierSession.cancel` is thread-safe)."""
        session = self._session
        if session is not None:
            session.cancel()


def failure(error: BaseException) -> dict:
    """How the worker reports ``error`` (plain values): ``message`` and ``details`` worded by
    :func:`~metastudio.errors.for_person`, ``cancelled`` (a person's Cancel stopped it) and
    ``plugin``, the plugin that failed as messages name it ("" when none is known)."""
    said = for_person(error)
    origin = error.origin if isinstance(error, PluginError) else None
    return {"message": said.message, "details": said.details, "cancelled": isinstance(error, PluginCancelled),
            "plugin": str(origin) if origin is not None else ""}


def catalogue_entry(path: Path, origin: str, *, name: str | None = None, title: str = "", plugin: str = "") -> dict:
    """How the catalogue describes the model file at ``path``: its name, algorithm, backbone,
    the dataset it was trained on, the pictures it reads and its hyperparameters, as plain data.
    ``origin`` is "shipped", "plugin" (shipped by the plugin named ``plugin``), "extra" (a file
    named by hand) or "project" (one of the project's models). ``name`` is how it is chosen (by
    default the file's name) and ``title`` its plain name (by default the one in the file, else
    its name). A file that can't be read is described by its name and the ``error``."""
    from metastudio.engine.checkpoint import read_metadata

    name = name or path.stem
    where = {"plugin": plugin} if origin == "plugin" else {}
    try:
        meta = read_metadata(path)
    except MetaStudioError as e:
        return {"name": name, "path": str(path), "origin": origin, **where, "error": for_person(e).message}
    dataset = meta.get("dataset") or {}
    return {
        "name": name, "path": str(path), "origin": origin, **where, "algorithm": meta.get("algorithm"),
        "backbone": meta.get("backbone"), "dataset": dataset.get("name"), "image_size": meta.get("image_size"),
        "channels": meta.get("channels"), "title": title or meta.get("title") or name,
        "hyperparameters": dict(meta.get("hyperparameters") or {}),
    }


def build_catalog(session, extra_model_paths) -> dict:
    """Plain description of the algorithms, failed plugins and models (shipped, then those of
    the plugins, then ``extra``), and ``model_warnings``: each plugin model left out, and why."""
    from metastudio.app.catalogue import models_dirs, plugin_models
    from metastudio.engine.devices import describe_device

    host = session.registry
    algorithms = [{**cls.describe(), "status": "ok"} for _, cls in sorted(host.algorithms.items())]
    failed = [{"plugin": rec.name, "package": rec.package, "version": rec.version, "error": rec.error,
               "traceback": rec.traceback} for rec in host.records.values() if rec.status == "failed"]
    files = [(p, "shipped") for d in models_dirs() if d.is_dir() for p in sorted(d.glob("*.safetensors"))
             if not p.name.endswith(".resume.safetensors")]
    models, seen = [], set()
    for path, origin in files:
        seen.add(str(path))
        models.append(catalogue_entry(path, origin))
    for name, spec in sorted(plugin_models(host).items()):
        origin = host.origin_of("model", name)
        seen.add(str(spec.path))
        models.append(catalogue_entry(spec.path, "plugin", name=name, title=spec.title,
                                      plugin=origin.name if origin is not None else ""))
    for path in map(Path, extra_model_paths):
        if str(path) not in seen:
            seen.add(str(path))
            models.append(catalogue_entry(path, "extra"))
    # The host words each plugin model it left out as a warning of that plugin, "model '<name>' ...".
    warnings = [{"plugin": rec.name, "package": rec.package, "version": rec.version, "warning": w}
                for rec in host.records.values() for w in rec.warnings if w.startswith("model '")]
    return {"algorithms": algorithms, "failed": failed, "models": models, "model_warnings": warnings,
            "device": describe_device(session.device)}


class EngineClient(QObject):
    """The GUI side of the adapt worker. :meth:`submit` coalesces requests: while one runs, only
    the newest waiting request is kept, so a burst of drops adapts once more, not once per drop."""

    loaded = Signal(dict)
    progress = Signal(int, int, float)  # step, total, loss
    result = Signal(dict)
    failed = Signal(str, str)  # message, details
    cancelled = Signal(dict)  # the cancelled request's failure(): message, details, plugin
    busy_changed = Signal(bool)
    catalog_ready = Signal(dict)
    exported = Signal(list, str)
    live_result = Signal(dict)
    _request = Signal(int, dict)
    _catalog = Signal(list)
    _export = Signal(str, str)
    _picture = Signal(bytes)

    def __init__(self, device: str = "auto", parent: QObject | None = None):
        super().__init__(parent)
        self.thread = QThread()
        self.thread.setObjectName("metastudio-adapt")
        self._worker = _AdaptWorker(device)
        self._worker.moveToThread(self.thread)
        self._request.connect(self._worker.handle)
        self._worker.loaded.connect(self._on_loaded)
        self._worker.progress.connect(self._on_progress)
        self._worker.result.connect(self._on_result)
        self._worker.failed.connect(self._on_failed)
        self._worker.catalog_ready.connect(self.catalog_ready)
        self._catalog.connect(self._worker.catalog)
        self._export.connect(self._worker.export)
        self._worker.exported.connect(self.exported)
        self._picture.connect(self._worker.predict_picture)
        self._worker.live_result.connect(self.live_result)
        self.thread.finished.connect(self._worker.deleteLater)
        self.thread.start()
        self._next_id = 0
        self._running: int | None = None
        self._pending: dict | None = None
        self._cancelled: int | None = None  # the request a person cancelled
        self._closed = False

    def request_catalog(self, extra_model_paths: list[str] | None = None) -> None:
        """Ask for the catalogue (answered by ``catalog_ready``)."""
        if not self._closed:
            self._catalog.emit(list(extra_model_paths or []))

    def export(self, path: str, fmt: str) -> None:
        """Export the last adapted classifier (answered by ``exported``; runs after any adaptation
        already queued, so it exports the newest one)."""
        if not self._closed:
            self._export.emit(str(path), fmt)

    def predict_picture(self, data: bytes) -> None:
        """Classify an encoded picture with the last adapted classifier (answered by
        ``live_result``; runs after any adaptation already queued)."""
        if not self._closed:
            self._picture.emit(bytes(data))

    @property
    def busy(self) -> bool:
        return self._running is not None

    def submit(self, request: dict[str, Any]) -> None:
        """Ask for ``request`` (keys: model_path, hyperparameters, support, queries[, load_only])."""
        if self._closed:
            return
        self._pending = request
        self._worker.latest = self._next_id + 1  # lets a running adaptation stop early
        if self._running is None:
            self._dispatch()

    def cancel(self) -> bool:
        """Stop the adaptation running now (a person's Cancel): the plugin call it waits for is
        abandoned, the requests waiting after it are dropped, and ``cancelled`` answers instead
        of ``result`` or ``failed``. False when nothing was running."""
        if self._running is None:
            return False
        self._cancelled = self._running
        self._pending = None
        self._worker.latest = -1  # a request that has not reached its plugin call yet stops before it
        self._worker.cancel()
        return True

    def _dispatch(self) -> None:
        request, self._pending = self._pending, None
        if request is None:
            return
        self._next_id += 1
        self._running = self._next_id
        self._worker.latest = self._next_id
        self.busy_changed.emit(True)
        self._request.emit(self._next_id, request)

    def _done(self, request_id: int) -> bool:
        """Mark ``request_id`` finished; True when its answer is the newest (worth showing)."""
        if request_id != self._running:
            return False
        self._running = None
        fresh = self._pending is None
        if self._pending is not None and not self._closed:
            self._dispatch()
        else:
            self.busy_changed.emit(False)
        return fresh

    @Slot(int, dict)
    def _on_loaded(self, request_id: int, info: dict) -> None:
        self.loaded.emit(info)

    @Slot(int, int, int, float)
    def _on_progress(self, request_id: int, step: int, total: int, loss: float) -> None:
        if request_id == self._running:
            self.progress.emit(step, total, loss)

    def _was_cancelled(self, request_id: int) -> bool:
        cancelled = request_id == self._cancelled
        if cancelled:
            self._cancelled = None
        return cancelled

    @Slot(int, dict)
    def _on_result(self, request_id: int, result: dict) -> None:
        cancelled = self._was_cancelled(request_id)
        if not self._done(request_id):
            return
        if result.get("status") != "cancelled":
            self.result.emit(result)  # it finished as the person cancelled: its answer stands
        elif cancelled:  # it stopped before calling the plugin
            self.cancelled.emit({"message": "cancelled before adapting", "details": "", "cancelled": True,
                                 "plugin": ""})

    @Slot(int, dict)
    def _on_failed(self, request_id: int, failure: dict) -> None:
        cancelled = self._was_cancelled(request_id)
        if self._done(request_id):
            if cancelled and failure.get("cancelled"):
                self.cancelled.emit(failure)
            else:
                self.failed.emit(failure["message"], failure["details"])

    def shutdown(self, timeout_ms: int = 30_000) -> None:
        """Stop taking requests, stop waiting for the plugin call running now (a hung plugin
        does not hold the window open), quit and join the thread."""
        self._closed = True
        self._pending = None
        self._worker.latest = -1
        self._worker.cancel()
        self.thread.quit()
        self.thread.wait(timeout_ms)


class _ThumbnailWorker(QObject):
    ready = Signal(str, bytes, int, int)  # key, RGB bytes, width, height
    failed = Signal(str, str)  # key, reason

    def __init__(self):
        super().__init__()
        self.cancelled = threading.Event()

    @Slot(str, str, int)
    def make(self, key: str, path: str, size: int) -> None:
        if self.cancelled.is_set():
            return
        from metastudio.app.session import thumbnail_rgb

        try:
            data, w, h = thumbnail_rgb(path, size)
            self.ready.emit(key, data, w, h)
        except ImageLoadError as e:
            self.failed.emit(key, e.reason)
        except Exception as e:  # noqa: BLE001 -- a thumbnail that can't be made says why
            self.failed.emit(key, for_person(e).message)


class ThumbnailLoader(QObject):
    """Makes thumbnails in a worker thread and caches them as ``QPixmap`` by key (the project's
    image file name, so the same picture is decoded once). Emits ``changed(key)``."""

    changed = Signal(str)
    _make = Signal(str, str, int)

    def __init__(self, size: int = 112, parent: QObject | None = None):
        super().__init__(parent)
        self.size = size
        self.thread = QThread()
        self.thread.setObjectName("metastudio-thumbnails")
        self._worker = _ThumbnailWorker()
        self._worker.moveToThread(self.thread)
        self._make.connect(self._worker.make)
        self._worker.ready.connect(self._on_ready)
        self._worker.failed.connect(self._on_failed)
        self.thread.finished.connect(self._worker.deleteLater)
        self.thread.start()
        self._pixmaps: dict[str, Any] = {}
        self._errors: dict[str, str] = {}
        self._asked: set[str] = set()

    def pixmap(self, key: str, path: str):
        """The thumbnail if ready (else None, and it is on its way)."""
        if key in self._pixmaps:
            return self._pixmaps[key]
        if key not in self._asked and key not in self._errors:
            self._asked.add(key)
            self._make.emit(key, path, self.size)
        return None

    def error(self, key: str) -> str | None:
        return self._errors.get(key)

    @property
    def pending(self) -> int:
        return len(self._asked)

    @Slot(str, bytes, int, int)
    def _on_ready(self, key: str, data: bytes, w: int, h: int) -> None:
        from PySide6.QtGui import QImage, QPixmap

        image = QImage(data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()
        self._pixmaps[key] = QPixmap.fromImage(image)
        self._asked.discard(key)
        self.changed.emit(key)

    @Slot(str, str)
    def _on_failed(self, key: str, reason: str) -> None:
        self._errors[key] = reason
        self._asked.discard(key)
        self.changed.emit(key)

    def shutdown(self, timeout_ms: int = 10_000) -> None:
        self._worker.cancelled.set()
        self.thread.quit()
        self.thread.wait(timeout_ms)
