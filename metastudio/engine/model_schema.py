"""The declared schema of a model file's metadata, and the checks a file passes before use.

A model file's header holds its metadata as one JSON text (see :mod:`metastudio.engine.checkpoint`).
:func:`parse_metadata` turns that text into a dictionary only when it fits :data:`SCHEMA`, a
JSON Schema (draft 2020-12) checked with the ``jsonschema`` library: JSON Schema is the standard,
language-neutral way to declare a JSON document, so the declaration is data that other tools can
read too, and each failure names the keyword, the path and the value, which is what a message
for a person needs. Before the schema, the text itself is bounded: its length, its nesting depth
(the JSON parser would otherwise recurse once per level) and the size of each number (no NaN or
infinity, no integer of more than :data:`MAX_INT_DIGITS` digits). Keys the schema does not name
are allowed, so that files written with more metadata still open.

:func:`check_class_names` compares the class names with the saved learner's tensors, and
:func:`check_finite` refuses weights holding NaN or infinity. Every failure is a
:class:`~metastudio.errors.CheckpointError` naming the file, the field and what was expected.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from metastudio.data.images import FITS
from metastudio.errors import CheckpointError

FORMAT = "metastudio-model"
FORMAT_VERSION = 1
META_KEY = "metastudio"

#: Bounds on the metadata text: characters, nesting levels, digits of one integer.
MAX_TEXT, MAX_DEPTH, MAX_INT_DIGITS = 16_000_000, 100, 40
#: The largest image side and hyperparameter magnitude a model may declare.
MAX_IMAGE_SIZE, MAX_HPARAM = 4096, 1e12

_NAME = {"type": "string", "minLength": 1, "maxLength": 200}
_SCALAR = {"type": ["string", "number", "boolean", "null"], "maxLength": 10_000,
           "minimum": -MAX_HPARAM, "maximum": MAX_HPARAM}
_OBJECT = {"type": "object"}

#: What a model file's (or training checkpoint's) metadata must look like.
SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["format", "algorithm", "backbone", "image_size", "channels"],
    "properties": {
        "format": {"const": FORMAT},
        "format_version": {"type": "integer", "minimum": 0},
        "metastudio_version": {"type": "string", "maxLength": 100},
        "algorithm": _NAME,
        "algorithm_version": {"type": ["string", "integer"], "maxLength": 100},
        "backbone": _NAME,
        "image_size": {"type": "integer", "minimum": 1, "maximum": MAX_IMAGE_SIZE},
        "channels": {"type": "integer", "enum": [1, 3]},
        "hyperparameters": {"type": "object", "maxProperties": 500, "propertyNames": {"maxLength": 100},
                            "additionalProperties": _SCALAR},
        "backbone_frozen": {"type": "boolean"},
        "fit": {"enum": list(FITS)},
        "class_names": {"type": ["array", "null"], "maxItems": 100_000,
                        "items": {"type": "string", "maxLength": 1000}},
        "dataset": _OBJECT,
        "history": {"type": "array", "items": _OBJECT},
        "created": {"type": "string", "maxLength": 100},
        "trained_steps": {"type": "integer", "minimum": 0},
        "best_val_accuracy": {"type": ["number", "null"]},
        "adaptation_defaults": _OBJECT,
        "stored_dtype": {"type": "string", "maxLength": 100},
        "optimizer": {"type": "object", "required": ["param_groups", "state"], "properties": {
            "param_groups": {"type": "array", "items": _OBJECT},
            "state": {"type": "object", "propertyNames": {"pattern": "^[0-9]{1,9}$"}, "additionalProperties": _OBJECT},
        }},
        "scheduler": _OBJECT,
        "trainer": {"type": "object", "properties": {"step": {"type": "integer", "minimum": 0}}},
    },
}

#: A saved learner's tensors whose size along an axis is its number of classes.
CLASS_AXES: dict[str, int] = {"learner.prototypes": 0, "learner.class_embeddings": 0, "learner.onehot": -1}

_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_BRACKET = re.compile(r"[\[\]{}]")


@functools.cache
def _validator():
    import jsonschema  # imported on first use: opening the app does not pay for it

    return jsonschema.Draft202012Validator(SCHEMA)


class _BadNumber:
    """A number of the metadata text that cannot be used, and why (in words); an error once found."""

    def __init__(self, why: str):
        self.why = why


def _parse_int(text: str) -> int | _BadNumber:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        return _BadNumber(f"a number of {len(text.lstrip('-'))} digits ({text[:12]}...), "
                           f"more than the {MAX_INT_DIGITS} allowed")
    return int(text)


def _parse_float(text: str) -> float | _BadNumber:
    value = float(text)
    return value if math.isfinite(value) else _BadNumber(f"a number too large to use ({text[:20]})")


def _nesting(text: str) -> int:
    """How deeply the JSON ``text`` nests, counted without parsing (stops past MAX_DEPTH)."""
    depth = deepest = 0
    for bracket in _BRACKET.finditer(_STRING.sub("", text)):
        depth += 1 if bracket.group() in "[{" else -1
        deepest = max(deepest, depth)
        if deepest > MAX_DEPTH:
            break
    return deepest


def _field(path: Sequence[Any]) -> str:
    """``hyperparameters.lr``, ``class_names[2]``: where a value is in the document."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _bad_number(node: Any, path: tuple = ()) -> tuple[tuple, _BadNumber] | None:
    if isinstance(node, _BadNumber):
        return path, node
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        found = _bad_number(value, (*path, key))
        if found:
            return found
    return None


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float, str)):
        text = repr(value)
        return text if len(text) <= 60 else text[:57] + "..."
    return {dict: "an object", list: "a list"}.get(type(value), type(value).__name__)


_TYPE_WORDS = {"object": "an object", "array": "a list", "string": "a string", "integer": "a whole number",
               "number": "a number", "boolean": "true/false", "null": "null"}


def _one_of(words: Sequence[str]) -> str:
    """``a``, ``a or b``, ``a, b or c``."""
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def _expected(error) -> str:
    """What the value at ``error``'s path should have been, in words."""
    rule, value, instance = error.validator, error.validator_value, error.instance
    if rule == "type":
        kinds = [value] if isinstance(value, str) else value
        return _one_of([_TYPE_WORDS[k] for k in kinds])
    if rule in ("enum", "const"):
        choices = [value] if rule == "const" else value
        return _one_of([_kind(c) for c in choices])
    if rule == "minimum":
        return f"at least {value:g}" if isinstance(value, float) else f"at least {value}"
    if rule == "maximum":
        return f"at most {value:g}" if isinstance(value, float) else f"at most {value}"
    if rule == "minLength":
        return "a non-empty string"
    if rule == "maxLength":
        return f"at most {value} characters long (it has {len(instance)})"
    if rule in ("maxItems", "maxProperties"):
        return f"at most {value} entries long (it has {len(instance)})"
    return error.message


def _schema_message(error) -> str:
    if error.validator == "required":
        missing = next(name for name in error.validator_value if name not in error.instance)
        return f"field '{_field([*error.absolute_path, missing])}' is missing"
    if error.validator == "propertyNames":
        return f"field '{_field(error.absolute_path)}' has a key that is not allowed: {error.message}"
    field = _field(error.absolute_path)
    where = f"field '{field}'" if field else "its metadata"
    return f"{where} must be {_expected(error)}, not {_kind(error.instance)}"


def parse_metadata(text: Any, path: Any) -> dict[str, Any]:
    """The metadata document of the model file ``path``, from its header's JSON ``text``,
    checked against :data:`SCHEMA`; raises CheckpointError saying what does not fit."""
    if not isinstance(text, str):
        raise CheckpointError(f"'{path}' is a safetensors file without MetaStudio metadata")
    if len(text) > MAX_TEXT:
        raise CheckpointError(f"model file '{path}': its metadata is too long ({len(text)} characters, "
                              f"at most {MAX_TEXT})")
    if _nesting(text) > MAX_DEPTH:
        raise CheckpointError(f"model file '{path}': its metadata nests more than {MAX_DEPTH} levels deep")
    try:
        meta = json.loads(text, parse_int=_parse_int, parse_float=_parse_float,
                          parse_constant=lambda name: _BadNumber(f"{name}, which is not a usable number"))
    except ValueError as e:
        raise CheckpointError(f"'{path}' is a safetensors file without MetaStudio metadata") from e
    bad = _bad_number(meta)
    if bad:
        where, number = bad
        field = f"field '{_field(where)}'" if where else "its metadata"
        raise CheckpointError(f"model file '{path}': {field} holds {number.why}")
    if isinstance(meta, dict) and meta.get("format") != FORMAT:
        raise CheckpointError(f"'{path}' is not a MetaStudio model file")
    version = meta.get("format_version") if isinstance(meta, dict) else None
    if type(version) is int and version > FORMAT_VERSION:
        raise CheckpointError(
            f"'{path}' was written by a newer MetaStudio (format {version}); update MetaStudio to open it")
    from jsonschema.exceptions import best_match

    error = best_match(_validator().iter_errors(meta))
    if error is not None:
        raise CheckpointError(f"model file '{path}': {_schema_message(error)}")
    return meta


def check_class_names(meta: Mapping[str, Any], shapes: Mapping[str, Sequence[int]], path: Any) -> None:
    """Refuse a saved learner whose tensors hold another number of classes than its class names."""
    names = meta.get("class_names")
    if not names:
        return
    for key, axis in CLASS_AXES.items():
        shape = shapes.get(key)
        if shape is None:
            continue
        if not shape or len(shape) < (axis + 1 if axis >= 0 else -axis):
            raise CheckpointError(f"model file '{path}': tensor '{key}' has shape {list(shape)}, "
                                  "which holds no classes")
        if shape[axis] != len(names):
            raise CheckpointError(f"model file '{path}': field 'class_names' must name {shape[axis]} classes "
                                  f"(tensor '{key}' holds {shape[axis]}), not {len(names)}")


def check_finite(tensors: Mapping[str, torch.Tensor], path: Any) -> None:
    """Refuse weights holding NaN or infinity (a run that diverged), naming the first such tensor."""
    for key, tensor in tensors.items():
        if (tensor.is_floating_point() or tensor.is_complex()) and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"model file '{path}': tensor '{key}' holds NaN or infinite values; "
                                  "the model cannot be used (its training may have diverged)")
