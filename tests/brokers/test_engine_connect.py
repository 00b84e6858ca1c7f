"""The engine connects a broker, trades paper on its live data, goes live only when confirmed, and
falls back to the simulated market on disconnect — all against loopback servers."""

from __future__ import annotations

import asyncio

import pytest

from engine.brokers.config import BrokersConfig, IbkrConfig, TastytradeConfig
from engine.bus import Event, FeedChanged, ModeChanged, SwitchMode
from engine.core import Engine, EngineConfig
from engine.credentials import CredentialStore
from engine.oms.router import ModeSwitchError
from engine.settings import Settings
from tests.brokers.conftest import wait_until
from tests.brokers.fakes.tastytrade_server import ACCOUNT, PROVIDER_SECRET, REFRESH_TOKEN, FakeTastytrade
from tests.brokers.fakes.tws_server import FakeTws
from tests.sim_start import pinned_settings


def _settings(brokers: BrokersConfig) -> Settings:
    return pinned_settings(Settings(brokers=brokers))


def _credentials() -> CredentialStore:
    return CredentialStore(backend=None, env={"OPTIONDESK_TT_PROVIDER_SECRET": PROVIDER_SECRET,
                                              "OPTIONDESK_TT_REFRESH_TOKEN": REFRESH_TOKEN})


async def test_connect_tastytrade_when_paper_then_live_data_drives_paper_and_live_needs_confirmation(tmp_path):
    async with FakeTastytrade() as fake:
        brokers = BrokersConfig(tastytrade=TastytradeConfig(api_url=fake.api_url, streamer_url=fake.streamer_url,
                                                            call_timeout_s=3))
        cfg = EngineConfig.for_directory(tmp_path, settings=_settings(brokers))
        async with Engine(cfg) as engine:
            events: list[Event] = []
            engine.bus.subscribe(Event, events.append)
            broker = await engine.connect_broker("tastytrade", credentials=_credentials())
            assert engine.feed.name == "tastytrade" and engine.feed is not engine.simulated_feed
            assert not engine.simulated_feed.connected
            assert [e.feed for e in events if isinstance(e, FeedChanged)] == ["tastytrade"]
            assert engine.router.mode == "paper" and engine.router.active_name == "paper"
            assert not broker.armed  # connected is not live
            with pytest.raises(ModeSwitchError):
                await engine.bus.send(SwitchMode(mode="live", broker="tastytrade", confirmed_account_id="WRONG"))
            await engine.bus.send(SwitchMode(mode="live", broker="tastytrade", confirmed_account_id=ACCOUNT))
            assert broker.armed and engine.router.is_live
            assert any(isinstance(e, ModeChanged) and e.mode == "live" for e in events)
            with pytest.raises(ModeSwitchError, match="switch to paper"):
                await engine.disconnect_broker("tastytrade")
            await engine.bus.send(SwitchMode(mode="paper"))
            assert not broker.armed
            await engine.disconnect_broker("tastytrade")
            assert engine.feed is engine.simulated_feed and engine.simulated_feed.connected
            assert "tastytrade" not in engine.router.brokers
        # nothing was ever sent to the broker's order endpoints
        assert not [r for r in fake.requests if r[0] in ("POST", "PUT", "DELETE") and "/orders" in r[1]
                    and "dry-run" not in r[1]]


async def test_connect_ibkr_then_chain_streams_from_tws_into_the_engine(tmp_path):
    async with FakeTws() as tws:
        brokers = BrokersConfig(ibkr=IbkrConfig(host="127.0.0.1", port=tws.port, client_id=5, call_timeout_s=3,
                                                connect_timeout_s=5))
        async with Engine(EngineConfig.for_directory(tmp_path, settings=_settings(brokers))) as engine:
            await engine.connect_broker("ibkr")
            assert engine.feed.name == "ibkr"
            expiries = await engine.feed.expirations("SPY")
            await engine.feed.subscribe("SPY", expiries[:1], (590.0, 610.0))
            await wait_until(lambda: engine.feed.last_chain("SPY") is not None
                             and (engine.feed.last_chain("SPY").valid_mask()).any(), what="IBKR quotes")
            assert engine.market.feed is engine.feed  # the risk engine marks on broker data too
            await asyncio.wait_for(engine.disconnect_broker("ibkr"), 15)
            assert engine.feed is engine.simulated_feed
