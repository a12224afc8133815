"""``metastudio new-plugin``: the package it writes installs as a third party's would
(``pip install --no-build-isolation --no-deps -e .``), its own tests pass, and ``metastudio
plugins validate`` finds it clean; a broken copy is named problem by problem.

pip installs into environments of the test's own, never into the test venv: an *overlay* venv
in a temporary folder (its site-packages takes the test venv's as a site folder, so torch and
MetaStudio are there, but pip writes only into the overlay), and a ``--target`` folder put on
``PYTHONPATH`` for the installed ``metastudio`` command.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest
from conftest import METASTUDIO_COMMAND
from packaging.specifiers import SpecifierSet
from packaging.version import Version

import metastudio

NAME = "demo"
FILES = ("pyproject.toml", "src/demo/__init__.py", "src/demo/plugin.py", "tests/test_plugin.py", "README.md", ".ci/run")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "METASTUDIO_DISABLE_PLUGINS",
                                                               "METASTUDIO_SAFE_MODE", "PYTEST_ADDOPTS")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["PIP_NO_INDEX"] = "1"  # offline: everything the package needs is installed already
    return {**env, **extra}


def _run(args, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], cwd=cwd, env=env or _env(), capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    """``metastudio new-plugin demo``, run in an empty folder."""
    root = tmp_path_factory.mktemp("new-plugin")
    done = _run([METASTUDIO_COMMAND, "new-plugin", NAME], root)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "metastudio-demo" in done.stdout and "pip install -e" in done.stdout
    return root / NAME


@pytest.fixture(scope="module")
def overlay(tmp_path_factory) -> Path:
    """A venv whose own site-packages is empty but which sees the test venv's packages: what pip
    installs with its python goes into the overlay only."""
    folder = tmp_path_factory.mktemp("overlay") / "venv"
    done = _run([sys.executable, "-m", "venv", "--without-pip", folder], folder.parent)
    assert done.returncode == 0, done.stderr
    site = Path(sysconfig.get_path("purelib", vars={"base": str(folder), "platbase": str(folder)}))
    # An "import" line of a .pth file runs at start-up: the test venv's site-packages, with its own .pth files.
    (site / "_test_venv.pth").write_text(f"import site; site.addsitedir({sysconfig.get_paths()['purelib']!r})\n")
    return folder


def _installed_in_test_venv(distribution: str) -> bool:
    probe = ("import importlib.metadata as m, sys; "
             f"sys.exit(0 if any(d.name == {distribution!r} for d in m.distributions()) else 1)")
    return _run([sys.executable, "-c", probe], Path.cwd()).returncode == 0


def test_the_package_is_complete_and_written_against_the_api_only(generated):
    for relative in FILES:
        assert (generated / relative).is_file(), relative
    assert os.access(generated / ".ci" / "run", os.X_OK)
    project = tomllib.loads((generated / "pyproject.toml").read_text())
    meta = project["project"]
    assert (meta["name"], meta["version"], meta["requires-python"]) == ("metastudio-demo", "0.1.0", ">=3.11")
    assert meta["description"] and project["build-system"]["build-backend"] == "setuptools.build_meta"
    assert meta["entry-points"]["metastudio"] == {NAME: "demo.plugin"}
    assert meta["optional-dependencies"]["test"] == ["pytest"] and "ini_options" in project["tool"]["pytest"]
    # The requirement admits the running MetaStudio and nothing of the next major version.
    (requirement,) = meta["dependencies"]
    assert requirement.startswith("metastudio>=")
    allowed = SpecifierSet(requirement[len("metastudio"):])
    running = Version(metastudio.__version__)
    assert running in allowed and Version(f"{running.major + 1}.0") not in allowed
    # The plugin imports nothing of MetaStudio but metastudio.api, and declares the hook API version.
    tree = ast.parse((generated / "src/demo/plugin.py").read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert {m for m in imported if m.startswith("metastudio")} == {"metastudio.api"}
    assert "METASTUDIO_API_VERSION = 1" in (generated / "src/demo/plugin.py").read_text()
    readme = (generated / "README.md").read_text()
    assert "pip install -e" in readme and "--algorithm demo" in readme and "metastudio classify" in readme


def test_the_package_installs_editable_and_its_tests_pass(generated, overlay):
    python = overlay / "bin" / "python"
    done = _run([python, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "-e", "."], generated)
    assert done.returncode == 0, done.stdout + done.stderr
    try:
        tests = _run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider"], generated)
        assert tests.returncode == 0, tests.stdout + tests.stderr
        assert "2 passed" in tests.stdout, tests.stdout
    finally:
        _run([python, "-m", "pip", "uninstall", "-y", "metastudio-demo"], generated)
    assert not _installed_in_test_venv("metastudio-demo"), "pip wrote into the test venv"


def test_metastudio_plugins_validate_finds_the_installed_package_clean(generated, tmp_path):
    site = tmp_path / "site"
    done = _run([sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "--target", site,
                 generated], tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    env = _env(PYTHONPATH=str(site))
    checked = _run([METASTUDIO_COMMAND, "plugins", "validate", NAME], tmp_path, env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "ok: algorithm demo passes the test kit" in checked.stdout
    assert checked.stdout.strip().splitlines()[-1] == "no problems: demo (entry point) provides algorithm demo"
    assert "checking plugin demo (module demo.plugin, package metastudio-demo 0.1.0)" in checked.stdout
    assert not _installed_in_test_venv("metastudio-demo")


BROKEN_HOOKS = '''

class RaisingAdapt(NearestCentroid):
    name = "raising-adapt"

    def adapt(self, support, progress=None):
        raise RuntimeError("the centroids are on holiday")


class Impostor(NearestCentroid):
    name = "protonet"


@hookimpl
def metastudio_algoritms():
    return [NearestCentroid]


@hookimpl
def metastudio_algorithms():
    return [NearestCentroid, RaisingAdapt, Impostor, NearestCentroid, "demo"]
'''


def test_a_broken_copy_is_named_problem_by_problem(generated, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(generated, broken)
    plugin = broken / "src" / "demo" / "plugin.py"
    source = plugin.read_text()
    hook = source.index("@hookimpl\ndef metastudio_algorithms():")
    plugin.write_text(source[:hook] + BROKEN_HOOKS)
    done = _run([METASTUDIO_COMMAND, "plugins", "validate", broken, "--json"], tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert (result["kind"], result["ok"]) == ("project folder", False)
    problems = {(p["check"], p["message"]): p for p in result["problems"]}

    def find(check: str, *words: str) -> dict:
        found = [p for (c, m), p in problems.items() if c == check and all(w in m for w in words)]
        assert len(found) == 1, (check, words, result["problems"])
        return found[0]

    misspelt = find("hooks", "metastudio_algoritms")
    assert "metastudio_algorithms" in misspelt["fix"]
    assert "subclass of metastudio.api.Algorithm" in find("hook results", "'demo'")["message"]
    assert "rename" in find("names", "'protonet'", "built-in")["fix"]
    find("names", "'demo' twice")
    raised = find("test kit", "raising-adapt", "the centroids are on holiday")
    assert str(plugin) in raised["message"] and "in adapt" in raised["message"]
    assert "RuntimeError" in raised["traceback"]
    assert result["errors"] == 5 and all(p["severity"] == "error" for p in result["problems"])
    # The good algorithm of the same plugin still passes; the impostor and the duplicate are not run.
    assert result["plugins"][0]["passed"] == [{"kind": "algorithm", "name": "demo"}]


def test_new_plugin_refuses_a_folder_in_the_way(tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    done = _run([METASTUDIO_COMMAND, "new-plugin", "taken", "--out", tmp_path], tmp_path)
    assert (done.returncode, done.stdout) == (1, ""), done.stdout + done.stderr
    assert done.stderr.startswith("error: ") and len(done.stderr.splitlines()) == 1
    assert f"the folder '{tmp_path / 'taken'}' exists and is not empty" in done.stderr
    assert [p.name for p in (tmp_path / "taken").iterdir()] == ["notes.txt"]


@pytest.mark.parametrize("name, words", [
    ("My Algo", "cannot be a plugin name"), ("My_Algo", "(lower case: 'my_algo')"),
    ("9lives", "starting with a letter"), ("two--dashes", "single '-' or '_'"), ("x" * 41, "at most 40"),
    ("protonet", "already named 'protonet'"),
    ("json", "Python itself uses"), ("class", "Python itself uses"), ("metastudio-x", "leave 'metastudio' out"),
])
def test_new_plugin_refuses_names_that_cannot_be_a_plugin(tmp_path, name, words):
    from metastudio.app.newplugin import NewPluginError, write_plugin_package

    with pytest.raises(NewPluginError) as info:
        write_plugin_package(name, tmp_path)
    assert words in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_new_plugin_names_and_an_empty_folder(tmp_path):
    from metastudio.app.newplugin import plugin_names, write_plugin_package

    names = plugin_names("my-algo_2")
    assert (names.name, names.module, names.distribution, names.title) == (
        "my-algo_2", "my_algo_2", "metastudio-my-algo_2", "My Algo 2")
    (tmp_path / "my-algo_2").mkdir()
    made = write_plugin_package("my-algo_2", tmp_path)
    assert made.folder == tmp_path / "my-algo_2" and (made.folder / "src" / "my_algo_2" / "plugin.py").is_file()
    project = tomllib.loads((made.folder / "pyproject.toml").read_text())
    assert project["project"]["entry-points"]["metastudio"] == {"my-algo_2": "my_algo_2.plugin"}
    assert 'name = "my-algo_2"' in (made.folder / "src" / "my_algo_2" / "plugin.py").read_text()
    assert "from my_algo_2.plugin import NearestCentroid" in (made.folder / "tests" / "test_plugin.py").read_text()
    assert not any("{{" in (made.folder / f).read_text() for f in made.files)


@pytest.mark.long
def test_the_ci_script_installs_the_package_and_runs_its_tests(generated, overlay, tmp_path):
    """.ci/run, as a plugin's CI runs it (offline here: pip builds without isolation)."""
    package = tmp_path / "package"
    shutil.copytree(generated, package)
    python = overlay / "bin" / "python"
    # PIP_NO_BUILD_ISOLATION=0 is how pip's environment turns build isolation off.
    env = _env(PYTHON=str(python), PIP_NO_BUILD_ISOLATION="0")
    try:
        done = _run(["bash", package / ".ci" / "run"], tmp_path, env)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "2 passed" in done.stdout
    finally:
        _run([python, "-m", "pip", "uninstall", "-y", "metastudio-demo"], tmp_path)
    assert not _installed_in_test_venv("metastudio-demo")


def test_a_package_whose_algorithm_trains_on_batches_validates_clean_from_its_folder(tmp_path):
    """``--trains-on batches`` starts from SimpleShot at its smallest: a classifier of every
    training class, then the nearest class mean; the test kit passes it as written."""
    done = _run([METASTUDIO_COMMAND, "new-plugin", "demo-batches", "--trains-on", "batches"], tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    folder = tmp_path / "demo-batches"
    plugin = (folder / "src/demo_batches/plugin.py").read_text()
    assert 'trains_on = "batches"' in plugin and "class NearestMean(FeatureTransformMixin, Algorithm)" in plugin
    assert "from demo_batches.plugin import NearestMean" in (folder / "tests/test_plugin.py").read_text()
    assert "--batch-steps" in (folder / "README.md").read_text()
    checked = _run([METASTUDIO_COMMAND, "plugins", "validate", folder], tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "ok: algorithm demo-batches passes the test kit" in checked.stdout, checked.stdout
    wrong = _run([METASTUDIO_COMMAND, "new-plugin", "other", "--trains-on", "pixels"], tmp_path)
    assert wrong.returncode == 2 and "invalid choice: 'pixels'" in wrong.stderr
