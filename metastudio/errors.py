"""Exceptions of MetaStudio, and the one place that turns any exception into words for a person.

Every message of a :class:`MetaStudioError` is written for the person who will read it.
:func:`for_person` is how the command line (one line on stderr, the traceback with ``--debug``)
and the GUI (a notification with a Details... pane) describe an error; nothing else formats one.
This module imports nothing of MetaStudio: every layer may import it.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass

#: Exit statuses of the command line.
EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130


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


class UnknownComponentError(MetaStudioError, KeyError):
    """No loaded plugin provides the algorithm, backbone or dataset asked for."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


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


def for_person(error: BaseException) -> PersonMessage:
    """How to tell a person about ``error``.

    A :class:`MetaStudioError` is already written for them; a ``ValueError`` (a bad value they
    gave) is shown as it is, with the usage exit status; an ``OSError`` becomes its reason and
    file; ``KeyboardInterrupt`` is "interrupted". Anything else is a bug: its type is named so
    that a report can say what happened."""
    details = "".join(traceback.format_exception(error)) if error.__traceback__ is not None else ""
    if isinstance(error, MetaStudioError):
        return PersonMessage(message_of(error), details)
    if isinstance(error, KeyboardInterrupt):
        return PersonMessage("interrupted", "", EXIT_INTERRUPTED)
    if isinstance(error, ValueError):
        return PersonMessage(message_of(error), details, EXIT_USAGE)
    if isinstance(error, OSError):
        where = f": {error.filename}" if getattr(error, "filename", None) else ""
        return PersonMessage(f"{error.strerror or message_of(error)}{where}", details)
    return PersonMessage(f"{type(error).__name__}: {message_of(error)}", details)
