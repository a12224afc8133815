"""MetaStudio's pytest plugin: fixtures for the tests of a MetaStudio plugin package.

pytest loads it by itself wherever MetaStudio is installed (the ``pytest11`` entry point
``metastudio``), so a plugin's own tests can use these fixtures without a conftest.py:

``metastudio_tiny_dataset``
    A tiny synthetic :class:`~metastudio.data.datasets.FewShotDataset` (12 classes of 8
    one-channel 28x28 images; :func:`metastudio.api.synthetic_dataset` makes other shapes).
``metastudio_host``
    The process's plugin host, loaded afresh for the test: every installed plugin (your package
    too once it is installed, ``pip install -e .``), plus the plugin modules named in the ini
    option ``metastudio_plugins`` (for a plugin not installed yet). MetaStudio's cache folder
    is a temporary one for the test.
``make_metastudio_model``
    ``make(algorithm="protonet", *, backbone="conv4", steps=2, hparams=None, dataset=None)``
    meta-trains the algorithm (a name the host knows, or its class) for a few steps on the tiny
    dataset and returns the path of the model file, ready for ``metastudio_session.load`` or a
    window. ``steps`` is each kind of step the algorithm's ``trains_on`` names: ``steps`` batch
    steps for ``"batches"``, that many batch steps and then that many episode steps for
    ``"batches+episodes"``.
``metastudio_session``
    A :class:`~metastudio.app.session.ClassifierSession` on the CPU with ``metastudio_host``:
    what the app and ``metastudio classify`` drive. ``session.load(path)`` loads a model file;
    ``session.run(support, queries)`` takes image files, ``support`` as ``[(class name,
    [(image id, path), ...]), ...]`` and ``queries`` as ``[(image id, path), ...]`` (ids are
    any strings), and returns a result whose ``status`` is ``"ok"``, whose ``class_names`` are
    the classes in order and whose ``probabilities`` map each query id to one probability per
    class (``problems`` names the images that could not be read, and why).
``make_metastudio_window``
    ``make(model=None, *, project=None)`` opens the app's main window (shown, on the CPU, its
    settings and recovery copies in the test's temporary folder, dialogs answered "discard")
    with ``model`` (a model file, a model name, or the one ``make_metastudio_model`` makes of
    Prototypical Networks when None); every window is shut down and its threads joined after
    the test. Like napari's ``make_napari_viewer``, for a smoke test of your plugin in the GUI.
    Needs pytest-qt (its ``qtbot``); the test is skipped, saying why, without pytest-qt or PySide6.

Example, in a plugin package's ``tests/test_plugin.py``::

    from metastudio.api import check_algorithm

    def test_contract(metastudio_host, tmp_path):
        check_algorithm(metastudio_host.algorithm("mine"), host=metastudio_host, tmp_path=tmp_path)

    def test_classifies_in_the_app(make_metastudio_model, make_metastudio_window, qtbot):
        window = make_metastudio_window(make_metastudio_model("mine"))
        qtbot.waitUntil(lambda: window.catalog is not None, timeout=60_000)

and, for a plugin module that is not installed yet, in ``pytest.ini`` (or ``[tool.pytest.ini_options]``)::

    [pytest]
    metastudio_plugins = my-plugin = my_package.metastudio_plugin

At the end of a run the plugin lists the test kit's checks that were skipped and why (no CUDA
device, ONNX not asked for...). Loading it costs next to nothing: it imports nothing but pytest
until a fixture is used (no torch, no Qt), so pytest's start in any project where MetaStudio is
installed stays as fast. ``pytest -p no:metastudio`` turns it off.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

#: How long make_metastudio_window waits for a window's threads to finish after the test (ms).
WINDOW_WAIT_MS = 60_000
#: How many checks the test kit had skipped in this process when the session started.
_SKIPS_BEFORE = pytest.StashKey[int]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini("metastudio_plugins", type="linelist", default=[],
                  help="MetaStudio plugin modules the metastudio_host fixture registers besides the installed "
                       "plugins, one a line: 'module' or 'plugin-name = module'")


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[_SKIPS_BEFORE] = len(_kit_skips())


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    """One line per test kit check skipped in this run (and why), with the algorithms it was."""
    skipped = _kit_skips()[config.stash.get(_SKIPS_BEFORE, 0):]
    if not skipped:
        return
    by_reason: dict[tuple[str, str], list[str]] = {}
    for algorithm, check, reason in skipped:
        names = by_reason.setdefault((check, reason), [])
        if algorithm not in names:
            names.append(algorithm)
    terminalreporter.section("MetaStudio test kit: checks skipped", sep="-")
    for (check, reason), names in by_reason.items():
        shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
        terminalreporter.write_line(f"{check}: {reason} ({shown})")


def _kit_skips() -> list[tuple[str, str, str]]:
    """What the test kit skipped in this process, if it was imported at all (it imports torch)."""
    import sys

    support = sys.modules.get("metastudio.plugins.testkit_support")
    return support.skipped_checks() if support is not None else []


# ----------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture
def metastudio_tiny_dataset():
    """A tiny synthetic FewShotDataset: 12 classes of 8 one-channel 28x28 uint8 images."""
    from metastudio.plugins.testkit import synthetic_dataset

    return synthetic_dataset()


def _plugin_lines(lines: list[str]) -> list[tuple[str, str]]:
    """(plugin name, module) of each ``metastudio_plugins`` line."""
    out = []
    for line in lines:
        name, _, module = line.partition("=")
        name, module = (name.strip(), module.strip()) if module.strip() else (name.strip(), name.strip())
        if name and module:
            out.append((name, module))
    return out


@pytest.fixture
def metastudio_host(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                    monkeypatch: pytest.MonkeyPatch):
    """The process's plugin host, loaded afresh: the installed plugins and those of the
    ``metastudio_plugins`` ini option; forgotten again after the test."""
    from metastudio.plugins import get_host, reset_host

    monkeypatch.setenv("METASTUDIO_CACHE_DIR", str(tmp_path_factory.mktemp("metastudio-cache")))
    reset_host()
    host = get_host()
    loaded = {record.module for record in host.records.values()}
    for name, module_name in _plugin_lines(request.config.getini("metastudio_plugins")):
        if module_name in loaded:
            continue  # installed as well: its entry point loaded it
        try:
            module = importlib.import_module(module_name)
        except Exception as e:  # noqa: BLE001 - any import error of the plugin under test
            reset_host()
            pytest.fail(f"metastudio_plugins names '{module_name}', which could not be imported: "
                        f"{type(e).__name__}: {e}", pytrace=False)
        record = host.register_module(module, name)
        if record.status != "ok":
            reset_host()
            pytest.fail(f"the plugin '{name}' ({module_name}, from metastudio_plugins) did not load: {record.error}",
                        pytrace=False)
    yield host
    reset_host()


@pytest.fixture
def make_metastudio_model(metastudio_host, tmp_path_factory: pytest.TempPathFactory):
    """``make(algorithm="protonet", *, backbone="conv4", steps=2, hparams=None, dataset=None)``:
    a model file of the algorithm, meta-trained ``steps`` steps on the tiny dataset (or on
    ``dataset``), in a temporary folder; returns its path."""
    folder = tmp_path_factory.mktemp("metastudio-models")

    def make(algorithm: Any = "protonet", *, backbone: str = "conv4", steps: int = 2,
             hparams: Mapping[str, Any] | None = None, dataset=None) -> Path:
        import torch

        from metastudio.engine.checkpoint import save_model
        from metastudio.plugins.testkit import synthetic_dataset
        from metastudio.plugins.testkit_support import configure, step_functions, trains_on

        cls = metastudio_host.algorithm(algorithm if isinstance(algorithm, str) else algorithm.name)
        ds = dataset if dataset is not None else synthetic_dataset()
        spec = metastudio_host.backbone(backbone)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = cls(spec.build(ds.channels, ds.image_size), backbone_name=spec.name, image_size=ds.image_size,
                        channels=ds.channels, hparams=dict(hparams or {}))
            if steps > 0:
                configure(model, ds, steps)
                for kind in trains_on(model):
                    train, _ = step_functions(model, kind, ds)
                    for i in range(steps):
                        train(i)
        model.eval()
        return save_model(model, folder / f"{cls.name}-{backbone}.safetensors", dataset={"name": ds.name})

    return make


@pytest.fixture
def metastudio_session(metastudio_host):
    """A ClassifierSession on the CPU with ``metastudio_host`` (``load`` a model file first)."""
    from metastudio.app.session import ClassifierSession

    return ClassifierSession(metastudio_host, "cpu")


def _model_choice(model: Any) -> dict[str, Any]:
    """What a project says about its model: a file (a path), or a shipped or plugin model (a name)."""
    if isinstance(model, Mapping):
        return dict(model)
    if isinstance(model, os.PathLike) or (isinstance(model, str) and (os.sep in model or model.endswith(".safetensors"))):
        return {"kind": "file", "path": str(Path(model).resolve())}
    return {"kind": "shipped", "name": str(model)}


@pytest.fixture
def make_metastudio_window(request: pytest.FixtureRequest, metastudio_host, make_metastudio_model,
                           tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """``make(model=None, *, project=None)``: shown main windows on the CPU, shut down and joined
    after the test (needs pytest-qt and PySide6; skipped without them)."""
    missing = [name for name, module in (("PySide6", "PySide6"), ("pytest-qt", "pytestqt"))
               if importlib.util.find_spec(module) is None]
    if missing:
        pytest.skip(f"make_metastudio_window needs {' and '.join(missing)} (pip install pytest-qt; PySide6 "
                    "comes with MetaStudio)")
    try:
        qtbot = request.getfixturevalue("qtbot")
    except pytest.FixtureLookupError:
        pytest.skip("make_metastudio_window needs pytest-qt's qtbot fixture, and the pytest-qt plugin is not loaded "
                    "(-p no:pytestqt?)")
    from pytestqt.qt_compat import qt_api  # pytest-qt's view of the Qt binding (PySide6 here)

    from metastudio.app.project import Project
    from metastudio.gui.mainwindow import MainWindow

    monkeypatch.setenv("METASTUDIO_RECOVERY_DIR", str(tmp_path / "metastudio-recovery"))
    settings_file = tmp_path / "metastudio-settings.ini"
    made: list[Any] = []

    def make(model: Any = None, *, project=None):
        if project is None:
            project = Project()
            project.model = _model_choice(model if model is not None else make_metastudio_model())
        settings = qt_api.QtCore.QSettings(str(settings_file), qt_api.QtCore.QSettings.Format.IniFormat)
        window = MainWindow(project, device="cpu", ask_restore=False, recovery_dir=tmp_path / "metastudio-recovery",
                            settings=settings)
        window.confirm = lambda *args, **kwargs: qt_api.QtWidgets.QMessageBox.StandardButton.Discard
        qtbot.addWidget(window)
        window.show()
        made.append(window)
        return window

    yield make
    for window in made:
        window.controller.mark_saved()
        window.shutdown()
        qtbot.waitUntil(window.engine.thread.isFinished, timeout=WINDOW_WAIT_MS)
        qtbot.waitUntil(window.thumbnails.thread.isFinished, timeout=WINDOW_WAIT_MS)
