"""The form built from declared hyperparameters (the Model box and the Meta-train tab use it): an
editor that fits each type, validation, and a 1-2-5 grid for log-scale numbers."""

from __future__ import annotations

import pytest
from PySide6.QtWidgets import QCheckBox, QComboBox, QLineEdit, QSpinBox

from metastudio.algorithms.hyperparameters import TRAINING_HYPERPARAMETERS, HyperParameter
from metastudio.gui.forms import HyperParameterForm, NumberSpinBox


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
