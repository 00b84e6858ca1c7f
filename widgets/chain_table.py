"""Option chain panel: calls │ strike │ puts for one expiry, centred on the money.

Data: ``ChainUpdated`` (full snapshots) and ``QuotesUpdated`` (streamed bid/ask rows into the current
snapshot) for the selected underlying, coalesced by the app's bridge; IV and Greeks per contract from
:func:`engine.analytics.chain_metrics.chain_metrics` (engine.pricing), the model edge from the pricing
ensemble when the engine provides one. One bounding-box ``dataChanged`` per refresh.

Clicks: a call/put **bid** adds a SELL leg, an **ask** (or mid) adds a BUY leg to the order ticket
(``links.leg_requested``). In-the-money cells are shaded, the at-the-money strike is bold.

Keyboard: the arrows move a cursor cell (also the contract the F5–F7 hotkeys take); Enter acts as a click on it,
B buys and S sells its contract. Plain keys, only while the table has the focus: the window's hotkeys are
function keys and Ctrl combinations, so nothing clashes.

Optional columns (probability ITM/OTM, distance OTM, extrinsic, theoretical value, bid/ask size) come from
:func:`engine.analytics.chain_metrics.chain_columns`, computed only while one is shown; the **Columns** menu (also
on a right-click of the header) chooses them, saved with the layout. Each expiry tab names the expected move (the
ATM straddle, :func:`~engine.analytics.chain_metrics.expected_moves`); **stack** shows several expiries in one
table, each block centred on its own at-the-money strike; **All strikes** lists every strike.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from PySide6 import QtCore, QtGui, QtWidgets

from engine.analytics.chain_metrics import chain_columns, chain_metrics, expected_moves
from engine.bus.commands import ListExpirations, SelectUnderlying
from engine.bus.events import ChainUpdated, FeedChanged
from engine.model import ExerciseStyle, Leg, OptionChain, Side
from engine.model.instruments import NEW_YORK
from widgets import engine_queries as eq
from widgets.base import EventBatch, Panel, qt_alive
from widgets.base import worker_outcome as _outcome
from widgets.live_chain import LiveChain
from widgets.table_model import Column, ColumnTableModel, LiveTableView
from widgets.time_format import format_market_time

if TYPE_CHECKING:
    from engine.core import Engine

Qt = QtCore.Qt

#: per side, from the strike outwards. Widths fit the widest value each column shows ("12,345",
#: "-12.34", "123.4%"): both sides and the strike (~1,110 px) fit the chain dock of a 1920-px screen,
#: so the put side's Θ, Vega, OI, Vol and Edge are not hidden behind a horizontal scroll
_SIDE_FIELDS: list[tuple[str, str, str | Any, int, str]] = [
    ("bid", "Bid", "{:.2f}", 48, "Click a bid to SELL this option"),
    ("mid", "Mid", "{:.2f}", 48, "Mid price; click to BUY"),
    ("ask", "Ask", "{:.2f}", 48, "Click an ask to BUY this option"),
    ("iv", "IV", lambda v: f"{100 * v:.1f}%", 52, "Implied volatility (from the mid)"),
    ("delta", "Δ", "{:+.2f}", 46, "Delta per $1 of the underlying"),
    ("gamma", "Γ", "{:.3f}", 46, "Gamma per $1"),
    ("theta", "Θ", "{:+.2f}", 48, "Theta: $ per share per calendar day"),
    ("vega", "Vega", "{:.2f}", 42, "Vega: $ per share per vol point"),
    ("oi", "OI", "{:,.0f}", 58, "Open interest"),
    ("volume", "Vol", "{:,.0f}", 42, "Volume today"),
    ("edge", "Edge", "{:+.2f}", 50, "Pricing ensemble (BSM, Merton, Heston) minus mid, shown only beyond the "
     "models' disagreement plus half the spread: positive = cheap to buy"),
    # optional columns (engine.analytics.chain_metrics.chain_columns), hidden until chosen
    ("prob_itm", "ITM%", lambda v: f"{100 * v:.0f}%", 44, "Risk-neutral probability of expiring in the money"),
    ("prob_otm", "OTM%", lambda v: f"{100 * v:.0f}%", 44, "Risk-neutral probability of expiring out of the money"),
    ("pct_otm", "Dist", "{:+.1f}%", 52, "How far out of the money, in % of spot (negative: in the money)"),
    ("extrinsic", "Extr", "{:.2f}", 46, "Extrinsic (time) value: mid less intrinsic value"),
    ("theo", "Theo", "{:.2f}", 48, "Theoretical value: BSM at the fitted surface's vol for this strike"),
    ("bid_size", "BidSz", "{:,.0f}", 48, "Contracts bid"),
    ("ask_size", "AskSz", "{:,.0f}", 48, "Contracts offered"),
]

#: shown unless the user chooses them (the default set fits a 1920-px screen without a horizontal scroll)
OPTIONAL_FIELDS: frozenset[str] = frozenset({"prob_itm", "prob_otm", "pct_otm", "extrinsic", "theo", "bid_size",
                                             "ask_size"})


def _columns() -> list[Column]:
    calls = [
        Column(f"c_{k}", h, fmt, width=w, tooltip="Call " + tip, signed=(k == "edge"))
        for k, h, fmt, w, tip in reversed(_SIDE_FIELDS)
    ]
    strike = [Column("expiry", "Expiry", align="center", width=74, tooltip="Expiry (stacked view)"),
              Column("strike", "Strike", "{:g}", align="center", width=56, tooltip="Strike")]
    puts = [
        Column(f"p_{k}", h, fmt, width=w, tooltip="Put " + tip, signed=(k == "edge"))
        for k, h, fmt, w, tip in _SIDE_FIELDS
    ]
    return calls + strike + puts


class ChainTableModel(ColumnTableModel):
    """The chain block. Hidden columns: ``c_itm``/``p_itm`` (bool), ``atm`` (bool), ``c_row``/``p_row``, ``block``
    (which stacked expiry a row belongs to)."""

    def __init__(self, parent: QtCore.QObject | None = None) -> None:
        super().__init__(_columns(), parent)
        n_side = len(_SIDE_FIELDS)
        self.expiry_column = n_side
        self.strike_column = n_side + 1
        #: (row, column) of the keyboard cursor: the contract Enter/B/S and the F5–F7 hotkeys act on
        self.cursor: tuple[int, int] | None = None
        self._cursor_bg = QtGui.QColor(255, 196, 0, 150)
        self._block_bg = QtGui.QColor(128, 128, 128, 70)
        self._itm = QtGui.QColor(70, 130, 180, 55)
        self._strike_bg = QtGui.QColor(128, 128, 128, 40)
        self._atm_bg = QtGui.QColor(230, 160, 40, 90)
        self._bold = QtGui.QFont()
        self._bold.setBold(True)

    def cell_background(self, row: int, column: int) -> QtGui.QColor | None:
        if not self._data:
            return None
        if self.cursor == (row, column):
            return self._cursor_bg
        if column == self.expiry_column:
            return self._block_bg if self._data["block"][row] % 2 else self._strike_bg
        if column == self.strike_column:
            return self._atm_bg if self._data["atm"][row] else self._strike_bg
        if column < self.strike_column:
            return self._itm if self._data["c_itm"][row] else None
        return self._itm if self._data["p_itm"][row] else None

    def cell_font(self, row: int, column: int) -> QtGui.QFont | None:
        if column == self.strike_column and self._data and self._data["atm"][row]:
            return self._bold
        return None


class ChainPanel(Panel):
    title: ClassVar[str] = "Option chain"
    panel_id: ClassVar[str] = "chain"

    #: emitted with each leg built from a click (also sent to the ticket through ``links``)
    leg_clicked = QtCore.Signal(object)

    def __init__(self, engine: Engine | None, parent: QtWidgets.QWidget | None = None, *, strike_window: int = 12) -> None:
        super().__init__(engine, parent)
        self.underlying: str = ""
        self.live = LiveChain(engine)
        self.expiry: np.datetime64 | None = None
        self._expiries: list[np.datetime64] = []
        self.refreshes = 0
        self.greeks_interval_s = 0.5
        self._metrics: Any = None
        self._metrics_block: Any = None
        self._metrics_at = -1e9
        self._extra: Any = None  # the optional columns of the current metrics (None: not computed)
        self.am_iv_interval_s = 5.0
        self._am_iv = _RowValues()
        self._am_task: Any = None
        self._am_at = -1e9
        self._am_rows = b""
        self._subscribed: tuple[Any, ...] | None = None

        self.symbol_box = QtWidgets.QComboBox()
        self.symbol_box.setEditable(True)
        self.symbol_box.setInsertPolicy(QtWidgets.QComboBox.InsertPolicy.NoInsert)
        self.symbol_box.setMinimumWidth(110)
        self.symbol_box.setToolTip("Underlying: type to search")
        completer = self.symbol_box.completer()
        if completer is not None:
            completer.setFilterMode(Qt.MatchFlag.MatchContains)
            completer.setCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.symbol_box.activated.connect(lambda _i: self.select_underlying(self.symbol_box.currentText()))
        self.symbol_box.lineEdit().returnPressed.connect(lambda: self.select_underlying(self.symbol_box.currentText()))
        self.links.underlying_requested.connect(self.select_underlying)  # e.g. a watchlist row

        self.spot_label = QtWidgets.QLabel("—")
        f = self.spot_label.font()
        f.setPointSizeF(f.pointSizeF() * 1.35)
        f.setBold(True)
        self.spot_label.setFont(f)
        self.info_label = QtWidgets.QLabel("")
        self.info_label.setStyleSheet("color: gray")

        self.window_spin = QtWidgets.QSpinBox()
        self.window_spin.setRange(2, 400)
        self.window_spin.setValue(strike_window)
        self.window_spin.setPrefix("± ")
        self.window_spin.setSuffix(" strikes")
        self.window_spin.setToolTip("Strikes shown either side of the at-the-money strike")
        self.window_spin.valueChanged.connect(lambda _v: self.refresh())
        self.all_strikes_check = QtWidgets.QCheckBox("All strikes")
        self.all_strikes_check.setToolTip("Every listed strike of the expiry, not only the window around the money")
        self.all_strikes_check.toggled.connect(self._on_all_strikes)
        self.stack_spin = QtWidgets.QSpinBox()
        self.stack_spin.setRange(1, 12)
        self.stack_spin.setPrefix("stack ")
        self.stack_spin.setSuffix(" exp.")
        self.stack_spin.setToolTip("Show this many expiries, from the selected one on, stacked in one table")
        self.stack_spin.valueChanged.connect(lambda _v: self._on_stack())
        self.columns_button = QtWidgets.QToolButton()
        self.columns_button.setText("Columns")
        self.columns_button.setToolTip("Choose the columns (both sides); saved with the layout")
        self.columns_button.setPopupMode(QtWidgets.QToolButton.ToolButtonPopupMode.InstantPopup)
        self.columns_menu = QtWidgets.QMenu(self.columns_button)
        self.columns_menu.aboutToShow.connect(lambda: self._fill_columns_menu(self.columns_menu))
        self.columns_button.setMenu(self.columns_menu)
        #: per expiry, the at-the-money straddle's mid (engine.analytics.chain_metrics.expected_moves)
        self.expected_move: dict[Any, float] = {}
        self._em_at = -1e9
        self._em_key: Any = None
        self.em_interval_s = 2.0

        self.expiry_tabs = QtWidgets.QTabBar()
        self.expiry_tabs.setExpanding(False)
        self.expiry_tabs.setDrawBase(False)
        self.expiry_tabs.setUsesScrollButtons(True)
        self.expiry_tabs.setElideMode(Qt.TextElideMode.ElideNone)
        self.expiry_tabs.currentChanged.connect(self._on_expiry_tab)

        self.model = ChainTableModel(self)
        self.table = LiveTableView(self.model)
        self.table.setSelectionMode(QtWidgets.QAbstractItemView.SelectionMode.NoSelection)
        self.table.clicked.connect(self._on_click)
        self.table.setMouseTracking(True)
        # keyboard: arrows move the cursor cell, Enter adds it as a click would, B buys and S sells it
        self.table.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.table.selectionModel().currentChanged.connect(self._on_current)
        self.table.installEventFilter(self)
        # wide dock: columns stretch evenly (Stretch never measures contents, unlike ResizeToContents);
        # narrow dock: declared widths and a horizontal scroll bar. Right-click the header to hide columns.
        header = self.table.horizontalHeader()
        header.setMinimumSectionSize(40)
        header.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        header.customContextMenuRequested.connect(self._header_menu)
        self._stretched: tuple[Any, ...] | None = None  # (viewport width, visible columns) last fitted

        top = QtWidgets.QHBoxLayout()
        top.addWidget(self.symbol_box)
        top.addWidget(self.spot_label)
        top.addWidget(self.info_label, 1)
        top.addWidget(self.window_spin)
        top.addWidget(self.all_strikes_check)
        top.addWidget(self.stack_spin)
        top.addWidget(self.columns_button)
        sides = QtWidgets.QHBoxLayout()
        calls_lbl = QtWidgets.QLabel("CALLS  ·  click bid = sell, ask = buy")
        puts_lbl = QtWidgets.QLabel("PUTS")
        for lbl in (calls_lbl, puts_lbl):
            lbl.setStyleSheet("color: gray; font-weight: bold")
        sides.addWidget(calls_lbl)
        sides.addStretch(1)
        sides.addWidget(puts_lbl)
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.setSpacing(3)
        lay.addLayout(top)
        lay.addWidget(self.expiry_tabs)
        lay.addLayout(sides)
        lay.addWidget(self.table, 1)

        # model edge: the pricing ensemble at the engine's fitted surface (needs the surface service)
        self._edge_available = self.engine is not None and self.engine.surfaces is not None
        self.edge_interval_s = 5.0
        self._fair = _RowValues()
        self._band = _RowValues()  # the ensemble members' disagreement per row
        self._fair_key: Any = None
        self._fair_at = -1e9
        self._fair_task: Any = None
        for side in ("c", "p"):
            self.table.setColumnHidden(self.model.column_index(f"{side}_edge"), not self._edge_available)
            for key in OPTIONAL_FIELDS:
                self.table.setColumnHidden(self.model.column_index(f"{side}_{key}"), True)
        self.table.setColumnHidden(self.model.expiry_column, True)  # shown when expiries are stacked
        self.reload_underlyings()

    # ---- columns ---------------------------------------------------------------------------------
    def _fit_columns(self) -> None:
        """Columns at their designed widths, with spare width shared in proportion to them (never an
        equal share: a stretched 49-px OI column cut "19,703" to "19,7…"). Only on a resize."""
        visible = [(i, c) for i, c in enumerate(self.model.columns) if not self.table.isColumnHidden(i)]
        need = sum(c.width for _i, c in visible)
        # room for the vertical scroll bar even before the rows arrive (its appearance does not resize
        # the panel, so widths fitted to the bare viewport would overflow by its width)
        t = self.table
        bar = t.verticalScrollBar()
        avail = t.viewport().width() - (0 if bar.isVisible() else bar.sizeHint().width())
        key = (avail, tuple(i for i, _c in visible))
        if key == self._stretched:
            return
        self._stretched = key  # type: ignore[assignment]
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QtWidgets.QHeaderView.ResizeMode.Interactive)
        extra = max(0, avail - need)
        given = 0
        for n, (i, col) in enumerate(visible):
            add = extra - given if n == len(visible) - 1 else int(extra * col.width / max(need, 1))
            given += add
            self.table.setColumnWidth(i, col.width + add)

    def resizeEvent(self, event: QtGui.QResizeEvent) -> None:
        super().resizeEvent(event)
        self._fit_columns()

    def hidden_fields(self) -> list[str]:
        """Default side fields (``iv``, ``volume`` ...) hidden by the user, for both calls and puts (the optional
        columns are hidden unless chosen: :meth:`shown_fields` has the whole choice)."""
        return [k for k, *_ in _SIDE_FIELDS
                if k not in OPTIONAL_FIELDS and self.table.isColumnHidden(self.model.column_index(f"c_{k}"))]

    def shown_fields(self) -> list[str]:
        """Side fields shown, in table order (what the column chooser saves)."""
        return [k for k, *_ in _SIDE_FIELDS if not self.table.isColumnHidden(self.model.column_index(f"c_{k}"))]

    def set_field_hidden(self, field: str, hidden: bool) -> None:
        if field == "edge" and not self._edge_available:
            hidden = True  # no surface service: nothing to show
        for side in ("c", "p"):
            self.table.setColumnHidden(self.model.column_index(f"{side}_{field}"), hidden)
        self._stretched = None
        self._fit_columns()
        if not hidden and field in OPTIONAL_FIELDS:
            self._extra = None
            self.refresh()

    def _fill_columns_menu(self, menu: QtWidgets.QMenu) -> None:
        menu.clear()
        for key, header, _fmt, _w, tip in _SIDE_FIELDS:
            if key == "edge" and not self._edge_available:
                continue
            act = menu.addAction(f"{header} — {tip.split(':')[0].split(',')[0]}" if key in OPTIONAL_FIELDS else header)
            act.setCheckable(True)
            act.setChecked(not self.table.isColumnHidden(self.model.column_index(f"c_{key}")))
            act.toggled.connect(lambda on, k=key: self.set_field_hidden(k, not on))
        menu.addSeparator()
        reset = menu.addAction("Default columns")
        reset.triggered.connect(self.default_columns)

    def default_columns(self) -> None:
        for key, *_ in _SIDE_FIELDS:
            self.set_field_hidden(key, key in OPTIONAL_FIELDS)

    def _header_menu(self, pos: QtCore.QPoint) -> None:
        menu = QtWidgets.QMenu(self)
        self._fill_columns_menu(menu)
        menu.popup(self.table.horizontalHeader().mapToGlobal(pos))

    def _on_all_strikes(self, on: bool) -> None:
        self.window_spin.setEnabled(not on)
        self.refresh()

    def _on_stack(self) -> None:
        self.table.setColumnHidden(self.model.expiry_column, self.stack_spin.value() <= 1)
        self._stretched = None
        self._fit_columns()
        self.refresh()

    # ---- keyboard --------------------------------------------------------------------------------
    def _on_current(self, current: QtCore.QModelIndex, _previous: QtCore.QModelIndex) -> None:
        self.model.cursor = (current.row(), current.column()) if current.isValid() else None
        self.table.viewport().update()

    def eventFilter(self, watched: QtCore.QObject, event: QtCore.QEvent) -> bool:
        if watched is self.table and isinstance(event, QtGui.QKeyEvent) \
                and event.type() == QtCore.QEvent.Type.KeyPress:
            key = event.key()
            mods = event.modifiers() & ~Qt.KeyboardModifier.KeypadModifier
            if mods == Qt.KeyboardModifier.NoModifier:
                if key in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
                    return self.act_on_cursor(None)
                if key == Qt.Key.Key_B:
                    return self.act_on_cursor(Side.BUY)
                if key == Qt.Key.Key_S:
                    return self.act_on_cursor(Side.SELL)
        return super().eventFilter(watched, event)

    def act_on_cursor(self, side: Side | None) -> bool:
        """Add the cursor cell's contract to the ticket: ``side`` (B/S), or as a click would (Enter: a bid sells,
        anything else on that side buys). False — the key goes on — when the cursor is not on a contract."""
        idx = self.table.currentIndex()
        if not idx.isValid() or self.chain is None:
            return False
        key = self.model.columns[idx.column()].key
        if key[:2] not in ("c_", "p_"):
            return False
        row = int(self.model.value(idx.row(), f"{key[0]}_row"))
        if row < 0:
            return False
        if side is None:
            side = Side.SELL if key.endswith("_bid") else Side.BUY
        self.add_leg(row, side)
        return True

    # ---- selection -------------------------------------------------------------------------------
    def reload_underlyings(self) -> None:
        symbols = eq.underlyings(self.engine)
        current = self.underlying
        self.symbol_box.blockSignals(True)
        self.symbol_box.clear()
        self.symbol_box.addItems(symbols)
        self.symbol_box.blockSignals(False)
        if not current and symbols:
            self.select_underlying(symbols[0])
        elif current:
            self.symbol_box.setEditText(current)

    def select_underlying(self, symbol: str) -> None:
        """Show ``symbol``'s chain (from the feed's cache now, then streamed) and ask the feed to stream it."""
        symbol = symbol.strip().upper()
        if not symbol:
            return
        known = eq.underlyings(self.engine)
        if known and symbol not in known:
            self.report_error(f"{symbol} is not available from the feed ({', '.join(known[:8])}…)")
            self.symbol_box.setEditText(self.underlying)
            return
        self.underlying = symbol
        self.symbol_box.setEditText(symbol)
        if self.live.select(symbol):
            self.expiry = None
            if self.live.chain is not None:
                self._update_expiry_tabs()
            else:
                self._bootstrap(symbol)
        self.links.underlying_selected.emit(symbol)
        self.refresh()

    def _bootstrap(self, symbol: str) -> None:
        """No snapshot yet (a broker feed streams only what is asked for): ask the engine for the
        expiries, then stream the nearest; once its chain arrives, the visible strike window takes over
        the subscription. Both are commands: the panel never calls the feed."""
        bus = self.engine.bus if self.engine is not None else None
        if bus is None or not bus.has_handler(ListExpirations):
            return

        def nearest(expiries: list[Any]) -> None:
            if expiries and qt_alive(self) and self.underlying == symbol and self.live.chain is None:
                self.send(SelectUnderlying(symbol=symbol, expiries=(expiries[0],)))

        self.send(ListExpirations(symbol=symbol), on_result=nearest)

    def select_expiry(self, expiry: np.datetime64) -> None:
        e = np.datetime64(expiry, "s")
        if e in self._expiries:
            self.expiry_tabs.setCurrentIndex(self._expiries.index(e))

    def _on_expiry_tab(self, index: int) -> None:
        if 0 <= index < len(self._expiries):
            self.expiry = self._expiries[index]
            self.links.expiry_selected.emit(self.underlying, self.expiry)
            self.refresh()

    # ---- data ------------------------------------------------------------------------------------
    @property
    def chain(self) -> OptionChain | None:
        return self.live.chain

    def set_chain(self, chain: OptionChain) -> None:
        """Take a new snapshot of the selected underlying."""
        self.live.set_chain(chain)
        self._update_expiry_tabs()
        self.refresh()

    def apply_events(self, batch: EventBatch) -> None:
        if batch.has(FeedChanged):  # a broker connected or disconnected: same view, new data source
            self._subscribed = None
            symbols = eq.underlyings(self.engine)
            keep = self.underlying if self.underlying in symbols else (symbols[0] if symbols else "")
            self.expiry = None
            self.reload_underlyings()
            if keep == self.underlying:
                self.live.reload()
                if self.live.chain is not None:
                    self._update_expiry_tabs()
                else:
                    self._expiries = []
                    self._bootstrap(keep)
                self.refresh()
            elif keep:
                self.select_underlying(keep)
            return
        if not self.underlying:
            if batch.has(ChainUpdated):
                self.reload_underlyings()
            return
        new_chain = self.underlying in batch.latest(ChainUpdated)
        changed = self.live.apply(batch)
        if changed and new_chain:
            self._update_expiry_tabs()
        if changed or self._surface_changed(batch):
            self.refresh()

    def _update_expiry_tabs(self) -> None:
        if self.chain is None:
            return
        expiries = list(self.chain.expiries())
        if expiries == self._expiries:
            return
        now = self.chain.ts
        keep = self.expiry if self.expiry in expiries else (expiries[0] if expiries else None)
        self._expiries = expiries
        self.expiry_tabs.blockSignals(True)
        while self.expiry_tabs.count():
            self.expiry_tabs.removeTab(0)
        for e in expiries:
            self.expiry_tabs.addTab(_expiry_label(e, now))
        self.expiry = keep
        if keep is not None:
            self.expiry_tabs.setCurrentIndex(expiries.index(keep))
        self.expiry_tabs.blockSignals(False)
        if keep is not None:
            self.links.expiry_selected.emit(self.underlying, keep)

    def stacked_expiries(self) -> list[np.datetime64]:
        """The expiries shown: the selected one, and with the stack the next ones after it."""
        if self.expiry is None:
            return []
        n = self.stack_spin.value()
        if n <= 1 or self.expiry not in self._expiries:
            return [self.expiry]
        i = self._expiries.index(self.expiry)
        return self._expiries[i:i + n]

    def refresh(self) -> None:
        """Rebuild the visible block: per shown expiry the strike window around ATM (or every strike)."""
        chain = self.chain
        if chain is None or self.expiry is None:
            self.model.clear() if self.model.rowCount() else None
            self.spot_label.setText(f"{self.underlying or '—'}")
            self.info_label.setText("waiting for the chain…" if self.underlying else "")
            return
        spot = self.live.spot if math.isfinite(self.live.spot) else chain.spot
        expiries = self.stacked_expiries()
        blocks: list[tuple[np.datetime64, np.ndarray, np.ndarray, np.ndarray, int]] = []
        n_strikes = 0
        for e in expiries:
            rows = np.nonzero(chain.expiry == e)[0]
            strikes = np.unique(chain.strike[rows])
            if len(strikes) == 0:
                continue
            n_strikes += len(strikes)
            atm_i = int(np.argmin(np.abs(strikes - spot)))
            w = len(strikes) if self.all_strikes_check.isChecked() else self.window_spin.value()
            lo, hi = max(0, atm_i - w), min(len(strikes), atm_i + w + 1)
            vis_e = strikes[lo:hi]
            calls_e = np.full(len(vis_e), -1)
            puts_e = np.full(len(vis_e), -1)
            rs = rows[(chain.strike[rows] >= vis_e[0]) & (chain.strike[rows] <= vis_e[-1])]
            pos = np.searchsorted(vis_e, chain.strike[rs])
            is_call = chain.is_call[rs]
            calls_e[pos[is_call]] = rs[is_call]
            puts_e[pos[~is_call]] = rs[~is_call]
            blocks.append((e, vis_e, calls_e, puts_e, atm_i - lo))
        if not blocks:
            return
        vis = np.concatenate([b[1] for b in blocks])
        calls = np.concatenate([b[2] for b in blocks])
        puts = np.concatenate([b[3] for b in blocks])
        block = np.concatenate([np.full(len(b[1]), i) for i, b in enumerate(blocks)])
        first = np.concatenate([np.arange(len(b[1])) == 0 for b in blocks])
        atm = np.concatenate([np.arange(len(b[1])) == b[4] for b in blocks])
        self._subscribe(vis, [b[0] for b in blocks])

        r, q = eq.rates(self.engine, self.underlying)
        now = chain.ts  # Greeks as of the snapshot the quotes belong to (simulated or wall time)
        pick = np.concatenate([calls[calls >= 0], puts[puts >= 0]])
        chain_now = chain if spot == chain.spot else _with_spot(chain, spot)
        # IV and Greeks: recomputed when the block changes, else at most every ``greeks_interval_s``
        # (quotes repaint at the bridge's ~10 Hz; Greeks at 2 Hz are plenty and keep the loop free)
        block_key = (id(chain), tuple(expiries), pick.tobytes())
        t_now = time.monotonic()
        m = self._metrics
        if m is None or block_key != self._metrics_block or t_now - self._metrics_at >= self.greeks_interval_s:
            iv = None
            if chain.style is ExerciseStyle.AMERICAN:  # early exercise: American IVs, computed off the loop
                self._request_american_ivs(chain_now, pick, r, q)
                if self._am_iv:
                    iv = self._am_iv.get(pick)
            m = chain_metrics(chain_now, pick, now=now, r=r, q=q, bid=self.live.bid, ask=self.live.ask, iv=iv)
            self._metrics, self._metrics_block, self._metrics_at = m, block_key, t_now
            self._extra = None
        extra = self._extra
        optional = [k for k in OPTIONAL_FIELDS if k in self.shown_fields()]
        if optional and extra is None:  # only when a column needs them (the theo value reads the surface)
            extra = self._extra = chain_columns(chain_now, m, r=r, q=q, bid=self.live.bid, ask=self.live.ask,
                                                surface=self._surface_for(self.underlying) if "theo" in optional
                                                else None)
        edge = self._model_edge(chain_now, pick, m, r, q)
        n_calls = int((calls >= 0).sum())

        data: dict[str, np.ndarray] = {"strike": vis}
        for side, idx in (("c", calls), ("p", puts)):
            have = idx >= 0
            safe = np.where(have, idx, 0)

            def col(arr: np.ndarray, have: np.ndarray = have, safe: np.ndarray = safe) -> np.ndarray:
                return np.where(have, arr[safe], np.nan)

            bid, ask = col(self.live.bid), col(self.live.ask)
            with np.errstate(invalid="ignore"):
                ok = (ask >= bid) & (bid >= 0)
            data[f"{side}_bid"] = bid
            data[f"{side}_ask"] = ask
            data[f"{side}_mid"] = np.where(ok, 0.5 * (bid + ask), np.nan)
            data[f"{side}_oi"] = col(chain.open_interest)
            data[f"{side}_volume"] = col(chain.volume)
            part = slice(0, n_calls) if side == "c" else slice(n_calls, len(pick))
            for name in ("iv", "delta", "gamma", "theta", "vega"):
                values = np.full(len(vis), np.nan)
                values[have] = getattr(m, name)[part]
                data[f"{side}_{name}"] = values
            for name in OPTIONAL_FIELDS:
                values = np.full(len(vis), np.nan)
                if extra is not None:
                    values[have] = getattr(extra, name)[part]
                data[f"{side}_{name}"] = values
            values = np.full(len(vis), np.nan)
            if edge is not None:
                values[have] = edge[part]
            data[f"{side}_edge"] = values
            data[f"{side}_row"] = idx
        data["c_itm"] = vis < spot
        data["p_itm"] = vis > spot
        data["atm"] = atm
        data["block"] = block
        stacked = len(blocks) > 1
        labels = {b[0]: _expiry_short(b[0]) for b in blocks}
        data["expiry"] = np.array([labels[blocks[i][0]] if f else "" for i, f in zip(block, first, strict=True)],
                                  dtype=object)
        keys = (np.array([f"{blocks[i][0]}|{k:g}" for i, k in zip(block, vis, strict=True)], dtype=object)
                if stacked else vis.astype(object))
        self.model.update(keys, data)
        self.refreshes += 1
        self._update_expected_moves()
        self.spot_label.setText(f"{self.underlying}  {spot:,.2f}")
        n_exp = len(self._expiries)
        shown = f"{len(blocks)} expiries stacked, {len(vis)} rows" if stacked else f"{len(vis)} of {n_strikes} strikes"
        self.info_label.setText(
            f"{format_market_time(chain.ts)} · {shown} · {n_exp} expiries · r {100 * r:.2f}% q {100 * q:.2f}%"
        )

    def _update_expected_moves(self) -> None:
        """Each expiry tab names the market's expected move (the ATM straddle), refreshed every few seconds."""
        chain = self.chain
        if chain is None:
            return
        key = (id(chain), tuple(self._expiries))
        if key == self._em_key and time.monotonic() - self._em_at < self.em_interval_s:
            return
        self._em_key, self._em_at = key, time.monotonic()
        self.expected_move = expected_moves(chain, bid=self.live.bid, ask=self.live.ask)
        for i, e in enumerate(self._expiries):
            em = self.expected_move.get(e, math.nan)
            text = _expiry_label(e, chain.ts) + (f"  ±{em:,.2f}" if math.isfinite(em) else "")
            if self.expiry_tabs.tabText(i) != text:
                self.expiry_tabs.setTabText(i, text)
                self.expiry_tabs.setTabToolTip(i, f"Expected move to expiry: ±{em:,.2f} (the at-the-money straddle)"
                                               if math.isfinite(em) else "No two-sided at-the-money straddle")

    # ---- model edge -----------------------------------------------------------------------------
    def _request_american_ivs(self, chain: OptionChain, rows: np.ndarray, r: float, q: float) -> None:
        """American implied vols of the visible block in a worker thread, at most every ``am_iv_interval_s``.
        Until they arrive (and for rows they cannot price) the table shows BSM vols."""
        if self._am_task is not None and not self._am_task.done():
            return
        if time.monotonic() - self._am_at < self.am_iv_interval_s and self._am_rows == rows.tobytes():
            return
        from engine.analytics.chain_metrics import american_implied_vols

        bid, ask = self.live.bid[rows].copy(), self.live.ask[rows].copy()
        block = chain.take(np.asarray(rows, dtype=int))  # ship the visible block, not the whole chain
        fut = self._offload(american_implied_vols, block, np.arange(len(rows)), now=chain.ts, r=r, q=q,
                            bid=bid, ask=ask)
        if fut is None:
            return
        self._am_at = time.monotonic()
        self._am_rows = rows.tobytes()

        def done(f: Any, rows: np.ndarray = rows) -> None:
            value, _error = _outcome(f)
            if value is None or not qt_alive(self):
                return
            self._am_iv = _RowValues(rows, value)
            self._metrics_at = -1e9  # use them at the next refresh
            self.refresh()

        fut.add_done_callback(done)
        self._am_task = fut

    def _offload(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run an analytics function in the engine's worker processes (``Engine.run_cpu``) and return
        its future; a thread when the engine has none. American IVs and ensemble values of a 600-row
        block are ~100 ms of mostly-Python numpy: in a thread they would hold the GIL the GUI needs."""
        import asyncio
        import functools

        loop = _running_loop()
        if loop is None or (self.engine is not None and not self.engine.running):  # stopping: no new work
            return None
        job = functools.partial(fn, *args, **kwargs)
        if self.engine is not None:
            return asyncio.ensure_future(self.engine.run_cpu(job), loop=loop)
        return loop.run_in_executor(None, job)

    def _surface_changed(self, batch: EventBatch) -> bool:
        if not self._edge_available:
            return False
        from engine.surface.service import SurfaceUpdated

        return ("surface", self.underlying) in batch.latest(SurfaceUpdated)

    def _surface_for(self, underlying: str) -> Any:
        return eq.fitted_surface(self.engine, underlying)

    def _model_edge(self, chain: OptionChain, rows: np.ndarray, m: Any, r: float, q: float) -> np.ndarray | None:
        """Ensemble fair value minus mid where it beats the models' band plus half the spread (else NaN:
        blank); fair values and bands are recomputed off the loop at most every ``edge_interval_s`` and when
        the surface, expiry or window changes."""
        if not self._edge_available or len(rows) == 0:
            return None
        surface = self._surface_for(self.underlying)
        if surface is None:
            return None
        key = (id(surface), self.underlying, self.expiry, tuple(rows.tolist()))
        now = time.monotonic()
        stale = key != self._fair_key or now - self._fair_at > self.edge_interval_s
        if stale and (self._fair_task is None or self._fair_task.done()):
            self._fair_at = now
            from engine.analytics.chain_metrics import ensemble_fair_values

            block = chain.take(np.asarray(rows, dtype=int))
            fut = self._offload(ensemble_fair_values, block, np.arange(len(rows)), surface, now=chain.ts, r=r, q=q,
                                weights=eq.ensemble_weights(self.engine))
            if fut is not None:

                def done(f: Any, key: Any = key, rows: np.ndarray = rows) -> None:
                    value, error = _outcome(f)  # first: an unretrieved exception is logged at shutdown
                    if not qt_alive(self):
                        return
                    if value is None:
                        if error and (self.engine is None or self.engine.running):
                            self.report_error(f"model edge unavailable: {error}")
                        return
                    self._fair = _RowValues(rows, value[:, 0])
                    self._band = _RowValues(rows, value[:, 1])
                    self._fair_key = key
                    self.refresh()

                fut.add_done_callback(done)
                self._fair_task = fut
        if not self._fair:
            return None
        from engine.analytics.chain_metrics import visible_edge

        return visible_edge(self._fair.get(rows), self._band.get(rows), self.live.bid[rows], self.live.ask[rows])

    def _subscribe(self, strikes: np.ndarray, expiries: list[np.datetime64]) -> None:
        """Ask the feed to stream quotes for the visible block (expiries × strike window), once per change."""
        if not expiries or len(strikes) == 0:
            return
        days = tuple(e.astype("datetime64[D]").astype(object) for e in expiries)
        window = (float(strikes.min()), float(strikes.max()))
        key = (self.underlying, days, window)
        if key == self._subscribed:
            return
        self._subscribed = key
        bus = self.engine.bus if self.engine is not None else None
        if bus is not None and bus.has_handler(SelectUnderlying):
            self.send(SelectUnderlying(symbol=self.underlying, expiries=days, strikes=window))

    # ---- clicks ----------------------------------------------------------------------------------
    def _on_click(self, index: QtCore.QModelIndex) -> None:
        key = self.model.columns[index.column()].key
        if key[:2] not in ("c_", "p_") or key[2:] not in ("bid", "ask", "mid"):
            return
        row = int(self.model.value(index.row(), f"{key[0]}_row"))
        if row < 0 or self.chain is None:
            return
        side = Side.SELL if key.endswith("bid") else Side.BUY
        self.add_leg(row, side)

    def add_leg(self, chain_row: int, side: Side) -> Leg:
        """Build the leg of a chain row and send it to the ticket."""
        assert self.chain is not None
        leg = Leg(self.chain.option(chain_row), side)
        self.leg_clicked.emit(leg)
        self.links.leg_requested.emit(leg)
        return leg

    def row_count(self) -> int:
        """Strikes shown (the selftest waits for rows)."""
        return self.model.rowCount()

    def cell_rect(self, strike: float, column_key: str) -> QtCore.QRect:
        """Viewport rectangle of a cell (tests click it)."""
        row = self.model.row_of(strike)
        return self.table.visualRect(self.model.index(row, self.model.column_index(column_key)))

    # ---- persistence -----------------------------------------------------------------------------
    def panel_state(self) -> dict[str, Any]:
        return {"underlying": self.underlying, "strike_window": self.window_spin.value(),
                "hidden": self.hidden_fields(), "columns": self.shown_fields(), "stack": self.stack_spin.value(),
                "all_strikes": self.all_strikes_check.isChecked()}

    def restore_panel_state(self, state: dict[str, Any]) -> None:
        if isinstance(state.get("strike_window"), int):
            self.window_spin.setValue(state["strike_window"])
        if isinstance(state.get("stack"), int):
            self.stack_spin.setValue(state["stack"])
        if isinstance(state.get("all_strikes"), bool):
            self.all_strikes_check.setChecked(state["all_strikes"])
        shown, hidden = state.get("columns"), state.get("hidden")
        if isinstance(shown, list):  # the column chooser's choice
            for key, *_ in _SIDE_FIELDS:
                self.set_field_hidden(key, key not in shown)
        elif isinstance(hidden, list):  # a layout saved before the optional columns: those stay hidden
            for key, *_ in _SIDE_FIELDS:
                if key not in OPTIONAL_FIELDS:
                    self.set_field_hidden(key, key in hidden)
        if isinstance(state.get("underlying"), str) and state["underlying"]:
            self.select_underlying(state["underlying"])


class _RowValues:
    """Values computed for some chain rows (a worker's result), looked up for other row sets
    vectorized: NaN where a row was not computed."""

    def __init__(self, rows: np.ndarray | None = None, values: Any = None) -> None:
        rows = np.asarray([] if rows is None else rows, dtype=np.int64)
        vals = np.asarray([] if values is None else values, dtype=float)
        if rows.shape != vals.shape:
            raise ValueError(f"{len(vals)} values for {len(rows)} rows")
        order = np.argsort(rows, kind="stable")
        self.rows, self.values = rows[order], vals[order]

    def __len__(self) -> int:
        return len(self.rows)

    def get(self, rows: np.ndarray) -> np.ndarray:
        query = np.asarray(rows, dtype=np.int64)
        if len(self.rows) == 0:
            return np.full(len(query), np.nan)
        pos = np.clip(np.searchsorted(self.rows, query), 0, len(self.rows) - 1)
        return np.where(self.rows[pos] == query, self.values[pos], np.nan)


def _running_loop() -> Any:
    import asyncio

    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        try:
            return asyncio.get_event_loop_policy().get_event_loop()
        except RuntimeError:
            return None


def _with_spot(chain: OptionChain, spot: float) -> OptionChain:
    return chain.with_quotes(chain.bid, chain.ask, spot=spot)


def _expiry_short(expiry: np.datetime64) -> str:
    """``20 Mar 26``: the expiry's New York date, for the stacked view's expiry column."""
    exp_ny = expiry.astype("datetime64[s]").astype(datetime).replace(tzinfo=UTC).astimezone(NEW_YORK).date()
    return f"{exp_ny:%d %b %y}"


def _expiry_label(expiry: np.datetime64, now: datetime) -> str:
    """``20 Mar 26  (18d)``: days to expiry counted in New York calendar dates, like traders do."""
    exp_ny = expiry.astype("datetime64[s]").astype(datetime).replace(tzinfo=UTC).astimezone(NEW_YORK).date()
    dte = max(0, (exp_ny - now.astimezone(NEW_YORK).date()).days)
    return f"{exp_ny:%d %b %y}  ({dte}d)"
