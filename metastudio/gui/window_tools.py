"""The main window's camera window and Meta-train page: live predictions on what the camera
sees, and models trained in the window joining the project. A mixin of
:class:`~metastudio.gui.mainwindow.MainWindow`."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt


class CameraAndTrainingMixin:
    """The live camera window and the meta-training page of the window."""

    # -- live camera ----------------------------------------------------------------------------------------
    def open_live_camera(self):
        """The camera window with a bar per class for what the camera sees (the classifier of
        the last adaptation; the camera runs only while the window is open)."""
        from metastudio.gui.camera import LiveDialog

        if self.live_dialog is not None:
            self.live_dialog.raise_()
            return self.live_dialog
        dialog = LiveDialog(self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.frame_for_prediction.connect(self.engine.predict_picture)
        dialog.finished.connect(self._live_closed)
        self.live_dialog = dialog
        dialog.open()
        return dialog

    def _live_closed(self, *_: object) -> None:
        self.live_dialog = None

    def _live_result(self, result: dict) -> None:
        dialog = self.live_dialog
        if dialog is None:
            return
        if result.get("status") != "ok":
            reason = result.get("hint") or f"The camera picture could not be classified: {result.get('message', '')}"
            dialog.show_prediction([], [], [], reason)
            return
        names, probs = result["class_names"], result["probabilities"]
        colours = {c.name: c.colour for c in self.controller.project.classes}
        best = max(range(len(probs)), key=probs.__getitem__)
        if result.get("unsure"):
            caption = f"<b>Unsure</b>: {result['unsure']} (closest: {names[best]}, {100 * probs[best]:.0f}%)"
        else:
            caption = f"<b>{names[best]}</b> ({100 * probs[best]:.0f}%)"
        dialog.show_prediction(names, [colours.get(n, "#888888") for n in names], probs, caption)

    # -- training page ----------------------------------------------------------------------------------------
    def _tab_changed(self, index: int) -> None:
        if index == 1:
            self.ensure_training_panel()

    def ensure_training_panel(self):
        """Build the meta-training page on first use (it loads the plugins: keep startup fast)."""
        if self.training_panel is None:
            from metastudio.gui.training import TrainingPanel

            panel = TrainingPanel()
            panel.model_trained.connect(self._model_trained)
            panel.message.connect(lambda text: self.announce(text, 8000))
            panel.error.connect(self.show_error)
            self.train_page.layout().addWidget(panel)
            self.training_panel = panel
            self._restore_training_plan()
        return self.training_panel

    def _restore_training_plan(self) -> None:
        from metastudio.app.runs import TrainingPlan

        saved = self.controller.project.settings.get("training")
        if saved:
            try:
                self.training_panel.set_plan(TrainingPlan.from_dict(saved))
            except (ValueError, TypeError, KeyError):
                pass

    def _model_trained(self, path: str, title: str) -> None:
        """A finished (or cancelled) run's model joins the project's models; the model in use
        stays until the person picks the new one ("Use this model")."""
        from metastudio.errors import MetaStudioError

        try:
            name = self.controller.project.add_model_file(path)
        except (MetaStudioError, OSError) as e:
            self.show_error(f"The trained model could not be added to the project: {e}. It is still at {path}.")
            return
        if self.training_panel is not None:
            try:
                self.controller.project.settings["training"] = self.training_panel.plan().to_dict()
            except Exception:  # noqa: BLE001 -- settings are a convenience
                pass
        self._refresh_model_box()
        mismatch = self._image_mismatch(self.controller.project.model_path(name))
        text = (f"Meta-training finished: '{title}' is saved in this project. "
                "The model in use is unchanged until you choose the new one.")
        self.notification.show_message(f"{text} {mismatch}".strip(), level="warning" if mismatch else "info",
                                       action=("Use this model", lambda: self.use_project_model(name)))
        self.announce(text, 8000)

    def _image_mismatch(self, path) -> str:
        """A plain warning when the model at ``path`` reads other pictures than the model in use
        (size or colour), else ""."""
        from metastudio.engine.checkpoint import read_metadata
        from metastudio.errors import MetaStudioError

        current = self.model_info or {}
        try:
            meta = read_metadata(path)
        except MetaStudioError:
            return ""
        size, channels = meta.get("image_size"), meta.get("channels")
        if not current or (size, channels) == (current.get("image_size"), current.get("channels")):
            return ""

        def kind(s, c) -> str:
            return f"{'black-and-white' if c == 1 else 'colour'} pictures of {s} pixels"

        return (f"Note: it learned from {kind(size, channels)}, while the model in use reads "
                f"{kind(current.get('image_size'), current.get('channels'))}: on your images it may do worse.")

    def use_project_model(self, name: str) -> None:
        """Adapt with the project's model file ``name`` from now on (undoable)."""
        self.controller.set_model({"kind": "project", "name": name}, {})
        self.announce(f"Using the model '{Path(name).stem}'. Undo (Ctrl+Z) goes back to the previous one.", 8000)
