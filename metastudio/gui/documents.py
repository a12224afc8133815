"""The window's project as a document: new, open, Open Recent, save and save as, the autosave
(a recovery copy written in the background) and the offer to restore it after a crash."""

from __future__ import annotations

import threading
from pathlib import Path

from PySide6.QtCore import QObject, QTimer, Signal
from PySide6.QtWidgets import QFileDialog, QMenu, QMessageBox

from metastudio.app.project import PROJECT_SUFFIX, Project, Recovery
from metastudio.errors import MetaStudioError, for_person

MAX_RECENT = 8
AUTOSAVE_MS = 60_000
PROJECT_FILTER = f"MetaStudio projects (*{PROJECT_SUFFIX})"


def starter_project() -> Project:
    """What a new window and File > New start with: two empty classes."""
    project = Project()
    project.add_class("Class 1")
    project.add_class("Class 2")
    return project


class ProjectDocuments(QObject):
    """Opens, saves and autosaves the project of ``window`` (the main window: the dialogs are
    its children, and the person is asked and told through its ``confirm``, ``announce``,
    ``show_error`` and ``report_problems``). ``recovery`` is where the autosave goes.

    Signals: ``title_changed`` when the project's file or saved state changed (the window's
    title follows); ``autosave_failed(message)``, from the autosave thread.
    """

    title_changed = Signal()
    autosave_failed = Signal(str)

    def __init__(self, window, recovery_dir: Path | None = None):
        super().__init__(window)
        self._window = window
        self.controller = window.controller
        self.settings = window.settings
        self.recovery = Recovery(recovery_dir)
        self.recovery_dir = recovery_dir
        self._autosaved_index = -1
        self._autosave_thread: threading.Thread | None = None
        self.autosave_failed.connect(self._autosave_failed)
        self._timer = QTimer(self)
        self._timer.setInterval(AUTOSAVE_MS)
        self._timer.timeout.connect(self.autosave)
        self._timer.start()

    # -- where files are chosen -----------------------------------------------------------------------
    def last_dir(self) -> str:
        """The folder the person last took a file from (their home folder at first)."""
        return str(self.settings.value("last_dir", str(Path.home())))

    def remember_dir(self, path: str) -> None:
        p = Path(path)
        self.settings.setValue("last_dir", str(p if p.is_dir() else p.parent))

    # -- new, open, save ------------------------------------------------------------------------------
    def maybe_save(self) -> bool:
        """True when it is fine to drop the open project (saved, discarded, or unchanged)."""
        if not self.controller.modified:
            return True
        answer = self._window.confirm("Unsaved changes", "Save the changes to this project?")
        if answer == QMessageBox.StandardButton.Save:
            return self.save()
        return answer == QMessageBox.StandardButton.Discard

    def new_project(self) -> None:
        if self.maybe_save():
            self.controller.replace(starter_project())

    def open_dialog(self) -> None:
        if not self.maybe_save():
            return
        path, _ = QFileDialog.getOpenFileName(self._window, "Open a project", self.last_dir(), PROJECT_FILTER)
        if path:
            self.open_project(path)

    def open_project(self, path: str | Path) -> bool:
        try:
            project = Project.open(path)
        except MetaStudioError as e:
            self._window.show_error(for_person(e).message)
            return False
        self.controller.replace(project)
        self._add_recent(str(project.path))
        if project.problems:
            self._window.report_problems([(str(path), p) for p in project.problems])
        self._window.announce(f"Opened {Path(path).name}", 5000)
        return True

    def save(self) -> bool:
        path = self.controller.project.path
        if path is None:
            return self.save_as()
        return self.save_to(path)

    def save_as(self) -> bool:
        start = str(self.controller.project.path or Path(self.last_dir()) / f"Untitled{PROJECT_SUFFIX}")
        path, _ = QFileDialog.getSaveFileName(self._window, "Save project", start, PROJECT_FILTER)
        if not path:
            return False
        if not path.endswith(PROJECT_SUFFIX):
            path += PROJECT_SUFFIX
        return self.save_to(Path(path))

    def save_to(self, path: Path) -> bool:
        try:
            self.controller.project.save(path)
        except MetaStudioError as e:
            self._window.show_error(f"The project was not saved: {for_person(e).message}. Nothing was lost; try another place.")
            return False
        self.controller.mark_saved()
        self._add_recent(str(path))
        self.title_changed.emit()
        self._window.announce(f"Saved {Path(path).name}", 5000)
        return True

    # -- Open Recent ----------------------------------------------------------------------------------
    def recent(self) -> list[str]:
        """The projects last opened or saved, newest first."""
        value = self.settings.value("recent", [])
        return [value] if isinstance(value, str) else list(value or [])

    def _add_recent(self, path: str) -> None:
        recent = [path] + [p for p in self.recent() if p != path]
        self.settings.setValue("recent", recent[:MAX_RECENT])

    def fill_recent_menu(self, menu: QMenu) -> None:
        """Fill the Open Recent submenu with the recent projects that are still there."""
        menu.clear()
        recent = [p for p in self.recent() if Path(p).is_file()]
        for p in recent:
            menu.addAction(Path(p).name, lambda p=p: self.maybe_save() and self.open_project(p)).setToolTip(p)
        if not recent:
            menu.addAction("No recent projects").setEnabled(False)

    # -- autosave and recovery ------------------------------------------------------------------------
    def autosave(self, wait: bool = False) -> bool:
        """Write the recovery copy if anything changed since the last one. The writing runs in
        a background thread on a snapshot (a big project must not stall the window);
        ``wait=True`` waits for it. False when there was nothing to do or a write is running."""
        index = self.controller.undo_stack.index()
        if not self.controller.modified or index == self._autosaved_index:
            return False
        if self._autosave_thread is not None and self._autosave_thread.is_alive():
            return False
        project = self.controller.project
        try:
            snapshot = Project.from_manifest(project.to_manifest(), project.workdir)
        except MetaStudioError as e:
            self._window.announce(f"Autosave failed: {for_person(e).message}", 10000)
            return False
        snapshot.path = project.path
        self._autosaved_index = index
        self._autosave_thread = threading.Thread(target=self._write_recovery, args=(snapshot,),
                                                 name="metastudio-autosave", daemon=True)
        self._autosave_thread.start()
        if wait:
            self._autosave_thread.join()
        return True

    def _write_recovery(self, snapshot: Project) -> None:  # in the autosave thread
        try:
            self.recovery.write(snapshot)
        except MetaStudioError as e:
            self.autosave_failed.emit(for_person(e).message)

    def _autosave_failed(self, message: str) -> None:
        self._autosaved_index = -1  # try again next time
        self._window.announce(f"Autosave failed: {message}", 10000)

    def offer_recovery(self) -> bool:
        """After a crash: offer to restore the work autosaved then (restored, it is unsaved work)."""
        found = Recovery.find(self.recovery_dir)
        if not found:
            return False
        latest = found[0]
        where = f" (of {Path(latest.project_path).name})" if latest.project_path else ""
        answer = self._window.confirm(
            "Restore unsaved work?",
            f"MetaStudio did not close properly last time. Restore the work autosaved at {latest.saved_at}{where}?",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.Yes)
        if answer != QMessageBox.StandardButton.Yes:
            for info in found:
                Recovery.remove(info)
            return False
        try:
            project = Project.open(latest.path)
        except MetaStudioError as e:
            self._window.show_error(f"The autosaved work could not be restored: {for_person(e).message}")
            return False
        project.path = Path(latest.project_path) if latest.project_path else None
        self.controller.replace(project)
        # Restored work is unsaved work: mark it modified so closing asks to save it.
        self.controller.undo_stack.resetClean()
        self.title_changed.emit()
        for info in found:
            Recovery.remove(info)
        self._window.announce("Restored the autosaved work. Save it to keep it.")
        return True

    def close(self) -> None:
        """Stop autosaving, wait for a write in progress, and forget the recovery copy (the
        window closes properly)."""
        self._timer.stop()
        if self._autosave_thread is not None:
            self._autosave_thread.join()
        self.recovery.discard()
