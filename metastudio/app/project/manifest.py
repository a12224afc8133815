"""The manifest of a ``.metastudio`` file: its declared schema, and the checks a manifest passes.

``manifest.json`` is UTF-8, indented JSON::

    {"format": "metastudio-project", "format_version": 1,
     "app_version": "0.1.0", "saved_at": "2025-01-31T12:00:00+00:00",
     "classes": [{"id": "<hex>", "name": "Cats", "colour": "#0072b2",
                  "images": [{"id": "<hex>", "file": "0123456789abcdef.jpg",
                              "source": "/home/me/cat.jpg"}, ...]}, ...],
     "queries": [{"id": ..., "file": ..., "source": ...}, ...],
     "model": {"kind": "shipped", "name": "photos"},
     "hyperparameters": {...}, "settings": {...},
     "models": ["my-model.safetensors", ...]}

Every id (of a class or an image) is used once; an image's ``file`` looks like
``0123456789abcdef.png``, a model name is a plain safe base name ending ``.safetensors`` and a
colour is ``"#rrggbb"``. A manifest of a newer MetaStudio (higher ``format_version``) is
refused with a message saying so. :func:`parse_manifest` checks all of this and turns a
manifest into fresh objects; anything else raises :class:`ProjectError`.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metastudio import __version__
from metastudio.app.project.model import (
    COLOUR,
    DEFAULT_MODEL,
    IMAGE_FILE,
    ClassEntry,
    ImageItem,
    Project,
    is_safe_model_name,
)
from metastudio.errors import ProjectError

FORMAT = "metastudio-project"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"


def now() -> str:
    """The moment, as a manifest's ``saved_at`` holds it (UTC, ISO 8601, whole seconds)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# ----------------------------------------------------------------------------------------------
# Writing


def to_manifest(project: Project) -> dict[str, Any]:
    """``project`` as a manifest (a fresh copy; ``saved_at`` is now); :class:`ProjectError` if its
    ``model``, ``hyperparameters`` or ``settings`` hold something JSON cannot represent."""
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "app_version": __version__,
        "saved_at": now(),
        "classes": [
            {"id": c.id, "name": c.name, "colour": c.colour, "images": [_item_json(i) for i in c.images]}
            for c in project.classes
        ],
        "queries": [_item_json(i) for i in project.queries],
        "model": project.model,
        "hyperparameters": project.hyperparameters,
        "settings": project.settings,
        "models": project.model_files(),
    }
    try:
        text = json.dumps(manifest, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise ProjectError(
            f"the project's model choice, hyperparameters or settings are not plain JSON data: {error}"
        ) from None
    return json.loads(text)


def _item_json(item: ImageItem) -> dict[str, str]:
    return {"id": item.id, "file": item.file, "source": item.source}


def manifest_files(manifest: Mapping[str, Any]) -> list[str]:
    """The image files a manifest names (each once, in order: class by class, then queries)."""
    items = [i for c in manifest["classes"] for i in c["images"]] + list(manifest["queries"])
    return list(dict.fromkeys(i["file"] for i in items))


# ----------------------------------------------------------------------------------------------
# Reading


@dataclass
class ParsedManifest:
    """A manifest that passed every check, as fresh objects."""

    classes: list[ClassEntry]
    queries: list[ImageItem]
    model: dict[str, Any]
    hyperparameters: dict[str, Any]
    settings: dict[str, Any]
    models: list[str]

    def all_items(self) -> Iterable[ImageItem]:
        for entry in self.classes:
            yield from entry.images
        yield from self.queries


def parse_manifest(manifest: Any) -> ParsedManifest:
    """Check a manifest's shape and turn it into fresh objects; :class:`ProjectError` if wrong."""
    if not isinstance(manifest, Mapping):
        raise ProjectError("its manifest is not a JSON object")
    _check_format(manifest)
    ids: set[str] = set()
    classes = [_parse_class(raw, f"classes[{c}]", ids)
               for c, raw in enumerate(_list(manifest.get("classes", []), "classes"))]
    queries = [_parse_item(raw, f"queries[{i}]", ids)
               for i, raw in enumerate(_list(manifest.get("queries", []), "queries"))]
    models = []
    for i, name in enumerate(_list(manifest.get("models", []), "models")):
        if not isinstance(name, str) or not is_safe_model_name(name):
            raise ProjectError(f"the manifest's models[{i}] is not a valid model file name: {name!r}")
        models.append(name)
    return ParsedManifest(
        classes=classes,
        queries=queries,
        model=_json_copy(_object(manifest.get("model", DEFAULT_MODEL), "model")),
        hyperparameters=_json_copy(_object(manifest.get("hyperparameters", {}), "hyperparameters")),
        settings=_json_copy(_object(manifest.get("settings", {}), "settings")),
        models=list(dict.fromkeys(models)),
    )


def _check_format(manifest: Mapping[str, Any]) -> None:
    """Refuse a document that is not a project manifest, or one of a newer format version."""
    if manifest.get("format") != FORMAT:
        raise ProjectError(f"it is not a MetaStudio project (its manifest's format is {manifest.get('format')!r})")
    version = manifest.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ProjectError(f"its manifest has an invalid format_version: {version!r}")
    if version > FORMAT_VERSION:
        raise ProjectError(
            f"it was made by a newer MetaStudio (project format version {version}; MetaStudio "
            f"{__version__} reads up to version {FORMAT_VERSION}); please update MetaStudio"
        )


def _unique_id(raw: Mapping[str, Any], where: str, ids: set[str]) -> str:
    """The non-empty ``id`` of a class or image record, which no record before it used."""
    value = _text(raw.get("id"), f"{where}.id", nonempty=True)
    if value in ids:
        raise ProjectError(f"the manifest's {where}.id {value!r} is used twice")
    ids.add(value)
    return value


def _parse_item(raw: Any, where: str, ids: set[str]) -> ImageItem:
    raw = _object(raw, where)
    item_id = _unique_id(raw, where, ids)
    file = _text(raw.get("file"), f"{where}.file")
    if not IMAGE_FILE.fullmatch(file):
        raise ProjectError(f"the manifest's {where}.file is not a valid image file name: {file!r}")
    return ImageItem(id=item_id, file=file, source=_text(raw.get("source", ""), f"{where}.source"))


def _parse_class(raw: Any, where: str, ids: set[str]) -> ClassEntry:
    raw = _object(raw, where)
    class_id = _unique_id(raw, where, ids)
    name = _text(raw.get("name"), f"{where}.name")
    colour = _text(raw.get("colour"), f"{where}.colour")
    if not COLOUR.fullmatch(colour):
        raise ProjectError(f"the manifest's {where}.colour is not a '#rrggbb' colour: {colour!r}")
    raw_images = _list(raw.get("images", []), f"{where}.images")
    images = [_parse_item(r, f"{where}.images[{i}]", ids) for i, r in enumerate(raw_images)]
    return ClassEntry(id=class_id, name=name, colour=colour, images=images)


def _text(value: Any, where: str, nonempty: bool = False) -> str:
    if not isinstance(value, str) or (nonempty and not value):
        raise ProjectError(f"the manifest's {where} is not {'a non-empty' if nonempty else 'a'} string: {value!r}")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise ProjectError(f"the manifest's {where} is not a list")
    return value


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ProjectError(f"the manifest's {where} is not an object")
    return dict(value)


def _json_copy(value: dict[str, Any]) -> dict[str, Any]:
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as error:
        raise ProjectError(f"the manifest holds data that is not plain JSON: {error}") from None


# ----------------------------------------------------------------------------------------------
# The project


def build_project(cls: type[Project], parsed: ParsedManifest, workdir: Path, unreadable: Mapping[str, str]) -> Project:
    """A ``cls`` project in ``workdir`` (whose files are already there) holding ``parsed``.

    An image whose file is missing, or that ``unreadable`` says could not be unpacked (file
    name -> why), is left out and reported in ``problems``; so are missing models.
    """
    project = cls(workdir)
    project.model = parsed.model
    project.hyperparameters = parsed.hyperparameters
    project.settings = parsed.settings

    def keep(item: ImageItem, where: str) -> bool:
        reason = unreadable.get(item.file)
        if reason is None and not project.image_path(item).is_file():
            reason = "is missing from the project"
        if reason is None:
            return True
        project.problems.append(f"image '{item.name}' ({where}) {reason}; it was left out")
        return False

    for entry in parsed.classes:
        entry.images = [i for i in entry.images if keep(i, f"in class '{entry.name}'")]
        project.classes.append(entry)
    project.queries = [i for i in parsed.queries if keep(i, "a query image")]
    present = set(project.model_files())
    for name in parsed.models:
        if name not in present:
            project.problems.append(f"model '{name}' {unreadable.get(name, 'is missing from the project')}")
    if project.model.get("kind") == "project" and project.model.get("name") not in present:
        project.problems.append(f"the chosen model '{project.model.get('name')}' is not in the project")
    return project
