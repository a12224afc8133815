"""MetaStudio's pytest plugin (metastudio.testing), as a plugin author meets it: installed with
MetaStudio through the pytest11 entry point, it gives a third-party plugin package's own test
run its fixtures (the host with that plugin, the tiny dataset, model files, a session, a window)
and lists the test kit's skipped checks, and loading it imports neither torch nor Qt."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import metadata

from plugin_packages import write_distribution

#: A third-party plugin: Prototypical Networks under its own name, in a package of its own.
MINE = '''
from metastudio.api import hookimpl
from metastudio_builtins.algorithms.protonet import PrototypicalNetworks


class Mine(PrototypicalNetworks):
    name = "mine"
    title = "My algorithm"


@hookimpl
def metastudio_algorithms():
    return [Mine]
'''

#: The plugin package's own tests, using the fixtures without any conftest.py.
AUTHOR_TESTS = '''
import numpy as np
from PIL import Image

from metastudio.api import check_algorithm


def test_the_host_has_my_plugin(metastudio_host):
    assert metastudio_host.algorithm("mine").__module__ == "mstest_mine"
    assert metastudio_host.records["mine-plugin"].package == "metastudio-mine"
    assert metastudio_host.algorithm("protonet")  # and the installed ones


def test_the_contract(metastudio_host, tmp_path):
    check_algorithm(metastudio_host.algorithm("mine"), host=metastudio_host, tmp_path=tmp_path, steps=4,
                    skip={"frozen backbone"})


def write(folder, images):
    folder.mkdir(parents=True)
    paths = []
    for i, image in enumerate(images):
        paths.append(folder / f"{i}.png")
        Image.fromarray(image[0].numpy()).save(paths[-1])
    return paths


def test_a_session_classifies_files_with_my_model(metastudio_session, make_metastudio_model,
                                                   metastudio_tiny_dataset, tmp_path):
    info = metastudio_session.load(make_metastudio_model("mine", steps=1))
    assert info.algorithm == "mine" and info.device.startswith("CPU")
    ds = metastudio_tiny_dataset
    support = [(name, [(f"{name}-{i}", p) for i, p in enumerate(write(tmp_path / name, ds.class_images(c)[:3]))])
               for c, name in enumerate(ds.class_names[:3])]
    queries = [(f"q{i}", p) for i, p in enumerate(write(tmp_path / "queries", ds.class_images(0)[5:7]))]
    result = metastudio_session.run(support, queries)
    assert result.status == "ok" and result.class_names == list(ds.class_names[:3])
    assert sorted(result.probabilities) == ["q0", "q1"]
    assert all(abs(sum(p) - 1) < 1e-4 for p in result.probabilities.values())
'''


WINDOW_TEST = '''
def test_my_model_in_the_window(make_metastudio_model, make_metastudio_window, qtbot):
    window = make_metastudio_window(make_metastudio_model("mine", steps=1))
    qtbot.waitUntil(lambda: window.model_info is not None, timeout=60_000)
    assert window.isVisible() and window.model_info["algorithm"] == "mine"
    assert window.settings.fileName().endswith("metastudio-settings.ini")
'''

#: A plugin module that is not installed, only named in the ini file.
NOT_YET = MINE.replace('"mine"', '"notyet"').replace("class Mine", "class NotYet").replace("[Mine]", "[NotYet]")


def test_installing_metastudio_registers_the_pytest_plugin(request):
    import metastudio.testing

    entry_points = {ep.name: ep for ep in metadata.entry_points(group="pytest11")}
    assert entry_points["metastudio"].value == "metastudio.testing"
    assert entry_points["metastudio"].dist.name == "metastudio"
    assert request.config.pluginmanager.get_plugin("metastudio") is metastudio.testing  # in this very run
    assert len(request.getfixturevalue("metastudio_tiny_dataset").class_names) == 12


def test_loading_the_plugin_imports_neither_torch_nor_qt():
    code = ("import sys, metastudio.testing; "
            "print(sorted(m for m in ('torch', 'numpy', 'PySide6', 'pytestqt', 'metastudio.plugins') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_plugin_packages_own_test_run_gets_the_fixtures_and_the_list_of_skipped_checks(pytester, monkeypatch):
    """In a process of its own, as the author runs it: the installed plugin, one named in the
    ini file only, a session and a window with the plugin's model."""
    site = pytester.mkdir("site")
    write_distribution(site, "mine-plugin", "metastudio-mine", "mstest_mine", MINE)
    src = pytester.mkdir("src")
    (src / "mstest_notyet.py").write_text(NOT_YET)
    monkeypatch.setenv("PYTHONPATH", f"{site}{os.pathsep}{src}")
    pytester.makeini("[pytest]\nmetastudio_plugins =\n    not-yet = mstest_notyet\n")
    pytester.makepyfile(test_author=AUTHOR_TESTS + '''

def test_a_plugin_named_in_the_ini_file(metastudio_host):
    assert metastudio_host.algorithm("notyet").__module__ == "mstest_notyet"
    assert metastudio_host.records["not-yet"].status == "ok"
''', test_window=WINDOW_TEST)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=5)
    result.stdout.fnmatch_lines(["*MetaStudio test kit: checks skipped*",
                                 "onnx: not asked for*(mine)",
                                 "frozen backbone: left out by skip= (mine)"])


def test_a_plugin_module_that_does_not_import_fails_its_tests_saying_so(pytester):
    pytester.makeini("[pytest]\nmetastudio_plugins = mstest_missing_module\n")
    pytester.makepyfile(test_missing="def test_host(metastudio_host):\n    pass\n")
    result = pytester.runpytest("-p", "no:cacheprovider", "-p", "no:pytest-qt")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*metastudio_plugins names 'mstest_missing_module', which could not be imported*"])


def test_without_pytest_qt_the_window_fixture_skips_saying_why(pytester):
    pytester.makepyfile(test_window="def test_window(make_metastudio_window):\n    make_metastudio_window()\n")
    result = pytester.runpytest("-p", "no:cacheprovider", "-p", "no:pytest-qt", "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*make_metastudio_window needs pytest-qt's qtbot fixture*"])
