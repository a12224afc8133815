"""What ``metastudio plugins validate`` reports (:class:`Validation`, :class:`Problem`) and how it
finds the plugin(s) a target names: an installed entry point, distribution or module, or a
path (a ``.py`` file, a package folder, a project folder with a ``pyproject.toml``). The checks
themselves are in :mod:`metastudio.plugins.validate`."""

from __future__ import annotations

import contextlib
import difflib
import importlib
import importlib.util
import os
import sys
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from metastudio.errors import message_of
from metastudio.plugins.hookspecs import PROJECT
from metastudio.plugins.manager import ENTRY_POINT_GROUP

#: The kinds of target :func:`validate` knows.
KINDS = ("entry point", "distribution", "module", "file", "package folder", "project folder")
#: Module names a plugin author might give a package's hooks, looked for in a package folder
#: whose ``__init__`` has none.
_HOOK_MODULE_NAMES = ("plugin", "metastudio_plugin", "plugins", "hooks")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the plugin: ``message`` says what, ``fix`` how to put it right.
    ``check`` names the check that found it, ``plugin`` the plugin (entry point or module) it
    concerns, ``traceback`` the exception behind it (or ""). A ``warning`` does not make the
    plugin fail, an ``error`` does."""

    check: str
    message: str
    fix: str
    severity: str = "error"
    plugin: str = ""
    traceback: str = ""

    @property
    def text(self) -> str:
        """What is wrong and how to fix it, as two sentences."""
        def sentence(words: str) -> str:
            return words if words.endswith((".", "?", "!")) else words + "."

        return f"{sentence(self.message)} Fix: {sentence(self.fix)}"


@dataclass
class CheckedPlugin:
    """A plugin that was checked: its entry-point name (the module's name for a module without
    one), module, package and version, the components its hooks gave (kind, name) and those
    that passed the test kit."""

    name: str
    module: str
    package: str
    version: str
    components: list[tuple[str, str]] = field(default_factory=list)
    passed: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Validation:
    """The result of :func:`validate`: the target as given and what it was taken as (one of
    :data:`KINDS`, or "" when not found), the plugins checked, the problems found and notes on
    what was not checked."""

    target: str
    kind: str = ""
    plugins: list[CheckedPlugin] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        """True when no check found an error (warnings allowed)."""
        return not self.errors

    def summary(self) -> str:
        """One line: how many problems (and warnings) there are, or what the target provides."""
        errors, warnings = len(self.errors), len(self.warnings)
        also = f", {warnings} warning{'s' * (warnings != 1)}" if warnings else ""
        if errors:
            return f"{errors} problem{'s' * (errors != 1)}{also} in {self.target} ({self.kind or 'not found'})"
        provided = ", ".join(f"{kind} {name}" for p in self.plugins for kind, name in p.components) or "nothing"
        return f"no problems{also}: {self.target} ({self.kind}) provides {provided}"

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target, "kind": self.kind, "ok": self.ok,
            "errors": len(self.errors), "warnings": len(self.warnings),
            "plugins": [{**asdict(p), "components": [{"kind": k, "name": n} for k, n in p.components],
                         "passed": [{"kind": k, "name": n} for k, n in p.passed]} for p in self.plugins],
            "problems": [asdict(p) for p in self.problems],
            "notes": list(self.notes),
        }


@dataclass
class Candidate:
    """A plugin to check: its name, the module it names, how to import it and its package."""

    name: str
    module: str
    load: Callable[[], Any]
    package: str = "local"
    version: str = "0"
    declared: bool = True  # its name is an entry point's (not a module's or a file's)


def closest(name: str, choices) -> str | None:
    found = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return found[0] if found else None


# ----------------------------------------------------------------------------------------------
# finding the target


def looks_like_path(target: str) -> bool:
    return os.sep in target or (os.altsep is not None and os.altsep in target) or target.endswith(".py") \
        or target in (".", "..") or target.startswith("~")


def _entry_point_candidate(ep: metadata.EntryPoint) -> Candidate:
    dist = getattr(ep, "dist", None)
    return Candidate(ep.name, ep.value, ep.load, dist.name if dist is not None else "unknown",
                      dist.version if dist is not None else "unknown")


def find_installed(target: str, result: Validation) -> list[Candidate] | None:
    """The candidates of an installed entry point, distribution or module named ``target``; None
    when nothing installed has that name."""
    eps = [ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP) if ep.name == target]
    if eps:
        result.kind = "entry point"
        return [_entry_point_candidate(ep) for ep in eps]
    try:
        dist = metadata.distribution(target)
    except metadata.PackageNotFoundError:
        dist = None
    if dist is not None:
        result.kind = "distribution"
        eps = [ep for ep in dist.entry_points if ep.group == ENTRY_POINT_GROUP]
        if not eps:
            result.problems.append(Problem(
                "entry point", f"the package {dist.name} {dist.version} declares no '{ENTRY_POINT_GROUP}' entry point, "
                "so MetaStudio never loads it",
                f"declare one in its pyproject.toml: [project.entry-points.{ENTRY_POINT_GROUP}] NAME = \"module\", "
                "then install it again"))
        return [_entry_point_candidate(ep) for ep in eps]
    try:
        spec = importlib.util.find_spec(target)
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.origin not in (None, "namespace"):
        result.kind = "module"
        dists = metadata.packages_distributions().get(target.split(".")[0], [])
        package, version = "local", "0"
        if dists:
            with contextlib.suppress(metadata.PackageNotFoundError):
                package, version = dists[0], metadata.version(dists[0])
        declared = [ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP) if ep.value.split(":")[0] == target]
        if not declared:
            result.problems.append(Problem(
                "entry point", f"no installed package declares the module {target} as a '{ENTRY_POINT_GROUP}' entry "
                "point, so MetaStudio does not load it", f"declare it in its package's pyproject.toml: "
                f"[project.entry-points.{ENTRY_POINT_GROUP}] NAME = \"{target}\", then install the package",
                "warning", target))
            return [Candidate(target, target, lambda: importlib.import_module(target), package, version, False)]
        return [_entry_point_candidate(ep) for ep in declared]
    return None


def _import_from(root: Path, name: str, file: Path | None = None) -> Callable[[], Any]:
    """A loader importing module ``name`` from the folder ``root`` (or from ``file``), refusing
    to use a module of that name already imported from elsewhere."""
    def load():
        loaded = sys.modules.get(name.split(".")[0])
        if loaded is not None:
            where = Path(getattr(loaded, "__file__", "") or "")
            if not str(where.resolve()).startswith(str(root.resolve())):
                raise ImportError(f"a module named '{name.split('.')[0]}' is already imported from "
                                  f"{where or 'Python itself'}; rename the plugin's module")
        if file is not None:
            spec = importlib.util.spec_from_file_location(name, file)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            try:
                spec.loader.exec_module(module)
            except BaseException:
                sys.modules.pop(name, None)
                raise
            return module
        return importlib.import_module(name)

    return load


def _project_candidates(folder: Path, result: Validation, roots: list[Path]) -> list[Candidate]:
    """The entry points a project folder's pyproject.toml declares, imported from its source."""
    try:
        project = tomllib.loads((folder / "pyproject.toml").read_text(encoding="utf-8")).get("project", {})
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        result.problems.append(Problem("target", f"cannot read {folder / 'pyproject.toml'}: {message_of(e)}",
                                       "fix the file (it must be valid TOML)"))
        return []
    declared = project.get("entry-points", {}).get(ENTRY_POINT_GROUP, {})
    package, version = str(project.get("name", folder.name)), str(project.get("version", "unknown"))
    if not isinstance(declared, dict) or not declared:
        result.problems.append(Problem(
            "entry point", f"{folder / 'pyproject.toml'} declares no '{ENTRY_POINT_GROUP}' entry point, so MetaStudio "
            "would never load the package", f"add [project.entry-points.{ENTRY_POINT_GROUP}] NAME = \"module\" to it"))
        return []
    root = folder / "src" if (folder / "src").is_dir() else folder
    roots.append(root)
    return [Candidate(str(name), str(value), _import_from(root, str(value).split(":")[0]), package, version)
            for name, value in declared.items()]


def _package_candidates(folder: Path, roots: list[Path]) -> list[Candidate]:
    """A package folder: the package, or its modules with hooks when the package has none."""
    roots.append(folder.parent)
    name = folder.name
    init = (folder / "__init__.py").read_text(encoding="utf-8", errors="replace")
    if "@hookimpl" in init or f"{PROJECT}_" in init:
        return [Candidate(name, name, _import_from(folder.parent, name), declared=False)]
    found = [f.stem for f in sorted(folder.glob("*.py")) if f.stem in _HOOK_MODULE_NAMES
             or "@hookimpl" in f.read_text(encoding="utf-8", errors="replace")]
    modules = [f"{name}.{stem}" for stem in found] or [name]
    return [Candidate(m, m, _import_from(folder.parent, m), declared=False) for m in modules]


def find_path(target: str, result: Validation, roots: list[Path]) -> list[Candidate]:
    path = Path(target).expanduser()
    if path.is_file() and path.suffix == ".py":
        result.kind = "file"
        roots.append(path.parent)
        return [Candidate(path.stem, path.stem, _import_from(path.parent, path.stem, path), declared=False)]
    if path.is_dir() and (path / "pyproject.toml").is_file():
        result.kind = "project folder"
        return _project_candidates(path.resolve(), result, roots)
    if path.is_dir() and (path / "__init__.py").is_file():
        result.kind = "package folder"
        return _package_candidates(path.resolve(), roots)
    why = ("is a folder without __init__.py or pyproject.toml" if path.is_dir() else
           "is not a .py file" if path.exists() else "does not exist")
    result.problems.append(Problem("target", f"'{target}' {why}",
                                   "give a .py file, a package folder or a project folder with a pyproject.toml"))
    return []


def not_found(target: str, result: Validation) -> None:
    installed = sorted({ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)})
    near = closest(target, installed)
    fix = (f"did you mean '{near}'? Otherwise, " if near else "") + (
        "give an installed plugin (see 'metastudio plugins'), a distribution or module name, or a path to a .py "
        "file or package folder; install a package with pip install -e PATH")
    result.problems.append(Problem("target", f"no installed plugin, distribution or module is named '{target}', and "
                                   "no such file or folder exists", fix))


@contextlib.contextmanager
def on_path(roots: list[Path]) -> Iterator[None]:
    """The folders a path target is imported from, first on sys.path while it is checked."""
    added = [str(r) for r in roots if str(r) not in sys.path]
    sys.path[:0] = added
    importlib.invalidate_caches()
    try:
        yield
    finally:
        for r in added:
            with contextlib.suppress(ValueError):
                sys.path.remove(r)


__all__ = ["KINDS", "Candidate", "CheckedPlugin", "Problem", "Validation", "closest", "find_installed", "find_path",
           "looks_like_path", "not_found", "on_path"]
