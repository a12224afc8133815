"""The Meta-train tab's panel (pytest-qt, offscreen): live steps, pause/resume/cancel, a full run
ending in a loadable model, broken plugins, dataset errors, the form and its presets. Every test
leaves no QThread running (the panel fixture joins it)."""

from __future__ import annotations

import re
import types

import numpy as np
import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QCheckBox, QComboBox, QLabel, QLineEdit, QWidget

from conftest import make_class_tree
from metastudio.app.runs import TrainingPlan
from metastudio.engine.checkpoint import load_model
from metastudio.gui.training import TrainingPanel
from metastudio.gui.training.form import select_data
from metastudio.gui.training.presets import DATASET_DEFAULTS, FIELD_TIPS, TRAINING_PRESETS
from metastudio.plugins import PluginHost, hookimpl

pytestmark = pytest.mark.usefixtures("one_thread")


PROGRESS_TEXT = re.compile(r"step \d+/\d+ · ETA (\d+:)?\d\d:\d\d · \d+\.\d episodes/s")


def tiny_plan(root, **changes) -> TrainingPlan:
    values = dict(algorithm="protonet", backbone="conv4", dataset="folder", root=str(root), ways=4, shots=1, queries=2,
                  episodes=40, val_every=20, val_episodes=4, val_ways=3, val_shots=1, val_queries=2, image_size=28,
                  device="cpu", log_every=1)
    values.update(changes)
    return TrainingPlan(**values)


def current_step(panel) -> int:
    d = panel.progress.latest_step
    return int(d["step"]) if d else 0


def test_start_pause_resume_cancel(qtbot, panel, folder_data):
    panel.set_plan(tiny_plan(folder_data, episodes=100_000, val_split=None))
    assert panel.start()
    thread = panel.training_thread()
    assert panel.is_running() and thread.isRunning() and not panel.start_button.isEnabled()
    qtbot.waitUntil(lambda: panel.steps_received() >= 3 and panel.plot.series_length("loss") >= 3, timeout=15000)
    qtbot.waitUntil(lambda: panel.progress.progress_bar.value() > 0, timeout=5000)
    assert PROGRESS_TEXT.fullmatch(panel.progress.progress_bar.text()), panel.progress.progress_bar.text()
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


def test_full_run_emits_a_loadable_model(qtbot, panel, folder_data, host):
    panel.set_plan(tiny_plan(folder_data))
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
    assert loaded.metadata["dataset"]["root"] == str(folder_data)
    assert not path.replace(".safetensors", ".resume.safetensors") in [str(p) for p in panel.output_dir.iterdir()]
    assert panel.plot.series_length("val_acc") == 2  # validations at steps 20 and 40
    assert panel.progress.progress_bar.value() == panel.progress.progress_bar.maximum() == 40
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


def test_shutdown_cancels_and_joins_the_thread(qtbot, panel, folder_data):
    panel.set_plan(tiny_plan(folder_data, episodes=100_000, val_split=None))
    panel.start()
    thread = panel.training_thread()
    qtbot.waitUntil(lambda: panel.steps_received() >= 1, timeout=15000)
    panel.shutdown()
    assert thread.isFinished() and not panel.is_running() and panel.start_button.isEnabled()
    qtbot.wait(50)  # signals still queued from the old worker are ignored
    assert panel.last_result() is None


def test_adaptation_progress_is_its_own_series(qtbot, panel):
    assert not panel.progress.adaptation_plot.isVisible()
    for step, loss in enumerate([2.0, 1.5, 1.0, 0.7], 1):
        panel.adaptation_progress(step, 4, loss)
    assert panel.progress.adaptation_plot.isVisible() and panel.progress.adaptation_plot.series_length("adapt_loss") == 4
    panel.adaptation_progress(1, 3, None)  # a new adaptation, without a loss
    assert panel.progress.adaptation_plot.series_length("adapt_loss") == 0
    panel.adaptation_progress(2, 3, 0.5)
    assert panel.progress.adaptation_plot.series_data("adapt_loss")[1].tolist() == [0.5]
    assert panel.plot.series_length("loss") == 0  # the training curves are not touched
    panel.set_device_text("NVIDIA H100 80GB HBM3")
    assert panel.device_label.text() == "Device: NVIDIA H100 80GB HBM3"


def test_plan_round_trip_and_dataset_defaults(qtbot, panel, folder_data):
    plan = tiny_plan(folder_data, seed=7, hparams={"lr": 0.005, "distance": "cosine"}, split="train", val_split="val")
    panel.set_plan(plan)
    back = panel.plan()
    assert back.hparams["lr"] == 0.005 and back.hparams["distance"] == "cosine"
    assert (back.ways, back.shots, back.queries, back.episodes, back.val_every) == (4, 1, 2, 40, 20)
    assert back.seed == 7 and back.image_size == 28 and back.root == str(folder_data) and back.dataset == "folder"
    assert TrainingPlan.from_dict(back.to_dict()) == back
    assert back.val_holdout == 0 and panel.form.spins["val_holdout"].value() == 0
    panel.set_plan(tiny_plan(folder_data, val_holdout=3))
    assert panel.form.spins["val_holdout"].value() == 3 and panel.form.spins["val_holdout"].accessibleName() == "Held-out classes"
    panel.form.spins["val_holdout"].setValue(2)
    assert panel.plan().val_holdout == 2

    panel.form.dataset_combo.setCurrentIndex(panel.form.dataset_combo.findData("omniglot"))
    omniglot = panel.plan()
    assert (omniglot.ways, omniglot.shots, omniglot.queries) == (60, 1, 5)
    assert omniglot.options == {"protocol": "vinyals"}
    panel.form.dataset_combo.setCurrentIndex(panel.form.dataset_combo.findData("folder"))
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
    model = p.form.algorithm_combo.model()
    rows = {model.item(i).text(): model.item(i) for i in range(model.rowCount())}
    broken = next(item for text, item in rows.items() if text.startswith("fast-maml"))
    assert not broken.isEnabled() and not broken.isSelectable() and not broken.icon().isNull()
    assert "CUDA extension 'fastmaml' is missing" in broken.toolTip() and "failed to load" in broken.text()
    good = rows["Prototypical Networks (protonet)"]
    assert good.isEnabled() and p.form.algorithm_combo.currentData() == "protonet"
    p.shutdown()


def test_choosing_an_algorithm_with_label_positions_keeps_the_ways_within_them(qtbot, panel):
    """Omniglot's defaults are 60-way episodes; MANN and Meta Networks tell at most 20 classes
    apart by default, so the ways drop to 20 (with a message), also when the dataset changes."""
    select_data(panel.form.dataset_combo, "omniglot")
    select_data(panel.form.algorithm_combo, "protonet")
    panel.form.apply_dataset_defaults("omniglot")
    assert panel.form.spins["ways"].value() == 60
    with qtbot.waitSignal(panel.message) as blocker:
        select_data(panel.form.algorithm_combo, "mann")
    assert panel.form.spins["ways"].value() == 20 and panel.form.spins["val_ways"].value() == 5
    assert "at most 20 classes" in blocker.args[0]
    panel.form.apply_dataset_defaults("omniglot")
    assert panel.form.spins["ways"].value() == 20
    select_data(panel.form.algorithm_combo, "protonet")  # no limit: nothing changes back or forth
    assert panel.form.spins["ways"].value() == 20


def test_the_ways_limit_follows_the_max_ways_typed_in_the_form(qtbot, panel):
    """A person who raised Meta Networks' max ways keeps that many ways when the dataset's
    defaults are applied again; a lower max ways lowers them."""
    select_data(panel.form.dataset_combo, "omniglot")
    select_data(panel.form.algorithm_combo, "metanet")
    panel.form.hparam_form.set_values({"max_ways": 60})
    panel.form.apply_dataset_defaults("omniglot")
    assert panel.form.spins["ways"].value() == 60
    panel.form.hparam_form.set_values({"max_ways": 30})
    with qtbot.waitSignal(panel.message) as blocker:
        panel.form.apply_dataset_defaults("omniglot")
    assert panel.form.spins["ways"].value() == 30 and "at most 30 classes" in blocker.args[0]


def test_a_new_panel_starts_on_a_laptop_sized_preset_and_hides_the_advanced_fields(qtbot, panel):
    assert panel.form.preset_combo.currentText() == "Handwriting (Omniglot)"
    assert [panel.form.preset_combo.itemText(i) for i in range(panel.form.preset_combo.count())] == [
        "Handwriting (Omniglot)", "Photos", "Custom"]
    assert "handwritten" in panel.form.preset_note.text() and panel.form.preset_note.isVisible()
    plan = panel.plan()
    assert (plan.algorithm, plan.backbone, plan.dataset, plan.freeze_backbone) == ("protonet", "conv4", "omniglot", False)
    assert (plan.ways, plan.shots, plan.queries) == (60, 1, 5)  # the README's recipe...
    assert plan.episodes <= 1000 < DATASET_DEFAULTS["omniglot"]["episodes"]  # ...with fewer episodes
    assert plan.episodes == TRAINING_PRESETS["handwriting"]["plan"]["episodes"]
    # The first screen: preset, what to train, the practice rounds; the rest behind Advanced.
    for widget in (panel.form.preset_combo, panel.form.algorithm_combo, panel.form.spins["ways"], panel.form.spins["episodes"], panel.start_button):
        assert widget.isVisibleTo(panel), widget.accessibleName()
    for widget in (panel.form.spins["val_every"], panel.form.spins["val_ways"], panel.form.spins["val_holdout"], panel.form.hparam_form):
        assert not widget.isVisibleTo(panel), widget.accessibleName()
    qtbot.mouseClick(panel.form.advanced_toggle, Qt.MouseButton.LeftButton)
    assert panel.form.advanced_toggle.isChecked()
    assert panel.form.spins["val_every"].isVisibleTo(panel) and panel.form.hparam_form.editor("lr").isVisibleTo(panel)
    # the form column widens to what is shown now: nothing is cut off at its right edge
    qtbot.waitUntil(lambda: panel.form.width() >= panel.form.minimumSizeHint().width(), timeout=2000)
    qtbot.mouseClick(panel.form.advanced_toggle, Qt.MouseButton.LeftButton)
    assert not panel.form.spins["val_every"].isVisibleTo(panel)
    assert panel.plan().val_every == TRAINING_PRESETS["handwriting"]["plan"]["val_every"]  # hidden, still used


def test_choosing_a_preset_fills_the_plan_and_editing_a_field_makes_it_custom(qtbot, panel, folder_data):
    combo = panel.form.preset_combo
    combo.setCurrentIndex(combo.findText("Photos"))
    photos = panel.plan()
    assert (photos.algorithm, photos.backbone, photos.dataset) == ("matchingnet", "efficientnet-lite0", "folder")
    assert photos.freeze_backbone and panel.form.freeze_check.isChecked()
    assert photos.hparams["feature_transform"] == "power-cl2n" and photos.fit == "center-crop"
    assert (photos.ways, photos.shots, photos.queries, photos.episodes) == (3, 1, 2, 200)
    assert photos.root is None and "required" in panel.form.root_edit.placeholderText()
    assert "sub-folder" in panel.form.preset_note.text()
    panel.form.root_edit.setText(str(folder_data))  # where the pictures are: part of no preset
    assert combo.currentText() == "Photos"

    panel.form.spins["shots"].setFocus()
    qtbot.keyClick(panel.form.spins["shots"], Qt.Key.Key_Up)  # a person raises the shots
    assert panel.plan().shots == 2
    assert combo.currentText() == "Custom" and panel.form.preset_note.text() == "Your own settings."
    assert panel.plan().root == str(folder_data), "editing a field keeps the rest of the form"

    combo.setCurrentIndex(combo.findText("Photos"))  # back to the preset: its values again
    assert panel.plan().shots == 1 and panel.plan().root == str(folder_data)  # same dataset: the location stays
    panel.form.advanced_toggle.click()
    temperature = panel.form.hparam_form.editor("temperature")
    temperature.setValue(20.0)  # a hyperparameter is a field too
    assert combo.currentText() == "Custom"

    combo.setCurrentIndex(combo.findText("Handwriting (Omniglot)"))
    hand = panel.plan()
    assert (hand.algorithm, hand.dataset, hand.ways, hand.fit, hand.freeze_backbone) == (
        "protonet", "omniglot", 60, "stretch", False)
    assert hand.root is None and "feature_transform" in hand.hparams and hand.hparams["feature_transform"] == "none"
    panel.form.dataset_combo.setCurrentIndex(panel.form.dataset_combo.findData("folder"))
    assert combo.currentText() == "Custom"


def test_the_preset_picker_recognises_a_restored_plan(qtbot, panel, folder_data):
    panel.set_plan(tiny_plan(folder_data))
    assert panel.form.preset_combo.currentText() == "Custom"
    values = TRAINING_PRESETS["photos"]["plan"]
    panel.set_plan(TrainingPlan(**{**values, "root": str(folder_data), "seed": 3}))  # a project's saved plan
    assert panel.form.preset_combo.currentText() == "Photos"
    assert panel.plan().seed == 3  # fields without a widget come back unchanged
    panel.set_plan(TrainingPlan(**{**values, "hparams": {"feature_transform": "power-cl2n", "lr": 0.01}}))
    assert panel.form.preset_combo.currentText() == "Custom"  # one setting differs


def test_a_preset_whose_plugins_are_missing_is_greyed_out(qtbot, tmp_path):
    host = PluginHost(disabled=("matchingnet",)).load_entry_points()
    assert "matchingnet" not in host.algorithms
    p = TrainingPanel(host=host, output_dir=tmp_path)
    qtbot.addWidget(p)
    model = p.form.preset_combo.model()
    photos = model.item(p.form.preset_combo.findText("Photos"))
    assert not photos.isEnabled() and "Not available" in photos.toolTip() and "matchingnet" in photos.toolTip()
    assert model.item(p.form.preset_combo.findText("Handwriting (Omniglot)")).isEnabled()
    assert p.form.preset_combo.currentText() == "Handwriting (Omniglot)"
    p.shutdown()


def _input_widgets(panel) -> list:
    from PySide6.QtWidgets import QAbstractButton, QAbstractSpinBox

    found = [w for kind in (QComboBox, QAbstractSpinBox, QCheckBox, QLineEdit, QAbstractButton)
             for w in panel.form.findChildren(kind)]
    found += [panel.start_button, panel.pause_button, panel.cancel_button]
    # A spin box's own text field is part of the spin box (its tooltip is the spin box's).
    return [w for w in found if not (isinstance(w, QLineEdit) and isinstance(w.parent(), QAbstractSpinBox))]


@pytest.mark.parametrize("preset", ["Handwriting (Omniglot)", "Photos"])
def test_every_field_explains_itself_in_one_plain_line(qtbot, panel, preset):
    panel.form.preset_combo.setCurrentIndex(panel.form.preset_combo.findText(preset))
    widgets = _input_widgets(panel)
    assert len(widgets) > 20  # the form, its options and settings, the Advanced button, the run buttons
    for w in widgets:
        tip = w.toolTip()
        assert tip.strip() and "\n" not in tip, f"{type(w).__name__} {w.accessibleName()!r} has no one-line tooltip"
    assert panel.form.spins["ways"].toolTip() == "How many classes each practice round mixes."
    assert panel.form.spins["ways"].toolTip() == FIELD_TIPS["ways"]
    # the labels beside the fields say the same
    labels = {label.buddy(): label for label in panel.form.findChildren(QLabel) if label.buddy() is not None}
    assert labels[panel.form.spins["shots"]].toolTip() == panel.form.spins["shots"].toolTip()
    assert labels[panel.form.spins["val_holdout"]].toolTip().startswith("Test on this many classes")
    # an algorithm's settings explain themselves with their declared help
    cls = panel.host.algorithms[panel.plan().algorithm]
    for h in cls.hyperparameters:
        assert panel.form.hparam_form.editor(h.name).toolTip().startswith(h.help)


def test_the_training_form_offers_freezing_only_to_an_algorithm_that_supports_it(host, qtbot, tmp_path):
    """An algorithm declaring supports_frozen_backbone = False gets no freeze box, and says why."""
    from helpers import define_algorithm, register_algorithm

    register_algorithm(host, define_algorithm("whole-net", supports_frozen_backbone=False))
    panel = TrainingPanel(host=host, output_dir=tmp_path)
    qtbot.addWidget(panel)
    form = panel.form
    assert select_data(form.backbone_combo, "efficientnet-lite0")
    assert select_data(form.algorithm_combo, "protonet")
    assert form.freeze_check.isEnabled()
    form.freeze_check.setChecked(True)
    assert select_data(form.algorithm_combo, "whole-net")
    assert not form.freeze_check.isEnabled() and not form.freeze_check.isChecked()
    assert "cannot keep a ready-made one as it is" in form.freeze_check.toolTip()
    assert not form.plan().freeze_backbone
    assert select_data(form.algorithm_combo, "protonet")
    assert form.freeze_check.isEnabled()
    panel.shutdown()
