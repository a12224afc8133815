"""Forms built from declared settings, shared by the Model box and the Meta-train tab.

* :class:`HyperParameterForm` builds a form from declared
  :class:`~metastudio.algorithms.base.HyperParameter` s (an algorithm's settings, a dataset's
  options): each row's editor fits the type, and the help is its tooltip.
* :class:`NumberSpinBox` is its float editor: compact numbers, scientific notation, and a
  1-2-5 grid for log-scale settings such as a learning rate.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtGui import QValidator
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QSpinBox,
    QWidget,
)

from metastudio.algorithms.hyperparameters import HyperParameter

INT_LIMIT = 2**31 - 1



def _compact(value: float) -> str:
    return f"{value:.6g}"


def _grid_125(value: float, up: bool) -> float:
    """The next value of the 1-2-5 grid (…, 0.001, 0.002, 0.005, 0.01, …) above or below ``value``."""
    e = math.floor(math.log10(value))
    grid = sorted(float(f"{m * 10.0 ** k:.3g}") for k in (e - 1, e, e + 1, e + 2) for m in (1, 2, 5))
    if up:
        return next(c for c in grid if c > value * (1 + 1e-9))
    return next(c for c in reversed(grid) if c < value * (1 - 1e-9))


_PARTIAL_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d*)?([eE][+-]?\d*)?")


class NumberSpinBox(QDoubleSpinBox):
    """A float spin box showing compact numbers (``0.001``, ``1e-06``) and accepting scientific
    notation. With ``log_scale`` the arrows walk a 1-2-5 grid (0.001 → 0.002 → 0.005 → 0.01)."""

    def __init__(self, log_scale: bool = False, parent: QWidget | None = None):
        super().__init__(parent)
        self.log_scale = log_scale
        self.setDecimals(12)
        self.setKeyboardTracking(False)

    def textFromValue(self, value: float) -> str:  # noqa: N802 - Qt override
        return _compact(value)

    def valueFromText(self, text: str) -> float:  # noqa: N802 - Qt override
        try:
            return float(text.strip().replace(",", "."))
        except ValueError:
            return self.value()

    def validate(self, text: str, pos: int):
        t = text.strip().replace(",", ".")
        try:
            value = float(t)
        except ValueError:
            state = QValidator.State.Intermediate if _PARTIAL_NUMBER.fullmatch(t) else QValidator.State.Invalid
            return state, text, pos
        if math.isfinite(value) and self.minimum() <= value <= self.maximum():
            return QValidator.State.Acceptable, text, pos
        return QValidator.State.Intermediate, text, pos

    def stepBy(self, steps: int) -> None:  # noqa: N802 - Qt override
        if not self.log_scale or self.value() <= 0:
            super().stepBy(steps)
            return
        value = self.value()
        for _ in range(abs(steps)):
            value = _grid_125(value, steps > 0)
        self.setValue(min(max(value, self.minimum()), self.maximum()))


class HyperParameterForm(QWidget):
    """A form for a list of :class:`HyperParameter` s: a check box for a bool, a combo box for
    choices, a spin box for an int or float (within its minimum and maximum; a log-scale float
    steps through 1, 2, 5, 10, …), a line edit for free text. Each parameter's help is its
    tooltip and its accessible description.

    ``values()`` gives ``{name: value}`` (validated, typed); ``set_values(mapping)`` sets them
    and raises ValueError for an unknown name or an invalid value, changing nothing then.
    ``set_read_only(names, reason)`` greys some rows out: they show a value that cannot be
    edited (still part of ``values()``), with ``reason`` in their tooltip.
    """

    changed = Signal()

    def __init__(self, hyperparameters: Sequence[HyperParameter] = (), parent: QWidget | None = None):
        super().__init__(parent)
        self._layout = QFormLayout(self)
        self._layout.setContentsMargins(0, 0, 0, 0)
        self._layout.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self._params: dict[str, HyperParameter] = {}
        self._editors: dict[str, QWidget] = {}
        self._labels: dict[str, QLabel] = {}
        self._read_only: dict[str, str] = {}
        self._empty = QLabel("No settings.")
        self._empty.setEnabled(False)
        self.setAccessibleName("Hyperparameters")
        self.set_hyperparameters(hyperparameters)

    # -- building --------------------------------------------------------------------------------
    def set_hyperparameters(self, hyperparameters: Sequence[HyperParameter]) -> None:
        """Rebuild the form for another list (values go back to the defaults)."""
        while self._layout.rowCount():
            self._layout.removeRow(0)
        self._empty = QLabel("No settings.")
        self._empty.setEnabled(False)
        self._params = {h.name: h for h in hyperparameters}
        self._editors = {}
        self._labels = {}
        self._read_only = {}
        for h in hyperparameters:
            editor = self._make_editor(h)
            label = QLabel(h.name.replace("_", " ") + ":")
            label.setBuddy(editor)
            tip = self._tooltip(h)
            label.setToolTip(tip)
            editor.setToolTip(tip)
            editor.setAccessibleName(h.name.replace("_", " "))
            editor.setAccessibleDescription(h.help)
            editor.setObjectName(f"hp_{h.name}")
            self._layout.addRow(label, editor)
            self._editors[h.name] = editor
            self._labels[h.name] = label
        if not hyperparameters:
            self._layout.addRow(self._empty)

    @staticmethod
    def _tooltip(h: HyperParameter) -> str:
        parts = [h.help]
        if h.choices is None and (h.minimum is not None or h.maximum is not None):
            lo = "−∞" if h.minimum is None else _compact(h.minimum)
            hi = "∞" if h.maximum is None else _compact(h.maximum)
            parts.append(f"Range {lo} to {hi}.")
        parts.append(f"Default: {h.default}.")
        return " ".join(parts)

    def _make_editor(self, h: HyperParameter) -> QWidget:
        if h.type is bool:
            w = QCheckBox()
            w.setChecked(bool(h.default))
            w.toggled.connect(self.changed)
            return w
        if h.choices is not None:
            w = QComboBox()
            for choice in h.choices:
                w.addItem(str(choice), choice)
            w.setCurrentIndex(list(h.choices).index(h.default))
            w.currentIndexChanged.connect(self.changed)
            return w
        if h.type is int:
            w = QSpinBox()
            lo = -INT_LIMIT if h.minimum is None else max(-INT_LIMIT, math.ceil(h.minimum))
            hi = INT_LIMIT if h.maximum is None else min(INT_LIMIT, math.floor(h.maximum))
            w.setRange(lo, hi)
            w.setValue(int(h.default))
            w.setKeyboardTracking(False)
            w.setAccelerated(True)
            w.valueChanged.connect(self.changed)
            return w
        if h.type is float:
            w = NumberSpinBox(log_scale=h.log_scale and (h.minimum or 0) > 0)
            lo = -1e12 if h.minimum is None else float(h.minimum)
            hi = 1e12 if h.maximum is None else float(h.maximum)
            w.setRange(lo, hi)
            if not w.log_scale:
                span = hi - lo if h.minimum is not None and h.maximum is not None else 10.0
                w.setSingleStep(float(f"{10 ** math.floor(math.log10(span / 10)):.1g}") if span > 0 else 0.1)
            w.setValue(float(h.default))
            w.valueChanged.connect(self.changed)
            return w
        w = QLineEdit(str(h.default))
        w.textChanged.connect(self.changed)
        return w

    # -- values ----------------------------------------------------------------------------------
    def hyperparameters(self) -> list[HyperParameter]:
        return list(self._params.values())

    def editor(self, name: str) -> QWidget:
        """The editing widget of one parameter (tests, focus)."""
        return self._editors[name]

    def set_read_only(self, names: Sequence[str], reason: str) -> None:
        """Grey out the rows of ``names``: their values show but cannot be edited (``set_values``
        still sets them). ``reason`` (one sentence: why they cannot change) leads their tooltip
        and accessible description. Raises ValueError for an unknown name."""
        unknown = sorted(set(names) - set(self._params))
        if unknown:
            raise ValueError(f"no hyperparameter {', '.join(unknown)}; the form has: {', '.join(self._params) or 'none'}")
        for name in names:
            h = self._params[name]
            tip = f"{reason} {self._tooltip(h)}"
            editor, label = self._editors[name], self._labels[name]
            editor.setEnabled(False)
            label.setEnabled(False)
            editor.setToolTip(tip)
            label.setToolTip(tip)
            editor.setAccessibleDescription(f"{reason} {h.help}")
            self._read_only[name] = reason

    def read_only(self) -> dict[str, str]:
        """``{name: reason}`` of the rows greyed out by :meth:`set_read_only`."""
        return dict(self._read_only)

    def _raw(self, name: str) -> Any:
        w = self._editors[name]
        if isinstance(w, QCheckBox):
            return w.isChecked()
        if isinstance(w, QComboBox):
            return w.currentData()
        if isinstance(w, (QSpinBox, QDoubleSpinBox)):
            w.interpretText()
            return w.value()
        return w.text()

    def errors(self) -> dict[str, str]:
        """``{name: reason}`` for every value that does not validate (empty when all do)."""
        out = {}
        for name, h in self._params.items():
            try:
                h.validate(self._raw(name))
            except ValueError as e:
                out[name] = str(e)
        return out

    def values(self) -> dict[str, Any]:
        """Validated values of every parameter; raises ValueError naming the bad ones."""
        errors = self.errors()
        if errors:
            raise ValueError("; ".join(errors.values()))
        return {name: h.validate(self._raw(name)) for name, h in self._params.items()}

    def defaults(self) -> dict[str, Any]:
        return {name: h.default for name, h in self._params.items()}

    def set_values(self, values: Mapping[str, Any]) -> None:
        """Set some or all values. Unknown names or invalid values raise ValueError (nothing is
        changed then); parameters not named keep their current value."""
        unknown = sorted(set(values) - set(self._params))
        if unknown:
            raise ValueError(f"no hyperparameter {', '.join(unknown)}; the form has: {', '.join(self._params) or 'none'}")
        checked = {name: self._params[name].validate(value) for name, value in values.items()}
        for name, value in checked.items():
            w = self._editors[name]
            if isinstance(w, QCheckBox):
                w.setChecked(bool(value))
            elif isinstance(w, QComboBox):
                w.setCurrentIndex(list(self._params[name].choices).index(value))
            elif isinstance(w, (QSpinBox, QDoubleSpinBox)):
                w.setValue(value)
            else:
                w.setText(str(value))

    def reset(self) -> None:
        """Every parameter back to its default."""
        self.set_values(self.defaults())


__all__ = ["INT_LIMIT", "HyperParameterForm", "NumberSpinBox"]
