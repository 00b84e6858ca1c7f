"""Declarative live tables (the vn.py ``BaseMonitor`` idea, columnar).

A table declares its :class:`Column` list once; the data arrive as columns (``{key: array}``) plus a
row-key array. :meth:`ColumnTableModel.update`:

- same row keys as before → compares old and new values column by column (numpy, NaN-aware) and emits
  **one** bounding-box ``dataChanged`` for everything that changed (nothing if nothing did);
- different row keys → a model reset (rows added, removed or reordered).

Cells are formatted lazily and cached per cell until their value changes, so only visible, changed
cells cost a ``str.format``. No ``QSortFilterProxyModel`` and no ``ResizeToContents`` (docs/architecture.md §10):
:class:`LiveTableView` uses fixed, declared widths.

:class:`LiveTableView` paints the visible cells itself, straight from the model's columns. The stock
path (``QStyledItemDelegate`` through the style sheet) asks the Python model ``data()`` about six
times per cell across the PySide boundary: ~60 ms per repaint of a 35-row chain, which at 10 Hz
starves the event loop. The direct painter draws the same block in a few milliseconds; ``data()``
still answers every role for accessibility, tooltips and tests.
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

_H_RIGHT = int(Qt.AlignmentFlag.AlignRight.value)
_H_CENTER = int(Qt.AlignmentFlag.AlignHCenter.value)

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
        #: formatted text per column index (object arrays, None = not formatted since it changed)
        self._text: dict[int, np.ndarray] = {}
        #: figures for tests and benchmarks
        self.resets = 0
        self.data_changed_emits = 0
        self.last_changed_box: tuple[int, int, int, int] | None = None
        #: with the last ``dataChanged``: column index → changed-row mask, or None when whole rows
        #: changed (shading). Lets :class:`LiveTableView` repaint just those cells inside the box.
        self.last_changed_cells: dict[int, np.ndarray] | None = None

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
            self._text = {}
            self.endResetModel()
            self.resets += 1
            self.last_changed_box = None
            self.last_changed_cells = None
            return
        rows_changed = np.zeros(n, dtype=bool)
        col_lo, col_hi = len(self.columns), -1
        hidden_changed = False
        cells: dict[int, np.ndarray] = {}
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
                    cells[ci] = diff
                    cache = self._text.get(ci)
                    if cache is not None:
                        cache[diff] = None
        self._data = new_data
        if not rows_changed.any():
            return
        if hidden_changed:  # shading columns changed: repaint whole rows
            col_lo, col_hi = 0, len(self.columns) - 1
        hit = np.nonzero(rows_changed)[0]
        top, bottom = int(hit[0]), int(hit[-1])
        self.last_changed_box = (top, col_lo, bottom, col_hi)
        self.last_changed_cells = None if hidden_changed else cells
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
        return self.cell_text(row, self._index[key])

    def cell_text(self, row: int, column: int) -> str:
        """The cell's formatted text, formatted once per value (the painter calls this per visible cell)."""
        cache = self._text.get(column)
        if cache is None:
            values = self._data.get(self.columns[column].key)
            if values is None:
                return ""
            cache = self._text[column] = np.full(len(values), None, dtype=object)
        text = cache[row]
        if text is None:
            text = cache[row] = self.columns[column].text(self._data[self.columns[column].key][row])
        return text

    def cell_text_color(self, row: int, column: int) -> QtGui.QBrush | QtGui.QColor | None:
        """Foreground of a cell: :meth:`cell_foreground`, else green/red for ``signed`` columns."""
        fg = self.cell_foreground(row, column)
        if fg is not None:
            return fg
        col = self.columns[column]
        if col.signed:
            values = self._data.get(col.key)
            if values is not None:
                v = values[row]
                if isinstance(v, int | float | np.integer | np.floating) and math.isfinite(float(v)) and v != 0:
                    if not any(c in "123456789" for c in self.cell_text(row, column)):
                        return None  # shows as 0.00: a rounded zero is neither gain nor loss
                    return POSITIVE if v > 0 else NEGATIVE
        return None

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
        # roles compared as plain ints; LiveTableView paints without calling this
        if role == _DISPLAY:
            return self.cell_text(index.row(), index.column())
        if role == _ALIGNMENT:
            return self._align[index.column()]
        if role == _FOREGROUND:
            return self.cell_text_color(index.row(), index.column())
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


@dataclass(slots=True)
class _PaintState:
    """One direct repaint's shared objects (:meth:`LiveTableView.paintEvent`); ``pen`` is the last pen set,
    carried from row to row so a column of one colour sets it once."""

    text_pen: Any
    selected_pen: Any
    alternate: QtGui.QBrush
    highlight: QtGui.QBrush
    selection: QtCore.QItemSelectionModel | None
    select_rows: bool
    row_h: int
    font: QtGui.QFont
    metrics: QtGui.QFontMetrics
    text_h: int
    glyphs: dict[str, tuple[QtGui.QStaticText, int]]
    elided: dict[tuple[str, int], str]
    x_lo: int
    span: int
    alternating: bool
    pen: Any = None


class LiveTableView(QtWidgets.QTableView):
    """A table view tuned for live data: fixed row height, declared column widths, no auto-resize, and
    a direct painter for :class:`ColumnTableModel` (see the module docstring)."""

    #: text inset from the cell edges, px (what the stock delegate leaves)
    TEXT_MARGIN = 4

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
        #: repaints done by the direct painter and the cells the last one drew (tests, benchmarks)
        self.direct_paints = 0
        self.last_painted_cells = 0
        #: text → (laid-out QStaticText, width px) in the view's font: a value is laid out once
        self._glyphs: dict[str, tuple[QtGui.QStaticText, int]] = {}
        self._glyph_font: QtGui.QFont | None = None
        #: (text, inner width px) → elided text, for values wider than their column (laid out each paint before)
        self._elided: dict[tuple[str, int], str] = {}

    def table_model(self) -> ColumnTableModel:
        return self.model()  # type: ignore[return-value]

    def dataChanged(self, top_left: QtCore.QModelIndex, bottom_right: QtCore.QModelIndex,
                    roles: Sequence[int] = ()) -> None:
        """Repaint only the cells whose values changed (the model's one bounding-box signal would
        repaint the whole visible block at every flush)."""
        model = self.model()
        cells = getattr(model, "last_changed_cells", None)
        if not isinstance(model, ColumnTableModel) or cells is None or self.showGrid():
            super().dataChanged(top_left, bottom_right, roles)
            return
        first = self.rowAt(0)
        if first < 0:
            return
        last = self.rowAt(self.viewport().height() - 1)
        last = model.rowCount() - 1 if last < 0 else last
        row_h = self.verticalHeader().defaultSectionSize()
        y0 = self.rowViewportPosition(first)
        region = QtGui.QRegion()
        width = self.viewport().width()
        for c, mask in cells.items():
            if self.isColumnHidden(c):
                continue
            x, w = self.columnViewportPosition(c), self.columnWidth(c)
            if w <= 0 or x + w <= 0 or x >= width:
                continue
            rows = np.nonzero(mask[first:last + 1])[0]
            if rows.size == 0:
                continue
            breaks = np.nonzero(np.diff(rows) != 1)[0]  # runs of consecutive rows → one rectangle each
            starts = np.concatenate(([rows[0]], rows[breaks + 1]))
            ends = np.concatenate((rows[breaks], [rows[-1]]))
            for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
                region += QtCore.QRect(x, y0 + a * row_h, w, (b - a + 1) * row_h)
        if not region.isEmpty():
            self.viewport().update(region)

    def paintEvent(self, event: QtGui.QPaintEvent) -> None:
        model = self.model()
        if not isinstance(model, ColumnTableModel) or self.showGrid():
            super().paintEvent(event)
            return
        n_rows = model.rowCount()
        if n_rows == 0:
            return
        visible = self._visible_columns(model, event.rect())
        if not visible:
            return
        rows_cells = self._cells_to_paint(event, visible, n_rows)
        if not rows_cells:
            return
        state = self._paint_state(visible)
        painter = QtGui.QPainter(self.viewport())
        painter.setFont(state.font)
        self.last_painted_cells = sum(len(cols) for cols in rows_cells.values())
        try:
            for r in sorted(rows_cells):
                self._paint_row(painter, model, r, rows_cells[r], state)
        finally:
            painter.end()
        self.direct_paints += 1

    def _visible_columns(self, model: ColumnTableModel, area: QtCore.QRect) -> list[tuple[int, int, int, int]]:
        """(column, x, width, alignment) of the shown columns that reach into ``area``."""
        visible: list[tuple[int, int, int, int]] = []
        for c in range(model.columnCount()):
            if self.isColumnHidden(c):
                continue
            x, w = self.columnViewportPosition(c), self.columnWidth(c)
            if w > 0 and x + w > area.left() and x <= area.right():
                visible.append((c, x, w, model._align[c]))
        return visible

    def _cells_to_paint(self, event: QtGui.QPaintEvent, visible: list[tuple[int, int, int, int]],
                        n_rows: int) -> dict[int, list[tuple[int, int, int, int]]]:
        """Row → columns under the paint region's rectangles (a partial update from dataChanged above is a
        few small rectangles; an expose or scroll is one big one)."""
        region = event.region()
        rects = list(region) if 1 < region.rectCount() <= 400 else [event.rect()]
        rows_cells: dict[int, list[tuple[int, int, int, int]]] = {}
        for rect in rects:
            r0, r1 = self.rowAt(rect.top()), self.rowAt(rect.bottom())
            r0 = 0 if r0 < 0 else r0
            r1 = n_rows - 1 if r1 < 0 else r1
            cols = [v for v in visible if v[1] + v[2] > rect.left() and v[1] <= rect.right()]
            if not cols:
                continue
            for r in range(r0, r1 + 1):
                have = rows_cells.get(r)
                if have is None:
                    rows_cells[r] = cols
                elif have != cols:  # two rectangles over one row: paint the union of their columns
                    merged = {v[0]: v for v in (*have, *cols)}
                    rows_cells[r] = [merged[k] for k in sorted(merged)]
        return rows_cells

    def _paint_state(self, visible: list[tuple[int, int, int, int]]) -> _PaintState:
        """What every cell of one repaint shares: palette pens and brushes, font, glyph cache, row span."""
        pal = self.palette()
        base_font = self.font()
        if base_font != self._glyph_font:  # laid-out texts are per font
            self._glyphs.clear()
            self._elided.clear()
            self._glyph_font = QtGui.QFont(base_font)
        if len(self._glyphs) > 50_000:
            self._glyphs.clear()
        if len(self._elided) > 50_000:
            self._elided.clear()
        metrics = QtGui.QFontMetrics(base_font)
        x_lo, x_hi = visible[0][1], visible[-1][1] + visible[-1][2]
        return _PaintState(
            text_pen=pal.color(QtGui.QPalette.ColorGroup.Active, QtGui.QPalette.ColorRole.Text),
            selected_pen=pal.color(QtGui.QPalette.ColorGroup.Active, QtGui.QPalette.ColorRole.HighlightedText),
            alternate=pal.brush(QtGui.QPalette.ColorGroup.Active, QtGui.QPalette.ColorRole.AlternateBase),
            highlight=pal.brush(QtGui.QPalette.ColorGroup.Active, QtGui.QPalette.ColorRole.Highlight),
            selection=self.selectionModel(),
            select_rows=self.selectionMode() != QtWidgets.QAbstractItemView.SelectionMode.NoSelection,
            row_h=self.verticalHeader().defaultSectionSize(),
            font=base_font, metrics=metrics, text_h=metrics.height(), glyphs=self._glyphs, elided=self._elided,
            x_lo=x_lo, span=x_hi - x_lo if x_hi > x_lo else self.viewport().width(),
            alternating=self.alternatingRowColors(),
        )

    def _paint_row(self, painter: QtGui.QPainter, model: ColumnTableModel, r: int,
                   columns: list[tuple[int, int, int, int]], st: _PaintState) -> None:
        """One row's background and cells; the pen is set only when the colour changes (``st.pen``)."""
        y = self.rowViewportPosition(r)
        h = self.rowHeight(r) or st.row_h
        text_y = y + (h - st.text_h) // 2
        selected = st.select_rows and st.selection is not None and st.selection.isRowSelected(r, QtCore.QModelIndex())
        if selected:  # whole-row fills are clipped to the paint region by Qt
            painter.fillRect(st.x_lo, y, st.span, h, st.highlight)
        elif r % 2 and st.alternating:
            painter.fillRect(st.x_lo, y, st.span, h, st.alternate)
        margin = self.TEXT_MARGIN
        glyphs = st.glyphs
        for c, x, w, align in columns:
            if not selected:
                bg = model.cell_background(r, c)
                if bg is not None:
                    painter.fillRect(x, y, w, h, bg)
            text = model.cell_text(r, c)
            if not text:
                continue
            fg = st.selected_pen if selected else (model.cell_text_color(r, c) or st.text_pen)
            if fg is not st.pen:
                painter.setPen(fg.color() if isinstance(fg, QtGui.QBrush) else fg)
                st.pen = fg
            inner = w - 2 * margin
            font = model.cell_font(r, c)
            glyph = glyphs.get(text) if font is None else None
            if glyph is None and font is None:
                glyph = glyphs[text] = (QtGui.QStaticText(text), st.metrics.horizontalAdvance(text))
            if glyph is None:  # another font: laid out here
                self._draw_laid_out(painter, text, font or st.font, st.font, x + margin, y, inner, h, align)
                continue
            if glyph[1] > inner:  # too wide: elided once per (text, width), drawn in the painter's font
                short = st.elided.get((text, inner))
                if short is None:
                    short = st.elided[(text, inner)] = st.metrics.elidedText(text, Qt.TextElideMode.ElideRight,
                                                                             max(inner, 0))
                painter.drawText(x + margin, y, inner, h, align, short)
                continue
            if align & _H_RIGHT:
                tx = x + w - margin - glyph[1]
            elif align & _H_CENTER:
                tx = x + (w - glyph[1]) // 2
            else:
                tx = x + margin
            painter.drawStaticText(tx, text_y, glyph[0])

    @staticmethod
    def _draw_laid_out(painter: QtGui.QPainter, text: str, font: QtGui.QFont, base_font: QtGui.QFont, x: int,
                       y: int, inner: int, h: int, align: int) -> None:
        """A cell in another font, or too wide for its cached layout: laid out (and elided) here."""
        painter.setFont(font)
        fm = QtGui.QFontMetrics(font)
        if fm.horizontalAdvance(text) > inner:
            text = fm.elidedText(text, Qt.TextElideMode.ElideRight, max(inner, 0))
        painter.drawText(x, y, inner, h, align, text)
        painter.setFont(base_font)
