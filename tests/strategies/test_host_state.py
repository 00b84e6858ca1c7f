"""What the strategy host stores and validates, without a running market: the ``[[strategies]]`` settings entries
one by one, a managed strategy's books through ``state()``/``restore()``, and settlement fills attributed to the
strategy that holds the contract (with the shares an assignment delivers)."""

from __future__ import annotations

import json
import math
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from engine import strategies
from engine.brokers.paper import PositionsSettled
from engine.model import Equity, Fill, Leg, Option, Side
from engine.settings import validate
from engine.strategies.base import OpenTrade
from engine.strategies.config import StrategyEntry, split_entries

NOW = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)


def test_settings_strategy_entries_are_validated_one_by_one_and_a_bad_one_keeps_the_rest():
    settings, errors = validate({
        "general": {"seed": 11},
        "strategies": [
            {"name": "iron_condor", "id": "a", "budget": {"capital": 5000}},
            {"name": "iron_condor", "id": "b", "mode": "lve"},
            {"name": "put_write", "id": "a"},
            {"name": "put_write", "mode": "live"},
            {"name": "put_write", "id": "bad id!"},
            "iron_condor",
            {"name": "iv_rank_put_spread", "budgett": {}},
        ]})
    assert settings.general.seed == 11
    assert [(e.id, e.budget.capital) for e in settings.strategies] == [("a", 5000.0)]
    text = [str(e) for e in errors]
    assert "strategies.1.mode: strategy 'b' not run: Input should be 'paper' or 'live'" in text[0]
    assert "strategies.2.id: strategy 'a' not run: id 'a' is used by an earlier entry" in text[1]
    assert "mode 'live' needs live_account" in text[2] and text[2].startswith("strategies.3")
    assert "id 'bad id!' must be 1-64 letters" in text[3]
    assert text[4].startswith("strategies.5: strategy 'strategies[5]' not run: must be a table")
    assert text[5].startswith("strategies.6.budgett: strategy 'iv_rank_put_spread' not run: unknown setting")


def test_split_entries_when_not_a_list_then_one_error_and_no_entries():
    assert split_entries({"name": "x"}) == ([], [(-1, "strategies", "strategies",
                                                   "must be a list of [[strategies]] tables")])
    assert StrategyEntry(name="put_write").id == "put_write"


def _option(strike: str, right: str) -> Option:
    return Option.from_occ(f"SPY   260417{right}00{int(Decimal(strike) * 1000):06d}", underlying="SPY")


def test_managed_strategy_books_survive_state_and_restore_exactly():
    s = strategies.create("iron_condor", strategy_id="ic")
    legs = (Leg(_option("560", "P"), Side.SELL), Leg(_option("540", "P"), Side.BUY))
    s.trades["ic-00007"] = OpenTrade(tag="ic-00007", legs=legs, quantity=2, expiry=date(2026, 4, 17), entry_net=-1.25,
                                     max_profit=1.25, max_loss=math.inf, opened_at=NOW, entry_regime="low_vol",
                                     state="open", filled=2, info={"width": 20.0, "iv_rank": math.nan},
                                     close_attempt=1, close_not_before=NOW)
    s.trades["ic-00008"] = OpenTrade(tag="ic-00008", legs=legs, quantity=1, expiry=date(2026, 4, 17))  # opening
    s.trades["ic-00006"] = OpenTrade(tag="ic-00006", legs=legs, quantity=1, expiry=date(2026, 4, 17), state="closed")
    s._seq, s.entry_attempt = 8, 2
    stored = json.loads(json.dumps(s.state()))  # what the host writes and reads back

    again = strategies.create("iron_condor", strategy_id="ic")
    again.restore(stored)
    assert set(again.trades) == {"ic-00007", "ic-00008"}  # a closed trade is not carried over
    t = again.trades["ic-00007"]
    assert (t.legs, t.quantity, t.expiry, t.entry_net, t.max_profit, t.opened_at, t.entry_regime, t.state,
            t.filled, t.close_attempt, t.close_not_before) == (legs, 2, date(2026, 4, 17), -1.25, 1.25, NOW,
                                                               "low_vol", "open", 2, 1, NOW)
    assert t.max_loss == math.inf and math.isnan(t.info["iv_rank"]) and t.info["width"] == 20.0
    opening = again.trades["ic-00008"]
    assert opening.state == "opening" and math.isnan(opening.entry_net) and math.isnan(opening.max_loss)
    assert again.new_tag() == "ic-00009" and again.entry_attempt == 2  # no tag is ever reused


def test_plain_strategy_state_is_empty_and_restore_accepts_it():
    class Plain(strategies.Strategy):
        name = "plain"

    p = Plain()
    assert p.state() == {}
    p.restore({})


async def test_settlement_fills_go_to_the_strategy_holding_the_contract_with_the_delivered_shares(tmp_path):
    from engine.core import Engine
    from tests.strategies.test_host import condor, config, filled_trade, until

    async with Engine(config(tmp_path, [condor()])) as engine:
        trade = await until(lambda: filled_trade(engine, "ic"), "the condor's entry to fill")
        host = engine.strategies
        short_put = trade.legs[0].instrument
        hs = host.hosted["ic"]
        before = len(hs.fills)
        stranger = _option("100", "P")  # held by no strategy: not theirs to book
        host._on_settled(PositionsSettled(fills=(
            Fill(fill_id="S1", order_id="", instrument=short_put, quantity=1, price=Decimal(0), ts=NOW,
                 kind="assignment"),
            Fill(fill_id="S2", order_id="", instrument=Equity("SPY"), quantity=100, price=short_put.strike, ts=NOW,
                 kind="assignment"),
            Fill(fill_id="S3", order_id="", instrument=stranger, quantity=1, price=Decimal(0), ts=NOW,
                 kind="expiration"))))
        assert [f.fill_id for f in hs.fills[before:]] == ["S1", "S2"]
        record = hs.ledger.trades[trade.tag]
        assert short_put.key not in record.holdings and record.holdings["SPY"] == 100
        assert record.exit_reason == "assignment"
        stored = engine.store.query("SELECT fill_id FROM strategy_fills WHERE strategy_id='ic' AND order_id=''")
        assert sorted(r["fill_id"] for r in stored) == ["S1", "S2"]


@pytest.mark.parametrize("value", [0, -5])
def test_budget_limits_must_be_positive(value):
    with pytest.raises(ValueError, match="greater than"):
        StrategyEntry(name="iron_condor", budget={"max_loss_per_day": value})
