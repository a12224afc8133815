"""Exceptions of MetaStudio, and the one place that turns any exception into words for a person.

Every message of a :class:`MetaStudioError` is written for the person who will read it.
:func:`for_person` is how the command line (one line on stderr, the traceback with ``--debug``)
and the GUI (a notification with a Details... pane) describe an error; nothing else formats one.
The plugin host registers each plugin's modules here (:func:`register_plugin_module`), so that
an exception raised through a plugin's code names the plugin (:class:`PluginOrigin`).
This module imports nothing of MetaStudio: every layer may import it.
"""

from __future__ import annotations

import threading
import traceback
from dataclasses import dataclass

#: Exit statuses of the command line: bad input (a :class:`MetaStudioError`), a bad command line
#: or value, a plugin that failed, a fault in MetaStudio itself (a bug), a time limit passed (as
#: ``timeout(1)`` exits), and Ctrl-C.
EXIT_ERROR, EXIT_USAGE, EXIT_PLUGIN, EXIT_INTERNAL, EXIT_TIMEOUT, EXIT_INTERRUPTED = 1, 2, 3, 4, 124, 130


class MetaStudioError(Exception):
    """Base class of every error the engine raises on purpose (bad input, missing file, ...).

    The CLI prints ``str(error)`` on one line and exits non-zero; the GUI shows it in a dialog.
    """


class ImageLoadError(MetaStudioError):
    """An image file could not be used. ``path`` names the file; ``reason`` says why in everyday
    words (what a person sees next to the file); ``detail`` is the technical wording (the image
    library's own message, for a Details pane or a bug report), ``""`` when there is nothing to
    add. ``str(error)`` is ``cannot use image 'PATH': REASON``."""

    def __init__(self, path: str, reason: str, detail: str = ""):
        self.path = str(path)
        self.reason = reason
        self.detail = detail
        super().__init__(f"cannot use image '{self.path}': {reason}")

    def __reduce__(self):  # pickles with its three fields (the base class would pass the message)
        return type(self), (self.path, self.reason, self.detail)


class DatasetError(MetaStudioError):
    """A dataset is missing, empty, corrupt or too small for the episodes asked of it."""


class CheckpointError(MetaStudioError):
    """A model or checkpoint file could not be read or written."""


class FixedHyperParameterError(MetaStudioError, ValueError):
    """A trained model was asked to use another value of a hyperparameter that its training fixed
    (a ``training`` or ``architecture`` one; see :class:`metastudio.algorithms.base.HyperParameter`)."""


class ProjectError(MetaStudioError):
    """A ``.metastudio`` project file could not be opened or saved (the message names the file)."""


class TrainingError(MetaStudioError):
    """Meta-training cannot go on (for example the loss became NaN)."""


class MetaStudioDeprecationWarning(DeprecationWarning):
    """What MetaStudio warns with when a plugin uses something deprecated (see "Versions,
    stability and deprecation" in docs/plugins.md); ``metastudio plugins validate`` lists each."""


class UnknownComponentError(MetaStudioError, KeyError):
    """No loaded plugin provides the algorithm, backbone or dataset asked for."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class PluginOrigin:
    """Which plugin some code belongs to: its entry-point ``name``, and the ``package`` (the
    distribution) and ``version`` it was installed from. ``str()`` is how messages name it:
    ``plugin NAME (package PACKAGE VERSION)``."""

    name: str
    package: str
    version: str

    def __str__(self) -> str:
        return f"plugin {self.name} (package {self.package} {self.version})"


_PLUGIN_MODULES: dict[str, PluginOrigin] = {}
_PLUGIN_MODULES_LOCK = threading.Lock()


def register_plugin_module(module_prefix: str, origin: PluginOrigin) -> None:
    """Record that the module ``module_prefix`` and the modules below it (``prefix.*``) are the
    code of the plugin ``origin``, so that a failure whose traceback runs through them names it
    (:func:`plugin_of`, :func:`for_person`). The plugin host calls this for each plugin it loads."""
    with _PLUGIN_MODULES_LOCK:
        _PLUGIN_MODULES[module_prefix] = origin


def plugin_of(module_name: str) -> PluginOrigin | None:
    """The plugin whose code the module ``module_name`` is, or None: the longest registered
    prefix wins (the built-ins share one package, but each entry point is its own module)."""
    if not module_name:
        return None
    with _PLUGIN_MODULES_LOCK:
        registered = dict(_PLUGIN_MODULES)
    name = module_name
    while True:
        if name in registered:
            return registered[name]
        if "." not in name:
            return None
        name = name.rsplit(".", 1)[0]


class PluginError(MetaStudioError):
    """A plugin failed while MetaStudio was using it (it raised, gave output of the wrong shape or
    with NaN, ...). ``origin`` names the plugin (None when it is not known); ``str(error)`` is
    ``MESSAGE, in plugin X (package Y Z)``, or just ``MESSAGE`` without an origin."""

    def __init__(self, message: str, origin: PluginOrigin | None):
        self.message = message
        self.origin = origin
        super().__init__(f"{message}, in {origin}" if origin is not None else message)

    def __reduce__(self):  # pickles with its two fields (the base class would pass the full text)
        return type(self), (self.message, self.origin)


class PluginTimeout(PluginError):
    """A plugin call did not finish within its time limit; MetaStudio stopped waiting for it
    (the call may still be running in the background)."""


class PluginCancelled(PluginError):
    """A person cancelled while a plugin call was running; MetaStudio stopped waiting for it."""


@dataclass(frozen=True)
class PersonMessage:
    """An error as a person reads it: ``message`` (one line), ``details`` (the traceback, for a
    Details... pane or ``--debug``; "" when there is none) and the command line's ``exit_code``."""

    message: str
    details: str = ""
    exit_code: int = EXIT_ERROR


def message_of(error: BaseException) -> str:
    """The exception's own text, or its class name when it has none."""
    text = str(error).strip()
    return text if text else type(error).__name__


def os_reason(error: BaseException) -> str:
    """An OSError's reason in lower case ("no such file or directory"), else its text."""
    strerror = getattr(error, "strerror", None)
    return strerror.lower() if isinstance(strerror, str) and strerror else message_of(error)


def one_line(text: str) -> str:
    """``text`` on one line: its non-blank lines, stripped, joined with "; "."""
    return "; ".join(line.strip() for line in text.strip().splitlines() if line.strip())


def plugin_in_traceback(error: BaseException) -> PluginOrigin | None:
    """The plugin whose code ``error`` was raised in or passed through: the innermost frame of its
    traceback in a registered plugin module (:func:`register_plugin_module`), else that of the
    exception it was raised from; None when no plugin code took part."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        found = None
        for frame, _ in traceback.walk_tb(error.__traceback__):
            origin = plugin_of(frame.f_globals.get("__name__", ""))
            if origin is not None:
                found = origin
        if found is not None:
            return found
        error = error.__cause__ or error.__context__
    return None


#: What a fault in MetaStudio itself adds to its one line.
INTERNAL_FAULT_NOTE = ("This is a fault in MetaStudio itself, not in what you gave it: please report it, with "
                       "the details (--debug on the command line, Details... in the app)")


def for_person(error: BaseException) -> PersonMessage:
    """How to tell a person about ``error``.

    A :class:`MetaStudioError` is already written for them (a :class:`PluginError` exits with
    :data:`EXIT_PLUGIN`, a :class:`PluginTimeout` with :data:`EXIT_TIMEOUT`); a ``ValueError``
    (a bad value they gave) is shown as it is, with the usage exit status; an ``OSError`` becomes
    its reason and file; ``KeyboardInterrupt`` is "interrupted". Any other exception raised in or
    through a plugin's code is that plugin's fault: ``TYPE: MESSAGE, in plugin X (package Y Z)``,
    :data:`EXIT_PLUGIN`. Anything else is a bug in MetaStudio: its type and message are named,
    with how to report it, and it exits with :data:`EXIT_INTERNAL`."""
    details = "".join(traceback.format_exception(error)) if error.__traceback__ is not None else ""
    if isinstance(error, PluginTimeout):
        return PersonMessage(message_of(error), details, EXIT_TIMEOUT)
    if isinstance(error, PluginError):
        return PersonMessage(message_of(error), details, EXIT_PLUGIN)
    if isinstance(error, MetaStudioError):
        return PersonMessage(message_of(error), details)
    if isinstance(error, KeyboardInterrupt):
        return PersonMessage("interrupted", "", EXIT_INTERRUPTED)
    if isinstance(error, ValueError):
        return PersonMessage(message_of(error), details, EXIT_USAGE)
    if isinstance(error, OSError):
        where = f": {error.filename}" if getattr(error, "filename", None) else ""
        return PersonMessage(f"{error.strerror or message_of(error)}{where}", details)
    said = f"{type(error).__name__}: {one_line(message_of(error))}"
    origin = plugin_in_traceback(error)
    if origin is not None:
        return PersonMessage(f"{said}, in {origin}", details, EXIT_PLUGIN)
    return PersonMessage(f"{said.rstrip('.')}. {INTERNAL_FAULT_NOTE}", details, EXIT_INTERNAL)
