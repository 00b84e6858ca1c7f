"""``optiondesk history import``: daily close and ATM IV from CSV / Parquet into the history store."""

from __future__ import annotations

import json
from datetime import date

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.cli import main
from engine.history.importer import HistoryImportError, import_files, read_file
from engine.history.service import read_snapshot
from engine.store import Store

AT = "2026-03-02T14:30:00+00:00"


def _csv(path, text: str):
    path.write_text(text)
    return path


def test_import_when_csv_and_parquet_then_rows_stored_once_and_a_recorded_day_wins(tmp_path) -> None:
    good = _csv(tmp_path / "spy.csv", "Date,Open,Close,ATM_IV\n2026-02-26,1,600.5,0.18\n2026-02-27,1,601.0,0.19\n")
    table = pa.table({"day": ["2026-02-25", "2026-02-26"], "underlying": ["QQQ", "QQQ"], "close": [500.0, 505.0],
                      "iv": [0.22, 0.23]})
    pq.write_table(table, tmp_path / "qqq.parquet")
    store = Store.open(tmp_path / "od.sqlite")
    try:
        store.execute("INSERT INTO iv_history(underlying, day, atm_iv, close, source) VALUES "
                      "('SPY', '2026-02-26', 0.99, 1.0, 'surface')")
        with pytest.raises(HistoryImportError, match="missing column"):  # spy.csv has no symbol column
            import_files(store, [good], at=AT)
        report = import_files(store, [good], symbol="spy", at=AT)
        assert (report.rows, report.written) == (2, 1)  # the recorded 26 Feb is kept
        report = import_files(store, [tmp_path / "qqq.parquet"], at=AT)
        assert report.symbols["QQQ"] == {"rows": 2, "written": 2, "first_day": "2026-02-25", "last_day": "2026-02-26"}
        again = import_files(store, [good], symbol="SPY", at=AT)
        assert again.written == 0 and again.to_dict()["already_stored"] == 2  # idempotent
        rows = store.query("SELECT day, atm_iv, close, source FROM iv_history WHERE underlying='SPY' ORDER BY day")
        assert [(r["day"], r["atm_iv"], r["close"], r["source"]) for r in rows] == [
            ("2026-02-26", 0.99, 1.0, "surface"), ("2026-02-27", 0.19, 601.0, "file:spy.csv")]
        snap = read_snapshot(store, "QQQ", min_history=1)
        assert snap.last_day == date(2026, 2, 26) and snap.atm_iv == pytest.approx(0.23)
    finally:
        store.close()


def test_bad_values_when_read_then_every_problem_named_by_file_row_and_column_and_nothing_written(tmp_path) -> None:
    bad = _csv(tmp_path / "bad.csv", "date,symbol,close,atm_iv\n"
               "2026-02-26,SPY,600,0.18\n"     # line 2 fine
               "26/02/2026,SPY,600,0.18\n"     # line 3 bad date
               "2026-02-27,SPY,abc,0.18\n"     # line 4 bad close
               "2026-03-02,SPY,601,18\n"       # line 5 IV in per cent
               "2026-02-26,SPY,600,0.18\n"     # line 6 duplicate of line 2
               "2026-03-03,SPY,-1,\n")         # line 7 negative close, missing IV
    with pytest.raises(HistoryImportError) as info:
        read_file(bad)
    errors = info.value.errors
    assert errors == [
        f"{bad}, row 3, column date: '26/02/2026' is not a date (YYYY-MM-DD)",
        f"{bad}, row 4, column close: 'abc' is not a number",
        f"{bad}, row 5, column atm_iv: 18.0 looks like per cent; give the IV as a fraction (0.18 for 18 %)",
        f"{bad}, row 6, column date: SPY 2026-02-26 already given in row 2",
        f"{bad}, row 7, column close: -1.0 must be positive",
        f"{bad}, row 7, column atm_iv: missing",
    ]
    good = _csv(tmp_path / "good.csv", "date,symbol,close,atm_iv\n2026-02-26,SPY,600,0.18\n")
    store = Store.open(tmp_path / "od.sqlite")
    try:
        with pytest.raises(HistoryImportError):
            import_files(store, [good, bad], at=AT)  # one bad file: nothing from the good one either
        assert store.query("SELECT COUNT(*) AS n FROM iv_history")[0]["n"] == 0
    finally:
        store.close()
    with pytest.raises(HistoryImportError, match=r"unknown format '\.xlsx'"):
        read_file(_csv(tmp_path / "x.xlsx", "a"))
    with pytest.raises(HistoryImportError, match="no rows"):
        read_file(_csv(tmp_path / "empty.csv", "date,symbol,close,atm_iv\n"))


def test_cli_when_imported_then_json_report_and_bad_file_exit_code(tmp_path, capsys) -> None:
    f = _csv(tmp_path / "spy.csv", "date,close,iv\n2026-02-26,600,0.18\n2026-02-27,601,0.19\n")
    db = tmp_path / "od.sqlite"
    assert main(["history", "import", str(f), "--symbol", "SPY", "--db", str(db), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["written"] == 2 and out["symbols"]["SPY"]["last_day"] == "2026-02-27"
    bad = _csv(tmp_path / "bad.csv", "date,close,iv\n2026-02-28,x,0.18\n")
    code = main(["history", "import", str(bad), "--symbol", "SPY", "--db", str(db)])
    err = capsys.readouterr().err
    assert code != 0 and "nothing imported" in err and f"{bad}, row 2, column close" in err
