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
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .control import Control
from .datasets import FewShotDataset
from .errors import DatasetError, MetaStudioError
from .images import FITS
from .trainer import Event, TrainConfig, Trainer

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
    #: Training steps between progress events (averages over those steps).
    log_every: int = 10

    # -- plain data ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (paths as strings)."""
        d = asdict(self)
        for key in ("root", "out"):
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
        for name in ("algorithm", "backbone", "dataset", "split", "device", "precision", "fit"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"{name} must be a non-empty string, got {getattr(self, name)!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        for name in ("options", "hparams"):
            if not isinstance(getattr(self, name), Mapping):
                raise ValueError(f"{name} must be a mapping of names to values")
            setattr(self, name, dict(getattr(self, name)))
        for name in ("root", "out", "val_split"):
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


class PreparedRun(Trainer):
    """A :class:`Trainer` made by :func:`prepare_run`, with what went into it."""

    plan: TrainingPlan
    #: Things a person should know before trusting the run (one sentence each).
    warnings: list[str]
    device_description: str
    train_dataset: FewShotDataset
    val_dataset: FewShotDataset | None


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

    * Unknown components raise :class:`~metastudio.core.errors.UnknownComponentError`, bad
      hyperparameters or numbers ValueError, unreadable or too small data
      :class:`~metastudio.core.errors.DatasetError`.
    * A validation split the dataset does not have (or cannot load) means no validation: the
      model is then saved every ``val_every`` steps, and ``warnings`` says so. So does a
      "validation split" that holds the training classes (a folder without ``val/``), unless
      ``validate_on_training_classes`` keeps it (with a warning).
    * ``control`` is checked during loading: cancelling raises :class:`RunCancelled`, pausing
      blocks. It becomes the trainer's control.
    """
    import torch

    from .devices import configure_for_speed, describe_device, resolve_device

    plan = TrainingPlan.from_dict(plan.to_dict())  # a validated copy: later edits do not leak in
    if not plan.out:
        raise ValueError("the plan has no output file (out): where should the model be saved?")
    warnings: list[str] = []

    def stage(text: str) -> None:
        if control is not None and control.should_stop():
            raise RunCancelled("training was cancelled before it started")
        if progress is not None:
            progress(text, 0, None)

    cls = host.algorithm(plan.algorithm)
    backbone = host.backbone(plan.backbone)
    dspec = host.dataset(plan.dataset)
    hparams = cls.resolve_hparams(plan.hparams)
    if plan.freeze_backbone and not backbone.pretrained:
        raise ValueError(f"freezing the backbone needs a pretrained backbone; '{backbone.name}' starts from random weights")
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

    device = resolve_device(plan.device)
    configure_for_speed(device)
    image_size = plan.image_size or dspec.image_size or backbone.default_image_size or 84
    model_size = image_size
    if plan.freeze_backbone:
        # A frozen pretrained backbone sees images at its own size; the data is decoded at its
        # native size and each image is embedded once (metastudio.core.features).
        model_size = plan.image_size or backbone.default_image_size or image_size
        image_size = dspec.image_size or model_size

    train_ds = _load_split(dspec, plan, plan.split, image_size, options, progress, control)
    if train_ds.problems:
        warnings.append(f"{len(train_ds.problems)} file(s) of {train_ds.name} could not be used, e.g. {train_ds.problems[0]}")
    val_ds = None
    if plan.val_split is not None:
        if dspec.splits and plan.val_split not in dspec.splits:
            warnings.append(f"the {dspec.name} dataset has no '{plan.val_split}' split, so this run does not validate; "
                            f"the model is saved every {plan.val_every} steps")
        else:
            try:
                val_ds = _load_split(dspec, plan, plan.val_split, train_ds.image_size, options, progress, control)
            except DatasetError as exc:
                warnings.append(f"no validation: the '{plan.val_split}' split could not be loaded ({exc}); "
                                f"the model is saved every {plan.val_every} steps")
    if val_ds is not None:
        if val_ds.channels != train_ds.channels:
            raise DatasetError(f"the '{plan.val_split}' split has {val_ds.channels}-channel images but the "
                               f"'{plan.split}' split has {train_ds.channels}")
        if val_ds.problems:
            warnings.append(f"{len(val_ds.problems)} file(s) of {val_ds.name} could not be used, e.g. {val_ds.problems[0]}")
        if val_ds.name == train_ds.name and set(val_ds.class_names) & set(train_ds.class_names):
            if validate_on_training_classes:
                warnings.append(f"the '{plan.val_split}' split holds the training classes, so validation measures "
                                "memorisation, not few-shot learning; give the dataset a separate validation split "
                                "(e.g. root/val)")
            else:
                warnings.append(f"the dataset has no separate '{plan.val_split}' split (it would hold the training "
                                f"classes), so this run does not validate; the model is saved every {plan.val_every} "
                                "steps. Add a root/val folder with other classes to validate")
                val_ds = None

    from .episodes import EVAL_SEED, EpisodeSampler

    stage("building the model")
    torch.manual_seed(plan.seed)
    if not plan.freeze_backbone:
        model_size = train_ds.image_size
    algorithm = cls(backbone.build(train_ds.channels, model_size), backbone_name=backbone.name,
                    image_size=model_size, channels=train_ds.channels, hparams=hparams,
                    freeze_backbone=plan.freeze_backbone, fit=plan.fit).to(device)
    algorithm.use_amp = plan.precision != "fp32"
    if plan.freeze_backbone:
        from .feature_cache import FeatureCache
        from .features import precompute_features

        algorithm.feature_cache = FeatureCache()
        def reporter(label: str):
            def report(done: int, total: int) -> None:
                if control is not None and control.should_stop():  # blocks while paused
                    raise RunCancelled("training was cancelled while features were computed")
                if progress is not None:
                    progress(f"{backbone.name} features ({label})", done, total)
            return report

        train_ds = precompute_features(algorithm, train_ds, progress=reporter("train"))
        if val_ds is not None:
            val_ds = precompute_features(algorithm, val_ds, progress=reporter("val"))
    if device.type != "cpu":
        train_ds = train_ds.to(device)
        val_ds = val_ds.to(device) if val_ds is not None else None
    train_sampler = EpisodeSampler(train_ds, plan.ways, plan.shots, plan.queries, seed=plan.seed)
    val_sampler = None
    if val_ds is not None:
        val_sampler = EpisodeSampler(val_ds, plan.val_ways, plan.val_shots, plan.val_queries, seed=EVAL_SEED)
    steps = plan.steps
    config = TrainConfig(steps=steps, meta_batch=plan.meta_batch, val_every=plan.val_every,
                         val_episodes=plan.val_episodes, log_every=plan.log_every, seed=plan.seed)
    protocol = options.get("protocol") or (declared["protocol"].default if "protocol" in declared else None)
    info = {"name": plan.dataset, "root": str(plan.root) if plan.root else None, "split": plan.split,
            "protocol": protocol, "ways": plan.ways, "shots": plan.shots, "queries": plan.queries,
            "episodes": steps * plan.meta_batch, "seed": plan.seed}
    out = Path(plan.out).expanduser()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MetaStudioError(f"cannot create the folder '{out.parent}' for the model: {exc.strerror or exc}") from exc
    run = PreparedRun(algorithm, train_sampler, config, out, val_sampler=val_sampler, listener=listener,
                      control=control, dataset_info=info)
    run.plan = plan
    run.warnings = warnings
    run.device_description = describe_device(device)
    run.train_dataset = train_ds
    run.val_dataset = val_ds
    return run


__all__ = ["PRECISIONS", "PreparedRun", "RunCancelled", "StageProgress", "TrainingPlan", "prepare_run"]
