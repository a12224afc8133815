"""What an algorithm declares it can do, and the checks that run when its class is defined.

A few things the engine and the app do for an algorithm depend on what it says about itself.
Each is an explicit declaration on the class, never a hyperparameter's name that only the source
would reveal, and :func:`check_declarations` checks them all when a named class is defined
(``Algorithm.__init_subclass__``), so a mistake is a ``TypeError`` naming the class at import,
not a surprise during a run:

========================================  =======================================================
declaration                               what it does
========================================  =======================================================
``trains_on``                             which training steps the trainer calls
``FeatureTransformMixin`` + the           features centred and normalised in ``embed`` (CL2N);
``FEATURE_TRANSFORM`` hyperparameter      ``feature_mean_fitted`` says who fits the mean
``distorts_training_images = True`` +     training images randomly distorted while ``distort``
``DISTORT`` and ``DISTORT_PROB``          is on (``training_embed``); refused on a frozen backbone
``reports_adaptation_loss = True``        ``adapt`` reports a loss per step; the app plots it
``supports_frozen_backbone = False``      runs with ``--freeze-backbone`` refused before loading
========================================  =======================================================

Two older implicit rules still work for now, with a ``DeprecationWarning`` at class definition
until the next hook API version: a ``distort`` hyperparameter without
``distorts_training_images``, and ``family = "optimization"`` without ``reports_adaptation_loss``.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

from metastudio.errors import MetaStudioDeprecationWarning

#: The class attributes that are capabilities, with their defaults on ``Algorithm`` (all bools).
CAPABILITIES: dict[str, bool] = {
    "distorts_training_images": False,
    "reports_adaptation_loss": False,
    "supports_frozen_backbone": True,
}

#: Who may fit a feature transform's centring mean (``FeatureTransformMixin.feature_mean_fitted``).
FEATURE_MEAN_FITTED = ("before training", "by the algorithm")

_NEXT_API = "the next hook API version (2)"


def _outside() -> int:
    """The ``stacklevel`` of a warning about the class being defined: the first frame outside
    this package (and ``abc``, whose ``ABCMeta.__new__`` runs ``__init_subclass__``), which is the
    ``class`` statement in the plugin's module."""
    frame, level, here = sys._getframe(1), 1, str(Path(__file__).parent)
    while frame is not None and (frame.f_code.co_filename.startswith(here) or frame.f_code.co_filename == "<frozen abc>"
                                 or frame.f_code.co_filename.endswith("abc.py")):
        frame, level = frame.f_back, level + 1
    return level


def _declared_below(cls: type, attribute: str, base: type) -> bool:
    """Whether a class between ``cls`` and ``base`` in the MRO (``cls`` included) sets ``attribute``."""
    return any(attribute in klass.__dict__ for klass in cls.__mro__ if klass is not base and issubclass(klass, base))


def check_declarations(cls: Any, base: type, where: str) -> None:
    """Check what ``cls`` (a named subclass of ``base``, the Algorithm class) declares about its
    capabilities; raise ``TypeError`` beginning with ``where`` for a contradiction. Resolves the
    two deprecated implicit rules (see the module) by setting the capability on ``cls``."""
    from metastudio.algorithms.feature_transform import FeatureTransformMixin  # it subclasses nothing of base's module

    for name in CAPABILITIES:
        value = getattr(cls, name)
        if not isinstance(value, bool):
            raise TypeError(f"{where}: {name} must be True or False, not {value!r}")
    hparams = {h.name for h in cls.hyperparameters}

    mixin = issubclass(cls, FeatureTransformMixin)
    if "feature_transform" in hparams and not mixin:
        raise TypeError(f"{where}: it declares a feature_transform hyperparameter but does not inherit "
                        "FeatureTransformMixin, which is what transforms the features; put FeatureTransformMixin "
                        "before Algorithm in its bases (class MyAlgorithm(FeatureTransformMixin, Algorithm))")
    if mixin:
        mro = cls.__mro__
        if mro.index(FeatureTransformMixin) > mro.index(base):
            raise TypeError(f"{where}: FeatureTransformMixin must come before Algorithm in its bases, or "
                            "Algorithm's embed hides the mixin's and the features are never transformed")
        if cls.feature_mean_fitted not in FEATURE_MEAN_FITTED:
            raise TypeError(f"{where}: feature_mean_fitted must be one of "
                            f"{', '.join(map(repr, FEATURE_MEAN_FITTED))}, not {cls.feature_mean_fitted!r}")

    _check_distortions(cls, base, where, hparams)
    if cls.family == "optimization" and not _declared_below(cls, "reports_adaptation_loss", base):
        warnings.warn(f"{where}: family = 'optimization' no longer says by itself that adapt reports a loss per "
                      "step for the app to plot; declare reports_adaptation_loss = True (or False) on the class. "
                      f"Until {_NEXT_API} it is taken as True.", MetaStudioDeprecationWarning, stacklevel=_outside())
        cls.reports_adaptation_loss = True


def _check_distortions(cls: Any, base: type, where: str, hparams: set[str]) -> None:
    needed = {"distort", "distort_prob"}
    if cls.distorts_training_images:
        missing = sorted(needed - hparams)
        if missing:
            raise TypeError(f"{where}: distorts_training_images = True needs the hyperparameters that switch the "
                            f"distortions on and set their strength; add metastudio.api.DISTORT and DISTORT_PROB "
                            f"to its hyperparameters (missing: {', '.join(missing)})")
    elif "distort" in hparams:
        if not _declared_below(cls, "distorts_training_images", base):
            warnings.warn(f"{where}: a distort hyperparameter no longer switches training distortions on by its "
                          "name alone; declare distorts_training_images = True on the class. Until "
                          f"{_NEXT_API} it is taken as True.", MetaStudioDeprecationWarning, stacklevel=_outside())
            cls.distorts_training_images = True
            if "distort_prob" not in hparams:
                raise TypeError(f"{where}: training distortions need a distort_prob hyperparameter too "
                                "(metastudio.api.DISTORT_PROB)")


__all__ = ["CAPABILITIES", "FEATURE_MEAN_FITTED", "check_declarations"]
