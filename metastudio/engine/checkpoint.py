"""Model files and training checkpoints: safetensors for tensors, JSON for everything else.

A model file is one ``.safetensors`` file. Its tensors are the algorithm's ``state_dict``
(plus, for an adapted classifier, the learner's tensors under ``learner.``); its header's
metadata holds one key, ``metastudio``, whose value is a JSON document::

    {"format": "metastudio-model", "format_version": 1, "metastudio_version": "...",
     "algorithm": "protonet", "algorithm_version": "1", "backbone": "conv4",
     "image_size": 28, "channels": 1, "hyperparameters": {...},
     "class_names": [...] | null, "dataset": {...}, "history": [...], "created": "..."}

``metastudio info MODEL`` prints it. A training checkpoint (for resuming) is the same kind of
file with the optimiser's tensors under ``optim.`` and the trainer's state in the JSON.
Nothing is pickled, so opening a model file never runs code, and its metadata must fit the
schema of :mod:`metastudio.engine.model_schema` (and its weights be finite) before anything is
built from it. Every write goes to a temporary file that replaces the target only once complete:
a full disk or a crash never leaves a half-written model, and the previous file survives.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from metastudio import __version__
from metastudio.algorithms.base import Algorithm, Learner
from metastudio.data.fileio import atomic_write  # noqa: F401 -- part of this module's API
from metastudio.engine.model_schema import (
    FORMAT,
    FORMAT_VERSION,
    META_KEY,
    check_class_names,
    check_finite,
    check_labels,
    parse_metadata,
)
from metastudio.errors import CheckpointError


def _cpu(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}


def save_tensors(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> Path:
    """Write tensors and a JSON metadata document to one safetensors file, atomically."""
    tensors = _cpu(tensors)
    header = {META_KEY: json.dumps(meta, ensure_ascii=False)}
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=header))


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON metadata of a model file, without loading its tensors."""
    meta, _ = _open(path, tensors=False)
    return meta


def load_tensors(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    return _open(path, tensors=True)


def _open(path: str | os.PathLike, tensors: bool) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The file's metadata, validated (:mod:`metastudio.engine.model_schema`) before anything is
    built from it, and its tensors when ``tensors`` (refused when they hold NaN or infinity)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"model file not found: '{path}'")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            shapes = {k: f.get_slice(k).get_shape() for k in f.keys()}
            meta = parse_metadata(header.get(META_KEY), path)
            check_class_names(meta, shapes, path)
            out = {k: f.get_tensor(k) for k in f.keys()} if tensors else {}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"'{path}' is not a MetaStudio model file, or it is damaged ({e})") from e
    check_finite(out, path)
    if tensors:
        check_labels(meta, out, path)
    return meta, out


def model_metadata(
    algorithm: Algorithm,
    *,
    history: list[dict[str, Any]] | None = None,
    dataset: Mapping[str, Any] | None = None,
    class_names: list[str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "metastudio_version": __version__,
        **algorithm.config(),
        "class_names": class_names,
        "dataset": dict(dataset or {}),
        "history": list(history or []),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if extra:
        meta.update(extra)
    return meta


def save_model(
    algorithm: Algorithm,
    path: str | os.PathLike,
    *,
    learner: Learner | None = None,
    history: list[dict[str, Any]] | None = None,
    dataset: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Save a meta-trained algorithm (and optionally a learner adapted with it) to ``path``."""
    tensors = dict(algorithm.state_dict())
    class_names = None
    if learner is not None:
        state = learner.learner_state()
        if not state:
            raise CheckpointError(f"a {algorithm.name} learner cannot be saved on its own; save the support set instead")
        tensors.update({f"learner.{k}": v for k, v in state.items()})
        class_names = list(learner.class_names)
    meta = model_metadata(algorithm, history=history, dataset=dataset, class_names=class_names, extra=extra)
    return save_tensors(path, tensors, meta)


@dataclass
class LoadedModel:
    """What :func:`load_model` returns: the algorithm, its metadata, and a saved learner if any."""

    algorithm: Algorithm
    metadata: dict[str, Any]
    learner: Learner | None = None


def algorithm_weights(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The algorithm's own weights among a model file's tensors (not a saved learner's, nor a
    resume checkpoint's optimiser, trainer state and training modules)."""
    return {k: v for k, v in tensors.items()
            if not k.startswith(("learner.", "optim.", "trainer.", "training_modules."))}


def build_algorithm(meta: Mapping[str, Any], registry) -> Algorithm:
    """Instantiate the algorithm a metadata document describes, through ``registry``
    (an object with ``algorithm(name) -> type[Algorithm]`` and ``backbone(name) -> BackboneSpec``)."""
    try:
        cls = registry.algorithm(meta["algorithm"])
        spec = registry.backbone(meta["backbone"])
    except KeyError as e:
        raise CheckpointError(f"this model cannot be opened: {e}") from None
    if str(meta.get("algorithm_version", "1")) != str(cls.version):
        raise CheckpointError(
            f"the model was saved by {cls.name} version {meta.get('algorithm_version')}, "
            f"but version {cls.version} is installed"
        )
    if meta.get("backbone_frozen") and not spec.pretrained:
        raise CheckpointError(
            f"the model was saved with a frozen backbone '{spec.name}', but that backbone has no pretrained "
            "weights to rebuild it from; it cannot be restored"
        )
    channels, size = int(meta["channels"]), int(meta["image_size"])
    try:
        hparams = cls.resolve_hparams(meta.get("hyperparameters", {}))
    except ValueError as e:
        raise CheckpointError(f"the model's hyperparameters do not fit {cls.name}: {e}") from None
    return cls(spec.build(channels, size), backbone_name=spec.name, image_size=size, channels=channels, hparams=hparams,
               freeze_backbone=bool(meta.get("backbone_frozen", False)), fit=meta.get("fit", "stretch"))


def load_model(path: str | os.PathLike, registry, device: torch.device | str = "cpu",
               overrides: Mapping[str, Any] | None = None) -> LoadedModel:
    """Load a model file written by :func:`save_model` onto ``device``, in eval mode.

    ``overrides`` changes hyperparameters for using the model (e.g. ``{"adapt_steps": 10}``):
    only ``adaptation`` ones may differ from the trained values
    (:meth:`~metastudio.algorithms.base.Algorithm.adaptation_overrides` raises
    :class:`~metastudio.errors.FixedHyperParameterError` otherwise); the metadata returned
    holds the values in use."""
    meta, tensors = load_tensors(path)
    if overrides:
        try:
            cls = registry.algorithm(meta["algorithm"])
            trained = cls.resolve_hparams(meta.get("hyperparameters", {}))
        except (KeyError, ValueError):
            trained = None  # build_algorithm below says what is wrong with the file
        if trained is not None:
            meta = {**meta, "hyperparameters": {**trained, **cls.adaptation_overrides(trained, overrides)}}
    try:
        algorithm = build_algorithm(meta, registry)
    except CheckpointError as e:
        raise CheckpointError(f"model file '{path}': {e}") from None
    own = algorithm_weights(tensors)
    try:
        algorithm.load_state_dict(own, strict=True)
    except RuntimeError as e:
        if overrides:
            raise CheckpointError(f"the weights of '{path}' do not fit {', '.join(f'{k}={v}' for k, v in overrides.items())}: "
                                  f"{e}") from None
        raise CheckpointError(f"'{path}' does not match {algorithm.name} with backbone {algorithm.backbone_name}: {e}") from None
    algorithm.to(device).eval()
    learner = None
    learner_state = {k[len("learner."):]: v for k, v in tensors.items() if k.startswith("learner.")}
    if learner_state and meta.get("class_names"):
        learner = algorithm.restore_learner(meta["class_names"], learner_state)
    return LoadedModel(algorithm, meta, learner)


# ------------------------------------------------------------------------------------------
# Training checkpoints (resume)


def _flatten_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    state_json: dict[str, dict[str, Any]] = {}
    for idx, st in sd["state"].items():
        plain = {}
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optim.{idx}.{k}"] = v
            else:
                plain[k] = v
        state_json[str(idx)] = plain
    return tensors, {"param_groups": sd["param_groups"], "state": state_json}


def _unflatten_optimizer(tensors: Mapping[str, torch.Tensor], info: Mapping[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {int(i): dict(v) for i, v in info["state"].items()}
    for key, v in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = v
    return {"state": state, "param_groups": info["param_groups"]}


def save_training_checkpoint(algorithm: Algorithm, path: str | os.PathLike, trainer_state: Mapping[str, Any], meta: Mapping[str, Any]) -> Path:
    """Weights (the training modules' too), optimiser, schedule, random state and the trainer's
    own state, for resuming."""
    with algorithm.with_training_modules():
        tensors = dict(algorithm.state_dict())
    doc = dict(meta)
    if algorithm.optimizer is not None:
        opt_tensors, opt_info = _flatten_optimizer(algorithm.optimizer)
        tensors.update(opt_tensors)
        doc["optimizer"] = opt_info
    if algorithm.scheduler is not None:
        doc["scheduler"] = algorithm.scheduler.state_dict()
    tensors["trainer.torch_rng"] = torch.get_rng_state()
    doc["trainer"] = dict(trainer_state)
    return save_tensors(path, tensors, doc)


def load_training_checkpoint(algorithm: Algorithm, path: str | os.PathLike) -> dict[str, Any]:
    """Restore what :func:`save_training_checkpoint` wrote into a configured ``algorithm``;
    returns the metadata (the trainer's state is under ``"trainer"``)."""
    meta, tensors = load_tensors(path)
    if meta.get("algorithm") != algorithm.name or meta.get("backbone") != algorithm.backbone_name:
        raise CheckpointError(
            f"'{path}' is a checkpoint of {meta.get('algorithm')}/{meta.get('backbone')}, "
            f"not of {algorithm.name}/{algorithm.backbone_name}"
        )
    own = {k: v for k, v in tensors.items() if not k.startswith(("optim.", "trainer.", "learner."))}
    with algorithm.with_training_modules():
        algorithm.load_state_dict(own, strict=True)
    if algorithm.optimizer is not None and "optimizer" in meta:
        # Optimizer.load_state_dict moves each state tensor to its parameter's device.
        algorithm.optimizer.load_state_dict(_unflatten_optimizer(tensors, meta["optimizer"]))
    if algorithm.scheduler is not None and "scheduler" in meta:
        algorithm.scheduler.load_state_dict(meta["scheduler"])
    if "trainer.torch_rng" in tensors:
        torch.set_rng_state(tensors["trainer.torch_rng"])
    return meta
