"""Account activity panel: transactions, realised P&L per closed trade, fees, and the margin breakdown.

Everything shown is :func:`widgets.engine_queries.account_activity` — the store's fills grouped into trades
by the backtest's ledger and the paper exchange's own margin numbers — filtered by New York days and a symbol
or underlying. The panel re-reads after a fill or a position change (not per quote: the store is read on the
loop) and on *Refresh*; the account figures follow ``AccountUpdated`` at most once a second.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from PySide6 import QtCore, QtWidgets

from engine.analytics.formatting import money, plural
from engine.bus.events import AccountUpdated, OrderFilled, PositionChanged
from engine.model.instruments import NEW_YORK
from engine.reports.activity import AccountActivity, write_csv
from widgets import engine_queries as eq
from widgets.base import EventBatch, Panel
from widgets.table_model import Column, ColumnTableModel, LiveTableView
from widgets.time_format import engine_now, format_market_time, time_sort_key

if TYPE_CHECKING:
    from engine.core import Engine


def _money(v: float) -> str:
    return money(v)


def _signed_money(v: float) -> str:
    return money(v, signed=True)


SECTIONS = ("transactions", "trades", "margin")


class ActivityPanel(Panel):
    title: ClassVar[str] = "Activity"
    panel_id: ClassVar[str] = "activity"

    TX_COLUMNS: ClassVar[list[Column]] = [
        Column("time", "Time (New York)", align="left", width=215),
        Column("symbol", "Symbol", align="left", width=190),
        Column("legs", "Order legs", align="left", width=260),
        Column("side", "Side", align="left", width=44),
        Column("qty", "Qty", "{:,d}", width=44),
        Column("price", "Price", "{:,.2f}", width=70),
        Column("fee", "Fees", _money, width=70),
        Column("net", "Net cash", _signed_money, width=96, signed=True, tooltip="Money in (+) or out (−), fees included"),
        Column("kind", "Kind", align="left", width=80),
    ]
    TRADE_COLUMNS: ClassVar[list[Column]] = [
        Column("no", "#", "{:d}", width=36),
        Column("underlying", "Underlying", align="left", width=74),
        Column("legs", "Legs", align="left", width=230),
        Column("qty", "Qty", "{:d}", width=40),
        Column("opened", "Opened", align="left", width=215),
        Column("closed", "Closed", align="left", width=215),
        Column("entry", "Entry", "{:+,.2f}", width=64, tooltip="Net price per unit: debit +, credit −"),
        Column("exit", "Exit", "{:+,.2f}", width=64),
        Column("gross", "Gross P&L", _signed_money, width=90, signed=True),
        Column("fees", "Fees", _money, width=70),
        Column("net", "Net P&L", _signed_money, width=90, signed=True),
        Column("reason", "Exit", align="left", width=80),
    ]
    MARGIN_COLUMNS: ClassVar[list[Column]] = [
        Column("name", "Underlying / position", align="left", width=220),
        Column("qty", "Qty", "{:+,d}", width=50),
        Column("mark", "Mark", "{:,.2f}", width=70),
        Column("value", "Value", _money, width=100),
        Column("option_req", "Option req.", _money, width=100,
               tooltip="Reg-T requirement of the underlying's options, grouped (the paper exchange's rules)"),
        Column("stock_maint", "Stock maint.", _money, width=100, tooltip="25 % of long, 30 % of short shares"),
        Column("total", "Maintenance", _money, width=110),
    ]

    def __init__(self, engine: Engine | None, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(engine, parent)
        self.activity: AccountActivity | None = None
        self.min_account_interval_s = 1.0
        self._last_account = 0.0
        today = engine_now(engine).astimezone(NEW_YORK).date()
        self._today = today

        self.start_edit = QtWidgets.QDateEdit(_qdate(today - timedelta(days=30)))
        self.end_edit = QtWidgets.QDateEdit(_qdate(today))
        for w in (self.start_edit, self.end_edit):
            w.setCalendarPopup(True)
            w.setDisplayFormat("yyyy-MM-dd")
            w.dateChanged.connect(self.refresh)
        self.symbol_edit = QtWidgets.QLineEdit()
        self.symbol_edit.setPlaceholderText("all symbols")
        self.symbol_edit.setToolTip("An underlying (SPY) or the start of an option symbol; empty for all")
        self.symbol_edit.setMaximumWidth(140)
        self.symbol_edit.editingFinished.connect(self.refresh)
        self.refresh_button = QtWidgets.QPushButton("Refresh")
        self.refresh_button.clicked.connect(self.refresh)
        self.export_button = QtWidgets.QPushButton("Export CSV…")
        self.export_button.setToolTip("Write the table on top (transactions, trades or margin) to a CSV file")
        self.export_button.clicked.connect(self._ask_export)

        bar = QtWidgets.QHBoxLayout()
        bar.addWidget(QtWidgets.QLabel("From"))
        bar.addWidget(self.start_edit)
        bar.addWidget(QtWidgets.QLabel("to"))
        bar.addWidget(self.end_edit)
        bar.addWidget(QtWidgets.QLabel("Symbol"))
        bar.addWidget(self.symbol_edit)
        bar.addStretch(1)
        bar.addWidget(self.refresh_button)
        bar.addWidget(self.export_button)

        self.summary = QtWidgets.QLabel("No activity")
        self.summary.setStyleSheet("font-weight: bold")
        self.summary.setWordWrap(True)
        self.message = QtWidgets.QLabel("")
        self.message.setStyleSheet("color: #e65100")

        self.tx_model = ColumnTableModel(self.TX_COLUMNS, self)
        self.trade_model = ColumnTableModel(self.TRADE_COLUMNS, self)
        self.margin_model = ColumnTableModel(self.MARGIN_COLUMNS, self)
        self.tx_table = LiveTableView(self.tx_model)
        self.trade_table = LiveTableView(self.trade_model)
        self.margin_table = LiveTableView(self.margin_model)
        self.fees_label = QtWidgets.QLabel("")
        self.fees_label.setWordWrap(True)
        self.account_label = QtWidgets.QLabel("")
        self.account_label.setWordWrap(True)

        trades_page = QtWidgets.QWidget()
        tl = QtWidgets.QVBoxLayout(trades_page)
        tl.setContentsMargins(0, 0, 0, 0)
        tl.addWidget(self.trade_table, 1)
        tl.addWidget(self.fees_label)
        margin_page = QtWidgets.QWidget()
        ml = QtWidgets.QVBoxLayout(margin_page)
        ml.setContentsMargins(0, 0, 0, 0)
        ml.addWidget(self.account_label)
        ml.addWidget(self.margin_table, 1)

        self.tabs = QtWidgets.QTabWidget()
        self.tabs.addTab(self.tx_table, "Transactions")
        self.tabs.addTab(trades_page, "Closed trades")
        self.tabs.addTab(margin_page, "Margin")

        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addLayout(bar)
        lay.addWidget(self.summary)
        lay.addWidget(self.tabs, 1)
        lay.addWidget(self.message)
        self.refresh()

    # ---- data ------------------------------------------------------------------------------------
    def set_filter(self, start: date | None = None, end: date | None = None, symbol: str | None = None) -> None:
        """Set the filters as a user would and re-read once."""
        for edit, value in ((self.start_edit, start), (self.end_edit, end)):
            if value is not None:
                edit.blockSignals(True)
                edit.setDate(_qdate(value))
                edit.blockSignals(False)
        if symbol is not None:
            self.symbol_edit.setText(symbol)
        self.refresh()

    def period(self) -> tuple[date, date]:
        return _pydate(self.start_edit.date()), _pydate(self.end_edit.date())

    def apply_events(self, batch: EventBatch) -> None:
        if batch.has(OrderFilled) or batch.has(PositionChanged):
            self.refresh()
        elif batch.has(AccountUpdated) and time.monotonic() - self._last_account >= self.min_account_interval_s:
            self.refresh_margin()

    def refresh_margin(self) -> None:
        """Marks move the margin and the account between fills: re-read those only (no store read)."""
        if self.activity is None:
            return
        margin, account = eq.account_margin(self.engine)
        symbol = self.activity.symbol
        if symbol:
            from engine.reports.activity import filter_margin

            margin = filter_margin(margin, symbol)
        self._last_account = time.monotonic()
        self.activity = replace(self.activity, margin=margin, account=account)
        self._render(self.activity)

    def refresh(self) -> None:
        self._follow_today()
        start, end = self.period()
        if end < start:
            self.message.setText(f"The period ends ({end}) before it starts ({start}).")
            return
        try:
            act = eq.account_activity(self.engine, start, end, self.symbol_edit.text())
        except Exception as exc:  # a damaged row must not take the panel down; say what failed
            self.message.setText(f"Could not read the activity: {exc}")
            return
        self._last_account = time.monotonic()
        self.message.setText("" if act is not None else "No engine store: nothing to show.")
        self.activity = act
        if act is not None:
            self._render(act)

    def _follow_today(self) -> None:
        """Keep *to* on the engine's current day while the user left it there (the simulated clock moves)."""
        today = engine_now(self.engine).astimezone(NEW_YORK).date()
        if today != self._today:
            if _pydate(self.end_edit.date()) == self._today:
                self.end_edit.blockSignals(True)
                self.end_edit.setDate(_qdate(today))
                self.end_edit.blockSignals(False)
            self._today = today

    def _render(self, act: AccountActivity) -> None:
        txs = sorted(act.transactions, key=lambda t: time_sort_key(t.ts), reverse=True)
        self.tx_model.update(
            [f"{t.order_id}|{t.symbol}|{i}" for i, t in enumerate(txs)],
            {"time": [format_market_time(t.ts) for t in txs], "symbol": [t.symbol for t in txs],
             "legs": [t.order_legs for t in txs], "side": [t.side for t in txs], "qty": [t.quantity for t in txs],
             "price": [float(t.price) for t in txs], "fee": [float(t.fee) for t in txs],
             "net": [float(t.net_cash) for t in txs], "kind": [t.kind for t in txs]})
        trades = list(reversed(act.trades))
        self.trade_model.update(
            [t.tag for t in trades],
            {"no": [t.trade_no for t in trades], "underlying": [t.underlying for t in trades],
             "legs": [t.legs for t in trades], "qty": [t.quantity for t in trades],
             "opened": [format_market_time(t.opened_at) for t in trades],
             "closed": [format_market_time(t.closed_at) if t.closed_at else "" for t in trades],
             "entry": [_f(t.entry_price) for t in trades], "exit": [_f(t.exit_price) for t in trades],
             "gross": [float(t.gross_pnl) for t in trades], "fees": [float(t.fees) for t in trades],
             "net": [float(t.net_pnl) for t in trades], "reason": [t.exit_reason for t in trades]})
        keys, cols = [], {c.key: [] for c in self.MARGIN_COLUMNS}
        for m in act.margin:
            keys.append(m.underlying)
            for k, v in (("name", m.underlying), ("qty", None), ("mark", math.nan), ("value", math.nan),
                         ("option_req", m.option_requirement), ("stock_maint", m.stock_maintenance),
                         ("total", m.total)):
                cols[k].append(v)
            for sym, qty, mark, value in m.positions:
                keys.append(f"{m.underlying}|{sym}")
                for k, v in (("name", f"    {sym}"), ("qty", qty), ("mark", mark), ("value", value),
                             ("option_req", math.nan), ("stock_maint", math.nan), ("total", math.nan)):
                    cols[k].append(v)
        self.margin_model.update(keys, cols)

        n_tx = len(act.transactions)
        self.summary.setText(
            f"{plural(n_tx, 'fill')} · net cash {money(act.net_cash, signed=True)} · fees {money(act.fees)} · "
            f"{plural(len(act.trades), 'closed trade')}: realised {money(act.realized_gross, signed=True)} gross, "
            f"{money(act.realized_net, signed=True)} net · {plural(act.open_trades, 'open trade')}")
        by_und = act.fees_by_underlying()
        self.fees_label.setText(
            "Fees: " + (" · ".join(f"{u} {money(v)}" for u, v in by_und.items()) + f" · total {money(act.fees)}"
                        if by_und else "none in this period"))
        a = act.account
        if a is None:
            self.account_label.setText("No account snapshot yet.")
        else:
            self.account_label.setText(
                f"Account {a.account_id} ({a.broker}) · cash {money(a.cash)} · net liquidation "
                f"{money(a.net_liquidation)} · buying power {money(a.buying_power)} · maintenance requirement "
                f"{money(a.maintenance_requirement)}")

    # ---- export ----------------------------------------------------------------------------------
    def current_section(self) -> str:
        return SECTIONS[self.tabs.currentIndex()]

    def _ask_export(self) -> None:
        section = self.current_section()
        start, end = self.period()
        dialog = QtWidgets.QFileDialog(self, "Export activity", f"activity-{section}-{start}-{end}.csv",
                                       "CSV files (*.csv)")
        dialog.setAcceptMode(QtWidgets.QFileDialog.AcceptMode.AcceptSave)
        dialog.setDefaultSuffix("csv")
        dialog.fileSelected.connect(lambda path: self.export_csv(path, section))
        dialog.open()  # never exec(): the loop keeps running

    def export_csv(self, path: str | Path, section: str | None = None) -> int:
        """Write a section of what the panel shows (the tab on top by default); the result line says where."""
        if self.activity is None:
            self.message.setText("Nothing to export.")
            return 0
        section = section or self.current_section()
        try:
            n = write_csv(self.activity, section, path)
        except OSError as exc:
            self.message.setText(f"Could not write {path}: {exc.strerror or exc}")
            return 0
        self.message.setText(f"Wrote {plural(n, 'row')} of {section} to {path}")
        return n


def _f(v: object) -> float:
    return math.nan if v is None else float(v)  # type: ignore[arg-type]


def _qdate(d: date) -> QtCore.QDate:
    return QtCore.QDate(d.year, d.month, d.day)


def _pydate(q: QtCore.QDate) -> date:
    return date(q.year(), q.month(), q.day())
