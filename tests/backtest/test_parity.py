"""Live/backtest parity: the same strategy driven by the same quotes through paper mode (bus → StrategyRunner →
OMS → RiskEngine → PaperBroker) and through the backtester sends the same orders, gets the same denials (with the
same reasons) and the same fills — one kernel (docs/architecture.md §4)."""

from __future__ import annotations

import numpy as np
import pytest

from engine.backtest.execution import risk_config
from engine.backtest.runner import Backtest
from engine.backtest.signals import compute_signals
from engine.brokers.paper import PaperBroker
from engine.brokers.paper_config import PaperConfig, SlippageConfig
from engine.bus import Bus
from engine.bus.events import ChainUpdated, ClockTicked
from engine.clock import ManualClock
from engine.oms.manager import OrderManager
from engine.oms.router import ModeRouter
from engine.risk.engine import RiskEngine
from engine.risk.market_view import MarketView
from engine.risk.state import PortfolioState
from engine.store import Store
from engine.strategies import create
from engine.strategies.base import market_date
from engine.strategies.live import LiveContext, StrategyRunner, sizing_from_profile


def _intent_key(i):
    return (i.tag, tuple((leg.side.value, leg.ratio, leg.symbol) for leg in i.legs), i.quantity, i.order_type.value,
            i.limit_price, i.tif.value)


async def _paper_mode(config, history, signals, tmp_path):
    """Replay the history day by day through the live components (real bus, store, OMS, paper broker)."""
    store = Store.open(tmp_path / "paper.sqlite")
    bus = Bus()
    clock = ManualClock(history.timestamp(0))
    paper = PaperBroker(bus, store, PaperConfig(starting_cash=config.initial_cash, fees=config.fee_preset,
                                                slippage=SlippageConfig(model=config.slippage_model,
                                                                        value=config.slippage)), clock=clock,
                         # an account update at every day's quotes, as the backtest's steps give: the broker's
                         # one-per-wall-second throttle would leave the risk engine yesterday's account in a replay
                         account_update_interval_s=0.0)
    market = MarketView(bus, rate=config.rate)
    portfolio = PortfolioState(bus)
    # a replay compresses days into milliseconds: the wall-clock duplicate-order window would see
    # yesterday's order as a duplicate, so it is off here (the backtester runs on simulated time)
    strategy = create(config.strategy, {"underlying": history.underlying, **config.params})
    # the limits the backtest runs this strategy with (the put-write benchmark declares its own), live too
    limits = risk_config(config, history.underlying, {**getattr(strategy, "risk_limits", {}), **config.risk_limits})
    risk = RiskEngine(limits.model_copy(update={"duplicate_window_s": 0.0}),
                      market=market, portfolio=portfolio, now=clock.now,
                      # the order-rate bucket runs on the engine clock, as the backtest kernel's does: a replay sends
                      # a day's orders (a gamma scalper's hedges) milliseconds apart in wall time, not a burst
                      monotonic=lambda: clock.now().timestamp())
    oms = OrderManager(bus, store, ModeRouter({"paper": paper}), risk, None, now=clock.now)
    oms.register()
    await paper.connect()
    await oms.start()
    dates = history.dates

    def day_index() -> int:
        return int(np.searchsorted(dates, np.datetime64(market_date(clock.now()), "D")))

    ctx = LiveContext(clock, net_liquidation=lambda: float(paper.exchange.net_liquidation()),
                      iv_rank=lambda u: float(signals.iv_rank[day_index()]),
                      regime=lambda u: str(signals.regime[day_index()]),
                      sizing=lambda: sizing_from_profile(risk.profile))
    runner = StrategyRunner(bus, strategy, ctx)
    runner.start()
    try:
        for i in range(history.n_days):
            chain = history.chain(i)
            clock.set(chain.ts)
            bus.publish(ChainUpdated(chain=chain))
            await runner.drain()
            bus.publish(ClockTicked(now=chain.ts))  # the close: DAY orders expire, expiring options settle
            await runner.drain()
        orders = {o.order_id: o for o in oms.recent_orders(10_000)}
        return runner.sent, [orders[oid] for oid in runner.orders if oid in orders], paper.exchange
    finally:
        await runner.stop()
        await oms.stop()
        await paper.disconnect()
        await bus.close()
        store.close()


def _fill_key(f):
    return (f.ts, f.instrument.key, f.quantity, str(f.price), str(f.fee), f.kind)


@pytest.mark.parametrize(("strategy", "params", "expect", "update"), [
    ("iv_rank_put_spread", None, {"filled", "expired"}, {}),
    # four legs walking from mid: unfilled attempts expire, the walk reaches a fill
    ("iron_condor", {"iv_rank_entry": 0.3, "dte_min": 20, "dte_max": 50, "rules.dte_exit": 7,
                     "regimes": ["low_vol", "normal", "high_vol", "iv_contraction", "iv_expansion"]},
     {"filled", "expired"}, {}),
    # the cash-secured benchmark, at the limits it declares: sold at market, held to expiry, in both
    ("put_write", {"monthly_only": False}, {"filled"}, {}),
    # ... and held to the Moderate profile's 2 % max loss per trade: every entry denied, for the same reason
    ("put_write", {"monthly_only": False}, {"denied"}, {"risk_limits": {"risk_per_trade_pct": 0.02}}),
])
async def test_same_strategy_same_quotes_then_paper_mode_and_backtest_send_the_same_orders(
        sim_history, sim_config, tmp_path, strategy, params, expect, update):
    if params is not None:
        sim_config = sim_config.model_copy(update={"strategy": strategy, "params": params, **update})
    signals = compute_signals(sim_history, lookback=sim_config.iv_lookback, min_history=sim_config.iv_min_history)
    bt = Backtest(sim_config.model_copy(update={"liquidate_assignments": False}), sim_history, signals=signals)
    result = await _to_thread(bt.run)
    assert result.status == "completed", result.error
    bt_intents = [i for i in bt.intents if i.strategy_id == bt.strategy.strategy_id]
    assert len(bt_intents) >= 2, "the fixture must trade for parity to mean anything"

    live_intents, live_orders, exchange = await _paper_mode(sim_config, sim_history, signals, tmp_path)

    assert [_intent_key(i) for i in live_intents] == [_intent_key(i) for i in bt_intents]
    bt_orders = [o for o in result.orders if o["tag"].startswith(bt.strategy.strategy_id)]
    assert [(o.tag, o.status.value, str(o.avg_fill_price or "")) for o in live_orders] == \
        [(o["tag"], o["status"], o["avg_fill_price"]) for o in bt_orders]
    # the same denials, for the same reasons (the same risk engine at the same level)
    assert [o.reason for o in live_orders if o.status.value == "denied"] == \
        [o["reason"] for o in bt_orders if o["status"] == "denied"]
    # the same fills, leg by leg: instant, contract, quantity, price, fee and kind (trade, assignment, ...)
    assert [_fill_key(f) for f in exchange.fill_log] == [_fill_key(f) for f in bt.exchange.exchange.fill_log]
    assert expect <= {o["status"] for o in bt_orders}
    # the same exchange arithmetic: the two accounts end with the same cash
    assert float(exchange.cash) == float(result.cash[-1])


async def _to_thread(fn):
    import asyncio

    return await asyncio.to_thread(fn)
