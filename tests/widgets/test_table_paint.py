"""The direct painter of LiveTableView: a value wider than its column is elided once and drawn as before."""

from __future__ import annotations

import numpy as np
from PySide6 import QtGui

from widgets.table_model import Column, ColumnTableModel, LiveTableView

LONG = "a value far wider than its column"


def _view(qtbot, model: ColumnTableModel) -> LiveTableView:
    n = 30
    keys = np.array([f"k{i}" for i in range(n)], dtype=object)
    model.update(keys, {"name": keys, "text": np.array([LONG if i % 2 else "ok" for i in range(n)], dtype=object),
                        "px": np.arange(n) * 1.5})
    view = LiveTableView(model)
    qtbot.addWidget(view)
    view.resize(260, 300)
    view.selectRow(3)
    view.show()
    qtbot.waitExposed(view)
    qtbot.waitUntil(lambda: view.direct_paints > 0)
    return view


COLUMNS = [Column("name", "Name", align="left", width=50), Column("text", "Text", align="center", width=80),
           Column("px", "Px", "{:.2f}", width=60)]


class _LongCellsInAFont(ColumnTableModel):
    """The long cells in an explicit copy of the view's font: the painter's general path (laid out per paint)."""

    font: QtGui.QFont | None = None

    def cell_font(self, row: int, column: int) -> QtGui.QFont | None:
        return self.font if self.value(row, "text") == LONG and column == 1 else None


def test_an_elided_value_is_cached_and_drawn_like_the_general_path(qtbot) -> None:
    cached = _view(qtbot, ColumnTableModel(COLUMNS))
    inner = COLUMNS[1].width - 2 * LiveTableView.TEXT_MARGIN
    short = cached._elided.get((LONG, inner))
    assert short is not None and short.endswith("…") and len(short) < len(LONG)
    general_model = _LongCellsInAFont(COLUMNS)
    general_model.font = QtGui.QFont(cached.font())
    general = _view(qtbot, general_model)
    assert not general._elided  # that path lays text out itself
    assert cached.grab().toImage() == general.grab().toImage()
    entries = len(cached._elided)
    cached.viewport().repaint()
    assert len(cached._elided) == entries  # the next paint reuses the elided text
