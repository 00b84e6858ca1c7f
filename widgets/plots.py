"""pyqtgraph helpers shared by the chart panels: palette-aware plots, colours, GL detection.

Plots follow the application palette (dark or light theme) and are redrawn from the app's ~10 Hz
batches, never per tick. ``useOpenGL`` stays off; 3-D views need a real OpenGL context
(:func:`gl_available`), which the offscreen platform lacks (DESIGN.md §10).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pyqtgraph as pg
from PySide6 import QtCore, QtGui, QtWidgets

pg.setConfigOptions(antialias=True, useOpenGL=False)

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
    item.showGrid(x=grid, y=grid, alpha=0.15)
    return item


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


class TimeAxis(pg.DateAxisItem):
    """UTC epoch seconds shown as clock time."""


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
