"""Order ticket: legs from chain clicks or strategy templates, quantity, limit price, live figures, submit.

Figures come from the engine: net mid / natural and order Greeks from :mod:`engine.analytics.ticket`
(IV and Greeks per leg from :mod:`engine.analytics.chain_metrics`), max profit / loss, breakevens and the
probability of profit from :mod:`engine.analytics.payoff` (expiry summary by ``engine.risk.payoff``).
Submitting sends ``SubmitOrder`` into the one order path; the risk engine, approval gate and router decide.
Price convention: positive = debit (we pay), negative = credit (we receive).

Order types (limit, market, stop, stop-limit) and attached exits go out as the engine's own commands —
``SubmitBracket``, ``SubmitOco``, ``SubmitProfitTaker`` — after the field checks of
:mod:`engine.analytics.order_exits` and the order path's own rules (:func:`engine.oms.validation.intent_problem`),
so a stop on the wrong side of the mark or a target beyond max profit is named at its field and never sent.
**Walk** asks the engine's price walker (``StartPriceWalk``, :mod:`engine.oms.price_walk`) to move the sent limit
toward natural; the status line follows its ``PriceWalkUpdated`` events.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from PySide6 import QtCore, QtGui, QtWidgets

from engine.analytics.chain_metrics import chain_metrics
from engine.analytics.formatting import money, plural
from engine.analytics.order_exits import ExitPriceError, bracket_prices, check_profit_share, check_stop
from engine.analytics.payoff import legs_from_order, profile, theta_text
from engine.analytics.templates import DEFAULT_SHORT_DELTA, Template, TemplateError, build_template
from engine.analytics.ticket import (
    TicketPrices,
    leg_quotes,
    leg_rows,
    net_prices,
    order_greeks,
    to_limit_price,
)
from engine.bus.commands import StartPriceWalk, SubmitBracket, SubmitOco, SubmitOrder, SubmitProfitTaker
from engine.bus.events import OrderEvent, PriceWalkUpdated, TradingStateChanged
from engine.bus.messages import Command
from engine.model import (
    GroupKind,
    Leg,
    OpenClose,
    Option,
    OrderGroup,
    OrderIntent,
    OrderType,
    Side,
    TimeInForce,
    price_multiplier,
)
from engine.oms.validation import intent_problem
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


_GROUP_NAMES = {GroupKind.BRACKET: "Bracket", GroupKind.OCO: "OCO pair", GroupKind.PROFIT_TAKER: "Profit taker"}


def _price_spin(tooltip: str) -> QtWidgets.QDoubleSpinBox:
    """A net-price field: + debit / − credit, two decimals, committed on Enter or focus-out (not per keystroke:
    a half-typed price would be checked against the mark)."""
    spin = QtWidgets.QDoubleSpinBox()
    spin.setRange(-100_000.0, 100_000.0)
    spin.setDecimals(2)
    spin.setSingleStep(0.01)
    spin.setKeyboardTracking(False)
    spin.setToolTip(tooltip)
    return spin


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
        Column("ratio", "×", "{:d}", align="center", width=40),  # "100" shares of a covered call
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
        self.tif_box.setToolTip("Time in force: Day orders expire at the close, GTC orders stay until filled or "
                                "cancelled")

        # order type and stop
        self.type_box = QtWidgets.QComboBox()
        for text, kind in (("Limit", OrderType.LIMIT), ("Market", OrderType.MARKET), ("Stop", OrderType.STOP),
                           ("Stop-limit", OrderType.STOP_LIMIT)):
            self.type_box.addItem(text, kind)
        self.type_box.setToolTip("Limit: at the limit or better. Market: at the touch now. Stop: a market order once "
                                 "the net price at the mark rises to the stop. Stop-limit: a limit order then")
        self.type_box.currentIndexChanged.connect(self._on_type)
        self.stop_spin = _price_spin("Stop (trigger) on the order's net price, + debit / − credit: it fires when "
                                     "the net at the mark rises to it — above the mark for a buy, a smaller credit "
                                     "for a sell")
        self.stop_spin.valueChanged.connect(lambda _v: self._fields_changed())
        self.stop_label = QtWidgets.QLabel("stop")
        self.limit_label = QtWidgets.QLabel("limit")

        # attached exits
        self.attach_box = QtWidgets.QComboBox()
        for text, key in (("No exit", ""), ("Bracket", "bracket"), ("OCO", "oco"),
                          ("Close at % of max profit", "profit")):
            self.attach_box.addItem(text, key)
        self.attach_box.setToolTip("Bracket: once filled, a profit target and a stop, one cancels the other. "
                                   "OCO: this order and a second one on the same legs; the first to fill cancels "
                                   "the other. Close at %: once filled, a closing limit at that share of max profit")
        self.attach_box.currentIndexChanged.connect(self._on_attach)
        self.bracket_unit = QtWidgets.QComboBox()
        self.bracket_unit.addItem("% of max", "pct")
        self.bracket_unit.addItem("price", "price")
        self.bracket_unit.setToolTip("% of max: the target as a share of max profit, the stop of max loss. "
                                     "price: both as the closing order's net price (+ debit / − credit)")
        self.bracket_unit.currentIndexChanged.connect(self._on_bracket_unit)
        self.target_spin = _price_spin("Profit target")
        self.target_spin.setPrefix("target ")
        self.bracket_stop_spin = _price_spin("Stop loss")
        self.bracket_stop_spin.setPrefix("stop ")
        for spin in (self.target_spin, self.bracket_stop_spin):
            spin.valueChanged.connect(lambda _v: self._fields_changed())
        self.bracket_native = QtWidgets.QCheckBox("at broker")
        self.bracket_native.setToolTip(
            "Place entry, target and stop at the broker at once (tastytrade OTOCO, IBKR parent and children), "
            "exits sized to the full entry: they then work while Optiondesk is closed. Off: Optiondesk places "
            "the exits when the entry fills (sized to the fill). The paper broker always does the latter.")
        self.bracket_native.toggled.connect(lambda _c: self._fields_changed())
        self.oco_type_box = QtWidgets.QComboBox()
        self.oco_type_box.addItem("Stop", OrderType.STOP)
        self.oco_type_box.addItem("Limit", OrderType.LIMIT)
        self.oco_type_box.setToolTip("The second order of the pair: same legs and quantity")
        self.oco_type_box.currentIndexChanged.connect(lambda _i: self._fields_changed())
        self.oco_price_spin = _price_spin("The second order's stop (or limit), + debit / − credit")
        self.oco_price_spin.setPrefix("at ")
        self.oco_price_spin.valueChanged.connect(lambda _v: self._fields_changed())
        self.profit_pct_spin = QtWidgets.QDoubleSpinBox()
        self.profit_pct_spin.setRange(1.0, 99.0)
        self.profit_pct_spin.setDecimals(0)
        self.profit_pct_spin.setValue(50.0)
        self.profit_pct_spin.setSuffix(" % of max profit")
        self.profit_pct_spin.setToolTip("Once filled, a GTC closing limit taking this share of the maximum profit "
                                        "(a credit of C closes at (1 − x)·C)")
        self._attach_widgets: dict[str, list[QtWidgets.QWidget]] = {
            "bracket": [self.bracket_unit, self.target_spin, self.bracket_stop_spin, self.bracket_native],
            "oco": [self.oco_type_box, self.oco_price_spin], "profit": [self.profit_pct_spin]}
        self._field_error: QtWidgets.QWidget | None = None

        # price walking (engine/oms/price_walk.py): from the limit toward natural, step by step
        self.walk_check = QtWidgets.QCheckBox("Walk")
        self.walk_check.setToolTip("After submitting, the engine replaces the limit step by step toward natural "
                                   "(each step through the order path), never beyond the \"up to\" price; it stops "
                                   "on fill, cancel, kill switch or disconnect")
        self.walk_step_spin = QtWidgets.QDoubleSpinBox()
        self.walk_step_spin.setRange(0.01, 100.0)
        self.walk_step_spin.setDecimals(2)
        self.walk_step_spin.setValue(0.01)
        self.walk_step_spin.setPrefix("step ")
        self.walk_unit = QtWidgets.QComboBox()
        self.walk_unit.addItem("$", "price")
        self.walk_unit.addItem("% of spread", "fraction")
        self.walk_unit.currentIndexChanged.connect(self._on_walk_unit)
        self.walk_interval_spin = QtWidgets.QDoubleSpinBox()
        self.walk_interval_spin.setRange(0.5, 3600.0)
        self.walk_interval_spin.setDecimals(1)
        self.walk_interval_spin.setValue(10.0)
        self.walk_interval_spin.setPrefix("every ")
        self.walk_interval_spin.setSuffix(" s")
        self.walk_interval_spin.setToolTip("Seconds of market time between steps (the simulated clock on the "
                                           "simulated market)")
        self.walk_limit_spin = _price_spin("The walk never goes past this net price (+ debit / − credit); "
                                           "it starts at the natural price")
        self.walk_limit_spin.setPrefix("up to ")
        self._walk_widgets: list[QtWidgets.QWidget] = [self.walk_step_spin, self.walk_unit, self.walk_interval_spin,
                                                       self.walk_limit_spin]
        self.walk_check.toggled.connect(self._on_walk_toggled)
        for w in (self.walk_step_spin, self.walk_interval_spin, self.walk_limit_spin):
            w.valueChanged.connect(lambda _v: self._fields_changed())
        self.walk_status = ""

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
        row.addWidget(self.type_box)
        row.addWidget(self.limit_label)
        row.addWidget(self.price_spin)
        row.addWidget(self.price_kind)
        row.addWidget(self.mid_button)
        row.addWidget(self.natural_button)
        row.addWidget(self.stop_label)
        row.addWidget(self.stop_spin)
        row.addWidget(self.tif_box)
        row.addStretch(1)
        lay.addLayout(row)
        row = QtWidgets.QHBoxLayout()
        row.addWidget(self.attach_box)
        for widgets in self._attach_widgets.values():
            for w in widgets:
                row.addWidget(w)
        row.addStretch(1)
        lay.addLayout(row)
        row = QtWidgets.QHBoxLayout()
        row.addWidget(self.walk_check)
        for w in self._walk_widgets:
            row.addWidget(w)
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
        self._on_type()
        self._on_attach()
        self._on_walk_toggled(False)
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
        for wev in batch.events(PriceWalkUpdated):  # after the order's own events: the walk says more
            if wev.order_id == self._last_order_id:
                self._show_walk(wev)
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
        # options from the chain, shares (a covered call's, a collar's) at the underlying's live price
        bid, ask = leg_quotes(legs, chain)
        iv = np.full(len(legs), np.nan)
        delta = np.full(len(legs), np.nan)
        greeks: dict[str, np.ndarray] = {k: np.full(len(legs), np.nan) for k in ("delta", "gamma", "theta", "vega")}
        shares = np.array([not isinstance(leg.instrument, Option) for leg in legs], dtype=bool)
        for k in greeks:  # a share: delta 1, no gamma, theta or vega
            greeks[k][shares] = 1.0 if k == "delta" else 0.0
        delta = greeks["delta"]
        if chain is not None and len(legs):
            have = rows >= 0
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

    # ---- order type and attached exits ------------------------------------------------------------
    @property
    def order_type(self) -> OrderType:
        return OrderType(self.type_box.currentData())

    @property
    def attach(self) -> str:
        """``""`` (none), ``bracket``, ``oco`` or ``profit``."""
        return str(self.attach_box.currentData())

    def _on_type(self) -> None:
        kind = self.order_type
        for w in (self.limit_label, self.price_spin, self.price_kind, self.mid_button, self.natural_button):
            w.setVisible(kind.has_limit)
        self.stop_label.setVisible(kind.is_stop)
        self.stop_spin.setVisible(kind.is_stop)
        if kind.is_stop and self.stop_spin.value() == 0 and self.prices is not None \
                and math.isfinite(self.prices.natural):
            # a starting trigger beyond the mark, on the side a stop fires from (the user moves it from there)
            self._set_spin(self.stop_spin, self.prices.natural + self._tick_f())
        self._fields_changed()

    def _on_attach(self) -> None:
        for key, widgets in self._attach_widgets.items():
            for w in widgets:
                w.setVisible(key == self.attach)
        if self.attach == "bracket" and self.target_spin.value() == 0 and self.bracket_stop_spin.value() == 0:
            self._on_bracket_unit()
        self._fields_changed()

    def _on_bracket_unit(self) -> None:
        """Switching unit starts from sensible values in the new unit: half the max profit and half the max loss
        in percent, or the prices those percentages come to."""
        pct = self.bracket_unit.currentData() == "pct"
        for spin in (self.target_spin, self.bracket_stop_spin):
            spin.blockSignals(True)
            spin.setDecimals(0 if pct else 2)
            spin.setRange(0.0, 100.0) if pct else spin.setRange(-100_000.0, 100_000.0)
            spin.setSingleStep(5.0 if pct else 0.01)
            spin.setSuffix(" %" if pct else "")
            spin.blockSignals(False)
        if pct:
            self.target_spin.setValue(50.0)
            self.bracket_stop_spin.setValue(50.0)
        else:
            try:
                p = self._bracket_prices(50.0, 50.0, "pct")
            except ExitPriceError:
                self.target_spin.setValue(0.0)
                self.bracket_stop_spin.setValue(0.0)
            else:
                self.target_spin.setValue(float(p.take_profit))
                self.bracket_stop_spin.setValue(float(p.stop))
        self._fields_changed()

    def _fields_changed(self) -> None:
        self._update_submit()

    def _on_walk_toggled(self, on: bool) -> None:
        for w in self._walk_widgets:
            w.setVisible(on)
        if on and self.walk_limit_spin.value() == 0 and self.prices is not None \
                and math.isfinite(self.prices.natural):
            self._set_spin(self.walk_limit_spin, float(to_limit_price(self.prices.natural, self._tick())))
        self._fields_changed()

    def _on_walk_unit(self) -> None:
        spin = self.walk_step_spin
        if self.walk_unit.currentData() == "fraction":
            spin.setDecimals(0)
            spin.setRange(1.0, 100.0)
            spin.setValue(25.0)
            spin.setSuffix(" %")
        else:
            spin.setSuffix("")
            spin.setDecimals(2)
            spin.setRange(0.01, 100.0)
            spin.setValue(0.01)
        self._fields_changed()

    def walk_command(self, order_id: str) -> StartPriceWalk:
        """The walk the ticket asks for ``order_id`` (the order it just sent)."""
        fraction = self.walk_unit.currentData() == "fraction"
        step = self.walk_step_spin.value()
        return StartPriceWalk(order_id=order_id, interval_s=self.walk_interval_spin.value(),
                              limit=to_limit_price(self.walk_limit_spin.value(), self._tick()),
                              step=None if fraction else Decimal(f"{step:.2f}"),
                              step_fraction=step / 100 if fraction else None)

    def _check_walk(self) -> None:
        if not self.walk_check.isChecked():
            return
        if self.order_type is not OrderType.LIMIT:
            raise ExitPriceError("only a limit order can be walked: choose Limit or untick Walk", "walk")
        if self.walk_limit_spin.value() < self.price_spin.value():
            raise ExitPriceError(
                f"the walk's \"up to\" {_price_text(self.walk_limit_spin.value())} is behind the limit "
                f"{_price_text(self.price_spin.value())}: a walk moves toward natural (pays more for a debit, "
                "receives less for a credit)", "walk_limit")

    @staticmethod
    def _set_spin(spin: QtWidgets.QDoubleSpinBox, value: float) -> None:
        spin.setValue(round(value, spin.decimals()))

    def _tick_f(self) -> float:
        return float(self._tick())

    def entry_price(self) -> float:
        """The entry's expected net price for its exits: the limit of a limit or stop-limit, the trigger of a stop,
        the natural price (what fills now) of a market order."""
        kind = self.order_type
        if kind.has_limit:
            return float(self.limit_price())
        if kind is OrderType.STOP:
            return self.stop_spin.value()
        return self.prices.natural if self.prices is not None else math.nan

    def _bracket_prices(self, target: float, stop: float, unit: str) -> Any:
        s = self.summary
        if s is None:
            raise ExitPriceError("no maximum profit or loss yet: every leg needs a two-sided quote", "target")
        mid = self.prices.mid if self.prices is not None else math.nan
        return bracket_prices(self.entry_price(), quantity=self.qty_spin.value(),
                              multiplier=price_multiplier(self.legs) if self.legs else 100,
                              max_profit=float(s.max_profit), max_loss=float(s.max_loss), target=target,
                              stop=stop, unit="pct" if unit == "pct" else "price", tick=self._tick(),
                              close_mark=-mid)

    def _mark_field(self, field: str | None) -> None:
        widgets = {"stop": self.stop_spin, "target": self.target_spin, "bracket_stop": self.bracket_stop_spin,
                   "oco": self.oco_price_spin, "profit_pct": self.profit_pct_spin, "attach": self.attach_box,
                   "limit": self.price_spin, "quantity": self.qty_spin, "unit": self.bracket_unit,
                   "walk": self.walk_check, "walk_limit": self.walk_limit_spin}
        if self._field_error is not None:
            self._field_error.setStyleSheet("")
        self._field_error = widgets.get(field or "")
        if self._field_error is not None:
            self._field_error.setStyleSheet("border: 2px solid #d64541")

    def build_intent(self) -> OrderIntent:
        if not self.legs:
            raise ValueError("the ticket has no legs")
        kind = self.order_type
        stop = None
        if kind.is_stop:
            stop = to_limit_price(self.stop_spin.value(), self._tick())
            check_stop(float(stop), self.prices.mid if self.prices is not None else math.nan)
        intent = OrderIntent(
            legs=tuple(self.legs), quantity=self.qty_spin.value(), order_type=kind,
            limit_price=self.limit_price() if kind.has_limit else None, stop_price=stop,
            tif=TimeInForce(self.tif_box.currentData()), source="gui",
        )
        # the order path's own field rules (signs, bounds), said at the field instead of after the round trip
        problem = intent_problem(intent)
        if problem is not None:
            raise ExitPriceError(problem.message, "stop" if "stop" in problem.code else "limit")
        return intent

    def build_command(self) -> Command:
        """The command the ticket sends: ``SubmitOrder``, or a group command when an exit is attached. Raises
        :class:`ExitPriceError` (naming the field) or ``ValueError`` before anything is sent."""
        intent = self.build_intent()
        self._check_walk()
        attach = self.attach
        if attach in ("bracket", "profit") and any(leg.open_close is not OpenClose.OPEN for leg in intent.legs):
            what = "bracket" if attach == "bracket" else "close at % of max profit"
            raise ExitPriceError(f"a {what} needs an entry that opens a position: this order closes one", "attach")
        if attach == "bracket":
            unit = str(self.bracket_unit.currentData())
            try:
                p = self._bracket_prices(self.target_spin.value(), self.bracket_stop_spin.value(), unit)
            except ExitPriceError as exc:
                raise ExitPriceError(str(exc), "bracket_stop" if exc.field == "stop" else exc.field) from None
            return SubmitBracket(intent=intent, take_profit=p.take_profit, stop=p.stop,
                                 native=True if self.bracket_native.isChecked() else None)
        if attach == "profit":
            return SubmitProfitTaker(intent=intent, profit_pct=check_profit_share(self.profit_pct_spin.value()))
        if attach == "oco":
            kind = OrderType(self.oco_type_box.currentData())
            price = to_limit_price(self.oco_price_spin.value(), self._tick())
            if kind is OrderType.STOP:
                check_stop(float(price), self.prices.mid if self.prices is not None else math.nan,
                           what="OCO stop", field="oco")
            second = OrderIntent(legs=intent.legs, quantity=intent.quantity, order_type=kind,
                                 limit_price=price if kind is OrderType.LIMIT else None,
                                 stop_price=price if kind is OrderType.STOP else None, tif=intent.tif, source="gui")
            return SubmitOco(first=intent, second=second)
        return SubmitOrder(intent=intent)

    def field_problem(self) -> str:
        """What is wrong with the ticket's fields now ("" when nothing), marking the field at fault."""
        if not self.legs or (self.attach == "" and not self.order_type.is_stop and not self.walk_check.isChecked()):
            self._mark_field(None)
            return ""
        try:
            self.build_command()
        except ExitPriceError as exc:
            self._mark_field(exc.field)
            return str(exc)
        except ValueError as exc:
            self._mark_field(None)
            return str(exc)
        self._mark_field(None)
        return ""

    # ---- submit ----------------------------------------------------------------------------------
    def _update_submit(self) -> None:
        halted = self.trading_state == "HALTED"
        problem = self.field_problem() if hasattr(self, "attach_box") else ""
        self.submit_button.setEnabled(bool(self.legs) and not halted and not problem)
        if problem:
            self.message.setText(problem)
            self.message.setStyleSheet("color: #d64541; font-weight: bold")
            self.message.setProperty("field_problem", True)
        elif self.message.property("field_problem"):
            self.message.setProperty("field_problem", False)
            self.message.setText("")
        if halted:
            self.submit_button.setText("Blocked: trading halted")
        elif problem:
            self.submit_button.setText("Fix the marked field to submit")
        elif self.legs:
            kind = self.order_type
            qty = self.qty_spin.value()
            if kind is OrderType.MARKET:
                text = f"Submit {qty}× at market"
            elif kind is OrderType.STOP:
                text = f"Submit {qty}× stop at {_price_text(self.stop_spin.value())}"
            else:
                price = self.price_spin.value()
                pk = "debit" if price > 0 else "credit" if price < 0 else "even"
                text = f"Submit {qty}× at {abs(price):.2f} {pk}"
                if kind is OrderType.STOP_LIMIT:
                    text += f", stop {_price_text(self.stop_spin.value())}"
            extra = {"bracket": " + bracket", "oco": " + OCO", "profit": " + profit taker"}.get(self.attach, "")
            if self.walk_check.isChecked():
                extra += ", walking"
            self.submit_button.setText(text + extra)
        else:
            self.submit_button.setText("Submit order")

    def submit(self) -> None:
        if self.trading_state == "HALTED":
            self.show_message("Trading is halted: reset the kill switch first", error=True)
            return
        try:
            command = self.build_command()
        except ExitPriceError as exc:
            self._mark_field(exc.field)
            self.show_message(str(exc), error=True)
            return
        except ValueError as exc:
            self.show_message(str(exc), error=True)
            return
        self.submit_button.setEnabled(False)
        self.show_message("Submitting…", error=False)
        walk = self.walk_command("") if self.walk_check.isChecked() else None

        def done(result: Any) -> None:
            self.last_result = result
            self._update_submit()
            order = result if hasattr(result, "order_id") else getattr(result, "order", None)
            if isinstance(result, OrderGroup):
                first = result.entry_order_id or (result.member_order_ids[0] if result.member_order_ids else "")
                if walk is not None and first:
                    self._start_walk(replace(walk, order_id=first))
                self._last_order_id = str(first or "")
                self.show_message(f"{_GROUP_NAMES.get(result.kind, result.kind.value)} {result.group_id} sent"
                                  + (f": order {first[:12]} on the order path" if first else ""), error=False)
            elif order is not None:
                self._last_order_id = str(order.order_id)
                self._show_order_status(order)
                if walk is not None and not order.status.is_terminal:
                    self._start_walk(replace(walk, order_id=order.order_id))
            else:
                self.show_message("Order sent", error=False)
            self.submitted.emit(result, "")

        def failed(message: str) -> None:
            self._update_submit()
            self.show_message(f"Not sent: {message}", error=True)
            self.submitted.emit(None, message)

        from widgets.base import send_command

        if send_command(self.engine, command, on_error=failed, on_result=done) is None:
            self._update_submit()

    def _start_walk(self, command: StartPriceWalk) -> None:
        def walking(ev: Any) -> None:
            self._show_walk(ev)

        def refused(message: str) -> None:
            self.show_message(f"Order sent, but not walked: {message}", error=True)

        from widgets.base import send_command

        send_command(self.engine, command, on_error=refused, on_result=walking)

    def _show_walk(self, ev: PriceWalkUpdated) -> None:
        """The status line says where the walk is: the order's price now, its cap and the steps taken."""
        price = _price_text(float(ev.price)) if ev.price is not None else "—"
        if ev.state == "ended":
            self.walk_status = f"Walk of {ev.order_id[:12]} ended at {price} after {plural(ev.steps, 'step')}: {ev.reason}"
        else:
            self.walk_status = (f"Walking {ev.order_id[:12]}: {price} (up to {_price_text(float(ev.limit))}, "
                                f"{plural(ev.steps, 'step')})")
        self.show_message(self.walk_status, error=False)

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
                "wing_dollars": self.wing_dollars_spin.value(), "bracket_unit": self.bracket_unit.currentIndex(),
                "profit_pct": self.profit_pct_spin.value()}

    def restore_panel_state(self, state: dict[str, Any]) -> None:
        for key, widget in (("template", self.template_box), ("width", self.width_spin), ("wing", self.wing_spin)):
            value = state.get(key)
            if isinstance(value, int):
                (widget.setCurrentIndex if key == "template" else widget.setValue)(value)
        if isinstance(state.get("bracket_unit"), int):
            self.bracket_unit.setCurrentIndex(state["bracket_unit"])
        for key, dspin in (("short_delta", self.delta_spin), ("wing_dollars", self.wing_dollars_spin),
                           ("profit_pct", self.profit_pct_spin)):
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
