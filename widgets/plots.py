"""pyqtgraph helpers shared by the chart panels: palette-aware plots, colours, GL detection.

Plots follow the application palette (dark or light theme) and are redrawn from the app's ~10 Hz
batches, never per tick. ``useOpenGL`` stays off; 3-D views need a real OpenGL context
(:func:`gl_available`), which the offscreen platform lacks (docs/architecture.md §10).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pyqtgraph as pg
from PySide6 import QtCore, QtGui, QtWidgets

pg.setConfigOptions(antialias=True, useOpenGL=False)
if QtWidgets.QApplication.instance() is not None:  # the theme was applied before pyqtgraph loaded
    _pal = QtWidgets.QApplication.palette()
    pg.setConfigOptions(background=_pal.color(QtGui.QPalette.ColorRole.Base),
                        foreground=_pal.color(QtGui.QPalette.ColorRole.Text))

#: a qualitative palette readable on dark and light backgrounds
SERIES = ["#4e9ae6", "#f2a03d", "#5cb85c", "#d9534f", "#a07be0", "#4fc1c9", "#e377c2", "#bcbd22"]
PROFIT = "#26a65b"
LOSS = "#d64541"
MUTED = "#8a8a8a"

_GL: bool | None = None


def gl_available() -> bool:
    """True when an OpenGL context can be created (never on the offscreen platform)."""
    global _GL
    if _GL is None:
        app = QtWidgets.QApplication.instance()
        if app is None or QtGui.QGuiApplication.platformName() in ("offscreen", "minimal"):
            _GL = False
        else:
            try:
                ctx = QtGui.QOpenGLContext()
                _GL = bool(ctx.create())
            except Exception:
                _GL = False
    return _GL


def _colors() -> tuple[QtGui.QColor, QtGui.QColor]:
    pal = QtWidgets.QApplication.palette()
    return pal.color(QtGui.QPalette.ColorRole.Base), pal.color(QtGui.QPalette.ColorRole.Text)


def style_plot(plot: pg.PlotWidget | pg.PlotItem, *, title: str = "", x: str = "", y: str = "",
               grid: bool = True) -> pg.PlotItem:
    """Apply palette colours, labels and a light grid."""
    bg, fg = _colors()
    item = plot.getPlotItem() if isinstance(plot, pg.PlotWidget) else plot
    if isinstance(plot, pg.PlotWidget):
        plot.setBackground(bg)
    pen = pg.mkPen(fg)
    for name in ("left", "bottom"):
        ax = item.getAxis(name)
        ax.setPen(pen)
        ax.setTextPen(pen)
    if title:
        item.setTitle(title, color=fg.name(), size="10pt")
    if x:
        item.setLabel("bottom", x, color=fg.name())
    if y:
        item.setLabel("left", y, color=fg.name())
    grid_item = getattr(item, "tick_grid", None)
    if grid and grid_item is None:
        item.tick_grid = TickGrid(item)
    elif grid_item is not None:
        grid_item.set_color(fg)
        grid_item.setVisible(grid)
    return item


class TickGrid(pg.GraphicsObject):
    """Grid lines at the left and bottom axes' major and minor ticks.

    pyqtgraph's own grid (``PlotItem.showGrid``) draws through the axis items' pictures and costs
    ~27 ms per repaint of one plot on the raster engine; at 10 Hz with a few plots on screen that
    alone breaks the 20 ms loop-lag budget. Drawn here as plain cosmetic lines in view coordinates it
    costs well under a millisecond.
    """

    def __init__(self, plot: pg.PlotItem, alpha: float = 0.15) -> None:
        super().__init__()
        self._plot = plot
        self._alpha = alpha
        self._pens: tuple[QtGui.QPen, QtGui.QPen] | None = None
        self._ticks: dict[str, tuple[tuple[float, float, float], list]] = {}  # axis → (range key, levels)
        self.setZValue(-1e6)  # under every curve
        self.set_color(_colors()[1])
        vb = plot.getViewBox()
        vb.addItem(self, ignoreBounds=True)
        vb.sigRangeChanged.connect(self._moved)
        vb.sigResized.connect(self._moved)

    def set_color(self, color: QtGui.QColor) -> None:
        pens = []
        for fade in (1.0, 0.5):  # major ticks, then minor ticks fainter
            c = QtGui.QColor(color)
            c.setAlphaF(self._alpha * fade)
            pen = QtGui.QPen(c, 0)
            pen.setCosmetic(True)
            pens.append(pen)
        self._pens = (pens[0], pens[1])
        self.update()

    def _moved(self, *_args: object) -> None:
        self.prepareGeometryChange()
        self.update()

    def boundingRect(self) -> QtCore.QRectF:
        return self._plot.getViewBox().viewRect()

    def paint(self, painter: QtGui.QPainter, *_args: object) -> None:
        vb = self._plot.getViewBox()
        rect = vb.viewRect()
        if self._pens is None or rect.width() <= 0 or rect.height() <= 0:
            return
        painter.setRenderHint(QtGui.QPainter.RenderHint.Antialiasing, False)
        for name, lo, hi, pixels in (("bottom", rect.left(), rect.right(), vb.width()),
                                     ("left", rect.top(), rect.bottom(), vb.height())):
            axis = self._plot.getAxis(name)
            if axis is None or pixels <= 0:
                continue
            key = (lo, hi, pixels)
            cached = self._ticks.get(name)
            if cached is not None and cached[0] == key:
                levels = cached[1]
            else:
                try:
                    levels = axis.tickValues(lo, hi, pixels)
                except Exception:  # a custom axis that cannot tick this range draws no grid
                    continue
                self._ticks[name] = (key, levels)
            for pen, (_spacing, values) in zip(self._pens, levels[:2], strict=False):
                if not len(values):
                    continue
                painter.setPen(pen)
                if name == "bottom":  # one drawLines call per level
                    painter.drawLines([QtCore.QLineF(v, rect.top(), v, rect.bottom()) for v in values])
                else:
                    painter.drawLines([QtCore.QLineF(rect.left(), v, rect.right(), v) for v in values])


def new_plot(*, title: str = "", x: str = "", y: str = "", parent: QtWidgets.QWidget | None = None,
             axis_items: dict | None = None) -> pg.PlotWidget:
    w = pg.PlotWidget(parent=parent, axisItems=axis_items)
    for name in ("left", "bottom"):
        w.getPlotItem().getAxis(name).enableAutoSIPrefix(False)  # no "(x0.001)" in axis labels
    if isinstance(w.getPlotItem().getAxis("left"), MoneyAxis):
        w.getPlotItem().getAxis("left").setWidth(64)  # room for "100,250" before the first paint
    style_plot(w, title=title, x=x, y=y)
    w.setMinimumSize(160, 120)
    return w


def set_stable_range(item: pg.PlotItem | pg.PlotWidget, axis: str, lo: float, hi: float, *,
                     padding: float = 0.05, floor: float | None = None) -> bool:
    """Show ``lo``..``hi`` on ``axis`` ("x" or "y"), but move the view only when the data leave it or
    fill less than half of it, and then to rounded bounds. pyqtgraph regenerates an axis (ticks,
    labels: a few ms of Python) whenever its range moves, so a range that follows every update
    costs that at each redraw. ``floor``: the view never starts below it (days to expiry, say).
    Returns True when the range moved."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return False
    if hi < lo:
        lo, hi = hi, lo
    span = hi - lo
    if span <= 0:
        span = abs(lo) * 0.02 or 1.0
        lo, hi = lo - span / 2, hi + span / 2
    want_lo, want_hi = lo - padding * span, hi + padding * span
    if floor is not None:
        want_lo = max(want_lo, floor)
    index = 0 if axis == "x" else 1
    vb = item.getViewBox() if hasattr(item, "getViewBox") else item.getPlotItem().getViewBox()
    cur_lo, cur_hi = vb.viewRange()[index]
    if cur_lo <= want_lo and want_hi <= cur_hi and (cur_hi - cur_lo) <= 2.0 * (want_hi - want_lo):
        return False
    step = 10.0 ** math.floor(math.log10(want_hi - want_lo)) / 4.0
    new_lo, new_hi = math.floor(want_lo / step) * step, math.ceil(want_hi / step) * step
    if floor is not None:
        new_lo = max(new_lo, floor)
    if axis == "x":
        vb.setXRange(new_lo, new_hi, padding=0)
    else:
        vb.setYRange(new_lo, new_hi, padding=0)
    return True


def legend(item: pg.PlotItem, *, right: bool = False) -> pg.LegendItem:
    """A legend in the top-left (or top-right) corner with a translucent background."""
    bg, fg = _colors()
    fill = QtGui.QColor(bg)
    fill.setAlpha(200)
    leg = item.addLegend(offset=(-8, 8) if right else (8, 8), labelTextColor=fg, brush=pg.mkBrush(fill))
    return leg


class PercentAxis(pg.AxisItem):
    """Axis for fractions shown as percent (0.25 -> 25%)."""

    def tickStrings(self, values: Sequence[float], scale: float, spacing: float) -> list[str]:
        decimals = 0 if spacing >= 0.01 else 1
        return [f"{100 * v:.{decimals}f}%" for v in values]


class ExpMoneynessAxis(pg.AxisItem):
    """Axis in log-moneyness k labelled as moneyness K/F = e^k."""

    def tickStrings(self, values: Sequence[float], scale: float, spacing: float) -> list[str]:
        return [f"{math.exp(v):.2f}" for v in values]


class MoneyAxis(pg.AxisItem):
    """Dollar axis with thousands separators (k suffix for big values, cents when the range is tiny)."""

    def tickStrings(self, values: Sequence[float], scale: float, spacing: float) -> list[str]:
        out = []
        for v in values:
            if abs(v) >= 10_000 and spacing >= 1000:
                text = f"{v / 1000:,.0f}k"
            elif spacing < 1:
                text = f"{v:,.2f}"
            else:
                text = f"{v:,.0f}"
            out.append(text[1:] if text.startswith("-") and not any(c in "123456789" for c in text) else text)
        return out


#: tick steps of a market-time axis, seconds: clock-like steps, never fractions of a second
_TIME_STEPS = (1, 5, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 3 * 3600, 6 * 3600, 12 * 3600,
               86400, 2 * 86400, 7 * 86400, 14 * 86400, 30 * 86400, 91 * 86400, 182 * 86400, 365 * 86400)


class MarketTimeAxis(pg.AxisItem):
    """UTC epoch seconds labelled in New York time, like every time in the GUI.

    pyqtgraph's ``DateAxisItem`` chose millisecond ticks when a restart left seconds of history
    ("58.000 59.000 14:39:00 01.000") and used the machine's zone. Steps here are clock steps (≥ 1 s),
    one label per ~90 px; a plot using it also sets a minimum x range (:data:`MIN_TIME_RANGE_S`).
    """

    def tickSpacing(self, minVal: float, maxVal: float, size: float) -> list[tuple[float, float]]:
        span = maxVal - minVal
        if not (math.isfinite(span) and span > 0):
            return []
        target = span / max(2.0, size / 90.0)
        major = next((s for s in _TIME_STEPS if s >= target), _TIME_STEPS[-1])
        return [(float(major), 0.0)]

    def tickStrings(self, values: Sequence[float], scale: float, spacing: float) -> list[str]:
        from datetime import UTC, datetime

        from engine.clock import MARKET_ZONE

        fmt = "%b %d" if spacing >= 86400 else "%H:%M:%S" if spacing < 60 else "%H:%M"
        out = []
        for v in values:
            try:
                out.append(datetime.fromtimestamp(float(v), UTC).astimezone(MARKET_ZONE).strftime(fmt))
            except (OverflowError, OSError, ValueError):
                out.append("")
        return out


#: time plots show at least this span, so a fresh history of a few seconds gets clock ticks
MIN_TIME_RANGE_S = 300.0


def time_plot(**kwargs: Any) -> pg.PlotWidget:
    """A plot whose x axis is market time (epoch seconds), never zoomed below :data:`MIN_TIME_RANGE_S`."""
    axes = dict(kwargs.pop("axis_items", None) or {})
    axes["bottom"] = MarketTimeAxis("bottom")
    plot = new_plot(axis_items=axes, **kwargs)
    plot.getPlotItem().getViewBox().setLimits(minXRange=MIN_TIME_RANGE_S)
    return plot


def infinite_line(pos: float, *, angle: int = 90, color: str = MUTED, dash: bool = True,
                  label: str = "", label_pos: float = 0.92) -> pg.InfiniteLine:
    pen = pg.mkPen(color, width=1, style=QtCore.Qt.PenStyle.DashLine if dash else QtCore.Qt.PenStyle.SolidLine)
    line = pg.InfiniteLine(pos=pos, angle=angle, pen=pen, movable=False,
                           label=label or None, labelOpts={"position": label_pos, "color": color})
    return line


def restyle_plots(root: QtWidgets.QWidget) -> int:
    """Re-apply the application palette (after a theme switch) to every plot under ``root``."""
    bg, fg = _colors()
    pen = pg.mkPen(fg)
    n = 0
    for w in root.findChildren(pg.PlotWidget):
        w.setBackground(bg)
        item = w.getPlotItem()
        grid = getattr(item, "tick_grid", None)
        if grid is not None:
            grid.set_color(fg)
        for name in ("left", "bottom", "right", "top"):
            ax = item.getAxis(name) if name in item.axes else None
            if ax is None:
                continue
            ax.setPen(pen)
            ax.setTextPen(pen)
            if ax.labelText:
                ax.setLabel(ax.labelText, units=ax.labelUnits or None, color=fg.name())
        if item.titleLabel.text:
            item.setTitle(item.titleLabel.text, color=fg.name(), size="10pt")
        n += 1
    return n
