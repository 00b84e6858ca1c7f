"""Payoff / risk profile of the order ticket or of selected positions.

- P&L curves at expiry (first expiry of the legs), now and at T+n days, with breakevens, from
  :func:`engine.analytics.payoff.profile` (legs valued with engine.pricing at the engine's implied vols);
  max profit / loss and breakevens come from ``engine.risk.payoff`` through it;
- probability of profit from the fitted surface's smile at the first expiry (``engine.surface``), else
  the legs' implied vols;
- a spot × vol scenario heatmap from :func:`engine.risk.scenarios.scenario_grid` at T+n days.

The source follows the last action: a change on the ticket shows the ticket, "Analyse payoff" in the
positions panel shows those positions. Money in dollars, P&L against the entry (ticket: the limit price;
positions: their average price).
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtGui, QtWidgets

from engine.analytics.formatting import money
from engine.analytics.payoff import legs_from_order, legs_from_positions, profile
from engine.bus.events import ChainUpdated, QuotesUpdated, UnderlyingUpdated
from engine.model import Leg, Option, Position
from widgets import engine_queries as eq
from widgets.base import EventBatch, Panel
from widgets.plots import LOSS, MUTED, PROFIT, SERIES, MoneyAxis, infinite_line, legend, new_plot

if TYPE_CHECKING:
    from engine.core import Engine

SPOT_MOVES = np.round(np.linspace(-0.20, 0.20, 9), 4)
VOL_SHIFTS = np.array([-0.10, -0.05, 0.0, 0.05, 0.10])


def _ticket_key(ticket: dict[str, Any]) -> tuple[Any, ...]:
    legs = tuple((leg.symbol, str(leg.side), leg.ratio) for leg in ticket.get("legs", ()))
    return legs, ticket.get("quantity")  # not the limit: an untouched limit follows the mid on each refresh


def _underlying(inst: Any) -> str:
    return inst.underlying if isinstance(inst, Option) else inst.key


class PayoffPanel(Panel):
    title: ClassVar[str] = "Payoff & risk"
    panel_id: ClassVar[str] = "payoff"

    def __init__(self, engine: Engine | None, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(engine, parent)
        self.source = ""  # "ticket" | "positions"
        self.ticket: dict[str, Any] | None = None
        self.positions: tuple[Position, ...] = ()
        self.prof: Any = None
        self.grid: Any = None
        self.error = ""
        self.min_interval_s = 1.0
        self._last = -math.inf

        self.source_label = QtWidgets.QLabel("Nothing to show: build an order on the ticket, or pick positions")
        self.source_label.setStyleSheet("font-weight: bold")
        self.days_spin = QtWidgets.QSpinBox()
        self.days_spin.setRange(1, 365)
        self.days_spin.setValue(7)
        self.days_spin.setPrefix("T + ")
        self.days_spin.setSuffix(" days")
        self.days_spin.setToolTip("Second curve and the scenario grid: this many calendar days from now")
        self.days_spin.valueChanged.connect(lambda _v: self.recompute(force=True))
        self.width_spin = QtWidgets.QSpinBox()
        self.width_spin.setRange(5, 80)
        self.width_spin.setValue(20)
        self.width_spin.setPrefix("spot ± ")
        self.width_spin.setSuffix(" %")
        self.width_spin.valueChanged.connect(lambda _v: self.recompute(force=True))

        self.stats = QtWidgets.QLabel("")
        self.stats.setTextFormat(QtCore.Qt.TextFormat.RichText)
        self.plot = new_plot(title="P&L by underlying price", x="Underlying price", y="P&L $",
                             axis_items={"left": MoneyAxis("left")})
        self.item = self.plot.getPlotItem()
        legend(self.item)
        self.curve_expiry = self.item.plot([], [], pen=pg.mkPen(SERIES[0], width=2.5), name="at expiry")
        self.curve_tn = self.item.plot([], [], pen=pg.mkPen(SERIES[1], width=1.8), name="T+n")
        self.curve_now = self.item.plot([], [], pen=pg.mkPen(SERIES[4], width=1.5,
                                                                 style=QtCore.Qt.PenStyle.DashLine), name="now")
        self.fill_profit = self.item.plot([], [], pen=None, fillLevel=0, brush=pg.mkBrush(38, 166, 91, 45))
        self.fill_loss = self.item.plot([], [], pen=None, fillLevel=0, brush=pg.mkBrush(214, 69, 65, 45))
        self.item.addItem(pg.InfiniteLine(pos=0, angle=0, pen=pg.mkPen(MUTED)))
        self.spot_line = infinite_line(0.0, color=SERIES[1], dash=False, label="spot", label_pos=0.05)
        self.item.addItem(self.spot_line)
        self.spot_line.hide()
        self.be_lines: list[pg.InfiniteLine] = []

        self.heat = new_plot(title="Scenario P&L: spot move × vol shift", x="Spot move %", y="Vol shift, pts")
        # a fixed left axis wide enough for "-10" and its label: the label no longer overlaps the ticks
        self.heat.getPlotItem().getAxis("left").setWidth(48)
        self.heat.setMouseEnabled(x=False, y=False)
        self.heat_image = pg.ImageItem(axisOrder="row-major")
        self.heat.getPlotItem().addItem(self.heat_image)
        self.cmap = pg.ColorMap([0.0, 0.5, 1.0], [(214, 69, 65), (60, 60, 60), (38, 166, 91)])
        self.heat_image.setColorMap(self.cmap)
        self.heat_texts: list[pg.TextItem] = []
        self._heat_font_pt = 0.0
        self.heat_label = QtWidgets.QLabel("")
        self.heat_label.setStyleSheet("color: gray")

        top = QtWidgets.QHBoxLayout()
        top.addWidget(self.source_label, 1)
        top.addWidget(self.days_spin)
        top.addWidget(self.width_spin)
        right = QtWidgets.QWidget()
        rl = QtWidgets.QVBoxLayout(right)
        rl.setContentsMargins(0, 0, 0, 0)
        rl.addWidget(self.heat, 1)
        rl.addWidget(self.heat_label)
        split = QtWidgets.QSplitter(QtCore.Qt.Orientation.Horizontal)
        split.addWidget(self.plot)
        split.addWidget(right)
        split.setSizes([620, 420])
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addLayout(top)
        lay.addWidget(self.stats)
        lay.addWidget(split, 1)

        self.links.ticket_changed.connect(self.show_ticket)
        self.links.positions_selected.connect(self.show_positions)

    # ---- sources ----------------------------------------------------------------------------------
    def show_ticket(self, ticket: dict[str, Any]) -> None:
        """The ticket changed. The ticket re-emits itself on every quote refresh; only a real edit (other
        legs, quantity or limit) takes the panel back from positions the user chose to analyse."""
        if not ticket.get("legs"):
            if self.source == "ticket":
                self._clear("The ticket is empty")
            self.ticket = None
            return
        edited = self.ticket is None or _ticket_key(ticket) != _ticket_key(self.ticket)
        self.ticket = ticket
        if self.source == "positions" and not edited:
            return
        self.source = "ticket"
        self.recompute(force=True)

    def show_positions(self, positions: tuple[Position, ...]) -> None:
        """"Analyse payoff" in the positions panel: show them and bring this panel's tab to the front."""
        self.source, self.positions = "positions", tuple(positions)
        self.recompute(force=True)
        dock = self.parentWidget()
        while dock is not None and not isinstance(dock, QtWidgets.QDockWidget):
            dock = dock.parentWidget()
        if dock is not None:
            dock.show()
            dock.raise_()

    def apply_events(self, batch: EventBatch) -> None:
        if not self.source:
            return
        if batch.has(QuotesUpdated) or batch.has(UnderlyingUpdated) or batch.has(ChainUpdated):
            self.recompute()

    # ---- computation -------------------------------------------------------------------------------
    def _market(self) -> Any:
        return self.engine.market if self.engine is not None else None

    def _now(self) -> Any:
        risk = self.engine.risk if self.engine is not None else None
        return risk.now() if risk is not None else eq.now(self.engine)

    def recompute(self, force: bool = False) -> None:
        t0 = time.monotonic()
        if not force and t0 - self._last < self.min_interval_s:
            return
        self._last = t0
        market = self._market()
        if market is None:
            self._clear("The risk engine's market view is not running")
            return
        now = self._now()
        try:
            if self.source == "ticket" and self.ticket:
                legs: tuple[Leg, ...] = tuple(self.ticket["legs"])
                qty = int(self.ticket.get("quantity", 1))
                insts = [leg.instrument for leg in legs]
                mids = np.array([market.mid(i) for i in insts], dtype=float)
                ivs = self._ivs(market, insts, now)
                net = self.ticket.get("net_price")
                pl = legs_from_order(legs, qty, np.where(np.isfinite(mids), mids, 0.0), ivs, now,
                                     net_price=float(net) if net is not None else None)
                if not np.all(np.isfinite(mids)) and net is None:
                    raise ValueError("a leg has no two-sided quote: no entry price")
                units = [leg.signed_ratio * qty for leg in legs]
                und = _underlying(insts[0])
                title = f"Ticket: {qty}× {len(legs)}-leg {und}"
            elif self.source == "positions" and self.positions:
                insts = [p.instrument for p in self.positions]
                unds = {_underlying(i) for i in insts}
                if len(unds) > 1:
                    raise ValueError(f"payoff needs positions of one underlying (selected: {', '.join(sorted(unds))})")
                ivs = self._ivs(market, insts, now)
                pl = legs_from_positions(self.positions, ivs, now)
                units = [p.quantity for p in self.positions]
                und = next(iter(unds))
                title = f"Positions: {len(self.positions)} in {und}"
            else:
                return
            spot = market.spot(und)
            r = float(market.rate)
            q = float(market.dividend_yield(und))
            days = float(self.days_spin.value())
            self.prof = profile(pl, spot, r, q, days=(0.0, days), width=self.width_spin.value() / 100.0,
                                stress=eq.stress_move(self.engine),
                                vol_at=self._smile(und, pl.first_expiry_years))
            from engine.risk.scenarios import book_from_legs, scenario_grid

            book = book_from_legs(insts, units, market, now)
            exp_days = self.prof.expiry_days
            grid_days = min(days, exp_days) if math.isfinite(exp_days) else days
            self.grid = scenario_grid(book, spot_moves=SPOT_MOVES, vol_shifts=VOL_SHIFTS, days=(grid_days,),
                                      scope=title)
        except ValueError as exc:
            self._clear(str(exc))
            return
        self.error = ""
        self.source_label.setText(title)
        self._draw(spot)

    def _ivs(self, market: Any, insts: list[Any], now: Any) -> np.ndarray:
        opts = [i for i in insts if isinstance(i, Option)]
        out = np.full(len(insts), np.nan)
        if opts:
            vols = market.ivs(opts, now)
            j = 0
            for k, inst in enumerate(insts):
                if isinstance(inst, Option):
                    out[k] = vols[j]
                    j += 1
        return out

    def _smile(self, underlying: str, T: float) -> Any:
        return eq.smile_vol_at(self.engine, underlying, T)

    # ---- drawing ------------------------------------------------------------------------------------
    def _clear(self, message: str) -> None:
        self.error = message
        self.prof = None
        self.grid = None
        self.source_label.setText(message)
        for c in (self.curve_expiry, self.curve_tn, self.curve_now, self.fill_profit, self.fill_loss):
            c.setData([], [])
        self.stats.setText("")
        self.heat_image.clear()
        for t in self.heat_texts:
            self.heat.getPlotItem().removeItem(t)
        self.heat_texts = []

    def _draw(self, spot: float) -> None:
        prof = self.prof
        s = prof.spots
        exp = prof.curves["Expiry"]
        self.curve_expiry.setData(s, exp)
        self.fill_profit.setData(s, np.where(exp > 0, exp, 0.0))
        self.fill_loss.setData(s, np.where(exp < 0, exp, 0.0))
        tn_label = f"T+{self.days_spin.value():g}d"
        if tn_label in prof.curves:
            self.curve_tn.setData(s, prof.curves[tn_label])
            self.item.legend.items[1][1].setText(tn_label)
        else:
            self.curve_tn.setData([], [])
            self.item.legend.items[1][1].setText(f"{tn_label}: after expiry")
        self.curve_now.setData(s, prof.curves.get("Now", np.array([])) if "Now" in prof.curves else [])
        for line in self.be_lines:
            self.item.removeItem(line)
        self.be_lines = []
        for be in prof.summary.breakevens:
            line = infinite_line(be, color=MUTED, label=f"{be:,.2f}")
            self.item.addItem(line)
            self.be_lines.append(line)
        if math.isfinite(spot):
            self.spot_line.setPos(spot)
            self.spot_line.show()
        sm = prof.summary

        def fmt(v: float) -> str:
            return money(v, 0)

        cost = prof.cost
        premium = f"{'debit' if cost > 0 else 'credit'} {money(abs(cost), 0)}"
        pop = f"{100 * prof.probability_of_profit:.0f}%" if math.isfinite(prof.probability_of_profit) else "—"
        be = ", ".join(f"{b:,.2f}" for b in sm.breakevens) or "none"
        risk = prof.max_loss_text()
        self.stats.setText(
            f"Net {premium} · max profit <span style='color:{PROFIT}'>{fmt(sm.max_profit)}</span> · "
            f"max loss <span style='color:{LOSS}'>{risk}</span> · breakevens {be} · "
            f"probability of profit <b>{pop}</b> · first expiry in {prof.expiry_days:.0f} d"
        )
        self._draw_grid()

    def _draw_grid(self) -> None:
        g = self.grid
        plot = self.heat.getPlotItem()
        pnl = np.asarray(g.pnl[0], float)  # (vol shifts, spot moves)
        lim = float(np.nanmax(np.abs(pnl))) if np.isfinite(pnl).any() else 1.0
        lim = lim if lim > 0 else 1.0
        self.heat_image.setImage(pnl, autoLevels=False, levels=(-lim, lim))
        nx, ny = len(g.spot_moves), len(g.vol_shifts)
        x0, x1 = 100 * g.spot_moves[0], 100 * g.spot_moves[-1]
        y0, y1 = 100 * g.vol_shifts[0], 100 * g.vol_shifts[-1]
        dx = (x1 - x0) / max(nx - 1, 1)
        dy = (y1 - y0) / max(ny - 1, 1)
        self.heat_image.setRect(QtCore.QRectF(x0 - dx / 2, y0 - dy / 2, x1 - x0 + dx, y1 - y0 + dy))
        # every cell carries its value (a narrow dock labelled only 5 of 9 columns): short labels
        # ("+1.2k"), in a font that shrinks with the cell
        cell_px = self.heat.getPlotItem().getViewBox().width() / max(nx, 1)
        font = QtGui.QFont()
        base = font.pointSizeF() * 0.8
        font.setPointSizeF(max(6.0, min(base, cell_px / 6.0)) if cell_px > 0 else max(6.5, base))
        cells = [(j, i) for j in range(ny) for i in range(nx)]
        # the cell labels are reused from redraw to redraw (creating and adding a TextItem costs ~1.5 ms;
        # a 5×5 grid redrawn with each ticket refresh held the loop ~70 ms)
        while len(self.heat_texts) < len(cells):
            txt = pg.TextItem("", color="w", anchor=(0.5, 0.5))
            txt.setFont(font)
            plot.addItem(txt)
            self.heat_texts.append(txt)
        if self._heat_font_pt != font.pointSizeF():
            self._heat_font_pt = font.pointSizeF()
            for txt in self.heat_texts:
                txt.setFont(font)
        for txt in self.heat_texts[len(cells):]:
            txt.hide()
        for txt, (j, i) in zip(self.heat_texts, cells, strict=False):
            text = _short_money(pnl[j, i])
            if txt.toPlainText() != text:
                txt.setText(text)
            txt.setPos(100 * g.spot_moves[i], 100 * g.vol_shifts[j])
            txt.show()
        plot.setXRange(x0 - dx / 2, x1 + dx / 2, padding=0)
        plot.setYRange(y0 - dy / 2, y1 + dy / 2, padding=0)
        worst = g.worst()
        self.heat_label.setText(f"At T+{g.days[0]:.3g}d · worst {money(worst[0], 0, signed=True)} at spot {100 * worst[1]:+.0f}% and "
                                f"vol {100 * worst[2]:+.0f} pts" + (f" · no vol for {', '.join(g.missing)}" if g.missing
                                                                     else ""))


def _short_money(v: float) -> str:
    if not math.isfinite(v):
        return "—"
    if abs(v) >= 10_000:
        return f"{v / 1000:+,.0f}k"
    if abs(v) >= 1000:
        return f"{v / 1000:+,.1f}k"
    return f"{v:+,.0f}"
