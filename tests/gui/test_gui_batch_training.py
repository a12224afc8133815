"""The Meta-train tab with an algorithm that trains on labelled batches (SimpleShot): the form
shows its own fields instead of the practice rounds, and the plot keeps its batch numbers apart
from episode ones."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt

from metastudio.engine.checkpoint import read_metadata

pytestmark = pytest.mark.usefixtures("one_thread")


def choose(combo, data) -> None:
    combo.setCurrentIndex(combo.findData(data))


def test_choosing_simpleshot_shows_batch_fields_and_training_plots_batch_curves(qtbot, panel, folder_data):
    form = panel.form
    choose(form.algorithm_combo, "simpleshot")
    assert form.batch_group.isVisible() and not form.episode_group.isVisible()
    assert form.spins["batch_steps"].value() == 2000  # a usable number, not the field's minimum
    choose(form.algorithm_combo, "protonet")
    assert not form.batch_group.isVisible() and form.episode_group.isVisible()
    assert form.plan().batch_steps == 0  # hidden fields are not the method's
    choose(form.algorithm_combo, "simpleshot")
    choose(form.dataset_combo, "folder")
    form.root_edit.setText(str(folder_data))
    for key, value in {"batch_steps": 12, "batch_size": 8, "val_every": 6, "val_episodes": 3, "val_ways": 3,
                       "val_queries": 2}.items():
        form.spins[key].setValue(value)
    plan = form.plan()
    assert (plan.algorithm, plan.batch_steps, plan.batch_size) == ("simpleshot", 12, 8)
    with qtbot.waitSignal(panel.model_trained, timeout=60000) as trained:
        qtbot.mouseClick(panel.start_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not panel.is_running(), timeout=10000)
    path, title = trained.args
    assert "way" not in title, title  # no practice rounds to describe
    assert panel.plot.series_length("batch_loss") >= 2 and panel.plot.series_length("loss") == 0
    assert panel.plot.series_length("val_acc") == 2
    # The legend lists the curves of this run only: batch ones, no (empty) episode ones.
    legend = [label.text for _, label in panel.plot.legend.items]
    assert legend == ["validation accuracy", "batch loss", "batch accuracy (all training classes)"], legend
    assert panel.plot.series_shown("batch_loss") and not panel.plot.series_shown("loss")
    assert "batches/s" in panel.progress.progress_bar.format() or panel.last_result()["status"] == "completed"
    assert read_metadata(path)["dataset"]["batch_steps"] == 12
