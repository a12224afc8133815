"""Layer rules: everything below the GUI runs headless (no Qt), the layers contract of
pyproject.toml catches an upward import, and the built-in plugins import only metastudio.api."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import metastudio

QT_MODULES = ("PySide6", "PyQt5", "PyQt6", "pyqtgraph", "superqt", "qtpy", "shiboken6")
PACKAGE = Path(metastudio.__file__).parent
ROOT = PACKAGE.parent
#: The headless layers (and the API and errors modules): everything but the GUI and the CLI.
HEADLESS = ("data", "algorithms", "engine", "plugins", "app")


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in ("import_module", "__import__"):
            names |= {a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)}
    return names


def headless_sources() -> list[Path]:
    files = [PACKAGE / "api.py", PACKAGE / "errors.py"]
    for layer in HEADLESS:
        files += sorted((PACKAGE / layer).rglob("*.py"))
    return files


def test_headless_sources_import_no_qt():
    offenders = {}
    for path in headless_sources():
        bad = {m for m in imported_modules(path) if m.split(".")[0] in QT_MODULES}
        if bad:
            offenders[str(path.relative_to(PACKAGE.parent))] = sorted(bad)
    assert not offenders, f"only metastudio.gui may import Qt: {offenders}"


def test_importing_every_headless_module_loads_no_qt():
    modules = sorted(".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
                     for p in headless_sources())
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "import metastudio.plugins, metastudio.cli\n"
        f"bad = [m for m in sys.modules if m.split('.')[0] in {QT_MODULES!r}]\n"
        "print(','.join(bad)); sys.exit(1 if bad else 0)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, f"Qt got imported by the engine: {run.stdout} {run.stderr}"


def test_the_ast_check_itself_catches_a_qt_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import os\nfrom PySide6.QtCore import QObject\nimportlib.import_module('pyqtgraph')\n")
    assert {"PySide6.QtCore", "pyqtgraph"} <= imported_modules(bad)


def test_the_app_starts_without_importing_torch():
    """The window must open fast: the CLI's parser and the GUI modules leave torch (and the
    plugins) to the worker thread that loads the model."""
    code = (
        "import sys\n"
        "import metastudio.cli as cli\n"
        "cli.build_parser()\n"
        "import metastudio.gui.app, metastudio.gui.mainwindow, metastudio.gui.widgets, metastudio.gui.engine\n"
        "heavy = [m for m in ('torch', 'timm', 'metastudio_builtins') if m in sys.modules]\n"
        "print(','.join(heavy)); sys.exit(1 if heavy else 0)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**__import__("os").environ, "QT_QPA_PLATFORM": "offscreen"})
    assert run.returncode == 0, f"imported at start-up: {run.stdout} {run.stderr}"


def test_builtin_plugins_import_only_the_api():
    """The built-ins are written as a third party would write them: from MetaStudio they import
    metastudio.api and nothing else (their own modules they import relatively)."""
    offenders = {}
    for path in sorted((ROOT / "plugins").rglob("*.py")):
        bad = {m for m in imported_modules(path) if m.startswith("metastudio") and m != "metastudio.api"}
        if bad:
            offenders[str(path.relative_to(ROOT))] = sorted(bad)
    assert not offenders, f"built-in plugins must import from metastudio.api only: {offenders}"


def test_the_old_flat_paths_still_work_with_a_deprecation_warning():
    code = (
        "import warnings\n"
        "warnings.simplefilter('error')\n"
        "try:\n"
        "    from metastudio.core.algorithm import Algorithm\n"
        "except DeprecationWarning as w:\n"
        "    print('warned:', w)\n"
        "warnings.simplefilter('ignore')\n"
        "from metastudio.core.algorithm import Algorithm, HyperParameter\n"
        "import metastudio.api as api\n"
        "assert Algorithm is api.Algorithm and HyperParameter is api.HyperParameter\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "warned: metastudio.core.algorithm has moved to metastudio.algorithms.base" in run.stdout


def _lint(tree: Path) -> subprocess.CompletedProcess:
    lint = Path(sys.executable).with_name("lint-imports")
    return subprocess.run([str(lint), "--config", str(tree / "pyproject.toml"), "--no-cache"], cwd=tree,
                          capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "PYTHONPATH": str(tree)})


def test_the_layers_contract_fails_on_an_upward_import(tmp_path):
    """import-linter on a copy of the package: kept as it is, broken once the data layer (the
    lowest) imports the application layer."""
    import shutil

    shutil.copytree(PACKAGE, tmp_path / "metastudio", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    kept = _lint(tmp_path)
    assert kept.returncode == 0, kept.stdout + kept.stderr
    images = tmp_path / "metastudio" / "data" / "images.py"
    images.write_text(images.read_text() + "\nfrom metastudio.app import session  # upward\n")
    broken = _lint(tmp_path)
    assert broken.returncode != 0
    assert "Layers:" in broken.stdout and "BROKEN" in broken.stdout
    assert "metastudio.data.images -> metastudio.app.session" in broken.stdout


#: The size limits of the project's rules: a module a person can read in one sitting, a
#: function that fits on a screen (docstring included).
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 700, 80


def test_no_module_or_function_is_too_long_to_read():
    too_long = []
    for path in sorted([*PACKAGE.rglob("*.py"), *(ROOT / "plugins").rglob("*.py")]):
        source = path.read_text(encoding="utf-8")
        name = path.relative_to(ROOT)
        if source.count("\n") > MAX_MODULE_LINES:
            too_long.append(f"{name}: {source.count(chr(10))} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{name}:{node.lineno} {node.name}(): {length} lines")
    assert not too_long, "split these: " + "; ".join(too_long)


def test_every_name_the_api_promises_exists():
    import metastudio.api as api

    missing = [name for name in api.__all__ if not hasattr(api, name)]
    assert not missing and len(set(api.__all__)) == len(api.__all__)
    assert "Stability promise" in api.__doc__


def test_every_package_folder_is_installed():
    """pyproject.toml lists the packages one by one (the built-ins install from plugins/ under
    another name), so a new folder left out of the list would be missing from a wheel."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in PACKAGE.rglob("__init__.py")}
    found |= {".".join(("metastudio_builtins", *p.parent.relative_to(ROOT / "plugins").parts))
              for p in (ROOT / "plugins").rglob("__init__.py")}
    assert found == listed, f"not installed: {sorted(found - listed)}; listed but absent: {sorted(listed - found)}"
