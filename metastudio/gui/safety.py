"""The app's safety nets: no exception ends MetaStudio or vanishes unseen.

Every command of the menus and toolbar runs through :func:`guarded`, which turns whatever it
raises into the window's error notification: one line worded by
:func:`metastudio.errors.for_person` ("…, in plugin X (package Y Z)" when plugin code raised),
with the traceback behind Details…. Anything else nothing caught (a slot Qt called, a Python
thread) reaches :class:`ExceptionHooks`, which the running app installs as ``sys.excepthook``
and ``threading.excepthook``: it prints the traceback to stderr, for a bug report, and shows the
same notification in the window.
"""

from __future__ import annotations

import sys
import threading
import traceback
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, Signal, Slot

from metastudio.errors import MetaStudioError, for_person


def what_went_wrong(error: BaseException, doing: str = "") -> tuple[str, str]:
    """The notification of ``error`` raised while ``doing`` (a command's name, "" when not
    known): its one line and its details (the traceback)."""
    said = for_person(error)
    return (f"'{doing}' did not work: {said.message}" if doing else said.message), said.details


def report_failure(window, error: BaseException, doing: str = "") -> None:
    """Show ``error``, raised while ``doing``, as the window's error notification. An exception
    that is not a :class:`MetaStudioError` (a fault, not a message written for a person) also
    goes to stderr with its traceback, for a bug report."""
    if not isinstance(error, MetaStudioError):
        traceback.print_exception(error, file=sys.stderr)
    window.show_error(*what_went_wrong(error, doing))


def guarded(window, doing: str, call: Callable[[], Any]) -> Callable[..., None]:
    """A slot that calls ``call()`` (ignoring the signal's arguments) and turns any exception
    it raises into the window's notification (:func:`report_failure`) instead of letting it
    reach ``sys.excepthook``."""

    def slot(*_: object) -> None:
        try:
            call()
        except Exception as error:  # noqa: BLE001 - the one safety net of this command
            report_failure(window, error, doing)

    return slot


class ExceptionHooks(QObject):
    """While installed (:meth:`install` .. :meth:`uninstall`), an exception nothing caught,
    whether in a Qt slot or in a Python thread, is printed to stderr with its traceback and
    shown as the window's error notification (in the window's thread, whichever thread raised)."""

    _caught = Signal(str, str)  # the notification's line and details

    def __init__(self, window):
        super().__init__(window)
        self._window = window
        self._previous: tuple[Any, Any] | None = None
        self._caught.connect(self._show)

    @property
    def installed(self) -> bool:
        return self._previous is not None

    def install(self) -> ExceptionHooks:
        """Put the hooks in place (remembering the ones there were); returns self."""
        if self._previous is None:
            self._previous = (sys.excepthook, threading.excepthook)
            sys.excepthook = self._sys_hook
            threading.excepthook = self._thread_hook
        return self

    def uninstall(self) -> None:
        """Put back the hooks there were before :meth:`install`."""
        if self._previous is not None:
            sys.excepthook, threading.excepthook = self._previous
            self._previous = None

    def _sys_hook(self, exc_type, exc, tb) -> None:
        if issubclass(exc_type, KeyboardInterrupt) and self._previous is not None:
            self._previous[0](exc_type, exc, tb)  # Ctrl-C keeps its usual meaning
            return
        traceback.print_exception(exc_type, exc, tb, file=sys.stderr)
        self._tell(exc if exc is not None else exc_type())

    def _thread_hook(self, args) -> None:
        if args.exc_type is SystemExit:  # a thread that exits on purpose, as threading's own hook sees it
            return
        name = args.thread.name if args.thread is not None else "a thread"
        print(f"Exception in thread {name}:", file=sys.stderr)
        traceback.print_exception(args.exc_type, args.exc_value, args.exc_traceback, file=sys.stderr)
        self._tell(args.exc_value if args.exc_value is not None else args.exc_type())

    def _tell(self, error: BaseException) -> None:
        """Send the notification of ``error`` to the window's thread (queued from other threads)."""
        try:
            self._caught.emit(*what_went_wrong(error))
        except RuntimeError:  # the window is gone; the traceback is on stderr
            pass

    @Slot(str, str)
    def _show(self, message: str, details: str) -> None:
        self._window.show_error(message, details)


def install_exception_hooks(window) -> ExceptionHooks:
    """:class:`ExceptionHooks` for ``window``, installed (call ``uninstall()`` when the app ends)."""
    return ExceptionHooks(window).install()
