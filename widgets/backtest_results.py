"""The Backtest panel's results: statistics table, equity curve with drawdown, daily P&L, P&L histogram and
the trade list, and their export (the engine's CSV/JSON reports, a PNG of the results area).

A mixin of :class:`widgets.backtest_runner.BacktestPanel`: it shows a ``BacktestResult`` the panel's worker
returned and computes nothing of its own beyond the histogram's bins."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtWidgets

from engine.analytics.formatting import money, plural
from widgets.plots import LOSS, PROFIT, SERIES, MoneyAxis, new_plot
from widgets.table_model import Column, ColumnTableModel, LiveTableView
from widgets.time_format import format_market_time

Qt = QtCore.Qt

STAT_ROWS: list[tuple[str, str, str]] = [
    ("total_pnl", "Total P&L", "money"), ("total_return", "Total return", "pct"), ("cagr", "CAGR", "pct"),
    ("ann_vol", "Volatility (ann.)", "pct"), ("sharpe", "Sharpe", "num"), ("sortino", "Sortino", "num"),
    ("calmar", "Calmar", "num"), ("max_drawdown", "Max drawdown", "pct"),
    ("max_drawdown_days", "Max DD duration (days)", "int"), ("trades", "Trades", "int"),
    ("win_rate", "Win rate", "pct"), ("profit_factor", "Profit factor", "num"), ("avg_win", "Avg win", "money"),
    ("avg_loss", "Avg loss", "money"), ("expectancy", "Expectancy / trade", "money"),
    ("exposure", "Time in market", "pct"), ("premium_capture", "Premium captured", "pct"),
    ("fees", "Fees", "money"), ("avg_days_held", "Avg days held", "num"), ("start_equity", "Start equity", "money"),
    ("end_equity", "End equity", "money"),
]


def _fmt_stat(value: Any, kind: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if kind == "money":
        return money(value)
    if kind == "pct":
        return f"{100 * value:.2f}%"
    if kind == "int":
        return f"{int(value):,d}"
    return f"{value:,.2f}"


class BacktestResultsMixin:
    """The results area: built once, filled by :meth:`show_result`."""

    TRADE_COLUMNS: ClassVar[list[Column]] = [
        Column("no", "#", "{:d}", width=36),
        Column("opened", "Opened", align="left", width=214),
        Column("closed", "Closed", align="left", width=214),
        Column("legs", "Legs", align="left", width=300),
        Column("qty", "Qty", "{:d}", width=40),
        Column("entry", "Entry", align="right", width=64),
        Column("exit", "Exit", align="right", width=64),
        Column("pnl", "Net P&L", "{:+,.2f}", width=84, signed=True),
        Column("reason", "Exit reason", align="left", width=110),
        Column("regime", "Regime", align="left", width=90),
    ]

    def _build_results(self) -> QtWidgets.QWidget:
        """The statistics, charts and trades, under a one-line summary."""
        self.stats_model = ColumnTableModel([Column("name", "Statistic", align="left", width=190),
                                             Column("value", "Value", align="right", width=110)], self)
        self.stats_table = LiveTableView(self.stats_model)
        self.stats_table.setSelectionMode(QtWidgets.QAbstractItemView.SelectionMode.NoSelection)
        self.stats_table.horizontalHeader().setSectionResizeMode(0, QtWidgets.QHeaderView.ResizeMode.Stretch)
        self.stats_table.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.stats_table.setMinimumWidth(310)  # "Max DD duration (days)" and "$100,000.00" in full
        self.equity_plot = new_plot(title="Equity", y="$", axis_items={"bottom": pg.DateAxisItem(),
                                                                       "left": MoneyAxis("left")})
        self.equity_curve = self.equity_plot.plot([], [], pen=pg.mkPen(SERIES[0], width=2))
        self.dd_plot = new_plot(title="Drawdown", y="%", axis_items={"bottom": pg.DateAxisItem()})
        self.dd_curve = self.dd_plot.plot([], [], pen=pg.mkPen(LOSS, width=1), fillLevel=0,
                                          brush=pg.mkBrush(214, 69, 65, 80))
        self.dd_plot.getPlotItem().getAxis("left").setWidth(64)  # same plot area as the equity curve above
        self.dd_plot.setXLink(self.equity_plot)
        self.daily_plot = new_plot(title="Daily P&L", y="$", axis_items={"bottom": pg.DateAxisItem(),
                                                                         "left": MoneyAxis("left")})
        # not x-linked: pyqtgraph links views by screen position, and this plot is half as wide
        self.daily_bars: pg.BarGraphItem | None = None
        self.hist_plot = new_plot(title="Daily P&L distribution", x="$ per day", y="days")
        self.hist_bars: pg.BarGraphItem | None = None
        self._show_axis_values(False)  # empty plots: no "0.250" ticks until a run has data
        self.trade_model = ColumnTableModel(self.TRADE_COLUMNS, self)
        self.trade_table = LiveTableView(self.trade_model)
        self.trade_table.horizontalHeader().setSectionResizeMode(3, QtWidgets.QHeaderView.ResizeMode.Stretch)

        charts = QtWidgets.QWidget()
        grid = QtWidgets.QGridLayout(charts)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.addWidget(self.equity_plot, 0, 0, 1, 2)
        grid.addWidget(self.dd_plot, 1, 0, 1, 2)
        grid.addWidget(self.daily_plot, 2, 0)
        grid.addWidget(self.hist_plot, 2, 1)
        grid.setRowStretch(0, 3)
        grid.setRowStretch(1, 1)
        grid.setRowStretch(2, 2)
        overview = QtWidgets.QSplitter(Qt.Orientation.Horizontal)
        overview.addWidget(self.stats_table)
        overview.addWidget(charts)
        overview.setSizes([320, 780])
        self.results_tabs = QtWidgets.QTabWidget()
        self.results_tabs.addTab(overview, "Overview")
        self.results_tabs.addTab(self.trade_table, "Trades")
        self.summary_label = QtWidgets.QLabel("No results yet: choose a strategy and press Run.")
        self.summary_label.setStyleSheet("font-weight: bold")
        right = QtWidgets.QWidget()
        rl = QtWidgets.QVBoxLayout(right)
        rl.setContentsMargins(0, 0, 0, 0)
        rl.addWidget(self.summary_label)
        rl.addWidget(self.results_tabs, 1)
        self.results_widget = right
        return right

    # ---- results ---------------------------------------------------------------------------------
    def _show_axis_values(self, on: bool) -> None:
        for plot in (self.equity_plot, self.dd_plot, self.daily_plot, self.hist_plot):
            for name in ("left", "bottom"):
                plot.getPlotItem().getAxis(name).setStyle(showValues=on)

    def show_result(self, result: Any) -> None:
        self.result = result
        self._show_axis_values(True)
        m = result.metrics.as_dict()
        names = [label for key, label, _ in STAT_ROWS if key in m]
        values = [_fmt_stat(m[key], kind) for key, _, kind in STAT_ROWS if key in m]
        self.stats_model.update(np.array(names, dtype=object),
                                {"name": np.array(names, dtype=object), "value": np.array(values, dtype=object)})
        x = _epoch(result.dates)
        equity = np.asarray(result.equity, float)
        dd = 100.0 * np.asarray(result.drawdown, float)
        daily = np.asarray(result.daily_pnl, float)
        self.equity_curve.setData(x, equity)
        self.dd_curve.setData(x, dd)
        # a run without trades has flat series: autorange then zooms into nothing and the axes read
        # "0.250" or lose their labels; give flat series a readable range instead
        _readable_y_range(self.equity_plot, equity, pad=max(1.0, 0.01 * float(np.nanmax(np.abs(equity)))
                                                        if np.isfinite(equity).any() else 1.0))
        _readable_y_range(self.dd_plot, dd, pad=1.0)
        _readable_y_range(self.daily_plot, daily, pad=10.0)
        for plot, attr in ((self.daily_plot, "daily_bars"), (self.hist_plot, "hist_bars")):
            old = getattr(self, attr)
            if old is not None:
                plot.removeItem(old)
        if len(x):
            width = 0.8 * 86400
            brushes = [pg.mkBrush(PROFIT if v >= 0 else LOSS) for v in daily]
            self.daily_bars = pg.BarGraphItem(x=x, height=daily, width=width, brushes=brushes, pen=None)
            self.daily_plot.addItem(self.daily_bars)
            nonzero = daily[np.isfinite(daily)]
            if len(nonzero):
                counts, edges = np.histogram(nonzero, bins=min(40, max(5, len(nonzero) // 5)))
                centers = 0.5 * (edges[:-1] + edges[1:])
                hb = [pg.mkBrush(PROFIT if c >= 0 else LOSS) for c in centers]
                self.hist_bars = pg.BarGraphItem(x=centers, height=counts, width=np.diff(edges) * 0.9, brushes=hb,
                                                 pen=None)
                self.hist_plot.addItem(self.hist_bars)
        trades = list(result.trades)
        self.trade_model.update(np.array([t.trade_no for t in trades], dtype=object), {
            "no": np.array([t.trade_no for t in trades], dtype=object),
            "opened": np.array([format_market_time(t.opened_at) for t in trades], dtype=object),
            "closed": np.array([format_market_time(t.closed_at) if t.closed_at else "open" for t in trades],
                               dtype=object),
            "legs": np.array([compact_legs(t.legs) for t in trades], dtype=object),
            "qty": np.array([t.quantity for t in trades], dtype=object),
            "entry": np.array([_price(t.entry_price) for t in trades], dtype=object),
            "exit": np.array([_price(t.exit_price) for t in trades], dtype=object),
            "pnl": np.array([float(t.net_pnl) for t in trades], dtype=float),
            "reason": np.array([t.exit_reason for t in trades], dtype=object),
            "regime": np.array([t.regime for t in trades], dtype=object),
        })
        self.results_tabs.setTabText(1, f"Trades ({len(trades)})")
        pnl = m.get("total_pnl")
        ret = m.get("total_return")
        self.summary_label.setText(
            f"{result.strategy} · {result.config.get('symbol', '')} · {plural(len(result.dates), 'day')} · "
            f"P&L {_fmt_stat(pnl, 'money')} ({_fmt_stat(ret, 'pct')}) · max DD {_fmt_stat(m.get('max_drawdown'), 'pct')}"
            f" · Sharpe {_fmt_stat(m.get('sharpe'), 'num')} · {result.status}"
        )
        for b in (self.export_csv_button, self.export_png_button):
            b.setEnabled(True)

    def export_csv(self, folder: Path) -> dict[str, Path]:
        """Trades, equity, orders (CSV) and the summary (JSON) of the shown result, via engine.backtest.report."""
        if self.result is None:
            raise ValueError("no backtest result to export")
        from engine.backtest.report import export_all

        paths = export_all(self.result, folder, png=False)
        self._status(f"Exported {', '.join(p.name for p in paths.values())} to {folder}", error=False)
        return paths

    def export_png(self, path: Path) -> Path:
        """The results area as a PNG."""
        if self.result is None:
            raise ValueError("no backtest result to export")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not self.results_widget.grab().save(str(path), "PNG"):
            raise OSError(f"could not write {path}")
        self._status(f"Saved {path}", error=False)
        return path


def compact_legs(text: str) -> str:
    """"-1 SPY240621P00500000 / +1 SPY240621P00495000" as "-1 21Jun24 500P  +1 21Jun24 495P".

    The ledger's OCC symbols filled the Legs column and were cut to "-1 SP…"; the underlying is the run's
    and already in the summary line. Text that is not OCC legs is shown as it is.
    """
    from engine.model import Option

    parts = []
    for token in text.split(" / "):
        ratio, _, symbol = token.strip().partition(" ")
        try:
            o = Option.from_occ(symbol)
        except ValueError:
            return text
        parts.append(f"{ratio} {o.expiry:%d%b%y} {o.strike:g}{'C' if o.is_call else 'P'}")
    return "  ".join(parts)


def _readable_y_range(plot: pg.PlotWidget, values: np.ndarray, pad: float) -> None:
    """Autorange, unless the series is flat (or empty): then centre it in ±``pad``."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    item = plot.getPlotItem()
    if len(v) and float(v.max() - v.min()) > 1e-9 * max(1.0, float(np.abs(v).max())):
        item.enableAutoRange(axis="y")
        return
    centre = float(v[0]) if len(v) else 0.0
    item.setYRange(centre - pad, centre + pad, padding=0.05)


def _epoch(dates: np.ndarray) -> np.ndarray:
    d = np.asarray(dates).astype("datetime64[D]")
    return d.astype("datetime64[s]").astype(np.int64).astype(float) + 16 * 3600.0


def _price(p: Any) -> str:
    if p is None:
        return ""
    v = float(p)
    return f"{abs(v):.2f} {'CR' if v < 0 else 'DB'}"
