"""Portfolio Greeks: per-underlying and total delta, beta-weighted delta, gamma, theta, vega as bars, and
their history through the session.

Numbers come from the risk engine (``engine.risk_service.greeks()``, else ``engine.risk``): positions only,
delta in shares, beta-weighted delta in benchmark (SPY) shares, gamma in shares per $1, theta in $ per
calendar day, vega in $ per vol point. The panel samples the totals at most once a second for the history,
which starts from the stored rows of earlier sessions (written by the engine, ``engine.reports.history``).
"""

from __future__ import annotations

import math
import time
from collections import deque
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtWidgets

from engine.bus.events import ClockTicked, PositionChanged, UnderlyingUpdated
from widgets import engine_queries as eq
from widgets.base import EventBatch, Panel
from widgets.plots import LOSS, MUTED, PROFIT, SERIES, new_plot, set_stable_range, time_plot

if TYPE_CHECKING:
    from engine.core import Engine

METRICS: list[tuple[str, str, str]] = [
    ("delta", "Δ", "shares"),
    ("beta_delta", "β-weighted Δ", "SPY sh"),
    ("gamma", "Γ", "sh per $1"),
    ("theta", "Θ", "$/day"),
    ("vega", "Vega", "$/vol pt"),
]


class CategoryAxis(pg.AxisItem):
    """Bottom axis labelled with category names at integer positions."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.names: list[str] = []

    def tickValues(self, minVal: float, maxVal: float, size: float) -> list[tuple[float, list[float]]]:
        return [(1.0, [float(i) for i in range(len(self.names))])]

    def tickStrings(self, values: Any, scale: float, spacing: float) -> list[str]:
        return [self.names[int(v)] if 0 <= int(v) < len(self.names) else "" for v in values]


class GreeksPanel(Panel):
    title: ClassVar[str] = "Portfolio Greeks"
    panel_id: ClassVar[str] = "greeks"

    def __init__(self, engine: Engine | None, parent: QtWidgets.QWidget | None = None, *, history_points: int = 28_800) -> None:
        super().__init__(engine, parent)
        self.by_underlying: dict[str, dict[str, float]] = {}
        self.total: dict[str, float] = {}
        self.history_t: deque[float] = deque(maxlen=history_points)
        self.history: dict[str, deque[float]] = {k: deque(maxlen=history_points) for k, _, _ in METRICS}
        self.min_interval_s = 1.0
        self._last = -math.inf

        self.summary = QtWidgets.QLabel("No positions")
        self.summary.setStyleSheet("font-weight: bold")
        self.bar_plots: dict[str, pg.PlotWidget] = {}
        self.bar_items: dict[str, pg.BarGraphItem | None] = {}
        self.axes: dict[str, CategoryAxis] = {}
        bars = QtWidgets.QWidget()
        grid = QtWidgets.QGridLayout(bars)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.setSpacing(2)
        for i, (key, label, unit) in enumerate(METRICS):
            axis = CategoryAxis("bottom")
            plot = new_plot(title=f"{label} ({unit})", axis_items={"bottom": axis})
            plot.setMouseEnabled(x=False, y=False)
            plot.getPlotItem().addItem(pg.InfiniteLine(pos=0, angle=0, pen=pg.mkPen(MUTED)))
            self.bar_plots[key], self.axes[key], self.bar_items[key] = plot, axis, None
            grid.addWidget(plot, 0, i)

        self.history_box = QtWidgets.QComboBox()
        for key, label, unit in METRICS:
            self.history_box.addItem(f"{label} ({unit})", key)
        self.history_box.currentIndexChanged.connect(lambda _i: self._draw_history())
        self.history_plot = time_plot(title="History (total)")
        self.history_curve = self.history_plot.plot([], [], pen=pg.mkPen(SERIES[0], width=2), stepMode="right")
        hist_top = QtWidgets.QHBoxLayout()
        hist_top.addWidget(QtWidgets.QLabel("History of"))
        hist_top.addWidget(self.history_box)
        hist_top.addStretch(1)
        hist = QtWidgets.QWidget()
        hl = QtWidgets.QVBoxLayout(hist)
        hl.setContentsMargins(0, 0, 0, 0)
        hl.addLayout(hist_top)
        hl.addWidget(self.history_plot, 1)

        split = QtWidgets.QSplitter(QtCore.Qt.Orientation.Vertical)
        split.addWidget(bars)
        split.addWidget(hist)
        split.setSizes([240, 200])
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addWidget(self.summary)
        lay.addWidget(split, 1)
        self.load_history(history_points)
        self.refresh(force=True)

    def load_history(self, limit: int) -> int:
        """Start the history from the stored rows of earlier sessions; returns the points loaded."""
        from engine.reports.history import history_for_panels

        rows = history_for_panels(self.engine, limit)
        for r in rows:
            self.history_t.append(r.ts.timestamp())
            for key, _, _ in METRICS:
                self.history[key].append(float(getattr(r, key, math.nan)))
        return len(rows)

    # ---- data ------------------------------------------------------------------------------------
    def _read(self) -> tuple[dict[str, dict[str, float]], dict[str, float]] | None:
        svc = self.engine.risk_service if self.engine is not None else None
        if svc is not None:
            g = svc.greeks()
            return g["by_underlying"], g["total"]
        risk = self.engine.risk if self.engine is not None else None
        if risk is not None:
            by = {k: v.to_dict() for k, v in risk.position_exposure_by_underlying().items()}
            return by, risk.position_exposure.to_dict()
        return None

    def apply_events(self, batch: EventBatch) -> None:
        if batch.events(PositionChanged):
            self.refresh(force=True)
        elif batch.has(ClockTicked) or batch.has(UnderlyingUpdated):
            self.refresh()

    def refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.min_interval_s:
            return
        self._last = now
        data = self._read()
        if data is None:
            self.summary.setText("Risk engine not running")
            return
        self.by_underlying, self.total = data
        t = eq.now(self.engine).timestamp()
        same = bool(self.history_t) and t <= self.history_t[-1]
        if not same:
            self.history_t.append(t)
        for key, _, _ in METRICS:
            value = float(self.total.get(key, math.nan))
            if same:
                self.history[key][-1] = value  # same instant: keep the newest
            else:
                self.history[key].append(value)
        self._draw_bars()
        self._draw_history()
        tot = self.total
        if self.by_underlying:
            self.summary.setText(
                f"Δ {tot.get('delta', 0):+,.0f} sh · β-Δ {tot.get('beta_delta', 0):+,.0f} SPY sh · "
                f"Γ {tot.get('gamma', 0):+,.1f} · Θ {tot.get('theta', 0):+,.0f} $/day · vega {tot.get('vega', 0):+,.0f} $"
            )
        else:
            self.summary.setText("No positions: Greeks are zero")

    def _draw_bars(self) -> None:
        names = sorted(self.by_underlying)
        labels = [*names, "TOTAL"]
        for key, _, _ in METRICS:
            values = np.array([self.by_underlying[n].get(key, math.nan) for n in names]
                              + [self.total.get(key, math.nan)], dtype=float)
            values = np.nan_to_num(values)
            plot = self.bar_plots[key]
            item = self.bar_items[key]
            if item is not None and len(item.opts["height"]) == len(values) and \
                    np.array_equal(item.opts["height"], values) and self.axes[key].names == labels:
                continue  # nothing moved: no repaint
            brushes = [pg.mkBrush(PROFIT if v >= 0 else LOSS) for v in values]
            brushes[-1] = pg.mkBrush(SERIES[0])
            if item is None:
                item = pg.BarGraphItem(x=np.arange(len(values)), height=values, width=0.6, brushes=brushes,
                                       pen=None)
                plot.addItem(item)
                self.bar_items[key] = item
            else:
                item.setOpts(x=np.arange(len(values)), height=values, brushes=brushes)
            if self.axes[key].names != labels:
                self.axes[key].names = labels
                self.axes[key].picture = None
                self.axes[key].update()
            lo, hi = float(min(values.min(), 0.0)), float(max(values.max(), 0.0))
            plot.setXRange(-0.6, len(values) - 0.4, padding=0)
            if hi > lo:
                set_stable_range(plot, "y", lo, hi, padding=0.1)
            else:
                plot.setYRange(-1.0, 1.0, padding=0)

    def _draw_history(self) -> None:
        key = self.history_box.currentData()
        if key is None or not self.history_t:
            return
        t = np.fromiter(self.history_t, float)
        v = np.fromiter(self.history[key], float)
        self.history_curve.setData(t, v)
        finite = v[np.isfinite(v)]
        if len(t) > 1 and len(finite):  # headroom ahead of the newest point: the time axis moves rarely
            set_stable_range(self.history_plot, "x", float(t[0]), float(t[-1]), padding=0.2)
            set_stable_range(self.history_plot, "y", float(finite.min()), float(finite.max()), padding=0.1)
