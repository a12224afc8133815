"""Export an adapted classifier so that it runs without MetaStudio, and write prediction tables.

:func:`export_learner` writes a :class:`~metastudio.algorithms.base.Learner` -- a stand-alone
copy of it (:meth:`Learner.standalone`: CPU, float32, eval mode) followed by a softmax -- as one
model file plus ``labels.json`` beside it:

- ``torchscript``: ``model.pt``, made by ``torch.jit.trace``; plain PyTorch loads it with
  ``torch.jit.load("model.pt")``.
- ``onnx``: ``model.onnx`` (weights inside the file), made by the ``torch.export``-based
  ("dynamo") exporter; ONNX Runtime and other ONNX tools run it.

Both take float32 images [B, C, H, W] with values in [0, 1] (input ``images``), already
resized to the model's square size, and give class probabilities [B, N] (output
``probabilities``); B may be any number. ``labels.json`` holds the class names in output order,
the input specification (including how to resize), the model's origin and a few lines of
Python showing how to use the file with PIL, NumPy and torch or onnxruntime.

Nothing half-written is left behind: both files are first written (and the model checked) in
a hidden folder beside the target and only then moved into place, so a full disk or a failed
export leaves any previous export unchanged.

:func:`write_predictions_csv` writes per-image predictions and probabilities as CSV.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from metastudio import __version__
from metastudio.algorithms.base import Algorithm, Learner, Probabilities
from metastudio.engine.checkpoint import atomic_write
from metastudio.errors import CheckpointError, MetaStudioError

EXPORT_FORMATS = ("torchscript", "onnx")
EXPORT_FORMAT_NAME = "metastudio-export"
EXPORT_FORMAT_VERSION = 1
LABELS_FILE = "labels.json"
INPUT_NAME = "images"
OUTPUT_NAME = "probabilities"
MODEL_FILES = {"torchscript": "model.pt", "onnx": "model.onnx"}
_SUFFIXES = {".pt": "torchscript", ".pth": "torchscript", ".torchscript": "torchscript", ".onnx": "onnx"}

#: How far the exported file's probabilities may stray from the module's (checked on every export).
CHECK_TOLERANCE = 1e-3

RESIZE_HELP = {
    "stretch": "resize the whole image to width x height, ignoring its aspect ratio",
    "center-crop": "crop the centred square of side min(width, height) of the image, then resize it to width x height",
}


# ------------------------------------------------------------------------------------------------
# Export


def export_learner(
    learner: Learner,
    algorithm: Algorithm,
    path: str | os.PathLike,
    format: str | None = None,  # noqa: A002 - the natural name, used by callers as a keyword
) -> list[Path]:
    """Write ``learner`` as a stand-alone model file plus ``labels.json``; return both paths
    (the model file first).

    ``format`` is ``"torchscript"`` or ``"onnx"`` (``None``: from the suffix of ``path``,
    ``.pt`` or ``.onnx``). ``path`` is the model file to write, or a folder (an existing one, or
    a name without a suffix), in which case ``model.pt`` / ``model.onnx`` is written inside it.
    ``labels.json`` goes beside the model file (replacing any there). ``algorithm`` is the one
    the learner was adapted with (for the input size, channels, resize mode and names).

    TorchScript comes from ``torch.jit.trace``. ONNX comes from the ``torch.export``-based
    exporter (``torch.onnx.export(..., dynamo=True)``): on both shipped models (Conv-4 ProtoNet
    and the EfficientNet-Lite0 ``photos`` model) it and the legacy TorchScript-based exporter
    gave the same probabilities (within 2e-5) for batches of 1 to 7, but the legacy one is
    deprecated (a DeprecationWarning says it will be removed), so it is only a fallback for a
    backbone that ``torch.export`` cannot capture. The dynamo exporter is slower (about 3 s for
    Conv-4, 8 s for Lite0 on two busy CPU cores, against under 1 s). Before anything is moved
    into place the written model is run on a batch of another size and compared with the
    module (ONNX only when onnxruntime is installed): a baked-in batch size or an exporter bug
    is an error, not a silently wrong file.

    Raises :class:`MetaStudioError` when the learner cannot be exported or the format is
    unknown, and :class:`CheckpointError` when the files cannot be written (any previous export
    at ``path`` is then left as it was).
    """
    fmt = _resolve_format(path, format)
    target = _model_path(Path(path).expanduser(), fmt)
    labels_path = target.with_name(LABELS_FILE)
    if target.name == LABELS_FILE:
        raise MetaStudioError(f"the model file cannot be called {LABELS_FILE}: that name is taken by the labels file")
    module = classifier_module(learner)
    example = _example_batch(algorithm, 2)
    with torch.no_grad():
        reference = module(example)
    names = list(learner.class_names)
    if reference.dim() != 2 or reference.shape[1] != len(names):
        raise MetaStudioError(
            f"the exported classifier gives outputs of shape {tuple(reference.shape)}, not [batch, {len(names)}]"
        )
    labels = labels_document(learner, algorithm, fmt, target.name)

    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.export-", dir=target.parent))
    except OSError as e:
        raise _write_error(target, e) from e
    try:
        staged_model = staging / target.name
        try:
            labels["exporter"] = _write_model(module, example, staged_model, fmt)
        except OSError as e:
            raise _write_error(target, e) from e
        _check(module, algorithm, staged_model, fmt)
        staged_labels = staging / LABELS_FILE
        try:
            _write_json(staged_labels, labels)
            mode = 0o666 & ~_umask()
            for staged in (staged_model, staged_labels):
                os.chmod(staged, mode)  # mkdtemp's folder is private; the files get the usual mode
            os.replace(staged_model, target)
            os.replace(staged_labels, labels_path)
        except OSError as e:
            raise _write_error(target, e) from e
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [target, labels_path]


def classifier_module(learner: Learner) -> nn.Module:
    """What :func:`export_learner` traces: the learner's stand-alone copy with a softmax after it
    (float images in [0, 1] -> probabilities), in eval mode on the CPU in float32. A learner
    written for the older contract, whose class still provides its own ``as_module``, is
    exported through that. Raises :class:`MetaStudioError` for a learner without ``forward``."""
    if type(learner).as_module is not Learner.as_module:
        try:
            module = learner.as_module()
        except NotImplementedError as e:
            raise MetaStudioError(str(e) or f"{type(learner).__name__} cannot be exported") from None
        return module.to("cpu").float().eval()
    if type(learner).forward is Learner.forward:
        raise MetaStudioError(f"this classifier ({type(learner).__name__}) cannot be exported: its learner does not "
                              "implement Learner.forward (images -> logits)")
    return Probabilities(learner.standalone())


def _resolve_format(path: str | os.PathLike, format: str | None) -> str:  # noqa: A002
    if format is None:
        suffix = Path(path).suffix.lower()
        if suffix not in _SUFFIXES:
            raise MetaStudioError(
                f"cannot tell the export format from '{path}': name a .pt (TorchScript) or .onnx file, "
                f"or give the format ({', '.join(EXPORT_FORMATS)})"
            )
        return _SUFFIXES[suffix]
    fmt = str(format).strip().lower()
    if fmt not in EXPORT_FORMATS:
        raise MetaStudioError(f"unknown export format '{format}': use one of {', '.join(EXPORT_FORMATS)}")
    return fmt


def _model_path(path: Path, fmt: str) -> Path:
    if path.is_dir() or (not path.exists() and not path.suffix):
        return path / MODEL_FILES[fmt]
    return path


def _example_batch(algorithm: Algorithm, batch: int) -> torch.Tensor:
    """Random [0, 1] images of the model's shape (from a private generator: the global random
    state is left alone)."""
    gen = torch.Generator().manual_seed(batch)
    return torch.rand(batch, algorithm.channels, algorithm.image_size, algorithm.image_size, generator=gen)


def _write_error(target: Path, error: OSError) -> CheckpointError:
    return CheckpointError(
        f"could not write the export '{target}': {error.strerror or error}; any previous export there is unchanged"
    )


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        json.dump(doc, fh, indent=2, ensure_ascii=False)
        fh.write("\n")


@contextlib.contextmanager
def _quiet():
    """Silence torch's deprecation chatter about TorchScript and the exporters (FutureWarning,
    DeprecationWarning) and the tracer's notes about constant shapes (the image size is fixed;
    a baked-in batch size is caught by :func:`_check`), inside the block only."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        yield


def _write_model(module: nn.Module, example: torch.Tensor, path: Path, fmt: str) -> str:
    """Write the model file; return a short description of the exporter used. ``OSError`` passes
    through; any other failure becomes a :class:`MetaStudioError` saying what went wrong."""
    with _quiet(), torch.no_grad():
        if fmt == "torchscript":
            try:
                traced = torch.jit.trace(module, (example,), check_trace=False)
            except Exception as e:  # noqa: BLE001 - tracing fails in many ways
                raise _export_failure("TorchScript", e) from e
            torch.jit.save(traced, str(path))
            return f"torch.jit.trace (torch {torch.__version__})"
        return _write_onnx(module, example, path)


def _write_onnx(module: nn.Module, example: torch.Tensor, path: Path) -> str:
    try:
        program = torch.onnx.export(
            module, (example,), None, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: torch.export.Dim("batch")},), dynamo=True, external_data=False,
            verbose=False, custom_translation_table={torch.ops.aten._cdist_forward.default: _onnx_cdist},
        )
    except Exception as dynamo_error:  # noqa: BLE001 - the exporter raises many types
        if isinstance(dynamo_error, OSError):
            raise
        try:
            torch.onnx.export(
                module, (example,), str(path), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}, dynamo=False, opset_version=17,
            )
        except OSError:
            raise
        except Exception:  # noqa: BLE001 - the legacy exporter failed too (or is gone): report the main one
            raise _export_failure("ONNX", dynamo_error) from dynamo_error
        return f"torch.onnx legacy TorchScript-based exporter, opset 17 (torch {torch.__version__})"
    if program is None:  # pragma: no cover - dynamo=True with f=None always returns the program
        raise MetaStudioError("the ONNX exporter returned nothing")
    program.save(str(path), external_data=False)
    return f"torch.onnx dynamo (torch.export-based) exporter (torch {torch.__version__})"


def _onnx_cdist(x1, x2, p: float = 2.0, compute_mode=None):  # noqa: ARG001 - aten's signature
    """ONNX for ``torch.cdist`` (``aten._cdist_forward``), which the exporter does not translate:
    the p-norms of the broadcast differences of the rows of ``x1`` [.., A, D] and ``x2``
    [.., B, D], as [.., A, B] (materialising [.., A, B, D])."""
    from onnxscript import opset18 as op  # the dynamo exporter's own dependency

    diff = op.Abs(op.Sub(op.Unsqueeze(x1, [-2]), op.Unsqueeze(x2, [-3])))
    if p == 1.0:
        return op.ReduceSum(diff, [-1], keepdims=0)
    return op.Pow(op.ReduceSum(op.Pow(diff, p), [-1], keepdims=0), 1.0 / p)


def _export_failure(kind: str, error: BaseException) -> MetaStudioError:
    first = str(error).strip().splitlines()[0] if str(error).strip() else "no details"
    return MetaStudioError(
        f"this classifier could not be exported as {kind}: {type(error).__name__}: {first[:300]}"
    )


def _check(module: nn.Module, algorithm: Algorithm, path: Path, fmt: str) -> None:
    """Run the written model on a batch of another size than the one exported with and compare
    with the module itself."""
    batch = _example_batch(algorithm, 3)
    with torch.no_grad():
        expected = module(batch).numpy()
    if fmt == "onnx":
        try:
            import onnxruntime
        except ImportError:  # a runtime-only dependency: without it, trust the exporter
            return
    try:
        with _quiet():
            if fmt == "torchscript":
                with torch.no_grad():
                    got = torch.jit.load(str(path), map_location="cpu")(batch).numpy()
            else:
                session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
                got = session.run([OUTPUT_NAME], {INPUT_NAME: batch.numpy()})[0]
    except Exception as e:  # noqa: BLE001 - a file that does not run is a failed export
        raise _export_failure(fmt, e) from e
    if got.shape != expected.shape:
        raise MetaStudioError(
            f"the exported {fmt} model gives outputs of shape {tuple(got.shape)} for a batch of {len(batch)}, "
            f"not {tuple(expected.shape)}; nothing was written"
        )
    worst = float(abs(got - expected).max())
    if not worst <= CHECK_TOLERANCE:
        raise MetaStudioError(
            f"the exported {fmt} model does not reproduce the classifier (probabilities differ by up to "
            f"{worst:.2g}); nothing was written"
        )


# ------------------------------------------------------------------------------------------------
# labels.json


def labels_document(learner: Learner, algorithm: Algorithm, fmt: str, model_file: str) -> dict[str, Any]:
    """What ``labels.json`` holds (see the module docstring)."""
    fit = algorithm.fit
    channels, size = int(algorithm.channels), int(algorithm.image_size)
    names = list(learner.class_names)
    return {
        "format": EXPORT_FORMAT_NAME,
        "format_version": EXPORT_FORMAT_VERSION,
        "class_names": names,
        "input": {
            "name": INPUT_NAME,
            "channels": channels,
            "height": size,
            "width": size,
            "color": "grayscale (L)" if channels == 1 else "RGB",
            "dtype": "float32",
            "range": [0, 1],
            "layout": "NCHW",
            "resize": fit,
            "resize_description": RESIZE_HELP[fit],
        },
        "output": {"name": OUTPUT_NAME, "shape": ["batch", len(names)],
                   "meaning": "softmax probabilities, columns in class_names order"},
        "export_format": fmt,
        "model_file": model_file,
        "algorithm": algorithm.name,
        "algorithm_version": algorithm.version,
        "backbone": algorithm.backbone_name,
        "metastudio_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "usage": usage(fmt, model_file, channels, size, fit),
    }


def usage(fmt: str, model_file: str, channels: int, size: int, fit: str) -> str:
    """A few lines of Python (PIL, NumPy and torch or onnxruntime; no MetaStudio) that classify
    one image with the exported file. They reproduce MetaStudio's resizing exactly for
    lossless images (MetaStudio may decode large JPEGs at reduced scale, which differs a little)."""
    mode = "L" if channels == 1 else "RGB"
    if fit == "center-crop":
        box = "w, h = img.size; s = min(w, h); box = ((w - s) / 2, (h - s) / 2, (w + s) / 2, (h + s) / 2)"
    else:
        box = "s = min(img.size); box = None"
    layout = "[None, None]" if channels == 1 else ".transpose(2, 0, 1)[None]"
    lines = [
        "import json",
        "import numpy as np",
        "from PIL import Image, ImageOps",
        'image_path = "image.jpg"  # the image to classify',
        f'img = ImageOps.exif_transpose(Image.open(image_path)).convert("{mode}")',
        box,
        f"img = img.resize(({size}, {size}), Image.BILINEAR if s < {size} else Image.LANCZOS, box=box, "
        f"reducing_gap=None if s < {size} else 3.0)",
        f"x = (np.asarray(img, dtype=np.float32) / 255){layout}  # [1, {channels}, {size}, {size}], values in [0, 1]",
    ]
    if fmt == "torchscript":
        lines += [
            "import torch",
            f'model = torch.jit.load("{model_file}")',
            "probs = model(torch.from_numpy(x)).detach().numpy()",
        ]
    else:
        lines += [
            "import onnxruntime",
            f'session = onnxruntime.InferenceSession("{model_file}")',
            f'probs = session.run(["{OUTPUT_NAME}"], {{"{INPUT_NAME}": x}})[0]',
        ]
    lines += [
        f'names = json.load(open("{LABELS_FILE}", encoding="utf-8"))["class_names"]',
        "print(names[int(probs[0].argmax())], float(probs[0].max()))",
    ]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------
# Predictions as CSV


def write_predictions_csv(
    path: str | os.PathLike,
    rows: Iterable[tuple[str, Sequence[float]]],
    class_names: Sequence[str],
    unsure: Mapping[str, str] | None = None,
) -> Path:
    """Write predictions to a CSV file (UTF-8, atomically) and return its path.

    ``rows`` are ``(file, probabilities)`` with one probability per class, in ``class_names``
    order. Columns: ``file``, ``predicted`` (the class of highest probability; the first on a
    tie), then one column per class name with its probability to 6 decimals. With ``unsure``
    (a mapping from a row's file to why its prediction is not confident, e.g. ``SessionResult.unsure``
    keyed by file), a last column ``unsure`` holds that reason, empty for confident rows; its
    ``predicted`` is then only the closest class. (The column is named ``unsure (reason)`` if a
    class is called ``unsure``.) Raises :class:`MetaStudioError` for a row of the wrong length
    and :class:`CheckpointError` when the file cannot be written (any previous file is then
    unchanged).
    """
    names = [str(n) for n in class_names]
    if not names:
        raise MetaStudioError("no classes to write predictions for")
    table: list[list[str]] = []
    for file, probabilities in rows:
        values = [float(p) for p in probabilities]
        if len(values) != len(names):
            raise MetaStudioError(
                f"'{file}' has {len(values)} probabilities but there are {len(names)} classes ({', '.join(names)})"
            )
        best = max(range(len(values)), key=values.__getitem__)
        table.append([str(file), names[best], *(f"{v:.6f}" for v in values)])
    header = ["file", "predicted", *names]
    if unsure is not None:
        header.append("unsure (reason)" if "unsure" in names else "unsure")
        reasons = {str(k): str(v) for k, v in unsure.items()}
        for row in table:
            row.append(reasons.get(row[0], ""))

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(header)
            writer.writerows(table)

    return atomic_write(path, write)
