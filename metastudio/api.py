"""The one module a plugin author imports: ``from metastudio.api import Algorithm, hookimpl, ...``.

Everything a plugin needs to offer an algorithm, a backbone, a dataset or trained models
(:class:`ModelSpec`) is here: the contract
(:class:`Algorithm`, :class:`Learner`, :class:`HyperParameter` and its roles), the data it is
given (:class:`Episode`, :class:`SupportSet`, :class:`LabelledBatch`, :class:`FewShotDataset`), the shared family code
(gradient-based adaptation, feature transforms, training distortions, the unsure rule), the hook
marker :data:`hookimpl`, the errors to raise (and :class:`PluginError`, how the host reports a plugin
that fails at run time) and the test kit (:func:`check_algorithm`,
:func:`check_backbone`, :func:`check_dataset`, :func:`synthetic_dataset`). The built-in plugins
(``metastudio_builtins``) import from nowhere else, as a third party would.

Stability promise: every name in ``__all__`` keeps its meaning and signature within a major
version (``HOOK_API_VERSION``; see ``docs/plugins.md``). A name that has to change is first
kept beside its successor for at least one minor release, warning with ``DeprecationWarning``
when used (see ``_deprecate`` at the end of this module), and removed only with the next version of
the hook API; the change is listed in the changelog of ``docs/plugins.md``. Anything imported
from elsewhere in ``metastudio`` (``metastudio.algorithms.base`` and the like) is internal and
may move without notice; the old ``metastudio.core.*`` paths still work, with a warning.
"""

from __future__ import annotations

from metastudio.algorithms.augment import DISTORT, DISTORT_PROB, random_affine
from metastudio.algorithms.backbone import BackboneSpec
from metastudio.algorithms.base import (
    TRAINS_ON, AdaptProgress, Algorithm, Learner, ProgressCallback, class_means, query_accuracy,
)
from metastudio.algorithms.buffers import BufferDict
from metastudio.algorithms.feature_transform import (
    FEATURE_TRANSFORM,
    FEATURE_TRANSFORMS,
    FeatureTransformMixin,
    apply_feature_transform,
    before_centring,
    feature_transform_hyperparameter,
    projection_hyperparameter,
    projection_layer,
)
from metastudio.algorithms.gradient import HEAD, GradientAlgorithm, inner_hyperparameters, preprocess_gradient
from metastudio.algorithms.hyperparameters import ROLES, TRAINING_HYPERPARAMETERS, HyperParameter, with_changes
from metastudio.algorithms.openset import DistanceRule, OpenSetPrediction, fit_distance_rule
from metastudio.algorithms.positions import LabelPositionsMixin, max_ways_hyperparameter
from metastudio.data.batches import LabelledBatch
from metastudio.data.datasets import DatasetSpec, FewShotDataset, Progress, TreeSource, load_class_folders, load_folder_split
from metastudio.data.download import download
from metastudio.data.episodes import Episode, SupportSet, stack_support
from metastudio.data.progress import text_progress
from metastudio.errors import (
    CheckpointError, DatasetError, MetaStudioDeprecationWarning, MetaStudioError, PluginCancelled, PluginError,
    PluginOrigin, PluginTimeout, TrainingError,
)
from metastudio.plugins.hookspecs import HOOK_API_VERSION, ModelSpec, hookimpl
from metastudio.plugins.manager import get_host
from metastudio.plugins.testkit import check_algorithm, check_backbone, check_dataset, synthetic_dataset

__all__ = [
    # the contract
    "Algorithm", "Learner", "AdaptProgress", "ProgressCallback", "query_accuracy", "class_means", "TRAINS_ON",
    "HyperParameter", "ROLES", "TRAINING_HYPERPARAMETERS", "with_changes",
    "BackboneSpec", "DatasetSpec",
    # the data an algorithm is given, and what a dataset builds
    "Episode", "SupportSet", "stack_support", "LabelledBatch", "FewShotDataset", "TreeSource", "Progress",
    "load_class_folders", "load_folder_split", "download", "text_progress",
    # shared family code
    "GradientAlgorithm", "inner_hyperparameters", "preprocess_gradient", "HEAD",
    "FeatureTransformMixin", "FEATURE_TRANSFORM", "FEATURE_TRANSFORMS", "feature_transform_hyperparameter",
    "apply_feature_transform", "before_centring",
    "projection_hyperparameter", "projection_layer",
    "DISTORT", "DISTORT_PROB", "random_affine",
    "DistanceRule", "OpenSetPrediction", "fit_distance_rule",
    "BufferDict", "LabelPositionsMixin", "max_ways_hyperparameter",
    # hooks, and the trained models a plugin ships
    "hookimpl", "HOOK_API_VERSION", "ModelSpec",
    # the plugin host MetaStudio uses (every installed plugin), e.g. to test that yours is found
    "get_host",
    # errors
    "MetaStudioError", "MetaStudioDeprecationWarning", "DatasetError", "CheckpointError", "TrainingError",
    # how the host reports a plugin that fails at run time
    "PluginError", "PluginTimeout", "PluginCancelled", "PluginOrigin",
    # the test kit
    "check_algorithm", "check_backbone", "check_dataset", "synthetic_dataset",
]


# -- names on their way out ------------------------------------------------------------------------
#: Names taken out of ``__all__`` that still work, with a ``DeprecationWarning`` (for at least one
#: minor release, and until the next version of the hook API): old name -> (the name in
#: ``__all__`` that replaces it, when the old one goes away). :func:`_deprecate` adds one; the
#: change goes under "Changes" in docs/plugins.md.
_DEPRECATED: dict[str, tuple[str, str]] = {}


def _deprecate(old: str, new: str, removed_in: str = f"hook API version {HOOK_API_VERSION + 1}") -> None:
    """Keep ``old`` importable from ``metastudio.api`` as another name for ``new`` (a name in
    ``__all__``), warning with a ``DeprecationWarning`` at each use, until ``removed_in``."""
    if new not in __all__:
        raise ValueError(f"{new} is not in metastudio.api.__all__: a deprecated name must point to a name that stays")
    if old in __all__ or old in globals():
        raise ValueError(f"{old} is still a name of metastudio.api: take it out of the module and of __all__ first")
    _DEPRECATED[old] = (new, removed_in)


def __getattr__(name: str):
    """A deprecated name (see ``_DEPRECATED``): its successor, with a ``DeprecationWarning``."""
    if name in _DEPRECATED:
        import warnings

        new, removed_in = _DEPRECATED[name]
        warnings.warn(f"metastudio.api.{name} is deprecated: use metastudio.api.{new} instead (the old name goes "
                      f"away with {removed_in})", MetaStudioDeprecationWarning, stacklevel=2)
        return globals()[new]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
