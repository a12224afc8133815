"""Declared hyperparameters: type, default, range, help text and role of each value an
algorithm (or a dataset) takes, so that forms, CLI flags and validation come from one
declaration. See :class:`HyperParameter`."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

_TYPES = {int: "int", float: "float", bool: "bool", str: "str"}

#: The roles a hyperparameter can have (see :class:`HyperParameter`).
ROLES = ("training", "architecture", "adaptation")


@dataclass(frozen=True)
class HyperParameter:
    """One declared hyperparameter of an algorithm.

    ``type`` is ``int``, ``float``, ``bool`` or ``str``; ``choices`` restricts a ``str``
    (or number) to a list; ``minimum``/``maximum`` bound numbers (inclusive);
    ``log_scale`` hints a GUI to use a logarithmic slider; ``help`` is one sentence shown in
    forms and ``--help``.

    ``role`` says when the value matters, and so whether it may change once a model is trained:

    * ``"training"``: only while meta-training (the optimiser, how episodes become losses,
      distortions, a learned quantity's starting value...). A trained model keeps the value it
      was trained with; the app does not show it for a trained model.
    * ``"architecture"``: fixed by the trained weights (it sets the shape of a layer, whether a
      module or a stored buffer exists, or what the learned weights mean). Changing it for a
      trained model would not load or would be meaningless; the app shows it read-only.
    * ``"adaptation"`` (the default): used when a trained model adapts to a support set and
      predicts (a distance, a temperature, adaptation steps...); it may be changed for a
      trained model, and the app offers it.
    """

    name: str
    type: type
    default: Any
    help: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[Any, ...] | None = None
    log_scale: bool = False
    role: str = "adaptation"

    def __post_init__(self):
        if self.type not in _TYPES:
            raise TypeError(f"hyperparameter '{self.name}': type must be int, float, bool or str")
        if self.role not in ROLES:
            raise ValueError(f"hyperparameter '{self.name}': role must be one of {', '.join(ROLES)}, got {self.role!r}")
        self.validate(self.default)

    def validate(self, value: Any) -> Any:
        """Return ``value`` converted to this parameter's type, or raise ValueError saying why."""
        try:
            if self.type is bool:
                if isinstance(value, str):
                    low = value.strip().lower()
                    if low not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                        raise ValueError
                    value = low in ("1", "true", "yes", "on")
                elif not isinstance(value, (bool, int)):
                    raise ValueError
                value = bool(value)
            elif self.type is int:
                if isinstance(value, float) and not value.is_integer():
                    raise ValueError
                value = int(value)
            elif self.type is float:
                value = float(value)
                if not math.isfinite(value):
                    raise ValueError
            else:
                value = str(value)
        except (TypeError, ValueError):
            raise ValueError(f"{self.name} must be of type {_TYPES[self.type]}, got {value!r}") from None
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"{self.name} must be one of {', '.join(map(str, self.choices))}, got {value!r}")
        if self.minimum is not None and value < self.minimum:
            raise ValueError(f"{self.name} must be at least {self.minimum}, got {value}")
        if self.maximum is not None and value > self.maximum:
            raise ValueError(f"{self.name} must be at most {self.maximum}, got {value}")
        return value

    def describe(self) -> dict[str, Any]:
        """A JSON-ready description (for GUIs, ``metastudio plugins --json`` and docs)."""
        return {
            "name": self.name, "type": _TYPES[self.type], "default": self.default, "help": self.help,
            "minimum": self.minimum, "maximum": self.maximum,
            "choices": list(self.choices) if self.choices is not None else None, "log_scale": self.log_scale,
            "role": self.role,
        }


#: Hyperparameters of the outer (meta-training) optimiser, shared by most algorithms.
TRAINING_HYPERPARAMETERS: tuple[HyperParameter, ...] = (
    HyperParameter("lr", float, 1e-3, "Learning rate of the meta-training optimiser (Adam).", 1e-6, 1.0, log_scale=True,
                   role="training"),
    HyperParameter("weight_decay", float, 0.0, "L2 weight decay of the meta-training optimiser.", 0.0, 1.0,
                   role="training"),
    HyperParameter(
        "lr_schedule", str, "step", "How the learning rate falls during meta-training: halve it at fixed "
        "intervals (step), follow a cosine to zero (cosine), fall in a straight line to zero (linear) or keep it "
        "(constant).",
        choices=("step", "cosine", "linear", "constant"), role="training",
    ),
    HyperParameter("lr_step", int, 2000, "With the step schedule: meta-training steps between halvings.", 1, 10_000_000,
                   role="training"),
)


def with_changes(hyperparameters: tuple[HyperParameter, ...], **changes: dict[str, Any]) -> tuple[HyperParameter, ...]:
    """``hyperparameters`` with some of them changed, e.g. ``with_changes(TRAINING_HYPERPARAMETERS,
    lr={"default": 1.0})``: an algorithm giving a shared hyperparameter its own default, help or
    role. The changed declarations are validated again (a bad default or role raises)."""
    unknown = set(changes) - {h.name for h in hyperparameters}
    if unknown:
        raise ValueError(f"no hyperparameter {', '.join(sorted(unknown))} to change")
    return tuple(dataclasses.replace(h, **changes[h.name]) if h.name in changes else h for h in hyperparameters)
