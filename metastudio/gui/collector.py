"""Python's cyclic garbage collector, run in the GUI thread only.

Python collects reference cycles in whichever thread happens to allocate when a threshold is
passed: the adapt worker, say. If the garbage holds Qt objects (a menu rebuilt, a closed
dialog, the widgets of a window), their C++ destructors then run in that thread and take Qt's
locks while waiting for the interpreter lock the GUI thread holds, and the GUI thread, deleting
widgets of its own, waits for those Qt locks: both stop for good. While a
:class:`MainThreadCollector` is installed, automatic collection is off and a timer in the GUI
thread collects the generations whose thresholds were passed, so Qt objects are only ever
destroyed in the thread that owns them.
"""

from __future__ import annotations

import gc

from PySide6.QtCore import QObject, QTimer

#: How often the GUI thread checks whether a collection is due (milliseconds).
INTERVAL_MS = 500

_installed = 0  # collectors installed now (the windows of a test session may overlap)
_was_enabled = True


class MainThreadCollector(QObject):
    """Collects garbage from the GUI thread's event loop while :meth:`install` ed (until
    :meth:`uninstall`, or until it is destroyed with its parent)."""

    def __init__(self, parent: QObject | None = None, interval_ms: int = INTERVAL_MS):
        super().__init__(parent)
        self._timer = QTimer(self)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self.collect_if_due)
        self._state = {"on": False}

    def install(self) -> MainThreadCollector:
        """Turn automatic collection off (the first collector to do so remembers whether it was
        on) and start checking; returns self."""
        global _installed, _was_enabled
        if not self._state["on"]:
            if _installed == 0:
                _was_enabled = gc.isenabled()
                gc.disable()
            _installed += 1
            self._state = state = {"on": True}
            self.destroyed.connect(lambda *_: _release(state))  # a window closed without uninstall
            self._timer.start()
        return self

    def uninstall(self) -> None:
        """Stop checking; the last collector to go collects once and puts automatic collection
        back as it was."""
        if self._state["on"]:
            self._timer.stop()
            _release(self._state)
            gc.collect()

    def collect_if_due(self) -> int:
        """Collect the oldest generation whose threshold is passed (nothing when none is);
        returns the generation collected, or -1."""
        counts, thresholds = gc.get_count(), gc.get_threshold()
        due = [g for g in range(3) if thresholds[g] and counts[g] > thresholds[g]]
        if not due:
            return -1
        gc.collect(due[-1])
        return due[-1]


def _release(state: dict) -> None:
    """One installed collector fewer (once per installation); the last one puts automatic
    collection back as it was."""
    global _installed
    if not state["on"]:
        return
    state["on"] = False
    _installed -= 1
    if _installed == 0 and _was_enabled:
        gc.enable()


def collectors_installed() -> int:
    """How many collectors are installed now (0: automatic collection is as Python left it)."""
    return _installed
