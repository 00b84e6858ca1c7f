"""Positions panel: holdings grouped by underlying and strategy, with P&L, Greeks and DTE.

Source: the risk engine's portfolio (``engine.risk.portfolio.positions``, kept current from
``PositionChanged``), falling back on the ``PositionChanged`` events themselves. Marks, IVs and Greeks come
from :func:`engine.risk.greeks.leg_risk` over the risk engine's market view (position totals: delta in
shares, vega $ per vol point, theta $ per day). Group rows (bold) carry the subtotals.

Actions: *Analyse* sends the selected rows (or a whole group) to the payoff panel; *Close* puts the
closing legs on the order ticket (it does not send anything).
"""

from __future__ import annotations

import math
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from PySide6 import QtCore, QtGui, QtWidgets

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
        Column("delta", "Δ sh", "{:+,.1f}", width=62, tooltip="Delta in shares"),
        Column("gamma", "Γ", "{:+,.2f}", width=56, tooltip="Gamma in shares per $1"),
        Column("theta", "Θ $/d", "{:+,.0f}", width=60, signed=True, tooltip="Theta in $ per calendar day"),
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

        actions = QtWidgets.QHBoxLayout()
        actions.addWidget(self.summary, 1)
        actions.addWidget(self.analyse_button)
        actions.addWidget(self.close_button)
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addLayout(actions)
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
        qty = np.array([p.quantity for p in positions], dtype=float)
        mult = np.array([p.multiplier for p in positions], dtype=float)
        avg = np.array([float(p.avg_price) for p in positions], dtype=float)
        pnl = qty * (cols["mark"] - avg) * mult
        basis = np.abs(qty * avg * mult)
        with np.errstate(invalid="ignore", divide="ignore"):
            pnl_pct = np.where(basis > 0, pnl / basis, np.nan)
        dte = np.array([_dte(p, now) for p in positions], dtype=float)

        keys: list[str] = []
        data: dict[str, list[Any]] = {k: [] for k in ("name", "qty", "avg", "mark", "pnl", "pnl_pct", *GREEKS, "iv",
                                                      "dte", "is_group")}
        self.rows = {}
        groups: dict[tuple[str, str], list[int]] = {}
        for i, p in enumerate(positions):
            groups.setdefault((_underlying(p), p.strategy_id or ""), []).append(i)
        for (und, strat), idx in groups.items():
            gkey = f"group:{und}:{strat}"
            ix = np.array(idx)
            keys.append(gkey)
            self.rows[gkey] = tuple(positions[i] for i in idx)
            spot = eq.last_price(self.engine, und)
            label = f"{und}" + (f" · {strat}" if strat else "") + (f"   {spot:,.2f}" if spot else "")
            g_pnl = _nansum(pnl[ix])
            g_basis = float(basis[ix].sum())
            for k, v in (("name", label), ("qty", None), ("avg", math.nan), ("mark", math.nan), ("pnl", g_pnl),
                         ("pnl_pct", g_pnl / g_basis if g_basis > 0 else math.nan), ("iv", math.nan),
                         ("dte", float(np.nanmin(dte[ix])) if np.isfinite(dte[ix]).any() else math.nan),
                         ("is_group", True)):
                data[k].append(v)
            for k in GREEKS:
                data[k].append(_nansum(cols[k][ix]))
            for i in idx:
                p = positions[i]
                keys.append(p.symbol)
                self.rows[p.symbol] = (p,)
                data["name"].append("    " + describe_leg(Leg(p.instrument, Side.BUY)))
                data["qty"].append(int(p.quantity))
                for k, arr in (("avg", avg), ("mark", cols["mark"]), ("pnl", pnl), ("pnl_pct", pnl_pct),
                               ("iv", cols["iv"]), ("dte", dte), *((g, cols[g]) for g in GREEKS)):
                    data[k].append(float(arr[i]))
                data["is_group"].append(False)
        arrays: dict[str, np.ndarray] = {}
        for k, v in data.items():
            arrays[k] = np.array(v, dtype=object if k in ("name", "qty", "is_group") else float)
        self.model.update(np.array(keys, dtype=object), arrays)
        self.totals = {"pnl": _nansum(pnl), **{k: _nansum(cols[k]) for k in GREEKS}}
        if n:
            t = self.totals
            self.summary.setText(
                f"{n} position{'s' if n != 1 else ''} in {_count(len({_underlying(p) for p in positions}), 'underlying')} · "
                f"P&L {t['pnl']:+,.0f} · Δ {t['delta']:+,.0f} sh · Θ {t['theta']:+,.0f}/day · vega {t['vega']:+,.0f}"
            )
        else:
            self.summary.setText("No positions")
        self.missing_label.setText(f"No quote or IV for: {', '.join(missing)}" if missing else "")
        self.missing_label.setVisible(bool(missing))

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


def _underlying(p: Position) -> str:
    inst = p.instrument
    return inst.underlying if isinstance(inst, Option) else inst.key


def _dte(p: Position, now: datetime) -> float:
    inst = p.instrument
    if not isinstance(inst, Option):
        return math.nan
    return float((inst.expiry - now.astimezone(NEW_YORK).date()).days)


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _nansum(a: np.ndarray) -> float:
    a = np.asarray(a, float)
    return float(np.nansum(a)) if np.isfinite(a).any() else math.nan


__all__ = ["PositionsPanel"]
