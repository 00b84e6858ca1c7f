"""CSV/Parquet chain loader: the flat layout, column mapping, and bad files naming file, row and column."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.backtest.chain_files import (
    ColumnMapping,
    DataFileError,
    load_chains,
    load_underlying_bars,
    write_history,
)
from engine.backtest.data import ChainHistory, build_history

HEADER = "underlying,quote_date,expiration,strike,option_type,bid,ask,underlying_price,delta\n"
GOOD_ROWS = [
    "SPY,2024-01-02,2024-01-19,470,C,5.10,5.20,472.0,0.55",
    "SPY,2024-01-02,2024-01-19,470,P,3.00,3.10,472.0,-0.45",
    "SPY,2024-01-02,2024-01-19,465,P,1.50,1.60,472.0,-0.30",
    "SPY,2024-01-03,2024-01-19,470,C,4.00,4.10,470.5,0.50",
    "SPY,2024-01-03,2024-01-19,470,P,3.40,3.50,470.5,-0.50",
    "SPY,2024-01-03,2024-01-19,465,P,1.80,1.90,470.5,-0.33",
]


def write(tmp_path: Path, rows: list[str], name: str = "chains.csv", header: str = HEADER) -> Path:
    p = tmp_path / name
    p.write_text(header + "\n".join(rows) + "\n")
    return p


def test_load_csv_when_flat_layout_then_days_contracts_and_spot_are_columnar(tmp_path):
    h = load_chains(write(tmp_path, GOOD_ROWS))
    assert h.underlying == "SPY"
    assert [str(d) for d in h.dates] == ["2024-01-02", "2024-01-03"]
    assert h.spot.tolist() == [472.0, 470.5]
    assert len(h.c_strike) == 3  # three distinct contracts over two days
    chain = h.chain(0)
    # canonical order: expiry, strike, calls before puts
    assert chain.symbol.tolist() == ["SPY240119P00465000", "SPY240119C00470000", "SPY240119P00470000"]
    assert chain.bid.tolist() == [1.50, 5.10, 3.00]
    assert chain.vendor["vendor_delta"].tolist() == [-0.30, 0.55, -0.45]
    assert chain.ts.isoformat() == "2024-01-02T21:00:00+00:00"  # 16:00 New York in winter
    assert str(chain.expiry[0]) == "2024-01-19T21:00:00"


def test_load_parquet_round_trip_when_written_by_write_history_then_identical(tmp_path):
    h = load_chains(write(tmp_path, GOOD_ROWS))
    p = write_history(h, tmp_path / "h.parquet")
    h2 = load_chains(p)
    assert np.array_equal(h2.dates, h.dates)
    assert np.array_equal(h2.bid, h.bid) and np.array_equal(h2.ask, h.ask)
    assert h2.symbols.tolist() == h.symbols.tolist()


def test_load_when_columns_have_other_names_then_mapping_applies(tmp_path):
    header = "sym,date,exp,k,cp,b,a,px\n"
    rows = ["QQQ,01/02/2024,01/19/2024,400,call,2.0,2.2,401.0", "QQQ,01/02/2024,01/19/2024,400,put,1.0,1.1,401.0"]
    m = ColumnMapping.from_pairs(["underlying=sym", "quote_date=date", "expiration=exp", "strike=k",
                                  "option_type=cp", "bid=b", "ask=a", "underlying_price=px", "date_format=%m/%d/%Y"])
    h = load_chains(write(tmp_path, rows, header=header), m)
    assert h.underlying == "QQQ" and h.n_rows == 2 and str(h.dates[0]) == "2024-01-02"
    assert h.c_is_call.tolist() == [True, False]


def test_mapping_when_unknown_field_then_value_error():
    with pytest.raises(ValueError, match="unknown field 'strik'"):
        ColumnMapping.from_pairs(["strik=k"])


@pytest.mark.parametrize(
    ("row_index", "bad_row", "column", "message"),
    [
        (2, "SPY,2024-01-02,2024-01-19,abc,P,1.50,1.60,472.0,-0.30", "strike", "'abc' is not a number"),
        (4, "SPY,2024-01-03,2024-01-19,470,X,3.40,3.50,470.5,-0.50", "option_type", "not an option type"),
        (1, "SPY,2024-13-45,2024-01-19,470,P,3.00,3.10,472.0,-0.45", "quote_date", "is not a date"),
        (3, "SPY,2024-01-03,2024-01-19,470,C,-4.00,4.10,470.5,0.50", "bid", "bid is negative"),
        (5, "SPY,2024-01-03,2023-12-29,465,P,1.80,1.90,470.5,-0.33", "expiration", "before the quote date"),
        (0, "SPY,2024-01-02,2024-01-19,,C,5.10,5.20,472.0,0.55", "strike", "missing"),
        (1, "SPY,2024-01-02,2024-01-19,470,P,3.00,n/a?,472.0,-0.45", "ask", "is not a number"),
    ],
)
def test_load_when_a_cell_is_bad_then_error_names_file_line_and_column(tmp_path, row_index, bad_row, column, message):
    rows = list(GOOD_ROWS)
    rows[row_index] = bad_row
    path = write(tmp_path, rows)
    with pytest.raises(DataFileError) as info:
        load_chains(path)
    err = info.value
    assert err.path == str(path)
    assert err.row == row_index + 2  # header is line 1
    assert err.column == column
    assert message in str(err) and f"row {row_index + 2}" in str(err) and "chains.csv" in str(err)


def test_load_when_required_column_missing_then_error_names_it(tmp_path):
    path = write(tmp_path, ["SPY,2024-01-02,2024-01-19,470,C,5.10"], header="underlying,quote_date,expiration,strike,option_type,bid\n")
    with pytest.raises(DataFileError, match="required column 'ask'") as info:
        load_chains(path)
    assert info.value.column == "ask" and info.value.row is None


def test_load_when_no_spot_anywhere_then_error_names_the_day(tmp_path):
    header = "underlying,quote_date,expiration,strike,option_type,bid,ask\n"
    path = write(tmp_path, ["SPY,2024-01-02,2024-01-19,470,C,5.10,5.20"], header=header)
    with pytest.raises(DataFileError, match="no underlying price"):
        load_chains(path)


def test_load_when_bars_give_the_spot_then_used(tmp_path):
    header = "underlying,quote_date,expiration,strike,option_type,bid,ask\n"
    path = write(tmp_path, ["SPY,2024-01-02,2024-01-19,470,C,5.10,5.20"], header=header)
    bars = tmp_path / "bars.csv"
    bars.write_text("date,open,high,low,close\n2024-01-02,470,474,469,472.5\n")
    h = load_chains(path, bars_path=bars)
    assert h.spot.tolist() == [472.5]


def test_bars_when_close_not_a_number_then_row_and_column(tmp_path):
    bars = tmp_path / "bars.csv"
    bars.write_text("date,close\n2024-01-02,472.5\n2024-01-03,oops\n")
    with pytest.raises(DataFileError) as info:
        load_underlying_bars(bars)
    assert info.value.row == 3 and info.value.column == "close"


def test_load_when_several_underlyings_then_must_choose_and_row_numbers_stay_true(tmp_path):
    rows = [*GOOD_ROWS, "QQQ,2024-01-02,2024-01-19,400,C,2.0,2.1,401.0,0.5",
            "QQQ,2024-01-02,2024-01-19,400,P,zz,2.1,401.0,-0.5"]
    path = write(tmp_path, rows)
    with pytest.raises(DataFileError, match="several underlyings"):
        load_chains(path)
    assert load_chains(path, underlying="SPY").n_rows == 6
    with pytest.raises(DataFileError) as info:
        load_chains(path, underlying="QQQ")
    assert info.value.row == 9 and info.value.column == "bid"  # line in the file, not in the filtered frame


def test_load_when_file_missing_or_unsupported_then_clear_error(tmp_path):
    with pytest.raises(DataFileError, match="does not exist"):
        load_chains(tmp_path / "nope.csv")
    other = tmp_path / "x.xlsx"
    other.write_text("x")
    with pytest.raises(DataFileError, match="unsupported file type"):
        load_chains(other)


def test_load_when_contract_repeats_on_a_day_then_error(tmp_path):
    path = write(tmp_path, [*GOOD_ROWS, GOOD_ROWS[0]])
    with pytest.raises(DataFileError, match="appears twice"):
        load_chains(path)


def test_directory_of_files_then_joined_in_date_order(tmp_path):
    write(tmp_path, GOOD_ROWS[3:], name="b.csv")
    write(tmp_path, GOOD_ROWS[:3], name="a.csv")
    h = load_chains(tmp_path)
    assert [str(d) for d in h.dates] == ["2024-01-02", "2024-01-03"] and h.n_rows == 6


def test_slice_days_shares_contracts_and_restarts_offsets():
    h = _tiny()
    s = h.slice_days(1, 3)
    assert s.n_days == 2 and s.offsets[0] == 0 and s.chain(0).bid.tolist() == h.chain(1).bid.tolist()


def _tiny() -> ChainHistory:
    days = np.array(["2024-01-02", "2024-01-03", "2024-01-04"], dtype="datetime64[D]")
    qd = np.repeat(days, 2)
    return build_history("SPY", qd, np.full(6, np.datetime64("2024-01-19")), np.tile([465.0, 470.0], 3),
                         np.zeros(6, bool), np.arange(6.0), np.arange(6.0) + 0.1, spot_by_row=np.full(6, 470.0))


def test_load_when_several_snapshots_per_day_then_intraday_history_in_new_york_time(tmp_path):
    rows = ["SPY,2024-01-02 10:00:00,2024-01-19,470,C,5.10,5.20,472.0,0.55",
            "SPY,2024-01-02 16:00:00,2024-01-19,470,C,5.30,5.40,473.0,0.56",
            "SPY,2024-07-01 10:00:00,2024-07-19,470,C,5.30,5.40,473.0,0.56"]
    h = load_chains(write(tmp_path, rows))
    assert h.intraday and h.n_days == 3
    assert [str(d) for d in h.dates] == ["2024-01-02", "2024-01-02", "2024-07-01"]
    assert [h.timestamp(i).isoformat() for i in range(3)] == [
        "2024-01-02T15:00:00+00:00", "2024-01-02T21:00:00+00:00", "2024-07-01T14:00:00+00:00"]  # EST / EDT
    assert [h.session_end(i) for i in range(3)] == [False, True, True]
    assert h.chain(0).bid.tolist() == [5.10] and h.spot.tolist() == [472.0, 473.0, 473.0]
    h2 = load_chains(write_history(h, tmp_path / "h.parquet"))
    assert h2.intraday and np.array_equal(h2.times, h.times)
