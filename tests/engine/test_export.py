"""Exporting an adapted classifier (TorchScript, ONNX) that runs without MetaStudio, and the
predictions CSV."""

from __future__ import annotations

import csv
import errno
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from metastudio.engine import export
from metastudio.algorithms.base import Learner
from metastudio.data.episodes import SupportSet
from metastudio.errors import CheckpointError, MetaStudioError
from metastudio.engine.export import EXPORT_FORMATS, export_learner, write_predictions_csv
from metastudio.data.images import load_array, to_array
from metastudio.plugins.testkit import synthetic_dataset
from metastudio_builtins.algorithms.protonet import PrototypicalNetworks

from conftest import class_pattern
from helpers import assert_standalone_reproduces

ort = pytest.importorskip("onnxruntime")
# What a person's own code meets when loading TorchScript; not MetaStudio's to silence there.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")

NAMES = ("circle", "Ünïcode, \"quoted\"", "third")


def tiny_protonet(host, **hparams) -> PrototypicalNetworks:
    torch.manual_seed(0)
    algo = PrototypicalNetworks(host.backbone("conv4").build(1, 28), backbone_name="conv4", image_size=28, channels=1,
                                hparams=hparams)
    if algo.hparams["feature_transform"] != "none":
        algo.feature_mean.copy_(torch.rand(algo.backbone.out_features))
    return algo.eval()


def tiny_support(shots: int = 2) -> tuple[SupportSet, torch.Tensor]:
    """A 3-way support set and 6 other (query) images of the same classes, uint8 [.., 1, 28, 28]."""
    ds = synthetic_dataset(classes=3, per_class=shots + 2)
    support = torch.cat([ds.class_images(c)[:shots] for c in range(3)])
    queries = torch.cat([ds.class_images(c)[shots:] for c in range(3)])
    return SupportSet(support, torch.arange(3).repeat_interleave(shots), NAMES), queries


def run_model(fmt: str, model_file, x: np.ndarray) -> np.ndarray:
    """Run an exported file the plain way: torch.jit.load or an onnxruntime session."""
    if fmt == "torchscript":
        with torch.no_grad():
            return torch.jit.load(str(model_file))(torch.from_numpy(x)).numpy()
    return ort.InferenceSession(str(model_file), providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]


def usage_probs(labels: dict, image_path, folder, monkeypatch) -> np.ndarray:
    """Run labels.json's usage lines (what a person would paste) on one image, in the export folder."""
    code = labels["usage"].replace('"image.jpg"', repr(str(image_path)))
    monkeypatch.chdir(folder)
    namespace: dict = {}
    exec(compile(code, "usage", "exec"), namespace)  # noqa: S102 - our own generated snippet
    assert namespace["x"].dtype == np.float32
    return namespace["x"], namespace["probs"]


# ------------------------------------------------------------------------------------------------
# The learner as a module (what export traces)


@pytest.mark.filterwarnings("ignore:`torch.jit.trace:FutureWarning")
@pytest.mark.parametrize("hparams", [
    {}, {"distance": "cosine", "temperature": 7.0}, {"feature_transform": "cl2n"},
    {"feature_transform": "power-cl2n", "distance": "cosine"},
])
def test_the_standalone_learner_gives_the_learners_probabilities(host, hparams):
    algo = tiny_protonet(host, **hparams)
    support, queries = tiny_support()
    assert_standalone_reproduces(algo.adapt(support), algo, queries)


def test_the_learner_module_holds_what_forward_uses_and_leaves_the_algorithm_alone(host):
    algo = tiny_protonet(host, feature_transform="cl2n").train()
    algo.optimizer = torch.optim.SGD(algo.parameters(), lr=0.1)
    support, queries = tiny_support()
    learner = algo.adapt(support)
    assert algo.training, "adapting and predicting leave the algorithm's mode alone"
    assert learner.algorithm is algo and dict(learner.named_buffers())["prototypes"].shape == (3, 64)
    probs = learner.predict_proba(queries)
    assert algo.training and torch.allclose(probs.sum(1), torch.ones(len(queries)))
    with torch.no_grad(), algo.evaluating():
        logits = learner(algo.prepare(queries))
    assert logits.shape == (len(queries), 3) and torch.allclose(logits.softmax(1).cpu(), probs, atol=1e-6)
    module = learner.standalone()
    assert module.algorithm is not algo and module.algorithm.optimizer is None and algo.optimizer is not None
    assert "algorithm.feature_mean" in module.state_dict() and "prototypes" in module.state_dict()


def test_as_module_is_a_deprecated_alias_for_the_standalone_classifier(host):
    algo = tiny_protonet(host)
    support, queries = tiny_support()
    learner = algo.adapt(support)
    with pytest.warns(DeprecationWarning, match="as_module"):
        module = learner.as_module()
    assert not module.training
    with torch.no_grad():
        assert torch.allclose(module(queries.float() / 255), learner.predict_proba(queries), atol=1e-5)


# ------------------------------------------------------------------------------------------------
# export_learner: the tiny ProtoNet, run without MetaStudio


@pytest.mark.slow  # ~7 s on two busy cores: the dynamo ONNX export (~3 s) and a fresh interpreter
def test_tiny_protonet_exports_run_without_metastudio(host, tmp_path):
    algo = tiny_protonet(host, feature_transform="power-cl2n")
    support, queries = tiny_support()
    learner = algo.adapt(support)
    expected = learner.predict_proba(queries).numpy()
    written = {fmt: export_learner(learner, algo, tmp_path / fmt, fmt) for fmt in EXPORT_FORMATS}
    assert written["torchscript"] == [tmp_path / "torchscript" / "model.pt", tmp_path / "torchscript" / "labels.json"]
    assert written["onnx"] == [tmp_path / "onnx" / "model.onnx", tmp_path / "onnx" / "labels.json"]
    assert sorted(p.name for p in (tmp_path / "onnx").iterdir()) == ["labels.json", "model.onnx"], "one file, no .data"
    np.save(tmp_path / "x.npy", queries.numpy().astype(np.float32) / 255)
    # A fresh interpreter in which MetaStudio cannot even be imported.
    script = textwrap.dedent(f"""
        import json, sys
        sys.modules["metastudio"] = sys.modules["metastudio_builtins"] = None
        import numpy as np, torch, onnxruntime
        x = np.load({str(tmp_path / "x.npy")!r})
        ts = torch.jit.load({str(written["torchscript"][0])!r})(torch.from_numpy(x)).detach().numpy()
        session = onnxruntime.InferenceSession({str(written["onnx"][0])!r}, providers=["CPUExecutionProvider"])
        ox = session.run(["probabilities"], {{"images": x}})[0]
        one = session.run(["probabilities"], {{"images": x[:1]}})[0]
        print(json.dumps({{"torchscript": ts.tolist(), "onnx": ox.tolist(), "onnx1": one.tolist()}}))
    """)
    run = subprocess.run([sys.executable, "-W", "ignore", "-c", script], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout.strip().splitlines()[-1])
    for fmt in EXPORT_FORMATS:
        got = np.array(out[fmt])
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, atol=1e-4)
        assert (got.argmax(1) == expected.argmax(1)).all()
    np.testing.assert_allclose(np.array(out["onnx1"]), expected[:1], atol=1e-4)

    labels = json.loads(written["onnx"][1].read_text(encoding="utf-8"))
    assert labels["class_names"] == list(NAMES)
    assert labels["input"] == {
        "name": "images", "channels": 1, "height": 28, "width": 28, "color": "grayscale (L)", "dtype": "float32",
        "range": [0, 1], "layout": "NCHW", "resize": "stretch", "resize_description": export.RESIZE_HELP["stretch"],
    }
    assert labels["output"]["name"] == "probabilities" and labels["output"]["shape"] == ["batch", 3]
    assert (labels["export_format"], labels["model_file"]) == ("onnx", "model.onnx")
    assert (labels["algorithm"], labels["backbone"]) == ("protonet", "conv4")
    assert labels["metastudio_version"] and "dynamo" in labels["exporter"]
    assert "onnxruntime.InferenceSession(\"model.onnx\")" in labels["usage"]
    ts_labels = json.loads(written["torchscript"][1].read_text(encoding="utf-8"))
    assert ts_labels["model_file"] == "model.pt" and "torch.jit.load(\"model.pt\")" in ts_labels["usage"]


def test_usage_lines_preprocess_like_metastudio(host, tmp_path, monkeypatch):
    algo = tiny_protonet(host)
    support, _ = tiny_support()
    learner = algo.adapt(support)
    model_file, _ = export_learner(learner, algo, tmp_path / "export" / "classifier.pt")
    assert model_file.name == "classifier.pt"
    labels = json.loads((tmp_path / "export" / "labels.json").read_text(encoding="utf-8"))
    image = tmp_path / "query.png"
    Image.fromarray(class_pattern(1, 64, np.random.default_rng(0))).resize((70, 50)).save(image)
    x, probs = usage_probs(labels, image, model_file.parent, monkeypatch)
    ours = load_array(image, 28, channels=1, fit="stretch")
    assert x.shape == (1, 1, 28, 28)
    np.testing.assert_array_equal((x * 255).round().astype(np.uint8)[0], ours)
    expected = learner.predict_proba(torch.from_numpy(ours[None])).numpy()
    np.testing.assert_allclose(probs, expected, atol=1e-4)


# ------------------------------------------------------------------------------------------------
# The shipped photos model (frozen EfficientNet-Lite0, power-CL2N, center-crop)


@pytest.fixture(scope="module")
def photos():
    from metastudio.app.catalogue import resolve_model
    from metastudio.engine.checkpoint import load_model
    from metastudio.plugins import get_host

    try:
        return load_model(resolve_model("photos"), get_host(), "cpu").algorithm
    except (MetaStudioError, ImportError, OSError) as e:
        pytest.skip(f"the shipped photos model cannot be loaded offline here: {e}")


@pytest.mark.slow
def test_photos_model_exports_match_predict_proba(photos, tmp_path, monkeypatch):
    assert photos.fit == "center-crop" and photos.image_size == 224
    rng = np.random.default_rng(5)
    names = ("red-mug", "green-leaf", "blue-part")
    support = np.stack([to_array(Image.fromarray(class_pattern(60 + c, 64, rng)).resize((300, 250)), 224,
                                 fit="center-crop") for c in range(3) for _ in range(2)])
    learner = photos.adapt(SupportSet(torch.from_numpy(support), torch.arange(3).repeat_interleave(2), names))
    images = []
    for c in range(3):
        images.append(tmp_path / f"query{c}.png")
        Image.fromarray(class_pattern(60 + c, 64, rng)).resize((260, 300)).save(images[-1])
    ours = np.stack([load_array(p, 224, fit="center-crop") for p in images])
    expected = learner.predict_proba(torch.from_numpy(ours)).numpy()
    assert expected.argmax(1).tolist() == [0, 1, 2]
    for fmt in EXPORT_FORMATS:
        model_file, labels_file = export_learner(learner, photos, tmp_path / "out", fmt)
        labels = json.loads(labels_file.read_text(encoding="utf-8"))
        assert labels["input"]["resize"] == "center-crop" and labels["input"]["channels"] == 3
        assert labels["backbone"] == "efficientnet-lite0" and labels["class_names"] == list(names)
        # The way a person would: PIL and NumPy by labels.json's usage, for one image...
        x, probs = usage_probs(labels, images[2], model_file.parent, monkeypatch)
        np.testing.assert_array_equal((x * 255).round().astype(np.uint8)[0], ours[2])
        np.testing.assert_allclose(probs[0], expected[2], atol=1e-4)
        # ... and all at once (a batch of another size than the one exported with).
        got = run_model(fmt, model_file, ours.astype(np.float32) / 255)
        np.testing.assert_allclose(got, expected, atol=1e-4)
        assert (got.argmax(1) == expected.argmax(1)).all()
        assert model_file.stat().st_size > 10_000_000  # the Lite0 weights are in the one file


def test_onnx_falls_back_to_the_legacy_exporter_and_reports_the_main_error(host, tmp_path, monkeypatch):
    algo = tiny_protonet(host, distance="cosine")
    support, queries = tiny_support()
    learner = algo.adapt(support)
    real = torch.onnx.export
    legacy_works = True

    def dynamo_fails(*args, dynamo=True, **kwargs):
        if dynamo or not legacy_works:
            raise RuntimeError("cannot capture this model" if dynamo else "legacy failed too")
        return real(*args, dynamo=False, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", dynamo_fails)
    model_file, labels_file = export_learner(learner, algo, tmp_path, "onnx")
    assert "legacy" in json.loads(labels_file.read_text(encoding="utf-8"))["exporter"]
    got = run_model("onnx", model_file, queries.numpy().astype(np.float32) / 255)
    np.testing.assert_allclose(got, learner.predict_proba(queries).numpy(), atol=1e-4)
    legacy_works = False
    with pytest.raises(MetaStudioError, match="could not be exported as ONNX: RuntimeError: cannot capture this model"):
        export_learner(learner, algo, tmp_path / "other.onnx")
    assert not (tmp_path / "other.onnx").exists()


# ------------------------------------------------------------------------------------------------
# Errors and atomic writes


class NoExport(Learner):
    def predict_proba(self, images):
        return torch.full((len(images), 2), 0.5)


class BakedBatch(Learner):
    """A learner whose batch size becomes a constant when traced."""

    def forward(self, images):
        return torch.zeros(int(images.shape[0]), 2)


class OlderContract(Learner):
    """A learner written before learners were modules: its own predict_proba and as_module."""

    def predict_proba(self, images):
        return torch.full((len(images), 2), 0.5)

    def as_module(self):
        class Halves(torch.nn.Module):
            def forward(self, x):
                return x.new_full((1, 2), 0.5).expand(x.shape[0], 2)

        return Halves()


def test_a_learner_without_forward_gives_a_clear_error(host, tmp_path):
    algo = tiny_protonet(host)
    with pytest.raises(MetaStudioError, match=r"cannot be exported: its learner does not implement Learner\.forward"):
        export_learner(NoExport(["a", "b"]), algo, tmp_path, "onnx")
    assert list(tmp_path.iterdir()) == []


def test_a_baked_in_batch_size_is_caught_and_nothing_written(host, tmp_path):
    with pytest.raises(MetaStudioError, match="shape"):
        export_learner(BakedBatch(["a", "b"]), tiny_protonet(host), tmp_path, "torchscript")
    assert list(tmp_path.iterdir()) == []


def test_a_learner_of_the_older_contract_still_exports_through_its_as_module(host, tmp_path):
    model_file, _ = export_learner(OlderContract(["a", "b"]), tiny_protonet(host), tmp_path, "torchscript")
    with torch.no_grad():
        assert torch.equal(torch.jit.load(str(model_file))(torch.rand(3, 1, 28, 28)), torch.full((3, 2), 0.5))


def test_formats_and_paths(host, tmp_path):
    algo = tiny_protonet(host)
    learner = algo.adapt(tiny_support()[0])
    with pytest.raises(MetaStudioError, match="unknown export format 'tflite'"):
        export_learner(learner, algo, tmp_path, "tflite")
    with pytest.raises(MetaStudioError, match="cannot tell the export format"):
        export_learner(learner, algo, tmp_path / "model.bin")
    assert export_learner(learner, algo, tmp_path / "m.pt")[0] == tmp_path / "m.pt"
    assert export_learner(learner, algo, tmp_path, "TorchScript")[0] == tmp_path / "model.pt"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.json", "m.pt", "model.pt"]


def test_a_full_disk_leaves_the_previous_export_and_no_debris(host, tmp_path, monkeypatch):
    algo = tiny_protonet(host)
    learner = algo.adapt(tiny_support()[0])
    model, labels = export_learner(learner, algo, tmp_path, "torchscript")
    before = {p.name: p.read_bytes() for p in (model, labels)}

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch.jit, "save", full)
    with pytest.raises(CheckpointError, match="No space left on device"):
        export_learner(learner, algo, tmp_path, "torchscript")
    monkeypatch.undo()
    monkeypatch.setattr(export, "_write_json", full)  # the model is written, labels.json is not
    with pytest.raises(CheckpointError, match="No space left on device"):
        export_learner(learner, algo, tmp_path, "torchscript")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.json", "model.pt"], "no staging folders left"
    assert {p.name: p.read_bytes() for p in (model, labels)} == before


# ------------------------------------------------------------------------------------------------
# Predictions CSV


def test_predictions_csv_round_trip(tmp_path):
    rows = [("a/one.png", [0.1, 0.7, 0.2]), ("b, two.jpg", torch.tensor([0.5, 0.25, 0.25])), ("ü.png", (0.2, 0.2, 0.6))]
    path = write_predictions_csv(tmp_path / "out" / "p.csv", rows, NAMES)
    with path.open(encoding="utf-8", newline="") as fh:
        table = list(csv.reader(fh))
    assert table[0] == ["file", "predicted", *NAMES]
    assert table[1] == ["a/one.png", NAMES[1], "0.100000", "0.700000", "0.200000"]
    assert table[2][:2] == ["b, two.jpg", NAMES[0]] and table[3][:2] == ["ü.png", NAMES[2]]
    assert [float(v) for v in table[2][2:]] == [0.5, 0.25, 0.25]
    with pytest.raises(MetaStudioError, match="2 probabilities but there are 3 classes"):
        write_predictions_csv(tmp_path / "bad.csv", [("x.png", [0.5, 0.5])], NAMES)
    assert not (tmp_path / "bad.csv").exists()


def test_predictions_csv_full_disk_leaves_nothing(tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(csv, "writer", full)
    with pytest.raises(CheckpointError, match="No space left on device"):
        write_predictions_csv(tmp_path / "p.csv", [("x.png", [1.0, 0.0, 0.0])], NAMES)
    assert list(tmp_path.iterdir()) == []
