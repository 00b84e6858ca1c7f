"""Alerts / event log dock: engine events, denials with reasons, kill-switch trips, connection changes.

Newest first, capped at ``MAX_ROWS``. Severity comes from the event class (``Event.severity``); debug
events (quotes, chains, clock, account snapshots) are not logged. Critical and error events are also
raised as a desktop notification by the main window (``notify`` signal) when a system tray exists.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from PySide6 import QtCore, QtGui, QtWidgets

from engine.analytics.formatting import plural
from engine.bus.events import Alert, OrderDenied
from engine.bus.messages import Event
from widgets.base import EventBatch, Panel
from widgets.time_format import engine_now, format_market_time

if TYPE_CHECKING:
    from engine.core import Engine

LEVELS = ("debug", "info", "warning", "error", "critical")
_RANK = {name: i for i, name in enumerate(LEVELS)}
_COLOURS = {
    "info": None,
    "warning": QtGui.QColor("#e6a23c"),
    "error": QtGui.QColor("#f56c6c"),
    "critical": QtGui.QColor("#ff3b30"),
}


@dataclass(frozen=True, slots=True)
class LogEntry:
    ts: datetime
    level: str
    source: str
    message: str


_SOURCES = (
    ("KillSwitch", "kill switch"), ("TradingState", "kill switch"), ("Order", "orders"), ("Position", "positions"),
    ("RiskProfile", "risk"), ("ApprovalMode", "approval"), ("ModeChanged", "mode"), ("Account", "account"),
    ("Backtest", "backtest"), ("Subscriber", "engine"), ("Engine", "engine"),
)


def event_source(event: Event) -> str:
    """Short, human source of an event: the alert's source, the connection, or its area."""
    if isinstance(event, Alert) and event.source:
        return event.source
    component = getattr(event, "component", None)
    if isinstance(component, str) and component:
        return component
    name = type(event).__name__
    for prefix, source in _SOURCES:
        if name.startswith(prefix):
            return source
    return re.sub(r"(?<!^)(?=[A-Z])", " ", name).lower()


def describe_event(event: Event) -> LogEntry:
    """One log line for an event: level, source and message."""
    level = str(getattr(event, "level", "") or event.severity) if isinstance(event, Alert) else event.severity
    source = event_source(event)
    message = event.describe()
    if isinstance(event, OrderDenied) and event.checks:
        reasons = "; ".join(_check_text(c) for c in event.checks)
        message = f"{message} — failed: {reasons}"
    return LogEntry(event.ts, level if level in _RANK else "info", source, message)


def _check_text(check: Any) -> str:
    for attr in ("message", "reason", "detail"):
        text = getattr(check, attr, None)
        if text:
            name = getattr(check, "name", None) or getattr(check, "check", None)
            return f"{name}: {text}" if name and str(name) not in str(text) else str(text)
    return str(check)


class EventLogModel(QtCore.QAbstractTableModel):
    """Newest-first log rows; inserts a whole batch with one ``beginInsertRows``."""

    HEADERS = ("Time", "Level", "Source", "Message")

    def __init__(self, max_rows: int, parent: QtCore.QObject | None = None) -> None:
        super().__init__(parent)
        self.max_rows = max_rows
        self.rows: deque[LogEntry] = deque()

    def rowCount(self, parent: QtCore.QModelIndex | None = None) -> int:
        return 0 if parent is not None and parent.isValid() else len(self.rows)

    def columnCount(self, parent: QtCore.QModelIndex | None = None) -> int:
        return len(self.HEADERS)

    def headerData(self, section: int, orientation: QtCore.Qt.Orientation, role: int = 0) -> Any:
        if role == QtCore.Qt.ItemDataRole.DisplayRole and orientation == QtCore.Qt.Orientation.Horizontal:
            return self.HEADERS[section]
        return None

    def data(self, index: QtCore.QModelIndex, role: int = 0) -> Any:
        if not index.isValid():
            return None
        e = self.rows[index.row()]
        col = index.column()
        if role == QtCore.Qt.ItemDataRole.DisplayRole:
            if col == 0:
                return format_market_time(e.ts)
            if col == 1:
                return e.level.upper()
            if col == 2:
                return e.source
            return e.message
        if role == QtCore.Qt.ItemDataRole.ForegroundRole and col in (1, 3):
            return _COLOURS.get(e.level)
        if role == QtCore.Qt.ItemDataRole.ToolTipRole and col == 3:
            return e.message
        if role == QtCore.Qt.ItemDataRole.FontRole and e.level == "critical":
            f = QtGui.QFont()
            f.setBold(True)
            return f
        return None

    def prepend(self, entries: list[LogEntry]) -> None:
        if not entries:
            return
        entries = entries[-self.max_rows :]
        self.beginInsertRows(QtCore.QModelIndex(), 0, len(entries) - 1)
        for e in entries:  # oldest first → the newest ends on top
            self.rows.appendleft(e)
        self.endInsertRows()
        excess = len(self.rows) - self.max_rows
        if excess > 0:
            self.beginRemoveRows(QtCore.QModelIndex(), len(self.rows) - excess, len(self.rows) - 1)
            for _ in range(excess):
                self.rows.pop()
            self.endRemoveRows()

    def clear(self) -> None:
        self.beginResetModel()
        self.rows.clear()
        self.endResetModel()


class AlertsPanel(Panel):
    """The event log. ``entries`` (all kept levels) is what the view filters by minimum level."""

    title = "Alerts / event log"
    panel_id = "alerts"
    MAX_ROWS = 5000

    notify = QtCore.Signal(str, str, str)  # level, title, message — for desktop notifications

    def __init__(self, engine: Engine | None, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(engine, parent)
        self.min_level = "info"
        self.all_entries: deque[LogEntry] = deque(maxlen=self.MAX_ROWS)
        self.model = EventLogModel(self.MAX_ROWS, self)
        self.view = QtWidgets.QTableView()
        self.view.setObjectName("alertsTable")
        self.view.setModel(self.model)
        self.view.verticalHeader().setVisible(False)
        self.view.verticalHeader().setDefaultSectionSize(20)
        self.view.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectionBehavior.SelectRows)
        self.view.setWordWrap(False)
        self.view.setAlternatingRowColors(True)
        hh = self.view.horizontalHeader()
        hh.setStretchLastSection(True)
        for col, width in enumerate((214, 74, 130)):
            hh.resizeSection(col, width)
        self.level_box = QtWidgets.QComboBox()
        self.level_box.setObjectName("alertsLevel")
        self.level_box.addItems(["Info and above", "Warnings and above", "Errors only"])
        self.level_box.currentIndexChanged.connect(self._on_level)
        self.count_label = QtWidgets.QLabel("")
        self.count_label.setObjectName("alertsCount")
        clear = QtWidgets.QPushButton("Clear")
        clear.clicked.connect(self.clear)
        top = QtWidgets.QHBoxLayout()
        top.setContentsMargins(4, 2, 4, 2)
        top.addWidget(QtWidgets.QLabel("Show"))
        top.addWidget(self.level_box)
        top.addStretch(1)
        top.addWidget(self.count_label)
        top.addWidget(clear)
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(0)
        lay.addLayout(top)
        lay.addWidget(self.view)
        self.counts = {lvl: 0 for lvl in LEVELS}

    def add_entry(self, entry: LogEntry) -> None:
        """Log a line that did not come from the bus (a panel's command failure, a GUI notice)."""
        self._ingest([entry])

    def log(self, level: str, source: str, message: str) -> None:
        # the engine's time, like the events around it (a simulated session's log is in simulated time)
        self.add_entry(LogEntry(engine_now(self.engine), level if level in _RANK else "info", source, message))

    def apply_events(self, batch: EventBatch) -> None:
        entries = [describe_event(e) for e in batch.all_events() if e.severity != "debug" or isinstance(e, Alert)]
        entries = [e for e in entries if e.level != "debug"]
        if entries:
            entries.sort(key=lambda e: e.ts)
            self._ingest(entries)

    def _ingest(self, entries: list[LogEntry]) -> None:
        for e in entries:
            self.all_entries.append(e)
            self.counts[e.level] = self.counts.get(e.level, 0) + 1
            # a notification rule's firing (notify:<rule>, the trader's own alerts included) is a desktop
            # notification at any level: the rule and the destination's min_level already chose to tell
            if e.level in ("error", "critical") or e.source.startswith("notify:"):
                self.notify.emit(e.level, f"Optiondesk — {e.source}", e.message)
        floor = _RANK[self.min_level]
        self.model.prepend([e for e in entries if _RANK[e.level] >= floor])
        self._render_counts()

    def _render_counts(self) -> None:
        w, e = self.counts.get("warning", 0), self.counts.get("error", 0) + self.counts.get("critical", 0)
        self.count_label.setText(f"{plural(len(self.all_entries), 'event')} · {plural(w, 'warning')} · "
                                 f"{plural(e, 'error')}")

    def _on_level(self, index: int) -> None:
        self.min_level = ("info", "warning", "error")[index]
        floor = _RANK[self.min_level]
        self.model.clear()
        self.model.prepend([e for e in self.all_entries if _RANK[e.level] >= floor])

    def clear(self) -> None:
        self.all_entries.clear()
        self.counts = {lvl: 0 for lvl in LEVELS}
        self.model.clear()
        self._render_counts()

    def messages(self) -> list[str]:
        """Every kept message, oldest first (tests and the self-test read it)."""
        return [e.message for e in self.all_entries]
