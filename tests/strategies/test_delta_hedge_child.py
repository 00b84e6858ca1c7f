"""delta_hedge with a child: the overlay runs a strategy itself and hedges what that strategy holds with shares."""

from __future__ import annotations

import pytest

from engine import strategies
from engine.model import Equity
from tests.strategies.option_chains import Ctx, bsm_chain, close_of, fill, order_of, run_backtest, sim_year

NOW = close_of("2024-03-01")


class DeltaCtx(Ctx):
    """A context whose portfolio delta is set by the test, recording whose delta was asked for."""

    def __init__(self, now, delta: float = 0.0, **kw) -> None:
        super().__init__(now, **kw)
        self.delta = delta
        self.asked: list[tuple[str, str | None]] = []

    def portfolio_delta(self, underlying, strategy_id=None):
        self.asked.append((underlying, strategy_id))
        return self.delta


def test_the_child_trades_under_the_overlays_id_and_its_delta_is_hedged_with_shares():
    overlay = strategies.create("delta_hedge", {"child": "put_write", "band_shares": 20})
    chain = bsm_chain(expiries={14: 0.20})  # the March monthly: put_write sells monthlies 14-45 days out
    alone = strategies.create("put_write", {"underlying": "SPY"}).on_chain(Ctx(NOW), chain)
    ctx = DeltaCtx(NOW)
    [opening] = overlay.on_chain(ctx, chain)
    # the same order the child would send alone, but under the overlay's id (its updates come back here)
    assert [leg.symbol for leg in opening.legs] == [leg.symbol for leg in alone[0].legs]
    assert (opening.strategy_id, opening.source) == ("delta_hedge", "strategy:delta_hedge")
    assert opening.tag == "delta_hedge.put_write-00001:open"
    fill(overlay, ctx, opening, ["5.00"])
    assert [t.state for t in overlay.child.active_trades()] == ["open"]  # the update reached the child
    # say the short put's delta is +45 shares: outside the 20-share band: sell 45 shares back to flat
    ctx.delta = 45.0
    [hedge] = overlay.on_chain(ctx, chain)
    assert ctx.asked[-1] == ("SPY", "delta_hedge")  # the overlay's own positions: child options + hedge shares
    assert isinstance(hedge.legs[0].instrument, Equity) and hedge.legs[0].side.value == "sell"
    assert hedge.quantity == 45 and hedge.tag.startswith("delta_hedge-")
    order = order_of(hedge, now=ctx.now())
    from tests.strategies.option_chains import fills_of

    overlay.on_order(ctx, order, [f for f in fills_of(order, ["500"], ctx.now())])
    assert overlay.held == -45
    # the books of both survive a restart
    again = strategies.create("delta_hedge", {"child": "put_write", "band_shares": 20})
    again.restore(overlay.state())
    assert again.held == -45 and [t.tag for t in again.child.active_trades()] == ["delta_hedge.put_write-00001"]


def test_the_child_risk_limits_are_the_overlays():
    assert strategies.create("delta_hedge", {"child": "put_write"}).risk_limits == \
        strategies.registry()["put_write"].risk_limits
    assert strategies.create("delta_hedge").risk_limits == {}


@pytest.mark.parametrize(("params", "message"), [
    ({"child": "no_such"}, "unknown child strategy"),
    ({"child": "delta_hedge"}, "unknown child strategy"),
    ({"child": "put_write", "strategy": "other"}, "not both"),
    ({"child_params": {"short_delta": 0.3}}, "without a child"),
    ({"child": "put_write", "child_params": {"no_such_param": 1}}, "no_such_param"),
])
def test_bad_child_settings_are_errors_that_say_why(params, message):
    with pytest.raises(ValueError, match=message):
        strategies.create("delta_hedge", params)


def test_one_year_backtest_with_a_put_write_child_trades_hedges_and_reconciles():
    result = run_backtest("delta_hedge", sim_year(), {"child": "put_write"})
    assert result.status == "completed" and len(result.trades) >= 1
    opens = [o for o in result.orders if o["tag"].endswith(":open")]
    hedges = [o for o in result.orders if o["tag"].startswith("delta_hedge-") and o["status"] == "filled"]
    assert opens and hedges
    assert sum(o["status"] == "denied" for o in opens) == 0
    assert result.reconciliation()["difference"] == 0
