"""The multi-underlying replay: an index and its members, each with its chain, on one clock through the one
kernel (live OrderManager → RiskEngine → PaperBroker), and dispersion's seeded backtest on it (issue 16)."""

from __future__ import annotations

import numpy as np
import pytest

from engine.backtest.config import BacktestConfig
from engine.backtest.runner import Backtest
from engine.backtest.sources import load_histories
from engine.market.simulated.index import BASKET

MEMBERS = [m[0] for m in BASKET]


@pytest.fixture(scope="module")
def basket(tmp_path_factory):
    """Half a year of DSPX and its six members from one seeded run of the simulated market."""
    mp = pytest.MonkeyPatch()
    mp.setenv("OPTIONDESK_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    try:
        cfg = BacktestConfig(strategy="dispersion", symbol="DSPX", members=MEMBERS, years=0.5, seed=7,
                             initial_cash=1_000_000.0)
        history, members = load_histories(cfg)
        yield cfg, history, members
    finally:
        mp.undo()


def test_the_index_and_its_members_come_from_one_market_path(basket):
    _, index, members = basket
    assert list(members) == MEMBERS
    for m in members.values():
        assert np.array_equal(m.dates, index.dates)
    # one path: the index level is its members' basket on every day (generated apart, it would not be)
    shares = np.array([m[4] for m in BASKET])
    level = np.column_stack([members[s].spot for s in MEMBERS]) @ shares
    assert np.allclose(index.spot, level, rtol=1e-9)


def test_dispersion_backtest_trades_every_leg_through_the_kernel_and_reconciles(basket):
    cfg, index, members = basket
    run = Backtest(cfg, index, members=members)
    result = run.run()
    assert result.status == "completed", result.error
    assert result.info["members"] == MEMBERS
    first = [o for o in result.orders if o["tag"].startswith("dispersion-00001.") and o["tag"].endswith(":open")]
    legs = {o["tag"].split(".")[-1].split(":")[0] for o in first}
    # the index fly and the member straddles (a member rounded to no contract is left out; two at least)
    assert "DSPX" in legs and len(legs - {"DSPX"}) >= 2 and all(o["status"] == "filled" for o in first)
    closed = [t for t in result.trades if t.closed_at is not None]
    assert {t.underlying for t in closed} >= legs, "every leg of the first trade was closed again"
    assert result.reconciliation()["difference"] == 0  # total P&L = Σ trade P&L − fees, to the cent
    # each filled order traded its own underlying's contracts, quoted in that underlying's chain of its day, at a
    # net price inside the natural of those quotes (that chain reached the exchange and the risk engine)
    for o in (o for o in result.orders if o["status"] == "filled"):
        sym = o["tag"].split(":")[0].split(".")[-1]
        h = index if sym == "DSPX" else members[sym]
        day = h.day_index(np.datetime64(o["created_at"][:10], "D"))
        rows = h.rows(day)
        quoted = dict(zip(h.symbols[h.contract[rows]], zip(h.bid[rows], h.ask[rows], strict=True), strict=True))
        bound = 0.0
        for leg in o["legs"].split(" / "):
            _, ratio, key = leg.split()
            assert key.startswith(sym) and key in quoted, f"{key} not in {sym}'s chain on {day}"
            bound += int(ratio) * quoted[key][1]
        assert abs(float(o["avg_fill_price"])) <= bound * 1.05 + 0.05, o
    # the members' limits came from the strategy and are named in the run's summary
    assert result.info["risk_limits"] == {"max_positions": 8}


def test_a_member_on_other_steps_is_refused_with_the_reason(basket):
    cfg, index, members = basket
    short = {**members, "DSPA": members["DSPA"].slice_days(0, members["DSPA"].n_days - 1)}
    with pytest.raises(ValueError, match="DSPA is not on the steps of DSPX"):
        Backtest(cfg, index, members=short)


def test_members_need_daily_simulated_histories():
    cfg = BacktestConfig(symbol="DSPX", members=MEMBERS, years=0.5, intraday_minutes=30)
    with pytest.raises(ValueError, match="daily simulated histories"):
        load_histories(cfg)


def test_backtest_cli_replays_members_with_the_symbol(basket, tmp_path, capsys):
    from engine.cli import main

    code = main(["backtest", "--strategy", "dispersion", "--symbol", "DSPX", "--members", ",".join(MEMBERS),
                 "--years", "0.5", "--cash", "1000000", "--no-png", "--out", str(tmp_path / "run")])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "P&L − (Σ trades − fees)  0.00" in out.out  # reconciled to the cent
    trades = (tmp_path / "run" / "trades.csv").read_text()
    tags = {line.split(",")[1] for line in trades.splitlines()[1:]}
    assert {"dispersion-00001.DSPX", "dispersion-00001.DSPA"} <= tags  # the index leg and a member's, each its own
    # a member the simulated market does not have is an error naming it, not a run without it
    assert main(["backtest", "--strategy", "dispersion", "--symbol", "DSPX", "--members", "DSPA,NOPE",
                 "--years", "0.5", "--out", str(tmp_path / "bad")]) == 2
    assert "NOPE" in capsys.readouterr().err
