"""Watchlist panel: named lists of symbols with the columns a trader scans by.

The engine computes every number (:mod:`engine.watchlist`); this panel keeps the lists, shows the rows,
sorts them on the raw values (unknown values sort last either way), hides and shows columns from the
header's context menu, and saves lists, columns and sort order with the window layout (``panel_state``).

Selecting a row selects that underlying in every linked panel: the panel asks through
``links.underlying_requested``; the chain panel takes it (and streams the chain through the bus's
``SelectUnderlying``) and announces ``underlying_selected``, which the smile and chart panels follow.
Without a chain panel the watchlist announces the selection itself.

Rows are recomputed at most once a second (a watchlist is scanned, not watched tick by tick); the stored
history behind them is re-read when a backfill lands and once a minute.
"""

from __future__ import annotations

import math
import time
from datetime import date
from typing import TYPE_CHECKING, Any

from PySide6 import QtCore, QtGui, QtWidgets

from engine.bus.commands import SearchSymbols
from engine.history.service import HistoryBackfilled
from engine.watchlist import COLUMN_KEYS, COLUMNS, WatchlistData, WatchlistError, WatchRow, normalize_symbol
from widgets import engine_queries
from widgets.base import EventBatch, Panel

if TYPE_CHECKING:
    from engine.core import Engine

Qt = QtCore.Qt
REFRESH_S = 1.0
#: stored history is re-read this often (backfills announce themselves; another process's import does not)
REREAD_S = 60.0
DEFAULT_LIST = "Default"
#: a broker's symbol search is sent once typing pauses this long (IB allows one request a second)
SEARCH_PAUSE_MS = 400
_POS = QtGui.QColor(38, 166, 91)
_NEG = QtGui.QColor(214, 69, 65)


def _pct(x: float) -> str:
    return f"{x * 100:.1f}%"


def _fmt(key: str, row: WatchRow) -> str:
    v = row.value(key)
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    if key == "symbol":
        return str(v)
    if key in ("earnings",):
        return v.isoformat() if isinstance(v, date) else str(v)
    if key in ("iv", "hv30"):
        return _pct(v)
    if key in ("iv_rank", "iv_percentile"):
        return f"{v * 100:.0f}"
    if key == "iv_minus_hv":
        return f"{v * 100:+.1f}"
    if key == "change":
        return f"{v:+.2f}"
    if key == "change_pct":
        return f"{v:+.2f}%"
    if key == "expected_move":
        return f"±{v:.2f}" + (f" ({row.expiry:%b %d})" if row.expiry else "")
    if key == "volume":
        return f"{v:,.0f}"
    return f"{v:,.2f}"


def _sort_key(value: Any) -> tuple[int, Any]:
    """Unknown (NaN/None) values after every known one; strings and dates compare among themselves."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return (1, 0)
    if isinstance(value, date):
        return (0, value.toordinal())
    return (0, value)


class WatchlistModel(QtCore.QAbstractTableModel):
    """Rows of :class:`engine.watchlist.WatchRow`; sorting reorders the rows by the raw column values."""

    def __init__(self, parent: QtCore.QObject | None = None) -> None:
        super().__init__(parent)
        self.rows: list[WatchRow] = []
        self.sort_column = -1
        self.sort_order = Qt.SortOrder.AscendingOrder

    def rowCount(self, parent: QtCore.QModelIndex | None = None) -> int:
        return 0 if parent is not None and parent.isValid() else len(self.rows)

    def columnCount(self, parent: QtCore.QModelIndex | None = None) -> int:
        return 0 if parent is not None and parent.isValid() else len(COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation != Qt.Orientation.Horizontal or not 0 <= section < len(COLUMNS):
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section][1]
        if role == Qt.ItemDataRole.ToolTipRole:
            return COLUMNS[section][2]
        return None

    def data(self, index: QtCore.QModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or not 0 <= index.row() < len(self.rows):
            return None
        row = self.rows[index.row()]
        key = COLUMN_KEYS[index.column()]
        if role == Qt.ItemDataRole.DisplayRole:
            return _fmt(key, row)
        if role == Qt.ItemDataRole.UserRole:
            return row.value(key)
        if role == Qt.ItemDataRole.TextAlignmentRole:
            left = key in ("symbol", "earnings")
            return int((Qt.AlignmentFlag.AlignLeft if left else Qt.AlignmentFlag.AlignRight)
                       | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.ForegroundRole and key in ("change", "change_pct", "iv_minus_hv"):
            v = row.value(key)
            if isinstance(v, float) and math.isfinite(v) and v != 0:
                return _POS if v > 0 else _NEG
        if role == Qt.ItemDataRole.ToolTipRole and row.note:
            return f"{row.symbol}: {row.note}"
        return None

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        self.layoutAboutToBeChanged.emit()
        self.sort_column, self.sort_order = column, order
        self.rows = self._sorted(self.rows)
        self.layoutChanged.emit()

    def _sorted(self, rows: list[WatchRow]) -> list[WatchRow]:
        if not 0 <= self.sort_column < len(COLUMNS):
            return list(rows)
        key = COLUMN_KEYS[self.sort_column]
        known = [r for r in rows if _sort_key(r.value(key))[0] == 0]
        unknown = [r for r in rows if _sort_key(r.value(key))[0] == 1]
        known.sort(key=lambda r: _sort_key(r.value(key))[1],
                   reverse=self.sort_order == Qt.SortOrder.DescendingOrder)
        return known + unknown

    def set_rows(self, rows: list[WatchRow]) -> None:
        """New values; the current sort applies. Same symbols in the same order → one ``dataChanged``."""
        rows = self._sorted(rows)
        if [r.symbol for r in rows] == [r.symbol for r in self.rows] and rows:
            self.rows = rows
            self.dataChanged.emit(self.index(0, 0), self.index(len(rows) - 1, len(COLUMNS) - 1))
            return
        self.beginResetModel()
        self.rows = rows
        self.endResetModel()

    def symbol_at(self, row: int) -> str | None:
        return self.rows[row].symbol if 0 <= row < len(self.rows) else None


class WatchlistPanel(Panel):
    title = "Watchlist"
    panel_id = "watchlist"

    def __init__(self, engine: Engine | None, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(engine, parent)
        self.data = WatchlistData(engine)
        self.lists: dict[str, list[str]] = {DEFAULT_LIST: self.data.available()}
        self.current = DEFAULT_LIST
        self._last_refresh = -math.inf
        self._last_reread = time.monotonic()

        self.list_box = QtWidgets.QComboBox()
        self.list_box.setToolTip("watchlist")
        self.list_box.currentTextChanged.connect(self._on_list_chosen)
        self.entry = QtWidgets.QLineEdit()
        self.entry.setPlaceholderText("symbol or list name")
        self.entry.returnPressed.connect(self.add_from_entry)
        self._completer_model = QtCore.QStringListModel(self.data.available())
        completer = QtWidgets.QCompleter(self._completer_model, self)
        completer.setCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.entry.setCompleter(completer)
        # with a broker connected, completions come from its symbol search (SearchSymbols), once typing pauses
        self._searched: list[str] = []
        self._search_timer = QtCore.QTimer(self)
        self._search_timer.setSingleShot(True)
        self._search_timer.setInterval(SEARCH_PAUSE_MS)
        self._search_timer.timeout.connect(self._search)
        self.entry.textEdited.connect(lambda _text: self._search_timer.start())
        add = QtWidgets.QPushButton("Add")
        add.setToolTip("add the symbol to this list")
        add.clicked.connect(self.add_from_entry)
        remove = QtWidgets.QPushButton("Remove")
        remove.setToolTip("remove the selected symbol from this list")
        remove.clicked.connect(self.remove_selected)
        new_list = QtWidgets.QPushButton("New list")
        new_list.setToolTip("create a list named as typed in the field")
        new_list.clicked.connect(lambda: self.new_list(self.entry.text()))
        delete_list = QtWidgets.QPushButton("Delete list")
        delete_list.clicked.connect(lambda: self.delete_list(self.current))

        top = QtWidgets.QHBoxLayout()
        top.addWidget(self.list_box, 1)
        top.addWidget(self.entry, 1)
        for b in (add, remove, new_list, delete_list):
            top.addWidget(b)

        self.model = WatchlistModel(self)
        self.table = QtWidgets.QTableView()
        self.table.setModel(self.model)
        self.table.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QtWidgets.QAbstractItemView.SelectionMode.SingleSelection)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(22)
        self.table.setSortingEnabled(True)
        self.table.horizontalHeader().setSortIndicator(-1, Qt.SortOrder.AscendingOrder)
        self.table.horizontalHeader().setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.table.horizontalHeader().customContextMenuRequested.connect(self._header_menu)
        for i, key in enumerate(COLUMN_KEYS):
            self.table.setColumnWidth(i, 130 if key == "expected_move" else 90 if key == "earnings" else 70)
        self.table.clicked.connect(lambda idx: self.select_row(idx.row()))
        self.table.activated.connect(lambda idx: self.select_row(idx.row()))

        self.info = QtWidgets.QLabel("")
        self.info.setStyleSheet("color: gray")
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addLayout(top)
        lay.addWidget(self.table, 1)
        lay.addWidget(self.info)
        self._reload_list_box()
        self.refresh(force=True)

    # ---- lists -----------------------------------------------------------------------------------
    @property
    def symbols(self) -> list[str]:
        return list(self.lists.get(self.current, []))

    def _reload_list_box(self) -> None:
        self.list_box.blockSignals(True)
        self.list_box.clear()
        self.list_box.addItems(list(self.lists))
        self.list_box.setCurrentText(self.current)
        self.list_box.blockSignals(False)

    def _on_list_chosen(self, name: str) -> None:
        if name in self.lists:
            self.current = name
            self.refresh(force=True)

    def new_list(self, name: str) -> None:
        name = name.strip()
        if not name:
            self.report_error("type a name for the new list in the field first")
            return
        if name in self.lists:
            self.report_error(f"a list named {name!r} already exists")
            return
        self.lists[name] = []
        self.current = name
        self.entry.clear()
        self._reload_list_box()
        self.refresh(force=True)

    def delete_list(self, name: str) -> None:
        if name not in self.lists:
            return
        if len(self.lists) == 1:
            self.report_error("the last list cannot be deleted (remove its symbols instead)")
            return
        del self.lists[name]
        self.current = next(iter(self.lists))
        self._reload_list_box()
        self.refresh(force=True)

    def add_symbol(self, text: str) -> bool:
        """Add ``text`` to the current list; a bad symbol or a duplicate is reported, not added."""
        try:
            sym = normalize_symbol(text)
        except WatchlistError as exc:
            self.report_error(str(exc))
            return False
        if sym in self.lists[self.current]:
            self.report_error(f"{sym} is already in {self.current}")
            return False
        known = self.data.lookup(sym)
        self.lists[self.current].append(sym)
        if sym not in known and sym not in self._searched:
            self.report_error(f"{sym} added, but the running feed does not list it: no live values until it does")
        self.refresh(force=True)
        return True

    def _search(self) -> None:
        """Ask the connected broker for symbols starting with what is typed (the simulated market's own list
        is already offered); the answer completes the field if the text still starts with the prefix."""
        prefix = self.entry.text().strip().upper()
        if not prefix or not engine_queries.broker_symbol_search(self.engine):
            return
        self.send(SearchSymbols(prefix=prefix, limit=20),
                  on_result=lambda matches, p=prefix: self._on_matches(p, matches))

    def _on_matches(self, prefix: str, matches: list[Any]) -> None:
        if not self.entry.text().strip().upper().startswith(prefix):
            return  # typed on meanwhile: a newer search follows
        self._searched = [m.symbol for m in matches]
        self._completer_model.setStringList(list(dict.fromkeys(self._searched + self.data.available())))
        completer = self.entry.completer()
        if completer is not None and self.entry.hasFocus():
            completer.setCompletionPrefix(self.entry.text())
            completer.complete()

    def add_from_entry(self) -> None:
        if self.add_symbol(self.entry.text()):
            self.entry.clear()

    def remove_selected(self) -> None:
        rows = self.table.selectionModel().selectedRows()
        sym = self.model.symbol_at(rows[0].row()) if rows else None
        if sym is None:
            self.report_error("select a row to remove")
            return
        self.lists[self.current].remove(sym)
        self.refresh(force=True)

    # ---- selection -------------------------------------------------------------------------------
    def select_row(self, row: int) -> None:
        """Select the row's underlying in every linked panel (see the module docstring)."""
        sym = self.model.symbol_at(row)
        if sym is None:
            return
        self.links.underlying_requested.emit(sym)
        if self.links.underlying != sym:  # no chain panel took it: announce it ourselves
            self.links.underlying_selected.emit(sym)

    # ---- data ------------------------------------------------------------------------------------
    def apply_events(self, batch: EventBatch) -> None:
        for ev in batch.events(HistoryBackfilled):
            self.data.invalidate(ev.underlyings)
            self._last_refresh = -math.inf
        self.refresh()

    def refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_refresh < REFRESH_S:
            return
        self._last_refresh = now
        if now - self._last_reread >= REREAD_S:  # e.g. `optiondesk history import` beside the running app
            self._last_reread = now
            self.data.invalidate()
        known = self.data.available()
        offered = list(dict.fromkeys(self._searched + known))
        if offered != self._completer_model.stringList():
            self._completer_model.setStringList(offered)
        if self.current == DEFAULT_LIST and not self.lists[DEFAULT_LIST] and known:
            self.lists[DEFAULT_LIST] = list(known)  # the feed's own symbols, once it lists them
        selected = self._selected_symbol()
        self.model.set_rows(self.data.rows(self.symbols))
        if selected is not None:
            self._select_symbol(selected)
        n = len(self.model.rows)
        self.info.setText(f"{self.current}: {n} symbol{'s' if n != 1 else ''} · IV/HV annualised, "
                          "rank and percentile 0–100 over the stored window")

    def _selected_symbol(self) -> str | None:
        rows = self.table.selectionModel().selectedRows()
        return self.model.symbol_at(rows[0].row()) if rows else None

    def _select_symbol(self, symbol: str) -> None:
        for i, r in enumerate(self.model.rows):
            if r.symbol == symbol:
                self.table.selectRow(i)
                return

    # ---- columns ---------------------------------------------------------------------------------
    def hidden_columns(self) -> list[str]:
        return [k for i, k in enumerate(COLUMN_KEYS) if self.table.isColumnHidden(i)]

    def set_column_hidden(self, key: str, hidden: bool) -> None:
        if key == "symbol":
            return  # the row's name always shows
        self.table.setColumnHidden(COLUMN_KEYS.index(key), hidden)

    def _header_menu(self, pos: QtCore.QPoint) -> None:
        menu = QtWidgets.QMenu(self)
        for i, (key, header, _tip) in enumerate(COLUMNS):
            if key == "symbol":
                continue
            act = menu.addAction(header)
            act.setCheckable(True)
            act.setChecked(not self.table.isColumnHidden(i))
            act.toggled.connect(lambda on, k=key: self.set_column_hidden(k, not on))
        menu.popup(self.table.horizontalHeader().mapToGlobal(pos))

    # ---- layout persistence ----------------------------------------------------------------------
    def panel_state(self) -> dict[str, Any]:
        col = self.model.sort_column
        return {
            "lists": {k: list(v) for k, v in self.lists.items()}, "current": self.current,
            "hidden": self.hidden_columns(),
            "sort": [COLUMN_KEYS[col], "desc" if self.model.sort_order == Qt.SortOrder.DescendingOrder else "asc"]
            if 0 <= col < len(COLUMN_KEYS) else None,
        }

    def restore_panel_state(self, state: dict[str, Any]) -> None:
        lists = state.get("lists")
        if isinstance(lists, dict) and lists:
            clean: dict[str, list[str]] = {}
            for name, syms in lists.items():
                out: list[str] = []
                for s in syms if isinstance(syms, list) else []:
                    try:
                        sym = normalize_symbol(s)
                    except WatchlistError:
                        continue
                    if sym not in out:
                        out.append(sym)
                clean[str(name)] = out
            self.lists = clean
        cur = state.get("current")
        self.current = cur if isinstance(cur, str) and cur in self.lists else next(iter(self.lists))
        hidden = state.get("hidden")
        if isinstance(hidden, list):
            for key in COLUMN_KEYS:
                self.set_column_hidden(key, key in hidden)
        sort = state.get("sort")
        if isinstance(sort, list) and len(sort) == 2 and sort[0] in COLUMN_KEYS:
            order = Qt.SortOrder.DescendingOrder if sort[1] == "desc" else Qt.SortOrder.AscendingOrder
            self.table.sortByColumn(COLUMN_KEYS.index(sort[0]), order)
        self._reload_list_box()
        self.refresh(force=True)
