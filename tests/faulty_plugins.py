"""Six faulty third-party plugins, installed the way pip leaves a package, for the tests of how
MetaStudio contains a plugin that fails (tests/plugins/test_plugin_faults.py, the GUI's tests).

Each fault ``KIND`` of :data:`FAULTS` is its own distribution ``metastudio-fault-KIND`` 1.0 with
the module ``mstest_fault_KIND`` and the entry point ``fault-KIND``, and would provide the
algorithm ``fault_KIND``: a Prototypical Networks whose one part is broken. Two fail as they
load (:data:`LOAD_FAULTS`: an import error, a hook that raises); four load and fail when used
(:data:`RUN_FAULTS`): ``adapt`` raises, the learner gives NaN probabilities, or twice as many
rows as there are images, or ``adapt`` hangs until the module's ``RELEASE`` event is set (600 s
at most; :func:`release` sets it in this process).

:func:`install` writes them into a folder (a test's ``site``); a subprocess finds them with that
folder on ``PYTHONPATH`` (:func:`env`). :func:`make_model` writes a model file of a fault's
algorithm (Conv-4, 28 px greyscale, untrained) that ``metastudio classify`` and ``eval`` open.
"""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import numpy as np
from PIL import Image
from plugin_packages import on_path, write_distribution

FAULTS = ("import_error", "raising_hook", "raising_adapt", "nan_output", "wrong_shape", "hanging_adapt")
LOAD_FAULTS = ("import_error", "raising_hook")
RUN_FAULTS = ("raising_adapt", "nan_output", "wrong_shape", "hanging_adapt")
VERSION = "1.0"
IMAGE_SIZE, CHANNELS = 28, 1

#: The words of each fault's own error, as the plugin raises it (the host adds the rest).
RAISED = {
    "import_error": "No module named 'mstest_fault_licence_server'",
    "raising_hook": "the fault_raising_hook licence has expired",
    "raising_adapt": "the support set broke fault_raising_adapt",
}


def module_name(kind: str) -> str:
    return f"mstest_fault_{kind}"


def distribution(kind: str) -> str:
    return f"metastudio-fault-{kind}"


def entry_point(kind: str) -> str:
    return f"fault-{kind}"


def algorithm_name(kind: str) -> str:
    return f"fault_{kind}"


def origin_words(kind: str) -> str:
    """How a message names the fault's plugin: ``plugin fault-KIND (package metastudio-fault-KIND 1.0)``."""
    return f"plugin {entry_point(kind)} (package {distribution(kind)} {VERSION})"


_HEADER = '''
"""A faulty MetaStudio plugin for tests: {kind}."""
import threading

import torch

from metastudio.api import Algorithm, hookimpl
from metastudio_builtins.algorithms.protonet import PrototypicalNetworks

RELEASE = threading.Event()


class Fault(PrototypicalNetworks):
    name = "{name}"
    title = "Faulty ({kind})"
    # Evaluation adapts and predicts step by step (Prototypical Networks does both in one pass).
    evaluate_episode = Algorithm.evaluate_episode
'''

_BODIES = {
    "import_error": '''
import mstest_fault_licence_server  # not installed
''' + _HEADER,
    "raising_hook": _HEADER + '''

@hookimpl
def metastudio_algorithms():
    raise RuntimeError("{raised}")
''',
    "raising_adapt": _HEADER + '''
    def adapt(self, support, progress=None):
        raise RuntimeError("{raised}")
''',
    "nan_output": _HEADER + '''
    def logits(self, queries, prototypes):
        return super().logits(queries, prototypes) * float("nan")
''',
    "wrong_shape": _HEADER + '''
    def logits(self, queries, prototypes):
        out = super().logits(queries, prototypes)
        return torch.cat([out, out])  # a row too many for every query
''',
    "hanging_adapt": _HEADER + '''
    def adapt(self, support, progress=None):
        RELEASE.wait(600)
        return super().adapt(support, progress)
''',
}

_HOOK = '''

@hookimpl
def metastudio_algorithms():
    return [Fault]
'''


def source(kind: str) -> str:
    """The module source of the fault ``kind``."""
    body = _BODIES[kind].format(kind=kind, name=algorithm_name(kind), raised=RAISED.get(kind, ""))
    return textwrap.dedent(body + ("" if kind == "raising_hook" else _HOOK))


def install(site: Path, monkeypatch=None, kinds=FAULTS) -> None:
    """Write one distribution per fault of ``kinds`` into ``site`` (module, ``.dist-info`` with
    METADATA and entry_points.txt). With ``monkeypatch``, also put ``site`` on ``sys.path`` for
    the test (everything is written first, so no finder caches a half-made tree)."""
    site = Path(site)
    for kind in kinds:
        write_distribution(site, entry_point(kind), distribution(kind), module_name(kind), source(kind), VERSION)
    if monkeypatch is not None:
        on_path(site, monkeypatch)


def env(site: Path) -> dict[str, str]:
    """The environment for a ``metastudio`` subprocess that finds the plugins of ``site``."""
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), environment.get("PYTHONPATH", "")) if p)
    environment.pop("METASTUDIO_DISABLE_PLUGINS", None)
    environment.pop("METASTUDIO_SAFE_MODE", None)
    return environment


def release() -> None:
    """Let every hanging adapt of this process finish (its module's ``RELEASE`` event)."""
    module = sys.modules.get(module_name("hanging_adapt"))
    if module is not None:
        module.RELEASE.set()


def write_images(folder: Path, classes: int = 2, per_class: int = 2, seed: int = 0) -> Path:
    """``folder/classNN/imgN.png``: small greyscale pictures, a different blob per class."""
    rng = np.random.default_rng(seed)
    for c in range(classes):
        (folder / f"class{c:02d}").mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = np.full((IMAGE_SIZE, IMAGE_SIZE), 230, np.uint8)
            y, x = 4 + 8 * (c % 3), 4 + 8 * ((c // 3) % 3)
            img[y:y + 10, x:x + 10] = 30
            img = np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)
            Image.fromarray(img, "L").save(folder / f"class{c:02d}" / f"img{i}.png")
    return folder


def make_model(site: Path, kind: str, path: Path, tmp_path: Path) -> Path:
    """Write a model file of the fault ``kind``'s algorithm (as installed into ``site`` by
    :func:`install`) to ``path``: Prototypical Networks' weights (untrained Conv-4, 28 px greyscale)
    under the algorithm name ``fault_KIND``, so that it opens only where that plugin loads. Also
    writes, when absent, ``tmp_path/support`` (two classes of two images) and ``tmp_path/query``
    (four images) to classify with. Returns ``path``."""
    import torch

    from metastudio.engine.checkpoint import save_model
    from metastudio_builtins.algorithms.protonet import PrototypicalNetworks
    from metastudio_builtins.backbones.networks import Conv4

    if not (Path(site) / f"{module_name(kind)}.py").is_file():
        raise FileNotFoundError(f"the fault {kind} is not installed in {site}: call install(site) first")
    same_weights = type("Fault", (PrototypicalNetworks,), {"name": algorithm_name(kind)})
    with torch.random.fork_rng():
        torch.manual_seed(0)
        algorithm = same_weights(Conv4(CHANNELS, IMAGE_SIZE), backbone_name="conv4", image_size=IMAGE_SIZE,
                                 channels=CHANNELS)
    save_model(algorithm, path)
    tmp_path = Path(tmp_path)
    if not (tmp_path / "support").exists():
        write_images(tmp_path / "support")
    if not (tmp_path / "query").exists():
        query = write_images(tmp_path / "query-classes", seed=1)
        (tmp_path / "query").mkdir()
        for i, f in enumerate(sorted(query.rglob("*.png"))):
            f.rename(tmp_path / "query" / f"q{i}.png")
    return Path(path)


def make_protonet_model(path: Path) -> Path:
    """A model file of the built-in Prototypical Networks, like :func:`make_model`'s."""
    import torch

    from metastudio.engine.checkpoint import save_model
    from metastudio_builtins.algorithms.protonet import PrototypicalNetworks
    from metastudio_builtins.backbones.networks import Conv4

    with torch.random.fork_rng():
        torch.manual_seed(0)
        algorithm = PrototypicalNetworks(Conv4(CHANNELS, IMAGE_SIZE), backbone_name="conv4", image_size=IMAGE_SIZE,
                                         channels=CHANNELS)
    save_model(algorithm, path)
    return Path(path)
