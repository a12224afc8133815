"""The meta-training panel (pytest-qt, offscreen): live steps, pause/resume/cancel, a full run
ending in a loadable model, broken plugins, dataset errors, the hyperparameter form and the
live plot. Every test leaves no QThread running (the panel fixture joins it)."""

from __future__ import annotations

import re
import types

import numpy as np
import pyqtgraph as pg
import pytest
import torch
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QCheckBox, QComboBox, QLabel, QLineEdit, QSpinBox, QWidget

from metastudio.algorithms.hyperparameters import TRAINING_HYPERPARAMETERS, HyperParameter
from metastudio.engine.checkpoint import load_model
from metastudio.app.runs import TrainingPlan
from metastudio.gui.plots import LivePlot
from metastudio.gui.training import DATASET_DEFAULTS, HyperParameterForm, NumberSpinBox, TrainingPanel
from metastudio.plugins import PluginHost, hookimpl

from conftest import make_class_tree

PROGRESS_TEXT = re.compile(r"step \d+/\d+ · ETA (\d+:)?\d\d:\d\d · \d+\.\d episodes/s")


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """8 training classes and 5 validation classes of 6 small images each."""
    root = tmp_path_factory.mktemp("gui-data")
    make_class_tree(root / "train", classes=8, per_class=6, size=28, seed=1)
    make_class_tree(root / "val", classes=5, per_class=6, size=28, seed=2)
    return root


@pytest.fixture
def panel(qtbot, host, tmp_path):
    p = TrainingPanel(host=host, output_dir=tmp_path / "models")
    qtbot.addWidget(p)
    p.resize(1100, 700)
    p.show()
    yield p
    p.shutdown()
    assert not p.is_running()


def tiny_plan(root, **changes) -> TrainingPlan:
    values = dict(algorithm="protonet", backbone="conv4", dataset="folder", root=str(root), ways=4, shots=1, queries=2,
                  episodes=40, val_every=20, val_episodes=4, val_ways=3, val_shots=1, val_queries=2, image_size=28,
                  device="cpu", log_every=1)
    values.update(changes)
    return TrainingPlan(**values)


def current_step(panel) -> int:
    d = panel._latest_step
    return int(d["step"]) if d else 0


# ------------------------------------------------------------------------------------------------
# running


def test_start_pause_resume_cancel(qtbot, panel, data):
    panel.set_plan(tiny_plan(data, episodes=100_000, val_split=None))
    assert panel.start()
    thread = panel.training_thread()
    assert panel.is_running() and thread.isRunning() and not panel.start_button.isEnabled()
    qtbot.waitUntil(lambda: panel.steps_received() >= 3 and panel.plot.series_length("loss") >= 3, timeout=15000)
    qtbot.waitUntil(lambda: panel.progress_bar.value() > 0, timeout=5000)
    assert PROGRESS_TEXT.fullmatch(panel.progress_bar.text()), panel.progress_bar.text()
    xs, ys = panel.plot.series_data("loss")
    assert xs.dtype == np.float64 and np.all(np.diff(xs) > 0) and np.all(np.isfinite(ys))
    assert panel.plot.series_length("train_acc") == panel.plot.series_length("loss")

    panel.pause()
    assert panel.is_paused() and panel.pause_button.text() == "Resume"
    qtbot.wait(300)  # the step in flight ends and its signal arrives
    paused_at = current_step(panel)
    qtbot.wait(500)
    assert current_step(panel) == paused_at, "steps went on while paused"

    panel.toggle_pause()  # resume
    assert not panel.is_paused() and panel.pause_button.text() == "Pause"
    qtbot.waitUntil(lambda: current_step(panel) > paused_at + 2, timeout=10000)

    with qtbot.waitSignal(panel.model_trained, timeout=15000) as trained:
        panel.cancel()
    qtbot.waitUntil(lambda: not panel.is_running(), timeout=15000)
    assert thread.isFinished()
    result = panel.last_result()
    assert result["status"] == "cancelled" and 0 < result["steps_done"] < 100_000
    path, title = trained.args
    assert path == result["model_path"] and "stopped at step" in title
    assert "Cancelled after" in panel.status_text() and panel.start_button.isEnabled()


def test_full_run_emits_a_loadable_model(qtbot, panel, data, host):
    panel.set_plan(tiny_plan(data))
    messages = []
    panel.message.connect(messages.append)
    with qtbot.waitSignal(panel.model_trained, timeout=30000) as trained:
        assert panel.start()
    qtbot.waitUntil(lambda: not panel.is_running(), timeout=5000)
    path, title = trained.args
    assert path.endswith(".safetensors") and str(panel.output_dir) in path
    assert title.startswith("Prototypical Networks on folder (4-way 1-shot")
    loaded = load_model(path, host)
    assert loaded.algorithm.name == "protonet" and loaded.metadata["trained_steps"] in (20, 40)
    assert loaded.metadata["dataset"]["root"] == str(data)
    assert not path.replace(".safetensors", ".resume.safetensors") in [str(p) for p in panel.output_dir.iterdir()]
    assert panel.plot.series_length("val_acc") == 2  # validations at steps 20 and 40
    assert panel.progress_bar.value() == panel.progress_bar.maximum() == 40
    assert panel.last_result()["status"] == "completed" and panel.last_result()["best_accuracy"] is not None
    assert any("Finished 40 steps" in m for m in messages)


def test_dataset_error_reaches_the_error_signal(qtbot, panel, tmp_path):
    panel.set_plan(tiny_plan(tmp_path / "no-such-folder"))
    with qtbot.waitSignal(panel.error, timeout=15000) as failed:
        assert panel.start()
    qtbot.waitUntil(lambda: not panel.is_running(), timeout=5000)
    message, details = failed.args
    assert "does not exist" in message and "no-such-folder" in message
    assert "DatasetError" in details  # the traceback, for a details pane
    assert panel.status_text().startswith("Error:") and "does not exist" in panel.status_text()
    assert panel.start_button.isEnabled() and panel.last_result()["status"] == "failed"


def test_warnings_of_the_run_are_shown(qtbot, panel, tmp_path):
    flat = make_class_tree(tmp_path / "flat", classes=4, per_class=4, size=16)  # no val/ folder
    panel.set_plan(tiny_plan(flat, ways=3, episodes=4, val_every=2, image_size=16))
    messages = []
    panel.message.connect(messages.append)
    with qtbot.waitSignal(panel.model_trained, timeout=20000):
        panel.start()
    assert any("does not validate" in m for m in messages)


def test_shutdown_cancels_and_joins_the_thread(qtbot, panel, data):
    panel.set_plan(tiny_plan(data, episodes=100_000, val_split=None))
    panel.start()
    thread = panel.training_thread()
    qtbot.waitUntil(lambda: panel.steps_received() >= 1, timeout=15000)
    panel.shutdown()
    assert thread.isFinished() and not panel.is_running() and panel.start_button.isEnabled()
    qtbot.wait(50)  # signals still queued from the old worker are ignored
    assert panel.last_result() is None


# ------------------------------------------------------------------------------------------------
# the form


def test_plan_round_trip_and_dataset_defaults(qtbot, panel, data):
    plan = tiny_plan(data, seed=7, hparams={"lr": 0.005, "distance": "cosine"}, split="train", val_split="val")
    panel.set_plan(plan)
    back = panel.plan()
    assert back.hparams["lr"] == 0.005 and back.hparams["distance"] == "cosine"
    assert (back.ways, back.shots, back.queries, back.episodes, back.val_every) == (4, 1, 2, 40, 20)
    assert back.seed == 7 and back.image_size == 28 and back.root == str(data) and back.dataset == "folder"
    assert TrainingPlan.from_dict(back.to_dict()) == back
    assert back.val_holdout == 0 and panel.val_holdout_spin.value() == 0
    panel.set_plan(tiny_plan(data, val_holdout=3))
    assert panel.val_holdout_spin.value() == 3 and panel.val_holdout_spin.accessibleName() == "Held-out classes"
    panel.val_holdout_spin.setValue(2)
    assert panel.plan().val_holdout == 2

    panel.dataset_combo.setCurrentIndex(panel.dataset_combo.findData("omniglot"))
    omniglot = panel.plan()
    assert (omniglot.ways, omniglot.shots, omniglot.queries) == (60, 1, 5)
    assert omniglot.options == {"protocol": "vinyals"}
    panel.dataset_combo.setCurrentIndex(panel.dataset_combo.findData("folder"))
    folder = panel.plan()
    assert folder.ways == DATASET_DEFAULTS["folder"]["ways"] <= 5 and folder.options == {"channels": 3, "per_class": 0}

    panel.set_plan(TrainingPlan(algorithm="gone", hparams={"lr": 0.01, "unknown_knob": 1}))
    assert "algorithm 'gone' is not available" in panel.status_text()
    assert "unknown_knob" in panel.status_text()
    for name in ("Algorithm", "Backbone", "Dataset", "Start meta-training", "Pause meta-training",
                 "Cancel meta-training", "Meta-training progress"):
        assert any(w.accessibleName() == name for w in panel.findChildren(QWidget)), name
    assert panel.start_button.shortcut().toString() == "F5"


def test_a_broken_algorithm_plugin_is_listed_disabled(qtbot, tmp_path):
    host = PluginHost(safe_mode=True, disabled=()).load_entry_points()

    def metastudio_algorithms():
        raise RuntimeError("CUDA extension 'fastmaml' is missing")

    record = host.register_module(types.SimpleNamespace(metastudio_algorithms=hookimpl(metastudio_algorithms)),
                                  "fast-maml")
    assert record.status == "failed"
    p = TrainingPanel(host=host, output_dir=tmp_path)
    qtbot.addWidget(p)
    model = p.algorithm_combo.model()
    rows = {model.item(i).text(): model.item(i) for i in range(model.rowCount())}
    broken = next(item for text, item in rows.items() if text.startswith("fast-maml"))
    assert not broken.isEnabled() and not broken.isSelectable() and not broken.icon().isNull()
    assert "CUDA extension 'fastmaml' is missing" in broken.toolTip() and "failed to load" in broken.text()
    good = rows["Prototypical Networks (protonet)"]
    assert good.isEnabled() and p.algorithm_combo.currentData() == "protonet"
    p.shutdown()


def test_hyperparameter_form_round_trip_and_validation(qtbot):
    params = TRAINING_HYPERPARAMETERS + (
        HyperParameter("temperature", float, 10.0, "Softmax scale.", 0.01, 1000.0, log_scale=True),
        HyperParameter("steps", int, 5, "Inner steps.", 1, 100),
        HyperParameter("first_order", bool, False, "Drop second-order terms."),
        HyperParameter("distance", str, "euclidean", "Metric.", choices=("euclidean", "cosine")),
        HyperParameter("note", str, "", "Free text."),
        HyperParameter("ways_choice", int, 5, "Ways.", choices=(5, 20)),
    )
    form = HyperParameterForm(params)
    qtbot.addWidget(form)
    defaults = {h.name: h.default for h in params}
    assert form.values() == defaults
    assert isinstance(form.editor("lr"), NumberSpinBox) and form.editor("lr").log_scale
    assert isinstance(form.editor("steps"), QSpinBox) and form.editor("steps").maximum() == 100
    assert isinstance(form.editor("first_order"), QCheckBox)
    assert isinstance(form.editor("distance"), QComboBox) and isinstance(form.editor("ways_choice"), QComboBox)
    assert isinstance(form.editor("note"), QLineEdit)
    assert "Learning rate" in form.editor("lr").toolTip() and "Default: 0.001" in form.editor("lr").toolTip()
    assert form.editor("lr").accessibleName() == "lr" and form.editor("lr_step").accessibleName() == "lr step"

    changed = {"lr": 3e-4, "weight_decay": 0.0005, "lr_schedule": "cosine", "lr_step": 500, "temperature": 2.5,
               "steps": 10, "first_order": True, "distance": "cosine", "note": "hello", "ways_choice": 20}
    form.set_values(changed)
    assert form.values() == changed
    form.set_values({"steps": "7", "first_order": "no"})  # converted like the CLI's --hp values
    assert form.values()["steps"] == 7 and form.values()["first_order"] is False

    with pytest.raises(ValueError, match="lr must be at least"):
        form.set_values({"lr": -1.0, "steps": 3})
    assert form.values()["steps"] == 7, "nothing changes when a value is invalid"
    with pytest.raises(ValueError, match="no hyperparameter colour"):
        form.set_values({"colour": "blue"})
    with pytest.raises(ValueError, match="distance must be one of"):
        form.set_values({"distance": "manhattan"})

    lr = form.editor("lr")
    lr.setValue(0.001)
    lr.stepBy(1)
    assert lr.value() == pytest.approx(0.002)
    lr.stepBy(2)
    assert lr.value() == pytest.approx(0.01)
    lr.stepBy(-3)
    assert lr.value() == pytest.approx(0.001)
    lr.setValue(1.0)
    lr.stepBy(1)
    assert lr.value() == 1.0  # clamped to the maximum
    from PySide6.QtGui import QValidator

    assert lr.validate("1e-4", 0)[0] == QValidator.State.Acceptable
    assert lr.validate("1e-", 0)[0] == QValidator.State.Intermediate
    assert lr.validate("abc", 0)[0] == QValidator.State.Invalid
    assert lr.validate("5", 0)[0] == QValidator.State.Intermediate  # above the maximum of 1
    assert lr.textFromValue(1e-6) == "1e-06" and lr.textFromValue(0.0005) == "0.0005"

    form.reset()
    assert form.values() == defaults
    form.set_hyperparameters(())
    assert form.values() == {}


# ------------------------------------------------------------------------------------------------
# the live plot


def test_live_plot_keeps_one_item_per_series_and_redraws_throttled(qtbot):
    plot = LivePlot("curves", right_range=(0, 100), empty_text="nothing yet")
    qtbot.addWidget(plot)
    plot.show()
    plot.add_series("loss", "loss", "#d62728")
    plot.add_series("acc", "accuracy", "#1f77b4", axis="right")
    with pytest.raises(ValueError):
        plot.add_series("loss", "again", "r")
    with pytest.raises(ValueError):
        plot.add_series("x", "x", "r", axis="top")
    items = [i for i in plot.plot_item.items if isinstance(i, pg.PlotDataItem)]
    right_items = [i for i in plot._right_view.addedItems if isinstance(i, pg.PlotDataItem)]
    assert len(items) == 1 and len(right_items) == 1
    assert plot.accessibleName() == "curves" and plot.empty_text() == "nothing yet"

    before = plot.redraw_count
    for i in range(5000):
        plot.append("loss", i, 1.0 / (i + 1))
        plot.append("acc", i, i % 100)
    assert plot.redraw_count == before, "appending must not redraw"
    qtbot.waitUntil(lambda: plot.redraw_count == before + 1, timeout=2000)
    qtbot.wait(100)
    assert plot.redraw_count == before + 1, "no redraw without new data"
    assert plot.series_length("loss") == 5000
    xs, ys = plot.series_data("loss")
    assert xs.dtype == np.float64 and xs[-1] == 4999.0 and ys[0] == 1.0
    item = items[0]
    for it in items + right_items:
        assert it.opts["autoDownsample"] and it.opts["downsampleMethod"] == "peak" and it.opts["clipToView"]
    assert item.opts["autoDownsample"] and item.opts["downsampleMethod"] == "peak" and item.opts["clipToView"]
    assert len(item.xData) == 5000 and item.xData.dtype == np.float64
    assert "Latest values" in plot.accessibleDescription()

    plot.set_series("acc", [0, 1, 2], [10, 20, 30])
    assert plot.series_length("acc") == 3 and plot.last_value("acc") == 30.0
    plot.clear("loss")
    assert plot.series_length("loss") == 0 and plot.series_length("acc") == 3
    plot.clear()
    plot.flush()
    assert plot.series_length("acc") == 0 and len(item.xData or []) == 0
    assert plot.accessibleDescription() == "nothing yet"
    with pytest.raises(KeyError, match="no series 'nope'"):
        plot.append("nope", 0, 0)


def test_adaptation_progress_is_its_own_series(qtbot, panel):
    assert not panel.adaptation_plot.isVisible()
    for step, loss in enumerate([2.0, 1.5, 1.0, 0.7], 1):
        panel.adaptation_progress(step, 4, loss)
    assert panel.adaptation_plot.isVisible() and panel.adaptation_plot.series_length("adapt_loss") == 4
    panel.adaptation_progress(1, 3, None)  # a new adaptation, without a loss
    assert panel.adaptation_plot.series_length("adapt_loss") == 0
    panel.adaptation_progress(2, 3, 0.5)
    assert panel.adaptation_plot.series_data("adapt_loss")[1].tolist() == [0.5]
    assert panel.plot.series_length("loss") == 0  # the training curves are not touched
    panel.set_device_text("NVIDIA H100 80GB HBM3")
    assert panel.device_label.text() == "Device: NVIDIA H100 80GB HBM3"


def test_choosing_an_algorithm_with_label_positions_keeps_the_ways_within_them(qtbot, panel):
    """Omniglot's defaults are 60-way episodes; MANN and Meta Networks tell at most 20 classes
    apart by default, so the ways drop to 20 (with a message), also when the dataset changes."""
    panel._select(panel.dataset_combo, "omniglot")
    panel._select(panel.algorithm_combo, "protonet")
    panel.apply_dataset_defaults("omniglot")
    assert panel.ways_spin.value() == 60
    with qtbot.waitSignal(panel.message) as blocker:
        panel._select(panel.algorithm_combo, "mann")
    assert panel.ways_spin.value() == 20 and panel.val_ways_spin.value() == 5
    assert "at most 20 classes" in blocker.args[0]
    panel.apply_dataset_defaults("omniglot")
    assert panel.ways_spin.value() == 20
    panel._select(panel.algorithm_combo, "protonet")  # no limit: nothing changes back or forth
    assert panel.ways_spin.value() == 20


def test_the_ways_limit_follows_the_max_ways_typed_in_the_form(qtbot, panel):
    """A person who raised Meta Networks' max ways keeps that many ways when the dataset's
    defaults are applied again; a lower max ways lowers them."""
    panel._select(panel.dataset_combo, "omniglot")
    panel._select(panel.algorithm_combo, "metanet")
    panel.hparam_form.set_values({"max_ways": 60})
    panel.apply_dataset_defaults("omniglot")
    assert panel.ways_spin.value() == 60
    panel.hparam_form.set_values({"max_ways": 30})
    with qtbot.waitSignal(panel.message) as blocker:
        panel.apply_dataset_defaults("omniglot")
    assert panel.ways_spin.value() == 30 and "at most 30 classes" in blocker.args[0]


# ------------------------------------------------------------------------------------------------
# presets and plain explanations


def test_a_new_panel_starts_on_a_laptop_sized_preset_and_hides_the_advanced_fields(qtbot, panel):
    from metastudio.gui.training import TRAINING_PRESETS

    assert panel.preset_combo.currentText() == "Handwriting (Omniglot)"
    assert [panel.preset_combo.itemText(i) for i in range(panel.preset_combo.count())] == [
        "Handwriting (Omniglot)", "Photos", "Custom"]
    assert "handwritten" in panel.preset_note.text() and panel.preset_note.isVisible()
    plan = panel.plan()
    assert (plan.algorithm, plan.backbone, plan.dataset, plan.freeze_backbone) == ("protonet", "conv4", "omniglot", False)
    assert (plan.ways, plan.shots, plan.queries) == (60, 1, 5)  # the README's recipe...
    assert plan.episodes <= 1000 < DATASET_DEFAULTS["omniglot"]["episodes"]  # ...with fewer episodes
    assert plan.episodes == TRAINING_PRESETS["handwriting"]["plan"]["episodes"]
    # The first screen: preset, what to train, the practice rounds; the rest behind Advanced.
    for widget in (panel.preset_combo, panel.algorithm_combo, panel.ways_spin, panel.episodes_spin, panel.start_button):
        assert widget.isVisibleTo(panel), widget.accessibleName()
    for widget in (panel.val_every_spin, panel.val_ways_spin, panel.val_holdout_spin, panel.hparam_form):
        assert not widget.isVisibleTo(panel), widget.accessibleName()
    qtbot.mouseClick(panel.advanced_toggle, Qt.MouseButton.LeftButton)
    assert panel.advanced_toggle.isChecked()
    assert panel.val_every_spin.isVisibleTo(panel) and panel.hparam_form.editor("lr").isVisibleTo(panel)
    # the form column widens to what is shown now: nothing is cut off at its right edge
    qtbot.waitUntil(lambda: panel.form_widget.width() >= panel.form_widget.minimumSizeHint().width(), timeout=2000)
    qtbot.mouseClick(panel.advanced_toggle, Qt.MouseButton.LeftButton)
    assert not panel.val_every_spin.isVisibleTo(panel)
    assert panel.plan().val_every == TRAINING_PRESETS["handwriting"]["plan"]["val_every"]  # hidden, still used


def test_choosing_a_preset_fills_the_plan_and_editing_a_field_makes_it_custom(qtbot, panel, data):
    combo = panel.preset_combo
    combo.setCurrentIndex(combo.findText("Photos"))
    photos = panel.plan()
    assert (photos.algorithm, photos.backbone, photos.dataset) == ("matchingnet", "efficientnet-lite0", "folder")
    assert photos.freeze_backbone and panel.freeze_check.isChecked()
    assert photos.hparams["feature_transform"] == "power-cl2n" and photos.fit == "center-crop"
    assert (photos.ways, photos.shots, photos.queries, photos.episodes) == (3, 1, 2, 200)
    assert photos.root is None and "required" in panel.root_edit.placeholderText()
    assert "sub-folder" in panel.preset_note.text()
    panel.root_edit.setText(str(data))  # where the pictures are: part of no preset
    assert combo.currentText() == "Photos"

    panel.shots_spin.setFocus()
    qtbot.keyClick(panel.shots_spin, Qt.Key.Key_Up)  # a person raises the shots
    assert panel.plan().shots == 2
    assert combo.currentText() == "Custom" and panel.preset_note.text() == "Your own settings."
    assert panel.plan().root == str(data), "editing a field keeps the rest of the form"

    combo.setCurrentIndex(combo.findText("Photos"))  # back to the preset: its values again
    assert panel.plan().shots == 1 and panel.plan().root == str(data)  # same dataset: the location stays
    panel.advanced_toggle.click()
    temperature = panel.hparam_form.editor("temperature")
    temperature.setValue(20.0)  # a hyperparameter is a field too
    assert combo.currentText() == "Custom"

    combo.setCurrentIndex(combo.findText("Handwriting (Omniglot)"))
    hand = panel.plan()
    assert (hand.algorithm, hand.dataset, hand.ways, hand.fit, hand.freeze_backbone) == (
        "protonet", "omniglot", 60, "stretch", False)
    assert hand.root is None and "feature_transform" in hand.hparams and hand.hparams["feature_transform"] == "none"
    panel.dataset_combo.setCurrentIndex(panel.dataset_combo.findData("folder"))
    assert combo.currentText() == "Custom"


def test_the_preset_picker_recognises_a_restored_plan(qtbot, panel, data):
    from metastudio.gui.training import TRAINING_PRESETS

    panel.set_plan(tiny_plan(data))
    assert panel.preset_combo.currentText() == "Custom"
    values = TRAINING_PRESETS["photos"]["plan"]
    panel.set_plan(TrainingPlan(**{**values, "root": str(data), "seed": 3}))  # a project's saved plan
    assert panel.preset_combo.currentText() == "Photos"
    assert panel.plan().seed == 3  # fields without a widget come back unchanged
    panel.set_plan(TrainingPlan(**{**values, "hparams": {"feature_transform": "power-cl2n", "lr": 0.01}}))
    assert panel.preset_combo.currentText() == "Custom"  # one setting differs


def test_a_preset_whose_plugins_are_missing_is_greyed_out(qtbot, tmp_path):
    host = PluginHost(disabled=("matchingnet",)).load_entry_points()
    assert "matchingnet" not in host.algorithms
    p = TrainingPanel(host=host, output_dir=tmp_path)
    qtbot.addWidget(p)
    model = p.preset_combo.model()
    photos = model.item(p.preset_combo.findText("Photos"))
    assert not photos.isEnabled() and "Not available" in photos.toolTip() and "matchingnet" in photos.toolTip()
    assert model.item(p.preset_combo.findText("Handwriting (Omniglot)")).isEnabled()
    assert p.preset_combo.currentText() == "Handwriting (Omniglot)"
    p.shutdown()


def _input_widgets(panel) -> list:
    from PySide6.QtWidgets import QAbstractButton, QAbstractSpinBox

    found = [w for kind in (QComboBox, QAbstractSpinBox, QCheckBox, QLineEdit, QAbstractButton)
             for w in panel.form_widget.findChildren(kind)]
    found += [panel.start_button, panel.pause_button, panel.cancel_button]
    # A spin box's own text field is part of the spin box (its tooltip is the spin box's).
    return [w for w in found if not (isinstance(w, QLineEdit) and isinstance(w.parent(), QAbstractSpinBox))]


@pytest.mark.parametrize("preset", ["Handwriting (Omniglot)", "Photos"])
def test_every_field_explains_itself_in_one_plain_line(qtbot, panel, preset):
    from metastudio.gui.training import FIELD_TIPS

    panel.preset_combo.setCurrentIndex(panel.preset_combo.findText(preset))
    widgets = _input_widgets(panel)
    assert len(widgets) > 20  # the form, its options and settings, the Advanced button, the run buttons
    for w in widgets:
        tip = w.toolTip()
        assert tip.strip() and "\n" not in tip, f"{type(w).__name__} {w.accessibleName()!r} has no one-line tooltip"
    assert panel.ways_spin.toolTip() == "How many classes each practice round mixes."
    assert panel.ways_spin.toolTip() == FIELD_TIPS["ways"]
    # the labels beside the fields say the same
    labels = {label.buddy(): label for label in panel.form_widget.findChildren(QLabel) if label.buddy() is not None}
    assert labels[panel.shots_spin].toolTip() == panel.shots_spin.toolTip()
    assert labels[panel.val_holdout_spin].toolTip().startswith("Test on this many classes")
    # an algorithm's settings explain themselves with their declared help
    cls = panel.host.algorithms[panel.plan().algorithm]
    for h in cls.hyperparameters:
        assert panel.hparam_form.editor(h.name).toolTip().startswith(h.help)
