"""Check one plugin the way MetaStudio loads it, and run the test kit on what it provides:
``metastudio plugins validate TARGET``.

TARGET is an installed plugin (an entry-point name of the ``metastudio`` group), an installed
distribution (every plugin it declares), an importable module, or a path: a ``.py`` file, a
package folder, or a project folder with a ``pyproject.toml`` (its declared entry points, from
its ``src/`` folder when it has one; nothing needs to be installed).

Only the target is loaded, in a plugin manager of its own, beside a host with the built-in
plugins only (the names the target must not take, and the backbones for the test kit): no other
installed plugin is imported, so a broken one elsewhere cannot change the verdict. Unlike the
host, which disables a plugin at its first fault, every check runs and every problem is listed,
each as a :class:`Problem` saying what is wrong and how to fix it:

1. the target: found, and a distribution declares a ``metastudio`` entry point;
2. the module imports;
3. ``METASTUDIO_API_VERSION`` (optional) is a version this MetaStudio offers;
4. its hooks exist in :mod:`metastudio.plugins.hookspecs` (a misspelt one is named with the
   closest real hook), are decorated with ``@hookimpl`` and take no arguments;
5. each hook returns a list of the right kind (Algorithm subclasses, BackboneSpec, DatasetSpec);
6. names are unique within the plugin, not taken by a built-in, and the entry-point name is not
   another installed package's;
7. the test kit: :func:`~metastudio.plugins.testkit.check_algorithm` for each algorithm,
   :func:`~metastudio.plugins.testkit.check_backbone` for each backbone and, given a folder of
   data, :func:`~metastudio.plugins.testkit.check_dataset` for each dataset and split; each
   under a time limit, so a hanging plugin is reported rather than waited for.

Finally the plugin is registered with a fresh :class:`~metastudio.plugins.manager.PluginHost`:
should the host refuse it for a reason none of the checks above gave, that is a problem too, so
a clean result means ``metastudio plugins`` shows it loaded.
"""

from __future__ import annotations

import inspect
import os
import tempfile
import traceback
import warnings
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import pluggy

from metastudio.algorithms.backbone import BackboneSpec
from metastudio.algorithms.base import Algorithm
from metastudio.algorithms.hyperparameters import HyperParameter
from metastudio.data.datasets import DatasetSpec
from metastudio.errors import MetaStudioDeprecationWarning, PluginError, PluginTimeout, message_of, one_line
from metastudio.plugins import hookspecs
from metastudio.plugins.hookspecs import HOOK_API_VERSION, PROJECT, ModelSpec
from metastudio.plugins.manager import ENTRY_POINT_GROUP, HOOKS, PluginHost
from metastudio.plugins.validate_targets import (
    KINDS, Candidate, CheckedPlugin, Problem, Validation, closest, find_installed, find_path, looks_like_path, not_found,
    on_path,
)

#: Seconds each test-kit check may take before it is reported as hanging.
DEFAULT_TIME_LIMIT = 300.0
_MARKER = f"{PROJECT}_impl"
def _exception_words(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {one_line(message_of(exc))}" if str(exc).strip() else type(exc).__name__


def _format(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc))


# ----------------------------------------------------------------------------------------------
# checking one plugin


class _PluginCheck:
    """The checks of one candidate; problems go to ``result``."""

    def __init__(self, candidate: Candidate, result: Validation, builtins: PluginHost, kit_host: PluginHost,
                 options: dict[str, Any]):
        self.candidate, self.result, self.builtins, self.kit_host = candidate, result, builtins, kit_host
        self.options = options
        self.checked = CheckedPlugin(candidate.name, candidate.module, candidate.package, candidate.version)
        self.module: Any = None
        self.items: dict[str, list[Any]] = {kind: [] for kind, _ in HOOKS.values()}

    def problem(self, check: str, message: str, fix: str, severity: str = "error", exc: BaseException | None = None):
        self.result.problems.append(Problem(check, message, fix, severity, self.candidate.name,
                                            _format(exc) if exc is not None else ""))

    def where(self, exc: BaseException) -> str:
        """`` (file:line, in function)`` of the innermost frame of ``exc``'s traceback in the
        plugin's own code (its modules, and those its components are defined in), or ""; a
        SyntaxError names its own line."""
        if isinstance(exc, SyntaxError) and exc.filename:
            return f" ({exc.filename}:{exc.lineno})"
        tops = {self.candidate.module.split(":")[0].split(".")[0]}
        tops |= {getattr(item, "__module__", "").split(".")[0] for items in self.items.values() for item in items}
        tops -= {"", "metastudio"}
        last = None
        for frame, line in traceback.walk_tb(exc.__traceback__):
            if frame.f_globals.get("__name__", "").split(".")[0] in tops:
                last = (frame.f_code.co_filename, line, frame.f_code.co_name)
        return f" ({last[0]}:{last[1]}, in {last[2]})" if last else ""

    def has_errors(self) -> bool:
        return any(p.severity == "error" and p.plugin == self.candidate.name for p in self.result.problems)

    def run(self) -> CheckedPlugin:
        self.result.plugins.append(self.checked)
        if not self.load():
            return self.checked
        self.check_api_version()
        impls = self.check_hooks()
        if impls is not None:
            self.call_hooks(impls)
        self.check_names()
        self.check_models()
        self.run_test_kit()
        self.cross_check_with_host()
        return self.checked

    def load(self) -> bool:
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", MetaStudioDeprecationWarning)
                self.module = self.candidate.load()
            for w in caught:
                if issubclass(w.category, MetaStudioDeprecationWarning):
                    words = str(w.message)
                    self.problem("deprecated", f"{words} ({Path(w.filename).name}:{w.lineno})",
                                 "do what the warning says: the old way stops working with the next hook API version",
                                 "warning")
        except BaseException as exc:  # noqa: BLE001 - a plugin may raise anything, even SystemExit
            if isinstance(exc, KeyboardInterrupt):
                raise
            missing = getattr(exc, "name", None) if isinstance(exc, ModuleNotFoundError) else None
            fix = (f"install the module '{missing}' (and list its package in the plugin's dependencies)" if missing
                   else "fix the error at the end of its traceback (--traceback shows it)")
            self.problem("import", f"{self.candidate.module} could not be imported: {_exception_words(exc)}"
                         f"{self.where(exc)}", fix, exc=exc)
            return False
        return True

    def check_api_version(self) -> None:
        wanted = getattr(self.module, "METASTUDIO_API_VERSION", None)
        if wanted is None:
            self.problem("api version", "the module does not say which hook API it is written against",
                         f"add METASTUDIO_API_VERSION = {HOOK_API_VERSION} to it", "warning")
        elif not isinstance(wanted, int) or isinstance(wanted, bool):
            self.problem("api version", f"METASTUDIO_API_VERSION is {wanted!r}, not a whole number",
                         f"set METASTUDIO_API_VERSION = {HOOK_API_VERSION}")
        elif wanted > HOOK_API_VERSION:
            self.problem("api version", f"the plugin needs hook API version {wanted}, but this MetaStudio offers "
                         f"version {HOOK_API_VERSION}, so it refuses to load it",
                         "update MetaStudio, or write the plugin against the API this MetaStudio offers")
        elif wanted < HOOK_API_VERSION:
            self.problem("api version", f"the plugin is written against hook API version {wanted}; this MetaStudio "
                         f"offers version {HOOK_API_VERSION}, whose names may differ",
                         f"update the plugin (the Changes of docs/plugins.md list what changed), then set "
                         f"METASTUDIO_API_VERSION = {HOOK_API_VERSION}")

    def check_hooks(self) -> list[tuple[str, pluggy.HookImpl]] | None:
        """Hook names and decorations; the implementations (hook name, implementation) registered
        in a plugin manager of their own, or None when it refuses them."""
        members = dict(inspect.getmembers(self.module))
        marked = [n for n, obj in members.items() if hasattr(obj, _MARKER)]
        for name in marked:
            if name not in HOOKS:
                near = closest(name, HOOKS)
                self.problem("hooks", f"{name} is not a MetaStudio hook, so it is never called",
                             f"rename it {near} (the closest hook)" if near else
                             f"implement one of {', '.join(HOOKS)} instead")
        for name, obj in members.items():
            if name in HOOKS and callable(obj) and not hasattr(obj, _MARKER):
                self.problem("hooks", f"the function {name} is not decorated with @hookimpl, so it is never called",
                             "put @hookimpl (from metastudio.api) on the line above it")
            elif (name.startswith(f"{PROJECT}_") and inspect.isfunction(obj) and name not in HOOKS
                  and not hasattr(obj, _MARKER) and closest(name, HOOKS)):
                self.problem("hooks", f"the function {name} looks like the hook {closest(name, HOOKS)} but is not it",
                             f"rename it {closest(name, HOOKS)} and decorate it with @hookimpl", "warning")
        if not any(n in HOOKS for n in marked):
            self.problem("hooks", "the plugin implements no hook, so it provides nothing",
                         f"implement one of {', '.join(HOOKS)}, decorated with @hookimpl (from metastudio.api)")
            return None
        manager = pluggy.PluginManager(PROJECT)
        manager.add_hookspecs(hookspecs)
        try:
            manager.register(self.module, name=self.candidate.name)
        except Exception as exc:  # pluggy.PluginValidationError: a hook's arguments
            self.problem("hooks", f"the hooks cannot be registered: {one_line(message_of(exc))}",
                         "MetaStudio's hooks take no arguments: def metastudio_algorithms(): ...", exc=exc)
            return None
        return [(hook, impl) for hook in HOOKS for impl in getattr(manager.hook, hook).get_hookimpls()]

    def call_hooks(self, impls: list[tuple[str, pluggy.HookImpl]]) -> None:
        for hook, impl in impls:
            kind, _ = HOOKS[hook]
            try:
                returned = impl.function()
            except BaseException as exc:  # noqa: BLE001
                if isinstance(exc, KeyboardInterrupt):
                    raise
                self.problem("hook results", f"the hook {hook} raised {_exception_words(exc)}{self.where(exc)}",
                             "make the hook return its list without failing (--traceback shows where it failed)",
                             exc=exc)
                continue
            if not isinstance(returned, (list, tuple)):
                self.problem("hook results", f"the hook {hook} returned {_describe(returned)}, not a list",
                             f"return a list of {_RETURNS[kind][0]}, e.g. return [{_RETURNS[kind][1]}]"
                             if kind in _RETURNS else f"return a list (see the {hook} hook's docstring)")
                continue
            for item in returned:
                problem = _item_problem(hook, kind, item)
                if problem:
                    self.problem("hook results", f"the hook {hook} returned {problem[0]}", problem[1])
                elif kind == "model" and not isinstance(item, ModelSpec):
                    self.items[kind].append(ModelSpec.from_path(item))  # a bare path, named after its file
                else:
                    self.items[kind].append(item)

    def check_names(self) -> None:
        """Component names unique and not the built-ins' (only the components MetaStudio would
        keep go on to the test kit); the entry-point name not another package's."""
        for kind, items in self.items.items():
            kept = []
            for item in items:
                key = (kind, item.name)
                if key in self.checked.components:
                    self.problem("names", f"the plugin gives the {kind} name '{item.name}' twice",
                                 f"give each {kind} a name of its own")
                    continue
                self.checked.components.append(key)
                if item.name in getattr(self.builtins, f"{kind}s", {}):
                    owner = self.builtins.origin_of(kind, item.name)
                    plugin = f"the built-in plugin {owner.name}" if owner is not None else "a built-in plugin"
                    self.problem("names", f"the {kind} name '{item.name}' is taken by {plugin}: MetaStudio keeps the "
                                 "built-in and ignores this one", f"rename the {kind}")
                    continue
                kept.append(item)
            self.items[kind] = kept
        if not self.candidate.declared:
            return
        others = [ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP) if ep.name == self.candidate.name
                  and getattr(getattr(ep, "dist", None), "name", None) != self.candidate.package]
        for ep in others:
            dist = getattr(ep, "dist", None)
            self.problem("names", f"the installed package {dist.name if dist else 'unknown'} has a plugin named "
                         f"'{ep.name}' too: only one of them loads",
                         "rename the entry point in [project.entry-points.metastudio]")

    def check_models(self) -> None:
        """Each model the plugin ships is a model file whose algorithm and backbone MetaStudio has
        (a built-in's or this plugin's)."""
        from metastudio.engine.checkpoint import read_metadata

        for spec in self.items.get("model", []):
            if not spec.path.is_file():
                self.problem("models", f"the file of the model '{spec.name}', {spec.path}, "
                             f"{'is a folder' if spec.path.is_dir() else 'does not exist'}",
                             "ship the model file inside the package (package data) and name it relative to the module")
                continue
            try:
                meta = read_metadata(spec.path)
            except Exception as exc:  # noqa: BLE001 - any unreadable file is reported, whatever the reason
                self.problem("models", f"the model '{spec.name}' ({spec.path}) cannot be read: {_exception_words(exc)}",
                             "ship a file written by metastudio train", exc=exc)
                continue
            for kind in ("algorithm", "backbone"):
                wanted = meta.get(kind)
                known = set(getattr(self.kit_host, f"{kind}s")) | {i.name for i in self.items.get(kind, [])}
                if isinstance(wanted, str) and wanted not in known:
                    self.problem("models", f"the model '{spec.name}' needs the {kind} '{wanted}', which neither "
                                 "MetaStudio nor this plugin provides",
                                 f"provide the {kind} in this plugin, or declare the package that does as a dependency",
                                 "warning")
            self.checked.passed.append(("model", spec.name))

    def run_test_kit(self) -> None:
        from metastudio.plugins.testkit import check_algorithm, check_backbone, check_dataset

        for spec in self.items["backbone"]:
            if spec.name not in self.kit_host.backbones:
                self.kit_host.backbones[spec.name] = spec
        with tempfile.TemporaryDirectory(prefix="metastudio-validate-") as tmp:
            for number, cls in enumerate(self.items["algorithm"]):
                folder = Path(tmp) / f"algorithm-{number}"
                folder.mkdir()
                if self.kit("algorithm", cls.name, check_algorithm, cls, host=self.kit_host, tmp_path=folder):
                    self.checked.passed.append(("algorithm", cls.name))
        for spec in self.items["backbone"]:
            channels = 3 if spec.pretrained else 1  # a pretrained one is most likely for photos
            if self.kit("backbone", spec.name, check_backbone, spec, channels, spec.default_image_size or 28):
                self.checked.passed.append(("backbone", spec.name))
        root = self.options.get("dataset_root")
        for spec in self.items["dataset"]:
            if root is None:
                self.result.notes.append(f"dataset {spec.name}: its loader was not run; give --dataset-root with a "
                                         "small copy of its data to run check_dataset on each split")
                continue
            passed = [self.kit("dataset", spec.name, check_dataset, spec, root, split, what=f"split {split}")
                      for split in spec.splits]
            if all(passed):
                self.checked.passed.append(("dataset", spec.name))

    def kit(self, kind: str, name: str, check: Callable[..., Any], *args: Any, what: str = "", **kwargs: Any) -> bool:
        """One test-kit check, under the time limit: True when it passes; a failure becomes a problem."""
        from metastudio.engine.guard import call_guarded

        label = f"{kind} {name}" + (f", {what}" if what else "")
        limit = self.options.get("time_limit")
        try:
            call_guarded(check, *args, what=f"the test kit on {label}", origin=None, time_limit=limit, **kwargs)
        except PluginTimeout:
            self.problem("test kit", f"{label}: the test kit did not finish within {limit:g} s (a call that hangs?)",
                         "find what blocks (does adapt wait for something?); --timeout SECONDS allows more time")
            return False
        except PluginError as wrapped:
            exc = wrapped.__cause__ or wrapped
            raised = exc.__cause__ if isinstance(exc, AssertionError) else None
            if isinstance(exc, AssertionError) and raised is None:  # a part of the contract not kept
                self.problem("test kit", f"{label}: {one_line(message_of(exc))}",
                             "change the plugin as the message says; the same check runs in the package's tests "
                             f"(metastudio.api.check_{kind})", exc=exc)
            elif raised is not None:  # the plugin's code raised during a step of the kit
                self.problem("test kit", f"{label}: {one_line(message_of(exc))}{self.where(raised)}",
                             "fix the plugin's code where it raised (--traceback shows the traceback)", exc=exc)
            else:
                self.problem("test kit", f"{label}: the test kit stopped: {_exception_words(exc)}{self.where(exc)}",
                             "the plugin's code raised this on the kit's small synthetic data (28x28 images, "
                             "5 classes): fix it where the traceback points (--traceback)", exc=exc)
            return False
        return True

    def cross_check_with_host(self) -> None:
        """Register the module with a fresh host (no other plugin): a refusal no check explained is a problem."""
        if self.has_errors():
            return
        record = PluginHost(safe_mode=True, disabled=()).register_module(
            self.module, self.candidate.name, package=self.candidate.package, version=self.candidate.version)
        if record.status != "ok":
            self.problem("host", f"MetaStudio's plugin host refuses the plugin: {record.error}",
                         "fix what the host says (metastudio plugins shows the same)")


def _describe(value: Any) -> str:
    if isinstance(value, type):
        return f"the class {value.__name__}"
    text = repr(value)
    return f"{type(value).__name__} {text[:60] + '...' if len(text) > 60 else text}"


#: kind -> (what its hook returns a list of, an example item)
_RETURNS = {"algorithm": ("Algorithm subclasses (the classes themselves)", "MyAlgorithm"),
            "backbone": ("BackboneSpec", 'BackboneSpec("my-net", build_my_net, "what it is")'),
            "dataset": ("DatasetSpec", 'DatasetSpec("my-data", load_my_data, "what it is")')}


def _item_problem(hook: str, kind: str, item: Any) -> tuple[str, str] | None:
    """(what is wrong, how to fix it) with one item the hook ``hook`` returned, or None when it is
    of the right kind."""
    if kind not in ("algorithm", "backbone", "dataset"):  # the host's own check of the item
        problem = PluginHost._check_items([item], kind, HOOKS[hook][1])
        return (problem, f"return what the {hook} hook's docstring in metastudio/plugins/hookspecs.py says") \
            if problem else None
    if kind == "algorithm":
        if isinstance(item, Algorithm):
            return (f"an instance of {type(item).__name__}, not the class",
                    f"return the class itself: [{type(item).__name__}]")
        if not (isinstance(item, type) and issubclass(item, Algorithm)):
            return (f"{_describe(item)}, which is not a subclass of metastudio.api.Algorithm",
                    "return your Algorithm subclasses: class MyAlgorithm(Algorithm): ...")
        if not isinstance(item.name, str) or not item.name:
            return (f"the algorithm class {item.__name__} without a name",
                    f'give it a class attribute name = "{item.__name__.lower()}"')
        if inspect.isabstract(item):
            missing = ", ".join(sorted(item.__abstractmethods__))
            return f"the algorithm class {item.__name__}, which does not implement {missing}", f"implement {missing}"
        return None
    spec_type = BackboneSpec if kind == "backbone" else DatasetSpec
    if not isinstance(item, spec_type):
        return (f"{_describe(item)}, which is not a {spec_type.__name__}",
                f"return {spec_type.__name__} objects (from metastudio.api): [{_RETURNS[kind][1]}]")
    if not isinstance(item.name, str) or not item.name:
        return f"a {spec_type.__name__} without a name", "give it a name (its first argument)"
    callable_name = "factory" if kind == "backbone" else "load"
    if not callable(getattr(item, callable_name)):
        return (f"the {kind} '{item.name}' whose {callable_name} is not callable",
                f"pass a function as its {callable_name}")
    if kind == "dataset":
        if not item.splits or not all(isinstance(s, str) for s in item.splits):
            return f"the dataset '{item.name}' without splits", 'declare its splits, e.g. splits=("train", "test")'
        if not all(isinstance(o, HyperParameter) for o in item.options):
            return (f"the dataset '{item.name}' with options that are not HyperParameters",
                    "declare each option as HyperParameter(name, type, default, help)")
    return None


# ----------------------------------------------------------------------------------------------
# the whole run


def validate(target: str, *, dataset_root: str | os.PathLike | None = None,
             time_limit: float | None = DEFAULT_TIME_LIMIT) -> Validation:
    """Check the plugin(s) ``target`` names (see the module's docstring) and return what was found.

    :param dataset_root: a folder of data for the target's datasets: ``check_dataset`` runs on
        each of their splits with it (without it, datasets are checked by their declaration).
    :param time_limit: seconds each test-kit check may take (None: no limit).
    """
    result = Validation(target)
    roots: list[Path] = []
    if looks_like_path(target):
        candidates = find_path(target, result, roots)
    else:
        candidates = find_installed(target, result)
        if candidates is None:
            if Path(target).exists():
                candidates = find_path(target, result, roots)
            else:
                not_found(target, result)
                candidates = []
    if not candidates:
        return result
    with on_path(roots):
        # The built-ins, less any plugin the target is: the names it must not take; and all the
        # built-ins, for the backbones of the test kit (the target's own are added to them).
        names = {c.name for c in candidates}
        builtins = PluginHost(safe_mode=True, disabled=names).load_entry_points()
        kit_host = PluginHost(safe_mode=True, disabled=()).load_entry_points()
        for candidate in candidates:
            _PluginCheck(candidate, result, builtins, kit_host,
                         {"dataset_root": dataset_root, "time_limit": time_limit}).run()
    return result


__all__ = ["DEFAULT_TIME_LIMIT", "KINDS", "CheckedPlugin", "Problem", "Validation", "validate"]
