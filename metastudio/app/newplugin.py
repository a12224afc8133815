"""``metastudio new-plugin NAME``: write a complete, pip-installable package for a new algorithm plugin.

The package is a small working algorithm (a nearest-centroid learner on a backbone's features,
written only against :mod:`metastudio.api`), its tests (the test kit, and that MetaStudio finds
it through its entry point), a README and a CI script. Its names all come from ``NAME``:

- ``NAME`` is the entry-point name (the plugin's name in ``metastudio plugins``) and the
  algorithm's name (``metastudio train --algorithm NAME``);
- the module (import name) is ``NAME`` with ``-`` written as ``_``;
- the distribution (what ``pip install`` and a package index call it) is ``metastudio-NAME``,
  so that MetaStudio's plugins are found together on an index.

The templates are the string constants below; :func:`write_plugin_package` fills them in.
"""

from __future__ import annotations

import importlib.util
import keyword
import re
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from metastudio.errors import MetaStudioError

#: What a plugin name may be: lower case letters and digits, words joined by single ``-`` or
#: ``_``, starting with a letter (it is typed on the command line and becomes a module name).
NAME_PATTERN = re.compile(r"[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*")
MAX_NAME_LENGTH = 40
DISTRIBUTION_PREFIX = "metastudio-"


class NewPluginError(MetaStudioError):
    """The plugin package cannot be written (a bad name, a folder in the way)."""


@dataclass(frozen=True)
class PluginNames:
    """The names of a new plugin package, all derived from the one name a person gives."""

    name: str          # entry point and algorithm name
    module: str        # import name
    distribution: str  # pip's name
    title: str         # how people read it ("My Algo")


@dataclass(frozen=True)
class NewPlugin:
    """What :func:`write_plugin_package` wrote: the package folder, its names and its files
    (relative to the folder, in the order written)."""

    folder: Path
    names: PluginNames
    requirement: str
    files: tuple[str, ...]

    @property
    def next_steps(self) -> tuple[str, ...]:
        """The commands that install the package, run its tests and check it."""
        return (f"cd {self.folder}", 'pip install -e ".[test]"', "pytest",
                f"metastudio plugins validate {self.names.name}")


def plugin_names(name: str) -> PluginNames:
    """The names of the package for the plugin ``name``; :class:`NewPluginError` saying why when
    ``name`` cannot be one."""
    if not isinstance(name, str) or not name:
        raise NewPluginError("the plugin needs a name, e.g. 'metastudio new-plugin my-algo'")
    if len(name) > MAX_NAME_LENGTH:
        raise NewPluginError(f"the plugin name '{name}' is {len(name)} characters long; use at most {MAX_NAME_LENGTH}")
    if not NAME_PATTERN.fullmatch(name):
        hint = f" (lower case: '{name.lower()}')" if NAME_PATTERN.fullmatch(name.lower()) else ""
        raise NewPluginError(
            f"'{name}' cannot be a plugin name{hint}: use lower-case letters and digits, starting with a letter, "
            "words joined by single '-' or '_' (it is typed on the command line and becomes a Python module name)")
    if name.startswith(("metastudio-", "metastudio_")) or name == "metastudio":
        raise NewPluginError(
            f"leave 'metastudio' out of the plugin name '{name}': the package is named metastudio-NAME by itself")
    module = name.replace("-", "_")
    if keyword.iskeyword(module) or module in sys.stdlib_module_names:
        raise NewPluginError(f"'{name}' would make the module '{module}', which is a name Python itself uses; "
                             "choose another name")
    title = " ".join(word.capitalize() for word in re.split(r"[-_]", name))
    return PluginNames(name, module, DISTRIBUTION_PREFIX + name, title)


def metastudio_requirement(version: str) -> str:
    """The requirement on MetaStudio of a plugin written against ``version``
    (``metastudio.__version__``): that version or newer, before the next major version. A
    pre-release is named in full, so that it satisfies its own lower bound."""
    found = re.match(r"(\d+)\.(\d+)", version)
    if found is None:
        raise ValueError(f"cannot read the MetaStudio version '{version}'")
    major, minor = int(found.group(1)), int(found.group(2))
    final = re.fullmatch(r"\d+\.\d+(?:\.\d+)?", version) is not None
    return f"metastudio>={f'{major}.{minor}' if final else version},<{major + 1}"


def _check_unused(names: PluginNames) -> None:
    """Refuse names that an installed plugin or module already has: the new plugin would be
    reported as a duplicate, or its module would never be imported."""
    taken = {ep.name: ep for ep in metadata.entry_points(group="metastudio")}
    if names.name in taken:
        ep = taken[names.name]
        dist = getattr(ep, "dist", None)
        package = f" (package {dist.name} {dist.version})" if dist is not None else ""
        raise NewPluginError(f"an installed plugin is already named '{names.name}'{package}; choose another name "
                             "(see 'metastudio plugins')")
    try:
        spec = importlib.util.find_spec(names.module)
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.origin not in (None, "namespace"):  # a folder of that name is no module
        where = f" ({spec.origin})" if spec.origin not in ("built-in", "frozen") else ""
        raise NewPluginError(f"a module named '{names.module}' is already installed{where}; choose another name")


def _fill(template: str, values: dict[str, str]) -> str:
    """``template`` with each ``{{key}}`` replaced by its value (no other syntax, so the code and
    shell text of the templates need no escaping)."""
    text = template
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    left = re.search(r"\{\{\w+\}\}", text)
    if left is not None:  # a template names a value that is not given: a fault of this module
        raise KeyError(f"template value {left.group(0)} is not given")
    return text


#: What the algorithm of a new package trains on (``--trains-on``): the template for each.
TEMPLATES = ("episodes", "batches")


def package_files(names: PluginNames, requirement: str, api_version: int,
                  trains_on: str = "episodes") -> dict[str, str]:
    """The package's files, path (relative, with ``/``) -> text. ``trains_on`` (one of
    :data:`TEMPLATES`) picks the algorithm: meta-trained on episodes (Prototypical Networks at
    its smallest) or trained as a classifier of every training class on labelled batches, then
    nearest class mean (SimpleShot at its smallest)."""
    if trains_on not in TEMPLATES:
        raise NewPluginError(f"--trains-on must be one of {', '.join(TEMPLATES)}, not '{trains_on}'")
    batches = trains_on == "batches"
    values = {
        "name": names.name, "module": names.module, "distribution": names.distribution, "title": names.title,
        "requirement": requirement, "api_version": str(api_version),
        "class": "NearestMean" if batches else "NearestCentroid",
    }
    values["train"] = _fill(TRAIN_BATCHES if batches else TRAIN_EPISODES, values)
    files = {
        "pyproject.toml": PYPROJECT,
        f"src/{names.module}/__init__.py": INIT,
        f"src/{names.module}/plugin.py": PLUGIN_BATCHES if batches else PLUGIN,
        "tests/test_plugin.py": TESTS,
        "README.md": README,
        ".ci/run": CI_RUN,
        ".gitignore": GITIGNORE,
    }
    return {path: _fill(template, values) for path, template in files.items()}


def write_plugin_package(name: str, out: str | Path = ".", trains_on: str = "episodes") -> NewPlugin:
    """Write the package of a new algorithm plugin ``name`` into ``out/name`` (created; an
    existing folder must be empty), its algorithm trained on ``trains_on`` (see
    :func:`package_files`). Raises :class:`NewPluginError` for a name that cannot be a plugin's,
    one already installed, or a folder in the way."""
    names = plugin_names(name)
    if trains_on not in TEMPLATES:
        raise NewPluginError(f"--trains-on must be one of {', '.join(TEMPLATES)}, not '{trains_on}'")
    folder = Path(out).expanduser() / name
    if folder.exists() and not folder.is_dir():
        raise NewPluginError(f"'{folder}' exists and is not a folder; choose another --out")
    if folder.is_dir() and any(folder.iterdir()):
        raise NewPluginError(f"the folder '{folder}' exists and is not empty; remove it or choose another --out")
    _check_unused(names)
    from metastudio import __version__
    from metastudio.plugins.hookspecs import HOOK_API_VERSION  # (imports the plugin host, and torch)

    requirement = metastudio_requirement(__version__)
    files = package_files(names, requirement, HOOK_API_VERSION, trains_on)
    try:
        for relative, text in files.items():
            path = folder / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        (folder / ".ci" / "run").chmod(0o755)
    except OSError as e:
        raise NewPluginError(f"cannot write the plugin package into '{folder}': {e.strerror or e}") from e
    return NewPlugin(folder, names, requirement, tuple(files))


# ----------------------------------------------------------------------------------------------
# templates ({{key}} is replaced by package_files)

PYPROJECT = '''\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "{{distribution}}"
version = "0.1.0"
description = "{{title}}: a nearest-centroid few-shot algorithm for MetaStudio."
readme = "README.md"
requires-python = ">=3.11"
# Names in metastudio.api keep their meaning within a major version (hook API {{api_version}}).
dependencies = ["{{requirement}}"]

[project.optional-dependencies]
test = ["pytest"]

# How MetaStudio finds the plugin: its name = the module holding its hooks.
[project.entry-points.metastudio]
{{name}} = "{{module}}.plugin"

[tool.setuptools.packages.find]
where = ["src"]

[tool.pytest.ini_options]
testpaths = ["tests"]
addopts = "-ra"
'''

INIT = '''\
"""{{title}}: a MetaStudio plugin (the algorithm is in {{module}}.plugin)."""

__version__ = "0.1.0"
'''

PLUGIN = '''\
"""{{title}}: a nearest-centroid few-shot algorithm, as a MetaStudio plugin.

How it works. A backbone (any MetaStudio backbone: conv4, resnet12, ...) turns each image into
a feature vector. To adapt to a person's examples (the support set), the algorithm averages the
features of each class's examples into one centroid per class. A new image goes to the class
whose centroid is nearest: its probabilities are a softmax over minus the squared distances,
multiplied by the hyperparameter ``temperature``.

Meta-training makes the features good for that. Each step takes episodes (small tasks of a few
classes, drawn from a large dataset), classifies each episode's query images by the centroids of
its support images, and changes the backbone's weights to lower the cross-entropy of those
predictions. (This is Prototypical Networks, Snell et al. 2017, at its smallest.)

Everything comes from ``metastudio.api``, whose names MetaStudio keeps stable within a major
version of its hook API.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from metastudio.api import (
    TRAINING_HYPERPARAMETERS, AdaptProgress, Algorithm, Episode, HyperParameter, Learner, ProgressCallback,
    SupportSet, class_means, hookimpl,
)

#: The version of MetaStudio's hook API this plugin is written against
#: (``metastudio.api.HOOK_API_VERSION``); a MetaStudio with an older one refuses to load it, saying so.
METASTUDIO_API_VERSION = {{api_version}}


def scores(features: torch.Tensor, centres: torch.Tensor, temperature: float) -> torch.Tensor:
    """Logits [Q, ways]: minus the squared distance of each feature to each centroid, times
    ``temperature``. Written as |q|^2 - 2 q.c + |c|^2, which exports to TorchScript and ONNX;
    clamped at 0 against rounding errors."""
    squared = features.pow(2).sum(1, keepdim=True) - 2 * features @ centres.t() + centres.pow(2).sum(1)
    return -temperature * squared.clamp_min(0)


class NearestCentroid(Algorithm):
    """Classifies an image by the nearest class centroid of the examples' features."""

    name = "{{name}}"  # what 'metastudio train --algorithm' and model files call it
    version = "1"  # raise it when what the model saves changes
    title = "{{title}}"
    family = "metric"  # metric, model or optimization
    description = "Classifies an image by the nearest class centroid of the examples' features."
    # What else it can do is declared here, never implied by a hyperparameter's name (see
    # "What you declare" in MetaStudio's docs/plugins.md): reports_adaptation_loss = True for an
    # adapt that takes steps and reports their loss, distorts_training_images = True with the
    # DISTORT and DISTORT_PROB hyperparameters, supports_frozen_backbone = False.
    # The shared training ones (lr, weight_decay, lr_schedule, lr_step) and one of its own. Its
    # role says a trained model may be used with another value (it changes no saved weight).
    hyperparameters = TRAINING_HYPERPARAMETERS + (
        HyperParameter("temperature", float, 1.0, "Multiplies minus the squared distances before the softmax "
                       "(larger = more confident predictions).", 0.001, 1000.0, role="adaptation"),
    )

    def logits(self, features: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
        return scores(features, centres, self.hparams["temperature"])

    def episode_loss(self, episode: Episode) -> tuple[torch.Tensor, int]:
        """The cross-entropy of one episode's queries, and how many of them were classified right."""
        n_support = len(episode.support_images)
        # One backbone pass over support and query images (uint8 in, float32 features out).
        features = self.embed(torch.cat([episode.support_images, episode.query_images]))
        centres = class_means(features[:n_support], episode.support_labels.to(features.device), episode.ways)
        logits = self.logits(features[n_support:], centres)
        targets = episode.query_labels.to(logits.device)
        return F.cross_entropy(logits, targets), int((logits.argmax(1) == targets).sum())

    def meta_train_step(self, episodes: Sequence[Episode]) -> dict[str, float]:
        # The mean loss over the episodes, one step of the optimiser configure_training built
        # (Adam with the lr hyperparameters), and the metrics MetaStudio plots: loss, accuracy.
        return self.episodes_step(episodes, self.episode_loss)

    def adapt(self, support: SupportSet, progress: ProgressCallback | None = None) -> Learner:
        # embed_all runs in eval mode without gradients: adapting never changes the model.
        features = self.embed_all(support.images)
        centres = class_means(features, support.labels.to(features.device), support.ways)
        if progress is not None:
            progress(AdaptProgress(1, 1))  # adaptation is one step, and it is done
        return CentroidLearner(self, centres, support.class_names)

    def restore_learner(self, class_names: Sequence[str], state: Mapping[str, torch.Tensor]) -> Learner:
        """A learner saved with a project (what its learner_state returned), rebuilt."""
        return CentroidLearner(self, state["centroids"].to(self.device), class_names)


class CentroidLearner(Learner):
    """The classifier for one support set: the algorithm (a submodule) and the centroids (a buffer)."""

    def __init__(self, algorithm: NearestCentroid, centres: torch.Tensor, class_names: Sequence[str]):
        super().__init__(class_names, algorithm)
        self.register_buffer("centroids", centres)  # a buffer is saved, moved and exported with the module

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits [B, ways] for float images [B, C, H, W] in [0, 1]; MetaStudio makes probabilities of them."""
        return self.algorithm.logits(self.algorithm.embed(images), self.centroids)

    def learner_state(self) -> dict[str, torch.Tensor]:
        return {"centroids": self.centroids}


@hookimpl
def metastudio_algorithms():
    """The hook MetaStudio calls to find this plugin's algorithms."""
    return [NearestCentroid]
'''

TESTS = '''\
"""Tests of the {{name}} plugin: its algorithm follows MetaStudio's contract, and MetaStudio finds it."""

from metastudio.api import check_algorithm

from {{module}}.plugin import {{class}}


def test_the_algorithm_follows_the_contract(tmp_path):
    # Meta-trains a few steps on tiny synthetic images (a Conv-4 backbone, on the CPU), then
    # checks adapting, predicting, the learner's forward, export and saving: a few seconds.
    check_algorithm({{class}}, tmp_path=tmp_path)


def test_metastudio_finds_the_plugin_through_its_entry_point():
    # The plugin host MetaStudio itself uses, with every installed plugin (so this package must
    # be installed: pip install -e .).
    from metastudio.api import get_host

    host = get_host()
    record = host.records.get("{{name}}")
    assert record is not None, "MetaStudio has no plugin named '{{name}}': install this package (pip install -e .)"
    assert record.status == "ok", f"{record.error}\\n{record.traceback}"
    assert ("algorithm", "{{name}}") in record.components, record.warnings
    assert host.algorithm("{{name}}") is {{class}}
'''

README = '''\
# {{distribution}}

{{title}}: a nearest-centroid few-shot algorithm, as a MetaStudio plugin. It averages the
backbone features of each class's examples into a centroid and gives a new image to the class
whose centroid is nearest (`src/{{module}}/plugin.py` explains it, and how it is trained).

| | |
|---|---|
| plugin (entry point) and algorithm name | `{{name}}` |
| Python module | `{{module}}` |
| package (pip) | `{{distribution}}` |
| needs | `{{requirement}}` (hook API {{api_version}}) |

## Install

In the Python environment MetaStudio is installed in:

```sh
pip install -e ".[test]"
metastudio plugins            # lists the algorithm {{name}}, status ok
metastudio plugins validate {{name}}   # checks the plugin as MetaStudio loads it, with the test kit
```

## Test

```sh
pytest                 # the test kit (metastudio.api.check_algorithm) and the entry point
.ci/run                # what CI runs: installs the package with its tests, then pytest
```

`.ci/run` is a plain shell script, so the same check runs on a laptop and on any CI service;
set `PYTHON` to the interpreter to use and `METASTUDIO` to a requirement or path to install
MetaStudio from first.

## Use

```sh
{{train}}
# ... then classify your own images with the model: one sub-folder of examples per class.
metastudio classify --model {{module}}-omniglot.safetensors --support my_examples/ --query new_images/
```

In the app, choose the algorithm `{{title}}` under **Advanced** or on the **Meta-train** tab.
`--hp temperature=VALUE` changes how confident its predictions are, in training and in use.

## Next

Change `{{class}}` in `src/{{module}}/plugin.py` into your algorithm; the test kit says
which part of the contract a change breaks. What each hook must return:
`metastudio/plugins/hookspecs.py` in MetaStudio; the guide is MetaStudio's `docs/plugins.md`.
'''

TRAIN_EPISODES = '''\
# Meta-train it on episodes (here of Omniglot, downloaded on first use) ...
metastudio train --algorithm {{name}} --backbone conv4 --dataset omniglot --ways 20 --shots 1 \\
    --queries 5 --episodes 2000 --out {{module}}-omniglot.safetensors'''

TRAIN_BATCHES = '''\
# Train it on labelled batches of every training class (here of Omniglot, downloaded on first use) ...
metastudio train --algorithm {{name}} --backbone conv4 --dataset omniglot --batch-steps 10000 \\
    --batch-size 64 --out {{module}}-omniglot.safetensors'''

PLUGIN_BATCHES = '''\
"""{{title}}: pretrain, then nearest class mean (SimpleShot, Wang et al. 2019, at its smallest).

Training is not episodic (``trains_on = "batches"``): the backbone and a linear classifier of
every training class learn with cross-entropy on labelled batches. The classifier is only for
training (in ``training_modules``: resumed, never in the model file). The features are centred
on the mean feature of the training images and scaled to unit length (``feature_transform``,
CL2N); the mean follows the network while it trains (``feature_mean_fitted``). A new image goes
to the nearest mean of each class's examples. Everything comes from ``metastudio.api``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from metastudio.api import (
    TRAINING_HYPERPARAMETERS, AdaptProgress, Algorithm, FeatureTransformMixin, HyperParameter, LabelledBatch,
    Learner, SupportSet, class_means, feature_transform_hyperparameter, hookimpl,
)

#: The version of MetaStudio's hook API this plugin is written against.
METASTUDIO_API_VERSION = {{api_version}}


class NearestMean(FeatureTransformMixin, Algorithm):
    """A classifier of every training class, then the nearest class mean of transformed features."""

    name = "{{name}}"  # what 'metastudio train --algorithm' and model files call it
    version = "1"  # raise it when what the model saves changes
    title = "{{title}}"
    family = "metric"
    description = "Trains a plain classifier of every training class, then classifies by the nearest class mean."
    trains_on = "batches"
    feature_mean_fitted = "by the algorithm"  # update_feature_mean below keeps it up to date
    hyperparameters = TRAINING_HYPERPARAMETERS + (
        feature_transform_hyperparameter("cl2n"),
        HyperParameter("temperature", float, 10.0, "Multiplies minus the squared distances before the softmax "
                       "(larger = more confident predictions).", 0.01, 1000.0, role="adaptation"),
    )

    def start_batch_training(self, classes: int) -> None:
        self.training_modules["classifier"] = torch.nn.Linear(self.backbone.out_features, classes)

    def batch_train_step(self, batch: LabelledBatch) -> dict[str, float]:
        # The classifier learns from the features before the transform; labels arrive on the CPU.
        logits = self.training_modules["classifier"](self.backbone_features(batch.images))
        labels = batch.labels.to(logits.device)
        loss = F.cross_entropy(logits, labels)
        self.optimizer_step(loss)
        self.update_feature_mean(batch.images[:16])
        return {"loss": loss.item(), "accuracy": (logits.argmax(1) == labels).float().mean().item()}

    def adapt(self, support: SupportSet, progress=None) -> Learner:
        features = self.embed_all(support.images)  # transformed; in eval mode, without gradients
        means = class_means(features, support.labels.to(features.device), support.ways)
        if progress is not None:
            progress(AdaptProgress(1, 1))  # adaptation is one step, and it is done
        return MeanLearner(self, means, support.class_names)

    def restore_learner(self, class_names: Sequence[str], state: Mapping[str, torch.Tensor]) -> Learner:
        """A learner saved with a project (what its learner_state returned), rebuilt."""
        return MeanLearner(self, state["means"].to(self.device), class_names)


class MeanLearner(Learner):
    """One support set's classifier: the algorithm (a submodule) and the class means (a buffer)."""

    def __init__(self, algorithm: NearestMean, means: torch.Tensor, class_names: Sequence[str]):
        super().__init__(class_names, algorithm)
        self.register_buffer("means", means)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        squared = (self.algorithm.embed(images).unsqueeze(1) - self.means).pow(2).sum(2)  # [B, N]
        return -self.algorithm.hparams["temperature"] * squared

    def learner_state(self) -> dict[str, torch.Tensor]:
        return {"means": self.means}


@hookimpl
def metastudio_algorithms():
    return [NearestMean]
'''

CI_RUN = '''\
#!/usr/bin/env bash
# CI: install this plugin with its test extra into the current Python environment, then run its tests.
# PYTHON picks the interpreter (default python3); METASTUDIO, when set, is a requirement or a
# path to install MetaStudio from first (e.g. METASTUDIO=../metastudio).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ -n "${METASTUDIO:-}" ]; then
    "$PYTHON" -m pip install "$METASTUDIO"
fi
"$PYTHON" -m pip install -e ".[test]"
"$PYTHON" -m pytest
'''

GITIGNORE = '''\
__pycache__/
*.egg-info/
build/
dist/
.pytest_cache/
'''
