"""Old import paths, kept working for plugins written before the layered tree.

``metastudio.core.<module>`` was the flat package every part of MetaStudio lived in. Its modules
now live in ``metastudio.data``, ``metastudio.algorithms``, ``metastudio.engine``,
``metastudio.app`` and the built-in plugins; a plugin imports from :mod:`metastudio.api`.
Importing an old path still gives the same objects, with a ``DeprecationWarning`` that names
the new place. This package goes away in the next major version of the plugin API.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

from metastudio.errors import MetaStudioDeprecationWarning

#: old module name -> the modules its names now come from (the first is the main one).
MOVED: dict[str, tuple[str, ...]] = {
    "algorithm": ("metastudio.algorithms.base", "metastudio.algorithms.hyperparameters"),
    "augment": ("metastudio.algorithms.augment",),
    "backbones": ("metastudio_builtins.backbones", "metastudio_builtins.backbones.networks",
                  "metastudio.algorithms.backbone"),
    "checkpoint": ("metastudio.engine.checkpoint",),
    "control": ("metastudio.engine.control",),
    "datasets": ("metastudio.data.datasets",),
    "devices": ("metastudio.engine.devices",),
    "download": ("metastudio.data.download",),
    "episodes": ("metastudio.data.episodes",),
    "errors": ("metastudio.errors",),
    "evaluator": ("metastudio.engine.evaluator",),
    "export": ("metastudio.engine.export",),
    "feature_cache": ("metastudio.data.feature_cache",),
    "feature_transform": ("metastudio.algorithms.feature_transform",),
    "features": ("metastudio.engine.features",),
    "fileio": ("metastudio.data.fileio",),
    "gradient": ("metastudio.algorithms.gradient",),
    "images": ("metastudio.data.images",),
    "imagestore": ("metastudio.data.imagestore",),
    "models": ("metastudio.app.catalogue",),
    "omniglot": ("metastudio_builtins.datasets.omniglot",),
    "openset": ("metastudio.algorithms.openset",),
    "pretrained": ("metastudio_builtins.backbones.pretrained",),
    "progress": ("metastudio.data.progress",),
    "project": ("metastudio.app.project",),
    "runs": ("metastudio.app.runs",),
    "session": ("metastudio.app.session",),
    "taskbatch": ("metastudio.algorithms.taskbatch",),
    "trainer": ("metastudio.engine.trainer",),
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds ``metastudio.core.<old>`` and fills it with the names of the modules it became."""

    def find_spec(self, fullname, path=None, target=None):
        package, _, leaf = fullname.rpartition(".")
        if package == __name__ and leaf in MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return None

    def exec_module(self, module) -> None:
        targets = MOVED[module.__name__.rpartition(".")[2]]
        warnings.warn(
            f"{module.__name__} has moved to {targets[0]}; plugins should import from metastudio.api "
            "(the old path goes away in the next major version of the plugin API)",
            MetaStudioDeprecationWarning, stacklevel=2)
        for target in reversed(targets):
            names = vars(importlib.import_module(target))
            module.__dict__.update({k: v for k, v in names.items() if not k.startswith("__")})


if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
    sys.meta_path.append(_MovedModules())
