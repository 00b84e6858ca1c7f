"""dispersion: short index vol (an iron butterfly) against vega-weighted long member straddles when implied
correlation is above the realized correlation expected."""

from __future__ import annotations

import math
from decimal import Decimal

import numpy as np
import pytest

from engine import strategies
from engine.model import OrderStatus
from engine.strategies.dispersion import implied_correlation
from engine.strategies.structures import combo_greeks
from tests.strategies.option_chains import Ctx, bsm_chain, close_of, fills_of, order_of

NOW = close_of("2024-03-01")
MEMBERS = {"AAA": 1.0, "BBB": 1.0, "CCC": 1.0}
PARAMS = {"underlying": "IDX", "components": MEMBERS}


class VolCtx(Ctx):
    """A context that knows realized vols (the history service's, live). A $1,000,000 account: the index fly's
    vega is small beside a member straddle's, so vega-weighting in whole contracts needs several index flies."""

    def __init__(self, now, rv: dict[str, float], **kw) -> None:
        super().__init__(now, **{"nl": 1_000_000.0, **kw})
        self.rv = rv

    def realized_vol(self, underlying, window=20):
        return self.rv.get(underlying, math.nan)


def chains(index_iv: float = 0.25, member_iv: float = 0.30, day: str = "2024-03-01", dte: int = 30) -> dict:
    """The index (300, strikes every 5) and three members (100, strikes every 1), one expiry ``dte`` days out."""
    out = {"IDX": bsm_chain(day=day, spot=300.0, expiries={dte: index_iv}, strikes=np.arange(240.0, 361.0, 5.0),
                            underlying="IDX")}
    for sym in MEMBERS:
        out[sym] = bsm_chain(day=day, spot=100.0, expiries={dte: member_iv}, strikes=np.arange(80.0, 121.0, 1.0),
                             underlying=sym)
    return out


def feed(strategy, ctx, snaps: dict) -> list:
    """Members first, the index last (decisions are made on the index's snapshot)."""
    out = []
    for sym in [*MEMBERS, "IDX"]:
        out += list(strategy.on_chain(ctx, snaps[sym]))
    return out


RICH = {"IDX": 0.15, "AAA": 0.30, "BBB": 0.30, "CCC": 0.30}  # members realize 30 %, the index only 15 %


def test_implied_correlation_backs_the_correlation_out_of_the_vols():
    w = np.full(3, 1 / 3)
    assert implied_correlation(0.25, np.full(3, 0.30), w) == pytest.approx((0.0625 - 0.03) / 0.06)
    assert implied_correlation(0.30, np.full(3, 0.30), w) == pytest.approx(1.0)  # no diversification at all
    assert implied_correlation(0.30 / math.sqrt(3), np.full(3, 0.30), w) == pytest.approx(0.0)


def test_rich_index_vol_sells_the_index_fly_and_buys_vega_weighted_member_straddles():
    s = strategies.create("dispersion", PARAMS)
    snaps = chains()
    intents = feed(s, VolCtx(NOW, RICH), snaps)
    assert s.last_signal["implied"] == pytest.approx((0.0625 - 0.03) / 0.06, abs=0.01)
    assert s.last_signal["realized"] == pytest.approx((0.0225 - 0.03) / 0.06, abs=1e-9)
    by_sym = {i.tag.split(":")[0].rsplit(".", 1)[1]: i for i in intents}
    assert set(by_sym) == {"IDX", *MEMBERS} and all(i.tag.endswith(":open") for i in intents)
    fly = by_sym["IDX"]
    assert [(leg.side.value, float(leg.instrument.strike), leg.instrument.is_call) for leg in fly.legs] == \
        [("sell", 300.0, False), ("buy", 285.0, False), ("sell", 300.0, True), ("buy", 315.0, True)]
    index_vega = abs(combo_greeks(snaps["IDX"], fly.legs)["vega"]) * fly.quantity
    member_vega = 0.0
    for sym in MEMBERS:
        straddle = by_sym[sym]
        assert [(leg.side.value, float(leg.instrument.strike)) for leg in straddle.legs] == [("buy", 100.0)] * 2
        per = combo_greeks(snaps[sym], straddle.legs)["vega"]
        assert straddle.quantity == round(index_vega / 3 / per)  # equal weights and vols: a third each
        member_vega += per * straddle.quantity
    assert member_vega == pytest.approx(index_vega, rel=0.25)  # vega-neutral up to whole contracts


@pytest.mark.parametrize("case", ["low_spread", "missing_member", "stale_member"])
def test_no_trade_without_a_spread_or_without_every_members_chain_of_the_day(case):
    s = strategies.create("dispersion", PARAMS)
    snaps = chains()
    rv = dict(RICH)
    if case == "low_spread":
        rv["IDX"] = 0.24  # realized correlation near the implied one
    elif case == "missing_member":
        snaps = {k: v for k, v in snaps.items() if k != "BBB"}
        assert [i for sym in [*snaps] for i in s.on_chain(VolCtx(NOW, rv), snaps[sym])] == []
        return
    else:
        snaps["BBB"] = chains(day="2024-02-29")["BBB"]
    assert feed(s, VolCtx(NOW, rv), snaps) == []


def test_a_member_entry_that_fails_unwinds_the_filled_legs_and_the_spread_closing_exits_everything():
    s = strategies.create("dispersion", PARAMS)
    ctx = VolCtx(NOW, RICH)
    snaps = chains()
    intents = feed(s, ctx, snaps)
    for intent in intents[:-1]:
        order = order_of(intent, now=NOW)
        s.on_order(ctx, order, fills_of(order, ["1.00"] * len(intent.legs), NOW))
    failed = order_of(intents[-1], OrderStatus.EXPIRED, filled=False, now=NOW)
    unwind = s.on_order(ctx, failed)
    assert sorted(i.tag for i in unwind) == sorted(f"{i.tag.split(':')[0]}:close:unwind" for i in intents[:-1])
    # a clean trade: everything fills, then the spread closes
    s = strategies.create("dispersion", PARAMS)
    intents = feed(s, ctx, snaps)
    for intent in intents:
        order = order_of(intent, now=NOW)
        s.on_order(ctx, order, fills_of(order, ["1.00"] * len(intent.legs), NOW))
    assert feed(s, VolCtx(close_of("2024-03-04"), RICH), chains(day="2024-03-04", dte=27)) == []  # still rich: hold
    calm = {**RICH, "IDX": 0.26}
    exits = feed(s, VolCtx(close_of("2024-03-05"), calm), chains(day="2024-03-05", dte=26))
    assert len(exits) == 4 and all(i.tag.endswith(":close:spread_closed") for i in exits)
    again = strategies.create("dispersion", PARAMS)
    again.restore(s.state())
    assert sorted(again.groups) == sorted(s.groups) and again.trade_tag == s.trade_tag


def test_an_account_too_small_to_vega_weight_in_whole_contracts_does_not_trade():
    # $100,000: two index flies (their max loss against half the 2 % budget) carry less vega than one straddle
    # per member needs, and a dispersion trade with its members rounded away is not one
    assert feed(strategies.create("dispersion", PARAMS), VolCtx(NOW, RICH, nl=100_000.0), chains()) == []


def test_bad_parameters_are_errors_that_name_them():
    with pytest.raises(ValueError, match="components"):
        strategies.create("dispersion", {"components": {"AAA": 1.0}})
    with pytest.raises(ValueError, match="exit_spread"):
        strategies.create("dispersion", {"min_spread": 0.05, "exit_spread": 0.1})
    with pytest.raises(ValueError, match="own member"):
        strategies.create("dispersion", {"underlying": "AAA", "components": MEMBERS})


async def test_the_live_runner_hands_it_the_members_chains_too():
    from engine.bus import Bus
    from engine.bus.events import ChainUpdated
    from engine.clock import ManualClock
    from engine.strategies.base import SizingLimits
    from engine.strategies.live import LiveContext, StrategyRunner

    bus = Bus()
    s = strategies.create("dispersion", PARAMS)
    ctx = LiveContext(ManualClock(NOW), net_liquidation=lambda: 100_000.0, iv_rank=lambda u: 0.5,
                      regime=lambda u: "normal", sizing=SizingLimits)
    runner = StrategyRunner(bus, s, ctx, use_timer=False)
    runner.start()
    try:
        snaps = chains()
        for sym in ("AAA", "IDX"):
            bus.publish(ChainUpdated(chain=snaps[sym]))
        bus.publish(ChainUpdated(chain=bsm_chain(underlying="SPY")))
        await runner.drain()
        assert set(s.chains) == {"AAA", "IDX"}
    finally:
        await runner.stop()
        await bus.close()
    assert Decimal  # prices are Decimal at the order boundary (intent limits)
