"""The live plot: one item per series, redraws throttled to ~30 Hz, a right axis, and its
accessible description following the data."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
import pytest

from metastudio.gui.plots import LivePlot


def test_live_plot_keeps_one_item_per_series_and_redraws_throttled(qtbot):
    plot = LivePlot("curves", right_range=(0, 100), empty_text="nothing yet")
    qtbot.addWidget(plot)
    plot.show()
    plot.add_series("loss", "loss", "#d62728")
    plot.add_series("acc", "accuracy", "#1f77b4", axis="right")
    with pytest.raises(ValueError):
        plot.add_series("loss", "again", "r")
    with pytest.raises(ValueError):
        plot.add_series("x", "x", "r", axis="top")
    items = [i for i in plot.plot_item.items if isinstance(i, pg.PlotDataItem)]
    right_items = [i for i in plot._right_view.addedItems if isinstance(i, pg.PlotDataItem)]
    assert len(items) == 1 and len(right_items) == 1
    assert plot.accessibleName() == "curves" and plot.empty_text() == "nothing yet"

    before = plot.redraw_count
    for i in range(5000):
        plot.append("loss", i, 1.0 / (i + 1))
        plot.append("acc", i, i % 100)
    assert plot.redraw_count == before, "appending must not redraw"
    qtbot.waitUntil(lambda: plot.redraw_count == before + 1, timeout=2000)
    qtbot.wait(100)
    assert plot.redraw_count == before + 1, "no redraw without new data"
    assert plot.series_length("loss") == 5000
    xs, ys = plot.series_data("loss")
    assert xs.dtype == np.float64 and xs[-1] == 4999.0 and ys[0] == 1.0
    item = items[0]
    for it in items + right_items:
        assert it.opts["autoDownsample"] and it.opts["downsampleMethod"] == "peak" and it.opts["clipToView"]
    assert item.opts["autoDownsample"] and item.opts["downsampleMethod"] == "peak" and item.opts["clipToView"]
    assert len(item.xData) == 5000 and item.xData.dtype == np.float64
    assert "Latest values" in plot.accessibleDescription()

    plot.set_series("acc", [0, 1, 2], [10, 20, 30])
    assert plot.series_length("acc") == 3 and plot.last_value("acc") == 30.0
    plot.clear("loss")
    assert plot.series_length("loss") == 0 and plot.series_length("acc") == 3
    plot.clear()
    plot.flush()
    assert plot.series_length("acc") == 0 and len(item.xData or []) == 0
    assert plot.accessibleDescription() == "nothing yet"
    with pytest.raises(KeyError, match="no series 'nope'"):
        plot.append("nope", 0, 0)
