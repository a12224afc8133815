"""The plugin host: finds plugins through entry points and keeps a broken one from taking the
application down.

pluggy isolates nothing by itself: one plugin that fails to import stops
``load_setuptools_entrypoints``, and one hook implementation that raises aborts the whole hook
call. So the host imports each entry point, registers it and calls each of its hook
implementations under its own guard, checks what each returns, and records any failure on that
plugin (name, package, error, traceback), disabling it as a whole. Every other plugin keeps
working.

Every loaded plugin's modules (its entry point's, and those its algorithm classes, backbone
builders and dataset loaders are defined in) are registered with
:func:`metastudio.errors.register_plugin_module`, so that a failure later, at run time, whose
traceback runs through them names the plugin; :meth:`PluginHost.origin_of` names the plugin of a
component for the calls that are guarded (:mod:`metastudio.engine.guard`).

``METASTUDIO_DISABLE_PLUGINS=a,b`` disables plugins by entry-point name; safe mode
(``--safe-mode`` or ``METASTUDIO_SAFE_MODE=1``) loads the built-in plugins only.
"""

from __future__ import annotations

import inspect
import os
import threading
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata
from types import ModuleType
from typing import Any

import pluggy

from metastudio.algorithms.base import Algorithm
from metastudio.algorithms.backbone import BackboneSpec
from metastudio.data.datasets import DatasetSpec
from metastudio.errors import PluginOrigin, UnknownComponentError, plugin_of, register_plugin_module
from metastudio.plugins import hookspecs
from metastudio.plugins.hookspecs import HOOK_API_VERSION, MODEL_SUFFIX, PROJECT, ModelSpec

BUILTIN_DISTRIBUTION = "metastudio"
ENTRY_POINT_GROUP = "metastudio"

#: hook name -> (kind shown to people, required item type)
HOOKS: dict[str, tuple[str, type]] = {
    "metastudio_algorithms": ("algorithm", type),
    "metastudio_backbones": ("backbone", BackboneSpec),
    "metastudio_datasets": ("dataset", DatasetSpec),
    "metastudio_models": ("model", ModelSpec),
}


@dataclass
class PluginRecord:
    """What the host knows of one plugin (one entry point)."""

    name: str
    package: str
    version: str
    module: str
    builtin: bool
    status: str = "ok"  # ok | failed | disabled
    error: str = ""
    traceback: str = ""
    components: list[tuple[str, str]] = field(default_factory=list)  # (kind, name)
    warnings: list[str] = field(default_factory=list)

    @property
    def origin(self) -> PluginOrigin:
        """The plugin as messages name it."""
        return PluginOrigin(self.name, self.package, self.version)


def _one_line(exc: BaseException) -> str:
    # All lines, joined: pluggy's PluginValidationError gives the reason on its later lines.
    text = "; ".join(line.strip() for line in str(exc).strip().splitlines() if line.strip())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class PluginHost:
    """Loads plugins and serves their algorithms, backbones, datasets and models by name."""

    def __init__(self, *, safe_mode: bool | None = None, disabled: Iterable[str] | None = None):
        if safe_mode is None:
            safe_mode = os.environ.get("METASTUDIO_SAFE_MODE", "").strip().lower() in ("1", "true", "yes", "on")
        if disabled is None:
            disabled = os.environ.get("METASTUDIO_DISABLE_PLUGINS", "").split(",")
        self.safe_mode = safe_mode
        self.disabled = {d.strip() for d in disabled if d.strip()}
        self.pm = pluggy.PluginManager(PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.records: dict[str, PluginRecord] = {}
        self.algorithms: dict[str, type[Algorithm]] = {}
        self.backbones: dict[str, BackboneSpec] = {}
        self.datasets: dict[str, DatasetSpec] = {}
        self.models: dict[str, ModelSpec] = {}
        self._owner: dict[tuple[str, str], str] = {}

    # -- discovery -----------------------------------------------------------------------------
    def load_entry_points(self, entry_points: Iterable[metadata.EntryPoint] | None = None) -> PluginHost:
        """Import and register every plugin of the ``metastudio`` entry-point group.

        Built-ins (from the ``metastudio`` distribution) load first, then the others sorted by
        name, so a third-party plugin can never take a built-in name.
        """
        if entry_points is None:
            entry_points = metadata.entry_points(group=ENTRY_POINT_GROUP)
        eps = list(entry_points)

        def dist_name(ep) -> str:
            dist = getattr(ep, "dist", None)
            return dist.name if dist is not None else "unknown"

        eps.sort(key=lambda ep: (dist_name(ep) != BUILTIN_DISTRIBUTION, ep.name))
        for ep in eps:
            dist = getattr(ep, "dist", None)
            package = dist.name if dist is not None else "unknown"
            version = dist.version if dist is not None else "unknown"
            builtin = package == BUILTIN_DISTRIBUTION
            record = PluginRecord(ep.name, package, version, ep.value, builtin)
            if ep.name in self.records:
                record.status, record.error = "failed", f"another plugin is already named '{ep.name}'"
                self.records[f"{ep.name} ({package})"] = record
                continue
            self.records[ep.name] = record
            if ep.name in self.disabled:
                record.status, record.error = "disabled", "disabled by METASTUDIO_DISABLE_PLUGINS"
                continue
            if self.safe_mode and not builtin:
                record.status, record.error = "disabled", "safe mode: only built-in plugins are loaded"
                continue
            try:
                module = ep.load()
            except BaseException as exc:  # noqa: BLE001 - a plugin may raise anything, even SystemExit
                if isinstance(exc, KeyboardInterrupt):
                    raise
                self._fail(record, f"could not be imported: {_one_line(exc)}", exc)
                continue
            self._register(module, record)
        return self

    def register_module(self, module: ModuleType | Any, name: str, *, package: str = "local", version: str = "0",
                        builtin: bool = False) -> PluginRecord:
        """Register an already imported plugin object (tests, scripts, plugin development)."""
        record = PluginRecord(name, package, version, getattr(module, "__name__", repr(module)), builtin)
        if name in self.records:
            record.status, record.error = "failed", f"another plugin is already named '{name}'"
            self.records[f"{name} ({package})"] = record
            return record
        self.records[name] = record
        self._register(module, record)
        return record

    # -- guarded registration and hook calls --------------------------------------------------------
    def _fail(self, record: PluginRecord, message: str, exc: BaseException | None = None) -> None:
        record.status = "failed"
        record.error = message
        if exc is not None:
            record.traceback = "".join(traceback.format_exception(exc))

    def _register(self, module: Any, record: PluginRecord) -> None:
        wanted = getattr(module, "METASTUDIO_API_VERSION", 1)
        if isinstance(wanted, int) and wanted > HOOK_API_VERSION:
            self._fail(record, f"needs plugin API version {wanted}, but this MetaStudio offers version {HOOK_API_VERSION}; update MetaStudio")
            return
        marker = f"{PROJECT}_impl"
        unknown = [n for n, obj in inspect.getmembers(module) if hasattr(obj, marker) and n not in HOOKS]
        if unknown:
            self._fail(record, f"implements unknown hook(s) {', '.join(unknown)}; known hooks are {', '.join(HOOKS)}")
            return
        unmarked = [n for n in HOOKS if callable(getattr(module, n, None)) and not hasattr(getattr(module, n), marker)]
        record.warnings += [f"function {n} is not decorated with @hookimpl, so it is not called" for n in unmarked]
        try:
            self.pm.register(module, name=record.name)
        except Exception as exc:  # pluggy.PluginValidationError, ValueError for a duplicate
            self._fail(record, f"could not be registered: {_one_line(exc)}", exc)
            return
        found: list[tuple[str, str, Any]] = []
        for hook_name, (kind, item_type) in HOOKS.items():
            caller = getattr(self.pm.hook, hook_name)
            for impl in caller.get_hookimpls():
                if impl.plugin_name != record.name:
                    continue
                try:
                    result = impl.function()
                except BaseException as exc:  # noqa: BLE001
                    if isinstance(exc, KeyboardInterrupt):
                        raise
                    self._fail(record, f"hook {hook_name} raised {_one_line(exc)}", exc)
                    break
                problem = self._check_items(result, kind, item_type)
                if problem:
                    self._fail(record, f"hook {hook_name} returned {problem}")
                    break
                if kind == "model":
                    result = [item if isinstance(item, ModelSpec) else ModelSpec.from_path(item) for item in result]
                found += [(kind, self._item_name(kind, item), item) for item in result]
            if record.status == "failed":
                break
        if record.status == "failed":
            self.pm.unregister(name=record.name)
            return
        self._claim(getattr(module, "__name__", None), record, replace=True)
        for kind, name, item in found:
            owner = self._owner.get((kind, name))
            if owner is not None:
                record.warnings.append(f"{kind} '{name}' is already provided by plugin '{owner}'; this one is ignored")
                continue
            missing = self._missing_model_file(item) if kind == "model" else ""
            if missing:
                record.warnings.append(f"model '{name}' is left out: {missing}")
                continue
            self._owner[(kind, name)] = record.name
            {"algorithm": self.algorithms, "backbone": self.backbones, "dataset": self.datasets,
             "model": self.models}[kind][name] = item
            record.components.append((kind, name))
            code = item if isinstance(item, type) else getattr(item, "factory", None) or getattr(item, "load", None)
            self._claim(getattr(code, "__module__", None), record, replace=False)

    @staticmethod
    def _claim(module_name: Any, record: PluginRecord, *, replace: bool) -> None:
        """Register ``module_name`` as the code of the plugin ``record`` (for naming it in errors),
        unless it is MetaStudio's own; a component's module (``replace=False``) only when no
        plugin has it yet (built-ins load first), the entry point's own module always."""
        if not isinstance(module_name, str) or not module_name or module_name.split(".")[0] == "metastudio":
            return
        if replace or plugin_of(module_name) is None:
            register_plugin_module(module_name, record.origin)

    @staticmethod
    def _item_name(kind: str, item: Any) -> str:
        return item.name

    @staticmethod
    def _missing_model_file(spec: ModelSpec) -> str:
        """Why the file of the model ``spec`` can't be used as one ("" when it can)."""
        path = spec.path
        try:
            if path.is_file():
                return ""
            return f"its file {path} is a folder, not a model file" if path.is_dir() else f"its file {path} does not exist"
        except OSError as exc:
            return f"its file {path} can't be read ({exc.strerror or exc})"

    @staticmethod
    def _check_items(result: Any, kind: str, item_type: type) -> str:
        if not isinstance(result, (list, tuple)):
            return f"{type(result).__name__}, not a list"
        for item in result:
            if kind == "algorithm":
                if not (isinstance(item, type) and issubclass(item, Algorithm)):
                    return f"{item!r}, which is not a subclass of metastudio.algorithms.base.Algorithm"
                if not item.name or not isinstance(item.name, str):
                    return f"algorithm class {item.__name__} without a name"
                if inspect.isabstract(item):
                    missing = ", ".join(sorted(item.__abstractmethods__))
                    return f"algorithm class {item.__name__}, which does not implement {missing}"
            elif kind == "model":
                problem = _model_item_problem(item)
                if problem:
                    return problem
            elif not isinstance(item, item_type):
                return f"{item!r}, which is not a {item_type.__name__}"
        return ""

    # -- lookup --------------------------------------------------------------------------------
    def _get(self, table: dict[str, Any], kind: str, name: str):
        try:
            return table[name]
        except KeyError:
            known = ", ".join(sorted(table)) or "none"
            raise UnknownComponentError(f"no {kind} named '{name}' (available: {known}){self._not_loaded_hint()}") from None

    def _not_loaded_hint(self) -> str:
        """What a missing component may be missing for: the plugins that failed to load (each with
        its package and why) and those disabled, or "" when every plugin loaded."""
        failed = [f"{r.origin}: {r.error}" for r in self.records.values() if r.status == "failed"]
        disabled = [r.name for r in self.records.values() if r.status == "disabled"]
        parts = ([f"plugins that failed to load: {'; '.join(failed)}"] if failed else []) + (
            [f"plugins not loaded: {', '.join(disabled)}"] if disabled else [])
        return f" ({'; '.join(parts)}; see 'metastudio plugins')" if parts else ""

    def algorithm(self, name: str) -> type[Algorithm]:
        return self._get(self.algorithms, "algorithm", name)

    def backbone(self, name: str) -> BackboneSpec:
        return self._get(self.backbones, "backbone", name)

    def dataset(self, name: str) -> DatasetSpec:
        return self._get(self.datasets, "dataset", name)

    def withhold_models(self, names: Iterable[str], holder: str) -> None:
        """Leave out the plugins' models named like one of ``names`` (the models MetaStudio
        ships, found in ``holder``: those keep their names), each reported as a warning of the
        plugin that offered it. Calling it again changes nothing."""
        with _HOST_LOCK:
            for name in sorted(set(self.models).intersection(names)):
                del self.models[name]
                owner = self._owner.pop(("model", name))
                record = self.records[owner]
                record.components.remove(("model", name))
                record.warnings.append(f"model '{name}' is already a model shipped with MetaStudio (in {holder}); "
                                       "this one is ignored")

    def origin_of(self, kind: str, name: str) -> PluginOrigin | None:
        """The plugin that provides the ``kind`` ("algorithm", "backbone", "dataset" or "model") named
        ``name``, or None when no loaded plugin does (a component added by hand, say)."""
        owner = self._owner.get((kind, name))
        record = self.records.get(owner) if owner is not None else None
        return record.origin if record is not None else None

    def rows(self) -> list[dict[str, str]]:
        """One row per component (or per plugin that provides none): for ``metastudio plugins``."""
        out = []
        for rec in self.records.values():
            base = {"plugin": rec.name, "version": rec.version, "package": rec.package, "status": rec.status,
                    "error": rec.error, "builtin": rec.builtin}
            if rec.components and rec.status == "ok":
                for kind, name in rec.components:
                    out.append({"name": name, "kind": kind, **base})
            else:
                out.append({"name": rec.name, "kind": "plugin", **base})
            for w in rec.warnings:
                out.append({"name": rec.name, "kind": "plugin", **base, "status": "warning", "error": w})
        return out


def _model_item_problem(item: Any) -> str:
    """What is wrong with ``item`` as an item of ``metastudio_models`` ("" when nothing)."""
    if isinstance(item, ModelSpec):
        if not isinstance(item.name, str) or not item.name.strip() or any(c in item.name for c in "/\\"):
            return f"a model named {item.name!r}: a name must be plain words, without slashes"
        if not isinstance(item.path, os.PathLike):
            return f"model '{item.name}' with the path {item.path!r}, which is not a path of a file on disk"
        if not isinstance(item.title, str):
            return f"model '{item.name}' with the title {item.title!r}, which is not a string"
        return ""
    if not isinstance(item, (str, os.PathLike)):
        return f"{item!r}, which is neither a ModelSpec nor the path of a {MODEL_SUFFIX} file on disk"
    return ""


_HOST: PluginHost | None = None
_HOST_LOCK = threading.RLock()


def get_host(*, safe_mode: bool | None = None) -> PluginHost:
    """The process's plugin host, loaded on first use: every installed plugin (the built-in ones
    only with ``safe_mode``).

    What a plugin's tests may rely on (stable like the rest of :mod:`metastudio.api`):

    * ``host.algorithm(name)`` (an Algorithm class), ``host.backbone(name)`` (a BackboneSpec)
      and ``host.dataset(name)`` (a DatasetSpec); an unknown name raises
      :class:`~metastudio.errors.UnknownComponentError` (a KeyError);
    * ``host.records``, a dict from each plugin's entry-point name to its record, with
      ``status`` (``"ok"``, ``"failed"`` or ``"disabled"``), ``error`` and ``traceback`` (why
      it failed; empty otherwise), ``components`` (``(kind, name)`` pairs it registered) and
      ``warnings`` (what the host left out of it, and why), beside ``package`` and ``version``.

    Everything else of the host is internal."""
    global _HOST
    with _HOST_LOCK:  # the app's worker and its window may both ask first: load the plugins once
        if _HOST is None or (safe_mode is not None and safe_mode != _HOST.safe_mode):
            _HOST = PluginHost(safe_mode=safe_mode).load_entry_points()
        return _HOST


def reset_host() -> None:
    """Forget the loaded host (tests; after installing a plugin)."""
    global _HOST
    _HOST = None


__all__ = ["PluginHost", "PluginRecord", "get_host", "reset_host"]
