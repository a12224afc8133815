"""Garbage is collected in the GUI thread only while the app runs (metastudio.gui.collector):
a worker that makes lots of cyclic garbage never collects it itself, so no Qt object is ever
destroyed outside the thread that owns it."""

from __future__ import annotations

import gc
import threading

from metastudio.gui.collector import MainThreadCollector, collectors_installed


class Cycle:
    def __init__(self):
        self.me = self


def test_collections_happen_in_the_gui_thread_only_and_the_old_state_comes_back(qtbot):
    assert gc.isenabled()
    where: list[int] = []

    def record(phase, info):
        if phase == "start":
            where.append(threading.get_ident())

    first, second = MainThreadCollector().install(), MainThreadCollector(interval_ms=50).install()
    assert not gc.isenabled() and collectors_installed() == 2
    gc.callbacks.append(record)
    try:
        worker = threading.Thread(target=lambda: [Cycle() for _ in range(200_000)])
        worker.start()
        worker.join()
        assert where == []  # the worker passed every threshold many times, and collected nothing
        qtbot.waitUntil(lambda: bool(where), timeout=5000)
        assert set(where) == {threading.main_thread().ident}
    finally:
        gc.callbacks.remove(record)
        first.uninstall()
        assert not gc.isenabled()  # one is still installed
        second.uninstall()
    assert gc.isenabled() and collectors_installed() == 0
    assert second.collect_if_due() in (-1, 0, 1, 2)


def test_a_collector_destroyed_with_its_window_puts_collection_back(qtbot):
    from PySide6.QtWidgets import QWidget

    window = QWidget()
    MainThreadCollector(window).install()
    assert not gc.isenabled()
    window.deleteLater()
    qtbot.waitUntil(lambda: gc.isenabled(), timeout=5000)
    assert collectors_installed() == 0
