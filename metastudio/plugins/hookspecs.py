"""Hook specifications: the API a MetaStudio plugin implements.

A plugin is a Python module that MetaStudio finds through the ``metastudio`` entry-point
group of an installed package, for example in its ``pyproject.toml``::

    [project.entry-points.metastudio]
    my-algorithm = "my_package.metastudio_plugin"

and that implements one or more of the hooks below, each decorated with :data:`hookimpl`::

    from metastudio.api import hookimpl  # every name a plugin needs comes from metastudio.api

    @hookimpl
    def metastudio_algorithms():
        return [MyAlgorithm]

Every hook takes no arguments and returns a list. MetaStudio calls each plugin's hooks under
its own guard: a plugin that fails to import, that misspells a hook, whose hook raises, or
whose hook returns something of the wrong type is reported (``metastudio plugins``; greyed in
the app with the error) and disabled as a whole, and every other plugin keeps working.

Versioning: this is version :data:`HOOK_API_VERSION` of the hook API. A plugin module may set
``METASTUDIO_API_VERSION = N``; a plugin asking for a newer API than the running MetaStudio
offers is disabled with a message saying so. Hooks are only ever added within a version;
a change that breaks plugins raises the version.

The built-in algorithms, backbones and datasets are plugins too (package
``metastudio_builtins``, in the top-level ``plugins/`` folder), registered through the same
entry-point group. Plugin names are the entry-point names; a component name (an algorithm's
``name``, a backbone's, dataset's or model's ``name``) must be unique across plugins -- the
first plugin to claim a name keeps it (built-ins load first) and the clash is reported; a model
named like one MetaStudio ships is left out the same way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pluggy

PROJECT = "metastudio"
#: Version of the hook API described in this module.
HOOK_API_VERSION = 1

hookspec = pluggy.HookspecMarker(PROJECT)
#: Decorator marking a plugin's hook implementations.
hookimpl = pluggy.HookimplMarker(PROJECT)

#: The file name ending of a model file.
MODEL_SUFFIX = ".safetensors"


@dataclass(frozen=True)
class ModelSpec:
    """A trained model a plugin ships, as the ``metastudio_models`` hook returns it.

    ``name`` is how people choose it (``metastudio classify --model NAME``, the app's Model
    box): unique among all models, without slashes. ``path`` is the ``.safetensors`` file,
    inside the plugin's installed package. ``title`` is the optional plain name the app shows
    instead of ``name`` ("Blood cells"). :meth:`from_path` makes one from a bare path, named
    after the file.
    """

    name: str
    path: Path
    title: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.path, (str, os.PathLike)):
            object.__setattr__(self, "path", Path(self.path))

    @classmethod
    def from_path(cls, path: str | os.PathLike[str]) -> ModelSpec:
        """The model at ``path``, named after its file (``cells.safetensors`` -> ``cells``)."""
        path = Path(path)
        name = path.name[: -len(MODEL_SUFFIX)] if path.name.endswith(MODEL_SUFFIX) else path.stem
        return cls(name, path)


@hookspec
def metastudio_algorithms():
    """Return the few-shot algorithms this plugin provides.

    :return: a list of classes, each a subclass of
        :class:`metastudio.algorithms.base.Algorithm` with class attributes ``name`` (unique,
        lower case, used on the command line and in model files), ``version`` (bump it when
        the saved state changes), ``title``, ``description``, ``family`` (``"metric"``,
        ``"model"`` or ``"optimization"``) and ``hyperparameters`` (a tuple of
        :class:`metastudio.algorithms.base.HyperParameter`). Give each hyperparameter its
        ``role``: ``"training"`` when only meta-training uses it (the optimiser, how episodes
        make losses, distortions, a learned value's starting point), ``"architecture"`` when the
        trained weights depend on it (a layer's width, whether a module or buffer exists), or
        ``"adaptation"`` (the default) when adapting and predicting use it and a trained model
        may take another value (a distance, a temperature, adaptation steps). For a trained
        model the app offers only ``adaptation`` ones, shows ``architecture`` ones read-only,
        and refuses other values of the rest (:meth:`Algorithm.adaptation_overrides`); the
        Meta-train tab and ``metastudio train --hp`` offer them all.

    The class is instantiated as ``cls(backbone, backbone_name=..., image_size=...,
    channels=..., hparams={...})`` and must implement ``meta_train_step(episodes) -> dict`` of
    plain floats (at least ``loss`` and ``accuracy``) and ``adapt(support, progress=None) ->
    Learner``. Everything it learns must live in its ``state_dict`` (saved as safetensors);
    everything else needed to rebuild it must be in its hyperparameters (saved as JSON).
    Use the test kit (``metastudio.api.check_algorithm``) to check a new algorithm against the contract.

    Example::

        class MyAlgorithm(Algorithm):
            name, title, family = "mine", "My algorithm", "metric"
            hyperparameters = TRAINING_HYPERPARAMETERS + (  # lr & co.: role="training"
                HyperParameter("width", int, 256, "Width of the learned head.", 1, 4096, role="architecture"),
                HyperParameter("temperature", float, 10.0, "Softmax scale when classifying.", 0.01, 100.0,
                               role="adaptation"),
            )
            ...

        @hookimpl
        def metastudio_algorithms():
            return [MyAlgorithm]
    """


@hookspec
def metastudio_backbones():
    """Return the embedding networks (backbones) this plugin provides.

    :return: a list of :class:`metastudio_builtins.backbones.networks.BackboneSpec`, each with a unique
        ``name``, a ``factory(in_channels, image_size) -> torch.nn.Module`` that maps float
        images [B, C, H, W] in [0, 1] to features [B, D], a one-line ``description``,
        optionally the ``default_image_size`` the backbone is meant for, and ``pretrained=True``
        when the factory builds the same trained weights every time (only such a backbone can be
        frozen, since frozen backbones are rebuilt by the factory instead of being saved). The module may set
        ``out_features`` (D); otherwise MetaStudio measures it with a dummy forward pass.

    Every algorithm can use every backbone: the backbone named in a model file is rebuilt by
    its factory and loaded with the saved weights, so a factory must build the same
    architecture each time it is called with the same arguments.

    Example::

        @hookimpl
        def metastudio_backbones():
            return [BackboneSpec("tiny", lambda c, s: TinyNet(c), "A two-layer CNN.")]
    """


@hookspec
def metastudio_datasets():
    """Return the datasets this plugin can load for meta-training and evaluation.

    :return: a list of :class:`metastudio.data.datasets.DatasetSpec`, each with a unique
        ``name``, a ``load(root, split, *, image_size=None, progress=None, **options) ->
        FewShotDataset`` function, a ``description``, the ``splits`` it knows, its natural
        ``image_size`` and ``channels``, and the extra ``options`` it accepts, declared as
        :class:`metastudio.algorithms.base.HyperParameter`.

    ``load`` reads one split into memory as uint8 (see
    :func:`metastudio.data.datasets.load_class_folders`, which does the work for any tree of
    class folders, from a directory or a zip). It should accept a local path in ``root`` and,
    when ``root`` is None, use a default location, downloading official files with a
    checksum. Errors are raised as :class:`metastudio.errors.DatasetError` with a
    message for the person running it; ``progress(done, total)`` reports long loads.

    Example::

        @hookimpl
        def metastudio_datasets():
            return [DatasetSpec("my-data", load_my_data, "My lab's microscope images.",
                                splits=("train", "test"), image_size=84, channels=3)]
    """


@hookspec
def metastudio_models():
    """Return the trained models this plugin ships, ready to classify with.

    :return: a list whose items are each a :class:`ModelSpec` (``name``, ``path``, optional
        ``title``) or simply the path of a model file (a ``str``, a :class:`pathlib.Path`, or
        what :func:`importlib.resources.files` gives for a package installed as files), which is
        then named after the file without ``.safetensors``. A model file is what ``metastudio
        train`` writes (safetensors with MetaStudio's metadata); ship it inside your package (list
        it as package data) and name it by a path relative to your module, never one on the
        developer's machine.

    ``metastudio classify --model NAME``, ``metastudio eval --model NAME`` and ``metastudio
    info NAME`` find a plugin's model by its name, and the app lists it in the Model box, named
    with the plugin. A name must be unique: the models MetaStudio ships (``resources/models``)
    keep theirs, and between plugins the first to load keeps it; the other one is left out and
    the clash reported as a warning of its plugin (``metastudio plugins``). A model whose file
    does not exist, or is not a file, is left out and reported the same way, while the rest of
    the plugin keeps working. The algorithm and backbone a model needs may come from any
    installed plugin; the model is checked against them when it is used.

    Example::

        from importlib.resources import files

        from metastudio.api import ModelSpec, hookimpl

        @hookimpl
        def metastudio_models():
            here = files("my_package") / "models"
            return [ModelSpec("cells", here / "cells.safetensors", "Blood cells"),
                    here / "cells-20way.safetensors"]  # named "cells-20way"
    """
