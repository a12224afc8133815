"""A meta-training run described as plain data, and turned into a ready :class:`Trainer`.

:class:`TrainingPlan` holds everything a person chooses for a run (algorithm, backbone,
dataset, episode shapes, hyperparameters, ...) as JSON-able values, so that a GUI can keep it
in a project file and a CLI can fill it from its flags. :func:`prepare_run` does the work of
assembling the run: it looks the components up in the plugin host, validates the
hyperparameters, loads the dataset splits (reporting progress), builds the algorithm on the
chosen device and returns a :class:`PreparedRun`, a :class:`Trainer` that also carries the
warnings a person should see (no validation split, unusable files, ...).

Headless: no Qt here. The host is passed in, so this module does not import the plugin system.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from metastudio.algorithms.feature_transform import FeatureTransformMixin
from metastudio.engine.control import Control
from metastudio.data.datasets import FewShotDataset
from metastudio.errors import DatasetError, MetaStudioError
from metastudio.data.images import FITS
from metastudio.engine.trainer import Event, TrainConfig, Trainer

#: ``progress(stage, done, total)``: ``stage`` says what is being done ("loading omniglot
#: train"); ``total`` is None while unknown. Called from the thread running :func:`prepare_run`.
StageProgress = Callable[[str, int, "int | None"], None]

PRECISIONS = ("auto", "bf16", "fp32")


class RunCancelled(MetaStudioError):
    """The run was cancelled (through its :class:`Control`) while it was being prepared."""


@dataclass
class TrainingPlan:
    """What to meta-train, on what, and how: plain values only (see :meth:`to_dict`)."""

    algorithm: str = "protonet"
    backbone: str = "conv4"
    dataset: str = "omniglot"
    root: str | None = None
    split: str = "train"
    val_split: str | None = "val"
    #: When > 0: this many classes of the training split (chosen with ``seed``) are held out of
    #: training and validated on instead of ``val_split`` (see :func:`holdout_classes`).
    val_holdout: int = 0
    options: dict[str, Any] = field(default_factory=dict)
    ways: int = 5
    shots: int = 1
    queries: int = 15
    episodes: int = 1000
    meta_batch: int = 1
    val_every: int = 500
    val_episodes: int = 200
    val_ways: int = 5
    val_shots: int = 1
    val_queries: int = 15
    hparams: dict[str, Any] = field(default_factory=dict)
    image_size: int | None = None
    device: str = "auto"
    precision: str = "auto"
    seed: int = 0
    freeze_backbone: bool = False
    fit: str = "stretch"
    out: str | None = None
    #: A model file (same algorithm and backbone) whose weights the run starts from instead of a
    #: random initialisation, e.g. to meta-train a 5-way model further on 20-way tasks. Its
    #: optimiser state and step count are not taken over (that is ``resume``).
    init: str | None = None
    #: Training steps between progress events (averages over those steps).
    log_every: int = 10
    #: For an algorithm that trains on labelled batches (``trains_on`` "batches" or
    #: "batches+episodes"): how many steps of ``batch_size`` images of every training class it
    #: makes, before any episodes (``episodes`` are not used by one that trains on batches only).
    batch_steps: int = 0
    batch_size: int = 64

    # -- plain data ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (paths as strings)."""
        d = asdict(self)
        for key in ("root", "out", "init"):
            if d[key] is not None:
                d[key] = str(d[key])
        d["options"] = dict(self.options)
        d["hparams"] = dict(self.hparams)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainingPlan:
        """The inverse of :meth:`to_dict`. Missing keys take their defaults and unknown keys are
        ignored (a plan saved by a newer version still opens); wrong types raise ValueError."""
        if not isinstance(data, Mapping):
            raise ValueError(f"a training plan must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        plan = cls(**kwargs)
        plan.validate()
        return plan

    def validate(self) -> TrainingPlan:
        """Check types and ranges of the numbers; raises ValueError saying what is wrong."""
        def integer(name: str, minimum: int, optional: bool = False) -> None:
            value = getattr(self, name)
            if optional and value is None:
                return
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(f"{name} must be a whole number, got {value!r}")
            value = int(value)
            if value < minimum:
                raise ValueError(f"{name} must be at least {minimum}, got {value}")
            setattr(self, name, value)

        for name in ("ways", "val_ways"):
            integer(name, 2)
        for name in ("shots", "val_shots", "episodes", "meta_batch", "val_every", "val_episodes", "log_every"):
            integer(name, 1)
        for name in ("queries", "val_queries"):
            integer(name, 0)
        integer("image_size", 1, optional=True)
        integer("seed", 0)
        integer("val_holdout", 0)
        integer("batch_steps", 0)
        integer("batch_size", 1)
        for name in ("algorithm", "backbone", "dataset", "split", "device", "precision", "fit"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"{name} must be a non-empty string, got {getattr(self, name)!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        for name in ("options", "hparams"):
            if not isinstance(getattr(self, name), Mapping):
                raise ValueError(f"{name} must be a mapping of names to values")
            setattr(self, name, dict(getattr(self, name)))
        for name in ("root", "out", "val_split", "init"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, (str, Path)):
                raise ValueError(f"{name} must be a string or null, got {value!r}")
            if isinstance(value, Path):
                setattr(self, name, str(value))
        if isinstance(self.val_split, str) and self.val_split.strip().lower() in ("", "none"):
            self.val_split = None
        self.freeze_backbone = bool(self.freeze_backbone)
        return self

    @property
    def steps(self) -> int:
        """Optimisation steps: ``episodes`` / ``meta_batch``, rounded up."""
        return math.ceil(self.episodes / self.meta_batch)


#: A class name ending so is a rotated copy of another class (Omniglot's protocol).
_ROTATION = re.compile(r"/rot\d{3}$")


def holdout_classes(class_names: Sequence[str], count: int, seed: int) -> tuple[list[int], list[int]]:
    """Split class indices into (training, held-out) for ``TrainingPlan.val_holdout``: ``count``
    classes drawn at random with ``seed`` (the same names and seed always give the same split),
    both lists in the dataset's order.

    Rotated copies of a class (names ending ``/rot000``, ``/rot090``... as in Omniglot's
    protocol) stay together: they count as one class here and are held out (or kept) all at
    once, so no held-out class is a rotation of a training one."""
    groups: dict[str, list[int]] = {}
    for i, name in enumerate(class_names):
        groups.setdefault(_ROTATION.sub("", name), []).append(i)
    keys = list(groups)
    if not 0 < count < len(keys):
        raise ValueError(f"val_holdout must be between 1 and {len(keys) - 1} (the training split has {len(keys)} "
                         f"classes{' counting rotations once' if len(keys) != len(class_names) else ''}), got {count}")
    rng = np.random.default_rng(seed)
    chosen = {keys[i] for i in rng.permutation(len(keys))[:count]}
    held = sorted(i for k in chosen for i in groups[k])
    train = sorted(i for k in keys if k not in chosen for i in groups[k])
    return train, held


class PreparedRun(Trainer):
    """A :class:`Trainer` made by :func:`prepare_run`, with what went into it: the validated
    ``plan``, ``warnings`` (things a person should know before trusting the run, one sentence
    each), the device in words and the datasets it trains and validates on."""

    def __init__(self, *args: Any, plan: TrainingPlan, warnings: list[str], device_description: str,
                 train_dataset: FewShotDataset, val_dataset: FewShotDataset | None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.plan = plan
        self.warnings = warnings
        self.device_description = device_description
        self.train_dataset = train_dataset
        self.val_dataset = val_dataset


@dataclass
class _Components:
    """The plugins a plan names, and what they settle before any data is loaded."""

    algorithm: type
    backbone: Any  # BackboneSpec
    dataset: Any  # DatasetSpec
    hparams: dict[str, Any]
    #: The ``feature_transform`` hyperparameter ("none" when the algorithm has none).
    transform: str
    #: The validated dataset options (the plan's, and the dataset's channels where it has the option).
    options: dict[str, Any]
    #: The dataset's declared options by name.
    declared: dict[str, Any]


@dataclass
class _Splits:
    """The loaded data of a run: its training split and the split it validates on (if any)."""

    train: FewShotDataset
    val: FewShotDataset | None


def _load_split(dspec, plan: TrainingPlan, split: str, image_size: int, options: dict[str, Any],
                progress: StageProgress | None, control: Control | None) -> FewShotDataset:
    stage = f"loading {plan.dataset} {split}"

    def report(done: int, total: int | None) -> None:
        if control is not None and control.should_stop():  # blocks while paused
            raise RunCancelled("training was cancelled while the dataset was loading")
        if progress is not None:
            progress(stage, int(done), None if total is None else int(total))

    report(0, None)
    try:
        ds = dspec.load(plan.root, split, image_size=image_size, progress=report, **options)
    except MetaStudioError:
        raise
    except OSError as exc:
        where = f" from '{plan.root}'" if plan.root else ""
        reason = exc.strerror or str(exc)
        raise DatasetError(f"cannot load the '{split}' split of {plan.dataset}{where}: {reason}"
                           + (f" ({exc.filename})" if exc.filename else "")) from exc
    if not isinstance(ds, FewShotDataset):
        raise DatasetError(f"dataset plugin '{plan.dataset}' returned {type(ds).__name__}, not a FewShotDataset")
    return ds


def _fit_feature_mean(algorithm, train_ds: FewShotDataset, transform: str, progress: StageProgress | None,
                      control: Control | None, chunk: int = 4096) -> int:
    """Fit the algorithm's feature mean on the training split's (precomputed) features, as a stage."""
    label = f"feature mean ({transform}) of the {train_ds.num_classes} training classes"
    rows = train_ds.images

    def batches():
        for start in range(0, len(rows), chunk):
            if control is not None and control.should_stop():  # blocks while paused
                raise RunCancelled("training was cancelled while the feature mean was fitted")
            if progress is not None:
                progress(label, start, len(rows))
            yield rows[start : start + chunk]
        if progress is not None:
            progress(label, len(rows), len(rows))

    return algorithm.fit_feature_mean(batches())


def _load_initial_weights(algorithm, path: str) -> dict[str, Any]:
    """Copy the weights of the model file ``path`` into ``algorithm`` (``TrainingPlan.init``);
    ValueError, saying what differs, when the file is another algorithm, backbone or shape.

    Returns where the run starts from, for the new model's metadata (``dataset.init``): the
    file's name and SHA-256, its meta-training steps and its own ``dataset`` record (which
    holds an ``init`` of its own when it too was started from a model)."""
    import hashlib

    from metastudio.engine.checkpoint import algorithm_weights, load_tensors
    from metastudio.errors import CheckpointError

    file = Path(path).expanduser()
    try:
        meta, tensors = load_tensors(file)
    except (CheckpointError, OSError) as exc:
        raise ValueError(f"cannot start from '{path}': {exc}") from None
    theirs = (meta.get("algorithm"), meta.get("backbone"))
    if theirs != (algorithm.name, algorithm.backbone_name):
        raise ValueError(f"cannot start from '{path}': it is a {theirs[0]} model on {theirs[1]}, and this run "
                         f"trains {algorithm.name} on {algorithm.backbone_name}")
    try:
        algorithm.load_state_dict(algorithm_weights(tensors), strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise ValueError(f"cannot start from '{path}': its weights do not fit this run's model (other image size, "
                         f"channels or architecture hyperparameters): {' '.join(first[:3])}") from None
    return {"file": file.name, "sha256": hashlib.sha256(file.read_bytes()).hexdigest(),
            "trained_steps": meta.get("trained_steps"), "dataset": meta.get("dataset")}


def prepare_run(
    plan: TrainingPlan,
    host,
    progress: StageProgress | None = None,
    control: Control | None = None,
    listener: Callable[[Event], None] | None = None,
    *,
    validate_on_training_classes: bool = False,
) -> PreparedRun:
    """Assemble the run ``plan`` describes: look up its components in ``host`` (a
    :class:`~metastudio.plugins.PluginHost`), load the data and build the algorithm.

    * Unknown components raise :class:`~metastudio.errors.UnknownComponentError`, bad
      hyperparameters or numbers ValueError, unreadable or too small data
      :class:`~metastudio.errors.DatasetError`.
    * A validation split the dataset does not have (or cannot load) means no validation: the
      model is then saved every ``val_every`` steps, and ``warnings`` says so. So does a
      "validation split" that holds the training classes (a folder without ``val/``), unless
      ``validate_on_training_classes`` keeps it (with a warning).
    * ``val_holdout`` > 0 validates on that many classes of the training split instead
      (:func:`holdout_classes`; they are removed from training), from step 0 on, so the
      untrained model can stay the best; ``val_split`` is then not loaded.
    * Episodes with more classes than the algorithm's ``ways_limit`` (MANN's and Meta Networks'
      ``max_ways``), in training or in validation, raise ValueError before any data is loaded.
    * ``freeze_backbone`` with an algorithm that declares ``supports_frozen_backbone = False``
      raises ValueError before any data is loaded.
    * With a ``feature_transform`` hyperparameter other than ``none`` (cl2n, power-cl2n) on a
      :class:`~metastudio.algorithms.feature_transform.FeatureTransformMixin` algorithm whose ``feature_mean_fitted`` is "before training" (the default), the
      backbone must be frozen (ValueError otherwise, before any data is loaded), and the
      algorithm's feature mean is fitted on the training features before training (a stage of
      ``progress``); one that fits it "by the algorithm" (SimpleShot) keeps it up to date itself.
    * An algorithm that trains on labelled batches (``trains_on``) needs ``batch_steps`` > 0
      (and one that trains on episodes only, 0): those steps come first, on batches of
      ``batch_size`` images of every training class; validation is on episodes as for any other.
    * ``control`` is checked during loading: cancelling raises :class:`RunCancelled`, pausing
      blocks. It becomes the trainer's control.
    """
    from metastudio.engine.devices import configure_for_speed, describe_device, resolve_device

    plan = TrainingPlan.from_dict(plan.to_dict())  # a validated copy: later edits do not leak in
    if not plan.out:
        raise ValueError("the plan has no output file (out): where should the model be saved?")
    warnings: list[str] = []
    parts = _resolve_components(plan, host, warnings)
    device = resolve_device(plan.device)
    configure_for_speed(device)
    image_size, model_size = _image_sizes(plan, parts)
    splits = _load_data(plan, parts, image_size, progress, control, warnings, validate_on_training_classes)
    if control is not None and control.should_stop():
        raise RunCancelled("training was cancelled before it started")
    if progress is not None:
        progress("building the model", 0, None)
    algorithm, started_from = _build_algorithm(plan, parts, splits.train, model_size, device)
    if plan.freeze_backbone:
        splits = _prepare_features(plan, parts, algorithm, splits, progress, control)
    if device.type != "cpu":
        splits = _Splits(splits.train.to(device), splits.val.to(device) if splits.val is not None else None)
    trains_on = getattr(parts.algorithm, "trains_on", "episodes")
    train_sampler, val_sampler, batch_sampler = _samplers(plan, splits, trains_on)
    return PreparedRun(algorithm, train_sampler, _train_config(plan, trains_on), _output_path(plan),
                       val_sampler=val_sampler, batch_sampler=batch_sampler,
                       listener=listener, control=control, dataset_info=_dataset_info(plan, parts, started_from),
                       plan=plan, warnings=warnings, device_description=describe_device(device),
                       train_dataset=splits.train, val_dataset=splits.val)


# ------------------------------------------------------------------------------------------------
# The steps of prepare_run


def _resolve_components(plan: TrainingPlan, host, warnings: list[str]) -> _Components:
    """Look the plan's algorithm, backbone and dataset up in ``host`` and check what can be
    checked before any data is loaded: hyperparameters, ways, backbone freezing, fit and the
    dataset's options (an option it does not declare is a warning)."""
    cls = host.algorithm(plan.algorithm)
    backbone = host.backbone(plan.backbone)
    dspec = host.dataset(plan.dataset)
    hparams = cls.resolve_hparams(plan.hparams)
    limit = cls.ways_limit(hparams)
    validates = bool(plan.val_every) and (plan.val_split is not None or bool(plan.val_holdout))
    for what, ways in (("ways", plan.ways), ("validation ways", plan.val_ways if validates else None)):
        if limit is not None and ways is not None and ways > limit:
            raise ValueError(f"{cls.title} tells at most {limit} classes apart (max_ways={limit}), and this run's "
                             f"{what} is {ways}: lower it to {limit} or fewer, or raise max_ways")
    if plan.freeze_backbone and not backbone.pretrained:
        raise ValueError(f"freezing the backbone needs a pretrained backbone; '{backbone.name}' starts from random weights")
    if plan.freeze_backbone and not getattr(cls, "supports_frozen_backbone", True):
        raise ValueError(f"{cls.title or cls.name} does not work on a frozen backbone (it declares "
                         "supports_frozen_backbone = False): train without freeze_backbone (--freeze-backbone)")
    transform = str(hparams.get("feature_transform", "none")) if issubclass(cls, FeatureTransformMixin) else "none"
    fitted_before = getattr(cls, "feature_mean_fitted", "before training") == "before training"
    if transform != "none" and fitted_before and not plan.freeze_backbone:
        raise ValueError(f"feature_transform={transform} needs a frozen pretrained backbone (freeze_backbone, "
                         f"--freeze-backbone): {cls.title or cls.name} fits its centring mean on the training "
                         "features before training, and it would no longer match them once the backbone's weights "
                         "change. Freeze the backbone or use feature_transform=none")
    _check_training_kind(plan, cls)
    if plan.val_holdout and plan.val_split not in (None, TrainingPlan.val_split):
        warnings.append(f"the '{plan.val_split}' split is not used: this run validates on {plan.val_holdout} "
                        "classes held out of the training split (val_holdout)")
    if plan.fit not in FITS:
        raise ValueError(f"fit must be one of {', '.join(FITS)}, got {plan.fit!r}")
    declared = {o.name: o for o in dspec.options}
    options: dict[str, Any] = {}
    for name, value in plan.options.items():
        if name not in declared:
            warnings.append(f"option '{name}' is not used by the {dspec.name} dataset and was ignored")
            continue
        options[name] = declared[name].validate(value)
    if "channels" in declared and "channels" not in options and dspec.channels:
        options["channels"] = dspec.channels
    return _Components(cls, backbone, dspec, hparams, transform, options, declared)


def _image_sizes(plan: TrainingPlan, parts: _Components) -> tuple[int, int]:
    """``(size the data is decoded at, size the model sees)``. A frozen pretrained backbone sees
    images at its own size; the data is then decoded at its native size and each image is
    embedded once (metastudio.engine.features). Otherwise the model takes the data's size."""
    image_size = plan.image_size or parts.dataset.image_size or parts.backbone.default_image_size or 84
    if not plan.freeze_backbone:
        return image_size, image_size
    model_size = plan.image_size or parts.backbone.default_image_size or image_size
    return parts.dataset.image_size or model_size, model_size


def _load_data(plan: TrainingPlan, parts: _Components, image_size: int, progress: StageProgress | None,
               control: Control | None, warnings: list[str], validate_on_training_classes: bool) -> _Splits:
    """Load the training split and the one the run validates on (held-out training classes, the
    plan's validation split, or none, saying why in ``warnings``)."""
    train_ds = _load_split(parts.dataset, plan, plan.split, image_size, parts.options, progress, control)
    if train_ds.problems:
        warnings.append(f"{len(train_ds.problems)} file(s) of {train_ds.name} could not be used, e.g. {train_ds.problems[0]}")
    if plan.val_holdout:
        return _hold_out(plan, train_ds)
    if plan.val_split is None:
        return _Splits(train_ds, None)
    dspec = parts.dataset
    if dspec.splits and plan.val_split not in dspec.splits:
        warnings.append(f"the {dspec.name} dataset has no '{plan.val_split}' split, so this run does not validate; "
                        f"the model is saved every {plan.val_every} steps")
        return _Splits(train_ds, None)
    try:
        val_ds = _load_split(dspec, plan, plan.val_split, train_ds.image_size, parts.options, progress, control)
    except DatasetError as exc:
        warnings.append(f"no validation: the '{plan.val_split}' split could not be loaded ({exc}); "
                        f"the model is saved every {plan.val_every} steps")
        return _Splits(train_ds, None)
    return _Splits(train_ds, _check_val_split(plan, train_ds, val_ds, warnings, validate_on_training_classes))


def _hold_out(plan: TrainingPlan, train_ds: FewShotDataset) -> _Splits:
    """The training split without ``plan.val_holdout`` of its classes, and those classes to validate on."""
    keep, held = holdout_classes(train_ds.class_names, plan.val_holdout, plan.seed)
    if len(held) < plan.val_ways:
        raise ValueError(f"val_holdout={plan.val_holdout} holds out {len(held)} classes, fewer than the "
                         f"{plan.val_ways} ways of a validation episode")
    if len(keep) < plan.ways:
        raise ValueError(f"val_holdout={plan.val_holdout} leaves {len(keep)} training classes, fewer than the "
                         f"{plan.ways} ways of a training episode")
    val_ds = train_ds.subset(held, name=f"{train_ds.name} held-out classes")
    val_ds.problems = []  # reported with the training split
    return _Splits(train_ds.subset(keep), val_ds)


def _check_val_split(plan: TrainingPlan, train_ds: FewShotDataset, val_ds: FewShotDataset, warnings: list[str],
                     validate_on_training_classes: bool) -> FewShotDataset | None:
    """The loaded validation split if the run validates on it: not when it holds the training
    classes (a folder without val/), unless ``validate_on_training_classes``; warnings say so."""
    if val_ds.channels != train_ds.channels:
        raise DatasetError(f"the '{plan.val_split}' split has {val_ds.channels}-channel images but the "
                           f"'{plan.split}' split has {train_ds.channels}")
    if val_ds.problems:
        warnings.append(f"{len(val_ds.problems)} file(s) of {val_ds.name} could not be used, e.g. {val_ds.problems[0]}")
    if val_ds.name != train_ds.name or not set(val_ds.class_names) & set(train_ds.class_names):
        return val_ds
    if validate_on_training_classes:
        warnings.append(f"the '{plan.val_split}' split holds the training classes, so validation measures "
                        "memorisation, not few-shot learning; give the dataset a separate validation split "
                        "(e.g. root/val)")
        return val_ds
    warnings.append(f"the dataset has no separate '{plan.val_split}' split (it would hold the training "
                    f"classes), so this run does not validate; the model is saved every {plan.val_every} "
                    "steps. Add a root/val folder with other classes to validate")
    return None


def _check_training_kind(plan: TrainingPlan, cls) -> None:
    """``batch_steps`` agrees with what the algorithm trains on (its ``trains_on``)."""
    trains_on = getattr(cls, "trains_on", "episodes")
    title = cls.title or cls.name
    if trains_on == "episodes" and plan.batch_steps:
        raise ValueError(f"{title} trains on episodes only; batch_steps ({plan.batch_steps}) is for algorithms that "
                         "train on labelled batches (SimpleShot, Baseline++): leave it at 0")
    if trains_on != "episodes" and not plan.batch_steps:
        first = "" if trains_on == "batches" else ", before episodes"
        raise ValueError(f"{title} trains on labelled batches of every training class{first}: give the number of "
                         "those steps (batch_steps, --batch-steps N)")


def _build_algorithm(plan: TrainingPlan, parts: _Components, train_ds: FewShotDataset, model_size: int,
                     device) -> tuple[Any, dict[str, Any] | None]:
    """The algorithm on ``device`` (seeded with the plan's seed, or started from ``plan.init``),
    set to the plan's precision; and where it started from (:func:`_load_initial_weights`)."""
    import torch

    torch.manual_seed(plan.seed)
    if not plan.freeze_backbone:
        model_size = train_ds.image_size
    backbone = parts.backbone
    algorithm = parts.algorithm(backbone.build(train_ds.channels, model_size), backbone_name=backbone.name,
                                image_size=model_size, channels=train_ds.channels, hparams=parts.hparams,
                                freeze_backbone=plan.freeze_backbone, fit=plan.fit).to(device)
    started_from = _load_initial_weights(algorithm, plan.init) if plan.init else None
    algorithm.use_amp = plan.precision != "fp32"
    algorithm.amp_on_cpu = plan.precision == "bf16"
    return algorithm, started_from


def _prepare_features(plan: TrainingPlan, parts: _Components, algorithm, splits: _Splits,
                      progress: StageProgress | None, control: Control | None) -> _Splits:
    """With a frozen backbone: embed every image of the splits once (through the feature cache)
    and fit the algorithm's feature mean on the training features when its transform needs one."""
    from metastudio.data.feature_cache import use_feature_cache
    from metastudio.engine.features import precompute_features

    use_feature_cache(algorithm)

    def reporter(label: str):
        def report(done: int, total: int) -> None:
            if control is not None and control.should_stop():  # blocks while paused
                raise RunCancelled("training was cancelled while features were computed")
            if progress is not None:
                progress(f"{parts.backbone.name} features ({label})", done, total)
        return report

    train_ds = precompute_features(algorithm, splits.train, progress=reporter("train"))
    val_ds = splits.val
    if val_ds is not None:
        val_ds = precompute_features(algorithm, val_ds, progress=reporter("held-out" if plan.val_holdout else "val"))
    fitted_before = getattr(algorithm, "feature_mean_fitted", "before training") == "before training"
    if parts.transform != "none" and fitted_before and hasattr(algorithm, "fit_feature_mean"):
        _fit_feature_mean(algorithm, train_ds, parts.transform, progress, control)
    return _Splits(train_ds, val_ds)


def _samplers(plan: TrainingPlan, splits: _Splits, trains_on: str):
    """The training episodes (seeded with the plan's seed; None for an algorithm that trains on
    batches only), the fixed validation ones and the labelled batches (None unless the
    algorithm trains on them)."""
    from metastudio.data.batches import BatchSampler
    from metastudio.data.episodes import EVAL_SEED, EpisodeSampler

    train_sampler = None
    if trains_on != "batches":
        train_sampler = EpisodeSampler(splits.train, plan.ways, plan.shots, plan.queries, seed=plan.seed)
    batches = BatchSampler(splits.train, plan.batch_size, seed=plan.seed) if plan.batch_steps else None
    if splits.val is None:
        return train_sampler, None, batches
    try:
        val = EpisodeSampler(splits.val, plan.val_ways, plan.val_shots, plan.val_queries, seed=EVAL_SEED)
    except DatasetError as error:
        raise DatasetError(f"the validation episodes ({plan.val_ways}-way {plan.val_shots}-shot {plan.val_queries}-query, "
                           f"set by val_ways, val_shots and val_queries: --val-ways, --val-shots, --val-queries) do not "
                           f"fit the '{splits.val.name}' split: {error}") from None
    return train_sampler, val, batches


def _train_config(plan: TrainingPlan, trains_on: str) -> TrainConfig:
    # Held-out training classes are for choosing among models honestly: the untrained head is
    # one of them (validation at step 0).
    steps = plan.batch_steps + (0 if trains_on == "batches" else plan.steps)
    return TrainConfig(steps=steps, meta_batch=plan.meta_batch, val_every=plan.val_every,
                       val_episodes=plan.val_episodes, log_every=plan.log_every, seed=plan.seed,
                       validate_before_training=plan.val_holdout > 0, batch_steps=plan.batch_steps)


def _dataset_info(plan: TrainingPlan, parts: _Components, started_from: dict[str, Any] | None) -> dict[str, Any]:
    """What the model file records about the data it was meta-trained on (its ``dataset``)."""
    declared = parts.declared
    protocol = parts.options.get("protocol") or (declared["protocol"].default if "protocol" in declared else None)
    info = {"name": plan.dataset, "root": str(plan.root) if plan.root else None, "split": plan.split,
            "protocol": protocol, "ways": plan.ways, "shots": plan.shots, "queries": plan.queries,
            "episodes": plan.steps * plan.meta_batch, "seed": plan.seed}
    if plan.batch_steps:
        info.update(batch_steps=plan.batch_steps, batch_size=plan.batch_size)
        if parts.algorithm.trains_on == "batches":  # no training episodes: their shape means nothing
            for key in ("ways", "shots", "queries", "episodes"):
                info.pop(key)
    if plan.val_holdout:
        info["val_holdout"] = plan.val_holdout
    if started_from:
        info["init"] = started_from
    return info


def _output_path(plan: TrainingPlan) -> Path:
    """The model file to write, its folder made."""
    out = Path(plan.out).expanduser()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MetaStudioError(f"cannot create the folder '{out.parent}' for the model: {exc.strerror or exc}") from exc
    return out


__all__ = ["PRECISIONS", "PreparedRun", "RunCancelled", "StageProgress", "TrainingPlan", "holdout_classes", "prepare_run"]
