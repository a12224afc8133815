"""Cooperative cancel and pause for long work running in another thread (training, evaluation)."""

from __future__ import annotations

import threading


class Control:
    """Shared by the thread doing the work and the one that steers it (GUI, CLI signal handler).

    The worker calls :meth:`should_stop` once per step: it returns True once :meth:`cancel`
    was called, and blocks while paused (so pausing costs no CPU).
    """

    def __init__(self):
        self._cancel = threading.Event()
        self._running = threading.Event()
        self._running.set()

    def cancel(self) -> None:
        self._cancel.set()
        self._running.set()  # wake a paused worker so it can stop

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    def should_stop(self) -> bool:
        self._running.wait()
        return self._cancel.is_set()
