"""Payoff / risk profile of the order ticket or of selected positions.

- P&L curves at expiry (first expiry of the legs), now and at T+n days, with breakevens, from
  :func:`engine.analytics.payoff.profile` (legs valued with engine.pricing at the engine's implied vols);
  max profit / loss and breakevens come from ``engine.risk.payoff`` through it;
- probability of profit from the fitted surface's smile at the first expiry (``engine.surface``), else
  the legs' implied vols;
- a spot × vol scenario heatmap from :func:`engine.risk.scenarios.scenario_grid` at T+n days;
- analysis (:mod:`engine.analytics.analysis`): a date slider (today → the legs' last expiry; the P&L at that
  date priced off the fitted surface) and an IV slider (parallel shift in vol points), with the expiry curve
  kept for reference; probability of profit, P50 and the probability of touching each breakeven and short
  strike (computed in the engine's worker processes); "with trade": the ticket's order added to the held
  positions of its underlying as a dashed curve, nothing sent; a beta-weighted tab with the whole book's P&L
  against an SPY move, betas estimated from the stored daily closes over a window the user picks.

The source follows the last action: a change on the ticket shows the ticket, "Analyse payoff" in the
positions panel shows those positions. Money in dollars, P&L against the entry (ticket: the limit price;
positions: their average price).
"""

from __future__ import annotations

import math
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtGui, QtWidgets

from engine.analytics import analysis as an
from engine.analytics.formatting import money
from engine.analytics.payoff import PayoffLegs, legs_from_order, legs_from_positions, profile
from engine.bus.events import ChainUpdated, PositionChanged, QuotesUpdated, UnderlyingUpdated
from engine.history import HistoryBackfilled
from engine.model import Leg, Option, Position
from widgets import engine_queries as eq
from widgets.base import EventBatch, Panel, qt_alive
from widgets.base import worker_outcome as _outcome
from widgets.plots import LOSS, MUTED, PROFIT, SERIES, MoneyAxis, infinite_line, legend, new_plot
from widgets.time_format import format_market_time

if TYPE_CHECKING:
    from engine.core import Engine

SPOT_MOVES = np.round(np.linspace(-0.20, 0.20, 9), 4)
VOL_SHIFTS = np.array([-0.10, -0.05, 0.0, 0.05, 0.10])
#: date slider positions between today and the last expiry (the last one is the expiry itself)
DATE_STEPS = 200
#: IV slider range in vol points
IV_SHIFT_PTS = 30
#: benchmark moves of the beta-weighted curve
BETA_MOVES = np.round(np.linspace(-0.10, 0.10, 81), 6)
PROB_TOOLTIP = (
    "Probability of profit: P(P&L > 0 at the first expiry) under the fitted smile's risk-neutral distribution.\n"
    "P50: probability of reaching 50 % of the maximum profit at any day up to the first expiry — Monte Carlo\n"
    "over lognormal paths at the at-the-money vol (fixed seed, 4,000 paths), the legs revalued each day off\n"
    "the fitted surface.\n"
    "Touch: probability that the underlying touches the level before the first expiry — lognormal first-passage\n"
    "formula (continuous monitoring, drift r − q), vol from the smile at that level. Roughly twice the\n"
    "probability of finishing beyond it."
)


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
        # analysis state: what the engine computed for the sliders, the trade and the beta tab
        self.legs: PayoffLegs | None = None
        self.underlying = ""
        self.spot = math.nan
        self.rate = 0.0
        self.div_yield = 0.0
        self.last_days = math.nan
        self.date_curve: np.ndarray | None = None
        self.held_curve: np.ndarray | None = None
        self.with_curve: np.ndarray | None = None
        self.trade_note = ""
        self.probs: an.Probabilities | None = None
        self.prob_job: an.ProbabilityJob | None = None  # the job behind ``probs``
        self._prob_pending: an.ProbabilityJob | None = None
        self._prob_key: Any = None
        self._prob_task: Any = None
        self.beta: an.BetaCurve | None = None
        self.beta_est: an.BetaEstimate | None = None
        self._beta_key: Any = None
        self._beta_at = -math.inf
        self._stale = False  # events arrived while the panel was off screen (or a refresh was throttled)
        self.refreshes = 0  # computed refreshes (tests)

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

        self.date_slider = QtWidgets.QSlider(QtCore.Qt.Orientation.Horizontal)
        self.date_slider.setRange(0, DATE_STEPS)
        self.date_slider.setToolTip("Valuation date: today at the left, the legs' last expiry at the right; the "
                                    "legs are priced off the fitted surface at their remaining time")
        self.date_slider.valueChanged.connect(lambda _v: self.update_analysis())
        self.date_label = QtWidgets.QLabel("today")
        self.date_label.setMinimumWidth(90)
        self.iv_slider = QtWidgets.QSlider(QtCore.Qt.Orientation.Horizontal)
        self.iv_slider.setRange(-IV_SHIFT_PTS, IV_SHIFT_PTS)
        self.iv_slider.setToolTip("Parallel shift of every leg's implied vol, in vol points")
        self.iv_slider.valueChanged.connect(lambda _v: self.update_analysis())
        self.iv_label = QtWidgets.QLabel("IV +0 pts")
        self.iv_label.setMinimumWidth(70)
        self.trade_check = QtWidgets.QCheckBox("With trade")
        self.trade_check.setToolTip("Add the ticket's order to the positions held in its underlying and draw the "
                                    "result as a dashed curve. Nothing is sent.")
        self.trade_check.toggled.connect(lambda _v: self.update_analysis())
        self.trade_label = QtWidgets.QLabel("")
        self.trade_label.setStyleSheet("color: gray")

        self.stats = QtWidgets.QLabel("")
        self.stats.setTextFormat(QtCore.Qt.TextFormat.RichText)
        self.stats.setWordWrap(True)
        self.prob_label = QtWidgets.QLabel("")
        self.prob_label.setTextFormat(QtCore.Qt.TextFormat.RichText)
        self.prob_label.setWordWrap(True)
        self.prob_label.setToolTip(PROB_TOOLTIP)
        self.plot = new_plot(title="P&L by underlying price", x="Underlying price", y="P&L $",
                             axis_items={"left": MoneyAxis("left")})
        self.item = self.plot.getPlotItem()
        legend(self.item)
        self.curve_expiry = self.item.plot([], [], pen=pg.mkPen(SERIES[0], width=2.5), name="at expiry")
        self.curve_tn = self.item.plot([], [], pen=pg.mkPen(SERIES[1], width=1.8), name="T+n")
        self.curve_now = self.item.plot([], [], pen=pg.mkPen(SERIES[4], width=1.5,
                                                                 style=QtCore.Qt.PenStyle.DashLine), name="now")
        self.curve_date = self.item.plot([], [], pen=pg.mkPen(SERIES[2], width=2.2), name="at date")
        self.curve_held = self.item.plot([], [], pen=pg.mkPen(SERIES[5], width=1.5), name="held")
        self.curve_with = self.item.plot([], [], pen=pg.mkPen(SERIES[6], width=2.0,
                                                                  style=QtCore.Qt.PenStyle.DashLine), name="with trade")
        self.item.legend.setColumnCount(2)  # six curves: one column covered a quarter of the plot
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

        self.beta_plot = new_plot(title="Book P&L by SPY move (beta-weighted)", x="SPY move %", y="P&L $",
                                  axis_items={"left": MoneyAxis("left")})
        bitem = self.beta_plot.getPlotItem()
        legend(bitem)
        bitem.addItem(pg.InfiniteLine(pos=0, angle=0, pen=pg.mkPen(MUTED)))
        bitem.addItem(infinite_line(0.0, color=MUTED))
        self.beta_curve = bitem.plot([], [], pen=pg.mkPen(SERIES[0], width=2.2), name="book at date")
        self.beta_with = bitem.plot([], [], pen=pg.mkPen(SERIES[6], width=2.0, style=QtCore.Qt.PenStyle.DashLine),
                                    name="with trade")
        self.beta_window = QtWidgets.QSpinBox()
        self.beta_window.setRange(20, 504)
        self.beta_window.setValue(120)
        self.beta_window.setPrefix("β over ")
        self.beta_window.setSuffix(" sessions")
        self.beta_window.setToolTip("Betas to SPY: OLS on daily returns of the stored closes over this many sessions")
        self.beta_window.valueChanged.connect(lambda _v: self.update_beta(force=True))
        self.beta_label = QtWidgets.QLabel("")
        self.beta_label.setWordWrap(True)
        self.beta_label.setTextFormat(QtCore.Qt.TextFormat.RichText)

        top = QtWidgets.QHBoxLayout()
        top.addWidget(self.source_label, 1)
        top.addWidget(self.trade_label)
        top.addWidget(self.trade_check)
        top.addWidget(self.days_spin)
        top.addWidget(self.width_spin)
        sliders = QtWidgets.QHBoxLayout()
        sliders.addWidget(QtWidgets.QLabel("Date"))
        sliders.addWidget(self.date_slider, 3)
        sliders.addWidget(self.date_label)
        sliders.addSpacing(12)
        sliders.addWidget(QtWidgets.QLabel("IV"))
        sliders.addWidget(self.iv_slider, 2)
        sliders.addWidget(self.iv_label)
        scen = QtWidgets.QWidget()
        rl = QtWidgets.QVBoxLayout(scen)
        rl.setContentsMargins(0, 0, 0, 0)
        rl.addWidget(self.heat, 1)
        rl.addWidget(self.heat_label)
        beta_page = QtWidgets.QWidget()
        bl = QtWidgets.QVBoxLayout(beta_page)
        bl.setContentsMargins(0, 0, 0, 0)
        bl.addWidget(self.beta_window, 0, QtCore.Qt.AlignmentFlag.AlignLeft)
        bl.addWidget(self.beta_plot, 1)
        bl.addWidget(self.beta_label)
        self.tabs = QtWidgets.QTabWidget()
        self.tabs.addTab(scen, "Scenarios")
        self.tabs.addTab(beta_page, "Beta-weighted")
        self.tabs.currentChanged.connect(lambda _i: self.update_beta(force=True))
        split = QtWidgets.QSplitter(QtCore.Qt.Orientation.Horizontal)
        split.addWidget(self.plot)
        split.addWidget(self.tabs)
        split.setSizes([620, 420])
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addLayout(top)
        lay.addLayout(sliders)
        lay.addWidget(self.stats)
        lay.addWidget(self.prob_label)
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
        """Quotes and positions refresh the curves, at most once a second and only while the panel is on
        screen: a refresh is ~20 ms of pricing and plotting, too much to spend on a tab nobody sees. A hidden
        panel remembers it is stale and catches up at the first batch after it comes forward."""
        if batch.has(HistoryBackfilled):  # new daily closes: estimate the betas again
            self._beta_key = None
        changed = (batch.has(QuotesUpdated) or batch.has(UnderlyingUpdated) or batch.has(ChainUpdated)
                   or batch.has(PositionChanged) or batch.has(HistoryBackfilled))
        self._stale = self._stale or changed
        if not self._stale or self.visibleRegion().isEmpty():
            return
        if self.source:
            self._stale = not self.recompute(force=batch.has(PositionChanged))  # throttled: still stale
        else:
            self._stale = False
            if self._beta_visible():
                self.update_beta(force=batch.has(PositionChanged))

    # ---- computation -------------------------------------------------------------------------------
    def _market(self) -> Any:
        return self.engine.market if self.engine is not None else None

    def _now(self) -> Any:
        risk = self.engine.risk if self.engine is not None else None
        return risk.now() if risk is not None else eq.now(self.engine)

    def recompute(self, force: bool = False) -> bool:
        """Recompute and redraw; False when throttled (``min_interval_s``) and nothing was done."""
        t0 = time.monotonic()
        if not force and t0 - self._last < self.min_interval_s:
            return False
        self._last = t0
        self.refreshes += 1
        market = self._market()
        if market is None:
            self._clear("The risk engine's market view is not running")
            return True
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
                return True
            spot = market.spot(und)
            r = float(market.rate)
            q = float(market.dividend_yield(und))
            days = float(self.days_spin.value())
            smile = self._smile(und, pl.first_expiry_years)
            self.prof = profile(pl, spot, r, q, days=(0.0, days), width=self.width_spin.value() / 100.0,
                                stress=eq.stress_move(self.engine), vol_at=smile)
            self.legs, self.underlying, self.spot, self.rate, self.div_yield = pl, und, spot, r, q
            self.last_days = an.last_expiry_days(pl)
            self._request_probabilities(smile)
            from engine.risk.scenarios import book_from_legs, scenario_grid

            book = book_from_legs(insts, units, market, now)
            exp_days = self.prof.expiry_days
            grid_days = min(days, exp_days) if math.isfinite(exp_days) else days
            self.grid = scenario_grid(book, spot_moves=SPOT_MOVES, vol_shifts=VOL_SHIFTS, days=(grid_days,),
                                      scope=title)
        except ValueError as exc:
            self._clear(str(exc))
            return True
        self.error = ""
        self.source_label.setText(title)
        self._draw(spot)
        self.update_analysis()
        return True

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

    # ---- analysis: date / IV sliders, hypothetical trade, probabilities, beta weighting ------------------
    def analysis_days(self) -> float:
        """The date slider's valuation date in calendar days from now (its right end is the last expiry)."""
        if not math.isfinite(self.last_days) or self.last_days <= 0:
            return 0.0
        v = self.date_slider.value()
        return self.last_days if v >= DATE_STEPS else self.last_days * v / DATE_STEPS

    def vol_shift(self) -> float:
        return self.iv_slider.value() / 100.0

    def update_analysis(self) -> None:
        """Recompute the slider's curve and the with-trade curves (cheap: one grid × legs valuation each)."""
        days, shift = self.analysis_days(), self.vol_shift()
        when = eq.now(self.engine) + timedelta(days=days)
        self.date_label.setText(f"T+{days:.1f} d")
        self.date_label.setToolTip(format_market_time(when))
        self.iv_label.setText(f"IV {self.iv_slider.value():+d} pts")
        self.date_curve = self.held_curve = self.with_curve = None
        self.trade_note = ""
        legs, prof = self.legs, self.prof
        if legs is not None and prof is not None:
            vol = eq.surface_vol(self.engine, self.underlying)
            try:
                self.date_curve = an.pnl_at_date(legs, prof.spots, days, self.rate, self.div_yield, vol_shift=shift,
                                                 surface_vol=vol)
                self._trade_curves(prof.spots, days, shift, vol)
            except ValueError as exc:
                self.trade_note = str(exc)
        self._draw_analysis()
        self.update_beta(force=True)

    def _held_legs(self, underlying: str) -> tuple[PayoffLegs | None, int]:
        """The positions the trade is added to: the ones being analysed, else every one held in the underlying."""
        if self.source == "positions":
            held = list(self.positions)
        else:
            held = [p for p in eq.positions(self.engine).values() if _underlying(p.instrument) == underlying]
        if not held:
            return None, 0
        market, now = self._market(), self._now()
        return legs_from_positions(held, self._ivs(market, [p.instrument for p in held], now), now), len(held)

    def _ticket_legs(self) -> PayoffLegs | None:
        if not self.ticket or not self.ticket.get("legs") or self._market() is None:
            return None
        market, now = self._market(), self._now()
        legs: tuple[Leg, ...] = tuple(self.ticket["legs"])
        insts = [leg.instrument for leg in legs]
        if _underlying(insts[0]) != self.underlying:
            raise ValueError(f"the ticket trades {_underlying(insts[0])}, not {self.underlying}: no trade to add")
        mids = np.array([market.mid(i) for i in insts], dtype=float)
        net = self.ticket.get("net_price")
        if not np.all(np.isfinite(mids)) and net is None:
            raise ValueError("a ticket leg has no two-sided quote: no trade to add")
        return legs_from_order(legs, int(self.ticket.get("quantity", 1)), np.where(np.isfinite(mids), mids, 0.0),
                               self._ivs(market, insts, now), now, net_price=float(net) if net is not None else None)

    def _trade_curves(self, spots: np.ndarray, days: float, shift: float, vol: Any) -> None:
        """Held positions and held + the ticket's order at the slider's date: computed, drawn, never sent."""
        if not self.trade_check.isChecked():
            return
        trade = self._ticket_legs()
        if trade is None:
            self.trade_note = "no order on the ticket to add"
            return
        held, n = self._held_legs(self.underlying)
        self.held_curve, self.with_curve = an.with_trade(
            held, trade, spots, days, self.rate, self.div_yield, vol_shift=shift, surface_vol=vol,
            trade_curve=self.date_curve if self.source == "ticket" else None)
        self.trade_note = (f"no positions in {self.underlying}: the trade alone" if held is None else
                           f"{n} held position{'s' if n != 1 else ''} in {self.underlying} + the ticket's order")

    def _draw_analysis(self) -> None:
        s = self.prof.spots if self.prof is not None else np.array([])
        for curve, data in ((self.curve_date, self.date_curve), (self.curve_held, self.held_curve),
                            (self.curve_with, self.with_curve)):
            if data is None:
                curve.setData([], [])
            else:
                curve.setData(s, data)
        self.item.legend.items[3][1].setText(f"T+{self.analysis_days():.1f}d, IV {self.iv_slider.value():+d} pts")
        self.trade_label.setText(self.trade_note)
        self._draw_probabilities()

    # probabilities: built on the loop (cheap), run in the engine's worker processes (the P50 Monte Carlo)
    def _request_probabilities(self, smile: Any) -> None:
        legs, prof = self.legs, self.prof
        if legs is None or prof is None:
            return
        shape = (legs.kind.tobytes(), legs.strike.tobytes(), legs.expiry_years.tobytes(), legs.units.tobytes(),
                 round(legs.cost, 2))
        pop = prof.probability_of_profit
        # NaN-free, or an unchanged order with no vol (NaN != NaN) would start a Monte Carlo every refresh
        key = (shape, round(self.spot, 2), prof.summary.max_profit, round(pop, 4) if math.isfinite(pop) else None)
        if key == self._prob_key:
            return
        if self._prob_key is None or self._prob_key[0] != shape:
            self.probs = None  # other legs: never show the previous order's figures, say "computing…"
        try:
            job = an.probability_job(legs, prof.spots, self.spot, self.rate, self.div_yield,
                                     max_profit=prof.summary.max_profit, breakevens=prof.summary.breakevens,
                                     probability_of_profit=prof.probability_of_profit, vol_at=smile,
                                     surface_vol=eq.surface_vol(self.engine, self.underlying))
        except ValueError as exc:
            self.prob_label.setText(f"Probabilities: {exc}")
            return
        self._prob_key = key
        self._prob_pending = job
        if self._prob_task is None or self._prob_task.done():
            self._submit_probabilities()

    def _submit_probabilities(self) -> None:
        """Send the newest wanted job (one at a time: quotes move faster than a Monte Carlo finishes)."""
        job, key = self._prob_pending, self._prob_key
        self._prob_pending = None
        if job is None:
            return
        fut = _offload(self.engine, an.run_probabilities, job)
        if fut is None:
            return
        self._prob_task = fut

        def done(f: Any, key: Any = key, job: an.ProbabilityJob = job) -> None:
            value, error = _outcome(f)
            if not qt_alive(self):
                return
            if key == self._prob_key:
                if value is not None:
                    self.probs, self.prob_job = value, job
                    self._draw_probabilities()
                elif error:
                    self.prob_label.setText(f"Probabilities failed: {error}")
                    self._prob_key = None
            self._submit_probabilities()

        fut.add_done_callback(done)

    def _draw_probabilities(self) -> None:
        p = self.probs
        if p is None or self.prof is None:
            self.prob_label.setText("Probabilities: computing…" if self.prof is not None else "")
            return

        def pct(x: float) -> str:
            return f"{100 * x:.0f}%" if math.isfinite(x) else "—"

        p50 = (f"P50 <b>{pct(p.p50)}</b> (reach {money(p.p50_target, 0)})" if math.isfinite(p.p50)
               else f"P50 — ({p.note})" if p.note else "P50 —")
        touch = " · ".join(f"{w} {x:,.2f}: {pct(v)}" for w, x, v in p.touch) or "no breakeven or short strike"
        self.prob_label.setText(f"PoP <b>{pct(p.profit)}</b> · {p50} · touch before expiry: {touch}")

    def _beta_visible(self) -> bool:
        return self.tabs.currentIndex() == 1 and self.isVisible()

    def update_beta(self, force: bool = False) -> None:
        """The whole book against an SPY move at the slider's date and vol shift (only while its tab shows)."""
        if self.tabs.currentIndex() != 1:
            return
        t0 = time.monotonic()
        if not force and t0 - self._beta_at < self.min_interval_s:
            return
        self._beta_at = t0
        market = self._market()
        positions = list(eq.positions(self.engine).values())
        if market is None or not positions:
            self.beta = None
            self.beta_curve.setData([], [])
            self.beta_with.setData([], [])
            self.beta_label.setText("No positions to weight" if market is not None else "The market view is not running")
            return
        now = self._now()
        unds = sorted({_underlying(p.instrument) for p in positions})
        est_key = (tuple(unds), self.beta_window.value(), eq.now(self.engine).date())
        if est_key != self._beta_key or self.beta_est is None:
            self.beta_est = eq.beta_estimate(self.engine, unds, self.beta_window.value())
            self._beta_key = est_key
        est = self.beta_est
        if est is None:
            self.beta_label.setText("No store: no betas")
            return
        try:
            legs = legs_from_positions(positions, self._ivs(market, [p.instrument for p in positions], now), now)
            names = [_underlying(p.instrument) for p in positions]
            spots = {u: market.spot(u) for u in unds}
            qs = {u: float(market.dividend_yield(u)) for u in unds}
            bench = market.spot(est.benchmark)
            kw = dict(moves=BETA_MOVES, days_forward=self.analysis_days(), vol_shift=self.vol_shift())
            self.beta = an.beta_weighted_curve(legs, names, spots, est.betas, float(market.rate), qs, bench, **kw)
            with_trade = None
            if self.trade_check.isChecked() and self.legs is not None and self.source == "ticket":
                trade = self._ticket_legs()
                if trade is not None:
                    with_trade = an.beta_weighted_curve(an.combine(legs, trade),
                                                        [*names, *([self.underlying] * len(trade))],
                                                        spots | {self.underlying: self.spot},
                                                        est.betas, float(market.rate),
                                                        qs | {self.underlying: self.div_yield}, bench, **kw)
        except (ValueError, KeyError) as exc:
            self.beta = None
            self.beta_curve.setData([], [])
            self.beta_with.setData([], [])
            self.beta_label.setText(f"Beta weighting: {exc}")
            return
        x = 100 * self.beta.moves
        self.beta_curve.setData(x, self.beta.pnl)
        if with_trade is not None:
            self.beta_with.setData(x, with_trade.pnl)
        else:
            self.beta_with.setData([], [])
        betas = ", ".join(f"{u} {est.betas[u]:.2f}" for u in unds if u in est.betas)
        assumed = (f" · no history for {', '.join(est.missing)}: the risk engine's beta used" if est.missing else "")
        self.beta_label.setText(
            f"Beta-weighted Δ <b>{self.beta.beta_delta:+,.1f}</b> {est.benchmark} shares "
            f"({money(self.beta.beta_delta * self.beta.benchmark_spot / 100, 0, signed=True)} per 1% of "
            f"{est.benchmark}) · β to {est.benchmark} over {est.days} daily returns: {betas}{assumed} · "
            f"at T+{self.analysis_days():.1f}d, IV {self.iv_slider.value():+d} pts, P&L from now")

    # ---- drawing ------------------------------------------------------------------------------------
    def _clear(self, message: str) -> None:
        self.error = message
        self.prof = None
        self.grid = None
        self.legs = None
        self.probs = None
        self._prob_key = None
        self._prob_pending = None
        self.date_curve = self.held_curve = self.with_curve = None
        self.source_label.setText(message)
        for c in (self.curve_expiry, self.curve_tn, self.curve_now, self.fill_profit, self.fill_loss,
                  self.curve_date, self.curve_held, self.curve_with):
            c.setData([], [])
        for line in self.be_lines:
            line.hide()
        self.stats.setText("")
        self.prob_label.setText("")
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
        # breakeven lines are reused from refresh to refresh (creating, adding and removing two labelled
        # InfiniteLines cost ~5 ms of each once-a-second refresh)
        bes = prof.summary.breakevens
        while len(self.be_lines) < len(bes):
            # labelled near the bottom (at the top the two-column legend covered the left one), at alternating
            # heights: a 0DTE condor's breakevens sit a few pixels apart
            line = infinite_line(0.0, color=MUTED, label=" ", label_pos=0.14 + 0.1 * (len(self.be_lines) % 2))
            self.item.addItem(line)
            self.be_lines.append(line)
        for line, be in zip(self.be_lines, bes, strict=False):
            line.setPos(be)
            line.label.setFormat(f"{be:,.2f}")
            line.show()
        for line in self.be_lines[len(bes):]:
            line.hide()
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


def _offload(engine: Engine | None, fn: Any, *args: Any) -> Any:
    """``fn(*args)`` in the engine's worker processes (a thread without a running engine); None when stopping."""
    import asyncio
    import functools

    try:
        loop = asyncio.get_event_loop_policy().get_event_loop()
    except RuntimeError:
        return None
    if engine is not None:
        if not engine.running:
            return None
        return asyncio.ensure_future(engine.run_cpu(fn, *args), loop=loop)
    return loop.run_in_executor(None, functools.partial(fn, *args))


def _short_money(v: float) -> str:
    if not math.isfinite(v):
        return "—"
    if abs(v) >= 10_000:
        return f"{v / 1000:+,.0f}k"
    if abs(v) >= 1000:
        return f"{v / 1000:+,.1f}k"
    return f"{v:+,.0f}"
