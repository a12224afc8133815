"""The main window's project files: new, open, recent, save, autosave and recovery after a
crash, and exporting predictions and the classifier. A mixin of
:class:`~metastudio.gui.mainwindow.MainWindow` (it uses the window's controller, engine,
settings and notification bar)."""

from __future__ import annotations

import threading
from pathlib import Path

from PySide6.QtWidgets import QFileDialog, QMessageBox

from metastudio.app.project import PROJECT_SUFFIX, Project, Recovery

MAX_RECENT = 8


class ProjectFilesMixin:
    """Opening, saving, autosaving and exporting the window's project."""

    # -- files -----------------------------------------------------------------------------------------------
    def _confirm(self, title: str, text: str, buttons=None, default=None):
        buttons = buttons or (QMessageBox.StandardButton.Save | QMessageBox.StandardButton.Discard
                              | QMessageBox.StandardButton.Cancel)
        return QMessageBox.question(self, title, text, buttons, default or QMessageBox.StandardButton.Save)

    def maybe_save(self) -> bool:
        """True when it is fine to drop the open project (saved, discarded, or unchanged)."""
        if not self.controller.modified:
            return True
        answer = self.confirm("Unsaved changes", "Save the changes to this project?")
        if answer == QMessageBox.StandardButton.Save:
            return self.save()
        return answer == QMessageBox.StandardButton.Discard

    def new_project(self) -> None:
        if self.maybe_save():
            self.controller.replace(self._starter_project())

    def open_project_dialog(self) -> None:
        if not self.maybe_save():
            return
        path, _ = QFileDialog.getOpenFileName(self, "Open a project", self._last_dir(), f"MetaStudio projects (*{PROJECT_SUFFIX})")
        if path:
            self.open_project(path)

    def open_project(self, path: str | Path) -> bool:
        from metastudio.errors import MetaStudioError

        try:
            project = Project.open(path)
        except MetaStudioError as e:
            self.show_error(str(e))
            return False
        self.controller.replace(project)
        self._add_recent(str(project.path))
        if project.problems:
            self.report_problems([(str(path), p) for p in project.problems])
        self.announce(f"Opened {Path(path).name}", 5000)
        return True

    def save(self) -> bool:
        path = self.controller.project.path
        if path is None:
            return self.save_as()
        return self._save_to(path)

    def save_as(self) -> bool:
        start = str(self.controller.project.path or Path(self._last_dir()) / f"Untitled{PROJECT_SUFFIX}")
        path, _ = QFileDialog.getSaveFileName(self, "Save project", start, f"MetaStudio projects (*{PROJECT_SUFFIX})")
        if not path:
            return False
        if not path.endswith(PROJECT_SUFFIX):
            path += PROJECT_SUFFIX
        return self._save_to(Path(path))

    def _save_to(self, path: Path) -> bool:
        from metastudio.errors import MetaStudioError

        try:
            self.controller.project.save(path)
        except MetaStudioError as e:
            self.show_error(f"The project was not saved: {e}. Nothing was lost; try another place.")
            return False
        self.controller.mark_saved()
        self._add_recent(str(path))
        self._update_title()
        self.announce(f"Saved {Path(path).name}", 5000)
        return True

    def _recent(self) -> list[str]:
        value = self.settings.value("recent", [])
        return [value] if isinstance(value, str) else list(value or [])

    def _add_recent(self, path: str) -> None:
        recent = [path] + [p for p in self._recent() if p != path]
        self.settings.setValue("recent", recent[:MAX_RECENT])

    def _fill_recent(self) -> None:
        self.recent_menu.clear()
        recent = [p for p in self._recent() if Path(p).is_file()]
        for p in recent:
            self.recent_menu.addAction(Path(p).name, lambda p=p: self.maybe_save() and self.open_project(p)).setToolTip(p)
        if not recent:
            self.recent_menu.addAction("No recent projects").setEnabled(False)

    def _project_replaced(self) -> None:
        self.last_result = None
        self.queries.set_predictions({}, {})
        self._update_title()
        self._refresh_model_box()
        if self.controller.project.model.get("kind") == "file":
            self.engine.request_catalog(self._project_model_paths())
        if self.training_panel is not None and self.controller.project.settings.get("training"):
            self._restore_training_plan()

    # -- autosave and recovery ---------------------------------------------------------------------------
    def autosave(self, wait: bool = False) -> bool:
        """Write the recovery copy if anything changed since the last one. The writing runs in
        a background thread on a snapshot (a big project must not stall the window);
        ``wait=True`` waits for it. False when there was nothing to do or a write is running."""
        from metastudio.errors import MetaStudioError

        index = self.controller.undo_stack.index()
        if not self.controller.modified or index == self._autosaved_index:
            return False
        if self._autosave_thread is not None and self._autosave_thread.is_alive():
            return False
        project = self.controller.project
        try:
            snapshot = Project.from_manifest(project.to_manifest(), project.workdir)
        except MetaStudioError as e:
            self.announce(f"Autosave failed: {e}", 10000)
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
        from metastudio.errors import MetaStudioError

        try:
            self.recovery.write(snapshot)
        except MetaStudioError as e:
            self.autosave_failed.emit(str(e))

    def _autosave_failed(self, message: str) -> None:
        self._autosaved_index = -1  # try again next time
        self.announce(f"Autosave failed: {message}", 10000)

    def offer_recovery(self) -> bool:
        found = Recovery.find(self.recovery_dir)
        if not found:
            return False
        latest = found[0]
        where = f" (of {Path(latest.project_path).name})" if latest.project_path else ""
        answer = self.confirm(
            "Restore unsaved work?",
            f"MetaStudio did not close properly last time. Restore the work autosaved at {latest.saved_at}{where}?",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.Yes)
        if answer != QMessageBox.StandardButton.Yes:
            for info in found:
                Recovery.remove(info)
            return False
        from metastudio.errors import MetaStudioError

        try:
            project = Project.open(latest.path)
        except MetaStudioError as e:
            self.show_error(f"The autosaved work could not be restored: {e}")
            return False
        project.path = Path(latest.project_path) if latest.project_path else None
        self.controller.replace(project)
        # Restored work is unsaved work: mark it modified so closing asks to save it.
        self.controller.undo_stack.resetClean()
        self._update_title()
        for info in found:
            Recovery.remove(info)
        self.announce("Restored the autosaved work. Save it to keep it.")
        return True

    # -- export -----------------------------------------------------------------------------------------------
    def _prediction_rows(self) -> tuple[list[tuple[str, list[float]]], dict[str, str]]:
        """(file, probabilities) of each predicted image, and why each unsure one is, by file."""
        result = self.last_result or {}
        unsure = result.get("unsure") or {}
        project = self.controller.project
        rows, reasons = [], {}
        for item in project.queries:
            probs = (result.get("probabilities") or {}).get(item.id)
            if probs is not None:
                rows.append((item.source or item.name, probs))
                if item.id in unsure:
                    reasons[item.source or item.name] = unsure[item.id]
        return rows, reasons

    def export_csv(self, path: str | None = None) -> bool:
        from metastudio.errors import MetaStudioError
        from metastudio.engine.export import write_predictions_csv

        rows, unsure = self._prediction_rows()
        if not rows:
            self.show_error("There are no predictions to export yet: add classes with examples and images to classify.")
            return False
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Export predictions", str(Path(self._last_dir()) / "predictions.csv"),
                                                  "CSV files (*.csv)")
            if not path:
                return False
        try:
            write_predictions_csv(path, rows, self.last_result["class_names"], unsure)
        except (MetaStudioError, OSError) as e:
            self.show_error(f"The predictions were not exported: {e}")
            return False
        self.announce(f"Predictions of {len(rows)} images saved to {path}", 8000)
        return True

    def export_model(self, path: str | None = None, fmt: str | None = None) -> bool:
        """Export the classifier adapted to the current classes (runs in the adapt thread's session)."""
        if not self.last_result or self.last_result.get("status") != "ok":
            self.show_error("There is nothing to export yet: give at least two classes a few examples first.")
            return False
        if path is None:
            path, selected = QFileDialog.getSaveFileName(
                self, "Export the classifier", str(Path(self._last_dir()) / "classifier.onnx"),
                "ONNX (*.onnx);;TorchScript (*.pt)")
            if not path:
                return False
            fmt = "torchscript" if path.endswith(".pt") or "TorchScript" in selected else "onnx"
        self.engine_export(path, fmt or ("torchscript" if str(path).endswith(".pt") else "onnx"))
        return True

    def engine_export(self, path: str, fmt: str) -> None:
        self.announce(f"Exporting the classifier to {path}…")
        self.engine.export(path, fmt)

    def _exported(self, paths: list, error: str) -> None:
        if error:
            self.show_error(f"The classifier was not exported: {error}")
            return
        self.notification.show_message(
            f"Exported the classifier: {', '.join(Path(p).name for p in paths)} in {Path(paths[0]).parent}. "
            "It runs with plain PyTorch or onnxruntime; labels.json says how to prepare images.", level="info")
        self.announce(f"Exported {paths[0]}", 8000)
