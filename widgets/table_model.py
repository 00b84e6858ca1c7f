"""Declarative live tables (the vn.py ``BaseMonitor`` idea, columnar).

A table declares its :class:`Column` list once; the data arrive as columns (``{key: array}``) plus a
row-key array. :meth:`ColumnTableModel.update`:

- same row keys as before → compares old and new values column by column (numpy, NaN-aware) and emits
  **one** bounding-box ``dataChanged`` for everything that changed (nothing if nothing did);
- different row keys → a model reset (rows added, removed or reordered).

Cells are formatted lazily in :meth:`data`, so only visible cells cost a ``str.format``. No
``QSortFilterProxyModel`` and no ``ResizeToContents`` (DESIGN.md §10): :class:`LiveTableView` uses
fixed, declared widths.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PySide6 import QtCore, QtGui, QtWidgets

Qt = QtCore.Qt

POSITIVE = QtGui.QColor(38, 166, 91)
NEGATIVE = QtGui.QColor(214, 69, 65)
MUTED = QtGui.QColor(128, 128, 128)

_DISPLAY = int(Qt.ItemDataRole.DisplayRole.value)
_ALIGNMENT = int(Qt.ItemDataRole.TextAlignmentRole.value)
_FOREGROUND = int(Qt.ItemDataRole.ForegroundRole.value)
_BACKGROUND = int(Qt.ItemDataRole.BackgroundRole.value)
_FONT = int(Qt.ItemDataRole.FontRole.value)
_TOOLTIP = int(Qt.ItemDataRole.ToolTipRole.value)
_USER = int(Qt.ItemDataRole.UserRole.value)

_ALIGN = {
    "left": Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter,
    "right": Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter,
    "center": Qt.AlignmentFlag.AlignCenter,
}


@dataclass(frozen=True)
class Column:
    """One declared column.

    ``fmt``: a ``str.format`` pattern (``"{:.2f}"``) or a callable value -> text. NaN / None show ``blank``.
    ``signed``: colour positive values green and negative red (P&L, edge). ``width`` in pixels.
    """

    key: str
    header: str
    fmt: str | Callable[[Any], str] = "{}"
    align: str = "right"
    width: int = 70
    tooltip: str = ""
    signed: bool = False
    blank: str = ""

    def text(self, value: Any) -> str:
        if value is None:
            return self.blank
        if isinstance(value, float | np.floating) and not math.isfinite(float(value)):
            return self.blank
        if callable(self.fmt):
            text = self.fmt(value)
        else:
            try:
                text = self.fmt.format(value)
            except (ValueError, TypeError):
                return str(value)
        if text[:1] in "-+" and isinstance(value, float | np.floating) and not any(c in "123456789" for c in text):
            text = text[1:]  # "-0.00" / "+0.00" read as noise: a rounded zero has no sign
        return text


def _changed(old: np.ndarray, new: np.ndarray) -> np.ndarray:
    """Element-wise 'differs' mask treating NaN == NaN as unchanged."""
    if old.dtype.kind in "fc" and new.dtype.kind in "fc":
        with np.errstate(invalid="ignore"):
            return ~((old == new) | (np.isnan(old) & np.isnan(new)))
    try:
        diff = np.asarray(old != new, dtype=bool)
        if diff.shape == old.shape:
            return diff
    except (TypeError, ValueError):
        pass
    return np.array([a is not b and a != b for a, b in zip(old, new, strict=True)], dtype=bool)


class ColumnTableModel(QtCore.QAbstractTableModel):
    """Read-only table over columnar data with one bounding-box ``dataChanged`` per update.

    Subclasses may override :meth:`cell_background` / :meth:`cell_foreground` / :meth:`cell_font`
    to shade rows (ITM, selected legs) from the stored columns.
    """

    def __init__(self, columns: Sequence[Column], parent: QtCore.QObject | None = None) -> None:
        super().__init__(parent)
        self.columns: list[Column] = list(columns)
        self._index = {c.key: i for i, c in enumerate(self.columns)}
        self._align = [int(_ALIGN.get(c.align, _ALIGN["right"]).value) for c in self.columns]
        self._keys: np.ndarray = np.array([], dtype=object)
        self._data: dict[str, np.ndarray] = {}
        #: figures for tests and benchmarks
        self.resets = 0
        self.data_changed_emits = 0
        self.last_changed_box: tuple[int, int, int, int] | None = None

    # ---- feeding ---------------------------------------------------------------------------------
    def update(self, keys: Sequence[Any] | np.ndarray, data: Mapping[str, Sequence[Any] | np.ndarray]) -> None:
        """Replace the table's contents. ``data`` may hold extra (hidden) columns used for shading."""
        new_keys = np.asarray(keys, dtype=object) if not isinstance(keys, np.ndarray) else keys
        n = len(new_keys)
        new_data: dict[str, np.ndarray] = {}
        for key, values in data.items():
            arr = values if isinstance(values, np.ndarray) else np.asarray(list(values), dtype=object)
            if len(arr) != n:
                raise ValueError(f"column {key!r} has {len(arr)} rows, expected {n}")
            new_data[key] = arr
        same_shape = len(self._keys) == n and set(new_data) == set(self._data)
        if not same_shape or not np.array_equal(self._keys, new_keys):
            self.beginResetModel()
            self._keys = new_keys
            self._data = new_data
            self.endResetModel()
            self.resets += 1
            self.last_changed_box = None
            return
        rows_changed = np.zeros(n, dtype=bool)
        col_lo, col_hi = len(self.columns), -1
        hidden_changed = False
        for key, new in new_data.items():
            old = self._data[key]
            diff = _changed(old, new)
            if diff.any():
                rows_changed |= diff
                ci = self._index.get(key)
                if ci is None:
                    hidden_changed = True
                else:
                    col_lo, col_hi = min(col_lo, ci), max(col_hi, ci)
        self._data = new_data
        if not rows_changed.any():
            return
        if hidden_changed:  # shading columns changed: repaint whole rows
            col_lo, col_hi = 0, len(self.columns) - 1
        hit = np.nonzero(rows_changed)[0]
        top, bottom = int(hit[0]), int(hit[-1])
        self.last_changed_box = (top, col_lo, bottom, col_hi)
        self.data_changed_emits += 1
        self.dataChanged.emit(self.index(top, col_lo), self.index(bottom, col_hi))

    def clear(self) -> None:
        self.update(np.array([], dtype=object), {k: np.array([], dtype=object) for k in self._data})

    # ---- queries ---------------------------------------------------------------------------------
    def key_at(self, row: int) -> Any:
        return self._keys[row]

    def row_of(self, key: Any) -> int:
        hits = np.nonzero(self._keys == key)[0]
        return int(hits[0]) if len(hits) else -1

    def value(self, row: int, key: str) -> Any:
        return self._data[key][row]

    def column_values(self, key: str) -> np.ndarray:
        return self._data[key]

    def keys(self) -> np.ndarray:
        return self._keys

    def column_index(self, key: str) -> int:
        return self._index[key]

    def display_text(self, row: int, key: str) -> str:
        col = self.columns[self._index[key]]
        return col.text(self._data[key][row]) if key in self._data else ""

    # ---- Qt model API ----------------------------------------------------------------------------
    def rowCount(self, parent: QtCore.QModelIndex = QtCore.QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self._keys)

    def columnCount(self, parent: QtCore.QModelIndex = QtCore.QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.columns)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation != Qt.Orientation.Horizontal or not 0 <= section < len(self.columns):
            return None
        col = self.columns[section]
        if role == Qt.ItemDataRole.DisplayRole:
            return col.header
        if role == Qt.ItemDataRole.ToolTipRole:
            return col.tooltip or None
        if role == Qt.ItemDataRole.TextAlignmentRole:
            return int(_ALIGN.get(col.align, _ALIGN["right"]))
        return None

    def data(self, index: QtCore.QModelIndex, role: int = _DISPLAY) -> Any:
        # hot path: called ~7 times per visible cell per repaint; roles compared as plain ints
        if role == _DISPLAY:
            ci = index.column()
            col = self.columns[ci]
            values = self._data.get(col.key)
            return col.text(values[index.row()]) if values is not None else ""
        if role == _ALIGNMENT:
            return self._align[index.column()]
        if role == _FOREGROUND:
            row, ci = index.row(), index.column()
            fg = self.cell_foreground(row, ci)
            if fg is not None:
                return fg
            col = self.columns[ci]
            if col.signed:
                values = self._data.get(col.key)
                if values is not None:
                    v = values[row]
                    if isinstance(v, int | float | np.integer | np.floating) and math.isfinite(float(v)) and v != 0:
                        return POSITIVE if v > 0 else NEGATIVE
            return None
        if role == _BACKGROUND:
            return self.cell_background(index.row(), index.column())
        if role == _FONT:
            return self.cell_font(index.row(), index.column())
        if role == _TOOLTIP:
            return self.cell_tooltip(index.row(), index.column())
        if role == _USER:
            values = self._data.get(self.columns[index.column()].key)
            return values[index.row()] if values is not None else None
        return None

    def cell_background(self, row: int, column: int) -> QtGui.QBrush | QtGui.QColor | None:
        return None

    def cell_foreground(self, row: int, column: int) -> QtGui.QBrush | QtGui.QColor | None:
        return None

    def cell_font(self, row: int, column: int) -> QtGui.QFont | None:
        return None

    def cell_tooltip(self, row: int, column: int) -> str | None:
        return None


class LiveTableView(QtWidgets.QTableView):
    """A table view tuned for live data: fixed row height, declared column widths, no auto-resize."""

    def __init__(self, model: ColumnTableModel, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.setModel(model)
        self.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QtWidgets.QAbstractItemView.SelectionMode.SingleSelection)
        self.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setAlternatingRowColors(True)
        self.setWordWrap(False)
        self.setShowGrid(False)
        self.setHorizontalScrollMode(QtWidgets.QAbstractItemView.ScrollMode.ScrollPerPixel)
        vh = self.verticalHeader()
        vh.setVisible(False)
        vh.setSectionResizeMode(QtWidgets.QHeaderView.ResizeMode.Fixed)
        vh.setDefaultSectionSize(max(18, self.fontMetrics().height() + 4))
        hh = self.horizontalHeader()
        hh.setSectionResizeMode(QtWidgets.QHeaderView.ResizeMode.Interactive)
        hh.setHighlightSections(False)
        hh.setStretchLastSection(False)
        for i, col in enumerate(model.columns):
            self.setColumnWidth(i, col.width)

    def table_model(self) -> ColumnTableModel:
        return self.model()  # type: ignore[return-value]
