"""gamma_scalping hosted in a real Engine on the pinned simulated market, streaming as fast as it can: the straddle
and its share hedges go down the one order path and fill on the paper account (issue 16, `optiondesk trade
--strategy gamma_scalping`).

The market runs in fixed 60-second market steps (``fast``), so what happens is a function of simulated time, not
of the machine's speed; the wait is bounded in simulated days, with a wall-clock guard only against a hang.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from engine.core import Engine, EngineConfig
from engine.model import Equity, Option
from engine.notify.config import NotifyConfig
from engine.settings import Settings
from engine.strategies.config import StrategyEntry
from engine.surface.config import SurfaceConfig
from tests.sim_start import pinned_settings

#: simulated time the strategy gets to open its straddle and hedge it (the entry walks once a session)
SIM_DAYS = 4


def fast_settings() -> Settings:
    s = pinned_settings(Settings(surface=SurfaceConfig(executor="thread"), notify=NotifyConfig(enabled=False),
                                 strategies=[StrategyEntry(name="gamma_scalping", id="gs")]))
    streaming = s.simulator.streaming.model_copy(update={"fast": True})
    return s.model_copy(update={"simulator": s.simulator.model_copy(update={"streaming": streaming})})


async def test_hosted_gamma_scalping_fills_its_straddle_and_a_share_hedge_on_the_simulated_market(tmp_path):
    async with Engine(EngineConfig.for_directory(tmp_path, settings=fast_settings())) as engine:
        hs = engine.strategies.hosted["gs"]
        start = engine.clock.now()
        loop = asyncio.get_running_loop()
        guard = loop.time() + 240  # a hang, not slowness: the test's real bound is simulated time

        def kinds() -> tuple[bool, bool]:
            return (any(isinstance(f.instrument, Option) for f in hs.fills),
                    any(isinstance(f.instrument, Equity) for f in hs.fills))

        while not all(kinds()):
            assert engine.clock.now() - start < timedelta(days=SIM_DAYS), (
                f"no option and share fills within {SIM_DAYS} simulated days: fills {kinds()}, last signal "
                f"{getattr(hs.strategy, 'last_signal', None)}, orders "
                f"{[(o.tag, o.status.value, o.reason) for o in hs.orders.values()]}")
            assert loop.time() < guard, f"the simulated market stalled at {engine.clock.now()}"
            await asyncio.sleep(0.05)

        report = engine.strategies.report("gs")
        by_tag = {o["tag"]: o for o in report["orders"]}
        opened = [o for t, o in by_tag.items() if t.endswith(":open") and o["status"] == "filled"]
        hedged = [o for t, o in by_tag.items() if ":hedge" in t and o["filled"]]
        assert opened and hedged, by_tag
        # the straddle: a call and a put bought; the hedge: shares of the underlying, through the same path
        option_fills = [f for f in hs.fills if isinstance(f.instrument, Option)]
        assert {f.instrument.is_call for f in option_fills} == {True, False} and all(f.quantity > 0 for f in option_fills)
        assert {f.instrument.symbol for f in hs.fills if isinstance(f.instrument, Equity)} == {"SPY"}
        trade = next(t for t in engine.strategies.open_trades("gs") if t.filled)
        assert trade.info["hedges"] >= 1 and trade.info["hedge_shares"] != 0
        # the strategy's own books agree with the account: the hedge shares it holds are the paper account's
        held = {p.instrument.key: p.quantity for p in engine.risk.portfolio.positions.values()}
        assert held.get("SPY") == int(trade.info["hedge_shares"])
