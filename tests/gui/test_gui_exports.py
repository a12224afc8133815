"""File > Export from the window: the predictions as CSV, and the adapted classifier as
TorchScript and ONNX files that predict the same as the window without MetaStudio."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from gui_helpers import WAIT_MS, populate, wait_predictions


def test_export_csv_and_standalone_model(make_window, qtbot, images, tmp_path):
    import torch

    w = make_window()
    populate(qtbot, w, images)
    result = wait_predictions(qtbot, w)
    project = w.controller.project

    out = tmp_path / "predictions.csv"
    assert w.exports.export_csv(str(out))
    rows = list(csv.reader(out.open(encoding="utf-8")))
    assert rows[0] == ["file", "predicted", *result["class_names"], "unsure"]
    assert len(rows) == 1 + len(project.queries)
    for row, item in zip(rows[1:], project.queries):
        probs = result["probabilities"][item.id]
        assert row[0] == item.source
        assert row[1] == result["class_names"][int(np.argmax(probs))]
        assert [float(x) for x in row[2:-1]] == pytest.approx(probs, abs=1e-5)
        assert row[-1] == (result["unsure"].get(item.id) or "")

    # TorchScript and ONNX: loaded with plain torch / onnxruntime, same predictions
    from metastudio.data.images import load_array

    arrays = np.stack([load_array(project.image_path(q), 28, channels=1, fit="stretch") for q in project.queries])
    batch = arrays.astype(np.float32) / 255.0
    expected = np.array([result["probabilities"][q.id] for q in project.queries])
    for fmt, name in (("torchscript", "model.pt"), ("onnx", "model.onnx")):
        target = tmp_path / fmt / name
        with qtbot.waitSignal(w.engine.exported, timeout=WAIT_MS) as blocker:
            assert w.exports.export_model(str(target), fmt)
        paths, error = blocker.args
        assert error == "" and Path(paths[0]) == target
        labels = json.loads((target.parent / "labels.json").read_text())
        assert labels["classes"] == result["class_names"] if "classes" in labels else labels["class_names"] == result["class_names"]
        if fmt == "torchscript":
            probs = torch.jit.load(str(target))(torch.from_numpy(batch)).detach().numpy()
        else:
            import onnxruntime as ort

            session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
            probs = session.run(None, {session.get_inputs()[0].name: batch})[0]
        assert probs == pytest.approx(expected, abs=1e-4)
        assert (probs.argmax(1) == expected.argmax(1)).all()
