"""The declared schema of a model file's metadata, and the checks a file passes before use.

A model file's header holds its metadata as one JSON text (see :mod:`metastudio.engine.checkpoint`).
:func:`parse_metadata` turns that text into a dictionary only when it fits :data:`SCHEMA`, a
JSON Schema (draft 2020-12), read by :mod:`metastudio.data.jsondoc`: the text is bounded first
(its length, its nesting depth, the size of each number: no NaN or infinity, no integer of more
than :data:`MAX_INT_DIGITS` digits), then checked with the ``jsonschema`` library. Keys the
schema does not name are allowed, so that files written with more metadata still open.

:func:`check_class_names` compares the number of class names with the saved learner's tensors
(their shapes: every built-in learner's layout is declared below), :func:`check_labels` the
support labels a learner holds with it, and :func:`check_finite` refuses weights holding NaN or
infinity. Every failure is a :class:`~metastudio.errors.CheckpointError` naming the file, the
field or tensor, and what was expected.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from metastudio.data import jsondoc
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

# What the saved learners' tensors say about their classes: the layouts the built-in learners
# and the core's FastWeightsLearner save (:meth:`~metastudio.algorithms.base.Learner.learner_state`).

#: Tensors whose size along an axis is the number of classes: Prototypical Networks' prototypes
#: (and those of their distance rule), Relation Networks' class embeddings, Matching Networks'
#: one-hot support labels, and the task head of the gradient family (MAML, Reptile, the LSTM
#: meta-learner: ``fast.head_weight`` [1, N, D], ``fast.head_bias`` [1, N]), SimpleShot's class
#: means and Baseline++'s fine-tuned class weights.
CLASS_AXES: dict[str, int] = {
    "learner.prototypes": 0, "learner.open_set_prototypes": 0, "learner.open_set_expected": 0,
    "learner.class_embeddings": 0, "learner.onehot": -1, "learner.fast.head_weight": 1, "learner.fast.head_bias": 1,
    "learner.means": 0, "learner.weight": 0,
}
#: Tensors whose size along an axis is the most classes the learner can tell apart, its label
#: positions: MANN's one-hot previous label [1, max_ways], MetaNet's per-example output weights.
CLASS_POSITIONS: dict[str, int] = {"learner.label": -1, "learner.example.out.weight": 1, "learner.example.out.bias": -1}
#: Groups of tensors holding one row per support image (axis 0; a name ending in "." stands for
#: every tensor under it): Matching and Siamese Networks' support embeddings and labels, MetaNet's
#: memory keys and per-example fast weights. The tensors of a group agree on it, and every class
#: has at least one support image.
SUPPORT_ROWS: tuple[tuple[str, ...], ...] = (
    ("learner.support", "learner.onehot", "learner.labels"), ("learner.keys", "learner.example."),
)
#: Tensors holding the class (0 .. N-1) of each support image: Siamese Networks' labels.
CLASS_LABELS: tuple[str, ...] = ("learner.labels",)


def _check_kind(path: Any) -> Callable[[Any], None]:
    """A check of the parsed metadata that words another kind of document, or a newer format
    version, better than the schema would."""

    def check(meta: Any) -> None:
        if not isinstance(meta, dict):
            return
        if meta.get("format") != FORMAT:
            raise CheckpointError(f"'{path}' is not a MetaStudio model file")
        version = meta.get("format_version")
        if type(version) is int and version > FORMAT_VERSION:
            raise CheckpointError(
                f"'{path}' was written by a newer MetaStudio (format {version}); update MetaStudio to open it")

    return check


def parse_metadata(text: Any, path: Any) -> dict[str, Any]:
    """The metadata document of the model file ``path``, from its header's JSON ``text``,
    checked against :data:`SCHEMA`; raises CheckpointError saying what does not fit."""
    if not isinstance(text, str):
        raise CheckpointError(f"'{path}' is a safetensors file without MetaStudio metadata")
    words = jsondoc.Words(CheckpointError, where=f"model file '{path}'", document="its metadata", field="field")
    return jsondoc.read_document(text, SCHEMA, words, check=_check_kind(path), max_text=MAX_TEXT,
                                 max_depth=MAX_DEPTH, max_int_digits=MAX_INT_DIGITS,
                                 not_json=f"'{path}' is a safetensors file without MetaStudio metadata")


def _size(shapes: Mapping[str, Sequence[int]], key: str, axis: int, path: Any) -> int | None:
    """The size of tensor ``key`` along ``axis`` (None when there is no such tensor)."""
    shape = shapes.get(key)
    if shape is None:
        return None
    if len(shape) < (axis + 1 if axis >= 0 else -axis):
        raise CheckpointError(f"model file '{path}': tensor '{key}' has shape {list(shape)}, which holds no classes")
    return shape[axis]


def _support_rows(shapes: Mapping[str, Sequence[int]], group: Sequence[str], path: Any) -> tuple[str, int] | None:
    """(a tensor, its rows) of a :data:`SUPPORT_ROWS` group, after checking that they agree."""
    keys: list[str] = []
    for name in group:
        keys += sorted(k for k in shapes if k.startswith(name)) if name.endswith(".") else [name] * (name in shapes)
    first = None
    for key in keys:
        rows = _size(shapes, key, 0, path)
        if first is None:
            first = (key, rows)
        elif rows != first[1]:
            raise CheckpointError(f"model file '{path}': tensor '{key}' holds {rows} support images and tensor "
                                  f"'{first[0]}' {first[1]}; they must hold the same ones")
    return first


def check_class_names(meta: Mapping[str, Any], shapes: Mapping[str, Sequence[int]], path: Any) -> None:
    """Refuse a saved learner whose tensors (by name, their ``shapes``) hold another number of
    classes than its class names (see :data:`CLASS_AXES` and the rules after it)."""
    names = meta.get("class_names")
    if not names:
        return
    count = len(names)
    for key, axis in CLASS_AXES.items():
        size = _size(shapes, key, axis, path)
        if size is not None and size != count:
            raise CheckpointError(f"model file '{path}': field 'class_names' must name {size} classes "
                                  f"(tensor '{key}' holds {size}), not {count}")
    for key, axis in CLASS_POSITIONS.items():
        size = _size(shapes, key, axis, path)
        if size is not None and size < count:
            raise CheckpointError(f"model file '{path}': field 'class_names' must name at most {size} classes "
                                  f"(tensor '{key}' has room for {size}), not {count}")
    for group in SUPPORT_ROWS:
        found = _support_rows(shapes, group, path)
        if found is not None and found[1] < count:
            raise CheckpointError(f"model file '{path}': field 'class_names' must name at most {found[1]} classes "
                                  f"(tensor '{found[0]}' holds {found[1]} support images), not {count}")


def check_labels(meta: Mapping[str, Any], tensors: Mapping[str, torch.Tensor], path: Any) -> None:
    """Refuse a saved learner whose support labels (:data:`CLASS_LABELS`) are not whole numbers
    from 0 to one less than its number of class names; needs the tensors' values, not only their shapes."""
    names = meta.get("class_names")
    if not names:
        return
    for key in CLASS_LABELS:
        labels = tensors.get(key)
        if labels is None:
            continue
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise CheckpointError(f"model file '{path}': tensor '{key}' must hold whole numbers, not {labels.dtype}")
        outside = labels[(labels < 0) | (labels >= len(names))]
        if outside.numel():
            raise CheckpointError(
                f"model file '{path}': tensor '{key}' holds class {int(outside[0])}, but field 'class_names' "
                f"names {len(names)} classes (0 to {len(names) - 1})")


def check_finite(tensors: Mapping[str, torch.Tensor], path: Any) -> None:
    """Refuse weights holding NaN or infinity (a run that diverged), naming the first such tensor."""
    for key, tensor in tensors.items():
        if (tensor.is_floating_point() or tensor.is_complex()) and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"model file '{path}': tensor '{key}' holds NaN or infinite values; "
                                  "the model cannot be used (its training may have diverged)")
