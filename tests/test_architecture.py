"""Layer rules: the engine (metastudio.core) runs headless, so it never imports Qt."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import metastudio

QT_MODULES = ("PySide6", "PyQt5", "PyQt6", "pyqtgraph", "superqt", "qtpy", "shiboken6")
CORE = Path(metastudio.__file__).parent / "core"


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


def test_core_sources_import_no_qt():
    offenders = {}
    for path in sorted(CORE.rglob("*.py")):
        bad = {m for m in imported_modules(path) if m.split(".")[0] in QT_MODULES}
        if bad:
            offenders[str(path.relative_to(CORE.parent))] = sorted(bad)
    assert not offenders, f"metastudio.core must not import Qt: {offenders}"


def test_importing_every_core_module_loads_no_qt():
    modules = sorted(f"metastudio.core.{p.stem}" for p in CORE.glob("*.py") if p.stem != "__init__")
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
