"""Loaders reject crossed, truncated, duplicated-date and mis-zoned data, naming the file, row and column."""

from __future__ import annotations

import numpy as np
import pytest

from engine.backtest.chain_files import DataFileError, load_chains, load_underlying_bars
from tests.backtest.test_data_loader import GOOD_ROWS, HEADER, write


def test_crossed_quote_then_error_names_row_and_bid_column(tmp_path) -> None:
    rows = list(GOOD_ROWS)
    rows[3] = "SPY,2024-01-03,2024-01-19,470,C,4.20,4.10,470.5,0.50"  # bid 4.20 > ask 4.10
    path = write(tmp_path, rows)
    with pytest.raises(DataFileError) as info:
        load_chains(path)
    err = info.value
    assert err.row == 5 and err.column == "bid" and str(path) in str(err)
    assert "bid is above the ask" in str(err) and "4.2 > 4.1" in str(err)
    # a locked quote (bid == ask) and a one-sided quote are not crossed
    rows[3] = "SPY,2024-01-03,2024-01-19,470,C,4.10,4.10,470.5,0.50"
    rows[4] = "SPY,2024-01-03,2024-01-19,470,P,,3.50,470.5,-0.50"
    assert load_chains(write(tmp_path, rows)).n_rows == 6


def test_csv_cut_mid_row_then_error_names_the_last_row_and_first_missing_column(tmp_path) -> None:
    path = tmp_path / "chains.csv"
    path.write_text(HEADER + "\n".join(GOOD_ROWS[:-1]) + "\nSPY,2024-01-03,2024-01-19,465,P,1.8")  # cut in the bid
    with pytest.raises(DataFileError) as info:
        load_chains(path)
    err = info.value
    assert err.row == 7 and err.column == "ask" and "truncated" in str(err) and "6 of 9 fields" in str(err)
    # the whole file, even without a final newline, loads
    path.write_text(HEADER + "\n".join(GOOD_ROWS))
    assert load_chains(path).n_rows == 6


def test_bar_file_with_a_date_twice_out_of_order_then_error_names_both_rows(tmp_path) -> None:
    bars = tmp_path / "bars.csv"
    bars.write_text("date,close\n2024-01-03,471\n2024-01-02,472.5\n2024-01-03,470\n")  # unsorted: 01-03 twice
    with pytest.raises(DataFileError) as info:
        load_underlying_bars(bars)
    err = info.value
    assert err.row == 4 and err.column == "date" and "2024-01-03 appears twice (rows 2 and 4)" in str(err)


def test_zoned_parquet_timestamps_keep_their_instant(tmp_path) -> None:
    import pandas as pd

    rows = [r.split(",") for r in GOOD_ROWS[:3]]
    frame = pd.DataFrame(rows, columns=HEADER.strip().split(","))
    for c in ("strike", "bid", "ask", "underlying_price", "delta"):
        frame[c] = frame[c].astype(float)
    frame["quote_date"] = pd.to_datetime(["2024-01-02T14:45:00Z", "2024-01-02T14:45:00Z", "2024-01-02T21:00:00Z"],
                                         utc=True)
    frame["expiration"] = pd.to_datetime(frame["expiration"])
    path = tmp_path / "zoned.parquet"
    frame.to_parquet(path, index=False)
    h = load_chains(path)
    assert h.intraday
    assert [h.timestamp(i).isoformat() for i in range(h.n_days)] == ["2024-01-02T14:45:00+00:00",
                                                                      "2024-01-02T21:00:00+00:00"]


def test_zoned_csv_timestamps_are_intraday_in_their_zone(tmp_path) -> None:
    rows = ["SPY,2024-01-02T10:00:00-05:00,2024-01-19,470,C,5.10,5.20,472.0,0.55",
            "SPY,2024-01-02T21:00:00Z,2024-01-19,470,C,5.30,5.40,473.0,0.56",
            "SPY,2024-07-01T10:00:00-04:00,2024-07-19,470,C,5.30,5.40,473.0,0.56"]
    h = load_chains(write(tmp_path, rows))
    assert h.intraday and [str(d) for d in h.dates] == ["2024-01-02", "2024-01-02", "2024-07-01"]
    assert [h.timestamp(i).isoformat() for i in range(3)] == [
        "2024-01-02T15:00:00+00:00", "2024-01-02T21:00:00+00:00", "2024-07-01T14:00:00+00:00"]
    assert np.count_nonzero([h.session_end(i) for i in range(3)]) == 2


def test_column_mixing_zoned_and_local_times_then_error_names_the_row(tmp_path) -> None:
    rows = ["SPY,2024-01-02T10:00:00-05:00,2024-01-19,470,C,5.10,5.20,472.0,0.55",
            "SPY,2024-01-02 16:00:00,2024-01-19,470,C,5.30,5.40,473.0,0.56"]
    with pytest.raises(DataFileError) as info:
        load_chains(write(tmp_path, rows))
    err = info.value
    assert err.row == 3 and err.column == "quote_date" and "has no time zone" in str(err)
