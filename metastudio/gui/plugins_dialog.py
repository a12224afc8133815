"""Help > Plugins: every algorithm, and every plugin that failed to load with its error."""

from __future__ import annotations

from PySide6.QtWidgets import QDialog, QDialogButtonBox, QLabel, QPlainTextEdit, QStyle, QTreeWidget, QTreeWidgetItem, QVBoxLayout


class PluginsDialog(QDialog):
    def __init__(self, catalog: dict, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Plugins")
        self.resize(720, 420)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("Algorithms come from plugins. A plugin that fails to load is disabled; the rest work."))
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(["Name", "Kind", "State"])
        self.tree.setAccessibleName("Plugins")
        for algo in catalog.get("algorithms", []):
            QTreeWidgetItem(self.tree, [algo["title"], f"algorithm ({algo['family']})", "loaded"]).setToolTip(0, algo["description"])
        warn = self.style().standardIcon(QStyle.StandardPixmap.SP_MessageBoxWarning)
        for fail in catalog.get("failed", []):
            item = QTreeWidgetItem(self.tree, [fail["plugin"], f"plugin from {fail['package']}", "failed: " + fail["error"]])
            item.setIcon(0, warn)
            item.setData(0, 256, fail.get("traceback", ""))
        self.tree.resizeColumnToContents(0)
        layout.addWidget(self.tree, 1)
        self.details = QPlainTextEdit()
        self.details.setReadOnly(True)
        self.details.setPlaceholderText("Select a failed plugin to see its error")
        self.details.setMaximumHeight(140)
        layout.addWidget(self.details)
        self.tree.currentItemChanged.connect(lambda item, _: self.details.setPlainText(item.data(0, 256) or "" if item else ""))
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
