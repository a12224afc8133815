"""``metastudio plugins validate`` (metastudio.plugins.validate) on plugins written to a temporary
folder, installed as a third party's would be (tests/plugin_packages.py) or given by path; and
the tracebacks of ``metastudio plugins --traceback`` and ``--json``, through the installed command.

Most plugins here provide backbones and datasets, whose test-kit checks take a fraction of a
second; the algorithm kit is exercised by tests/plugins/test_new_plugin.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import faulty_plugins as fp
import pytest
from conftest import METASTUDIO_COMMAND, make_class_tree
from plugin_packages import install, on_path, write_distribution

from metastudio.plugins import reset_host
from metastudio.plugins.validate import validate

PREFIX = "mstest_"

#: A backbone and a dataset, as a third party writes them.
GOOD = '''
"""A small backbone and a class-folder dataset."""
from torch import nn

from metastudio.api import BackboneSpec, DatasetSpec, hookimpl, load_folder_split

METASTUDIO_API_VERSION = 1


class TinyNet(nn.Module):
    def __init__(self, in_channels):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(in_channels, 8, 3, stride=2, padding=1), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.out_features = 32

    def forward(self, x):
        return self.body(x)


@hookimpl
def metastudio_backbones():
    return [BackboneSpec("mstest-tiny", lambda c, s: TinyNet(c), "A tiny CNN.")]


@hookimpl
def metastudio_datasets():
    return [DatasetSpec("mstest-folders", load_folder_split, "Class folders.", splits=("train", "test"))]
'''

#: Seven problems, one of each kind a plugin without algorithms can have (and one backbone that passes).
MANY = '''
from torch import nn

from metastudio.api import BackboneSpec, hookimpl

METASTUDIO_API_VERSION = 99


def pooled(channels, size):
    return nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten())


class Maps(nn.Module):
    out_features = 16

    def forward(self, x):
        return x[:, :1, :4, :4].flatten(2)   # [B, 1, 16]: not [B, D]


@hookimpl
def metastudio_datsets():
    return []


def metastudio_algorithms():
    return []


@hookimpl
def metastudio_backbones():
    return [BackboneSpec("conv4", pooled, "an impostor"), BackboneSpec("mstest-pooled", pooled, "pools"),
            BackboneSpec("mstest-pooled", pooled, "pools again"), BackboneSpec("mstest-maps", lambda c, s: Maps()),
            "resnet"]
'''


@pytest.fixture(autouse=True)
def clean(monkeypatch):
    """A fresh process-wide host, and no test plugin module left behind."""
    reset_host()
    yield
    reset_host()
    for name in [m for m in sys.modules if m.startswith(PREFIX)]:
        del sys.modules[name]


def _write(folder: Path, name: str, source: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(source))
    return path


def _problems(result, check: str, *words: str) -> list:
    return [p for p in result.problems if p.check == check and all(w in p.message for w in words)]


def _one(result, check: str, *words: str):
    found = _problems(result, check, *words)
    assert len(found) == 1, (check, words, result.problems)
    return found[0]


# ----------------------------------------------------------------------------------------------
# targets


def test_a_clean_plugin_passes_by_entry_point_distribution_module_and_file(tmp_path, monkeypatch):
    site = tmp_path / "site"
    install(site, monkeypatch, {"mstest-good": ("metastudio-mstest-good", "mstest_good", GOOD)}, version="2.1")
    for target, kind in (("mstest-good", "entry point"), ("metastudio-mstest-good", "distribution"),
                         ("mstest_good", "module")):
        result = validate(target)
        assert (result.kind, result.ok, result.problems) == (kind, True, []), target
        (plugin,) = result.plugins
        assert (plugin.name, plugin.module, plugin.package, plugin.version) == (
            "mstest-good", "mstest_good", "metastudio-mstest-good", "2.1")
        assert plugin.components == [("backbone", "mstest-tiny"), ("dataset", "mstest-folders")]
        assert plugin.passed == [("backbone", "mstest-tiny")]
        assert any("mstest-folders" in note and "--dataset-root" in note for note in result.notes)
    by_file = validate(str(site / "mstest_good.py"))
    assert (by_file.kind, by_file.ok, by_file.plugins[0].passed) == ("file", True, [("backbone", "mstest-tiny")])


def test_the_dataset_kit_runs_on_each_split_given_data(tmp_path, monkeypatch):
    install(tmp_path / "site", monkeypatch, {"mstest-good": ("metastudio-mstest-good", "mstest_good", GOOD)})
    result = validate("mstest-good", dataset_root=make_class_tree(tmp_path / "data", classes=3, per_class=2))
    assert result.ok and result.notes == []
    assert result.plugins[0].passed == [("backbone", "mstest-tiny"), ("dataset", "mstest-folders")]
    empty = tmp_path / "empty"
    empty.mkdir()
    failing = validate("mstest-good", dataset_root=empty)
    assert not failing.ok and {p.message.split(":")[0] for p in _problems(failing, "test kit")} == {
        "dataset mstest-folders, split train", "dataset mstest-folders, split test"}


def test_a_project_folder_and_a_package_folder_validate_without_installing(tmp_path):
    project = tmp_path / "project"
    _write(project / "src" / "mstest_proj", "__init__.py", "")
    _write(project / "src" / "mstest_proj", "plugin.py", GOOD)
    _write(project, "pyproject.toml", '''
        [project]
        name = "metastudio-proj"
        version = "0.3.0"

        [project.entry-points.metastudio]
        proj = "mstest_proj.plugin"
    ''')
    result = validate(str(project))
    assert (result.kind, result.ok) == ("project folder", True), result.problems
    plugin = result.plugins[0]
    assert (plugin.name, plugin.module, plugin.package, plugin.version) == ("proj", "mstest_proj.plugin",
                                                                            "metastudio-proj", "0.3.0")
    assert str(project / "src") not in sys.path  # the folder is on the path only while it is checked
    for name in [m for m in sys.modules if m.startswith(PREFIX)]:
        del sys.modules[name]
    package = validate(str(project / "src" / "mstest_proj"))
    assert (package.kind, package.ok, package.plugins[0].module) == ("package folder", True, "mstest_proj.plugin")


def test_a_target_that_is_not_there_is_named_with_the_closest_plugin(tmp_path):
    result = validate("protonett")
    assert (result.kind, result.ok, result.plugins) == ("", False, [])
    assert "did you mean 'protonet'?" in _one(result, "target", "'protonett'").fix
    missing = validate(str(tmp_path / "nowhere.py"))
    assert "does not exist" in _one(missing, "target").message
    _write(tmp_path / "plain", "notes.txt", "no code")
    assert "without __init__.py or pyproject.toml" in _one(validate(str(tmp_path / "plain")), "target").message


def test_a_distribution_without_an_entry_point_and_a_module_no_package_declares(tmp_path, monkeypatch):
    site = tmp_path / "site"
    write_distribution(site, "unused", "metastudio-mstest-quiet", "mstest_quiet", GOOD)
    (next(site.glob("*.dist-info")) / "entry_points.txt").unlink()
    _write(site, "mstest_loose.py", GOOD)
    on_path(site, monkeypatch)
    quiet = validate("metastudio-mstest-quiet")
    assert (quiet.kind, quiet.ok, quiet.plugins) == ("distribution", False, [])
    assert "[project.entry-points.metastudio]" in _one(quiet, "entry point", "declares no 'metastudio'").fix
    loose = validate("mstest_loose")
    assert (loose.kind, loose.ok) == ("module", True)  # checked, with a warning that nothing loads it
    assert _one(loose, "entry point", "mstest_loose").severity == "warning"
    assert loose.plugins[0].passed == [("backbone", "mstest-tiny")]


# ----------------------------------------------------------------------------------------------
# problems


def test_every_problem_is_named_with_how_to_fix_it(tmp_path):
    result = validate(str(_write(tmp_path, "mstest_many.py", MANY)))
    assert result.kind == "file" and not result.ok
    assert "update MetaStudio" in _one(result, "api version", "needs hook API version 99").fix
    assert _one(result, "hooks", "metastudio_datsets").fix == "rename it metastudio_datasets (the closest hook)"
    assert "@hookimpl" in _one(result, "hooks", "metastudio_algorithms is not decorated").fix
    assert "BackboneSpec(" in _one(result, "hook results", "'resnet'", "not a BackboneSpec").fix
    assert "builtin-backbones" in _one(result, "names", "'conv4'", "built-in").message
    _one(result, "names", "'mstest-pooled' twice")
    assert "[backbone]" in _one(result, "test kit", "backbone mstest-maps").message
    assert len(result.errors) == 7 and result.warnings == []
    plugin = result.plugins[0]
    assert plugin.components == [("backbone", "conv4"), ("backbone", "mstest-pooled"), ("backbone", "mstest-maps")]
    assert plugin.passed == [("backbone", "mstest-pooled")]  # the impostor and the duplicate are not run
    assert all(p.fix and p.plugin == "mstest_many" for p in result.problems)


def test_failures_to_import_name_the_cause_and_keep_the_traceback(tmp_path, monkeypatch):
    install(tmp_path / "site", monkeypatch, {
        "mstest-needs": ("metastudio-mstest-needs", "mstest_needs", "import mstest_not_installed_anywhere\n"),
        "mstest-typo": ("metastudio-mstest-typo", "mstest_typo", "def metastudio_backbones(:\n    return []\n"),
    })
    needs = _one(validate("mstest-needs"), "import", "No module named 'mstest_not_installed_anywhere'")
    assert "install the module 'mstest_not_installed_anywhere'" in needs.fix
    assert needs.traceback.startswith("Traceback") and "mstest_needs.py" in needs.traceback
    typo = _one(validate("mstest-typo"), "import", "SyntaxError")
    assert f"{tmp_path / 'site' / 'mstest_typo.py'}:1" in typo.message


def test_hooks_that_take_arguments_raise_or_return_no_list(tmp_path, monkeypatch):
    install(tmp_path / "site", monkeypatch, {
        "mstest-args": ("metastudio-mstest-args", "mstest_args", '''
            from metastudio.api import hookimpl

            @hookimpl
            def metastudio_backbones(host):
                return []
        '''),
        "mstest-raises": ("metastudio-mstest-raises", "mstest_raises", '''
            from metastudio.api import hookimpl

            @hookimpl
            def metastudio_backbones():
                raise ValueError("weights file 'big.pt' is missing")

            @hookimpl
            def metastudio_datasets():
                return {"mstest-data": None}
        '''),
    })
    args = _one(validate("mstest-args"), "hooks", "cannot be registered")
    assert "host" in args.message and "take no arguments" in args.fix
    raises = validate("mstest-raises")
    raised = _one(raises, "hook results", "metastudio_backbones raised ValueError: weights file 'big.pt' is missing")
    assert f"{tmp_path / 'site' / 'mstest_raises.py'}:6, in metastudio_backbones" in raised.message
    assert "big.pt" in raised.traceback
    assert "return [DatasetSpec(" in _one(raises, "hook results", "metastudio_datasets returned dict").fix


def test_a_check_that_hangs_is_reported_after_the_time_limit(tmp_path):
    source = GOOD.replace('lambda c, s: TinyNet(c)', 'hang')
    source += '''

import threading
RELEASE = threading.Event()


def hang(channels, size):
    RELEASE.wait(60)
    return TinyNet(channels)
'''
    path = _write(tmp_path, "mstest_hangs.py", source)
    try:
        result = validate(str(path), time_limit=1)
        assert "did not finish within 1 s" in _one(result, "test kit", "backbone mstest-tiny").message
    finally:
        module = sys.modules.get("mstest_hangs")
        if module is not None:
            module.RELEASE.set()


def test_only_the_target_is_loaded(tmp_path, monkeypatch):
    """Another installed plugin, broken, is not imported and changes nothing."""
    site = tmp_path / "site"
    install(site, monkeypatch, {"mstest-good": ("metastudio-mstest-good", "mstest_good", GOOD)})
    fp.install(site, monkeypatch, kinds=("import_error", "raising_hook"))
    result = validate("mstest-good")
    assert result.ok and result.problems == []
    assert not any(m.startswith("mstest_fault_") for m in sys.modules)


# ----------------------------------------------------------------------------------------------
# through the installed command


def _command(*args, env=None, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([METASTUDIO_COMMAND, *map(str, args)], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=300)


def test_plugins_validate_prints_a_line_per_problem_and_exits_1(tmp_path):
    many = _write(tmp_path, "mstest_many.py", MANY)
    done = _command("plugins", "validate", many, "--traceback")
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    problems = [line for line in lines if line.startswith("problem [")]
    assert len(problems) == 7 and all(" Fix: " in line for line in problems)
    assert "problem [hooks]: metastudio_datsets is not a MetaStudio hook, so it is never called. Fix: rename it " \
           "metastudio_datasets (the closest hook)." in problems
    assert "ok: backbone mstest-pooled passes the test kit" in lines
    assert lines[-1] == f"7 problems in {many} (file)"
    assert any(line.startswith("    Traceback") for line in lines)  # the kit's failure, under its line

    clean = _write(tmp_path / "clean", "mstest_clean.py", GOOD)
    done = _command("plugins", "validate", clean, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert (result["ok"], result["kind"], result["errors"], result["problems"]) == (True, "file", 0, [])
    assert result["plugins"][0]["passed"] == [{"kind": "backbone", "name": "mstest-tiny"}]


def test_plugins_traceback_and_json_give_each_failed_plugins_traceback(tmp_path):
    site = tmp_path / "site"
    fp.install(site)
    env = fp.env(site)
    done = _command("plugins", "--traceback", env=env)
    assert done.returncode == 0, done.stderr
    table, _, after = done.stdout.partition("\n\n")
    assert table.splitlines()[0].split()[:2] == ["NAME", "KIND"]
    for kind in fp.LOAD_FAULTS:
        header = f"{fp.origin_words(kind)}: "
        assert header in after, (kind, after)
        block = after[after.index(header):]
        assert block.splitlines()[1] == "Traceback (most recent call last):"
        assert fp.RAISED[kind] in block and f"{fp.module_name(kind)}.py" in block
    assert "Traceback" not in table

    rows = json.loads(_command("plugins", "--json", env=env).stdout)
    assert all("traceback" in row for row in rows)
    failed = {row["name"]: row for row in rows if row["status"] == "failed"}
    assert set(failed) == {fp.entry_point(kind) for kind in fp.LOAD_FAULTS}
    for kind in fp.LOAD_FAULTS:
        tb = failed[fp.entry_point(kind)]["traceback"]
        assert tb.startswith("Traceback (most recent call last):") and fp.RAISED[kind] in tb
    assert all(row["traceback"] == "" for row in rows if row["status"] != "failed")

    quiet = _command("plugins", "--traceback", "--safe-mode")
    assert quiet.returncode == 0 and quiet.stdout.rstrip().endswith("no plugin failed to load")


def test_a_hanging_plugin_is_reported_and_the_command_ends(tmp_path):
    """A check that hangs, under --timeout: the command reports it and exits, leaving the call behind."""
    site = tmp_path / "site"
    fp.install(site, kinds=("hanging_adapt",))
    done = _command("plugins", "validate", fp.entry_point("hanging_adapt"), "--timeout", "3", env=fp.env(site))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "the test kit did not finish within 3 s" in done.stdout


LEGACY_ALGORITHM = '''
from metastudio.api import Algorithm


class Steps(Algorithm):
    name, title, family, description = "mstest-steps", "Steps", "optimization", "adapts in steps"

    def meta_train_step(self, episodes):
        return {"loss": 0.0, "accuracy": 0.0}

    def adapt(self, support, progress=None):
        raise NotImplementedError
'''


def test_deprecated_declarations_are_warnings_and_contradictory_ones_import_errors(tmp_path):
    path = _write(tmp_path / "legacy", "mstest_legacy.py", GOOD + LEGACY_ALGORITHM)
    legacy = validate(str(path))
    assert legacy.ok, legacy.problems
    warning = _one(legacy, "deprecated", "algorithm 'mstest-steps'", "declare reports_adaptation_loss = True")
    line = path.read_text().splitlines().index("class Steps(Algorithm):") + 1
    assert warning.severity == "warning" and f"mstest_legacy.py:{line})" in warning.message  # the class statement
    contradictory = LEGACY_ALGORITHM.replace("from metastudio.api import Algorithm",
                                             "from metastudio.api import FEATURE_TRANSFORM, TRAINING_HYPERPARAMETERS, "
                                             "Algorithm").replace(
        '"adapts in steps"\n', '"adapts in steps"\n    reports_adaptation_loss = True\n'
        '    hyperparameters = TRAINING_HYPERPARAMETERS + (FEATURE_TRANSFORM,)\n')
    broken = validate(str(_write(tmp_path / "broken", "mstest_contra.py", GOOD + contradictory)))
    problem = _one(broken, "import", "does not inherit FeatureTransformMixin")
    assert "put FeatureTransformMixin before Algorithm" in problem.message and not broken.ok
