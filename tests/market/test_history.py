"""Historical mode: reproducible daily snapshots, Parquet layout, the backtester's ChainHistory."""

from __future__ import annotations

import argparse
import json
from datetime import date

import numpy as np
import pandas as pd
import pytest

from engine.market import cli
from engine.market.config import SimulatorConfig
from engine.market.simulated.history import (
    generate_daily_history,
    generate_history,
    iter_sessions,
    load_history,
)
from engine.model import Settlement

START = date(2025, 3, 3)


def test_daily_history_is_reproducible_under_a_seed():
    a = generate_daily_history("IWM", days=15, seed=21, start=START)
    b = generate_daily_history("IWM", days=15, seed=21, start=START)
    c = generate_daily_history("IWM", days=15, seed=22, start=START)
    assert a.n_days == 15
    np.testing.assert_array_equal(a.bid, b.bid)
    np.testing.assert_array_equal(a.spot, b.spot)
    assert not np.array_equal(a.spot, c.spot)
    day = a.chain(3)
    assert day.underlying == "IWM" and len(day) > 50
    assert np.all(day.expiry.astype("datetime64[D]") > np.datetime64(a.dates[3], "D"))


def test_history_skips_holidays_and_snapshots_at_the_close():
    snaps = list(iter_sessions(SimulatorConfig(seed=2).restricted_to(["SPY"]), date(2025, 4, 16), 3))
    assert [s.session for s in snaps] == [date(2025, 4, 16), date(2025, 4, 17), date(2025, 4, 21)]  # Good Friday
    assert all(s.ts.hour == 20 for s in snaps)  # 16:00 New York in summer time
    assert snaps[0].close["SPY"] == pytest.approx(snaps[0].chains["SPY"].spot)


def test_generate_history_writes_parquet_that_loads_back(tmp_path):
    m = generate_history(tmp_path / "h", symbols=["SPY", "SPX"], days=4, seed=7, start=START, intraday_minutes=120)
    assert m.sessions == 4 and set(m.roots) == {"SPY", "SPX", "SPXW"}
    manifest = json.loads((tmp_path / "h" / "manifest.json").read_text())
    assert manifest["seed"] == 7 and manifest["config"]["seed"] == 7
    frame = pd.read_parquet(tmp_path / "h" / "chains" / "SPXW.parquet")
    for col in ("underlying", "quote_date", "expiration", "strike", "option_type", "bid", "ask",
                "underlying_price", "iv", "delta", "volume", "open_interest"):
        assert col in frame.columns
    assert set(frame["underlying"]) == {"SPX"}
    spxw = load_history(tmp_path / "h", "SPXW")
    assert spxw.root == "SPXW" and spxw.settlement is Settlement.CASH_PM and spxw.n_days == 4
    assert str(spxw.chain(0).symbol[0]).startswith("SPXW")
    spx = load_history(tmp_path / "h", "SPX")
    assert spx.settlement is Settlement.CASH_AM
    intraday = pd.read_parquet(tmp_path / "h" / "intraday" / "SPY.parquet")
    assert intraday["ts"].nunique() == 4 * 3  # 11:30, 13:30, 15:30 each session
    bars = pd.read_parquet(tmp_path / "h" / "bars" / "SPY.parquet")
    assert list(bars.columns) == ["date", "open", "close", "regime"] and len(bars) == 4
    with pytest.raises(ValueError, match="holds roots"):
        load_history(tmp_path / "h", "QQQ")
    with pytest.raises(FileNotFoundError, match="manifest"):
        load_history(tmp_path, "SPY")


def test_bad_history_arguments_are_rejected():
    with pytest.raises(ValueError, match="exactly one of years or days"):
        generate_daily_history("SPY", seed=1)
    with pytest.raises(ValueError, match="unknown simulated symbol"):
        generate_daily_history("TSLA", days=2)
    with pytest.raises(ValueError, match="days must be positive"):
        generate_daily_history("SPY", days=0)


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_simulate_and_chain(tmp_path, capsys):
    out = tmp_path / "cli"
    assert _run(["simulate", "--symbols", "SPY,QQQ", "--days", "2", "--seed", "7", "--start", "2025-03-03",
                 "--out", str(out)]) == 0
    assert (out / "chains" / "QQQ.parquet").exists()
    first = pd.read_parquet(out / "chains" / "SPY.parquet")
    assert _run(["simulate", "--symbols", "SPY,QQQ", "--days", "2", "--seed", "7", "--start", "2025-03-03",
                 "--out", str(tmp_path / "again")]) == 0
    pd.testing.assert_frame_equal(first, pd.read_parquet(tmp_path / "again" / "chains" / "SPY.parquet"))
    assert _run(["chain", "SPY", "--expiry", "nearest", "--date", "2025-03-03", "--strikes", "2"]) == 0
    text = capsys.readouterr().out
    assert "CALLS" in text and "PUTS" in text and "%" in text
    assert _run(["chain", "TSLA"]) == 2
    assert _run(["simulate", "--symbols", "TSLA", "--days", "1", "--out", str(tmp_path / "x")]) == 2
