"""The widgets of the Classify page: class cards, image lists and the probability bars (the query grid is in queries.py).

They read the project through :class:`~metastudio.gui.controller.ProjectController` and change
it only by calling its methods (so every change is undoable).
"""

from __future__ import annotations

import json
from pathlib import Path

from PySide6.QtCore import QByteArray, QMimeData, QPoint, QRect, QSize, Qt, Signal
from PySide6.QtGui import QColor, QPainter, QPalette, QPen, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QColorDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListView,
    QListWidget,
    QListWidgetItem,
    QMenu,
    QMessageBox,
    QPushButton,
    QScrollArea,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from metastudio.gui.controller import ProjectController
from metastudio.gui.engine import ThumbnailLoader

#: Drag-and-drop type for images already in the project (moving between classes and queries).
MIME_IMAGES = "application/x-metastudio-images"

ID_ROLE = Qt.ItemDataRole.UserRole + 1
KEY_ROLE = Qt.ItemDataRole.UserRole + 2
PATH_ROLE = Qt.ItemDataRole.UserRole + 3
PROBLEM_ROLE = Qt.ItemDataRole.UserRole + 5


def image_ids_from_mime(mime: QMimeData) -> list[str]:
    if not mime.hasFormat(MIME_IMAGES):
        return []
    try:
        return [str(i) for i in json.loads(bytes(mime.data(MIME_IMAGES)).decode())]
    except (ValueError, TypeError):
        return []


def local_paths_from_mime(mime: QMimeData) -> list[str]:
    return [u.toLocalFile() for u in mime.urls() if u.isLocalFile()] if mime.hasUrls() else []


def readable_text_colour(colour: QColor) -> QColor:
    """Black or white, whichever reads better on ``colour``."""
    luminance = 0.299 * colour.red() + 0.587 * colour.green() + 0.114 * colour.blue()
    return QColor("#000000") if luminance > 150 else QColor("#ffffff")


class ImageList(QListWidget):
    """Thumbnails of project images; they can be dragged onto a class card or the queries."""

    def __init__(self, thumbnails: ThumbnailLoader, icon_size: int, parent: QWidget | None = None, *,
                 captions: bool = True):
        super().__init__(parent)
        self.thumbnails = thumbnails
        self.captions = captions
        self.setViewMode(QListView.ViewMode.IconMode)
        self.setIconSize(QSize(icon_size, icon_size))
        self.setResizeMode(QListView.ResizeMode.Adjust)
        self.setMovement(QListView.Movement.Static)
        self.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.setDragEnabled(True)
        self.setDragDropMode(QAbstractItemView.DragDropMode.DragOnly)
        self.setAcceptDrops(False)  # drops go to the card / panel around it
        self.setUniformItemSizes(True)
        self.setWordWrap(True)
        thumbnails.changed.connect(self._thumbnail_ready)

    def mimeTypes(self) -> list[str]:
        return [MIME_IMAGES]

    def mimeData(self, items) -> QMimeData:
        mime = QMimeData()
        mime.setData(MIME_IMAGES, QByteArray(json.dumps([it.data(ID_ROLE) for it in items]).encode()))
        return mime

    def set_images(self, entries: list[tuple[str, str, str, str]]) -> None:
        """(image id, thumbnail key, file path, display name) of each image, in order."""
        current = [(self.item(i).data(ID_ROLE)) for i in range(self.count())]
        if current == [e[0] for e in entries]:
            return
        selected = set(self.selected_ids())
        self.clear()
        for image_id, key, path, name in entries:
            item = QListWidgetItem(name if self.captions else "")
            item.setData(Qt.ItemDataRole.AccessibleTextRole, name)
            item.setData(ID_ROLE, image_id)
            item.setData(KEY_ROLE, key)
            item.setData(PATH_ROLE, path)
            item.setToolTip(name)
            self._apply_thumbnail(item)
            self.addItem(item)
            item.setSelected(image_id in selected)

    def _apply_thumbnail(self, item: QListWidgetItem) -> None:
        key = item.data(KEY_ROLE)
        pixmap = self.thumbnails.pixmap(key, item.data(PATH_ROLE))
        if pixmap is not None:
            item.setIcon(pixmap)
        error = self.thumbnails.error(key)
        if error:
            item.setData(PROBLEM_ROLE, error)
            item.setToolTip(f"{item.data(Qt.ItemDataRole.AccessibleTextRole)}\nThis file can't be used: {error}")
            item.setIcon(self.style().standardIcon(QStyle.StandardPixmap.SP_MessageBoxCritical))

    def _thumbnail_ready(self, key: str) -> None:
        for i in range(self.count()):
            if self.item(i).data(KEY_ROLE) == key:
                self._apply_thumbnail(self.item(i))

    def selected_ids(self) -> list[str]:
        return [it.data(ID_ROLE) for it in self.selectedItems()]


class ClassCard(QFrame):
    """One class: colour, editable name, count, thumbnails; a drop target for files and images."""

    activated = Signal(str)  # class id (the card was clicked: paste goes here)

    def __init__(self, controller: ProjectController, class_id: str, number: int, thumbnails: ThumbnailLoader,
                 parent: QWidget | None = None):
        super().__init__(parent)
        self.controller, self.class_id = controller, class_id
        self.setObjectName("classCard")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setAcceptDrops(True)
        self.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 6, 8, 8)
        layout.setSpacing(4)
        header = QHBoxLayout()
        self.number = QLabel()
        self.number.setToolTip("Select a query image and press this key to move it into this class")
        self.colour_button = QToolButton()
        self.colour_button.setFixedSize(22, 22)
        self.colour_button.clicked.connect(self._pick_colour)
        self.name_edit = QLineEdit()
        self.name_edit.setFrame(False)
        font = self.name_edit.font()
        font.setBold(True)
        font.setPointSizeF(font.pointSizeF() * 1.1)
        self.name_edit.setFont(font)
        self.name_edit.editingFinished.connect(self._rename)
        self.count_label = QLabel()
        self.count_label.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        self.add_button = QToolButton()
        self.add_button.setText("+")
        self.add_button.setToolTip("Add images to this class…")
        self.add_button.setAccessibleName("Add images to class")
        self.add_button.clicked.connect(self._add_files)
        self.camera_button = QToolButton()
        self.camera_button.setIcon(camera_icon(self.palette().color(QPalette.ColorRole.ButtonText)))
        self.camera_button.setToolTip("Take example photos of this class with the camera")
        self.camera_button.setAccessibleName("Take photos with the camera")
        self.camera_button.clicked.connect(self.open_camera)
        self.camera_dialog = None
        self.delete_button = QToolButton()
        self.delete_button.setIcon(self.style().standardIcon(QStyle.StandardPixmap.SP_TrashIcon))
        self.delete_button.setToolTip("Delete this class (Undo brings it back)")
        self.delete_button.setAccessibleName("Delete class")
        self.delete_button.clicked.connect(lambda: controller.delete_class(class_id))
        for w in (self.number, self.colour_button):
            header.addWidget(w)
        header.addWidget(self.name_edit, 1)
        for w in (self.count_label, self.add_button, self.camera_button, self.delete_button):
            header.addWidget(w)
        layout.addLayout(header)
        self.images = ImageList(thumbnails, 56, captions=False)
        self.images.setFixedHeight(76)
        self.images.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.images.setFlow(QListView.Flow.LeftToRight)
        self.images.setWrapping(False)
        self.images.setItemDelegate(ThumbnailDelegate(60, self.images))
        self.images.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.images.customContextMenuRequested.connect(self._context_menu)
        self.images.setAccessibleName("Example images")
        self.empty_hint = QLabel("Drop example images or a folder here")
        self.empty_hint.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty_hint.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        self.empty_hint.setFixedHeight(76)
        self.empty_hint.setFrameShape(QFrame.Shape.StyledPanel)
        self.empty_hint.setFrameShadow(QFrame.Shadow.Sunken)
        layout.addWidget(self.images)
        layout.addWidget(self.empty_hint)
        self.set_number(number)
        self.refresh()

    def set_current(self, current: bool) -> None:
        """The current card (where a paste goes) is drawn with a full border in its colour."""
        self._current = current
        self.refresh()

    def set_number(self, number: int) -> None:
        self.number.setText(f"{number}" if number <= 9 else "")
        self.number.setVisible(number <= 9)

    @property
    def entry(self):
        return self.controller.project.class_by_id(self.class_id)

    def refresh(self) -> None:
        entry, project = self.entry, self.controller.project
        colour = QColor(entry.colour)
        self.colour_button.setStyleSheet(
            f"QToolButton {{ background: {entry.colour}; border: 1px solid palette(mid); border-radius: 11px; }}"
        )
        self.colour_button.setToolTip(f"Colour of '{entry.name}' (click to change)")
        self.colour_button.setAccessibleName(f"Colour of class {entry.name}")
        full = f"border: 2px solid {colour.name()}; " if getattr(self, "_current", False) else ""
        self.setStyleSheet(f"#classCard {{ {full}border-left: 5px solid {colour.name()}; }}")
        if not self.name_edit.hasFocus():
            self.name_edit.setText(entry.name)
            self.name_edit.setCursorPosition(0)  # a long name shows its beginning, not its end
        self.name_edit.setAccessibleName(f"Name of class {entry.name}")
        n = len(entry.images)
        self.count_label.setText(f"{n} image{'s' if n != 1 else ''}")
        self.images.set_images([(it.id, it.file, str(project.image_path(it)), it.name) for it in entry.images])
        self.images.setVisible(n > 0)
        self.empty_hint.setVisible(n == 0)

    def _rename(self) -> None:
        new = self.name_edit.text().strip()
        try:
            entry = self.entry
        except KeyError:  # the class was deleted while its name was being edited
            return
        if new == entry.name:
            return
        if not self.controller.rename_class(self.class_id, new):
            reason = "a class needs a name" if not new else f"there is already a class called '{new}'"
            QMessageBox.information(self, "Rename class", f"The class keeps its name: {reason}.")
            self.name_edit.setText(self.entry.name)

    def _add_files(self) -> None:
        from PySide6.QtWidgets import QFileDialog

        files, _ = QFileDialog.getOpenFileNames(self, f"Examples of '{self.entry.name}'", "", image_filter())
        if files:
            self.controller.add_files(files, self.class_id)

    def open_camera(self):
        """Open the camera window for this class: each photo taken joins the class at once.
        Without a camera the window (and this button's tooltip) says why."""
        from metastudio.gui.camera import CaptureDialog

        if self.camera_dialog is not None:
            self.camera_dialog.raise_()
            return self.camera_dialog
        dialog = CaptureDialog(self.entry.name, self.window())
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.captured.connect(self._add_photo)
        dialog.finished.connect(self._camera_closed)
        if dialog.problem:
            self.camera_button.setToolTip(dialog.problem)
        self.camera_dialog = dialog
        dialog.open()
        return dialog

    def _add_photo(self, data: bytes) -> None:
        self.controller.add_bytes(data, ".png", self.class_id, source="camera")

    def _camera_closed(self, *_: object) -> None:
        self.camera_dialog = None

    def close_camera(self) -> None:
        """Close this class's camera window (the class is going away: no photo may get lost)."""
        if self.camera_dialog is not None:
            self.camera_dialog.close()
            self.camera_dialog = None

    def _pick_colour(self) -> None:
        colour = QColorDialog.getColor(QColor(self.entry.colour), self, f"Colour of '{self.entry.name}'")
        if colour.isValid():
            self.controller.recolour_class(self.class_id, colour.name())

    def _context_menu(self, pos: QPoint) -> None:
        ids = self.images.selected_ids()
        if not ids:
            return
        menu = QMenu(self)
        menu.addAction("Move to images to classify", lambda: self.controller.move_images(ids, None))
        menu.addAction("Remove from project", lambda: self.controller.remove_images(ids))
        menu.exec(self.images.mapToGlobal(pos))

    def mousePressEvent(self, event) -> None:
        self.activated.emit(self.class_id)
        super().mousePressEvent(event)

    # -- drops -----------------------------------------------------------------------------------------
    def dragEnterEvent(self, event) -> None:
        mime = event.mimeData()
        if mime.hasFormat(MIME_IMAGES) or local_paths_from_mime(mime) or mime.hasImage():
            event.acceptProposedAction()
            self.setProperty("dropTarget", True)
            self.setStyleSheet(f"#classCard {{ border: 2px dashed {self.entry.colour}; border-left: 5px solid {self.entry.colour}; }}")

    def dragLeaveEvent(self, event) -> None:
        self.refresh()

    def dropEvent(self, event) -> None:
        mime = event.mimeData()
        ids = image_ids_from_mime(mime)
        if ids:
            self.controller.move_images(ids, self.class_id)
        elif local_paths_from_mime(mime):
            self.controller.add_files(local_paths_from_mime(mime), self.class_id)
        elif mime.hasImage():
            paste_image(self.controller, mime, self.class_id)
        event.acceptProposedAction()
        self.activated.emit(self.class_id)
        self.refresh()


def image_filter() -> str:
    """The file dialogs' filter for images (every kind MetaStudio reads), then all files."""
    from metastudio.data.images import IMAGE_EXTENSIONS

    patterns = " ".join(f"*{e}" for e in sorted(IMAGE_EXTENSIONS))
    return f"Images ({patterns});;All files (*)"


def disclosure_button(text: str, accessible_name: str, tip: str) -> QToolButton:
    """A checkable "▸ Advanced…" button that shows or hides a part of a form (the arrow turns
    down while it is open; connect ``toggled`` to show the part)."""
    button = QToolButton()
    button.setText(text)
    button.setCheckable(True)
    button.setAutoRaise(True)
    button.setArrowType(Qt.ArrowType.RightArrow)
    button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
    button.setAccessibleName(accessible_name)
    button.setToolTip(tip)
    button.toggled.connect(lambda shown: button.setArrowType(Qt.ArrowType.DownArrow if shown else Qt.ArrowType.RightArrow))
    return button


def camera_icon(colour: QColor, size: int = 16):
    """A small drawn camera (Qt's standard icons have none)."""
    from PySide6.QtGui import QIcon

    pixmap = QPixmap(size, size)
    pixmap.fill(Qt.GlobalColor.transparent)
    painter = QPainter(pixmap)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setPen(QPen(colour, 1.4))
    painter.drawRoundedRect(1, 4, size - 2, size - 6, 2, 2)
    painter.drawRect(size // 2 - 3, 2, 6, 2)
    painter.drawEllipse(size // 2 - 3, 6, 6, 6)
    painter.end()
    return QIcon(pixmap)


def paste_image(controller: ProjectController, mime: QMimeData, class_id: str | None) -> bool:
    """Add the image or files held by ``mime`` (the clipboard, a drop) to a class or the queries."""
    paths = local_paths_from_mime(mime)
    if paths:
        controller.add_files(paths, class_id)
        return True
    if mime.hasImage():
        from PySide6.QtCore import QBuffer, QIODevice

        image = mime.imageData()
        buffer = QBuffer()
        buffer.open(QIODevice.OpenModeFlag.WriteOnly)
        if image is None or image.isNull() or not image.save(buffer, "PNG"):
            controller.problems.emit([("clipboard", "the clipboard's picture could not be read")])
            return False
        return controller.add_bytes(bytes(buffer.data()), ".png", class_id) is not None
    return False


class ClassPanel(QWidget):
    """The column of class cards, with Add class; dropping a folder of class folders makes classes."""

    current_changed = Signal(str)  # class id of the card last used

    def __init__(self, controller: ProjectController, thumbnails: ThumbnailLoader, parent: QWidget | None = None):
        super().__init__(parent)
        self.controller, self.thumbnails = controller, thumbnails
        self.cards: dict[str, ClassCard] = {}
        self.current: str | None = None
        self.setAcceptDrops(True)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        title = QLabel("<b>Classes</b> — a few examples of each")
        outer.addWidget(title)
        self.scroll = QScrollArea()
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QFrame.Shape.NoFrame)
        inner = QWidget()
        self.cards_layout = QVBoxLayout(inner)
        self.cards_layout.setContentsMargins(0, 0, 4, 0)
        self.cards_layout.setSpacing(8)
        self.cards_layout.addStretch(1)
        self.scroll.setWidget(inner)
        outer.addWidget(self.scroll, 1)
        self.add_button = QPushButton("+ Add class")
        self.add_button.setAccessibleName("Add class")
        self.add_button.setToolTip("Add a class (Ctrl+Shift+N)")
        self.add_button.clicked.connect(self.add_class)
        outer.addWidget(self.add_button)
        controller.reset.connect(self.rebuild)
        controller.classes_changed.connect(self.rebuild)
        controller.class_changed.connect(self._class_changed)
        self.rebuild()

    def add_class(self) -> None:
        class_id = self.controller.add_class()
        card = self.cards.get(class_id)
        if card is not None:
            self.scroll.ensureWidgetVisible(card)
            card.name_edit.setFocus()
            card.name_edit.selectAll()
        self.current = class_id

    def rebuild(self) -> None:
        classes = self.controller.project.classes
        ids = [c.id for c in classes]
        for class_id in list(self.cards):
            if class_id not in ids:
                card = self.cards.pop(class_id)
                card.close_camera()
                self.cards_layout.removeWidget(card)
                card.deleteLater()
        for index, entry in enumerate(classes):
            card = self.cards.get(entry.id)
            if card is None:
                card = ClassCard(self.controller, entry.id, index + 1, self.thumbnails)
                card.activated.connect(self._activated)
                self.cards[entry.id] = card
            else:
                card.set_number(index + 1)
                card.refresh()
            self.cards_layout.removeWidget(card)
            self.cards_layout.insertWidget(index, card)
        if self.current not in self.cards:
            self.current = ids[0] if ids else None

    def _class_changed(self, class_id: str) -> None:
        if class_id in self.cards:
            self.cards[class_id].refresh()

    def _activated(self, class_id: str) -> None:
        self.current = class_id
        for cid, card in self.cards.items():
            card.set_current(cid == class_id)
        self.current_changed.emit(class_id)

    def dragEnterEvent(self, event) -> None:
        paths = local_paths_from_mime(event.mimeData())
        if any(Path(p).is_dir() for p in paths):
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        for p in local_paths_from_mime(event.mimeData()):
            if Path(p).is_dir():
                self.controller.import_class_folders(p)
        event.acceptProposedAction()


def draw_picture(painter: QPainter, icon, rect: QRect, placeholder: QColor) -> None:
    """Draw ``icon`` (a QIcon or QPixmap) scaled to fit ``rect`` and centred in it, or "…"
    while it is not there yet."""
    if icon is None or isinstance(icon, QColor) or not (hasattr(icon, "pixmap") or isinstance(icon, QPixmap)):
        painter.setPen(placeholder)
        painter.drawText(rect, Qt.AlignmentFlag.AlignCenter, "…")
        return
    pixmap = icon if isinstance(icon, QPixmap) else icon.pixmap(rect.size())
    scaled = pixmap.size().scaled(rect.size(), Qt.AspectRatioMode.KeepAspectRatio)
    target = QRect(rect.left() + (rect.width() - scaled.width()) // 2,
                   rect.top() + (rect.height() - scaled.height()) // 2, scaled.width(), scaled.height())
    painter.drawPixmap(target, pixmap)


class ThumbnailDelegate(QStyledItemDelegate):
    """Just the picture, centred in a fixed cell (the same in every style), and a frame when selected."""

    def __init__(self, cell: int, parent=None):
        super().__init__(parent)
        self.cell = cell

    def sizeHint(self, option, index) -> QSize:
        return QSize(self.cell, self.cell)

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index) -> None:
        painter.save()
        rect = option.rect.adjusted(2, 2, -2, -2)
        draw_picture(painter, index.data(Qt.ItemDataRole.DecorationRole), rect,
                     option.palette.color(QPalette.ColorRole.PlaceholderText))
        if option.state & QStyle.StateFlag.State_Selected:
            painter.setPen(QPen(option.palette.color(QPalette.ColorRole.Highlight), 3))
            painter.drawRect(rect)
        painter.restore()


BAR_HEIGHT = 22  # pixels per class in the probability chart
BARS_AXIS_HEIGHT = 48  # its probability axis and margins
BAR_ROWS = 8  # the chart grows up to this many classes; beyond, their rows get closer


class ProbabilityBars(QWidget):
    """One horizontal bar per class (pyqtgraph) for the selected query image."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        import pyqtgraph as pg

        self._pg = pg
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.preview = QLabel()
        self.preview.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.preview.setMinimumHeight(110)
        self.caption = QLabel("Select an image to see how sure MetaStudio is about each class.")
        self.caption.setWordWrap(True)
        self.caption.setAccessibleName("Prediction of the selected image")
        palette = self.palette()
        self.plot = pg.PlotWidget(background=palette.color(QPalette.ColorRole.Base))
        text = palette.color(QPalette.ColorRole.Text)
        for axis in ("left", "bottom"):
            self.plot.getAxis(axis).setPen(pg.mkPen(palette.color(QPalette.ColorRole.Mid)))
            self.plot.getAxis(axis).setTextPen(pg.mkPen(text))
        self.plot.setAccessibleName("Probability of each class")
        self.plot.setMenuEnabled(False)
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.hideButtons()
        self.plot.setXRange(0, 100, padding=0)
        self.plot.getAxis("bottom").setLabel("probability (%)")
        self.plot.invertY(True)
        self.bars = None
        layout.addWidget(self.preview)
        layout.addWidget(self.caption)
        layout.addWidget(self.plot, 1)
        self.plot.hide()
        layout.addStretch(0)
        self.values: list[float] = []

    def show_image(self, pixmap: QPixmap | None, name: str) -> None:
        if pixmap is None:
            self.preview.clear()
        else:
            self.preview.setPixmap(pixmap.scaled(QSize(220, 110), Qt.AspectRatioMode.KeepAspectRatio,
                                                 Qt.TransformationMode.SmoothTransformation))
        self.preview.setToolTip(name)

    def set_probabilities(self, class_names: list[str], colours: list[str], probabilities: list[float] | None,
                          caption: str) -> None:
        pg = self._pg
        self.caption.setText(caption)
        if self.bars is not None:
            self.plot.removeItem(self.bars)
            self.bars = None
        self.values = [100.0 * p for p in probabilities] if probabilities else []
        self.plot.setVisible(bool(probabilities))
        if not probabilities:
            self.plot.getAxis("left").setTicks([[]])
            return
        ys = list(range(len(class_names)))
        self.plot.setMinimumHeight(BARS_AXIS_HEIGHT + BAR_HEIGHT * min(len(ys), BAR_ROWS))
        self.bars = pg.BarGraphItem(x0=0, y=ys, height=0.7, width=self.values,
                                    brushes=[pg.mkBrush(c) for c in colours], pens=[pg.mkPen(None)] * len(ys))
        self.plot.addItem(self.bars)
        self.plot.getAxis("left").setTicks([[(y, f"{n}  {v:.0f}%") for y, n, v in zip(ys, class_names, self.values)]])
        self.plot.setYRange(-0.6, len(ys) - 0.4, padding=0)
        self.plot.setXRange(0, 100, padding=0)
