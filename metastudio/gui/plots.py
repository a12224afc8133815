"""Live line plots that stay cheap however fast points arrive.

:class:`LivePlot` keeps each series in growing float64 numpy buffers (amortised doubling) and
owns exactly one ``PlotDataItem`` per series. Appending only marks the series dirty; a
single-shot timer redraws dirty series at most about 30 times a second with ``setData``.
Items downsample automatically (peak mode) and clip to the visible range, and x is float64
(float32 x makes pyqtgraph's view clipping very slow). There is no grid: it costs most of a
repaint (see docs/benchmarks.md, "GUI stalls while meta-training").

Series go on the left axis or on a right axis (a second ViewBox whose x is linked to the main
one), e.g. a loss on the left and an accuracy in percent (0-100) on the right.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QGridLayout, QLabel, QWidget

#: Minimum time between two redraws (about 30 Hz).
REDRAW_INTERVAL_MS = 33


class _Series:
    __slots__ = ("key", "label", "item", "axis", "xs", "ys", "n", "dirty")

    def __init__(self, key: str, label: str, item: pg.PlotDataItem, axis: str, capacity: int = 256):
        self.key, self.label, self.item, self.axis = key, label, item, axis
        self.xs = np.empty(capacity, dtype=np.float64)
        self.ys = np.empty(capacity, dtype=np.float64)
        self.n = 0
        self.dirty = False

    def reserve(self, extra: int) -> None:
        need = self.n + extra
        if need <= len(self.xs):
            return
        capacity = max(need, 2 * len(self.xs))
        for name in ("xs", "ys"):
            old = getattr(self, name)
            new = np.empty(capacity, dtype=np.float64)
            new[: self.n] = old[: self.n]
            setattr(self, name, new)


class LivePlot(QWidget):
    """A pyqtgraph plot of named series, redrawn at most ~30 Hz and only when something changed.

    ``add_series(key, label, colour, axis="left"|"right")`` declares a series; ``append``,
    ``set_series`` and ``clear`` change its data; ``series_length`` and ``series_data`` read it.
    """

    def __init__(self, title: str = "", *, x_label: str = "", left_label: str = "", right_label: str = "",
                 right_range: tuple[float, float] | None = None, empty_text: str = "No data yet",
                 legend: bool = True, parent: QWidget | None = None):
        super().__init__(parent)
        self._series: dict[str, _Series] = {}
        self._redraws = 0

        self.plot_widget = pg.PlotWidget(self)
        self.plot_widget.setBackground(None)
        self.plot_item = self.plot_widget.getPlotItem()
        # No grid: pyqtgraph draws it as part of each axis' picture, which made every repaint of
        # an 850x650 plot take about 20 ms instead of 1-4 ms (software rendering, 2-core CPU).
        # PlotItem.addItem applies these to every item it gets (and would undo per-item settings).
        self.plot_item.setDownsampling(auto=True, mode="peak")
        self.plot_item.setClipToView(True)
        if title:
            self.plot_item.setTitle(title)
        if x_label:
            self.plot_item.setLabel("bottom", x_label)
        if left_label:
            self.plot_item.setLabel("left", left_label)
        # Without a legend (one series, named by the axis label) a narrow plot keeps its curve visible.
        self.legend = self.plot_item.addLegend(offset=(-10, 10)) if legend else None
        self._right_view: pg.ViewBox | None = None
        self._right_label = right_label
        self._right_range = right_range

        self._empty = QLabel(empty_text, self)
        self._empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self._empty.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        self._empty.setStyleSheet("color: palette(mid); background: transparent;")
        self._empty.setAccessibleName("Plot status")

        layout = QGridLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.plot_widget, 0, 0)
        layout.addWidget(self._empty, 0, 0)

        self.setAccessibleName(title or "Live plot")
        self.plot_widget.setAccessibleName(title or "Live plot")
        self.setAccessibleDescription(empty_text)

        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(REDRAW_INTERVAL_MS)
        self._timer.timeout.connect(self._redraw)

    # -- configuration ---------------------------------------------------------------------------
    def set_title(self, title: str) -> None:
        self.plot_item.setTitle(title)
        self.setAccessibleName(title or "Live plot")
        self.plot_widget.setAccessibleName(title or "Live plot")

    def set_empty_text(self, text: str) -> None:
        self._empty.setText(text)
        if not self._has_points():
            self.setAccessibleDescription(text)

    def empty_text(self) -> str:
        return self._empty.text()

    def _right(self) -> pg.ViewBox:
        if self._right_view is None:
            view = pg.ViewBox()
            self.plot_item.showAxis("right")
            self.plot_item.scene().addItem(view)
            axis = self.plot_item.getAxis("right")
            axis.linkToView(view)
            if self._right_label:
                axis.setLabel(self._right_label)
            view.setXLink(self.plot_item.vb)
            if self._right_range is not None:
                view.setYRange(*self._right_range, padding=0.02)
                view.enableAutoRange(axis=pg.ViewBox.YAxis, enable=False)
            self.plot_item.vb.sigResized.connect(self._sync_right)
            self._right_view = view
            self._sync_right()
        return self._right_view

    def _sync_right(self) -> None:
        if self._right_view is not None:
            self._right_view.setGeometry(self.plot_item.vb.sceneBoundingRect())
            self._right_view.linkedViewChanged(self.plot_item.vb, self._right_view.XAxis)

    def add_series(self, key: str, label: str, colour, axis: str = "left", *, width: float = 2.0,
                   symbol: str | None = None, style: Qt.PenStyle = Qt.PenStyle.SolidLine) -> None:
        """Declare a series. ``colour`` is anything ``pg.mkColor`` takes ("#1f77b4", (r, g, b), ...)."""
        if key in self._series:
            raise ValueError(f"series '{key}' already exists")
        if axis not in ("left", "right"):
            raise ValueError(f"axis must be 'left' or 'right', got {axis!r}")
        pen = pg.mkPen(colour, width=width, style=style)
        kwargs = {"pen": pen, "name": label}
        if symbol:
            kwargs.update(symbol=symbol, symbolSize=7, symbolBrush=pg.mkBrush(colour), symbolPen=pen)
        item = pg.PlotDataItem(**kwargs)
        if axis == "left":
            self.plot_item.addItem(item)  # the legend picks it up by its name
        else:
            self._right().addItem(item)
            if self.legend is not None:
                self.legend.addItem(item, label)
        item.setDownsampling(auto=True, method="peak")
        item.setClipToView(True)
        self._series[key] = _Series(key, label, item, axis)

    def show_series(self, key: str, shown: bool) -> None:
        """Show or hide a series, with its line in the legend (a hidden one keeps its points)."""
        s = self._get(key)
        s.item.setVisible(shown)
        if self.legend is None:
            return
        listed = any(sample.item is s.item for sample, _ in self.legend.items)
        if shown and not listed:
            self.legend.addItem(s.item, s.label)
        elif not shown and listed:
            self.legend.removeItem(s.item)

    def series_shown(self, key: str) -> bool:
        """Whether the series is shown (see :meth:`show_series`)."""
        return self._get(key).item.isVisible()

    # -- data ------------------------------------------------------------------------------------
    def _get(self, key: str) -> _Series:
        try:
            return self._series[key]
        except KeyError:
            raise KeyError(f"no series '{key}' (have: {', '.join(self._series) or 'none'})") from None

    def append(self, key: str, x: float, y: float) -> None:
        """Add one point (cheap: the redraw happens later, at most ~30 Hz)."""
        s = self._get(key)
        s.reserve(1)
        s.xs[s.n] = x
        s.ys[s.n] = y
        s.n += 1
        self._mark(s)

    def extend(self, key: str, xs: Sequence[float], ys: Sequence[float]) -> None:
        """Add several points at once."""
        xs = np.asarray(xs, dtype=np.float64).ravel()
        ys = np.asarray(ys, dtype=np.float64).ravel()
        if xs.shape != ys.shape:
            raise ValueError(f"xs and ys differ in length ({len(xs)} and {len(ys)})")
        s = self._get(key)
        s.reserve(len(xs))
        s.xs[s.n : s.n + len(xs)] = xs
        s.ys[s.n : s.n + len(ys)] = ys
        s.n += len(xs)
        self._mark(s)

    def set_series(self, key: str, xs: Sequence[float], ys: Sequence[float]) -> None:
        """Replace a series' points."""
        s = self._get(key)
        s.n = 0
        self.extend(key, xs, ys)
        self._mark(s)

    def clear(self, key: str | None = None) -> None:
        """Remove the points of one series, or of all of them."""
        for s in ([self._get(key)] if key is not None else self._series.values()):
            s.n = 0
            self._mark(s)

    def series_length(self, key: str) -> int:
        return self._get(key).n

    def series_data(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """Copies of a series' x and y values."""
        s = self._get(key)
        return s.xs[: s.n].copy(), s.ys[: s.n].copy()

    def last_value(self, key: str) -> float | None:
        s = self._get(key)
        return float(s.ys[s.n - 1]) if s.n else None

    # -- drawing ---------------------------------------------------------------------------------
    @property
    def redraw_count(self) -> int:
        """How many redraws happened (for tests and benchmarks)."""
        return self._redraws

    def _mark(self, s: _Series) -> None:
        s.dirty = True
        if not self._timer.isActive():
            self._timer.start()

    def _has_points(self) -> bool:
        return any(s.n for s in self._series.values())

    def flush(self) -> None:
        """Redraw dirty series now (tests; before a screenshot)."""
        self._timer.stop()
        self._redraw()

    def _redraw(self) -> None:
        changed = False
        for s in self._series.values():
            if not s.dirty:
                continue
            s.dirty = False
            changed = True
            if s.n:
                # Views of the buffers: appending writes past n, growing reallocates, so the
                # item's arrays never change under it.
                s.item.setData(s.xs[: s.n], s.ys[: s.n])
            else:
                s.item.setData([], [])
        if not changed:
            return
        self._redraws += 1
        has_points = self._has_points()
        self._empty.setVisible(not has_points)
        if has_points:
            parts = [f"{s.label}: {s.ys[s.n - 1]:.4g}" for s in self._series.values() if s.n]
            self.setAccessibleDescription("Latest values: " + "; ".join(parts))
        else:
            self.setAccessibleDescription(self._empty.text())
        if self._right_view is not None and self._right_range is None:
            self._right_view.enableAutoRange(axis=pg.ViewBox.YAxis)


__all__ = ["LivePlot", "REDRAW_INTERVAL_MS"]
