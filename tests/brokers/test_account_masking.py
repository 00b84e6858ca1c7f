"""Account numbers are masked everywhere but the broker call itself (issue 14, finding 14): after a refused
and a successful switch to live on the loopback tastytrade server, neither the database nor an alert or
mode change published on the bus holds the raw number."""

from __future__ import annotations

import dataclasses
import sqlite3

import pytest

from engine.brokers.config import BrokersConfig, TastytradeConfig
from engine.bus import Alert, Event, ModeChanged, SwitchMode
from engine.core import Engine, EngineConfig
from engine.credentials import CredentialStore, mask_account
from engine.oms.router import ModeSwitchError
from engine.settings import Settings
from tests.brokers.fakes.tastytrade_server import ACCOUNT, PROVIDER_SECRET, REFRESH_TOKEN, FakeTastytrade
from tests.sim_start import pinned_settings


def _database_text(path) -> str:
    """Every value of every row of every table, as text (WAL included: read through SQLite)."""
    con = sqlite3.connect(path)
    try:
        parts = []
        for (table,) in con.execute("SELECT name FROM sqlite_master WHERE type='table'"):
            for row in con.execute(f'SELECT * FROM "{table}"'):
                parts.extend(v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in row)
        return "\n".join(parts)
    finally:
        con.close()


def _event_text(e: Event) -> str:
    return repr(dataclasses.asdict(e)) if dataclasses.is_dataclass(e) else repr(e)


async def test_mode_switches_when_refused_and_accepted_then_no_raw_account_number_is_stored_or_published(tmp_path):
    events: list[Event] = []
    async with FakeTastytrade() as fake:
        brokers = BrokersConfig(tastytrade=TastytradeConfig(api_url=fake.api_url, streamer_url=fake.streamer_url,
                                                            call_timeout_s=3))
        cfg = EngineConfig.for_directory(tmp_path, settings=pinned_settings(Settings(brokers=brokers)))
        async with Engine(cfg) as engine:
            engine.bus.subscribe(Event, events.append)
            creds = CredentialStore(backend=None, env={"OPTIONDESK_TT_PROVIDER_SECRET": PROVIDER_SECRET,
                                                       "OPTIONDESK_TT_REFRESH_TOKEN": REFRESH_TOKEN})
            broker = await engine.connect_broker("tastytrade", credentials=creds)
            with pytest.raises(ModeSwitchError) as refused:
                await engine.bus.send(SwitchMode(mode="live", broker="tastytrade", confirmed_account_id="WRONG1"))
            await engine.bus.send(SwitchMode(mode="live", broker="tastytrade", confirmed_account_id=ACCOUNT))
            assert broker.armed and engine.router.is_live  # the broker itself got the real number
            await engine.bus.send(SwitchMode(mode="paper"))
            audit = engine.store.audit.list()
            db_path = engine.paths.database
        assert ACCOUNT not in _database_text(db_path)
    assert ACCOUNT not in str(refused.value)
    # what is shown and kept: alerts and mode changes (the broker's own account snapshot stays in memory)
    shown = [e for e in events if isinstance(e, (Alert, ModeChanged))]
    assert any(isinstance(e, Alert) and "refused" in e.message for e in shown)
    assert any(isinstance(e, ModeChanged) and e.mode == "live" for e in shown)
    assert ACCOUNT not in "\n".join(_event_text(e) for e in shown)
    # the masked form is still there to tell accounts apart
    masked = mask_account(ACCOUNT)
    switch = next(a for a in audit if a["action"] == "mode_switch" and a["detail"]["mode"] == "live")
    assert switch["detail"]["account_id"] == masked
    refusal = next(a for a in audit if a["action"] == "mode_switch_refused")
    assert masked in refusal["detail"]["reason"]
