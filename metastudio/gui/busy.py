"""The status bar's sign that MetaStudio is learning the classes: a progress bar and a Cancel
button; and the wait cursor, :func:`busy_cursor`.

The button appears only once an adaptation has taken :data:`CANCEL_AFTER_MS` (most take a
fraction of a second, and a button flashing at every drop would only distract). Pressing it
emits ``cancel_requested``; the window asks the engine to stop waiting for the algorithm
(:meth:`metastudio.gui.engine.EngineClient.cancel`), which matters most for a plugin that hangs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QHBoxLayout, QProgressBar, QPushButton, QSizePolicy, QWidget

#: How long an adaptation runs before its Cancel button shows (milliseconds).
CANCEL_AFTER_MS = 400


class BusyIndicator(QWidget):
    """``bar`` (indefinite, or step n of N) and ``cancel_button``; hidden while nothing runs."""

    cancel_requested = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.bar = QProgressBar()
        self.bar.setMaximumWidth(160)
        self.bar.setTextVisible(False)
        self.bar.setAccessibleName("Adapting")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setAccessibleName("Cancel learning the classes")
        self.cancel_button.setToolTip("Stop waiting for the algorithm to learn your classes "
                                      "(your project stays as it is)")
        self.cancel_button.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Fixed)
        self.cancel_button.clicked.connect(self._cancel_clicked)
        self.cancel_button.hide()
        layout.addWidget(self.bar)
        layout.addWidget(self.cancel_button)
        self._reveal = QTimer(self)
        self._reveal.setSingleShot(True)
        self._reveal.setInterval(CANCEL_AFTER_MS)
        self._reveal.timeout.connect(self.cancel_button.show)
        self.setSizePolicy(QSizePolicy.Policy.Maximum, QSizePolicy.Policy.Preferred)  # the status text keeps the room
        self.hide()

    def set_busy(self, busy: bool) -> None:
        """Show the indicator (the Cancel button a moment later) or hide both."""
        self.setVisible(busy)
        self.bar.setRange(0, 0)
        self.cancel_button.setEnabled(True)
        if not busy:
            self._reveal.stop()
            self.cancel_button.hide()
        elif self.cancel_button.isHidden():
            self._reveal.start()

    def set_progress(self, step: int, total: int) -> None:
        self.bar.setRange(0, total)
        self.bar.setValue(step)

    def _cancel_clicked(self) -> None:
        self.cancel_button.setEnabled(False)  # once is enough; enabled again when the next one starts
        self.cancel_requested.emit()


@contextmanager
def busy_cursor() -> Iterator[None]:
    """The wait cursor while the window does something a person waits for (checking a file)."""
    QGuiApplication.setOverrideCursor(Qt.CursorShape.WaitCursor)
    try:
        yield
    finally:
        QGuiApplication.restoreOverrideCursor()
