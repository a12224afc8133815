"""Every built-in algorithm in the app: listed in the picker with its hyperparameter form, adapts
to a person's classes and predicts, and a project using it saves and reopens with identical
predictions. Models are freshly initialised Conv-4s (the app does not care how well they learned)."""

from __future__ import annotations

import pytest

from conftest import BUILTIN_ALGORITHMS
from gui_helpers import WAIT_MS, populate, wait_predictions

ALGORITHMS = list(BUILTIN_ALGORITHMS)


@pytest.mark.parametrize("name", ALGORITHMS)
def test_each_algorithm_adapts_predicts_and_survives_save_and_open(name, make_window, qtbot, images, tmp_path):
    import torch

    from metastudio.engine.checkpoint import save_model
    from metastudio.plugins import get_host

    host = get_host()
    cls = host.algorithm(name)
    torch.manual_seed(0)
    algorithm = cls(host.backbone("conv4").build(1, 28), backbone_name="conv4", image_size=28, channels=1).eval()
    model = tmp_path / f"{name}.safetensors"
    save_model(algorithm, model)

    w = make_window()
    qtbot.waitUntil(lambda: w.catalog is not None, timeout=WAIT_MS)
    combo = w.model_box.algorithm_combo
    assert combo.findData(name) >= 0, f"{name} is not in the algorithm picker"
    w.use_model_file(str(model))
    populate(qtbot, w, images)
    before = wait_predictions(qtbot, w)
    assert before["status"] == "ok", before
    assert w.model_info["algorithm"] == name
    assert combo.currentData() == name
    # For a trained model the form leaves out what only meta-training uses and greys out what
    # the weights depend on.
    form = w.model_box.hp_form
    shown = {h.name: h.role for h in cls.hyperparameters if h.role != "training"}
    if shown:
        assert form is not None and set(form.values()) == set(shown)
        assert {n: form.editor(n).isEnabled() for n in shown} == {n: r == "adaptation" for n, r in shown.items()}
    for probs in before["probabilities"].values():
        assert len(probs) == 3 and sum(probs) == pytest.approx(1, abs=1e-4)
    if cls.reports_adaptation_loss:  # adaptation takes steps: its loss is plotted step by step
        steps = algorithm.hparams["adapt_steps"]
        assert len(before["adapt_losses"]) == steps
        assert w.adapt_plot.isVisible() and w.adapt_plot.series_length("adapt_loss") == steps
    else:
        assert not w.adapt_plot.isVisible()

    path = tmp_path / f"{name}.metastudio"
    assert w.documents.save_to(path)
    w.close()
    w2 = make_window()
    assert w2.documents.open_project(path)
    after = wait_predictions(qtbot, w2)
    assert after["class_names"] == before["class_names"]
    for key, probs in before["probabilities"].items():
        assert after["probabilities"][key] == pytest.approx(probs, abs=1e-6)
