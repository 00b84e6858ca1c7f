"""Live/backtest parity for gamma_scalping: options and share hedges through paper mode and the backtester.

The same quotes, the same strategy, the same orders — option entries and exits and every share hedge in between,
with the same fills and the same end cash (docs/architecture.md §4, one kernel). The harness is the one of
``test_parity.py`` (bus → StrategyRunner → OMS → RiskEngine → PaperBroker on a manual clock, the order-rate
bucket on the engine clock: gamma scalping sends several hedges a day).
"""

from __future__ import annotations

import asyncio

from engine.backtest.runner import Backtest
from engine.backtest.signals import compute_signals
from tests.backtest.test_parity import _fill_key, _intent_key, _paper_mode

#: the 80-session fixture has ~50 sessions after the 30-session vol forecast: buy on any edge, hedge a 5-share band
GAMMA = {"min_edge": -0.02, "hedge.shares": 5, "rules.dte_exit": 7}


async def test_gamma_scalping_sends_the_same_options_and_hedges_live_and_in_the_backtest(sim_history, sim_config,
                                                                                       tmp_path):
    config = sim_config.model_copy(update={"strategy": "gamma_scalping", "params": GAMMA,
                                           "liquidate_assignments": False})
    signals = compute_signals(sim_history, lookback=config.iv_lookback, min_history=config.iv_min_history)
    bt = Backtest(config, sim_history, signals=signals)
    result = await asyncio.to_thread(bt.run)
    assert result.status == "completed", result.error
    bt_intents = [i for i in bt.intents if i.strategy_id == bt.strategy.strategy_id]
    share = [i for i in bt_intents if i.legs[0].instrument.asset_class.value != "option"]
    assert any(i.tag.endswith(":open") for i in bt_intents) and share, "the fixture must buy options and hedge"

    live_intents, live_orders, exchange = await _paper_mode(config, sim_history, signals, tmp_path)

    assert [_intent_key(i) for i in live_intents] == [_intent_key(i) for i in bt_intents]
    bt_orders = [o for o in result.orders if o["tag"].startswith(bt.strategy.strategy_id)]
    assert [(o.tag, o.status.value, str(o.avg_fill_price or "")) for o in live_orders] == \
        [(o["tag"], o["status"], o["avg_fill_price"]) for o in bt_orders]
    assert [_fill_key(f) for f in exchange.fill_log] == [_fill_key(f) for f in bt.exchange.exchange.fill_log]
    assert float(exchange.cash) == float(result.cash[-1])
