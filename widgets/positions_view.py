"""Positions panel: holdings grouped into named strategies, with P&L, % of max profit, Greeks and DTE.

Source: the risk engine's portfolio (``engine.risk.portfolio.positions``, kept current from
``PositionChanged``), falling back on the ``PositionChanged`` events themselves. Marks, IVs and Greeks come
from :func:`engine.risk.greeks.leg_risk` over the risk engine's market view (position totals: delta in
shares, vega $ per vol point, theta $ per day). Group rows (bold) are the engine's strategy groups
(:mod:`engine.analytics.positions_grouping`: trade tags first, then structure recognition) with their
subtotals and % of max profit; *Grouped* switches to a flat list of positions.

Actions: *Analyse* sends the selected rows (or a whole group) to the payoff panel; *Close* puts the
closing legs on the order ticket (adjust: add the new legs from the chain, one order); *Roll* puts the
group's closing legs and the same structure at a later expiry (strikes optionally shifted) on the ticket
as one order. Nothing here sends an order: the ticket does, after review.
"""

from __future__ import annotations

import math
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from PySide6 import QtCore, QtGui, QtWidgets

from engine.analytics.formatting import money
from engine.analytics.positions_grouping import (
    RollError,
    group_figures,
    group_positions,
    roll_expiry,
    roll_legs,
    theta_to_expiry,
)
from engine.bus.events import ChainUpdated, PositionChanged, QuotesUpdated, UnderlyingUpdated
from engine.model import Leg, OpenClose, Option, Position, Side
from engine.model.instruments import NEW_YORK
from widgets import engine_queries as eq
from widgets.base import EventBatch, Panel
from widgets.order_ticket import describe_leg
from widgets.table_model import Column, ColumnTableModel, LiveTableView

if TYPE_CHECKING:
    from engine.core import Engine

Qt = QtCore.Qt

GREEKS = ("delta", "gamma", "theta", "vega")


class _PositionsModel(ColumnTableModel):
    def __init__(self, columns: list[Column], parent: QtCore.QObject | None = None) -> None:
        super().__init__(columns, parent)
        self._bold = QtGui.QFont()
        self._bold.setBold(True)
        self._group_bg = QtGui.QColor(128, 128, 128, 45)

    def cell_font(self, row: int, column: int) -> QtGui.QFont | None:
        return self._bold if self.value(row, "is_group") else None

    def cell_background(self, row: int, column: int) -> QtGui.QColor | None:
        return self._group_bg if self.value(row, "is_group") else None


class PositionsPanel(Panel):
    title: ClassVar[str] = "Positions"
    panel_id: ClassVar[str] = "positions"

    COLUMNS: ClassVar[list[Column]] = [
        Column("name", "Position", align="left", width=230),
        Column("qty", "Qty", "{:+d}", width=48),
        Column("avg", "Avg", "{:,.2f}", width=64, tooltip="Average price per unit"),
        Column("mark", "Mark", "{:,.2f}", width=64, tooltip="Mid price now (model value when not quoted)"),
        Column("pnl", "P&L $", "{:+,.0f}", width=80, signed=True, tooltip="Unrealised P&L at the mark"),
        Column("pnl_pct", "P&L %", lambda v: f"{100 * v:+.1f}%", width=64, signed=True,
               tooltip="Unrealised P&L / |cost basis|"),
        Column("max_pct", "% max", lambda v: f"{100 * v:+.0f}%", width=56, signed=True,
               tooltip="A strategy's unrealised P&L as a share of its max profit at expiry"),
        Column("delta", "Δ sh", "{:+,.1f}", width=62, tooltip="Delta in shares"),
        Column("gamma", "Γ", "{:+,.2f}", width=56, tooltip="Gamma in shares per $1"),
        Column("theta", "Θ $/d", "{:+,.0f}", width=60, signed=True, tooltip="Theta in $ per calendar day"),
        Column("theta_exp", "Θ to exp", width=120,
               tooltip="With less than a day left: the time value still to decay by expiry, and per hour "
                       "(theta per day would overstate it)"),
        Column("vega", "Vega $", "{:+,.0f}", width=62, tooltip="Vega in $ per vol point"),
        Column("iv", "IV", lambda v: f"{100 * v:.1f}%", width=54),
        Column("dte", "DTE", "{:.0f}", width=44, tooltip="Calendar days to expiry"),
    ]

    def __init__(self, engine: Engine | None, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(engine, parent)
        self.positions: dict[str, Position] = {}
        self.rows: dict[str, tuple[Position, ...]] = {}
        self.totals: dict[str, float] = {}
        self._last_refresh = 0.0
        self.min_interval_s = 0.5

        self.model = _PositionsModel(self.COLUMNS, self)
        self.table = LiveTableView(self.model)
        self.table.setSelectionMode(QtWidgets.QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.horizontalHeader().setSectionResizeMode(0, QtWidgets.QHeaderView.ResizeMode.Stretch)
        self.summary = QtWidgets.QLabel("No positions")
        self.summary.setStyleSheet("font-weight: bold")
        self.analyse_button = QtWidgets.QPushButton("Analyse payoff")
        self.analyse_button.setToolTip("Show the selected positions (or groups) in the payoff panel")
        self.analyse_button.clicked.connect(self.analyse_selected)
        self.close_button = QtWidgets.QPushButton("Close on ticket")
        self.close_button.setToolTip("Put the closing legs of the selection on the order ticket")
        self.close_button.clicked.connect(self.close_selected)
        self.missing_label = QtWidgets.QLabel("")
        self.missing_label.setStyleSheet("color: #e65100")
        self.grouped_check = QtWidgets.QCheckBox("Grouped")
        self.grouped_check.setChecked(True)
        self.grouped_check.setToolTip("Positions grouped into named strategies, or a flat list")
        self.grouped_check.toggled.connect(lambda _on: self.refresh(force=True))
        self.roll_dte_spin = QtWidgets.QSpinBox()
        self.roll_dte_spin.setRange(1, 1000)
        self.roll_dte_spin.setValue(30)
        self.roll_dte_spin.setPrefix("to ")
        self.roll_dte_spin.setSuffix(" DTE")
        self.roll_dte_spin.setToolTip("Roll to the listed expiry nearest this many days (after the current one)")
        self.roll_shift_spin = QtWidgets.QDoubleSpinBox()
        self.roll_shift_spin.setRange(-1000.0, 1000.0)
        self.roll_shift_spin.setDecimals(1)
        self.roll_shift_spin.setPrefix("strikes ")
        self.roll_shift_spin.setToolTip("Move every strike of the new legs by this many dollars")
        self.roll_button = QtWidgets.QPushButton("Roll on ticket")
        self.roll_button.setToolTip("Close the selected group and open it again at a later expiry, as one order")
        self.roll_button.clicked.connect(self.roll_selected)
        self._chains: dict[str, Any] = {}
        self.groups: tuple[Any, ...] = ()

        actions = QtWidgets.QHBoxLayout()
        actions.addWidget(self.summary, 1)
        actions.addWidget(self.grouped_check)
        actions.addWidget(self.analyse_button)
        actions.addWidget(self.close_button)
        roll = QtWidgets.QHBoxLayout()  # a row of its own: the dock keeps its narrow minimum width
        roll.addStretch(1)
        roll.addWidget(self.roll_dte_spin)
        roll.addWidget(self.roll_shift_spin)
        roll.addWidget(self.roll_button)
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addLayout(actions)
        lay.addLayout(roll)
        lay.addWidget(self.table, 1)
        lay.addWidget(self.missing_label)
        self._load()
        self.refresh(force=True)

    # ---- data ------------------------------------------------------------------------------------
    def _portfolio(self) -> Any:
        return self.engine.portfolio if self.engine is not None else None

    def _load(self) -> None:
        pf = self._portfolio()
        if pf is not None:
            self.positions = dict(pf.positions)

    def apply_events(self, batch: EventBatch) -> None:
        changed = False
        for und, ev in batch.latest(ChainUpdated).items():
            self._chains[str(und)] = ev.chain  # for rolls when the feed keeps no chain of its own
        for ev in batch.events(PositionChanged):
            p = ev.position
            if p.quantity == 0:
                self.positions.pop(p.symbol, None)
            else:
                self.positions[p.symbol] = p
            changed = True
        pf = self._portfolio()
        if pf is not None and changed:
            self.positions = dict(pf.positions)
        held = {_underlying(p) for p in self.positions.values()}
        market = any(k in held for k in batch.latest(UnderlyingUpdated)) or any(
            getattr(ev, "underlying", None) in held for ev in batch.latest(QuotesUpdated).values()
        ) or any(k in held for k in batch.latest(ChainUpdated))
        if changed:
            self.refresh(force=True)
        elif market:
            self.refresh()

    def refresh(self, force: bool = False) -> None:
        """Recompute marks and Greeks (throttled to ``min_interval_s`` unless forced)."""
        now_mono = time.monotonic()
        if not force and now_mono - self._last_refresh < self.min_interval_s:
            return
        self._last_refresh = now_mono
        positions = sorted(self.positions.values(), key=lambda p: (_underlying(p), p.strategy_id or "", p.symbol))
        n = len(positions)
        cols = {k: np.full(n, np.nan) for k in ("mark", "iv", *GREEKS)}
        exp_decay, exp_hours = np.full(n, np.nan), np.full(n, np.nan)
        missing: tuple[str, ...] = ()
        risk = self.engine.risk if self.engine is not None else None
        now = self._now()
        if n and risk is not None:
            from engine.risk.greeks import leg_risk

            lr = leg_risk([p.instrument for p in positions], [p.quantity for p in positions], risk.market, now,
                          risk.beta_of)
            cols["mark"] = np.asarray(lr.mark, float)
            cols["iv"] = np.asarray(lr.iv, float)
            for k in GREEKS:
                cols[k] = np.asarray(lr.columns[k], float)
            missing = lr.missing
            exp_decay, exp_hours = theta_to_expiry([p.instrument for p in positions],
                                                   np.array([p.quantity for p in positions], float),
                                                   cols["mark"], np.asarray(lr.spot, float), now)
            cols["theta"] = np.where(np.isfinite(exp_decay), np.nan, cols["theta"])  # per day overstates 0DTE
        qty = np.array([p.quantity for p in positions], dtype=float)
        mult = np.array([p.multiplier for p in positions], dtype=float)
        avg = np.array([float(p.avg_price) for p in positions], dtype=float)
        pnl = qty * (cols["mark"] - avg) * mult
        basis = np.abs(qty * avg * mult)
        with np.errstate(invalid="ignore", divide="ignore"):
            pnl_pct = np.where(basis > 0, pnl / basis, np.nan)
        dte = np.array([_dte(p, now) for p in positions], dtype=float)

        keys: list[str] = []
        data: dict[str, list[Any]] = {k: [] for k in ("name", "qty", "avg", "mark", "pnl", "pnl_pct", "max_pct",
                                                      *GREEKS, "theta_exp", "iv", "dte", "is_group")}
        self._theta_exp = (exp_decay, exp_hours)
        self.rows = {}
        grouped = self.grouped_check.isChecked()
        self.groups = group_positions(positions)
        figures = group_figures(self.groups, pnl, {k: cols[k] for k in GREEKS}, dte)
        for gi, g in enumerate(self.groups if grouped else ()):
            ix = np.array(g.indices)
            keys.append(g.key)
            self.rows[g.key] = tuple(positions[i] for i in g.indices)
            g_pnl = float(figures.pnl[gi])
            g_basis = float(basis[ix].sum())
            for k, v in (("name", g.name), ("qty", None), ("avg", math.nan), ("mark", math.nan), ("pnl", g_pnl),
                         ("pnl_pct", g_pnl / g_basis if g_basis > 0 else math.nan),
                         ("max_pct", float(figures.pct_of_max[gi])), ("iv", math.nan),
                         ("dte", float(figures.dte[gi])), ("theta_exp", _theta_exp_text(*_group_theta_exp(exp_decay, exp_hours, ix))),
                         ("is_group", True)):
                data[k].append(v)
            for k in GREEKS:
                data[k].append(float(figures.greeks[k][gi]))
            for i in g.indices:
                self._position_row(positions[i], i, keys, data, "    ", avg, cols, pnl, pnl_pct, dte)
        if not grouped:
            for i, p in enumerate(positions):
                self._position_row(p, i, keys, data, "", avg, cols, pnl, pnl_pct, dte)
        arrays: dict[str, np.ndarray] = {}
        for k, v in data.items():
            arrays[k] = np.array(v, dtype=object if k in ("name", "qty", "is_group", "theta_exp") else float)
        self.model.update(np.array(keys, dtype=object), arrays)
        self.totals = {"pnl": _nansum(pnl), **{k: _nansum(cols[k]) for k in GREEKS}}
        if n:
            t = self.totals
            self.summary.setText(
                f"{n} position{'s' if n != 1 else ''} in {_count(len({_underlying(p) for p in positions}), 'underlying')} · "
                f"P&L {t['pnl']:+,.0f} · Δ {t['delta']:+,.0f} sh · Θ {t['theta']:+,.0f}/day · vega {t['vega']:+,.0f}"
                + (f" · 0DTE Θ to exp {money(_nansum(exp_decay), 0, signed=True)}" if np.isfinite(exp_decay).any()
                   else "")
            )
        else:
            self.summary.setText("No positions")
        self.missing_label.setText(f"No quote or IV for: {', '.join(missing)}" if missing else "")
        self.missing_label.setVisible(bool(missing))

    def _position_row(self, p: Position, i: int, keys: list[str], data: dict[str, list[Any]], indent: str,
                      avg: np.ndarray, cols: dict[str, np.ndarray], pnl: np.ndarray, pnl_pct: np.ndarray,
                      dte: np.ndarray) -> None:
        keys.append(p.symbol)
        self.rows[p.symbol] = (p,)
        data["name"].append(indent + describe_leg(Leg(p.instrument, Side.BUY)))
        data["qty"].append(int(p.quantity))
        data["max_pct"].append(math.nan)
        data["theta_exp"].append(_theta_exp_text(float(self._theta_exp[0][i]), float(self._theta_exp[1][i])))
        for k, arr in (("avg", avg), ("mark", cols["mark"]), ("pnl", pnl), ("pnl_pct", pnl_pct),
                       ("iv", cols["iv"]), ("dte", dte), *((g, cols[g]) for g in GREEKS)):
            data[k].append(float(arr[i]))
        data["is_group"].append(False)

    def _now(self) -> datetime:
        risk = self.engine.risk if self.engine is not None else None
        return risk.now() if risk is not None else eq.now(self.engine)

    # ---- actions ----------------------------------------------------------------------------------
    def selected_positions(self) -> tuple[Position, ...]:
        out: dict[str, Position] = {}
        for idx in self.table.selectionModel().selectedRows():
            for p in self.rows.get(str(self.model.key_at(idx.row())), ()):
                out[p.symbol] = p
        return tuple(out.values())

    def select_keys(self, *keys: str) -> None:
        sel = self.table.selectionModel()
        sel.clearSelection()
        for k in keys:
            row = self.model.row_of(k)
            if row >= 0:
                sel.select(self.model.index(row, 0), QtCore.QItemSelectionModel.SelectionFlag.Select
                           | QtCore.QItemSelectionModel.SelectionFlag.Rows)

    def analyse_selected(self) -> None:
        picked = self.selected_positions() or tuple(self.positions.values())
        if picked:
            self.links.positions_selected.emit(picked)

    def close_selected(self) -> None:
        picked = [p for p in self.selected_positions() if p.quantity != 0]
        if not picked:
            return
        unds = {_underlying(p) for p in picked}
        if len(unds) > 1:
            self.report_error("Select positions of one underlying to close them on one ticket")
            return
        size = math.gcd(*(abs(p.quantity) for p in picked))
        legs = [Leg(p.instrument, Side.SELL if p.quantity > 0 else Side.BUY, abs(p.quantity) // size, OpenClose.CLOSE)
                for p in picked]
        self.links.legs_replaced.emit({"legs": tuple(legs), "quantity": size})

    def roll_selected(self) -> None:
        """Close the selected group and open the same structure later (and shifted), as one ticket order."""
        picked = [p for p in self.selected_positions() if p.quantity != 0 and isinstance(p.instrument, Option)]
        if not picked:
            self.report_error("Select a strategy group (or its option legs) to roll")
            return
        unds = {_underlying(p) for p in picked}
        if len(unds) > 1:
            self.report_error("Select positions of one underlying to roll them in one order")
            return
        und = unds.pop()
        chain = eq.last_chain(self.engine, und) or self._chains.get(und)
        if chain is None:
            self.report_error(f"No {und} chain yet: select {und} in the chain to roll")
            return
        current = max(p.instrument.expiry for p in picked)
        try:
            expiry = roll_expiry(chain, self._now(), current, self.roll_dte_spin.value())
            legs, size = roll_legs(picked, chain, expiry, self.roll_shift_spin.value())
        except RollError as exc:
            self.report_error(str(exc))
            return
        self.links.legs_replaced.emit({"legs": legs, "quantity": size})


def _underlying(p: Position) -> str:
    inst = p.instrument
    return inst.underlying if isinstance(inst, Option) else inst.key


def _dte(p: Position, now: datetime) -> float:
    inst = p.instrument
    if not isinstance(inst, Option):
        return math.nan
    return float((inst.expiry - now.astimezone(NEW_YORK).date()).days)


def _group_theta_exp(decay: np.ndarray, hours: np.ndarray, ix: np.ndarray) -> tuple[float, float]:
    """A group's decay to its nearest expiry (summed over its members with less than a day left)."""
    d, h = decay[ix], hours[ix]
    ok = np.isfinite(d)
    return (float(d[ok].sum()), float(h[ok].min())) if ok.any() else (math.nan, math.nan)


def _theta_exp_text(decay: float, hours: float) -> str:
    """"+$1,040 (+$160/h)": the decay to expiry and per hour left; blank with a day or more to go."""
    if not (math.isfinite(decay) and math.isfinite(hours) and hours > 0):
        return ""
    return f"{money(decay, 0, signed=True)} ({money(decay / hours, 0, signed=True)}/h)"


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _nansum(a: np.ndarray) -> float:
    a = np.asarray(a, float)
    return float(np.nansum(a)) if np.isfinite(a).any() else math.nan


__all__ = ["PositionsPanel"]
