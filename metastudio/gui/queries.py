"""The images to classify: a grid of thumbnails, each with its predicted class.

Each tile shows the predicted class (its colour, name and confidence), or "unsure" when the
image is not like any of the classes, or why the file can't be used. After a re-adaptation the
tiles whose prediction changed are marked for a few seconds, and the grid can show just them.
"""

from __future__ import annotations

from PySide6.QtCore import QEvent, QObject, QPoint, QRect, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QColor, QFont, QFontMetrics, QKeySequence, QPainter, QPalette, QPen
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QMenu,
    QPushButton,
    QSizePolicy,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QVBoxLayout,
    QWidget,
)

from metastudio.gui.controller import ProjectController
from metastudio.gui.engine import ThumbnailLoader
from metastudio.gui.widgets import (
    ID_ROLE,
    MIME_IMAGES,
    PROBLEM_ROLE,
    ImageList,
    draw_picture,
    image_ids_from_mime,
    local_paths_from_mime,
    paste_image,
    readable_text_colour,
)

#: (class name, "#rrggbb", confidence 0..1, why it is unsure or "") of a tile, or None.
PREDICTION_ROLE = Qt.ItemDataRole.UserRole + 4
#: True while a tile is marked as changed by the last re-adaptation.
CHANGED_ROLE = Qt.ItemDataRole.UserRole + 6
#: How long a changed prediction stays marked.
CHANGED_MARK_MS = 6000
#: The colour of the mark of a changed prediction, and of an unsure tile's band.
CHANGED_COLOUR = "#ff8f00"
UNSURE_COLOUR = "#9e9e9e"
#: Width of a tile: at least this, wider to share out a row (up to TILE_MAX_WIDTH).
TILE_MIN_WIDTH = 164
TILE_MAX_WIDTH = 340
ICON_SIZE = 112
#: A band text too long for its tile is drawn down to this fraction of the font size.
BAND_MIN_SCALE = 0.75


def band_text(prediction: tuple) -> str:
    """What a tile's coloured band says: the class and confidence, or that it is unsure."""
    name, _, confidence, unsure = prediction
    if unsure.startswith("too small"):
        return "too small"
    if unsure:
        return f"unsure · {name}?"
    return f"{name}  {100 * confidence:.0f}%"


class PredictionDelegate(QStyledItemDelegate):
    """Draws a query thumbnail with its predicted class (colour, name, confidence) below it."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.band = 22
        self.width = TILE_MIN_WIDTH

    def sizeHint(self, option, index) -> QSize:
        icon = option.decorationSize if option.decorationSize.isValid() else QSize(ICON_SIZE, ICON_SIZE)
        return QSize(max(icon.width() + 12, self.width), icon.height() + self.band + 26)

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index) -> None:
        painter.save()
        rect = option.rect.adjusted(3, 3, -3, -3)
        palette = option.palette
        selected = bool(option.state & QStyle.StateFlag.State_Selected)
        prediction = index.data(PREDICTION_ROLE)
        changed = bool(index.data(CHANGED_ROLE))
        unsure = bool(prediction and prediction[3])
        border = QColor(UNSURE_COLOUR if unsure else prediction[1]) if prediction else palette.color(QPalette.ColorRole.Mid)
        if selected:
            painter.fillRect(rect, palette.color(QPalette.ColorRole.Highlight).lighter(160)
                             if palette.color(QPalette.ColorRole.Window).lightness() > 128
                             else palette.color(QPalette.ColorRole.Highlight).darker(150))
        pen = QPen(border, 3 if selected else 2)
        if unsure:
            pen.setStyle(Qt.PenStyle.DashLine)
        painter.setPen(pen)
        painter.drawRoundedRect(rect, 6, 6)
        pic_rect = self._paint_picture(painter, option, index, rect)
        band = QRect(rect.left() + 4, pic_rect.bottom() + 4, rect.width() - 8, self.band)
        font = QFont(option.font)
        if prediction:
            self._paint_band(painter, band, font, prediction)
        elif index.data(PROBLEM_ROLE):
            painter.setPen(QColor("#c62828"))
            painter.setFont(font)
            painter.drawText(band, Qt.AlignmentFlag.AlignCenter, "can't be used")
        if changed:
            self._paint_changed(painter, rect, font)
        name_rect = QRect(rect.left() + 2, band.bottom() + 2, rect.width() - 4, rect.bottom() - band.bottom() - 2)
        font.setBold(False)
        font.setPointSizeF(font.pointSizeF() * 0.85)
        painter.setFont(font)
        painter.setPen(palette.color(QPalette.ColorRole.Text))
        painter.drawText(name_rect, Qt.AlignmentFlag.AlignCenter,
                         painter.fontMetrics().elidedText(index.data(Qt.ItemDataRole.DisplayRole) or "",
                                                          Qt.TextElideMode.ElideMiddle, name_rect.width()))
        painter.restore()

    @staticmethod
    def _paint_picture(painter: QPainter, option: QStyleOptionViewItem, index, rect: QRect) -> QRect:
        size = option.decorationSize
        pic_rect = QRect(rect.left() + (rect.width() - size.width()) // 2, rect.top() + 4, size.width(), size.height())
        draw_picture(painter, index.data(Qt.ItemDataRole.DecorationRole), pic_rect,
                     option.palette.color(QPalette.ColorRole.PlaceholderText))
        return pic_rect

    @staticmethod
    def _paint_band(painter: QPainter, band: QRect, font: QFont, prediction: tuple) -> None:
        font = QFont(font)
        colour = QColor(UNSURE_COLOUR if prediction[3] else prediction[1])
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(colour)
        painter.drawRoundedRect(band, 4, 4)
        painter.setPen(readable_text_colour(colour))
        font.setBold(True)
        painter.setFont(font)
        text = band_text(prediction)
        room = band.width() - 6
        wide = painter.fontMetrics().horizontalAdvance(text)
        if wide > room:  # smaller letters first (down to BAND_MIN_SCALE), then cut
            font.setPointSizeF(font.pointSizeF() * max(BAND_MIN_SCALE, room / wide))
            painter.setFont(font)
        text = painter.fontMetrics().elidedText(text, Qt.TextElideMode.ElideRight, room)
        painter.drawText(band, Qt.AlignmentFlag.AlignCenter, text)

    @staticmethod
    def _paint_changed(painter: QPainter, rect: QRect, font: QFont) -> None:
        painter.setPen(QPen(QColor(CHANGED_COLOUR), 4))
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.drawRoundedRect(rect.adjusted(-1, -1, 1, 1), 7, 7)
        badge_font = QFont(font)
        badge_font.setBold(True)
        badge_font.setPointSizeF(font.pointSizeF() * 0.8)
        painter.setFont(badge_font)
        metrics = QFontMetrics(badge_font)
        badge = QRect(rect.right() - metrics.horizontalAdvance("changed") - 12, rect.top() + 2,
                      metrics.horizontalAdvance("changed") + 10, metrics.height() + 2)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(QColor(CHANGED_COLOUR))
        painter.drawRoundedRect(badge, 3, 3)
        painter.setPen(QColor("#000000"))
        painter.drawText(badge, Qt.AlignmentFlag.AlignCenter, "changed")


class QueryPanel(QWidget):
    """Images to classify: a grid of thumbnails with predictions; a drop target for new ones."""

    selection_changed = Signal(list)  # selected image ids

    def __init__(self, controller: ProjectController, thumbnails: ThumbnailLoader, parent: QWidget | None = None):
        super().__init__(parent)
        self.controller = controller
        self.setAcceptDrops(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        header = QHBoxLayout()
        self.title = QLabel("<b>Images to classify</b>")
        header.addWidget(self.title)
        header.addStretch(1)
        self.changed_button = QPushButton()
        self.changed_button.setCheckable(True)
        self.changed_button.setAccessibleName("Show only the changed predictions")
        self.changed_button.setToolTip("Show only the images whose prediction changed when MetaStudio adapted again")
        self.changed_button.toggled.connect(lambda _: self._apply_filter())
        self.changed_button.hide()
        header.addWidget(self.changed_button)
        self.camera_button = QPushButton("Live camera…")
        self.camera_button.setAccessibleName("Classify what the camera sees")
        self.camera_button.setToolTip("Point the camera at something and see which class it looks like")
        header.addWidget(self.camera_button)
        self.add_button = QPushButton("Add images…")
        self.add_button.setAccessibleName("Add images to classify")
        header.addWidget(self.add_button)
        layout.addLayout(header)
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.status.setAccessibleName("Prediction status")
        layout.addWidget(self.status)
        self.list = ImageList(thumbnails, ICON_SIZE)
        self.list.setAccessibleName("Images to classify with their predicted class")
        self.delegate = PredictionDelegate(self.list)
        self.list.setItemDelegate(self.delegate)
        self.list.setSpacing(4)
        self.list.setWordWrap(False)
        self.list.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.list.customContextMenuRequested.connect(self._context_menu)
        self.list.itemSelectionChanged.connect(lambda: self.selection_changed.emit(self.list.selected_ids()))
        self.list.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.list.viewport().installEventFilter(self)
        layout.addWidget(self.list, 1)
        self.empty = QLabel()
        self.empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty.setWordWrap(True)
        self.empty.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        self.empty.setObjectName("dropZone")
        self.empty.setStyleSheet("#dropZone { border: 2px dashed palette(mid); border-radius: 10px; padding: 16px; }")
        layout.addWidget(self.empty, 1)
        self.predictions: dict[str, tuple[str, str, float, str]] = {}
        self.problems: dict[str, str] = {}
        self.changed: set[str] = set()
        self._marked: set[str] = set()
        self._mark_timer = QTimer(self)
        self._mark_timer.setSingleShot(True)
        self._mark_timer.setInterval(CHANGED_MARK_MS)
        self._mark_timer.timeout.connect(self.clear_marks)
        delete = QAction("Remove", self.list)
        delete.setShortcut(QKeySequence.StandardKey.Delete)
        delete.setShortcutContext(Qt.ShortcutContext.WidgetShortcut)
        delete.triggered.connect(lambda: controller.remove_images(self.list.selected_ids()))
        self.list.addAction(delete)
        controller.reset.connect(self.refresh)
        controller.queries_changed.connect(self.refresh)
        self.refresh()

    def refresh(self) -> None:
        project = self.controller.project
        self.list.set_images([(it.id, it.file, str(project.image_path(it)), it.name) for it in project.queries])
        self._apply()
        n = len(project.queries)
        self.title.setText(f"<b>Images to classify</b> ({n})" if n else "<b>Images to classify</b>")
        self.list.setVisible(n > 0)
        self.empty.setVisible(n == 0)
        self.empty.setText(
            "<p style='font-size:15px'><b>Teach MetaStudio with a few examples</b></p>"
            "<p>1. Name a class for each kind of thing you want to recognise.<br>"
            "2. Drop a few example images (or a folder) onto each class card.<br>"
            "3. Drop new images <b>here</b> — each gets its predicted class and confidence.</p>"
            "<p>A wrong prediction? Drag the image onto the right class, or select it and press its class number.</p>"
        )

    def set_predictions(self, predictions: dict[str, tuple[str, str, float, str]], problems: dict[str, str],
                        changed: set[str] | None = None) -> None:
        """Show ``predictions`` (image id -> (class, colour, confidence, why unsure or "")) and
        ``problems``; mark the ``changed`` ones for CHANGED_MARK_MS."""
        self.predictions, self.problems = predictions, problems
        self.changed = set(changed or ()) & set(predictions)
        self._marked = set(self.changed)
        if self._marked:
            self._mark_timer.start()
        n = len(self.changed)
        self.changed_button.setText(f"Only the {n} changed" if n != 1 else "Only the 1 changed")
        self.changed_button.setVisible(n > 0)
        if not n:
            self.changed_button.setChecked(False)
        self._apply()

    def clear_marks(self) -> None:
        """End the marks of changed predictions (the Only-changed filter stays available)."""
        self._marked = set()
        self._apply()

    def _apply(self) -> None:
        for i in range(self.list.count()):
            item = self.list.item(i)
            image_id = item.data(ID_ROLE)
            prediction = self.predictions.get(image_id)
            item.setData(PREDICTION_ROLE, prediction)
            item.setData(CHANGED_ROLE, image_id in self._marked)
            if image_id in self.problems:
                item.setData(PROBLEM_ROLE, self.problems[image_id])
                item.setToolTip(f"{item.text()}\nThis file can't be used: {self.problems[image_id]}")
            elif prediction and prediction[3]:
                item.setToolTip(f"{item.text()}\nUnsure: {prediction[3]} (closest: {prediction[0]}, "
                                f"{100 * prediction[2]:.0f}%)")
            else:
                item.setToolTip(f"{item.text()}\n{prediction[0]} ({100 * prediction[2]:.1f}%)" if prediction else item.text())
        self._layout_tiles()
        self._apply_filter()
        self.list.viewport().update()

    def _apply_filter(self) -> None:
        only_changed = self.changed_button.isChecked() and self.changed_button.isVisible()
        for i in range(self.list.count()):
            item = self.list.item(i)
            item.setHidden(only_changed and item.data(ID_ROLE) not in self.changed)

    def visible_ids(self) -> list[str]:
        """The ids of the tiles the grid shows now (all, or only the changed ones)."""
        return [self.list.item(i).data(ID_ROLE) for i in range(self.list.count()) if not self.list.item(i).isHidden()]

    # -- tile width ------------------------------------------------------------------------------------
    def _layout_tiles(self) -> None:
        """As many tiles a row as TILE_MIN_WIDTH allows, widened to share out the row; a band
        text still too long is drawn smaller (see PredictionDelegate) before it is cut, so
        "golden retriever 97%" is not cut to "golden re…ever" while there is room."""
        spacing = 2 * self.list.spacing()
        available = self.list.viewport().width() - 2
        columns = max(1, available // (TILE_MIN_WIDTH + spacing))
        width = max(TILE_MIN_WIDTH, min(TILE_MAX_WIDTH, available // columns - spacing))
        if width != self.delegate.width:
            self.delegate.width = width
            self.list.doItemsLayout()

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt override
        if watched is self.list.viewport() and event.type() == QEvent.Type.Resize:
            QTimer.singleShot(0, self._layout_tiles)
        return super().eventFilter(watched, event)

    # -- menus and drops -------------------------------------------------------------------------------
    def _context_menu(self, pos: QPoint) -> None:
        ids = self.list.selected_ids()
        if not ids:
            return
        menu = QMenu(self)
        move = menu.addMenu("Move to class")
        for number, entry in enumerate(self.controller.project.classes, 1):
            label = f"&{number} {entry.name}" if number <= 9 else entry.name
            move.addAction(label, lambda cid=entry.id: self.controller.move_images(ids, cid))
        menu.addAction("Remove", lambda: self.controller.remove_images(ids))
        menu.exec(self.list.mapToGlobal(pos))

    def dragEnterEvent(self, event) -> None:
        mime = event.mimeData()
        if mime.hasFormat(MIME_IMAGES) or local_paths_from_mime(mime) or mime.hasImage():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        mime = event.mimeData()
        ids = image_ids_from_mime(mime)
        if ids:
            self.controller.move_images(ids, None)
        else:
            paste_image(self.controller, mime, None)
        event.acceptProposedAction()
