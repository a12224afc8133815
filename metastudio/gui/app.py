"""Starting the desktop app: ``metastudio`` (or ``make run``).

``metastudio [PROJECT] [--support DIR --query DIR] [--model M] [--screenshot FILE]``

With ``--screenshot`` the window saves a PNG of itself once the predictions are shown and
quits. When the window shows an error instead (the model can't be used, the algorithm fails to
adapt), it prints ``error: <the message>``, saves the picture of the window showing that error
and exits with 1, at once rather than waiting for predictions that will not come. It never says
it saved a screenshot that it could not write.

Heavy imports (torch, the plugins, the model) happen in the adapt worker thread after the
window is on screen, so the window opens quickly. While the app runs, an exception nothing
caught is shown in the window and printed to stderr (:mod:`metastudio.gui.safety`), instead of
passing unseen or ending the app.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

SCREENSHOT_TIMEOUT_S = 180
#: How long a screenshot of an error waits at most for the window to settle (thumbnails).
ERROR_SETTLE_S = 10


def build_project(support: str | None, query: str | None, model: str | None):
    """A project with a class per sub-folder of ``support`` and the images of ``query``.
    Returns (project, problems)."""
    from metastudio.app.project import Project
    from metastudio.errors import ImageLoadError, MetaStudioError
    from metastudio.gui.controller import class_folders_in, image_files_in

    project = Project()
    problems: list[tuple[str, str]] = []

    def add(files, target):
        for f in files:
            try:
                target.append(project.import_file(f))
            except (ImageLoadError, OSError) as e:
                problems.append((str(f), getattr(e, "reason", None) or str(e)))

    if support:
        root = Path(support).expanduser()
        if not root.is_dir():
            raise MetaStudioError(f"--support '{root}' is not a folder (give a folder with one sub-folder per class)")
        found = class_folders_in(root, problems)
        if not found:
            raise MetaStudioError(f"--support '{root}' has no sub-folders with images: make one sub-folder per class")
        for name, files in found:
            add(files, project.add_class(name).images)
    else:
        project.add_class("Class 1")
        project.add_class("Class 2")
    if query:
        q = Path(query).expanduser()
        if q.is_dir():
            add(image_files_in(q, problems), project.queries)
        elif q.is_file():
            add([q], project.queries)
        else:
            raise MetaStudioError(f"--query '{q}' does not exist")
    if model:
        path = Path(model).expanduser()
        if path.is_file():  # a copy goes into the project, which stays whole without the file
            project.model = {"kind": "project", "name": project.add_model_file(path)}
        else:
            project.model = {"kind": "shipped", "name": model}
    return project, problems


def run(args) -> int:
    """Open the window (the ``metastudio`` command without a sub-command)."""
    started = time.perf_counter()
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("MetaStudio")
    app.setOrganizationName("MetaStudio")
    app.setApplicationDisplayName("MetaStudio")

    from metastudio.errors import MetaStudioError, for_person
    from metastudio.gui.mainwindow import MainWindow, app_icon

    app.setWindowIcon(app_icon())
    try:
        project = None
        problems = []
        if args.support or args.query or args.model:
            project, problems = build_project(args.support, args.query, args.model)
    except MetaStudioError as e:
        print(f"error: {for_person(e).message}", file=sys.stderr)
        return 1
    if args.screenshot:
        unwritable = _unwritable(Path(args.screenshot))
        if unwritable:  # said before the window opens, not after the predictions
            print(f"error: could not write the screenshot to {args.screenshot}: {unwritable}", file=sys.stderr)
            return 1
    window = MainWindow(project, device=args.device, ask_restore=not (args.screenshot or getattr(args, "timing", False)))
    shot = _arrange_screenshot(app, window, args.screenshot) if args.screenshot else None
    if getattr(args, "project", None):
        window.documents.open_project(args.project)
    if problems:
        window.report_problems(problems)
    window.show()
    if getattr(args, "timing", False):  # benchmarks/harnesses/gui_latency.py: when is the window on screen?
        def report() -> None:
            print(f"window shown at {time.time():.3f} ({time.perf_counter() - started:.2f} s after run())", file=sys.stderr)
            window.controller.mark_saved()
            window.close()

        QTimer.singleShot(0, report)
    from metastudio.gui.safety import install_exception_hooks

    hooks = install_exception_hooks(window)
    try:
        code = app.exec()
    finally:
        hooks.uninstall()
    return code if shot is None else shot["exit"]


def _unwritable(path: Path) -> str:
    """Why a screenshot can't be written to ``path``, in plain words, or "" when it may be."""
    path = path.expanduser()
    folder = path.parent
    if not folder.is_dir():
        return f"the folder {folder} does not exist" if not folder.exists() else f"{folder} is not a folder"
    if path.is_dir():
        return "it is a folder"
    if not os.access(folder, os.W_OK):
        return f"the folder {folder} is not writable"
    return ""


def _save_png(window, path: str) -> str:
    """Save a PNG of ``window`` to ``path``; "" when saved, else why not, in plain words."""
    from PySide6.QtGui import QImageWriter

    target = Path(path).expanduser()
    reason = _unwritable(target)
    if reason:
        return reason
    writer = QImageWriter(str(target))  # the format its name ends with, PNG when none
    if not target.suffix:
        writer.setFormat(b"png")
    if writer.write(window.grab().toImage()) and target.is_file():
        return ""
    if writer.error() == QImageWriter.ImageWriterError.UnsupportedFormatError:
        return f"pictures named '{target.suffix}' can't be written; end the name with .png"
    return writer.errorString() or "the picture could not be written"


def _arrange_screenshot(app, window, path: str) -> dict:
    """Save a PNG of the window once predictions and thumbnails are on screen, then quit; or,
    as soon as the window shows an error, print it, save the window showing it and quit. Returns
    the state, whose ``exit`` is the exit status once the app has quit: 0 when the screenshot of
    the predictions was saved, else 1."""
    state = {"done": False, "error": "", "exit": 1}

    def settled() -> bool:
        return not window.engine.busy and window.thumbnails.pending == 0 and not window._adapt_timer.isActive()

    def ready() -> bool:
        return window.last_result is not None and settled()

    def attempt() -> None:
        if state["done"]:
            return
        if not ready():
            QTimer.singleShot(200, attempt)
            return
        state["done"] = True
        if window.controller.project.queries and window.queries.list.count():
            window.queries.list.setCurrentRow(0)
        QTimer.singleShot(400, shoot)

    def failed(message: str) -> None:
        """The window shows an error: the predictions will not come."""
        if state["done"]:
            return
        state["done"], state["error"] = True, message
        print(f"error: {message}", file=sys.stderr)
        finish_error(time.monotonic() + ERROR_SETTLE_S)

    def finish_error(deadline: float) -> None:
        if not settled() and time.monotonic() < deadline:  # the thumbnails of the picture, if they come
            QTimer.singleShot(100, lambda: finish_error(deadline))
            return
        QTimer.singleShot(200, shoot)

    def shoot() -> None:
        problem = _save_png(window, path)
        if problem:
            print(f"error: could not write the screenshot to {path}: {problem}", file=sys.stderr)
        elif state["error"]:
            print(f"screenshot of the error saved to {path}", file=sys.stderr)
        else:
            print(f"screenshot saved to {path}", file=sys.stderr)
            print(f"window on screen: {_where(window)}", file=sys.stderr)
            state["exit"] = 0
        quit_app()

    def give_up() -> None:
        if not state["done"]:
            state["done"] = True
            print(f"error: no predictions after {SCREENSHOT_TIMEOUT_S} s; no screenshot", file=sys.stderr)
            quit_app()

    def quit_app() -> None:
        window.controller.mark_saved()
        window.close()
        app.quit()

    window.predictions_shown.connect(lambda: QTimer.singleShot(100, attempt))
    window.error_shown.connect(failed)
    QTimer.singleShot(SCREENSHOT_TIMEOUT_S * 1000, give_up)
    return state


def _where(window) -> str:
    """Where the window and its status bar are, and the screen's free area (``x,y,w,h`` each),
    for checking that the whole window is on screen."""
    def rect(r) -> str:
        return f"{r.x()},{r.y()},{r.width()},{r.height()}"

    bar = window.statusBar()
    bar_rect = bar.rect().translated(bar.mapToGlobal(bar.rect().topLeft()))
    screen = window.screen().availableGeometry()
    return f"frame={rect(window.frameGeometry())} statusbar={rect(bar_rect)} screen={rect(screen)}"
