"""Starting the desktop app: ``metastudio`` (or ``make run``).

``metastudio [PROJECT] [--support DIR --query DIR] [--model M] [--screenshot FILE]``

Heavy imports (torch, the plugins, the model) happen in the adapt worker thread after the
window is on screen, so the window opens quickly. While the app runs, an exception nothing
caught is shown in the window and printed to stderr (:mod:`metastudio.gui.safety`), instead of
passing unseen or ending the app.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

SCREENSHOT_TIMEOUT_S = 180


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
    window = MainWindow(project, device=args.device, ask_restore=not (args.screenshot or getattr(args, "timing", False)))
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
    if args.screenshot:
        _arrange_screenshot(app, window, args.screenshot)
    from metastudio.gui.safety import install_exception_hooks

    hooks = install_exception_hooks(window)
    try:
        code = app.exec()
    finally:
        hooks.uninstall()
    return code if not args.screenshot else (0 if Path(args.screenshot).is_file() else 1)


def _arrange_screenshot(app, window, path: str) -> None:
    """Save a PNG of the window once predictions and thumbnails are on screen, then quit."""
    state = {"done": False}

    def ready() -> bool:
        return (window.last_result is not None and not window.engine.busy and window.thumbnails.pending == 0
                and not window._adapt_timer.isActive())

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

    def shoot() -> None:
        window.grab().save(str(path))
        print(f"screenshot saved to {path}", file=sys.stderr)
        print(f"window on screen: {_where(window)}", file=sys.stderr)
        window.controller.mark_saved()
        window.close()
        app.quit()

    def give_up() -> None:
        if not state["done"]:
            state["done"] = True
            print(f"error: no predictions after {SCREENSHOT_TIMEOUT_S} s; no screenshot", file=sys.stderr)
            window.controller.mark_saved()
            window.close()
            app.quit()

    window.predictions_shown.connect(lambda: QTimer.singleShot(100, attempt))
    QTimer.singleShot(SCREENSHOT_TIMEOUT_S * 1000, give_up)


def _where(window) -> str:
    """Where the window and its status bar are, and the screen's free area (``x,y,w,h`` each),
    for checking that the whole window is on screen."""
    def rect(r) -> str:
        return f"{r.x()},{r.y()},{r.width()},{r.height()}"

    bar = window.statusBar()
    bar_rect = bar.rect().translated(bar.mapToGlobal(bar.rect().topLeft()))
    screen = window.screen().availableGeometry()
    return f"frame={rect(window.frameGeometry())} statusbar={rect(bar_rect)} screen={rect(screen)}"
