"""The conformance test kit for plugin authors: check an algorithm, backbone or dataset against
the contract MetaStudio relies on, from your plugin package's own tests.

Each ``check_*`` function runs in a second or two on a CPU, needs no data on disk (the kit
brings a tiny synthetic dataset, :func:`synthetic_dataset`) and raises :class:`AssertionError`
with a message that says which part of the contract failed and how. Nothing here needs pytest,
but it is meant to be called from a test::

    # tests/test_my_plugin.py in your package
    from metastudio.plugins.testkit import check_algorithm, check_backbone, check_dataset

    from my_package.metastudio_plugin import MyAlgorithm, MY_BACKBONE, MY_DATASET


    def test_my_algorithm_follows_the_contract(tmp_path):
        check_algorithm(MyAlgorithm, tmp_path=tmp_path)


    def test_my_algorithm_with_my_backbone(tmp_path):
        # any backbone name the plugin host knows, built-in or from an installed plugin
        check_algorithm(MyAlgorithm, backbone="my-backbone", tmp_path=tmp_path)


    def test_my_backbone():
        check_backbone(MY_BACKBONE, in_channels=3, image_size=84)


    def test_my_dataset(tmp_path):
        root = make_a_tiny_copy_of_my_data(tmp_path)   # your own fixture
        check_dataset(MY_DATASET, root, "train")

What :func:`check_algorithm` checks, in order (the message of a failure names the step in
brackets, e.g. ``[adapt]``):

1. the class: a concrete subclass of :class:`~metastudio.algorithms.base.Algorithm` with
   ``name`` (lower case, no spaces), ``version``, ``family`` (metric, model or optimization)
   and declared hyperparameters whose defaults validate, with unique names, and a
   JSON-serialisable :meth:`~metastudio.algorithms.base.Algorithm.describe`;
2. roles (once the algorithm is built): a hyperparameter declared ``role="adaptation"`` (one
   a trained model may change) that is a bool or has choices gives the same saved state
   (names and shapes) with each of its other values -- otherwise the trained weights depend
   on it and it must be declared ``role="architecture"``;
3. construction with a backbone from the plugin host, ``configure_training`` and a training
   step: ``meta_train_step`` on a batch of 2 episodes, or ``batch_train_step`` on a labelled
   batch for an algorithm whose ``trains_on`` says it trains on batches: a dict of plain Python
   floats with a finite ``loss`` and an ``accuracy`` in [0, 1] (checked after every step);
4. learning: the loss on one fixed episode (or batch) goes down over ``steps`` further steps
   (the mean of the last two steps is below the mean of the first two);
5. adaptation (in eval mode, as the evaluator and the app call it): ``adapt`` reports
   :class:`~metastudio.algorithms.base.AdaptProgress` steps to its ``progress`` callback (with
   a float loss in at least one of them when it declares ``reports_adaptation_loss``),
   works without one, does not change the algorithm's parameters or buffers, and returns a
   :class:`~metastudio.algorithms.base.Learner` for exactly the support set's classes, also
   with an unequal number of shots per class and with fewer ways (3) than it was trained on
   (5);
6. prediction: ``predict_proba`` returns float32 CPU probabilities [Q, N] without autograd
   history, each row summing to 1; for no images at all, ``predict_proba`` gives [0, N],
   ``predict`` no names and ``predict_open_set`` [0, N] probabilities and [0] scores;
7. the learner as a module: :meth:`~metastudio.algorithms.base.Learner.forward` on the
   prepared query images (floats in [0, 1]) gives finite logits [Q, N] whose softmax is what
   ``predict_proba`` returns;
8. export: the learner's stand-alone copy (:meth:`~metastudio.algorithms.base.Learner.standalone`:
   a deep copy on the CPU in float32) reproduces ``predict_proba`` (so does the module of an
   older learner's own ``as_module``), and each file
   :func:`~metastudio.engine.export.export_learner` writes (TorchScript; ONNX too with
   ``export_formats=("torchscript", "onnx")`` where the ``onnx`` package is installed) is
   loaded again and run on the queries, giving the learner's probabilities, with a
   ``labels.json`` naming its classes in order;
9. persistence: :func:`~metastudio.engine.checkpoint.save_model` then
   :func:`~metastudio.engine.checkpoint.load_model` gives an algorithm whose learners predict
   the same probabilities; if the learner has a ``learner_state``, a model saved with
   ``learner=`` reloads with a learner that predicts the same probabilities;
10. resume: a :class:`~metastudio.engine.trainer.Trainer` run of 3 steps stopped after 1 and
    resumed from its checkpoint (into an algorithm built with other initial weights) ends with
    the weights and the history of an uninterrupted run;
11. a frozen backbone (``freeze_backbone=True`` with a backbone that has ``pretrained``
    weights; the kit makes one from the given backbone with fixed weights when it has none):
    the backbone neither trains nor enters the saved state, meta-training on its precomputed
    features (as ``metastudio train`` does) leaves it unchanged, and the model adapts,
    predicts, saves and loads. An algorithm that declares ``supports_frozen_backbone = False``
    or refuses a frozen backbone with the given hyperparameters (a ``ValueError`` from its
    constructor) skips this check, and one with nothing left to train skips its
    training part;
12. CUDA, where a CUDA device is present: the saved model loaded on the GPU adapts to
    support images on the CPU (as the app gives them) and predicts the CPU's probabilities
    in float32, and also in bfloat16 mixed precision (within 0.1), and meta-trains a step in
    bfloat16. Without a CUDA device these checks are skipped, and the report says so.

Anything the algorithm raises along the way (in ``adapt``, say) comes out as an
``AssertionError`` naming the step and the algorithm, with the original exception chained to
it (``raise ... from``), so a test shows where in the contract it happened and its traceback.

:func:`check_algorithm` returns a :class:`CheckReport`: which checks ran, and which were
skipped and why (no CUDA device, ``onnxruntime`` missing, a frozen backbone refused...). Under
pytest the MetaStudio pytest plugin (:mod:`metastudio.testing`) also lists the skipped checks at
the end of the run.

The algorithm class is checked as given: it does not have to be registered through an entry
point yet (the backbone does, or must be a built-in). The global torch random state and
number of threads are left as they were (the checks run on one thread).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import tempfile
import time
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from metastudio.algorithms.base import Algorithm, Learner
from metastudio.algorithms.hyperparameters import HyperParameter
from metastudio.algorithms.backbone import BackboneSpec
from metastudio.data.datasets import DatasetSpec, FewShotDataset
from metastudio.data.episodes import SupportSet
from metastudio.plugins.testkit_support import (
    OPTIONAL_CHECKS, WAYS, CheckReport, _adapt, _at, _check, _check_metrics, _check_proba, _fail, _one_thread,
    _queries, _Registry, _reporting, _same, _state, _support, _who, configure, skipped_checks, step_functions,
    trains_on,
)

__all__ = ["synthetic_dataset", "check_algorithm", "check_backbone", "check_dataset", "CheckReport", "OPTIONAL_CHECKS",
           "skipped_checks"]

FAMILIES = ("metric", "model", "optimization")


# ----------------------------------------------------------------------------------------------
# data


def synthetic_dataset(classes: int = 12, per_class: int = 8, channels: int = 1, image_size: int = 28,
                      seed: int = 0) -> FewShotDataset:
    """A tiny, learnable, deterministic :class:`~metastudio.data.datasets.FewShotDataset`.

    Each class is a random blocky template (a 7x7 random pattern scaled up to ``image_size``,
    at low contrast) and each of its ``per_class`` images is that template plus pixel noise,
    as uint8 [classes * per_class, channels, image_size, image_size]. The noise is strong
    enough that an untrained network does not already separate the classes perfectly (so a
    falling loss means something) and weak enough that a few meta-training steps do. Classes are named ``class00``, ``class01``, ...; the same arguments always
    give the same images. Use it to test an algorithm without data on disk::

        ds = synthetic_dataset(classes=10, per_class=6, channels=3, image_size=32)
        sampler = EpisodeSampler(ds, ways=5, shots=1, queries=2, seed=0)
        episode = sampler.episode(0)
    """
    if classes < 1 or per_class < 1 or channels < 1 or image_size < 1:
        raise ValueError("classes, per_class, channels and image_size must be positive")
    rng = np.random.default_rng([seed, classes, per_class, channels, image_size])
    cells = 7
    scale = -(-image_size // cells)  # ceil
    images = np.empty((classes, per_class, channels, image_size, image_size), dtype=np.uint8)
    for c in range(classes):
        low = rng.random((channels, cells, cells))
        template = np.kron(low, np.ones((scale, scale)))[:, :image_size, :image_size]
        for i in range(per_class):
            img = np.clip(0.5 + 0.3 * (template - 0.5) + rng.normal(0.0, 0.3, template.shape), 0.0, 1.0)
            images[c, i] = np.round(img * 255).astype(np.uint8)
    width = max(2, len(str(classes - 1)))
    return FewShotDataset(
        torch.from_numpy(images.reshape(classes * per_class, channels, image_size, image_size)),
        [f"class{c:0{width}d}" for c in range(classes)],
        [per_class] * classes,
        name="synthetic",
    )


# ----------------------------------------------------------------------------------------------
# algorithms


def _check_class(cls: type) -> None:
    step = "class"
    _check(isinstance(cls, type) and issubclass(cls, Algorithm), step,
           f"{cls!r} is not a subclass of metastudio.algorithms.base.Algorithm")
    missing = sorted(getattr(cls, "__abstractmethods__", ()))
    _check(not missing, step, f"{cls.__name__} does not implement {', '.join(missing)}")
    name = cls.name
    _check(isinstance(name, str) and name, step, f"{cls.__name__}.name must be a non-empty string (the registry name)")
    _check(name == name.lower() and not any(ch.isspace() for ch in name), step,
           f"{cls.__name__}.name must be lower case without spaces (it is typed on the command line), got {name!r}")
    _check(isinstance(cls.version, str) and cls.version, step,
           f"{cls.__name__}.version must be a non-empty string, got {cls.version!r}")
    _check(cls.family in FAMILIES, step, f"{cls.__name__}.family must be one of {', '.join(FAMILIES)}, got {cls.family!r}")
    _check(isinstance(cls.title, str) and isinstance(cls.description, str), step,
           f"{cls.__name__}.title and .description must be strings")
    hps = cls.hyperparameters
    _check(isinstance(hps, (tuple, list)), step, f"{cls.__name__}.hyperparameters must be a tuple of HyperParameter")
    names = []
    for h in hps:
        _check(isinstance(h, HyperParameter), step, f"{cls.__name__}.hyperparameters holds {h!r}, not a HyperParameter")
        try:
            value = h.validate(h.default)
        except ValueError as e:
            raise _fail(step, f"the default of hyperparameter {h.name} does not validate: {e}") from None
        _check(value == h.default and type(value) is type(h.default), step,
               f"the default of hyperparameter {h.name} ({h.default!r}) must already be of its type {h.type.__name__}")
        names.append(h.name)
    dupes = sorted({n for n in names if names.count(n) > 1})
    _check(not dupes, step, f"{cls.__name__} declares hyperparameter(s) {', '.join(dupes)} more than once")
    try:
        cls.resolve_hparams({})
    except ValueError as e:
        raise _fail(step, f"{cls.__name__}.resolve_hparams({{}}) fails: {e}") from None
    try:
        json.dumps(cls.describe())
    except (TypeError, ValueError) as e:
        raise _fail(step, f"{cls.__name__}.describe() must be JSON-serialisable: {e}") from None


def _check_roles(cls: type[Algorithm], spec, ds, hparams: Mapping[str, Any], algorithm: Algorithm) -> None:
    """Every other value of an ``adaptation`` bool or choice must fit the saved state of ``algorithm``."""
    step = "roles"
    shapes = {k: tuple(v.shape) for k, v in algorithm.state_dict().items()}
    for h in cls.hyperparameters:
        if h.role != "adaptation":
            continue
        current = algorithm.hparams[h.name]
        if h.type is bool:
            others = [not current]
        elif h.choices is not None:
            others = [c for c in h.choices if c != current]
        else:
            continue  # numbers: their extremes may be huge to build; not tried
        for value in others:
            try:
                other = cls(spec.build(ds.channels, ds.image_size), backbone_name=spec.name, image_size=ds.image_size,
                            channels=ds.channels, hparams={**hparams, h.name: value})
            except ValueError:
                continue  # not a valid combination with the other values: nothing to compare
            got = {k: tuple(v.shape) for k, v in other.state_dict().items()}
            if got != shapes:
                diff = sorted(set(got) ^ set(shapes)) or sorted(k for k in got if got[k] != shapes[k])
                raise _fail(step, f"hyperparameter {h.name} is declared role='adaptation' (a trained model may "
                            f"take another value), but with {h.name}={value!r} the saved state differs "
                            f"({', '.join(diff[:4])}): the trained weights depend on it, so declare it "
                            "role='architecture'")


def check_algorithm(cls: type[Algorithm], *, backbone: str = "conv4", host=None, steps: int = 8,
                    tmp_path: str | Path | None = None, hparams: Mapping[str, Any] | None = None,
                    export_formats: Sequence[str] = ("torchscript",), skip: Collection[str] = ()) -> CheckReport:
    """Check an algorithm class against the algorithm contract; raise AssertionError if it fails.

    :param cls: the :class:`~metastudio.algorithms.base.Algorithm` subclass to check (it need
        not be registered with the host).
    :param backbone: name of the backbone to build it with, looked up in ``host``.
    :param host: the plugin host (an object with ``backbone(name)`` and ``algorithm(name)``);
        by default :func:`metastudio.plugins.get_host`, i.e. every installed plugin.
    :param steps: meta-training steps of the learning check (at least 4).
    :param tmp_path: folder for the model files of the save/load, resume and export checks (a
        temporary folder, removed afterwards, when None).
    :param hparams: hyperparameter values to build the algorithm with (defaults otherwise),
        e.g. a larger learning rate if yours learns too slowly to pass the learning check.
    :param export_formats: the formats of :func:`metastudio.engine.export.export_learner` the
        export check writes, loads again and runs: TorchScript by default; add ``"onnx"`` for
        ONNX too (a few seconds more; skipped, saying so, where the ``onnx`` package is not
        installed, and only written, not run, without ``onnxruntime``).
    :param skip: names of checks to leave out, from ``OPTIONAL_CHECKS``: ``"resume"``,
        ``"empty queries"``, ``"export"``, ``"onnx"``, ``"frozen backbone"``, ``"cuda"`` and
        ``"bf16"`` (for an algorithm that does not offer what the check needs yet; the report
        lists them as skipped).
    :returns: a :class:`CheckReport` of the checks that ran and those skipped, with why.

    The check uses 1-channel 28x28 synthetic images, 5-way 1-shot episodes with 2 queries
    per class, and runs on the CPU (and on CUDA where there is a device). Example::

        def test_contract(tmp_path):
            report = check_algorithm(MyAlgorithm, tmp_path=tmp_path, hparams={"inner_steps": 2})
            print(report.skipped)   # {'cuda': 'no CUDA device here', ...}
    """
    if steps < 4:
        raise ValueError("check_algorithm needs steps >= 4 to compare the first and last two losses")
    unknown = sorted(set(skip) - set(OPTIONAL_CHECKS))
    if unknown:
        raise ValueError(f"check_algorithm cannot skip {', '.join(unknown)}: the checks it may skip are "
                         f"{', '.join(OPTIONAL_CHECKS)}")
    if host is None:
        from metastudio.plugins import get_host

        host = get_host()
    started = time.perf_counter()
    report = CheckReport(str(getattr(cls, "name", "") or getattr(cls, "__name__", cls)))
    formats, left_out = _formats(("torchscript",) if export_formats is None else export_formats, skip)
    with _reporting(_who(cls)):
        _at("class")
        _check_class(cls)
        report.ran("class")
        with torch.random.fork_rng(devices=[]), _one_thread():
            torch.manual_seed(0)
            with contextlib.ExitStack() as stack:
                tmp = Path(tmp_path) if tmp_path is not None else Path(
                    stack.enter_context(tempfile.TemporaryDirectory(prefix="metastudio-testkit-")))
                _check_instance(cls, backbone, host, steps, tmp, hparams or {}, (formats, left_out), set(skip),
                                report)
    report.seconds = time.perf_counter() - started
    return report


def _formats(export_formats: Sequence[str], skip: Collection[str]) -> tuple[tuple[str, ...], list[tuple[str, str]]]:
    """The export formats to check (those asked for, less ONNX where the onnx package, with the
    onnxscript its exporter needs, is not installed; none when the export check is skipped),
    and the checks left out with why."""
    from metastudio.engine.export import EXPORT_FORMATS

    formats = (export_formats,) if isinstance(export_formats, str) else tuple(export_formats)
    unknown = sorted(set(formats) - set(EXPORT_FORMATS))
    if unknown:
        raise ValueError(f"check_algorithm cannot export {', '.join(unknown)}: the formats are {', '.join(EXPORT_FORMATS)}")
    if "export" in skip:
        return (), [("export", "left out by skip=")]
    if "onnx" not in formats:
        why = 'not asked for: check_algorithm(..., export_formats=("torchscript", "onnx")) adds it (a few seconds more)'
    elif "onnx" in skip:
        why = "left out by skip="
    elif importlib.util.find_spec("onnx") is None or importlib.util.find_spec("onnxscript") is None:
        why = ("the onnx and onnxscript packages are not installed here, so the ONNX export was not tried "
               "(pip install onnx onnxscript onnxruntime)")
    else:
        return formats, []
    return tuple(f for f in formats if f != "onnx"), [("onnx", why)]


def _check_instance(cls: type[Algorithm], backbone_name: str, host, steps: int, tmp: Path,
                    hparams: Mapping[str, Any], export: tuple[Sequence[str], list[tuple[str, str]]], skip: set[str],
                    report: CheckReport) -> None:
    from metastudio.plugins import testkit_engine as engine

    ds = synthetic_dataset()
    _at("build")
    spec = host.backbone(backbone_name)
    registry = _Registry(cls, host)
    algorithm = _build(cls, spec, ds, hparams)
    report.ran("roles")
    _check_training(algorithm, ds, steps)
    report.ran("learning")
    algorithm.eval()  # adaptation and prediction as the evaluator and the app run them
    learner, support, queries = _check_adaptation(algorithm, ds)
    report.ran("adapt")
    if "empty queries" in skip:
        report.skip("empty queries", "left out by skip=")
    else:
        _check_empty(learner, algorithm, support)
        report.ran("empty queries")
    _check_forward(learner, algorithm, support, queries)
    report.ran("forward")
    export_formats, left_out = export
    for check, why in left_out:
        report.skip(check, why)
    if "export" not in skip:
        engine.check_export(learner, algorithm, queries, tmp, export_formats, report)
    path = _check_persistence(registry, algorithm, learner, support, queries, tmp)
    report.ran("save/load")
    if "resume" in skip:
        report.skip("resume", "left out by skip=")
    else:
        engine.check_resume(cls, spec, ds, hparams, tmp)
        report.ran("resume")
    if "frozen backbone" in skip:
        report.skip("frozen backbone", "left out by skip=")
    else:
        engine.check_frozen_backbone(cls, spec, ds, hparams, registry, tmp, report)
    engine.check_cuda(registry, path, support, queries, learner.predict_proba(queries), ds, skip, report)


def _build(cls: type[Algorithm], spec, ds: FewShotDataset, hparams: Mapping[str, Any]) -> Algorithm:
    """The algorithm built with a backbone from the host (step ``build``), its roles checked."""
    step = "build"
    try:
        algorithm = cls(spec.build(ds.channels, ds.image_size), backbone_name=spec.name, image_size=ds.image_size,
                        channels=ds.channels, hparams=dict(hparams))
    except Exception as e:
        raise _fail(step, f"{cls.__name__}(backbone, backbone_name=..., image_size=..., channels=..., hparams=...) "
                    f"raised {type(e).__name__}: {e}") from e
    try:
        json.dumps(algorithm.config())
    except (TypeError, ValueError) as e:
        raise _fail(step, f"algorithm.config() must be JSON-serialisable (it goes into model files): {e}") from None
    _at("roles")
    with torch.random.fork_rng(devices=[]):  # the checks after this one see the same random numbers
        _check_roles(cls, spec, ds, hparams, algorithm)
    return algorithm


def _check_training(algorithm: Algorithm, ds: FewShotDataset, steps: int) -> None:
    """A training step (on 2 episodes, or a labelled batch), then the loss on a fixed episode
    (or batch) goes down; for an algorithm that trains on both, on each."""
    _at("configure_training")
    configure(algorithm, ds, steps)
    for kind in trains_on(algorithm):
        step, fixed = step_functions(algorithm, kind, ds)
        what = "batch_train_step" if kind == "batch" else "meta_train_step"
        _at(what)
        _check_metrics(step(0), f"{what}, {'a labelled batch' if kind == 'batch' else '2 episodes'}")
        losses = []
        for i in range(steps):
            _at(f"{what} {i + 1} on a fixed {kind}")
            losses.append(_check_metrics(fixed(), f"{what} {i + 1} on a fixed {kind}"))
        first, last = sum(losses[:2]) / 2, sum(losses[-2:]) / 2
        _check(last < first, "learning",
               f"the loss did not go down over {steps} training steps on a fixed {kind} "
               f"(mean of the first two {first:.4f}, of the last two {last:.4f}; all: "
               f"{[round(x, 4) for x in losses]}); does {what} step the optimiser built by "
               "configure_training? (pass hparams= for a larger learning rate if it is just slow)")


def _check_adaptation(algorithm: Algorithm, ds: FewShotDataset) -> tuple[Learner, SupportSet, torch.Tensor]:
    """Adapting (in eval mode) with and without a progress callback, with unequal shots and with
    3 ways, and predicting; returns the first learner, its support set and queries."""
    classes = list(range(WAYS))
    support = _support(ds, classes, [2] * WAYS)
    queries = _queries(ds, classes, 3, 2)
    before = _state(algorithm)
    learner = _adapt(algorithm, support, "adapt")
    _at("predict_proba")
    _check_proba(learner.predict_proba(queries), len(queries), support, "predict_proba")
    changed = [k for k, v in algorithm.state_dict().items() if not torch.equal(v, before[k])]
    _check(not changed, "adapt", f"adapt must not change the algorithm, but it changed {', '.join(changed[:5])}"
           + (" (batch-norm statistics: run the backbone as it is, or copy it)" if any("running" in k for k in changed) else ""))
    _check(not algorithm.training, "adapt", "adapt must not switch the algorithm to training mode")

    try:
        plain = algorithm.adapt(support)
    except Exception as e:
        raise _fail("adapt", f"adapt(support) without a progress callback raised {type(e).__name__}: {e}") from e
    _at("adapt without progress")
    _check_proba(plain.predict_proba(queries), len(queries), support, "adapt without progress")

    uneven_classes = [6, 7, 8, 9, 10]
    uneven = _support(ds, uneven_classes, [1, 3, 2, 1, 2])
    uneven_queries = _queries(ds, uneven_classes, 4, 3)
    uneven_learner = _adapt(algorithm, uneven, "adapt, unequal shots")
    _at("predict_proba, unequal shots per class")
    _check_proba(uneven_learner.predict_proba(uneven_queries), len(uneven_queries), uneven,
                 "predict_proba, unequal shots per class")

    three_classes = [2, 9, 11]
    three = _support(ds, three_classes, [2] * 3)
    three_queries = _queries(ds, three_classes, 2, 4)
    three_learner = _adapt(algorithm, three, "adapt, 3 ways")
    _at("predict_proba, 3-way support after 5-way training")
    _check_proba(three_learner.predict_proba(three_queries), len(three_queries), three,
                 "predict_proba, 3-way support after 5-way training")
    return learner, support, queries


def _check_empty(learner: Learner, algorithm: Algorithm, support: SupportSet) -> None:
    """No query images at all (an empty query folder in the app): [0, N] results, no error."""
    step = "empty queries"
    _at(step)
    none = torch.zeros(0, algorithm.channels, algorithm.image_size, algorithm.image_size, dtype=torch.uint8)
    _check_proba(learner.predict_proba(none), 0, support, f"{step}: predict_proba")
    names, probs = learner.predict(none)
    _check(list(names) == [] and tuple(probs.shape) == (0, support.ways), step,
           f"predict of no images must give no names and probabilities [0, {support.ways}], got {list(names)} "
           f"and {list(probs.shape)}")
    prediction = learner.predict_open_set(none)
    probabilities, scores = getattr(prediction, "probabilities", None), getattr(prediction, "scores", None)
    _check(isinstance(probabilities, torch.Tensor) and tuple(probabilities.shape) == (0, support.ways), step,
           f"predict_open_set of no images must give probabilities [0, {support.ways}], got "
           f"{list(probabilities.shape) if isinstance(probabilities, torch.Tensor) else type(probabilities).__name__}")
    _check(isinstance(scores, torch.Tensor) and tuple(scores.shape) == (0,), step,
           "predict_open_set of no images must give unsure scores [0], got "
           f"{list(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__}")


def _check_forward(learner: Learner, algorithm: Algorithm, support: SupportSet, queries: torch.Tensor) -> None:
    """The learner is a module whose forward gives finite logits [Q, N] for prepared images,
    and predict_proba is their softmax."""
    step = "forward"
    _at(step)
    _check(type(learner).forward is not Learner.forward, step,
           f"{type(learner).__name__} must implement forward(images) -> logits [B, N] for float images in [0, 1] "
           "(Learner.predict_proba and export run it); build it from the functions meta-training uses")
    with torch.inference_mode(), algorithm.evaluating():
        logits = learner(algorithm.prepare(queries))
    _check(isinstance(logits, torch.Tensor) and logits.is_floating_point(), step,
           f"forward must return a floating-point tensor of logits, got {type(logits).__name__}")
    _check(tuple(logits.shape) == (len(queries), support.ways), step,
           f"forward must return logits [images, ways] = [{len(queries)}, {support.ways}], got {list(logits.shape)}")
    _check(bool(torch.isfinite(logits).all()), step,
           "forward returned NaN or infinite logits (floor log-probabilities, e.g. probs.clamp_min(eps).log())")
    softmax = logits.float().softmax(1).cpu()
    probs = learner.predict_proba(queries)
    _check(_same(softmax, probs), step,
           "predict_proba must be the softmax of forward on the prepared images (largest difference "
           f"{float((softmax - probs).abs().max())}); leave predict_proba to the base class")


def _check_persistence(registry: _Registry, algorithm: Algorithm, learner: Learner, support: SupportSet,
                       queries: torch.Tensor, tmp: Path) -> Path:
    """save_model/load_model round-trips the algorithm, and the learner when it has a
    learner_state; returns the model file (without the learner)."""
    from metastudio.engine.checkpoint import load_model, save_model

    step = "save/load"
    _at(step)
    cls = registry.cls
    expected = learner.predict_proba(queries)
    model = path = save_model(algorithm, tmp / f"{cls.name}-testkit.safetensors")
    loaded = load_model(path, registry)
    _check(type(loaded.algorithm) is cls, step, f"load_model rebuilt a {type(loaded.algorithm).__name__}, not a {cls.__name__}")
    _check(not loaded.algorithm.training, step, "load_model must return the algorithm in eval mode")
    again = _adapt(loaded.algorithm, support, step).predict_proba(queries)
    _check(_same(expected, again), step,
           "a model saved with save_model and reloaded with load_model predicts differently (largest difference "
           f"{float((expected - again).abs().max()) if expected.shape == again.shape else 'shape'}): everything "
           "meta-training learns must be in the module's state_dict (parameters or registered buffers), and "
           "everything else needed to rebuild it in its hyperparameters")

    _at(step)
    state = learner.learner_state()
    if not state:
        return model
    _check(isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values()), step,
           "Learner.learner_state() must return a dict of tensors")
    path = save_model(algorithm, tmp / f"{cls.name}-testkit-learner.safetensors", learner=learner)
    loaded = load_model(path, registry)
    _check(loaded.learner is not None, step,
           "a model saved with learner= reloads without its learner: implement Algorithm.restore_learner")
    _check(tuple(loaded.learner.class_names) == tuple(support.class_names), step,
           f"the restored learner's class_names are {list(loaded.learner.class_names)}, "
           f"expected {list(support.class_names)}")
    restored = _check_proba(loaded.learner.predict_proba(queries), len(queries), support, "restored learner")
    _check(_same(expected, restored), step,
           "the learner restored from a model file predicts differently from the learner that was saved "
           f"(largest difference {float((expected - restored).abs().max())}); Learner.learner_state() and "
           "Algorithm.restore_learner() must round-trip")
    return model


# ----------------------------------------------------------------------------------------------
# backbones and datasets


def check_backbone(spec: BackboneSpec, in_channels: int = 1, image_size: int = 28) -> nn.Module:
    """Check a :class:`~metastudio.algorithms.backbone.BackboneSpec`; return the network it built.

    Builds the network for ``in_channels`` x ``image_size`` x ``image_size`` images and checks
    that it is a ``torch.nn.Module`` mapping float images [B, C, H, W] to finite float32
    features [B, D] with D == ``out_features``, in training and in eval mode, and that the
    factory builds the same architecture (parameter names and shapes) each time. Example::

        def test_backbone():
            check_backbone(BackboneSpec("tiny", lambda c, s: TinyNet(c), "A two-layer CNN."))
    """
    step = "backbone"
    _check(isinstance(spec, BackboneSpec), step, f"expected a metastudio.api.BackboneSpec, got {type(spec).__name__}")
    _check(isinstance(spec.name, str) and spec.name, step, "a BackboneSpec needs a non-empty name")
    with _reporting(f"backbone '{spec.name}'"), torch.random.fork_rng(devices=[]), _one_thread():
        _at(step)
        torch.manual_seed(0)
        net = spec.build(in_channels, image_size)
        _check(isinstance(net, nn.Module), step, f"the factory of '{spec.name}' must return a torch.nn.Module, got {type(net).__name__}")
        dim = net.out_features
        _check(isinstance(dim, int) and dim > 0, step, f"'{spec.name}': out_features must be a positive int, got {dim!r}")
        x = torch.rand(3, in_channels, image_size, image_size)
        for training in (True, False):
            net.train(training)
            with torch.no_grad():
                out = net(x)
            mode = "training" if training else "eval"
            _check(isinstance(out, torch.Tensor) and out.dim() == 2, step,
                   f"'{spec.name}' must return features [B, D] in {mode} mode, got "
                   f"{list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}")
            _check(tuple(out.shape) == (3, dim), step,
                   f"'{spec.name}' returned {list(out.shape)} in {mode} mode for 3 images; expected [3, {dim}] "
                   "(out_features)")
            _check(out.dtype == torch.float32, step, f"'{spec.name}' must return float32 features, got {out.dtype}")
            _check(bool(torch.isfinite(out).all()), step, f"'{spec.name}' returned NaN or infinite features")
        other = spec.build(in_channels, image_size)
        shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
        other_shapes = {k: tuple(v.shape) for k, v in other.state_dict().items()}
        _check(shapes == other_shapes, step,
               f"the factory of '{spec.name}' must build the same architecture every time it is called with the same "
               "arguments (saved weights are loaded into a new build)")
    net.train()
    return net


def check_dataset(spec: DatasetSpec, root, split: str, **options) -> FewShotDataset:
    """Load ``split`` of a :class:`~metastudio.data.datasets.DatasetSpec` from ``root`` and check
    the result; return the dataset.

    Checks that ``split`` is one of ``spec.splits``, that ``load`` returns a
    :class:`~metastudio.data.datasets.FewShotDataset` of uint8 images [total, C, H, W] with
    unique class names and positive class sizes that add up to the number of images, and that
    its channels and image size are the spec's (when the spec declares them). ``options``
    go to ``load`` (e.g. ``protocol="lake"``). Example::

        def test_dataset(tmp_path):
            make_class_folders(tmp_path)           # your own fixture
            check_dataset(MY_DATASET, tmp_path, "train")
    """
    step = "dataset"
    _check(isinstance(spec, DatasetSpec), step, f"expected a metastudio.data.datasets.DatasetSpec, got {type(spec).__name__}")
    _check(isinstance(spec.name, str) and spec.name, step, "a DatasetSpec needs a non-empty name")
    _check(split in spec.splits, step, f"'{spec.name}' does not declare the split '{split}' (splits: {spec.splits})")
    declared = {o.name for o in spec.options}
    unknown = sorted(set(options) - declared)
    _check(not unknown, step, f"'{spec.name}' does not declare the option(s) {', '.join(unknown)}")
    calls: list[tuple[int, Any]] = []
    with _reporting(f"dataset '{spec.name}'"):
        _at(f"{step}: load")
        ds = spec.load(root, split, image_size=None, progress=lambda done, total: calls.append((done, total)), **options)
    _check(isinstance(ds, FewShotDataset), step,
           f"'{spec.name}'.load must return a metastudio.data.datasets.FewShotDataset, got {type(ds).__name__}")
    _check(ds.images.dtype == torch.uint8 and ds.images.dim() == 4, step,
           f"'{spec.name}': images must be uint8 [total, C, H, W], got {ds.images.dtype} {list(ds.images.shape)}")
    _check(ds.images.shape[-1] == ds.images.shape[-2], step, f"'{spec.name}': images must be square, got {list(ds.images.shape)}")
    _check(len(ds.class_names) == len(ds.class_sizes) and ds.num_classes > 0, step,
           f"'{spec.name}': one class size per class name is needed, and at least one class")
    _check(all(isinstance(n, str) for n in ds.class_names) and len(set(ds.class_names)) == len(ds.class_names), step,
           f"'{spec.name}': class names must be unique strings")
    _check(all(isinstance(s, int) and s > 0 for s in ds.class_sizes), step, f"'{spec.name}': every class needs images")
    _check(sum(ds.class_sizes) == len(ds.images), step,
           f"'{spec.name}': class sizes add up to {sum(ds.class_sizes)}, but there are {len(ds.images)} images")
    if spec.channels is not None and "channels" not in options:
        _check(ds.channels == spec.channels, step, f"'{spec.name}' declares {spec.channels} channels but loaded {ds.channels}")
    if spec.image_size is not None:
        _check(ds.image_size == spec.image_size, step,
               f"'{spec.name}' declares image size {spec.image_size} but loaded {ds.image_size} with image_size=None")
    for done, total in calls:
        _check(isinstance(done, int) and (total is None or (isinstance(total, int) and 0 <= done <= total)), step,
               f"'{spec.name}': progress(done, total) got ({done!r}, {total!r})")
    return ds
