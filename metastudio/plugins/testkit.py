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

What :func:`check_algorithm` checks, in order (the message of a failure names the step):

1. the class: a concrete subclass of :class:`~metastudio.algorithms.base.Algorithm` with
   ``name`` (lower case, no spaces), ``version``, ``family`` (metric, model or optimization)
   and declared hyperparameters whose defaults validate, with unique names, and a
   JSON-serialisable :meth:`~metastudio.algorithms.base.Algorithm.describe`;
2. roles (once the algorithm is built): a hyperparameter declared ``role="adaptation"`` (one
   a trained model may change) that is a bool or has choices gives the same saved state
   (names and shapes) with each of its other values -- otherwise the trained weights depend
   on it and it must be declared ``role="architecture"``;
3. construction with a backbone from the plugin host, ``configure_training`` and
   ``meta_train_step`` on a batch of 2 episodes: a dict of plain Python floats with a finite
   ``loss`` and an ``accuracy`` in [0, 1] (checked after every step);
4. learning: the loss on one fixed episode goes down over ``steps`` further steps (the mean
   of the last two steps is below the mean of the first two);
5. adaptation (in eval mode, as the evaluator and the app call it): ``adapt`` reports
   :class:`~metastudio.algorithms.base.AdaptProgress` steps to its ``progress`` callback,
   works without one, does not change the algorithm's parameters or buffers, and returns a
   :class:`~metastudio.algorithms.base.Learner` for exactly the support set's classes, also
   with an unequal number of shots per class and with fewer ways (3) than it was trained on
   (5);
6. prediction: ``predict_proba`` returns float32 CPU probabilities [Q, N] without autograd
   history, each row summing to 1;
7. the learner as a module: :meth:`~metastudio.algorithms.base.Learner.forward` on the
   prepared query images (floats in [0, 1]) gives finite logits [Q, N] whose softmax is what
   ``predict_proba`` returns;
8. export: the learner's stand-alone copy (:meth:`~metastudio.algorithms.base.Learner.standalone`:
   a deep copy on the CPU in float32) reproduces ``predict_proba``, and
   :func:`~metastudio.engine.export.export_learner` writes it (TorchScript by default; the
   ``export_formats`` argument adds ONNX), checking the file on another batch size;
9. persistence: :func:`~metastudio.engine.checkpoint.save_model` then
   :func:`~metastudio.engine.checkpoint.load_model` gives an algorithm whose learners predict
   the same probabilities; if the learner has a ``learner_state``, a model saved with
   ``learner=`` reloads with a learner that predicts the same probabilities.

The algorithm class is checked as given: it does not have to be registered through an entry
point yet (the backbone does, or must be a built-in). The global torch random state and
number of threads are left as they were (the checks run on one thread).
"""

from __future__ import annotations

import contextlib
import json
import math
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from metastudio.algorithms.base import AdaptProgress, Algorithm, Learner
from metastudio.algorithms.hyperparameters import HyperParameter
from metastudio.algorithms.backbone import BackboneSpec
from metastudio.data.datasets import DatasetSpec, FewShotDataset
from metastudio.data.episodes import Episode, EpisodeSampler, SupportSet, stack_support

__all__ = ["synthetic_dataset", "check_algorithm", "check_backbone", "check_dataset"]

FAMILIES = ("metric", "model", "optimization")

#: Episode shape used by :func:`check_algorithm`: 5-way, 1-shot, 2 queries per class.
WAYS, SHOTS, QUERIES = 5, 1, 2
#: Tolerance when comparing the predictions of a reloaded model with the original's.
ATOL, RTOL = 1e-5, 1e-4
#: Tolerance when comparing the stand-alone copy's probabilities (CPU, float32, NCHW) with predict_proba.
EXPORT_ATOL = 1e-4


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
# helpers


def _fail(step: str, message: str) -> AssertionError:
    return AssertionError(f"[{step}] {message}")


def _check(condition: Any, step: str, message: str) -> None:
    if not condition:
        raise _fail(step, message)


@contextlib.contextmanager
def _one_thread():
    """One intra-op thread for the tiny tensors of the checks: on a busy machine (a CI runner,
    a computer that is training) threads that wait for each other cost far more than they win."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class _Registry:
    """The algorithm under test by its name, everything else from the host (for load_model)."""

    def __init__(self, cls: type[Algorithm], host):
        self.cls, self.host = cls, host

    def algorithm(self, name: str) -> type[Algorithm]:
        return self.cls if name == self.cls.name else self.host.algorithm(name)

    def backbone(self, name: str) -> BackboneSpec:
        return self.host.backbone(name)


def _support(ds: FewShotDataset, classes: Sequence[int], shots: Sequence[int]) -> SupportSet:
    return stack_support([ds.class_images(c)[:k] for c, k in zip(classes, shots)],
                         [ds.class_names[c] for c in classes])


def _queries(ds: FewShotDataset, classes: Sequence[int], skip: int, count: int) -> torch.Tensor:
    return torch.cat([ds.class_images(c)[skip : skip + count] for c in classes])


def _state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _check_proba(probs: Any, queries: int, support: SupportSet, step: str) -> torch.Tensor:
    ways = support.ways
    _check(isinstance(probs, torch.Tensor), step, f"predict_proba must return a torch.Tensor, got {type(probs).__name__}")
    _check(probs.device.type == "cpu", step, f"predict_proba must return a CPU tensor, got one on {probs.device}")
    _check(probs.dtype == torch.float32, step, f"predict_proba must return float32, got {probs.dtype}")
    _check(tuple(probs.shape) == (queries, ways), step,
           f"predict_proba must return [queries, ways] = [{queries}, {ways}] for a {ways}-way support set "
           f"(one column per class of the support set, in its order), got {list(probs.shape)}")
    _check(not probs.requires_grad, step, "predict_proba must not return a tensor with autograd history "
           "(use torch.inference_mode() or .detach())")
    _check(bool(torch.isfinite(probs).all()), step, "predict_proba returned NaN or infinite values")
    _check(bool((probs >= 0).all()) and bool((probs <= 1).all()), step,
           "predict_proba must return probabilities in [0, 1] (apply a softmax to scores or logits)")
    sums = probs.sum(1)
    _check(bool(torch.allclose(sums, torch.ones_like(sums), atol=1e-4)), step,
           f"each row of predict_proba must sum to 1 over the support set's classes (got row sums "
           f"{[round(float(s), 4) for s in sums[:5]]}...); apply a softmax to scores or logits")
    return probs


def _adapt(algorithm: Algorithm, support: SupportSet, step: str) -> Learner:
    calls: list[Any] = []
    learner = algorithm.adapt(support, progress=calls.append)
    _check(isinstance(learner, Learner), step, f"adapt must return a metastudio.algorithms.base.Learner, got {type(learner).__name__}")
    _check(tuple(learner.class_names) == tuple(support.class_names), step,
           f"the learner's class_names must be the support set's, in order: expected {list(support.class_names)}, "
           f"got {list(learner.class_names)}")
    _check(calls, step, "adapt must call its progress callback at least once (AdaptProgress(step, total, loss)), "
           "even when adaptation is one step")
    for p in calls:
        _check(isinstance(p, AdaptProgress), step,
               f"adapt must report AdaptProgress objects to its progress callback, got {type(p).__name__}: {p!r}")
        _check(isinstance(p.step, int) and isinstance(p.total, int) and 1 <= p.step <= p.total, step,
               f"AdaptProgress needs 1 <= step <= total (1-based), got step={p.step!r} total={p.total!r}")
        _check(p.loss is None or (isinstance(p.loss, float) and math.isfinite(p.loss)), step,
               f"AdaptProgress.loss must be None or a finite plain float, got {p.loss!r}")
    steps = [p.step for p in calls]
    _check(steps == sorted(steps), step, f"AdaptProgress steps must not go backwards, got {steps}")
    _check(calls[-1].step == calls[-1].total, step,
           f"the last AdaptProgress must have step == total (adaptation finished), got {calls[-1]!r}")
    return learner


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and bool(torch.allclose(a, b, atol=ATOL, rtol=RTOL))


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


def _check_metrics(metrics: Any, step: str) -> float:
    _check(isinstance(metrics, dict), step, f"meta_train_step must return a dict, got {type(metrics).__name__}")
    for key in ("loss", "accuracy"):
        _check(key in metrics, step, f"meta_train_step must return '{key}' (got keys {sorted(metrics)})")
    for key, value in metrics.items():
        _check(type(value) is float, step,
               f"meta_train_step must return plain Python floats; '{key}' is {type(value).__module__}."
               f"{type(value).__name__} ({value!r}); use float(tensor.detach())")
    _check(math.isfinite(metrics["loss"]), step, f"the loss is not finite: {metrics['loss']}")
    _check(0.0 <= metrics["accuracy"] <= 1.0, step, f"accuracy must be a fraction in [0, 1], got {metrics['accuracy']}")
    return metrics["loss"]


def check_algorithm(cls: type[Algorithm], *, backbone: str = "conv4", host=None, steps: int = 8,
                    tmp_path: str | Path | None = None, hparams: Mapping[str, Any] | None = None,
                    export_formats: Sequence[str] = ("torchscript",)) -> None:
    """Check an algorithm class against the algorithm contract; raise AssertionError if it fails.

    :param cls: the :class:`~metastudio.algorithms.base.Algorithm` subclass to check (it need
        not be registered with the host).
    :param backbone: name of the backbone to build it with, looked up in ``host``.
    :param host: the plugin host (an object with ``backbone(name)`` and ``algorithm(name)``);
        by default :func:`metastudio.plugins.get_host`, i.e. every installed plugin.
    :param steps: meta-training steps of the learning check (at least 4).
    :param tmp_path: folder for the model files of the save/load and export checks (a
        temporary folder, removed afterwards, when None).
    :param hparams: hyperparameter values to build the algorithm with (defaults otherwise),
        e.g. a larger learning rate if yours learns too slowly to pass the learning check.
    :param export_formats: the formats of :func:`metastudio.engine.export.export_learner` the
        export check writes (``"onnx"`` too takes a few seconds more).

    The check uses 1-channel 28x28 synthetic images, 5-way 1-shot episodes with 2 queries
    per class, and runs on the CPU. Example::

        def test_contract(tmp_path):
            check_algorithm(MyAlgorithm, tmp_path=tmp_path, hparams={"inner_steps": 2})
    """
    if steps < 4:
        raise ValueError("check_algorithm needs steps >= 4 to compare the first and last two losses")
    if host is None:
        from metastudio.plugins import get_host

        host = get_host()
    _check_class(cls)
    with torch.random.fork_rng(devices=[]), _one_thread():
        torch.manual_seed(0)
        if tmp_path is None:
            with tempfile.TemporaryDirectory(prefix="metastudio-testkit-") as tmp:
                _check_instance(cls, backbone, host, steps, Path(tmp), hparams or {}, export_formats)
        else:
            _check_instance(cls, backbone, host, steps, Path(tmp_path), hparams or {}, export_formats)


def _check_instance(cls: type[Algorithm], backbone_name: str, host, steps: int, tmp: Path,
                    hparams: Mapping[str, Any], export_formats: Sequence[str]) -> None:
    ds = synthetic_dataset()
    spec = host.backbone(backbone_name)
    algorithm = _build(cls, spec, ds, hparams)
    _check_training(algorithm, ds, steps)
    algorithm.eval()  # adaptation and prediction as the evaluator and the app run them
    learner, support, queries = _check_adaptation(algorithm, ds)
    _check_forward(learner, algorithm, support, queries)
    _check_export(learner, algorithm, queries, tmp, export_formats)
    _check_persistence(cls, host, algorithm, learner, support, queries, tmp)


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
    with torch.random.fork_rng(devices=[]):  # the checks after this one see the same random numbers
        _check_roles(cls, spec, ds, hparams, algorithm)
    return algorithm


def _check_training(algorithm: Algorithm, ds: FewShotDataset, steps: int) -> None:
    """``meta_train_step`` on 2 episodes, then the loss on a fixed episode goes down."""
    algorithm.configure_training(steps)
    algorithm.train()
    sampler = EpisodeSampler(ds, WAYS, SHOTS, QUERIES, seed=0)
    _check_metrics(algorithm.meta_train_step([sampler.episode(1), sampler.episode(2)]), "meta_train_step, 2 episodes")
    fixed: list[Episode] = [sampler.episode(0)]
    losses = []
    for i in range(steps):
        losses.append(_check_metrics(algorithm.meta_train_step(fixed), f"meta_train_step {i + 1} on a fixed episode"))
    first, last = sum(losses[:2]) / 2, sum(losses[-2:]) / 2
    _check(last < first, "learning",
           f"the loss did not go down over {steps} meta-training steps on a fixed episode "
           f"(mean of the first two {first:.4f}, of the last two {last:.4f}; all: "
           f"{[round(x, 4) for x in losses]}); does meta_train_step step the optimiser built by "
           "configure_training? (pass hparams= for a larger learning rate if it is just slow)")


def _check_adaptation(algorithm: Algorithm, ds: FewShotDataset) -> tuple[Learner, SupportSet, torch.Tensor]:
    """Adapting (in eval mode) with and without a progress callback, with unequal shots and with
    3 ways, and predicting; returns the first learner, its support set and queries."""
    classes = list(range(WAYS))
    support = _support(ds, classes, [2] * WAYS)
    queries = _queries(ds, classes, 3, 2)
    before = _state(algorithm)
    learner = _adapt(algorithm, support, "adapt")
    _check_proba(learner.predict_proba(queries), len(queries), support, "predict_proba")
    changed = [k for k, v in algorithm.state_dict().items() if not torch.equal(v, before[k])]
    _check(not changed, "adapt", f"adapt must not change the algorithm, but it changed {', '.join(changed[:5])}"
           + (" (batch-norm statistics: run the backbone as it is, or copy it)" if any("running" in k for k in changed) else ""))
    _check(not algorithm.training, "adapt", "adapt must not switch the algorithm to training mode")

    try:
        plain = algorithm.adapt(support)
    except Exception as e:
        raise _fail("adapt", f"adapt(support) without a progress callback raised {type(e).__name__}: {e}") from e
    _check_proba(plain.predict_proba(queries), len(queries), support, "adapt without progress")

    uneven_classes = [6, 7, 8, 9, 10]
    uneven = _support(ds, uneven_classes, [1, 3, 2, 1, 2])
    uneven_queries = _queries(ds, uneven_classes, 4, 3)
    _check_proba(_adapt(algorithm, uneven, "adapt, unequal shots").predict_proba(uneven_queries),
                 len(uneven_queries), uneven, "predict_proba, unequal shots per class")

    three_classes = [2, 9, 11]
    three = _support(ds, three_classes, [2] * 3)
    three_queries = _queries(ds, three_classes, 2, 4)
    _check_proba(_adapt(algorithm, three, "adapt, 3 ways").predict_proba(three_queries),
                 len(three_queries), three, "predict_proba, 3-way support after 5-way training")
    return learner, support, queries


def _check_forward(learner: Learner, algorithm: Algorithm, support: SupportSet, queries: torch.Tensor) -> None:
    """The learner is a module whose forward gives finite logits [Q, N] for prepared images,
    and predict_proba is their softmax."""
    step = "forward"
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


def _check_export(learner: Learner, algorithm: Algorithm, queries: torch.Tensor, tmp: Path,
                  formats: Sequence[str]) -> None:
    """The learner's stand-alone copy (CPU, float32) reproduces predict_proba, is a copy, and exports."""
    from metastudio.engine.export import export_learner

    step = "export"
    module = learner.standalone()
    _check(all(p.dtype == torch.float32 and p.device.type == "cpu" and not p.requires_grad
               for p in module.parameters()), step, "the stand-alone copy must hold float32 CPU weights without autograd")
    with torch.no_grad():
        standalone = module(queries.float() / 255).float().softmax(1)
    expected = learner.predict_proba(queries)
    _check(standalone.shape == expected.shape and bool(torch.allclose(standalone, expected, atol=EXPORT_ATOL)), step,
           "a deep copy of the learner on the CPU in float32 (Learner.standalone) predicts differently "
           f"(largest difference {float((standalone - expected).abs().max()) if standalone.shape == expected.shape else 'shape'}): "
           "forward must reach everything it uses through the module tree (register tensors with register_buffer)")
    for fmt in formats:
        try:
            export_learner(learner, algorithm, tmp / f"{algorithm.name}-export-{fmt}", fmt)
        except Exception as e:
            raise _fail(step, f"export_learner(..., {fmt!r}) failed: {type(e).__name__}: {e} (forward must trace "
                        "with a dynamic batch dimension: no Python branching on the batch size or on tensor values)") from e


def _check_persistence(cls: type[Algorithm], host, algorithm: Algorithm, learner: Learner, support: SupportSet,
                       queries: torch.Tensor, tmp: Path) -> None:
    """save_model/load_model round-trips the algorithm, and the learner when it has a learner_state."""
    from metastudio.engine.checkpoint import load_model, save_model

    step = "save/load"
    registry = _Registry(cls, host)
    expected = learner.predict_proba(queries)
    path = save_model(algorithm, tmp / f"{cls.name}-testkit.safetensors")
    loaded = load_model(path, registry)
    _check(type(loaded.algorithm) is cls, step, f"load_model rebuilt a {type(loaded.algorithm).__name__}, not a {cls.__name__}")
    _check(not loaded.algorithm.training, step, "load_model must return the algorithm in eval mode")
    again = _adapt(loaded.algorithm, support, step).predict_proba(queries)
    _check(_same(expected, again), step,
           "a model saved with save_model and reloaded with load_model predicts differently (largest difference "
           f"{float((expected - again).abs().max()) if expected.shape == again.shape else 'shape'}): everything "
           "meta-training learns must be in the module's state_dict (parameters or registered buffers), and "
           "everything else needed to rebuild it in its hyperparameters")

    state = learner.learner_state()
    if not state:
        return
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


# ----------------------------------------------------------------------------------------------
# backbones and datasets


def check_backbone(spec: BackboneSpec, in_channels: int = 1, image_size: int = 28) -> nn.Module:
    """Check a :class:`~metastudio_builtins.backbones.networks.BackboneSpec`; return the network it built.

    Builds the network for ``in_channels`` x ``image_size`` x ``image_size`` images and checks
    that it is a ``torch.nn.Module`` mapping float images [B, C, H, W] to finite float32
    features [B, D] with D == ``out_features``, in training and in eval mode, and that the
    factory builds the same architecture (parameter names and shapes) each time. Example::

        def test_backbone():
            check_backbone(BackboneSpec("tiny", lambda c, s: TinyNet(c), "A two-layer CNN."))
    """
    step = "backbone"
    _check(isinstance(spec, BackboneSpec), step, f"expected a metastudio_builtins.backbones.networks.BackboneSpec, got {type(spec).__name__}")
    _check(isinstance(spec.name, str) and spec.name, step, "a BackboneSpec needs a non-empty name")
    with torch.random.fork_rng(devices=[]), _one_thread():
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
