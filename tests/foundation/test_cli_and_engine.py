import asyncio
import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest

from engine.bus import Alert, ClockTicked, Event
from engine.core import Engine, EngineConfig
from engine.logging_setup import RedactingFilter, redact, register_sensitive
from engine.settings import Settings
from engine.surface.config import SurfaceConfig
from tests.sim_start import pinned_settings


def _run_cli(*args, home):
    env = {**os.environ, "OPTIONDESK_HOME": str(home), "QT_QPA_PLATFORM": "offscreen"}
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True, text=True, env=env,
                          timeout=120)


def test_version_and_doctor_json_when_healthy_install_then_exit_zero_with_fields(tmp_path):
    v = _run_cli("--version", home=tmp_path)
    assert v.returncode == 0 and v.stdout.startswith("optiondesk ")
    d = _run_cli("doctor", "--json", home=tmp_path)
    assert d.returncode == 0, d.stdout + d.stderr
    report = json.loads(d.stdout)
    assert report["ok"] is True
    assert report["qt"]["pyside6"].startswith("6.") and report["qt"]["qt"]
    assert {"numpy", "pyqtgraph", "tastytrade", "ib_async"} <= set(report["packages"])
    assert "backend" in report["keyring"] and "can_store_secrets" in report["keyring"]
    assert report["paths"]["data_dir"].startswith(str(tmp_path))
    assert report["database"]["schema_version"] == report["database"]["latest"]
    assert isinstance(report["opengl"], bool)


def test_doctor_when_database_is_corrupt_then_nonzero_exit_naming_it(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "optiondesk.db").write_bytes(b"this is not a sqlite database" * 100)
    d = _run_cli("doctor", home=tmp_path)
    assert d.returncode == 1
    assert "PROBLEM: data folders or database unusable" in d.stdout


async def test_engine_when_started_and_stopped_then_ticks_and_leaves_no_tasks(tmp_path):
    events = []
    engine = Engine(EngineConfig.for_directory(tmp_path, clock_interval_s=0.01, feed="none"))
    await engine.start()
    engine.bus.subscribe(Event, events.append)
    for _ in range(200):
        if sum(isinstance(e, ClockTicked) for e in events) >= 3:
            break
        await asyncio.sleep(0.01)
    assert sum(isinstance(e, ClockTicked) for e in events) >= 3
    await engine.stop()
    mine = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert mine == []
    assert (tmp_path / "data" / "optiondesk.db").exists()


async def test_engine_when_settings_file_is_bad_then_starts_on_defaults_and_alerts(tmp_path):
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "settings.toml").write_text("[general]\ntheme = 5\n")
    alerts = []
    async with Engine(EngineConfig.for_directory(tmp_path, feed="none")) as engine:
        assert engine.settings.general.theme == "dark"
        assert engine.settings_result.errors[0].key == "general.theme"
        engine.bus.subscribe(Alert, alerts.append)
    assert engine.store is not None


def test_redaction_masks_tokens_secrets_and_registered_account_numbers(caplog):
    register_sensitive("5WT12345678")
    line = ("Authorization: Bearer abc.def.ghi refresh_token=rt_0123456789 client_secret='s3cr3t' "
            "account 5WT12345678 jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.c2lnbmF0dXJlLWhlcmU")
    out = redact(line)
    for secret in ("abc.def.ghi", "rt_0123456789", "s3cr3t", "5WT12345678", "eyJhbGciOiJIUzI1NiJ9"):
        assert secret not in out
    assert "*******5678" in out
    logger = logging.getLogger("test.redaction")
    handler = logging.Handler()
    records = []
    handler.emit = records.append
    handler.addFilter(RedactingFilter())
    logger.addHandler(handler)
    logger.warning("token=%s", "supersecretvalue")
    logger.removeHandler(handler)
    assert records[0].getMessage() == "token=***"


async def test_select_underlying_when_sent_then_the_next_tick_streams_the_whole_window(tmp_path):
    from engine.bus import QuotesUpdated, SelectUnderlying

    settings = pinned_settings(Settings(surface=SurfaceConfig(executor="thread")))
    async with Engine(EngineConfig.for_directory(tmp_path, settings=settings)) as engine:
        loop = asyncio.get_running_loop()
        got: list[tuple[QuotesUpdated, object, object]] = []  # with the chain its rows index and the market's

        def on_quotes(e: QuotesUpdated) -> None:
            if e.underlying == "SPY":
                got.append((e, engine.feed.last_chain("SPY"), engine.feed.market.chain("SPY")))

        engine.bus.subscribe(QuotesUpdated, on_quotes)
        expiry = (await engine.feed.expirations("SPY"))[0]
        spot = engine.feed.last_price("SPY")
        low, high = round(spot) - 5.0, round(spot) + 5.0
        deadline = loop.time() + 1.5
        await engine.bus.send(SelectUnderlying(symbol="SPY", expiries=(expiry,), strikes=(low, high)))
        # the next tick (10 Hz) publishes the window; at x1 its quotes may not move for seconds, so a
        # feed that only sent changed rows made a trader wait 6-7 s for a newly selected expiry
        while not got and loop.time() < deadline:
            await asyncio.sleep(0.01)
        assert got, "no quotes for the selected window within 1.5 s"
        first, chain, market = got[0]
        in_window = ((chain.strike >= low) & (chain.strike <= high)
                     & (chain.expiry.astype("datetime64[D]") == np.datetime64(expiry, "D")))
        assert in_window.sum() >= 10
        assert set(first.rows.tolist()) == set(np.nonzero(in_window)[0].tolist())  # the whole window, nothing else
        assert first.bid.tolist() == market.bid[first.rows].tolist()  # the quotes of that instant


async def test_run_cpu_when_running_then_computes_in_a_worker_and_after_stop_refuses(tmp_path):
    eng = Engine(EngineConfig.for_directory(tmp_path, feed="none"))
    await eng.start()
    try:
        assert await eng.run_cpu(os.getpid) != os.getpid()  # a separate process answered
    finally:
        await eng.stop()
    with pytest.raises(RuntimeError, match="not running"):
        await eng.run_cpu(abs, -1)
    assert eng._process_pool is None  # no pool was created behind stop()'s back
