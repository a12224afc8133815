"""The main window's Meta-train tab: its panel, built the first time the tab opens (it loads the
plugins and torch, which start-up leaves to the adapt worker), the plan kept in the project's
settings, and each model trained there joining the project's models."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QWidget

from metastudio.errors import MetaStudioError, for_person
from metastudio.gui.engine import catalogue_entry


def _pictures(size, channels) -> str:
    """What pictures a model reads, in words."""
    return f"{'black-and-white' if channels == 1 else 'colour'} pictures of {size} pixels"


class TrainingPage:
    """The Meta-train tab of ``window`` (the main window), in the widget ``page``. ``panel`` is
    its :class:`~metastudio.gui.training.TrainingPanel` once built, else None."""

    def __init__(self, window, page: QWidget):
        self._window = window
        self._page = page
        self.panel = None

    def ensure_panel(self):
        """The panel, built on first use."""
        if self.panel is None:
            from metastudio.gui.training import TrainingPanel

            panel = TrainingPanel()
            panel.model_trained.connect(self._model_trained)
            panel.message.connect(lambda text: self._window.announce(text, 8000))
            panel.error.connect(self._window.show_error)
            self._page.layout().addWidget(panel)
            self.panel = panel
            self.restore_plan()
        return self.panel

    def restore_plan(self) -> None:
        """Show the plan the project keeps (the one of its last run), if any."""
        from metastudio.app.runs import TrainingPlan

        saved = self._window.controller.project.settings.get("training")
        if saved and self.panel is not None:
            try:
                self.panel.set_plan(TrainingPlan.from_dict(saved))
            except (ValueError, TypeError, KeyError):
                pass

    def select_algorithm(self, name: str) -> bool:
        """Choose the algorithm ``name`` in the tab's form, as picking it there does (the panel
        is built first if need be). False, changing nothing, while a run is going (its form is
        locked) or when no loaded plugin offers that algorithm."""
        from metastudio.gui.training.form import select_data

        panel = self.ensure_panel()
        if panel.is_running():
            return False
        return select_data(panel.form.algorithm_combo, name)

    def is_running(self) -> bool:
        return self.panel is not None and self.panel.is_running()

    def show_device(self, text: str) -> None:
        if self.panel is not None:
            self.panel.set_device_text(text)

    def adaptation_progress(self, step: int, total: int, loss: float) -> None:
        """The Classify page's adaptation streams into the tab's adaptation plot too."""
        if self.panel is not None:
            self.panel.adaptation_progress(step, total, loss)

    def shutdown(self) -> None:
        if self.panel is not None:
            self.panel.shutdown()

    def _model_trained(self, path: str, title: str) -> None:
        """A finished (or cancelled) run's model joins the project's models; the model in use
        stays until the person picks the new one ("Use this model")."""
        window = self._window
        project = window.controller.project
        try:
            name = project.add_model_file(path)
        except (MetaStudioError, OSError) as e:
            window.show_error(f"The trained model could not be added to the project: {for_person(e).message}. "
                              f"It is still at {path}.")
            return
        try:
            project.settings["training"] = self.panel.plan().to_dict()
        except Exception:  # noqa: BLE001 -- settings are a convenience
            pass
        window.refresh_model_box()
        mismatch = self._image_mismatch(project.model_path(name))
        text = (f"Meta-training finished: '{title}' is saved in this project. "
                "The model in use is unchanged until you choose the new one.")
        window.notification.show_message(f"{text} {mismatch}".strip(), level="warning" if mismatch else "info",
                                         action=("Use this model", lambda: window.use_project_model(name)))
        window.announce(text, 8000)

    def _image_mismatch(self, path: Path) -> str:
        """A plain warning when the model at ``path`` reads other pictures than the model in use
        (size or colour), else ""."""
        current = self._window.model_info or {}
        trained = catalogue_entry(Path(path), "project")
        if trained.get("error") or not current:
            return ""
        size, channels = trained["image_size"], trained["channels"]
        if (size, channels) == (current.get("image_size"), current.get("channels")):
            return ""
        return (f"Note: it learned from {_pictures(size, channels)}, while the model in use reads "
                f"{_pictures(current.get('image_size'), current.get('channels'))}: on your images it may do worse.")
