"""Data panel: what market data is stored per symbol, where it came from, and vendor chain imports.

For the chosen symbol a coverage calendar shows one cell per NYSE session, a block per year and a row per
series: the daily bars (closes) and ATM IV of the history service, and each imported option root coloured
by its rows that day. A table names the sources (the simulated backfill, ``file:NAME`` from ``optiondesk
history import``, a broker; each chain file with its format and import time). Import chains opens a file
dialog; the import runs in the engine (``ImportChains``) with a progress bar and Cancel; a range of an
imported root can be deleted after a confirmation (``DeleteChains``).

Everything shown is the engine's :class:`~engine.chainstore.service.DataCoverage` snapshot
(``engine_queries.data_coverage``); the panel re-reads it when the engine announces a change.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from PySide6 import QtCore, QtGui, QtWidgets

from engine.analytics.formatting import plural
from engine.bus import (
    CancelImport,
    ChainImportFinished,
    ChainImportProgress,
    ChainsDeleted,
    DataCoverageChanged,
    DeleteChains,
    ImportChains,
    RefreshDataCoverage,
)
from widgets import engine_queries as eq
from widgets.base import EventBatch, Panel
from widgets.plots import MUTED, SERIES
from widgets.time_format import format_market_time

if TYPE_CHECKING:
    from engine.chainstore.service import DataCoverage
    from engine.core import Engine

Qt = QtCore.Qt
FORMATS = ("auto", "cboe", "optionsdx", "native")
_MONTHS = "JFMAMJJASOND"


@dataclass(frozen=True)
class Track:
    """One row of the calendar: a value per day (availability 1.0, or rows that day with ``heat``)."""

    label: str
    values: Mapping[date, float]
    color: str
    heat: bool = False


class CoverageCalendar(QtWidgets.QWidget):
    """A painted heat-map of sessions: a block per year, a row per track, a cell per session.

    Why painted: ten years of four series are ~10,000 cells; one ``fillRect`` each is a few ms, where a
    plot item per cell would be slow to build and to hover.
    """

    LABEL_W = 118
    CELL_H = 13
    HEADER_H = 16
    GAP = 10

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMouseTracking(True)
        self.sessions: tuple[date, ...] = ()
        self.tracks: list[Track] = []
        self._years: list[tuple[int, list[date]]] = []
        self._max: dict[str, float] = {}
        self.setSizePolicy(QtWidgets.QSizePolicy.Policy.Expanding, QtWidgets.QSizePolicy.Policy.Fixed)

    def set_data(self, sessions: Sequence[date], tracks: list[Track]) -> None:
        """Show ``tracks`` over the years of ``sessions`` that hold any of their days."""
        days = {d for t in tracks for d in t.values}
        years = sorted({d.year for d in days})
        by_year: dict[int, list[date]] = {y: [] for y in years}
        for d in sessions:
            if d.year in by_year:
                by_year[d.year].append(d)
        for d in days:  # a day the calendar does not list (a vendor's odd date) still gets a cell
            if d not in by_year[d.year]:
                by_year[d.year].append(d)
        self.sessions = tuple(sessions)
        self.tracks = list(tracks)
        self._years = [(y, sorted(by_year[y])) for y in years]
        self._max = {t.label: max(t.values.values(), default=0.0) for t in tracks}
        self.setFixedHeight(self._block_h() * max(1, len(self._years)) + 30)
        self.update()

    # ---- geometry ---------------------------------------------------------------------------------
    def _block_h(self) -> int:
        return self.HEADER_H + len(self.tracks) * (self.CELL_H + 2) + self.GAP

    def _cell_w(self) -> float:
        most = max((len(days) for _, days in self._years), default=252)
        return max(1.0, (self.width() - self.LABEL_W - 8) / max(most, 252))

    def cell_rect(self, day: date, track: int) -> QtCore.QRectF | None:
        """Where the cell of ``day`` in track ``track`` is painted (None when not shown)."""
        for block, (year, days) in enumerate(self._years):
            if year == day.year and day in days:
                i = days.index(day)
                cw = self._cell_w()
                top = block * self._block_h() + self.HEADER_H + track * (self.CELL_H + 2)
                return QtCore.QRectF(self.LABEL_W + i * cw, top, max(1.0, cw - (1 if cw >= 3 else 0)), self.CELL_H)
        return None

    def cell_at(self, pos: QtCore.QPointF) -> tuple[date, int] | None:
        """The (day, track index) under ``pos``, or None."""
        if not self._years or pos.x() < self.LABEL_W:
            return None
        block = int(pos.y() // self._block_h())
        if block >= len(self._years):
            return None
        y = pos.y() - block * self._block_h() - self.HEADER_H
        track = int(y // (self.CELL_H + 2)) if y >= 0 else -1
        if not 0 <= track < len(self.tracks):
            return None
        days = self._years[block][1]
        i = int((pos.x() - self.LABEL_W) // self._cell_w())
        return (days[i], track) if 0 <= i < len(days) else None

    def colour_of(self, track: Track, day: date) -> QtGui.QColor:
        """The cell's colour: grey when the session has no data, the track's colour when it has; for a
        heat track its strength follows the rows that day against the track's busiest day."""
        v = track.values.get(day)
        if not v:
            c = QtGui.QColor(MUTED)
            c.setAlpha(55)
            return c
        c = QtGui.QColor(track.color)
        if track.heat:
            top = self._max.get(track.label) or 1.0
            c.setAlpha(int(90 + 165 * min(1.0, v / top)))
        return c

    # ---- painting ---------------------------------------------------------------------------------
    def paintEvent(self, event: QtGui.QPaintEvent) -> None:
        p = QtGui.QPainter(self)
        text = self.palette().color(QtGui.QPalette.ColorRole.WindowText)
        if not self._years:
            p.setPen(text)
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "No stored data for this symbol")
            p.end()
            return
        small = QtGui.QFont(self.font())
        small.setPointSizeF(max(7.0, small.pointSizeF() - 1))
        cw = self._cell_w()
        for block, (year, days) in enumerate(self._years):
            top = block * self._block_h()
            p.setPen(text)
            bold = QtGui.QFont(self.font())
            bold.setBold(True)
            p.setFont(bold)
            p.drawText(QtCore.QRectF(4, top, self.LABEL_W - 8, self.HEADER_H), Qt.AlignmentFlag.AlignVCenter, str(year))
            p.setFont(small)
            month = 0
            for i, d in enumerate(days):
                if d.month != month:
                    month = d.month
                    p.drawText(QtCore.QRectF(self.LABEL_W + i * cw, top, 40, self.HEADER_H),
                               Qt.AlignmentFlag.AlignVCenter, _MONTHS[month - 1] if cw < 2 else f"{d:%b}")
            for t, track in enumerate(self.tracks):
                row_top = top + self.HEADER_H + t * (self.CELL_H + 2)
                p.setPen(text)
                p.drawText(QtCore.QRectF(4, row_top, self.LABEL_W - 8, self.CELL_H),
                           Qt.AlignmentFlag.AlignVCenter, track.label)
                p.setPen(Qt.PenStyle.NoPen)
                w = max(1.0, cw - (1 if cw >= 3 else 0))
                for i, d in enumerate(days):
                    p.fillRect(QtCore.QRectF(self.LABEL_W + i * cw, row_top, w, self.CELL_H), self.colour_of(track, d))
        p.end()

    def mouseMoveEvent(self, event: QtGui.QMouseEvent) -> None:
        hit = self.cell_at(event.position())
        if hit is None:
            QtWidgets.QToolTip.hideText()
            return
        QtWidgets.QToolTip.showText(event.globalPosition().toPoint(), self.describe(hit[0]), self)

    def describe(self, day: date) -> str:
        """Every track's value on ``day``, one line each (the tooltip)."""
        lines = [f"{day:%a %d %b %Y}" + ("" if day in set(self.sessions) else " (not a session)")]
        for t in self.tracks:
            v = t.values.get(day)
            if t.heat:
                lines.append(f"{t.label}: {int(v):,} rows" if v else f"{t.label}: none")
            else:
                lines.append(f"{t.label}: {'yes' if v else 'missing'}")
        return "\n".join(lines)


class DataPanel(Panel):
    title: ClassVar[str] = "Data"
    panel_id: ClassVar[str] = "data"

    import_finished = QtCore.Signal(object)  # the ChainImportFinished event

    def __init__(self, engine: Engine | None, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(engine, parent)
        self.coverage: DataCoverage | None = None
        self.job_id: str | None = None
        self.last_finished: ChainImportFinished | None = None
        self.confirm_box: QtWidgets.QMessageBox | None = None
        self._wanted_symbol = ""

        self.symbol_box = QtWidgets.QComboBox()
        self.symbol_box.setMinimumWidth(90)
        self.symbol_box.currentTextChanged.connect(lambda _s: self._show_symbol())
        self.refresh_button = QtWidgets.QPushButton("Refresh")
        self.refresh_button.setToolTip("Scan the stored chains and history again")
        self.refresh_button.clicked.connect(lambda: self.send(RefreshDataCoverage()))
        self.summary_label = QtWidgets.QLabel("")
        self.summary_label.setWordWrap(True)
        top = QtWidgets.QHBoxLayout()
        top.addWidget(QtWidgets.QLabel("Symbol"))
        top.addWidget(self.symbol_box)
        top.addWidget(self.summary_label, 1)
        top.addWidget(self.refresh_button)

        self.calendar = CoverageCalendar()
        scroll = self._calendar_scroll = QtWidgets.QScrollArea()
        scroll.setWidget(self.calendar)
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setMinimumHeight(130)
        self.legend_label = QtWidgets.QLabel("")
        self.legend_label.setStyleSheet("color: gray")

        self.sources_table = QtWidgets.QTableWidget(0, 4)
        self.sources_table.setHorizontalHeaderLabels(["Series", "Source", "Coverage", "Imported"])
        self.sources_table.verticalHeader().setVisible(False)
        self.sources_table.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        self.sources_table.setSelectionMode(QtWidgets.QAbstractItemView.SelectionMode.NoSelection)
        header = self.sources_table.horizontalHeader()
        header.setSectionResizeMode(1, QtWidgets.QHeaderView.ResizeMode.Stretch)
        for col, width in ((0, 130), (2, 250), (3, 210)):
            self.sources_table.setColumnWidth(col, width)

        # ---- import
        self.format_box = QtWidgets.QComboBox()
        self.format_box.addItems(FORMATS)
        self.format_box.setToolTip("auto: recognised from the header (Cboe DataShop, OptionsDX, native)")
        self.import_symbol_edit = QtWidgets.QLineEdit()
        self.import_symbol_edit.setPlaceholderText("from the file")
        self.import_symbol_edit.setToolTip("The underlying of files without one (OptionsDX)")
        self.import_button = QtWidgets.QPushButton("Import chains…")
        self.import_button.clicked.connect(self._choose_files)
        self.cancel_button = QtWidgets.QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel_import)
        self.progress = QtWidgets.QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setFormat("idle")
        self.progress.setValue(0)
        self.import_status = QtWidgets.QLabel("")
        self.import_status.setWordWrap(True)
        imp = QtWidgets.QGroupBox("Import vendor chains")
        il = QtWidgets.QGridLayout(imp)
        il.addWidget(QtWidgets.QLabel("Format"), 0, 0)
        il.addWidget(self.format_box, 0, 1)
        il.addWidget(QtWidgets.QLabel("Symbol"), 0, 2)
        il.addWidget(self.import_symbol_edit, 0, 3)
        il.addWidget(self.import_button, 1, 0, 1, 3)
        il.addWidget(self.cancel_button, 1, 3)
        il.addWidget(self.progress, 2, 0, 1, 4)
        il.addWidget(self.import_status, 3, 0, 1, 4)

        # ---- delete
        self.root_box = QtWidgets.QComboBox()
        self.root_box.currentTextChanged.connect(self._root_chosen)
        self.from_edit = QtWidgets.QDateEdit()
        self.to_edit = QtWidgets.QDateEdit()
        for w in (self.from_edit, self.to_edit):
            w.setCalendarPopup(True)
            w.setDisplayFormat("yyyy-MM-dd")
        self.delete_button = QtWidgets.QPushButton("Delete…")
        self.delete_button.clicked.connect(self.request_delete)
        dele = QtWidgets.QGroupBox("Delete imported days")
        dl = QtWidgets.QGridLayout(dele)
        dl.addWidget(QtWidgets.QLabel("Root"), 0, 0)
        dl.addWidget(self.root_box, 0, 1)
        dl.addWidget(QtWidgets.QLabel("From"), 1, 0)
        dl.addWidget(self.from_edit, 1, 1)
        dl.addWidget(QtWidgets.QLabel("to"), 1, 2)
        dl.addWidget(self.to_edit, 1, 3)
        dl.addWidget(self.delete_button, 2, 0, 1, 4)
        dl.setRowStretch(3, 1)

        actions = QtWidgets.QHBoxLayout()
        actions.addWidget(imp, 3)
        actions.addWidget(dele, 2)
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addLayout(top)
        lay.addWidget(scroll, 3)
        lay.addWidget(self.legend_label)
        lay.addWidget(self.sources_table, 2)
        lay.addLayout(actions)
        self.refresh()

    # ---- showing ------------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Re-read the engine's coverage snapshot and redraw."""
        self.coverage = eq.data_coverage(self.engine)
        cov = self.coverage
        symbols = cov.symbols() if cov is not None else []
        current = self.symbol_box.currentText()
        self.symbol_box.blockSignals(True)
        self.symbol_box.clear()
        self.symbol_box.addItems(symbols)
        if current in symbols:
            self.symbol_box.setCurrentText(current)
        elif self._wanted_symbol in symbols:  # the saved layout's, once the engine's first scan has landed
            self.symbol_box.setCurrentText(self._wanted_symbol)
        elif cov is not None and cov.roots:
            self.symbol_box.setCurrentText(cov.roots[0].underlying)
        elif "SPY" in symbols:
            self.symbol_box.setCurrentText("SPY")
        self.symbol_box.blockSignals(False)
        roots = [r.root for r in cov.roots] if cov is not None else []
        chosen = self.root_box.currentText()
        self.root_box.blockSignals(True)
        self.root_box.clear()
        self.root_box.addItems(roots)
        if chosen in roots:
            self.root_box.setCurrentText(chosen)
        self.root_box.blockSignals(False)
        self._root_chosen(self.root_box.currentText(), keep_dates=chosen == self.root_box.currentText())
        self.delete_button.setEnabled(bool(roots) and eq.running_import(self.engine) is None)
        if cov is None:
            self.summary_label.setText("No engine: nothing to show")
        else:
            n_days = sum(r.days for r in cov.roots)
            self.summary_label.setText(
                f"{plural(len(cov.history), 'symbol')} with daily history · {plural(len(cov.roots), 'imported root')}, "
                f"{plural(n_days, 'chain day')}" + (f" · {cov.error}" if cov.error else ""))
            self.summary_label.setToolTip(f"Imported chains are kept in {cov.chains_dir}")
        self._show_symbol()

    def tracks(self) -> list[Track]:
        """The calendar's rows for the chosen symbol."""
        cov = self.coverage
        symbol = self.symbol_box.currentText()
        if cov is None or not symbol:
            return []
        out: list[Track] = []
        h = cov.history_of(symbol)
        if h is not None:
            out.append(Track("Daily bars", dict.fromkeys(h.bar_days, 1.0), SERIES[0]))
            out.append(Track("ATM IV", dict.fromkeys(h.iv_days, 1.0), SERIES[4]))
        for r in cov.roots_of(symbol):
            out.append(Track(f"Chains {r.root}", {d: float(n) for d, n in r.rows_per_day.items()}, SERIES[2],
                             heat=True))
        return out

    def _show_symbol(self) -> None:
        cov = self.coverage
        tracks = self.tracks()
        self.calendar.set_data(cov.sessions if cov is not None else (), tracks)
        # as tall as the years shown (up to a point, then it scrolls): the sources table gets the rest
        self._calendar_scroll.setMaximumHeight(max(130, min(self.calendar.height() + 6, 460)))
        heat = [t for t in tracks if t.heat]
        legend = "One cell per NYSE session; grey: no data that day."
        if heat:
            top = max(max(t.values.values(), default=0) for t in heat)
            legend += f" Chains: brighter = more rows (busiest day {int(top):,} rows)."
        self.legend_label.setText(legend)
        self._fill_sources()

    def source_rows(self) -> list[tuple[str, str, str, str]]:
        """(series, source, coverage, imported) rows of the sources table for the chosen symbol."""
        cov = self.coverage
        symbol = self.symbol_box.currentText()
        if cov is None or not symbol:
            return []
        rows = []
        h = cov.history_of(symbol)
        if h is not None:
            for s in h.sources:
                rows.append(("Bars & ATM IV", s.source, f"{plural(s.days, 'day')}, {s.first_day} to {s.last_day}", ""))
            if h.bar_days != h.iv_days:
                rows.append(("Daily bars", "closes", f"{len(h.bar_days):,} of {len(h.iv_days):,} days", ""))
        for r in cov.roots_of(symbol):
            terms = ", ".join(t for t in (r.style.title(), r.settlement.replace("_", " ")) if t)
            rows.append((f"Chains {r.root}", terms or "imported",
                         f"{plural(r.days, 'day')}, {r.first_day} to {r.last_day}, ~{r.mean_rows_per_day:,.0f} rows/day", ""))
            for i in r.imports:
                rows.append(("", f"{Path(i.file).name} ({i.format})",
                             f"{i.rows_written:,} of {i.rows_read:,} rows stored",
                             format_market_time(i.at) if i.at is not None else ""))
        return rows

    def _fill_sources(self) -> None:
        rows = self.source_rows()
        t = self.sources_table
        t.setRowCount(len(rows))
        for r, values in enumerate(rows):
            for c, text in enumerate(values):
                item = QtWidgets.QTableWidgetItem(text)
                if c == 1 and text:
                    item.setToolTip(text)
                t.setItem(r, c, item)

    def _root_chosen(self, root: str, keep_dates: bool = False) -> None:
        cov = self.coverage
        r = cov.root(root) if cov is not None and root else None
        if r is None or r.first_day is None or r.last_day is None:
            return
        lo, hi = QtCore.QDate(r.first_day), QtCore.QDate(r.last_day)
        for w in (self.from_edit, self.to_edit):
            w.setDateRange(lo, hi)
        if not keep_dates:
            self.from_edit.setDate(lo)
            self.to_edit.setDate(hi)

    # ---- import -------------------------------------------------------------------------------------
    def _choose_files(self) -> None:
        dlg = QtWidgets.QFileDialog(self, "Import option chains", str(Path.home()))
        dlg.setFileMode(QtWidgets.QFileDialog.FileMode.ExistingFiles)
        dlg.setNameFilter("Chain files (*.csv *.txt *.zip *.parquet *.pq);;All files (*)")
        dlg.filesSelected.connect(lambda files: self.import_files(list(files)))
        dlg.open()

    def import_files(self, paths: Sequence[str | Path], fmt: str | None = None, symbol: str | None = None) -> None:
        """Ask the engine to import ``paths`` (format and symbol default to the form's)."""
        if self.job_id is not None:
            self._import_message("an import is already running", error=True)
            return
        fmt = fmt or self.format_box.currentText()
        symbol = (symbol if symbol is not None else self.import_symbol_edit.text()).strip().upper() or None
        names = ", ".join(Path(p).name for p in paths)
        self.import_button.setEnabled(False)
        self.progress.setValue(0)
        self.progress.setFormat("starting…")
        self._import_message(f"Importing {names}…", error=False)

        def started(job_id: Any) -> None:
            self.job_id = str(job_id)
            self.cancel_button.setEnabled(True)
            self.delete_button.setEnabled(False)

        def failed(message: str) -> None:
            self.report_error(message)
            self._import_message(message, error=True)
            self.import_button.setEnabled(True)
            self.progress.setFormat("not started")

        from widgets.base import send_command

        send_command(self.engine, ImportChains(paths=tuple(str(p) for p in paths), fmt=fmt, symbol=symbol),
                     on_error=failed, on_result=started)

    def cancel_import(self) -> None:
        if self.job_id is None:
            return
        self.cancel_button.setEnabled(False)
        self.progress.setFormat("cancelling…")
        self.send(CancelImport(job_id=self.job_id))

    def _import_message(self, text: str, *, error: bool) -> None:
        self.import_status.setText(text)
        self.import_status.setStyleSheet("color: #d64541; font-weight: bold" if error else "color: gray")

    def _finished(self, ev: ChainImportFinished) -> None:
        self.job_id = None
        self.last_finished = ev
        self.import_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        r = ev.report or {}
        dropped = ", ".join(f"{n:,} {k.replace('_', ' ')}" for k, n in r.get("dropped", {}).items() if n) or "none"
        done = (f"{r.get('rows_read', 0):,} rows read, {r.get('rows_written', 0):,} stored, "
                f"{r.get('already_stored', 0):,} already stored; dropped: {dropped}")
        if ev.error:
            self.progress.setFormat("failed")
            self._import_message(f"{ev.error} ({done})", error=True)
            self.report_error(ev.error)
        elif ev.cancelled:
            self.progress.setFormat("cancelled")
            self._import_message(f"Cancelled: completed months kept ({done})", error=False)
        else:
            self.progress.setValue(1000)
            self.progress.setFormat("done")
            roots = ", ".join(r.get("roots", {})) or "no roots"
            self._import_message(f"Imported {roots}: {done}", error=False)
            if r.get("roots"):
                self.symbol_box.setCurrentText(next(iter(r["roots"].values())).get("underlying", ""))
        self.import_finished.emit(ev)

    # ---- delete -------------------------------------------------------------------------------------
    def delete_span(self) -> tuple[str, date, date]:
        return (self.root_box.currentText(), self.from_edit.date().toPython(), self.to_edit.date().toPython())

    def request_delete(self) -> None:
        """Ask for confirmation (non-modal), then send ``DeleteChains`` for the chosen root and range."""
        root, start, end = self.delete_span()
        cov = self.coverage
        r = cov.root(root) if cov is not None and root else None
        if r is None:
            self.report_error("no imported root to delete")
            return
        if start > end:
            self._import_message(f"from {start} is after to {end}", error=True)
            return
        days = [d for d in r.rows_per_day if start <= d <= end]
        rows = sum(r.rows_per_day[d] for d in days)
        box = QtWidgets.QMessageBox(self)
        box.setIcon(QtWidgets.QMessageBox.Icon.Warning)
        box.setWindowTitle("Delete imported chains")
        box.setText(f"Delete {len(days):,} day(s) of {root} ({rows:,} rows) from {start} to {end}?")
        box.setInformativeText("The rows are removed from the chain store; importing the files again restores them.")
        box.setStandardButtons(QtWidgets.QMessageBox.StandardButton.Yes | QtWidgets.QMessageBox.StandardButton.Cancel)
        box.setDefaultButton(QtWidgets.QMessageBox.StandardButton.Cancel)
        box.button(QtWidgets.QMessageBox.StandardButton.Yes).setText("Delete")

        def answered(button: QtWidgets.QAbstractButton) -> None:
            if box.standardButton(button) == QtWidgets.QMessageBox.StandardButton.Yes:
                self.delete_range(root, start, end)

        box.buttonClicked.connect(answered)
        box.finished.connect(lambda _r: setattr(self, "confirm_box", None))
        self.confirm_box = box
        box.open()

    def delete_range(self, root: str, start: date | None, end: date | None) -> None:
        """Send ``DeleteChains`` (no confirmation: :meth:`request_delete` asks first)."""
        self.delete_button.setEnabled(False)

        def done(rows: Any) -> None:
            self._import_message(f"Deleted {int(rows):,} rows of {root}", error=False)

        def failed(message: str) -> None:
            self.report_error(message)
            self._import_message(message, error=True)
            self.delete_button.setEnabled(True)

        from widgets.base import send_command

        send_command(self.engine, DeleteChains(root=root, start=start, end=end), on_error=failed, on_result=done)

    # ---- events -------------------------------------------------------------------------------------
    def apply_events(self, batch: EventBatch) -> None:
        for ev in batch.latest(ChainImportProgress).values():
            if ev.job_id == self.job_id or self.job_id is None:
                f = ev.fraction if ev.fraction == ev.fraction else 0.0
                self.progress.setValue(int(1000 * max(0.0, min(1.0, f))))
                self.progress.setFormat(f"{100 * f:.0f}% · {ev.text}")
        finished = batch.events(ChainImportFinished)
        if finished or batch.has(DataCoverageChanged) or batch.has(ChainsDeleted):
            self.refresh()  # the engine swapped its snapshot in before publishing
        for ev in finished:
            self._finished(ev)

    def panel_state(self) -> dict[str, Any]:
        return {"symbol": self.symbol_box.currentText(), "format": self.format_box.currentText()}

    def restore_panel_state(self, state: dict[str, Any]) -> None:
        if isinstance(state.get("symbol"), str):
            self._wanted_symbol = state["symbol"]
            if self.symbol_box.findText(state["symbol"]) >= 0:
                self.symbol_box.setCurrentText(state["symbol"])
        if isinstance(state.get("format"), str) and state["format"] in FORMATS:
            self.format_box.setCurrentText(state["format"])
