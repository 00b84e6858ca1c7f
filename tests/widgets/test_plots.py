"""Plot helpers: the tick grid follows the axes' ticks, and ranges move only when the data leave them."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtGui import QImage

from widgets.plots import TickGrid, new_plot, set_stable_range


def _shown(qtbot, w: pg.PlotWidget) -> QImage:
    qtbot.addWidget(w)
    w.resize(500, 300)
    w.show()
    qtbot.waitExposed(w)
    vb = w.getPlotItem().getViewBox()
    qtbot.waitUntil(lambda: vb.width() > 0 and vb.height() > 0)  # laid out: axes sized, ranges applied
    return w.grab().toImage().convertToFormat(QImage.Format.Format_RGB32)


def test_tick_grid_draws_lines_at_the_axis_ticks_and_can_be_turned_off(qtbot) -> None:
    w = new_plot(title="grid")
    item = w.getPlotItem()
    assert isinstance(item.tick_grid, TickGrid)
    item.setXRange(0.0, 10.0, padding=0)
    item.setYRange(0.0, 1.0, padding=0)
    img = _shown(qtbot, w)
    vb = item.getViewBox()
    # the major x ticks at 2, 4, 6, 8: a vertical line of grid colour, background between them
    x_tick = int(vb.mapViewToScene(pg.Point(4.0, 0.5)).x())
    x_between = int(vb.mapViewToScene(pg.Point(4.9, 0.5)).x())
    y_mid = int(vb.mapViewToScene(pg.Point(4.0, 0.55)).y())
    column = {img.pixel(x, y_mid) for x in (x_tick - 1, x_tick, x_tick + 1)}
    background = img.pixel(x_between, y_mid)
    assert any(c != background for c in column)

    item.tick_grid.setVisible(False)
    img = _shown(qtbot, w)
    assert {img.pixel(x, y_mid) for x in (x_tick - 1, x_tick, x_tick + 1)} == {img.pixel(x_between, y_mid)}


def test_stable_range_moves_only_when_the_data_leave_or_shrink_well_inside(qtbot) -> None:
    w = new_plot()
    qtbot.addWidget(w)
    assert set_stable_range(w, "y", 0.20, 0.30) is True
    first = w.getPlotItem().getViewBox().viewRange()[1]
    assert first[0] <= 0.195 and first[1] >= 0.305  # padded and rounded outwards
    assert set_stable_range(w, "y", 0.21, 0.29) is False  # inside: the axis keeps its ticks
    assert w.getPlotItem().getViewBox().viewRange()[1] == first
    assert set_stable_range(w, "y", 0.21, 0.40) is True  # left it: moves
    assert set_stable_range(w, "y", 0.30, 0.31) is True  # fills under half: shrinks
    lo, hi = w.getPlotItem().getViewBox().viewRange()[1]
    assert lo <= 0.30 and hi >= 0.31 and hi - lo < 0.05
    assert set_stable_range(w, "x", float("nan"), 1.0) is False  # nothing to show: untouched
    x = np.linspace(0, 1, 5)
    assert set_stable_range(w, "x", float(x.min()), float(x.max())) is True


def test_stable_range_respects_a_floor(qtbot) -> None:
    w = new_plot()
    qtbot.addWidget(w)
    set_stable_range(w, "x", 0.0, 110.0, floor=-3.0)
    lo, hi = w.getPlotItem().getViewBox().viewRange()[0]
    assert -3.0 <= lo <= 0.0 and hi >= 110.0


def test_market_time_axis_reads_clock_times_in_new_york_even_for_seconds_of_history(qtbot) -> None:
    from datetime import UTC, datetime

    from widgets.plots import MIN_TIME_RANGE_S, MarketTimeAxis, time_plot

    t0 = datetime(2026, 3, 2, 19, 39, 58, tzinfo=UTC).timestamp()  # 14:39:58 New York
    plot = time_plot(title="after a restart")
    qtbot.addWidget(plot)
    plot.resize(600, 300)
    plot.plot([t0, t0 + 1.5, t0 + 3.0], [1.0, 2.0, 3.0])
    plot.show()
    qtbot.waitUntil(lambda: plot.getPlotItem().getViewBox().viewRange()[0][1]
                    - plot.getPlotItem().getViewBox().viewRange()[0][0] >= MIN_TIME_RANGE_S - 1e-6, timeout=3000)
    axis = plot.getPlotItem().getAxis("bottom")
    assert isinstance(axis, MarketTimeAxis)
    lo, hi = plot.getPlotItem().getViewBox().viewRange()[0]
    levels = axis.tickValues(lo, hi, 540)
    spacing, values = levels[0]
    labels = axis.tickStrings(values, 1.0, spacing)
    assert spacing >= 1 and labels and all("." not in s for s in labels)  # no "58.000 59.000"
    assert all(len(s) == 5 and s[2] == ":" for s in labels)  # HH:MM at a minute step and more
    assert axis.tickStrings([t0], 1.0, 1.0) == ["14:39:58"]  # New York time, not the machine's zone
    assert axis.tickStrings([t0], 1.0, 86400.0) == ["Mar 02"]
