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
     "models": ["my-model.safetensors", ...],
     "sizes": {"images/0123456789abcdef.jpg": 52817, "models/my-model.safetensors": 4718592}}

:data:`SCHEMA` declares it (JSON Schema, read by :mod:`metastudio.data.jsondoc`: the text is
bounded first, its size, nesting depth and numbers, then checked against the schema). What a
schema cannot say is checked after it: every id (of a class or an image) is used once, and a
model name is not one Windows reserves. A manifest of a newer MetaStudio (higher
``format_version``) is refused with a message saying so. :func:`parse_manifest_text` (a
manifest's text) and :func:`parse_manifest` (a manifest in memory) turn a manifest into fresh
objects; anything that does not fit raises :class:`ProjectError` naming the field:
``the manifest's field 'classes[0].colour' must be a '#rrggbb' colour, not 'red'``.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metastudio import __version__
from metastudio.app.project.model import (
    MODEL_NAME,
    COLOUR,
    DEFAULT_MODEL,
    IMAGE_FILE,
    IMAGES,
    MODELS,
    ClassEntry,
    ImageItem,
    Project,
    is_safe_model_name,
)
from metastudio.data import jsondoc
from metastudio.errors import ProjectError

FORMAT = "metastudio-project"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"

#: The most bytes a manifest may have (its nesting depth and numbers: jsondoc's defaults).
MAX_MANIFEST_BYTES = 64 << 20
#: The most classes, images of one class (and query images), and models a manifest may list.
MAX_CLASSES, MAX_IMAGES, MAX_MODELS = 10_000, 1_000_000, 10_000
#: The longest path a manifest may hold (Windows' long paths), and the longest class or model name.
MAX_PATH, MAX_NAME = 32_767, 1000

_IMAGE_FILE, _MODEL_FILE = IMAGE_FILE.pattern, MODEL_NAME.pattern
_IMAGE_WORDS = "an image file name like '0123456789abcdef.png'"
_MODEL_WORDS = ("a model file name like 'my model.safetensors' (letters, digits, spaces, '.', '_' and '-', "
                "not a path)")
_COLOUR_WORDS = "a '#rrggbb' colour"
_ID = {"type": "string", "minLength": 1, "maxLength": 200}
_ITEM = {
    "type": "object",
    "required": ["id", "file"],
    "properties": {
        "id": _ID,
        "file": {"type": "string", "pattern": f"^{_IMAGE_FILE}$", "description": _IMAGE_WORDS},
        "source": {"type": "string", "maxLength": MAX_PATH},
    },
}

#: What a project's manifest must look like (JSON Schema, draft 2020-12). Keys it does not name
#: are allowed, so that a manifest written by a later MetaStudio of the same format version opens.
#: ``sizes`` gives the size in bytes of archive members (``images/<file>``, ``models/<name>``).
SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["format", "format_version"],
    "properties": {
        "format": {"const": FORMAT},
        "format_version": {"type": "integer", "minimum": 1},
        "app_version": {"type": "string", "maxLength": 100},
        "saved_at": {"type": "string", "maxLength": 100},
        "classes": {"type": "array", "maxItems": MAX_CLASSES, "items": {
            "type": "object",
            "required": ["id", "name", "colour"],
            "properties": {
                "id": _ID,
                "name": {"type": "string", "maxLength": MAX_NAME},
                "colour": {"type": "string", "pattern": f"^{COLOUR.pattern}$", "description": _COLOUR_WORDS},
                "images": {"type": "array", "maxItems": MAX_IMAGES, "items": _ITEM},
            },
        }},
        "queries": {"type": "array", "maxItems": MAX_IMAGES, "items": _ITEM},
        "model": {"type": "object", "properties": {
            "kind": {"type": "string", "maxLength": 100},
            "name": {"type": "string", "maxLength": MAX_NAME},
            "path": {"type": "string", "maxLength": MAX_PATH},
        }},
        "hyperparameters": {"type": "object", "maxProperties": 500, "propertyNames": {"maxLength": 100}},
        "settings": {"type": "object"},
        "models": {"type": "array", "maxItems": MAX_MODELS, "items": {
            "type": "string", "pattern": f"^{_MODEL_FILE}$", "description": _MODEL_WORDS}},
        "sizes": {
            "type": "object",
            "maxProperties": 2 * MAX_IMAGES + MAX_MODELS,
            "propertyNames": {"pattern": f"^({IMAGES}/{_IMAGE_FILE}|{MODELS}/{_MODEL_FILE})$",
                              "description": f"'{IMAGES}/<file>' or '{MODELS}/<name>', an image or a model of "
                                             "the project file"},
            "additionalProperties": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
        },
    },
}

#: How messages about a manifest begin ("the manifest's field 'classes[0].colour' must be ...").
WORDS = jsondoc.Words(ProjectError, document="the manifest")


def now() -> str:
    """The moment, as a manifest's ``saved_at`` holds it (UTC, ISO 8601, whole seconds)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# ----------------------------------------------------------------------------------------------
# Writing


def to_manifest(project: Project) -> dict[str, Any]:
    """``project`` as a manifest (a fresh copy; ``saved_at`` is now); :class:`ProjectError` if its
    ``model``, ``hyperparameters`` or ``settings`` hold something JSON cannot represent, or that
    the manifest's reader would refuse (nested too deeply, an integer of too many digits)."""
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
    except RecursionError:  # nested thousands of levels deep
        raise ProjectError(f"the project's model choice, hyperparameters or settings nest more than "
                           f"{jsondoc.MAX_DEPTH} levels deep") from None
    return jsondoc.parse_text(text, jsondoc.Words(ProjectError, document="the project"), max_text=len(text))


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
    """A manifest that passed every check, as fresh objects (``sizes``: archive member name ->
    its size in bytes, as the manifest declares it; empty when it declares none)."""

    classes: list[ClassEntry]
    queries: list[ImageItem]
    model: dict[str, Any]
    hyperparameters: dict[str, Any]
    settings: dict[str, Any]
    models: list[str]
    sizes: dict[str, int] = field(default_factory=dict)

    def all_items(self) -> Iterable[ImageItem]:
        for entry in self.classes:
            yield from entry.images
        yield from self.queries


def read_manifest_text(data: str | bytes) -> Any:
    """The JSON document of a manifest's ``data`` (UTF-8), bounded (its size, nesting depth and
    numbers: :mod:`metastudio.data.jsondoc`) but not yet checked against :data:`SCHEMA`;
    :class:`ProjectError` saying what is wrong. :func:`parse_manifest` checks the rest."""
    return jsondoc.parse_text(data, WORDS, max_text=MAX_MANIFEST_BYTES)


def parse_manifest_text(data: str | bytes) -> ParsedManifest:
    """:func:`parse_manifest` of the manifest text ``data`` (what a project file holds)."""
    return _parse(read_manifest_text(data))


def parse_manifest(manifest: Any) -> ParsedManifest:
    """Check a manifest document (parsed JSON, or one about to be written) against :data:`SCHEMA`
    and what the schema cannot say (ids used once, safe model names), and turn it into fresh
    objects; :class:`ProjectError` naming the field if anything does not fit."""
    jsondoc.check_value(manifest, WORDS)
    return _parse(manifest)


def _parse(manifest: Any) -> ParsedManifest:
    _check_format(manifest)
    jsondoc.validate(manifest, SCHEMA, WORDS)
    ids: dict[str, str] = {}
    classes = []
    for c, raw in enumerate(manifest.get("classes", [])):
        class_id = _unique_id(raw["id"], ("classes", c), ids)
        colour = _checked(raw["colour"], ("classes", c, "colour"), COLOUR.fullmatch, _COLOUR_WORDS)
        images = [_item(item, ("classes", c, "images", i), ids) for i, item in enumerate(raw.get("images", []))]
        classes.append(ClassEntry(id=class_id, name=raw["name"], colour=colour, images=images))
    queries = [_item(item, ("queries", i), ids) for i, item in enumerate(manifest.get("queries", []))]
    models = [_checked(name, ("models", i), is_safe_model_name, _MODEL_WORDS)
              for i, name in enumerate(manifest.get("models", []))]
    return ParsedManifest(
        classes=classes,
        queries=queries,
        model=_json_copy(manifest.get("model", DEFAULT_MODEL)),
        hyperparameters=_json_copy(manifest.get("hyperparameters", {})),
        settings=_json_copy(manifest.get("settings", {})),
        models=list(dict.fromkeys(models)),
        sizes=dict(manifest.get("sizes", {})),
    )


def _check_format(manifest: Any) -> None:
    """Refuse a document that is not a project manifest, or one of a newer format version
    (whose shape this MetaStudio may not know), before the schema words it less clearly."""
    if not isinstance(manifest, Mapping):
        return
    if manifest.get("format") != FORMAT:
        kind = f"'s format is {jsondoc.describe(manifest['format'])}" if "format" in manifest else " names no format"
        raise ProjectError(f"it is not a MetaStudio project (its manifest{kind})")
    version = manifest.get("format_version")
    if type(version) is int and version > FORMAT_VERSION:
        raise ProjectError(
            f"it was made by a newer MetaStudio (project format version {version}; MetaStudio "
            f"{__version__} reads up to version {FORMAT_VERSION}); please update MetaStudio"
        )


def _checked(value: str, path: tuple, fits: Callable[[str], Any], expected: str) -> str:
    """``value`` when ``fits(value)``, which is stricter than the schema's pattern (a whole-string
    match; a model name that is not one Windows reserves)."""
    if not fits(value):
        raise WORDS.fail(path, f"must be {expected}, not {jsondoc.describe(value)}")
    return value


def _unique_id(value: str, where: tuple, ids: dict[str, str]) -> str:
    """The ``id`` of the class or image record at ``where``, which no record before it used."""
    first = ids.setdefault(value, jsondoc.field_name(where))
    if first != jsondoc.field_name(where):
        raise WORDS.fail((*where, "id"), f"holds {jsondoc.describe(value)}, an id used twice (by {first} too); "
                                         "every class and image needs an id of its own")
    return value


def _item(raw: Mapping[str, Any], where: tuple, ids: dict[str, str]) -> ImageItem:
    return ImageItem(id=_unique_id(raw["id"], where, ids),
                     file=_checked(raw["file"], (*where, "file"), IMAGE_FILE.fullmatch, _IMAGE_WORDS),
                     source=raw.get("source", ""))


def _json_copy(value: dict[str, Any]) -> dict[str, Any]:
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as error:  # a document in memory, holding what JSON cannot
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
