"""Reports ▸ Trade journal…: notes and tags per trade, searched as you type, exported to CSV.

The same store functions as ``optiondesk journal`` (:mod:`engine.journal`), on the engine's store from the GUI
thread. The notes table is a plain QTableWidget refilled on each search: it is not a live table (it changes only
when the user types or adds a note), so the live-table rules of docs/gui.md do not apply.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6 import QtCore, QtWidgets

from engine.journal import JournalError, add_note, export_csv, search, symbols_of

if TYPE_CHECKING:
    from engine.core import Engine

COLUMNS = ("Time (UTC)", "Order", "Symbols", "Tags", "Note")


class JournalDialog(QtWidgets.QDialog):
    def __init__(self, engine: Engine | None, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.engine = engine
        self.setWindowTitle("Trade journal")
        self.setAttribute(QtCore.Qt.WidgetAttribute.WA_DeleteOnClose)
        self.resize(820, 520)
        self.query = QtWidgets.QLineEdit()
        self.query.setPlaceholderText("Search notes, tags, symbols, strategy…")
        self.query.setClearButtonEnabled(True)
        self.query.textChanged.connect(lambda _t: self.refresh())
        self.table = QtWidgets.QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.verticalHeader().setVisible(False)
        for col, width in enumerate((120, 150, 170, 130)):
            self.table.setColumnWidth(col, width)

        self.order = QtWidgets.QComboBox()
        self.order.setEditable(True)
        self.note = QtWidgets.QLineEdit()
        self.note.setPlaceholderText("What was the plan, what happened, what to keep or change")
        self.tags = QtWidgets.QLineEdit()
        self.tags.setPlaceholderText("tags, comma-separated")
        add = QtWidgets.QPushButton("Add note")
        add.clicked.connect(self.add)
        self.export_button = QtWidgets.QPushButton("Export CSV…")
        self.export_button.clicked.connect(self.choose_export)
        self.status = QtWidgets.QLabel("")
        form = QtWidgets.QGridLayout()
        form.addWidget(QtWidgets.QLabel("Trade"), 0, 0)
        form.addWidget(self.order, 0, 1)
        form.addWidget(QtWidgets.QLabel("Tags"), 0, 2)
        form.addWidget(self.tags, 0, 3)
        form.addWidget(QtWidgets.QLabel("Note"), 1, 0)
        form.addWidget(self.note, 1, 1, 1, 3)
        form.addWidget(add, 1, 4)
        bottom = QtWidgets.QHBoxLayout()
        bottom.addWidget(self.status, 1)
        bottom.addWidget(self.export_button)
        close = QtWidgets.QPushButton("Close")
        close.clicked.connect(self.reject)
        bottom.addWidget(close)
        lay = QtWidgets.QVBoxLayout(self)
        lay.addWidget(self.query)
        lay.addWidget(self.table, 1)
        lay.addLayout(form)
        lay.addLayout(bottom)
        self.file_dialog: QtWidgets.QFileDialog | None = None
        self._load_orders()
        self.refresh()

    @property
    def store(self) -> Any:
        return self.engine.store

    def _load_orders(self) -> None:
        rows = self.store.query(
            "SELECT order_id, legs, updated_at FROM orders WHERE filled_quantity > 0 OR status='filled' "
            "ORDER BY updated_at DESC LIMIT 200")
        for r in rows:
            self.order.addItem(f"{r['order_id']}  {' '.join(symbols_of(r['legs']))}", r["order_id"])

    def refresh(self) -> list[Any]:
        notes = search(self.store, self.query.text())
        self.table.setRowCount(len(notes))
        for i, n in enumerate(reversed(notes)):  # newest first
            for j, text in enumerate((f"{n.ts:%Y-%m-%d %H:%M}", n.order_id, " ".join(n.symbols),
                                      " ".join(f"#{t}" for t in n.tags), n.note)):
                self.table.setItem(i, j, QtWidgets.QTableWidgetItem(text))
        self.notes = notes
        self.status.setText(f"{len(notes)} note(s)")
        self.status.setStyleSheet("")
        return notes

    def add(self) -> int | None:
        ref = self.order.currentData() if self.order.currentText() == self.order.itemText(self.order.currentIndex()) \
            else self.order.currentText()
        try:
            note_id = add_note(self.store, str(ref or self.order.currentText()), self.note.text(),
                               [self.tags.text()])
        except JournalError as exc:
            self.status.setText(str(exc))
            self.status.setStyleSheet("color: #c0392b")
            return None
        self.note.clear()
        self.tags.clear()
        self.refresh()
        return note_id

    def choose_export(self) -> QtWidgets.QFileDialog:
        dlg = QtWidgets.QFileDialog(self, "Export the journal", str(Path.home() / "optiondesk-journal.csv"),
                                    "CSV (*.csv)")
        dlg.setAcceptMode(QtWidgets.QFileDialog.AcceptMode.AcceptSave)
        dlg.setDefaultSuffix("csv")
        dlg.fileSelected.connect(self.export)
        self.file_dialog = dlg
        dlg.open()
        return dlg

    def export(self, path: str) -> Path | None:
        try:
            out = export_csv(search(self.store, self.query.text()), path)
        except JournalError as exc:
            self.status.setText(str(exc))
            self.status.setStyleSheet("color: #c0392b")
            return None
        self.status.setText(f"{len(self.notes)} note(s) exported to {out}")
        return out
