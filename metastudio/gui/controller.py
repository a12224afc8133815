"""The open project, its changes as undoable commands, and the signals the widgets follow.

Widgets never change :class:`~metastudio.app.project.Project` directly: they call a method of
:class:`ProjectController`, which pushes a ``QUndoCommand`` onto its ``QUndoStack``; the
command's ``redo``/``undo`` change the project and emit the signals below. So every change can
be undone, and the stack's clean state tells whether the project has unsaved changes.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QUndoCommand, QUndoStack

from metastudio.errors import ImageLoadError
from metastudio.data.listing import find_images
from metastudio.app.project import ImageItem, Project


#: The name a class gets when none is given (``Project.unique_class_name``).
STARTER_NAME = re.compile(r"Class \d+")


class _Command(QUndoCommand):
    """An undo command made of two functions."""

    def __init__(self, text: str, redo: Callable[[], None], undo: Callable[[], None]):
        super().__init__(text)
        self._redo, self._undo = redo, undo

    def redo(self) -> None:
        self._redo()

    def undo(self) -> None:
        self._undo()


def image_files_in(folder: Path, problems: list[tuple[str, str]] | None = None) -> list[Path]:
    """Image files under ``folder`` (any depth, sorted folder by folder, hidden entries left
    out), by the rules of :func:`metastudio.data.listing.find_images`; each entry that can't be
    used (a broken link, a loop, a drawing format...) goes to ``problems`` as (path, reason)."""
    files, bad = find_images([folder])
    if problems is not None:
        problems += [(error.path, error.reason) for error in bad]
    return files


def class_folders_in(folder: Path, problems: list[tuple[str, str]] | None = None) -> list[tuple[str, list[Path]]]:
    """(name, image files) of each sub-folder of ``folder`` that holds images, sorted by name;
    entries that can't be used go to ``problems`` (see :func:`image_files_in`)."""
    found = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = image_files_in(sub, problems)
        if files:
            found.append((sub.name, files))
    return found


class ProjectController(QObject):
    #: The whole project was replaced (new / open).
    reset = Signal()
    #: Classes were added, removed or reordered.
    classes_changed = Signal()
    #: One class's name, colour or images changed.
    class_changed = Signal(str)
    #: The query images changed.
    queries_changed = Signal()
    #: Anything that changes what the model adapts to (support images, class names).
    support_changed = Signal()
    #: Files that could not be imported: [(path, reason in everyday words[, technical detail])].
    problems = Signal(list)
    #: Model choice or hyperparameters changed.
    model_changed = Signal()

    def __init__(self, project: Project | None = None, parent: QObject | None = None):
        super().__init__(parent)
        self.project = project or Project()
        self.undo_stack = QUndoStack(self)

    # -- whole project ------------------------------------------------------------------------
    def replace(self, project: Project) -> None:
        """Make ``project`` the open one (the previous one is closed); clears undo history."""
        old, self.project = self.project, project
        self.undo_stack.clear()
        self.undo_stack.setClean()
        if old is not project:
            old.close()
        self.reset.emit()
        self.support_changed.emit()

    @property
    def modified(self) -> bool:
        return not self.undo_stack.isClean()

    def mark_saved(self) -> None:
        self.undo_stack.setClean()

    # -- low-level edits (used by the commands only) --------------------------------------------
    def _container(self, class_id: str | None) -> list[ImageItem]:
        return self.project.queries if class_id is None else self.project.class_by_id(class_id).images

    def _changed(self, class_ids: Iterable[str | None]) -> None:
        ids = set(class_ids)
        for cid in ids:
            if cid is None:
                self.queries_changed.emit()
            else:
                self.class_changed.emit(cid)
        if any(cid is not None for cid in ids):
            self.support_changed.emit()

    def _insert(self, placements: Sequence[tuple[str | None, int, ImageItem]]) -> None:
        for cid, index, item in sorted(placements, key=lambda p: p[1]):
            container = self._container(cid)
            container.insert(min(index, len(container)), item)
        self._changed(cid for cid, _, _ in placements)

    def _remove(self, image_ids: Sequence[str]) -> list[tuple[str | None, int, ImageItem]]:
        removed = []
        for image_id in image_ids:
            entry, index = self.project.locate(image_id)
            cid = entry.id if entry is not None else None
            removed.append((cid, index, self._container(cid).pop(index)))
        self._changed(cid for cid, _, _ in removed)
        # Indices recorded while popping one by one: re-inserting in reverse order restores them.
        return removed

    def _restore(self, removed: Sequence[tuple[str | None, int, ImageItem]]) -> None:
        for cid, index, item in reversed(removed):
            container = self._container(cid)
            container.insert(min(index, len(container)), item)
        self._changed(cid for cid, _, _ in removed)

    # -- classes ------------------------------------------------------------------------------------
    def add_class(self, name: str | None = None, colour: str | None = None) -> str:
        entry = self.project.add_class(name, colour)
        self.project.classes.remove(entry)  # the command puts it in (so redo/undo own it)
        index = len(self.project.classes)

        def redo():
            self.project.classes.insert(index, entry)
            self.classes_changed.emit()

        def undo():
            self.project.classes.remove(entry)
            self.classes_changed.emit()
            if entry.images:
                self.support_changed.emit()

        self.undo_stack.push(_Command(f"Add class '{entry.name}'", redo, undo))
        return entry.id

    def delete_class(self, class_id: str) -> None:
        entry = self.project.class_by_id(class_id)
        index = self.project.classes.index(entry)

        def redo():
            self.project.classes.remove(entry)
            self.classes_changed.emit()
            self.support_changed.emit()

        def undo():
            self.project.classes.insert(index, entry)
            self.classes_changed.emit()
            self.support_changed.emit()

        self.undo_stack.push(_Command(f"Delete class '{entry.name}'", redo, undo))

    def rename_class(self, class_id: str, name: str) -> bool:
        """Rename; False (nothing changes) for an empty name or one another class has."""
        entry = self.project.class_by_id(class_id)
        name = name.strip()
        other = self.project.class_by_name(name)
        if not name or name == entry.name or (other is not None and other is not entry):
            return False
        old = entry.name

        def setter(value):
            def apply():
                entry.name = value
                self.class_changed.emit(class_id)
                self.support_changed.emit()
            return apply

        self.undo_stack.push(_Command(f"Rename class '{old}' to '{name}'", setter(name), setter(old)))
        return True

    def recolour_class(self, class_id: str, colour: str) -> None:
        entry = self.project.class_by_id(class_id)
        old = entry.colour
        if colour == old:
            return

        def setter(value):
            def apply():
                entry.colour = value
                self.class_changed.emit(class_id)
            return apply

        self.undo_stack.push(_Command(f"Recolour class '{entry.name}'", setter(colour), setter(old)))

    # -- images ------------------------------------------------------------------------------------
    def _import(self, paths: Iterable[str | os.PathLike]) -> tuple[list[ImageItem], list[tuple[str, str]]]:
        items, problems = [], []
        for path in paths:
            try:
                items.append(self.project.import_file(path))
            except ImageLoadError as e:
                problems.append((str(path), e.reason, e.detail))
            except OSError as e:
                problems.append((str(path), e.strerror or str(e)))
        return items, problems

    def _push_add(self, items: list[ImageItem], class_id: str | None, text: str) -> None:
        if not items:
            return
        start = len(self._container(class_id))
        placements = [(class_id, start + i, item) for i, item in enumerate(items)]
        ids = [item.id for item in items]
        self.undo_stack.push(_Command(text, lambda: self._insert(placements), lambda: self._remove(ids)))

    def expand(self, paths: Iterable[str | os.PathLike]) -> tuple[list[Path], list[tuple[str, str]]]:
        """Files, with folders replaced by the image files inside them; problems for paths that
        are neither, or folders without images."""
        files: list[Path] = []
        problems: list[tuple[str, str]] = []
        for raw in paths:
            p = Path(raw)
            if p.is_dir():
                before = len(problems)
                inside = image_files_in(p, problems)
                if not inside and len(problems) == before:
                    problems.append((str(p), "the folder holds no image files"))
                files += inside
            elif p.exists():
                files.append(p)
            else:
                problems.append((str(p), "the file does not exist"))
        return files, problems

    def add_files(self, paths: Iterable[str | os.PathLike], class_id: str | None = None) -> list[str]:
        """Copy image files (folders: every image inside) into the class ``class_id``, or into
        the queries when None. Files that can't be used are reported through ``problems``;
        the others are added. Returns the new image ids."""
        files, problems = self.expand(paths)
        items, bad = self._import(files)
        problems += bad
        target = "queries" if class_id is None else f"'{self.project.class_by_id(class_id).name}'"
        self._push_add(items, class_id, f"Add {len(items)} image{'s' if len(items) != 1 else ''} to {target}")
        if problems:
            self.problems.emit(problems)
        return [item.id for item in items]

    def add_bytes(self, data: bytes, suffix: str, class_id: str | None = None, source: str = "clipboard") -> str | None:
        """Add an image held in memory (pasted); None and a problem report when it can't be used."""
        try:
            item = self.project.import_bytes(data, suffix, source)
        except (ImageLoadError, OSError) as e:
            self.problems.emit([(source, getattr(e, "reason", None) or str(e))])
            return None
        target = "queries" if class_id is None else f"'{self.project.class_by_id(class_id).name}'"
        verb = "Add a camera photo to" if source == "camera" else "Paste an image into"
        self._push_add([item], class_id, f"{verb} {target}")
        return item.id

    def import_class_folders(self, folder: str | os.PathLike) -> list[str]:
        """Make a class for each sub-folder of ``folder`` that holds images (adding to a class of
        the same name if there is one). One undo step. Returns the ids of the classes touched."""
        folder = Path(folder)
        listed: list[tuple[str, str]] = []
        found = class_folders_in(folder, listed)
        if not found:
            self.problems.emit([(str(folder), "no sub-folders with images: make one sub-folder per class"), *listed])
            return []
        self.undo_stack.beginMacro(f"Import classes from '{folder.name}'")
        touched, problems = [], listed
        try:
            # Empty classes still called "Class 1", "Class 2"... (a new project's starters) make
            # way for the imported ones, so the number keys match the imported classes.
            names = {name.casefold() for name, _ in found}
            for entry in list(self.project.classes):
                if not entry.images and STARTER_NAME.fullmatch(entry.name) and entry.name.casefold() not in names:
                    self.delete_class(entry.id)
            for name, files in found:
                entry = self.project.class_by_name(name)
                class_id = entry.id if entry is not None else self.add_class(name)
                items, bad = self._import(files)
                problems += bad
                self._push_add(items, class_id, f"Add {len(items)} images to '{name}'")
                touched.append(class_id)
        finally:
            self.undo_stack.endMacro()
        if problems:
            self.problems.emit(problems)
        return touched

    def move_images(self, image_ids: Sequence[str], class_id: str | None) -> None:
        """Move images into class ``class_id`` (None: back to the queries), e.g. a corrected prediction."""
        ids = [i for i in image_ids if self._holder(i) != class_id]
        if not ids:
            return
        target = "queries" if class_id is None else f"'{self.project.class_by_id(class_id).name}'"
        state: dict[str, list] = {}

        def redo():
            state["removed"] = self._remove(ids)
            start = len(self._container(class_id))
            self._insert([(class_id, start + i, item) for i, (_, _, item) in enumerate(state["removed"])])

        def undo():
            self._remove(ids)
            self._restore(state["removed"])

        noun = "image" if len(ids) == 1 else f"{len(ids)} images"
        self.undo_stack.push(_Command(f"Move {noun} to {target}", redo, undo))

    def remove_images(self, image_ids: Sequence[str]) -> None:
        ids = list(image_ids)
        if not ids:
            return
        state: dict[str, list] = {}

        def redo():
            state["removed"] = self._remove(ids)

        self.undo_stack.push(_Command(f"Remove {len(ids)} image{'s' if len(ids) != 1 else ''}", redo,
                                      lambda: self._restore(state["removed"])))

    def _holder(self, image_id: str) -> str | None:
        entry, _ = self.project.locate(image_id)
        return entry.id if entry is not None else None

    # -- model -------------------------------------------------------------------------------------
    def set_model(self, choice: dict, hyperparameters: dict | None = None) -> None:
        old = (dict(self.project.model), dict(self.project.hyperparameters))
        new = (dict(choice), dict(hyperparameters or {}))
        if new == old:
            return

        def setter(value):
            def apply():
                self.project.model, self.project.hyperparameters = dict(value[0]), dict(value[1])
                self.model_changed.emit()
                self.support_changed.emit()
            return apply

        self.undo_stack.push(_Command("Change model", setter(new), setter(old)))
