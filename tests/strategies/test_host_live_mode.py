"""Paper first, against the loopback tastytrade server: a strategy goes live only by a confirmation naming the
connected account, and it trades only while the engine's mode matches its own — the host pauses it otherwise
and resumes it when they agree again. Nothing reaches the broker's order endpoints."""

from __future__ import annotations

import pytest

from engine.brokers.config import BrokersConfig, TastytradeConfig
from engine.bus import SetStrategyMode, StrategyStateChanged, SwitchMode
from engine.core import Engine, EngineConfig
from engine.credentials import CredentialStore
from engine.notify.config import NotifyConfig
from engine.settings import Settings
from engine.strategies.host import StrategyCommandError
from engine.surface.config import SurfaceConfig
from tests.brokers.fakes.tastytrade_server import ACCOUNT, PROVIDER_SECRET, REFRESH_TOKEN, FakeTastytrade
from tests.sim_start import pinned_settings
from tests.strategies.test_host import condor


async def test_strategy_mode_follows_its_confirmation_and_trades_only_when_the_engine_mode_agrees(tmp_path):
    # expiries 400-500 days out are never listed: these strategies hold still while the modes change
    idle = {"dte_min": 400, "dte_max": 500}
    entries = [condor("paper-one", **idle), condor("to-live", underlying="QQQ", **idle)]
    async with FakeTastytrade() as fake:
        brokers = BrokersConfig(tastytrade=TastytradeConfig(api_url=fake.api_url, streamer_url=fake.streamer_url,
                                                            call_timeout_s=3))
        settings = pinned_settings(Settings(brokers=brokers, surface=SurfaceConfig(executor="thread"),
                                            notify=NotifyConfig(enabled=False), strategies=entries))
        async with Engine(EngineConfig.for_directory(tmp_path, settings=settings)) as engine:
            creds = CredentialStore(backend=None, env={"OPTIONDESK_TT_PROVIDER_SECRET": PROVIDER_SECRET,
                                                       "OPTIONDESK_TT_REFRESH_TOKEN": REFRESH_TOKEN})
            await engine.connect_broker("tastytrade", credentials=creds, use_live_data=False)
            changes: list[StrategyStateChanged] = []
            engine.bus.subscribe(StrategyStateChanged, changes.append)
            host = engine.strategies

            with pytest.raises(StrategyCommandError, match="needs a confirmation naming the account"):
                await engine.bus.send(SetStrategyMode(strategy_id="to-live", mode="live"))
            with pytest.raises(StrategyCommandError, match="not a connected live account"):
                await engine.bus.send(SetStrategyMode(strategy_id="to-live", mode="live", confirm_account="OTHER1"))
            assert await engine.bus.send(SetStrategyMode(strategy_id="to-live", mode="live",
                                                         confirm_account=ACCOUNT)) == "live"
            st = host.status("to-live")
            assert (st.mode, st.state) == ("live", "paused") and "the engine is in paper mode" in st.reason

            await engine.bus.send(SwitchMode(mode="live", broker="tastytrade", confirmed_account_id=ACCOUNT))
            assert (host.status("to-live").state, host.status("paper-one").state) == ("running", "paused")
            assert "trades on the paper account but the engine is in live mode" in host.status("paper-one").reason

            await engine.bus.send(SwitchMode(mode="paper"))
            assert (host.status("to-live").state, host.status("paper-one").state) == ("paused", "running")
            assert [(c.strategy_id, c.previous, c.state) for c in changes] == [
                ("to-live", "running", "paused"),  # confirmed for live while the engine is on paper
                ("paper-one", "running", "paused"), ("to-live", "paused", "running"),  # engine live
                ("paper-one", "paused", "running"), ("to-live", "running", "paused")]  # engine paper again
            audit = [(a["action"], a["detail"].get("strategy_id")) for a in engine.store.audit.list()
                     if a["action"].startswith("strategy_mode")]
            assert audit.count(("strategy_mode_refused", "to-live")) == 2 and ("strategy_mode", "to-live") in audit
            assert "OTHER1" not in str(engine.store.audit.list())  # account numbers are masked in the audit
    assert not [r for r in fake.requests if r[0] in ("POST", "PUT", "DELETE") and "/orders" in r[1]
                and "dry-run" not in r[1]]
