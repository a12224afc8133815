"""The test kit's checks that run an algorithm through the engine as MetaStudio does: a
:class:`~metastudio.engine.trainer.Trainer` run resumed from its checkpoint, exported files
loaded and run again, a frozen backbone trained on its precomputed features, and the model on a
CUDA device in float32 and in bfloat16.

:func:`metastudio.plugins.testkit.check_algorithm` calls them (see its module for the list of
checks); like the kit's other checks, a failure is an ``AssertionError`` whose message starts
with the step in brackets and says what to change.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from metastudio.algorithms.backbone import BackboneSpec
from metastudio.algorithms.base import Algorithm, Learner
from metastudio.data.datasets import FewShotDataset
from metastudio.data.episodes import EpisodeSampler, SupportSet
from metastudio.plugins.testkit_support import (
    ATOL, BATCH, EXPORT_ATOL, QUERIES, RTOL, SHOTS, WAYS, CheckReport, _adapt, _at, _check, _check_metrics,
    _check_proba, _fail, _queries, _Registry, _same, _support, configure, step_functions, trains_on,
)

#: Steps of the resume check's runs, and after how many of them the interrupted run stops.
RESUME_STEPS, STOP_AFTER = 3, 1
#: Seed of the fixed weights the kit gives a backbone without pretrained ones, to freeze it.
FROZEN_SEED = 1234
#: How far probabilities on CUDA may be from the CPU's: in float32 (TF32 off), and in bfloat16.
CUDA_ATOL, BF16_ATOL = 1e-3, 0.1


# ----------------------------------------------------------------------------------------------
# resume


def _full_state(algorithm: Algorithm) -> dict[str, torch.Tensor]:
    """The state a resume checkpoint holds: the algorithm's, with its training modules."""
    with getattr(algorithm, "with_training_modules", contextlib.nullcontext)():
        return {k: v.detach().cpu().clone() for k, v in algorithm.state_dict().items()}


def check_resume(cls: type[Algorithm], spec: BackboneSpec, ds: FewShotDataset, hparams: Mapping[str, Any],
                 tmp: Path) -> None:
    """A Trainer run stopped after STOP_AFTER of RESUME_STEPS steps and resumed from its checkpoint
    (into an algorithm built with other initial weights) ends as an uninterrupted run does."""
    from metastudio.data.batches import BatchSampler
    from metastudio.engine.control import Control
    from metastudio.engine.trainer import StepEvent, TrainConfig, Trainer

    step = "resume"
    _at(step)
    kinds = trains_on(cls)
    config: dict[str, Any] = {"steps": RESUME_STEPS, "val_every": RESUME_STEPS, "log_every": 1, "seed": 3}
    extra: dict[str, Any] = {}
    if "batch" in kinds:  # batches only, or batches until just after the stop, then episodes
        config["batch_steps"] = RESUME_STEPS if kinds == ["batch"] else STOP_AFTER + 1
        extra["batch_sampler"] = BatchSampler(ds, BATCH, seed=1)
    episodes = EpisodeSampler(ds, WAYS, SHOTS, QUERIES, seed=1)

    def build(seed: int) -> Algorithm:
        torch.manual_seed(seed)
        return cls(spec.build(ds.channels, ds.image_size), backbone_name=spec.name, image_size=ds.image_size,
                   channels=ds.channels, hparams=dict(hparams))

    straight = build(11)
    reference = Trainer(straight, episodes, TrainConfig(**config), tmp / "resume-straight.safetensors", **extra).run()
    control = Control()

    def stop(event) -> None:
        if isinstance(event, StepEvent) and event.step >= STOP_AFTER:
            control.cancel()

    out = tmp / "resume-stopped.safetensors"
    first = Trainer(build(11), episodes, TrainConfig(**config), out, listener=stop, control=control, **extra).run()
    _check(first.status == "cancelled" and first.steps_done == STOP_AFTER, step,
           f"a run cancelled after step {STOP_AFTER} ended with status {first.status!r} after {first.steps_done} steps")
    resumed = build(12)  # other initial weights: everything must come from the checkpoint
    result = Trainer(resumed, episodes, TrainConfig(**config), out, **extra).run(resume=True)
    _check(result.status == "completed" and result.steps_done == RESUME_STEPS, step,
           f"the resumed run ended with status {result.status!r} after {result.steps_done} of {RESUME_STEPS} steps")
    _compare_states(_full_state(straight), _full_state(resumed))
    got = [(h["step"], h.get("kind")) for h in result.history]
    want = [(h["step"], h.get("kind")) for h in reference.history]
    _check(got == want, step, f"the resumed run's history has the entries {got}, an uninterrupted run's {want}")
    for a, b in zip(result.history, reference.history):
        for key in ("loss", "accuracy"):
            _check(a[key] is not None and abs(a[key] - b[key]) <= 1e-5 + 1e-4 * abs(b[key]), step,
                   f"the resumed run's history says {key} {a[key]} at step {a['step']}, an uninterrupted run's "
                   f"{b[key]}")


def _compare_states(expected: Mapping[str, torch.Tensor], got: Mapping[str, torch.Tensor]) -> None:
    step = "resume"
    advice = ("everything training changes must be in the state_dict (parameters, registered buffers or "
              "training_modules), be made by the optimiser that configure_training builds, and draw its random "
              "numbers from torch's generator (not Python's random or NumPy's)")
    _check(set(expected) == set(got), step,
           f"a resumed run has other state entries than an uninterrupted one ({sorted(set(expected) ^ set(got))[:4]}); "
           + advice)
    differ = [k for k in expected if not (expected[k].shape == got[k].shape and torch.allclose(
        expected[k].float(), got[k].float(), atol=ATOL, rtol=RTOL))]
    if differ:
        k = differ[0]
        worst = float((expected[k].float() - got[k].float()).abs().max()) if expected[k].shape == got[k].shape else "shape"
        raise _fail(step, f"a run stopped after {STOP_AFTER} of {RESUME_STEPS} steps and resumed from its checkpoint "
                    f"ends with other weights than an uninterrupted run ({', '.join(differ[:4])}; largest difference "
                    f"in {k}: {worst}): " + advice)


# ----------------------------------------------------------------------------------------------
# export


def check_export(learner: Learner, algorithm: Algorithm, queries: torch.Tensor, tmp: Path,
                 formats: Sequence[str], report: CheckReport) -> None:
    """The learner's stand-alone copy (CPU, float32) reproduces predict_proba, and so does each
    file export_learner writes, loaded again and run on the queries."""
    from metastudio.engine.export import CHECK_TOLERANCE, export_learner

    step = "export"
    _at(step)
    module = learner.standalone()
    _check(all(p.dtype == torch.float32 and p.device.type == "cpu" and not p.requires_grad
               for p in module.parameters()), step, "the stand-alone copy must hold float32 CPU weights without autograd")
    images = queries.float() / 255
    with torch.no_grad():
        standalone = module(images).float().softmax(1)
    expected = learner.predict_proba(queries)
    _check(standalone.shape == expected.shape and bool(torch.allclose(standalone, expected, atol=EXPORT_ATOL)), step,
           "a deep copy of the learner on the CPU in float32 (Learner.standalone) predicts differently "
           f"(largest difference {_difference(standalone, expected)}): "
           "forward must reach everything it uses through the module tree (register tensors with register_buffer)")
    if type(learner).as_module is not Learner.as_module:  # a learner of the older contract: export writes this
        _at("as_module")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            own = learner.as_module().to("cpu").float().eval()
        with torch.no_grad():
            got = own(images).float()
        _check(got.shape == expected.shape and bool(torch.allclose(got, expected, atol=EXPORT_ATOL)), "as_module",
               f"the module of {type(learner).__name__}.as_module (what export writes for it) gives other "
               f"probabilities than predict_proba (largest difference {_difference(got, expected)})")
    for fmt in formats:
        _at(f"export {fmt}")
        try:
            model_file, labels_file = export_learner(learner, algorithm, tmp / f"{algorithm.name}-export-{fmt}", fmt)
        except Exception as e:
            raise _fail(step, f"export_learner(..., {fmt!r}) failed: {type(e).__name__}: {e} (forward must trace "
                        "with a dynamic batch dimension: no Python branching on the batch size or on tensor values)") from e
        labels = json.loads(Path(labels_file).read_text(encoding="utf-8"))
        _check(labels.get("class_names") == list(learner.class_names), step,
               f"the exported {fmt} model's labels.json names the classes {labels.get('class_names')}, "
               f"not the learner's {list(learner.class_names)}")
        got = _run_exported(Path(model_file), fmt, images)
        if got is None:
            report.skip(f"export {fmt}: run", "onnxruntime is not installed here: the ONNX file was written but not "
                        "run again (pip install onnxruntime)")
            continue
        _check(got.shape == expected.shape and bool(torch.allclose(got, expected, atol=CHECK_TOLERANCE)), step,
               f"the exported {fmt} file, loaded again and run on {len(images)} images, gives other probabilities "
               f"than the learner (largest difference {_difference(got, expected)})")
        report.ran(f"export {fmt}")


def _difference(a: torch.Tensor, b: torch.Tensor) -> str:
    return f"{float((a - b).abs().max()):.3g}" if a.shape == b.shape else f"shapes {list(a.shape)} and {list(b.shape)}"


def _run_exported(path: Path, fmt: str, images: torch.Tensor) -> torch.Tensor | None:
    """The probabilities the written file gives for ``images`` (float [B, C, H, W] in [0, 1]);
    None for ONNX without onnxruntime."""
    from metastudio.engine.export import INPUT_NAME, OUTPUT_NAME

    with warnings.catch_warnings():  # torch's notes about TorchScript being deprecated
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        if fmt == "torchscript":
            with torch.no_grad():
                return torch.jit.load(str(path), map_location="cpu")(images).float()
        try:
            import onnxruntime
        except ImportError:
            return None
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: images.numpy()})[0]).float()


# ----------------------------------------------------------------------------------------------
# a frozen backbone


def pretrained_copy(spec: BackboneSpec) -> BackboneSpec:
    """``spec`` whose factory builds the same weights every time (seeded), so that it may be
    frozen: what the kit freezes when the backbone under test has no pretrained weights."""

    def factory(channels: int, size: int) -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(FROZEN_SEED)
            return spec.factory(channels, size)

    return BackboneSpec(f"{spec.name}-testkit-pretrained", factory, f"{spec.name} with fixed weights (test kit)",
                        spec.default_image_size, pretrained=True)


def check_frozen_backbone(cls: type[Algorithm], spec: BackboneSpec, ds: FewShotDataset, hparams: Mapping[str, Any],
                          registry: _Registry, tmp: Path, report: CheckReport) -> None:
    """With ``freeze_backbone=True`` the backbone neither trains nor is saved; training on its
    precomputed features, adapting, predicting and a save/load round trip work."""
    from metastudio.engine.checkpoint import load_model, save_model
    from metastudio.engine.features import precompute_features

    step = "frozen backbone"
    _at(step)
    if not cls.supports_frozen_backbone:
        report.skip(step, f"{cls.name} declares supports_frozen_backbone = False")
        return
    frozen = spec if spec.pretrained else pretrained_copy(spec)
    registry.extra[frozen.name] = frozen
    try:
        algorithm = cls(frozen.build(ds.channels, ds.image_size), backbone_name=frozen.name, image_size=ds.image_size,
                        channels=ds.channels, hparams=dict(hparams), freeze_backbone=True)
    except ValueError as e:
        report.skip(step, f"{cls.name} refuses a frozen backbone with these hyperparameters: {e}")
        return
    reference = {k: v.clone() for k, v in algorithm.backbone.state_dict().items()}
    _check(algorithm.backbone_frozen and not any(p.requires_grad for p in algorithm.backbone.parameters()), step,
           "built with freeze_backbone=True, the backbone must be frozen (pass freeze_backbone on to "
           "Algorithm.__init__ and leave requires_grad to it)")
    algorithm.train()
    _check(not algorithm.backbone.training, step,
           "a frozen backbone must stay in eval mode while the algorithm trains (an override of train() must call "
           "super().train(mode))")
    saved = [k for k in algorithm.state_dict() if k.startswith("backbone.")]
    _check(not saved, step, f"a frozen backbone must stay out of the saved state (the model file), but state_dict() "
           f"holds {', '.join(saved[:3])}: an override of state_dict must call super().state_dict()")
    _check_frozen_training(algorithm, precompute_features(algorithm, ds), reference, report)
    algorithm.eval()
    support = _support(ds, range(WAYS), [2] * WAYS)
    queries = _queries(ds, range(WAYS), 3, 2)
    probs = _check_proba(_adapt(algorithm, support, step).predict_proba(queries), len(queries), support, step)
    _check_unchanged(algorithm, reference, "adapting")
    path = save_model(algorithm, tmp / f"{cls.name}-testkit-frozen.safetensors")
    loaded = load_model(path, registry).algorithm
    _check(loaded.backbone_frozen, step, "a model saved with a frozen backbone reloads with the backbone not frozen")
    again = _adapt(loaded, support, step).predict_proba(queries)
    _check(_same(probs, again), step,
           "a model with a frozen backbone, saved and loaded (the backbone rebuilt by its factory), predicts "
           f"differently (largest difference {_difference(probs, again)}): keep what the algorithm learns in "
           "its own modules, not in the backbone")
    report.ran(step)


def _check_frozen_training(algorithm: Algorithm, features: FewShotDataset, reference: Mapping[str, torch.Tensor],
                           report: CheckReport) -> None:
    """Two training steps of each kind on precomputed features leave the backbone as it was
    (skipped, saying so, when there is nothing to train)."""
    step = "frozen backbone"
    _at(f"{step}: configure_training")
    try:
        configure(algorithm, features, 2)
    except ValueError as e:
        report.skip(f"{step}: training", "nothing left to train with a frozen backbone (configure_training raised "
                    f"{type(e).__name__})")
        return
    for kind in trains_on(algorithm):
        train, _ = step_functions(algorithm, kind, features)
        what = "batch_train_step" if kind == "batch" else "meta_train_step"
        for i in range(2):
            _at(f"{step}: {what} on precomputed features")
            _check_metrics(train(i), f"{what} {i + 1} on precomputed features (frozen backbone)")
    _check_unchanged(algorithm, reference, "training")


def _check_unchanged(algorithm: Algorithm, reference: Mapping[str, torch.Tensor], doing: str) -> None:
    changed = [k for k, v in algorithm.backbone.state_dict().items() if not torch.equal(v, reference[k])]
    _check(not changed, "frozen backbone",
           f"{doing} changed the frozen backbone ({', '.join(changed[:4])})"
           + (": batch-norm statistics moved; run the backbone through self.embed" if any("running" in k for k in changed)
              else ": train only the algorithm's own modules"))


# ----------------------------------------------------------------------------------------------
# CUDA and bfloat16


@contextlib.contextmanager
def _exact_float32() -> Iterator[None]:
    """True float32 on the GPU for the duration (TF32 off), the previous flags afterwards."""
    flags = [(torch.backends.cudnn, "allow_tf32"), (torch.backends.cuda.matmul, "allow_tf32")]
    saved = [getattr(obj, attr) for obj, attr in flags]
    try:
        for obj, attr in flags:
            setattr(obj, attr, False)
        yield
    finally:
        for (obj, attr), value in zip(flags, saved):
            setattr(obj, attr, value)


def check_cuda(registry: _Registry, path: Path, support: SupportSet, queries: torch.Tensor, expected: torch.Tensor,
               ds: FewShotDataset, skip: Collection[str], report: CheckReport) -> None:
    """Where there is a CUDA device: the saved model on it adapts to CPU support images and
    predicts the CPU's probabilities, in float32 and in bfloat16, and trains a step in bfloat16."""
    wanted = [c for c in ("cuda", "bf16") if c not in skip]
    for check in ("cuda", "bf16"):
        if check in skip:
            report.skip(check, "left out by skip=")
    if not wanted:
        return
    if not torch.cuda.is_available():
        for check in wanted:
            report.skip(check, "no CUDA device here (torch.cuda.is_available() is False)")
        return
    from metastudio.engine.checkpoint import load_model

    device = torch.device("cuda", torch.cuda.current_device())
    with torch.random.fork_rng(devices=[device.index]):
        _at("cuda")
        algorithm = load_model(path, registry, device).algorithm
        if "cuda" in wanted:
            algorithm.use_amp = False
            with _exact_float32():
                probs = _predict_on(algorithm, support, queries, "cuda")
            _check(bool(torch.allclose(probs, expected, atol=CUDA_ATOL)), "cuda",
                   f"on CUDA in float32 the model predicts other probabilities than on the CPU (largest difference "
                   f"{_difference(probs, expected)}, more than {CUDA_ATOL})")
            report.ran("cuda")
        if "bf16" in wanted:
            _at("bf16")
            algorithm.use_amp = True
            probs = _predict_on(algorithm, support, queries, "bf16")
            _check(bool(torch.allclose(probs, expected, atol=BF16_ATOL)), "bf16",
                   f"on CUDA in bfloat16 mixed precision the model's probabilities are more than {BF16_ATOL} from the "
                   f"CPU's (largest difference {_difference(probs, expected)}): compute losses and softmaxes in float32")
            _at("bf16: training step")
            on_gpu = ds.to(device)
            configure(algorithm, on_gpu, 2)
            for kind in trains_on(algorithm):
                train, _ = step_functions(algorithm, kind, on_gpu)
                what = "batch_train_step" if kind == "batch" else "meta_train_step"
                _check_metrics(train(0), f"{what} on CUDA in bfloat16")
            report.ran("bf16")


def _predict_on(algorithm: Algorithm, support: SupportSet, queries: torch.Tensor, step: str) -> torch.Tensor:
    """Adapt to CPU support images and predict CPU queries, as the app asks a model on a GPU."""
    probs = _check_proba(_adapt(algorithm, support, step).predict_proba(queries), len(queries), support, step)
    _check(algorithm.device.type == "cuda", step, f"adapting moved the algorithm off the GPU (to {algorithm.device})")
    return probs
