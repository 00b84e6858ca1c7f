"""`optiondesk data import`: vendor chain files in, a backtest out (Cboe DataShop, OptionsDX, native)."""

import zipfile

import numpy as np
import pandas as pd
import pytest

from engine.backtest.config import BacktestConfig
from engine.backtest.runner import Backtest
from engine.backtest.sources import simulated_history
from engine.chainstore.formats import ChainFormatError, sniff_format
from engine.chainstore.store import ChainStore, contract_terms
from engine.cli import main
from engine.model import ExerciseStyle, Settlement

CBOE_COLUMNS = (
    "underlying_symbol,quote_date,root,expiration,strike,option_type,open,high,low,close,trade_volume,"
    "bid_size_1545,bid_1545,ask_size_1545,ask_1545,underlying_bid_1545,underlying_ask_1545,"
    "implied_underlying_price_1545,active_underlying_price_1545,implied_volatility_1545,delta_1545,gamma_1545,"
    "theta_1545,vega_1545,rho_1545,bid_size_eod,bid_eod,ask_size_eod,ask_eod,underlying_bid_eod,"
    "underlying_ask_eod,vwap,open_interest,delivery_code").split(",")


@pytest.fixture(scope="module")
def history():
    return simulated_history("SPY", 0.12, 11, use_cache=False)


@pytest.fixture(scope="module")
def cboe_file(history, tmp_path_factory):
    return _write_cboe(history, tmp_path_factory.mktemp("vendor") / "UnderlyingOptionsEODCalcs_SPY.csv")


def _cboe_frame(h) -> pd.DataFrame:
    n = h.n_rows
    day = np.repeat(np.arange(h.n_days), np.diff(h.offsets))
    spot = h.spot[day]
    z = np.zeros(n)
    f = pd.DataFrame({c: z for c in CBOE_COLUMNS})
    f["underlying_symbol"] = "SPY"
    f["quote_date"] = h.dates[day].astype(str)
    f["root"] = "SPY"
    f["expiration"] = h.expiry.astype(str)
    f["strike"] = h.strike
    f["option_type"] = np.where(h.is_call, "C", "P")
    f["bid_1545"], f["ask_1545"] = h.bid, h.ask
    f["underlying_bid_1545"], f["underlying_ask_1545"] = spot - 0.01, spot + 0.01
    f["active_underlying_price_1545"] = spot
    f["implied_volatility_1545"] = h.iv
    f["delta_1545"] = h.delta
    f["open_interest"] = 100
    f["delivery_code"] = ""
    return f[CBOE_COLUMNS]


def _write_cboe(h, path):
    _cboe_frame(h).to_csv(path, index=False)
    return path


def test_cboe_when_imported_then_backtest_sees_the_same_chains(tmp_path, history, cboe_file):
    src = cboe_file
    assert sniff_format(src) == "cboe"
    store = ChainStore(tmp_path / "chains")
    report = store.import_file(src, chunk_rows=5_000)  # several chunks: months are flushed as the file streams
    assert report.rows_read == history.n_rows
    assert report.rows_written + sum(report.dropped.values()) == history.n_rows
    assert report.dropped["crossed"] == 0 and report.dropped["unreadable"] == 0
    cov = store.coverage("SPY")
    assert cov["days"] == history.n_days and cov["first_day"] == str(history.dates[0])
    loaded = store.load("SPY")
    assert loaded.n_days == history.n_days
    np.testing.assert_allclose(loaded.spot, history.spot)
    # the same series on the same day has the same quote
    a = pd.DataFrame({"d": np.repeat(loaded.dates, np.diff(loaded.offsets)), "s": loaded.symbols[loaded.contract],
                      "bid": loaded.bid})
    b = pd.DataFrame({"d": np.repeat(history.dates, np.diff(history.offsets)), "s": history.symbols[history.contract],
                      "bid": history.bid})
    m = a.merge(b, on=["d", "s"], suffixes=("_in", "_src"))
    assert len(m) == report.rows_written
    np.testing.assert_array_equal(m["bid_in"], m["bid_src"])
    cfg = BacktestConfig(strategy="iv_rank_put_spread", symbol="SPY", iv_min_history=5)
    result = Backtest(cfg, loaded).run()
    assert result.status == "completed" and len(result.equity) == history.n_days


def test_import_when_repeated_then_adds_nothing(tmp_path, cboe_file):
    src = cboe_file
    store = ChainStore(tmp_path / "chains")
    first = store.import_file(src)
    again = store.import_file(src)
    assert again.rows_written == 0 and again.already_stored == first.rows_written
    assert store.coverage("SPY")["rows"] == first.rows_written


def test_import_when_bad_rows_then_each_dropped_with_its_reason(tmp_path, history):
    f = _cboe_frame(history).head(40).copy()
    f.loc[0, "bid_1545"], f.loc[0, "ask_1545"] = 2.0, 1.0  # crossed
    f.loc[1, ["bid_1545", "ask_1545"]] = 0.0  # no quote
    f.loc[2, "expiration"] = "2000-01-21"  # expired
    f["strike"] = f["strike"].astype(object)
    f.loc[3, "strike"] = "abc"  # unreadable
    f.loc[4, ["active_underlying_price_1545", "underlying_bid_1545", "underlying_ask_1545"]] = 0.0
    f = pd.concat([f, f.iloc[[10]]])  # a duplicate series
    src = tmp_path / "bad.csv"
    f.to_csv(src, index=False)
    report = ChainStore(tmp_path / "chains").import_file(src)
    assert report.dropped == {"unreadable": 1, "no_underlying": 1, "crossed": 1, "no_quote": 1, "expired": 1,
                              "duplicate": 1}
    assert report.rows_written == 41 - 6


def test_optionsdx_when_imported_then_calls_and_puts_side_by_side_become_rows(tmp_path):
    text = (" [QUOTE_UNIXTIME], [QUOTE_READTIME], [QUOTE_DATE], [QUOTE_TIME_HOURS], [UNDERLYING_LAST], [EXPIRE_DATE],"
            " [EXPIRE_UNIX], [DTE], [C_DELTA], [C_GAMMA], [C_VEGA], [C_THETA], [C_RHO], [C_IV], [C_VOLUME], [C_LAST],"
            " [C_SIZE], [C_BID], [C_ASK], [STRIKE], [P_BID], [P_ASK], [P_SIZE], [P_LAST], [P_DELTA], [P_GAMMA],"
            " [P_VEGA], [P_THETA], [P_RHO], [P_IV], [P_VOLUME], [STRIKE_DISTANCE], [STRIKE_DISTANCE_PCT]\n"
            "1641243600, 2022-01-03 16:00, 2022-01-03, 16.000000, 477.71, 2022-01-21, 1642798800, 18.00, 0.52,"
            " 0.02, 0.4, -0.1, 0.1, 0.16, 100, 8.1, 5 x 5, 8.00, 8.20, 477.00, 6.90, 7.00, 5 x 5, 6.9, -0.47, 0.02,"
            " 0.4, -0.1, -0.1, 0.17, 80, 0.7, 0.001\n"
            "1641243600, 2022-01-03 16:00, 2022-01-03, 16.000000, 477.71, 2022-01-21, 1642798800, 18.00, 0.48,"
            " 0.02, 0.4, -0.1, 0.1, , 0, , 5 x 5, 6.10, 6.30, 480.00, 8.00, 8.30, 5 x 5, , -0.51, 0.02,"
            " 0.4, -0.1, -0.1, 0.17, 0, 2.3, 0.005\n")
    src = tmp_path / "spy_eod_202201.txt"
    src.write_text(text)
    assert sniff_format(src) == "optionsdx"
    store = ChainStore(tmp_path / "chains")
    with pytest.raises(ChainFormatError, match="pass --symbol"):
        store.import_file(src)
    report = store.import_file(src, symbol="spy")
    assert report.rows_read == 2 and report.rows_written == 4
    h = store.load("SPY")
    assert h.n_rows == 4 and h.spot[0] == pytest.approx(477.71)
    row = np.nonzero((h.strike == 480.0) & h.is_call)[0][0]
    assert (h.bid[row], h.ask[row]) == (6.10, 6.30) and np.isnan(h.iv[row])


def test_zipped_daily_file_and_index_roots(tmp_path, history):
    f = _cboe_frame(history).head(30).copy()
    f["underlying_symbol"], f["root"] = "^SPX", "SPXW"
    inner = tmp_path / "UnderlyingOptionsEODCalcs_2024-01-02.csv"
    f.to_csv(inner, index=False)
    src = tmp_path / "UnderlyingOptionsEODCalcs_2024-01-02.zip"
    with zipfile.ZipFile(src, "w") as z:
        z.write(inner, inner.name)
    store = ChainStore(tmp_path / "chains")
    store.import_file(src)
    assert store.roots() == ["SPXW"] and store.manifest("SPXW")["underlying"] == "SPX"
    h = store.load("SPXW")
    assert (h.underlying, h.style, h.settlement) == ("SPX", ExerciseStyle.EUROPEAN, Settlement.CASH_PM)
    assert contract_terms("SPX") == (ExerciseStyle.EUROPEAN, Settlement.CASH_AM)
    assert contract_terms("AAPL") == (ExerciseStyle.AMERICAN, Settlement.PHYSICAL)


def test_unknown_layout_and_missing_file_say_what_is_wrong(tmp_path):
    odd = tmp_path / "odd.csv"
    odd.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(ChainFormatError, match="unrecognised layout"):
        ChainStore(tmp_path / "chains").import_file(odd)
    with pytest.raises(ChainFormatError, match="does not exist"):
        ChainStore(tmp_path / "chains").import_file(tmp_path / "nope.csv")
    with pytest.raises(ValueError, match="no imported chains for QQQ"):
        ChainStore(tmp_path / "chains").load("QQQ")


def test_cli_import_list_delete(tmp_path, history, cboe_file, capsys):
    src = cboe_file
    base = str(tmp_path / "chains")
    assert main(["data", "import", str(src), "--dir", base, "--json"]) == 0
    out = capsys.readouterr().out
    assert '"rows_written"' in out and '"SPY"' in out
    assert main(["data", "list", "--dir", base]) == 0
    assert f"{history.n_days} days" in capsys.readouterr().out
    mid = str(history.dates[history.n_days // 2])
    assert main(["data", "delete", "SPY", "--from", mid, "--dir", base]) == 2  # needs --yes
    assert main(["data", "delete", "SPY", "--from", mid, "--dir", base, "--yes"]) == 0
    assert ChainStore(base).coverage("SPY")["last_day"] < mid
    assert main(["data", "import", str(tmp_path / "missing.csv"), "--dir", base]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_backtest_cli_when_source_imported_then_runs_on_the_imported_days(tmp_path, history, cboe_file, monkeypatch,
                                                                          capsys):
    monkeypatch.setenv("OPTIONDESK_HOME", str(tmp_path / "home"))
    assert main(["backtest", "--source", "imported", "--symbol", "SPY", "--out", str(tmp_path / "none")]) == 2
    assert "no imported chains for SPY" in capsys.readouterr().err
    assert main(["data", "import", str(cboe_file)]) == 0
    start, end = str(history.dates[3]), str(history.dates[-4])
    code = main(["backtest", "--source", "imported", "--symbol", "SPY", "--start", start, "--end", end,
                 "--out", str(tmp_path / "run"), "--json", "--no-png"])
    assert code == 0, capsys.readouterr().err
    equity = pd.read_csv(tmp_path / "run" / "equity.csv")
    assert str(equity.iloc[0, 0])[:10] == start and str(equity.iloc[-1, 0])[:10] == end
    assert len(equity) == history.n_days - 6
