"""The notification bar at the top of the window: one message at a time, never modal, with
the technical wording behind Details… and an optional action ("Use this model")."""

from __future__ import annotations

from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QMessageBox, QPushButton, QStyle, QWidget

APP_NAME = "MetaStudio"


class NotificationBar(QFrame):
    """A dismissable message at the top of the window, with details on request (never modal)."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("notification")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(8, 4, 8, 4)
        self.icon = QLabel()
        self.text = QLabel()
        self.text.setWordWrap(True)
        self.text.setAccessibleName("Notification")
        self.details_button = QPushButton("Details…")
        self.details_button.clicked.connect(self._show_details)
        # An optional action the message offers (e.g. "Use this model"); it closes the bar.
        self.action_button = QPushButton()
        self.action_button.clicked.connect(self._run_action)
        self.action_button.hide()
        close = QPushButton("Dismiss")
        close.clicked.connect(self.hide)
        layout.addWidget(self.icon)
        layout.addWidget(self.text, 1)
        layout.addWidget(self.action_button)
        layout.addWidget(self.details_button)
        layout.addWidget(close)
        self.details = ""
        self._action = None
        self.hide()

    def show_message(self, text: str, details: str = "", level: str = "warning",
                     action: tuple[str, object] | None = None) -> None:
        """Show ``text``; ``details`` behind Details…; ``action`` is (button label, callable)."""
        icon = {"error": QStyle.StandardPixmap.SP_MessageBoxCritical,
                "warning": QStyle.StandardPixmap.SP_MessageBoxWarning}.get(level, QStyle.StandardPixmap.SP_MessageBoxInformation)
        self.icon.setPixmap(self.style().standardIcon(icon).pixmap(20, 20))
        colour = {"error": "#c62828", "warning": "#e0a100"}.get(level, "#1e88e5")
        self.setStyleSheet(f"#notification {{ border: 1px solid {colour}; border-left: 5px solid {colour}; }}")
        self.text.setText(text)
        self.details = details
        self.details_button.setVisible(bool(details))
        self._action = action[1] if action else None
        self.action_button.setText(action[0] if action else "")
        self.action_button.setVisible(action is not None)
        self.show()

    def _run_action(self) -> None:
        action, self._action = self._action, None
        self.hide()
        if action is not None:
            action()

    def _show_details(self) -> None:
        box = QMessageBox(self)
        box.setWindowTitle(APP_NAME)
        box.setText(self.text.text())
        box.setDetailedText(self.details)
        box.setIcon(QMessageBox.Icon.Information)
        box.open()
