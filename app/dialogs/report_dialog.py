"""Reports ▸ Performance report…: the period, the account and the file; writes HTML or PDF.

The report is built from the engine's store on the GUI thread (a few SQL reads; a year of minute rows is well
under a second) and written by ``app.report_pdf`` (PDF) or as HTML, the same output as ``optiondesk report``.
The file chooser is opened with ``open()`` (never a nested ``exec()`` under qasync).
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6 import QtCore, QtWidgets

if TYPE_CHECKING:
    from engine.core import Engine


class ReportDialog(QtWidgets.QDialog):
    """Pick a period and account, then Save HTML… or Save PDF…; ``written`` carries the file's path."""

    written = QtCore.Signal(str)

    def __init__(self, engine: Engine | None, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.engine = engine
        self.setWindowTitle("Performance report")
        self.setAttribute(QtCore.Qt.WidgetAttribute.WA_DeleteOnClose)
        today = self._today()
        self.start = QtWidgets.QDateEdit(QtCore.QDate(today - timedelta(days=30)))
        self.end = QtWidgets.QDateEdit(QtCore.QDate(today))
        for edit in (self.start, self.end):
            edit.setCalendarPopup(True)
            edit.setDisplayFormat("yyyy-MM-dd")
        self.account = QtWidgets.QComboBox()
        self.account.addItem("Newest history", None)
        store = engine.store if engine is not None else None
        if store is not None:
            from engine.reports.history import accounts_with_history

            for account_id, mode, _last in accounts_with_history(store):
                self.account.addItem(f"{account_id} ({mode})", (account_id, mode))
        self.status = QtWidgets.QLabel("Equity and drawdown, trades, fees, Greeks over time, attribution and the "
                                       "journal's notes.")
        self.status.setWordWrap(True)
        form = QtWidgets.QFormLayout()
        form.addRow("From", self.start)
        form.addRow("To (included)", self.end)
        form.addRow("Account", self.account)
        buttons = QtWidgets.QDialogButtonBox(QtWidgets.QDialogButtonBox.StandardButton.Close)
        self.html_button = buttons.addButton("Save HTML…", QtWidgets.QDialogButtonBox.ButtonRole.ActionRole)
        self.pdf_button = buttons.addButton("Save PDF…", QtWidgets.QDialogButtonBox.ButtonRole.ActionRole)
        self.html_button.clicked.connect(lambda: self.choose_file(".html"))
        self.pdf_button.clicked.connect(lambda: self.choose_file(".pdf"))
        buttons.rejected.connect(self.reject)
        lay = QtWidgets.QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.status)
        lay.addWidget(buttons)
        self.file_dialog: QtWidgets.QFileDialog | None = None

    def _today(self) -> date:
        try:
            return self.engine.now().date()  # the engine's day: the simulated one in paper-on-simulation
        except Exception:
            return QtCore.QDate.currentDate().toPython()

    def choose_file(self, suffix: str) -> QtWidgets.QFileDialog:
        kind = "PDF (*.pdf)" if suffix == ".pdf" else "HTML (*.html)"
        name = f"optiondesk-report-{self.start.date().toString('yyyyMMdd')}-{self.end.date().toString('yyyyMMdd')}"
        dlg = QtWidgets.QFileDialog(self, "Save the report", str(Path.home() / f"{name}{suffix}"), kind)
        dlg.setAcceptMode(QtWidgets.QFileDialog.AcceptMode.AcceptSave)
        dlg.setDefaultSuffix(suffix.lstrip("."))
        dlg.fileSelected.connect(self.write)
        self.file_dialog = dlg
        dlg.open()
        return dlg

    def write(self, path: str) -> Path | None:
        """Build and write the report to ``path`` (its suffix chooses PDF or HTML); errors show in the dialog."""
        from engine.reports.data import ReportError, build_report
        from engine.reports.html import render_html

        out = Path(path)
        selected = self.account.currentData()
        account_id, mode = selected if selected else (None, None)
        try:
            data = build_report(self.engine.store, self.start.date().toPython(), self.end.date().toPython(),
                                account_id=account_id, mode=mode)
            if out.suffix.lower() == ".pdf":
                from app.report_pdf import write_pdf

                write_pdf(data, out)
            else:
                out.write_text(render_html(data), encoding="utf-8")
        except (ReportError, OSError, ValueError) as exc:
            self.status.setText(f"Could not write the report: {exc}")
            self.status.setStyleSheet("color: #c0392b")
            return None
        self.status.setText(f"Report written to {out}")
        self.status.setStyleSheet("")
        self.written.emit(str(out))
        return out
