"""Shared fixtures: tiny synthetic image trees and datasets, an isolated cache, a fresh plugin host,
and for the GUI tests a window factory (their helpers are in gui_helpers.py)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

pytest_plugins = ["pytester"]

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# The nine algorithms the product must have, by registered name (metric-, model- and optimization-based).
#: The ``metastudio`` command pip installed beside this Python, as a person runs it.
METASTUDIO_COMMAND = str(Path(sys.executable).parent / "metastudio")

def dead_pid(start: int = 2**22 + 4321) -> int:
    """A pid no process has (searched upwards from ``start``, above Linux's default range)."""
    pid = start
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except OSError:  # it exists, under another user
            pass
        pid += 1


NINE_ALGORITHMS = ("protonet", "matchingnet", "siamese", "relationnet", "maml", "reptile", "metalstm", "mann", "metanet")
#: The built-in algorithms that train as plain classifiers on labelled batches (trains_on "batches").
BATCH_ALGORITHMS = ("simpleshot", "baselinepp")
#: Every built-in algorithm.
BUILTIN_ALGORITHMS = NINE_ALGORITHMS + BATCH_ALGORITHMS


@pytest.fixture
def one_thread():
    """Torch on one thread for the test (small models run faster so, and tests beside each
    other do not oversubscribe the cores); the previous count afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def assert_round_trip(host, tmp_path, algorithm, episode):
    """Adapt ``algorithm`` (eval mode) to the episode's support set, save it with the learner,
    load it: a fresh adaptation of the loaded model predicts the same probabilities, so does the
    saved learner, and the learner's stand-alone module (export) agrees. Returns the probabilities."""
    import torch

    from metastudio.engine.checkpoint import load_model, save_model

    learner = algorithm.adapt(episode.support)
    probs = learner.predict_proba(episode.query_images)
    path = tmp_path / f"{algorithm.name}-round-trip.safetensors"
    save_model(algorithm, path, learner=learner)
    loaded = load_model(path, host)
    assert torch.equal(loaded.algorithm.adapt(episode.support).predict_proba(episode.query_images), probs)
    assert loaded.learner is not None and loaded.learner.class_names == episode.class_names
    assert torch.allclose(loaded.learner.predict_proba(episode.query_images), probs, atol=1e-6)
    with torch.no_grad():
        exported = learner.standalone()(episode.query_images.float() / 255).softmax(1)
    assert torch.allclose(exported, probs, atol=1e-5)
    return probs


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Never write the user's real cache directory from tests."""
    monkeypatch.setenv("METASTUDIO_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.delenv("METASTUDIO_DISABLE_PLUGINS", raising=False)
    monkeypatch.delenv("METASTUDIO_SAFE_MODE", raising=False)


@pytest.fixture
def host():
    """A freshly loaded plugin host (and the process-wide one reset around the test)."""
    from metastudio.plugins import get_host, reset_host

    reset_host()
    yield get_host()
    reset_host()


def class_pattern(index: int, size: int, rng: np.random.Generator, channels: int = 3) -> np.ndarray:
    """A recognisable, noisy image of class ``index``: a class-specific colour and blob position."""
    base = np.random.default_rng(1000 + index)
    colour = base.integers(30, 226, size=channels)
    cy, cx = base.integers(size // 4, 3 * size // 4, size=2)
    yy, xx = np.mgrid[:size, :size]
    blob = ((yy - cy) ** 2 + (xx - cx) ** 2) < (size // 4) ** 2
    img = np.full((size, size, channels), 255 - colour // 2, dtype=np.float64)
    img[blob] = colour
    img += rng.normal(0, 12, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def make_class_tree(root: Path, classes: int = 4, per_class: int = 6, size: int = 32, *, nested: bool = False,
                    ext: str = ".png", seed: int = 0) -> Path:
    """Write ``root/<class>/<i>.png`` (or ``root/<group>/<class>/...`` when nested) and return root."""
    rng = np.random.default_rng(seed)
    for c in range(classes):
        folder = root / (f"group{c % 2}/class{c:02d}" if nested else f"class{c:02d}")
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(class_pattern(c, size, rng)).save(folder / f"img{i:03d}{ext}")
    return root


@pytest.fixture
def class_tree(tmp_path) -> Path:
    return make_class_tree(tmp_path / "tree")


def real_data(*parts: str) -> Path:
    """A path under ../shared/data, or skip the test with the reason when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real benchmark data not available: {path} does not exist (see ../shared/data/README.md)")
    return path


@pytest.fixture
def seeded_conv4(host):
    """A 'pretrained' backbone for tests: Conv-4 whose factory always builds the same weights."""
    import torch

    from metastudio.algorithms.backbone import BackboneSpec
    from metastudio_builtins.backbones.networks import Conv4

    def factory(channels, size):
        with torch.random.fork_rng():
            torch.manual_seed(1234)
            return Conv4(channels, size)

    spec = BackboneSpec("seeded-conv4", factory, "Conv-4 with fixed weights (tests)", 28, pretrained=True)
    host.backbones[spec.name] = spec
    return spec


def make_train_val_tree(root: Path, size: int = 28) -> Path:
    """A folder dataset with a validation split: ``root/train`` (8 classes) and ``root/val`` (5 other
    classes), 6 generated images of ``size`` pixels each; returns ``root``."""
    make_class_tree(root / "train", classes=8, per_class=6, size=size, seed=1)
    make_class_tree(root / "val", classes=5, per_class=6, size=size, seed=2)
    return root


@pytest.fixture(scope="module")
def folder_data(tmp_path_factory) -> Path:
    """``train/`` with 8 classes and ``val/`` with 5 classes of 6 small (28 px) images each."""
    return make_train_val_tree(tmp_path_factory.mktemp("train-and-val"))


@pytest.fixture
def images(tmp_path) -> Path:
    """``imgs/``: 3 classes x 6 images of class-specific blobs; ``query/``: 6 more (2 a class)."""
    root = make_class_tree(tmp_path / "imgs", classes=3, per_class=8, size=40)
    query = tmp_path / "query"
    query.mkdir()
    for c in range(3):
        for i in (6, 7):
            src = root / f"class{c:02d}" / f"img{i:03d}.png"
            src.rename(query / f"q{c}_{i}.png")
    return tmp_path


@pytest.fixture
def make_window(qtbot, tmp_path, monkeypatch):
    """Makes shown main windows on the CPU, with their settings and recovery folder in
    ``tmp_path``, dialogs answered by ``answer``; every one is shut down and joined afterwards.
    ``make(project=None, *, ask_restore=False, answer=Discard)``: without a project, an empty
    one with the shipped Omniglot model."""
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QMessageBox

    from gui_helpers import MODEL, WAIT_MS
    from metastudio.app.project import Project
    from metastudio.gui.mainwindow import MainWindow

    monkeypatch.setenv("METASTUDIO_RECOVERY_DIR", str(tmp_path / "recovery"))
    made = []

    def make(project=None, *, ask_restore=False, answer=QMessageBox.StandardButton.Discard):
        if project is None:
            project = Project()
            project.model = dict(MODEL)
        settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
        w = MainWindow(project, device="cpu", ask_restore=False, recovery_dir=tmp_path / "recovery", settings=settings)
        w.confirm = lambda *a, **k: answer
        qtbot.addWidget(w)
        w.show()
        made.append(w)
        if ask_restore:
            w.documents.offer_recovery()
        return w

    yield make
    for w in made:
        w.controller.mark_saved()
        w.shutdown()
        qtbot.waitUntil(w.engine.thread.isFinished, timeout=WAIT_MS)
        qtbot.waitUntil(w.thumbnails.thread.isFinished, timeout=WAIT_MS)
        assert not w.training.is_running()


@pytest.fixture
def panel(qtbot, host, tmp_path):
    """The Meta-train tab's panel, shown, saving models into ``tmp_path/models``; shut down
    (its run cancelled and joined) afterwards."""
    from metastudio.gui.training import TrainingPanel

    p = TrainingPanel(host=host, output_dir=tmp_path / "models")
    qtbot.addWidget(p)
    p.resize(1100, 700)
    p.show()
    yield p
    p.shutdown()
    assert not p.is_running()


@pytest.fixture(scope="module")
def tiny_host():
    """Built-ins plus a tiny backbone ("tiny", helpers.TINY) registered in-process (fast contract checks)."""
    import types

    from helpers import TINY
    from metastudio.plugins import PluginHost, hookimpl

    host = PluginHost(safe_mode=True, disabled=()).load_entry_points()  # built-ins only
    host.register_module(types.SimpleNamespace(metastudio_backbones=hookimpl(lambda: [TINY])), "tiny-backbone")
    assert host.records["tiny-backbone"].status == "ok", host.records["tiny-backbone"].error
    return host
