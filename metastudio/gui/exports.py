"""File > Export: the predictions as a CSV file, and the classifier adapted to the classes as a
TorchScript or ONNX file that runs without MetaStudio."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QFileDialog

from metastudio.errors import MetaStudioError, for_person


class Exports:
    """The exports of ``window`` (the main window): its last result, its adapt worker (which
    holds the adapted classifier), its notification bar and status bar."""

    def __init__(self, window):
        self._window = window

    def _target(self, path: str | None, title: str, name: str, filters: str) -> tuple[str, str] | None:
        """``path`` when given, else the file the person chooses (starting at ``name`` in the
        folder they last used) and the filter they chose; None when they cancel."""
        if path is not None:
            return str(path), ""
        start = str(Path(self._window.documents.last_dir()) / name)
        chosen, selected = QFileDialog.getSaveFileName(self._window, title, start, filters)
        return (chosen, selected) if chosen else None

    def export_csv(self, path: str | None = None) -> bool:
        """Write the predictions shown (asking where when ``path`` is None)."""
        from metastudio.app.session import write_predictions

        window = self._window
        result = window.last_result or {}
        queries = [(q.id, q.source or q.name) for q in window.controller.project.queries]
        predicted = sum(image_id in (result.get("probabilities") or {}) for image_id, _ in queries)
        if not predicted:
            window.show_error("There are no predictions to export yet: add classes with examples and images to classify.")
            return False
        target = self._target(path, "Export predictions", "predictions.csv", "CSV files (*.csv)")
        if target is None:
            return False
        try:
            write_predictions(target[0], result, queries)
        except (MetaStudioError, OSError) as e:
            window.show_error(f"The predictions were not exported: {for_person(e).message}")
            return False
        window.announce(f"Predictions of {predicted} images saved to {target[0]}", 8000)
        return True

    def export_model(self, path: str | None = None, fmt: str | None = None) -> bool:
        """Export the classifier adapted to the current classes (the adapt worker writes it;
        ``exported`` answers). Without ``path`` the person chooses the file and its format; without
        ``fmt`` a ``.pt`` file is TorchScript, anything else ONNX."""
        window = self._window
        if not window.last_result or window.last_result.get("status") != "ok":
            window.show_error("There is nothing to export yet: give at least two classes a few examples first.")
            return False
        target = self._target(path, "Export the classifier", "classifier.onnx", "ONNX (*.onnx);;TorchScript (*.pt)")
        if target is None:
            return False
        path, selected = target
        fmt = fmt or ("torchscript" if path.endswith(".pt") or "TorchScript" in selected else "onnx")
        window.announce(f"Exporting the classifier to {path}…")
        window.engine.export(path, fmt)
        return True

    def exported(self, paths: list, error: str) -> None:
        """The adapt worker's answer to :meth:`export_model`."""
        window = self._window
        if error:
            window.show_error(f"The classifier was not exported: {error}")
            return
        window.notification.show_message(
            f"Exported the classifier: {', '.join(Path(p).name for p in paths)} in {Path(paths[0]).parent}. "
            "It runs with plain PyTorch or onnxruntime; labels.json says how to prepare images.", level="info")
        window.announce(f"Exported {paths[0]}", 8000)
