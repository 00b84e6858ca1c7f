"""Order ticket: legs from chain clicks or strategy templates, quantity, limit price, live figures, submit.

Figures come from the engine: net mid / natural and order Greeks from :mod:`engine.analytics.ticket`
(IV and Greeks per leg from :mod:`engine.analytics.chain_metrics`), max profit / loss, breakevens and the
probability of profit from :mod:`engine.analytics.payoff` (expiry summary by ``engine.risk.payoff``).
Submitting sends ``SubmitOrder`` into the one order path; the risk engine, approval gate and router decide.
Price convention: positive = debit (we pay), negative = credit (we receive).
"""

from __future__ import annotations

import math
import time
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from PySide6 import QtCore, QtGui, QtWidgets

from engine.analytics.chain_metrics import chain_metrics
from engine.analytics.formatting import money, plural
from engine.analytics.payoff import legs_from_order, profile, theta_text
from engine.analytics.templates import DEFAULT_SHORT_DELTA, Template, TemplateError, build_template
from engine.analytics.ticket import TicketPrices, leg_rows, net_prices, order_greeks, to_limit_price
from engine.bus.commands import SubmitOrder
from engine.bus.events import OrderEvent, TradingStateChanged
from engine.model import Leg, Option, OrderIntent, OrderType, Side, TimeInForce
from widgets import engine_queries as eq
from widgets.base import EventBatch, Panel
from widgets.live_chain import LiveChain
from widgets.table_model import NEGATIVE, POSITIVE, Column, ColumnTableModel, LiveTableView

if TYPE_CHECKING:
    from engine.core import Engine

Qt = QtCore.Qt

TEMPLATE_NAMES = {
    Template.VERTICAL: "Vertical",
    Template.IRON_CONDOR: "Iron condor",
    Template.STRANGLE: "Strangle",
    Template.STRADDLE: "Straddle",
    Template.CALENDAR: "Calendar",
    Template.BUTTERFLY: "Butterfly",
}


def describe_leg(leg: Leg) -> str:
    inst = leg.instrument
    if isinstance(inst, Option):
        return f"{inst.root} {inst.expiry:%d %b %y} {inst.strike:g} {'Call' if inst.is_call else 'Put'}"
    return inst.key


def describe_legs_short(legs: tuple[Leg, ...] | list[Leg]) -> str:
    """Compact legs for tables: ``+1 20Mar26 100C  −1 20Mar26 105C`` (signed ratio, expiry, strike, right)."""
    parts = []
    for leg in legs:
        inst = leg.instrument
        sign = "+" if leg.side is Side.BUY else "−"
        if isinstance(inst, Option):
            parts.append(f"{sign}{leg.ratio} {inst.expiry:%d%b%y} {inst.strike:g}{'C' if inst.is_call else 'P'}")
        else:
            parts.append(f"{sign}{leg.ratio} {inst.key}")
    return "  ".join(parts)


def _money(v: float) -> str:
    return money(v, 0)


class TicketPanel(Panel):
    title: ClassVar[str] = "Order ticket"
    panel_id: ClassVar[str] = "ticket"

    #: emitted after a SubmitOrder was handed to the engine: (result or None, error message or "")
    submitted = QtCore.Signal(object, str)
    #: streaming quotes refresh the ticket's figures at most this often (seconds)
    STREAM_REFRESH_S: ClassVar[float] = 1.0
    _last_recompute: float = 0.0

    LEG_COLUMNS: ClassVar[list[Column]] = [
        Column("side", "Side", align="center", width=48),
        Column("ratio", "×", "{:d}", align="center", width=30),
        Column("contract", "Contract", align="left", width=190),
        Column("bid", "Bid", "{:.2f}", width=56),
        Column("ask", "Ask", "{:.2f}", width=56),
        Column("mid", "Mid", "{:.2f}", width=56),
        Column("iv", "IV", lambda v: f"{100 * v:.1f}%", width=56),
        Column("delta", "Δ", "{:+.2f}", width=52),
    ]

    def __init__(self, engine: Engine | None, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(engine, parent)
        self.legs: list[Leg] = []
        self.live = LiveChain(engine)
        self.expiry: np.datetime64 | None = None
        self.prices: TicketPrices | None = None
        self.greeks: dict[str, float] = {}
        self.summary: Any = None
        self.pop = math.nan
        self.trading_state = "ACTIVE"
        self.trading_reason = ""
        self._price_touched = False
        self._setting_price = False
        self.last_result: Any = None
        self._last_order_id = ""
        self._leg_iv = np.array([])

        # templates
        self.template_box = QtWidgets.QComboBox()
        for t, name in TEMPLATE_NAMES.items():
            self.template_box.addItem(name, t)
        self.right_box = QtWidgets.QComboBox()
        self.right_box.addItems(["Calls", "Puts"])
        self.direction_box = QtWidgets.QComboBox()
        self.direction_box.addItems(["Long (debit)", "Short (credit)"])
        self.template_box.currentIndexChanged.connect(self._template_defaults)
        self.width_spin = QtWidgets.QSpinBox()
        self.width_spin.setRange(1, 50)
        self.width_spin.setValue(1)
        self.width_spin.setPrefix("width ")
        self.width_spin.setToolTip("Strike steps from the centre (ATM) strike")
        self.wing_spin = QtWidgets.QSpinBox()
        self.wing_spin.setRange(1, 50)
        self.wing_spin.setPrefix("wing ")
        self.wing_spin.setToolTip("Wing width in strike steps")
        # an iron condor is built by delta: short strikes at N Δ, wings in dollars
        self.delta_spin = QtWidgets.QDoubleSpinBox()
        self.delta_spin.setRange(0.01, 0.49)
        self.delta_spin.setSingleStep(0.01)
        self.delta_spin.setValue(DEFAULT_SHORT_DELTA)
        self.delta_spin.setPrefix("short Δ ")
        self.delta_spin.setToolTip("Sell the put and the call nearest this delta (0.16 ≈ one standard deviation)")
        self.wing_dollars_spin = QtWidgets.QDoubleSpinBox()
        self.wing_dollars_spin.setRange(0.0, 10_000.0)
        self.wing_dollars_spin.setDecimals(0)
        self.wing_dollars_spin.setSpecialValueText("wings auto")
        self.wing_dollars_spin.setPrefix("wings $")
        self.wing_dollars_spin.setToolTip("Long wings this many dollars beyond the short strikes "
                                          "(auto: about 1 % of the underlying's price)")
        self.build_button = QtWidgets.QPushButton("Build")
        self.build_button.setToolTip("Replace the legs with this strategy on the chain's selected expiry")
        self.build_button.clicked.connect(self.build_from_template)

        # legs
        self.leg_model = _LegModel(self.LEG_COLUMNS, self)
        self.leg_table = LiveTableView(self.leg_model)
        self.leg_table.setMinimumHeight(90)
        self.leg_table.horizontalHeader().setSectionResizeMode(2, QtWidgets.QHeaderView.ResizeMode.Stretch)
        self.leg_table.doubleClicked.connect(lambda idx: self.flip_leg(idx.row()))
        self.leg_table.setToolTip("Double-click a leg to flip buy/sell")
        self.remove_button = QtWidgets.QPushButton("Remove leg")
        self.remove_button.clicked.connect(self._remove_selected)
        self.flip_button = QtWidgets.QPushButton("Flip")
        self.flip_button.clicked.connect(lambda: self.flip_leg(self._selected_row()))
        self.clear_button = QtWidgets.QPushButton("Clear")
        self.clear_button.clicked.connect(self.clear)

        # order
        self.qty_spin = QtWidgets.QSpinBox()
        self.qty_spin.setRange(1, 10_000)
        self.qty_spin.setPrefix("qty ")
        self.qty_spin.valueChanged.connect(lambda _v: self.recompute())
        self.price_spin = QtWidgets.QDoubleSpinBox()
        self.price_spin.setRange(-100_000.0, 100_000.0)
        self.price_spin.setDecimals(2)
        self.price_spin.setSingleStep(0.01)
        self.price_spin.setKeyboardTracking(False)
        self.price_spin.setToolTip("Net limit price per combo: positive = debit (you pay), negative = credit")
        self.price_spin.valueChanged.connect(self._on_price_edit)
        self.price_kind = QtWidgets.QLabel("")
        self.price_kind.setMinimumWidth(48)
        self.mid_button = QtWidgets.QPushButton("Mid")
        self.mid_button.clicked.connect(lambda: self.set_price_from("mid"))
        self.natural_button = QtWidgets.QPushButton("Natural")
        self.natural_button.setToolTip("Buy at the asks, sell at the bids: the price that fills now")
        self.natural_button.clicked.connect(lambda: self.set_price_from("natural"))
        self.tif_box = QtWidgets.QComboBox()
        self.tif_box.addItem("Day", TimeInForce.DAY)
        self.tif_box.addItem("GTC", TimeInForce.GTC)

        # figures
        self.figure_labels: dict[str, QtWidgets.QLabel] = {}
        grid = QtWidgets.QGridLayout()
        grid.setHorizontalSpacing(14)
        grid.setVerticalSpacing(2)
        names = [("mid", "Net mid"), ("natural", "Natural"), ("max_profit", "Max profit"),
                 ("max_loss", "Max loss"), ("breakevens", "Breakevens"), ("pop", "Prob. of profit"),
                 ("delta", "Δ (shares)"), ("gamma", "Γ"), ("theta", "Θ"), ("vega", "Vega $/pt")]
        for i, (key, caption) in enumerate(names):
            cap = QtWidgets.QLabel(caption)
            cap.setStyleSheet("color: gray")
            val = QtWidgets.QLabel("—")
            val.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            self.figure_labels[key] = val
            grid.addWidget(cap, (i % 5), 2 * (i // 5))
            grid.addWidget(val, (i % 5), 2 * (i // 5) + 1)

        self.state_banner = QtWidgets.QLabel("")
        self.state_banner.setWordWrap(True)
        self.state_banner.hide()
        self.message = QtWidgets.QLabel("")
        self.message.setWordWrap(True)
        self.submit_button = QtWidgets.QPushButton("Submit order")
        self.submit_button.setMinimumHeight(30)
        self.submit_button.clicked.connect(self.submit)

        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.setSpacing(4)
        self.header = QtWidgets.QLabel("No legs — click a bid or ask in the chain, or build a strategy")
        self.header.setStyleSheet("font-weight: bold")
        lay.addWidget(self.header)
        row = QtWidgets.QHBoxLayout()
        for w in (self.template_box, self.right_box, self.direction_box, self.width_spin, self.wing_spin,
                  self.delta_spin, self.wing_dollars_spin, self.build_button):
            row.addWidget(w)
        row.addStretch(1)
        lay.addLayout(row)
        lay.addWidget(self.leg_table, 1)
        row = QtWidgets.QHBoxLayout()
        for w in (self.remove_button, self.flip_button, self.clear_button):
            row.addWidget(w)
        row.addStretch(1)
        lay.addLayout(row)
        row = QtWidgets.QHBoxLayout()
        row.addWidget(self.qty_spin)
        row.addWidget(QtWidgets.QLabel("limit"))
        row.addWidget(self.price_spin)
        row.addWidget(self.price_kind)
        row.addWidget(self.mid_button)
        row.addWidget(self.natural_button)
        row.addWidget(self.tif_box)
        row.addStretch(1)
        lay.addLayout(row)
        lay.addLayout(grid)
        lay.addWidget(self.state_banner)
        lay.addWidget(self.message)
        lay.addWidget(self.submit_button)

        self.links.leg_requested.connect(self.add_leg)
        self.links.legs_replaced.connect(self._on_legs_replaced)
        self.links.expiry_selected.connect(self._on_expiry_selected)
        if self.links.expiry is not None:
            self._on_expiry_selected(self.links.underlying, self.links.expiry)
        self._template_defaults()
        ks = self.engine.kill_switch if self.engine is not None else None
        if ks is not None:
            try:
                status = ks.status
                self.set_trading_state(str(getattr(status, "state", ks.state)), getattr(status, "reason", ""))
            except Exception:
                self.set_trading_state(str(ks.state))
        self.recompute()

    # ---- legs ------------------------------------------------------------------------------------
    @property
    def underlying(self) -> str:
        return self.live.underlying

    def add_leg(self, leg: Leg | Any, side: Side | None = None, ratio: int = 1) -> None:
        """Add a leg (a ``Leg``, or an instrument with ``side`` and ``ratio``); the same contract again adds
        ratio (same side) or nets it off (other side)."""
        if not isinstance(leg, Leg):
            if side is None:
                raise ValueError("add_leg(instrument, side, ratio) needs a side")
            leg = Leg(leg, Side(side), int(ratio))
        und = _underlying_of(leg)
        legs = list(self.legs)
        if legs and _underlying_of(legs[0]) != und:
            self.show_message(f"New ticket for {und}: a ticket holds one underlying", error=False)
            legs = []
        for i, old in enumerate(legs):
            if old.symbol == leg.symbol:
                ratio = old.ratio + (leg.ratio if old.side == leg.side else -leg.ratio)
                if ratio == 0:
                    legs.pop(i)
                elif ratio > 0:
                    legs[i] = Leg(old.instrument, old.side, ratio, old.open_close)
                else:
                    legs[i] = Leg(old.instrument, leg.side, -ratio, leg.open_close)
                break
        else:
            legs.append(leg)
        self.set_legs(legs)

    def set_legs(self, legs: list[Leg]) -> None:
        if legs:
            self.live.select(_underlying_of(legs[0]))
        self.legs = list(legs)
        self._price_touched = False
        if not self.message.property("sticky"):
            self.message.setText("")
        self.recompute()

    def clear(self) -> None:
        """An empty ticket: no legs and no limit left over from the last order (it would be sent again)."""
        self.set_legs([])
        self._set_price(0.0)
        self._update_submit()

    def clear_legs(self) -> None:
        self.clear()

    def set_quantity(self, quantity: int) -> None:
        self.qty_spin.setValue(int(quantity))

    def set_limit_price(self, price: Decimal | float) -> None:
        """Set the net limit (positive debit, negative credit); it is kept when quotes move."""
        self._set_price(float(price))
        self._price_touched = True
        self._recompute_payoff()
        self._update_submit()

    def _on_legs_replaced(self, payload: object) -> None:
        """A tuple of legs, or ``{"legs": (...), "quantity": n}`` (e.g. closing positions)."""
        if isinstance(payload, dict):
            self.qty_spin.setValue(int(payload.get("quantity", 1)))
            self.set_legs(list(payload.get("legs", ())))
        else:
            self.set_legs(list(payload))  # type: ignore[call-overload]

    def flip_leg(self, row: int) -> None:
        if 0 <= row < len(self.legs):
            old = self.legs[row]
            legs = list(self.legs)
            legs[row] = Leg(old.instrument, Side.SELL if old.side is Side.BUY else Side.BUY, old.ratio,
                            old.open_close)
            self.set_legs(legs)

    def _selected_row(self) -> int:
        rows = self.leg_table.selectionModel().selectedRows()
        return rows[0].row() if rows else -1

    def _remove_selected(self) -> None:
        row = self._selected_row()
        if 0 <= row < len(self.legs):
            self.set_legs([leg for i, leg in enumerate(self.legs) if i != row])

    # ---- templates -------------------------------------------------------------------------------
    def _template_defaults(self) -> None:
        t = Template(self.template_box.currentData())
        condor = t is Template.IRON_CONDOR
        self.wing_spin.setVisible(False)
        self.width_spin.setVisible(not condor and t is not Template.STRADDLE and t is not Template.CALENDAR)
        self.delta_spin.setVisible(condor)
        self.wing_dollars_spin.setVisible(condor)
        self.right_box.setEnabled(t in (Template.VERTICAL, Template.CALENDAR, Template.BUTTERFLY))
        self.direction_box.setCurrentIndex(1 if t is Template.IRON_CONDOR else 0)

    def _on_expiry_selected(self, underlying: str, expiry: object) -> None:
        if not self.legs:
            self.live.select(underlying)
        if underlying == self.live.underlying:
            self.expiry = expiry  # type: ignore[assignment]

    def build_from_template(self) -> None:
        chain = self.live.snapshot()
        if chain is None or self.expiry is None:
            self.show_message("Select an underlying and expiry in the chain first", error=True)
            return
        condor = Template(self.template_box.currentData()) is Template.IRON_CONDOR
        r, q = eq.rates(self.engine, chain.underlying)
        try:
            legs = build_template(
                self.template_box.currentData(), chain, self.expiry,
                width=self.width_spin.value(), wing=self.wing_spin.value(),
                call=self.right_box.currentIndex() == 0, long=self.direction_box.currentIndex() == 0,
                short_delta=self.delta_spin.value() if condor else None,
                wing_dollars=(self.wing_dollars_spin.value() or None) if condor else None, r=r, q=q,
            )
        except TemplateError as exc:
            self.show_message(str(exc), error=True)
            return
        self.set_legs(list(legs))

    # ---- prices ----------------------------------------------------------------------------------
    def _on_price_edit(self, _value: float) -> None:
        if not self._setting_price:
            self._price_touched = True
        self._update_price_kind()
        self._recompute_payoff()
        self._update_submit()
        if self.legs and not self._setting_price:
            self._emit_ticket()

    def _emit_ticket(self) -> None:
        self.links.ticket_changed.emit(
            {"legs": tuple(self.legs), "quantity": self.qty_spin.value(), "underlying": self.underlying,
             "net_price": self.price_spin.value() if self.legs else None}
        )

    def _set_price(self, value: float) -> None:
        self._setting_price = True
        self.price_spin.setValue(float(to_limit_price(value, self._tick())))
        self._setting_price = False
        self._update_price_kind()

    def set_price_from(self, which: str) -> None:
        value = getattr(self.prices, which, math.nan) if self.prices else math.nan
        if not math.isfinite(value):
            self.show_message(f"No {which} price: a leg has no two-sided quote", error=True)
            return
        self._set_price(value)
        self._price_touched = True
        self._recompute_payoff()

    def _tick(self) -> Decimal:
        ticks = [getattr(leg.instrument, "tick_size", Decimal("0.01")) for leg in self.legs]
        return max(ticks) if ticks else Decimal("0.01")

    def _update_price_kind(self) -> None:
        v = self.price_spin.value()
        self.price_kind.setText("debit" if v > 0 else "credit" if v < 0 else "even")
        self.price_kind.setStyleSheet("color: #d64541" if v > 0 else "color: #26a65b" if v < 0 else "")

    def limit_price(self) -> Decimal:
        return to_limit_price(self.price_spin.value(), self._tick())

    # ---- engine data -----------------------------------------------------------------------------
    def apply_events(self, batch: EventBatch) -> None:
        for ev in batch.events(TradingStateChanged):
            self.set_trading_state(ev.state, ev.reason)
        if self._last_order_id:
            for oev in batch.all_events():
                if isinstance(oev, OrderEvent) and oev.order.order_id == self._last_order_id:
                    self._show_order_status(oev.order)
        if self.live.apply(batch) and self.legs:
            # streaming quotes refresh the figures at most once a second (IVs, Greeks, payoff and
            # probability of profit cost ~0.2 s on a loaded 2-core box); a user's edit recomputes at once
            if time.monotonic() - self._last_recompute >= self.STREAM_REFRESH_S:
                self.recompute()

    def set_trading_state(self, state: str, reason: str = "") -> None:
        state = str(state).split(".")[-1].upper()
        self.trading_state, self.trading_reason = state, reason
        if state == "HALTED":
            self.state_banner.setText(f"■ TRADING HALTED — new orders are blocked{': ' + reason if reason else ''}")
            self.state_banner.setStyleSheet("background: #b71c1c; color: white; font-weight: bold; padding: 4px")
            self.state_banner.show()
        elif state == "REDUCING":
            self.state_banner.setText("▲ REDUCING — only orders that reduce exposure will pass"
                                      + (f" ({reason})" if reason else ""))
            self.state_banner.setStyleSheet("background: #e65100; color: white; font-weight: bold; padding: 4px")
            self.state_banner.show()
        else:
            self.state_banner.hide()
            if "halted" in self.message.text().lower():
                self.show_message("", error=False)  # the kill switch was reset: the old refusal no longer holds
        self._update_submit()

    def recompute(self) -> None:
        """Refresh legs table and figures from the current chain quotes."""
        self._last_recompute = time.monotonic()
        chain = self.live.snapshot()
        legs = self.legs
        rows = leg_rows(legs, chain)
        bid = np.full(len(legs), np.nan)
        ask = np.full(len(legs), np.nan)
        iv = np.full(len(legs), np.nan)
        delta = np.full(len(legs), np.nan)
        greeks: dict[str, np.ndarray] = {k: np.full(len(legs), np.nan) for k in ("delta", "gamma", "theta", "vega")}
        if chain is not None and len(legs):
            have = rows >= 0
            bid[have] = chain.bid[rows[have]]
            ask[have] = chain.ask[rows[have]]
            if have.any():
                r, q = eq.rates(self.engine, self.underlying)
                m = chain_metrics(chain, rows[have], now=chain.ts, r=r, q=q)
                iv[have] = m.iv
                for k in greeks:
                    greeks[k][have] = getattr(m, k)
                delta = greeks["delta"]
        self.prices = net_prices(legs, bid, ask)
        self.greeks = order_greeks(legs, self.qty_spin.value(), greeks) if legs else {}
        self._leg_iv = iv
        self.leg_model.update(
            np.array([f"{i}:{leg.symbol}:{leg.side}:{leg.ratio}" for i, leg in enumerate(legs)], dtype=object),
            {
                "side": np.array([leg.side.value.upper() for leg in legs], dtype=object),
                "ratio": np.array([leg.ratio for leg in legs], dtype=object),
                "contract": np.array([describe_leg(leg) for leg in legs], dtype=object),
                "bid": bid, "ask": ask, "mid": self.prices.leg_mid, "iv": iv, "delta": delta,
            },
        )
        if legs:
            und = self.underlying
            spot = chain.spot if chain is not None else math.nan
            self.header.setText(f"{und}  {spot:,.2f}  ·  {len(legs)} leg{'s' if len(legs) > 1 else ''}"
                                if math.isfinite(spot) else f"{und} · {plural(len(legs), 'leg')}")
        else:
            self.header.setText("No legs — click a bid or ask in the chain, or build a strategy")
        if legs and not self._price_touched and math.isfinite(self.prices.mid):
            self._set_price(self.prices.mid)
        f = self.figure_labels
        f["mid"].setText(_price_text(self.prices.mid))
        f["natural"].setText(_price_text(self.prices.natural))
        for k, fmt in (("delta", "{:+,.1f}"), ("gamma", "{:+,.2f}"), ("vega", "{:+,.2f}")):
            v = self.greeks.get(k, math.nan)
            f[k].setText(fmt.format(v) if math.isfinite(v) else "—")
        f["theta"].setText(theta_text(self.greeks.get("theta", math.nan), None, math.nan, 0.0, 0.0))
        self._recompute_payoff()
        self._update_submit()
        self._emit_ticket()

    def _recompute_payoff(self) -> None:
        f = self.figure_labels
        self.summary, self.pop = None, math.nan
        chain = self.live.snapshot()
        prices = self.prices
        if not self.legs or chain is None or prices is None or not prices.complete:
            for k in ("max_profit", "max_loss", "breakevens", "pop"):
                f[k].setText("—")
            return
        r, q = eq.rates(self.engine, self.underlying)
        try:
            pl = legs_from_order(self.legs, self.qty_spin.value(), prices.leg_mid, self._leg_iv, chain.ts,
                                 net_price=self.price_spin.value())
            prof = profile(pl, chain.spot, r, q, days=(), stress=eq.stress_move(self.engine),
                           vol_at=eq.smile_vol_at(self.engine, self.underlying, pl.first_expiry_years))
        except ValueError as exc:
            for k in ("max_profit", "max_loss", "breakevens", "pop"):
                f[k].setText("—")
            self.show_message(str(exc), error=True)
            return
        s = prof.summary
        self.summary, self.pop = s, prof.probability_of_profit
        f["theta"].setText(theta_text(self.greeks.get("theta", math.nan), pl, chain.spot, r, q))
        f["max_profit"].setText(_money(s.max_profit))
        f["max_loss"].setText(prof.max_loss_text())
        f["max_profit"].setStyleSheet("color: #26a65b")
        f["max_loss"].setStyleSheet("color: #d64541")
        f["breakevens"].setText(", ".join(f"{b:,.2f}" for b in s.breakevens) or "none")
        f["pop"].setText(f"{100 * self.pop:.0f}%" if math.isfinite(self.pop) else "—")

    # ---- submit ----------------------------------------------------------------------------------
    def _update_submit(self) -> None:
        halted = self.trading_state == "HALTED"
        self.submit_button.setEnabled(bool(self.legs) and not halted)
        if halted:
            self.submit_button.setText("Blocked: trading halted")
        elif self.legs:
            price = self.price_spin.value()
            kind = "debit" if price > 0 else "credit" if price < 0 else "even"
            self.submit_button.setText(f"Submit {self.qty_spin.value()}× at {abs(price):.2f} {kind}")
        else:
            self.submit_button.setText("Submit order")

    def build_intent(self) -> OrderIntent:
        if not self.legs:
            raise ValueError("the ticket has no legs")
        return OrderIntent(
            legs=tuple(self.legs), quantity=self.qty_spin.value(), order_type=OrderType.LIMIT,
            limit_price=self.limit_price(), tif=TimeInForce(self.tif_box.currentData()), source="gui",
        )

    def submit(self) -> None:
        if self.trading_state == "HALTED":
            self.show_message("Trading is halted: reset the kill switch first", error=True)
            return
        try:
            intent = self.build_intent()
        except ValueError as exc:
            self.show_message(str(exc), error=True)
            return
        self.submit_button.setEnabled(False)
        self.show_message("Submitting…", error=False)

        def done(result: Any) -> None:
            self.last_result = result
            self._update_submit()
            order = result if hasattr(result, "status") else getattr(result, "order", None)
            if order is not None:
                self._last_order_id = str(order.order_id)
                self._show_order_status(order)
            else:
                self.show_message("Order sent", error=False)
            self.submitted.emit(result, "")

        def failed(message: str) -> None:
            self._update_submit()
            self.show_message(f"Not sent: {message}", error=True)
            self.submitted.emit(None, message)

        from widgets.base import send_command

        if send_command(self.engine, SubmitOrder(intent=intent), on_error=failed, on_result=done) is None:
            self._update_submit()

    def _show_order_status(self, order: Any) -> None:
        """The status line follows the last submitted order (approved, rejected, filled ...), so it never
        keeps saying "pending approval" after the approver acted."""
        status = str(getattr(order.status, "value", order.status))
        reason = f" — {order.reason}" if getattr(order, "reason", "") else ""
        bad = status in ("denied", "rejected")
        self.show_message(f"Order {str(order.order_id)[:8]} {status.replace('_', ' ')}{reason}", error=bad)

    def show_message(self, text: str, *, error: bool) -> None:
        self.message.setText(text)
        self.message.setStyleSheet("color: #d64541; font-weight: bold" if error else "color: gray")
        if error:
            self.report_error(text)

    # ---- persistence -----------------------------------------------------------------------------
    def panel_state(self) -> dict[str, Any]:
        return {"template": self.template_box.currentIndex(), "width": self.width_spin.value(),
                "wing": self.wing_spin.value(), "short_delta": self.delta_spin.value(),
                "wing_dollars": self.wing_dollars_spin.value()}

    def restore_panel_state(self, state: dict[str, Any]) -> None:
        for key, widget in (("template", self.template_box), ("width", self.width_spin), ("wing", self.wing_spin)):
            value = state.get(key)
            if isinstance(value, int):
                (widget.setCurrentIndex if key == "template" else widget.setValue)(value)
        for key, dspin in (("short_delta", self.delta_spin), ("wing_dollars", self.wing_dollars_spin)):
            value = state.get(key)
            if isinstance(value, int | float):
                dspin.setValue(float(value))


class _LegModel(ColumnTableModel):
    def cell_foreground(self, row: int, column: int) -> QtGui.QColor | None:
        if column == 0:
            return POSITIVE if self.value(row, "side") == "BUY" else NEGATIVE
        return None


def _underlying_of(leg: Leg) -> str:
    inst = leg.instrument
    return inst.underlying if isinstance(inst, Option) else inst.key


def _price_text(v: float) -> str:
    if not math.isfinite(v):
        return "—"
    return f"{abs(v):.2f} {'debit' if v > 0 else 'credit' if v < 0 else ''}".strip()


__all__ = ["TEMPLATE_NAMES", "TicketPanel", "describe_leg", "describe_legs_short"]
