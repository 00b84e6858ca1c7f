import asyncio
import os
import subprocess
import sys

import pytest

from engine.brokers.circuit_breaker import CircuitBreakerStateChanged
from engine.bus import Bus
from engine.bus.events import KillSwitchTripped, TradingStateChanged
from engine.risk.config import RiskConfig
from engine.risk.kill_switch import KV_STATE, KillSwitch, read_status, trip_in_store
from engine.risk.state import TradingState
from engine.store import Store


async def wait_for(pred, timeout=3.0):
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        if loop.time() > end:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


@pytest.fixture
def store(tmp_path):
    s = Store.open(tmp_path / "db.sqlite")
    yield s
    s.close()


def collect(bus, etype):
    seen = []
    bus.subscribe(etype, seen.append)
    return seen


async def test_trip_when_called_then_halted_persisted_cancels_and_audited(store):
    bus = Bus()
    cancelled = []

    async def cancel_all(reason):
        cancelled.append(reason)
        return 7

    ks = KillSwitch(store, bus)
    ks.bind(cancel_all)
    trips = collect(bus, KillSwitchTripped)
    n = await ks.trip("fat finger", by="alice")
    assert n == 7 and cancelled == ["kill switch: fat finger"]
    assert trips[0].cancelled_orders == 7 and trips[0].by == "alice"
    assert read_status(store).state is TradingState.HALTED
    assert store.audit.list("trading_state:HALTED")[0]["actor"] == "alice"


async def test_trip_when_engine_restarts_then_still_halted_and_reset_needs_confirmation(tmp_path):
    path = tmp_path / "db.sqlite"
    s1 = Store.open(path)
    await KillSwitch(s1, Bus()).trip("test")
    s1.close()
    s2 = Store.open(path)
    ks = KillSwitch(s2, Bus())
    assert ks.state is TradingState.HALTED and ks.status.reason == "test"
    with pytest.raises(ValueError, match="confirmed"):
        await ks.reset(by="bob")
    assert ks.state is TradingState.HALTED
    await ks.reset(by="bob", confirmed=True)
    assert read_status(s2).state is TradingState.ACTIVE
    s2.close()


async def test_unreadable_state_record_when_loaded_then_halted_not_active(store):
    store.kv.set(KV_STATE, {"state": "BOGUS"})
    assert read_status(store).state is TradingState.HALTED


async def test_breaker_open_when_short_then_reducing_and_when_long_then_halted(store):
    bus = Bus()
    ks = KillSwitch(store, bus, RiskConfig(breaker_open_halt_s=0.05))
    ks.watch()
    states = collect(bus, TradingStateChanged)
    bus.publish(CircuitBreakerStateChanged(breaker="broker:tt", state="open", previous="closed", reason="timeouts"))
    assert ks.state is TradingState.REDUCING
    bus.publish(CircuitBreakerStateChanged(breaker="broker:tt", state="closed", previous="half_open"))
    assert ks.state is TradingState.ACTIVE
    bus.publish(CircuitBreakerStateChanged(breaker="broker:tt", state="open", previous="closed", reason="down"))
    await wait_for(lambda: ks.state is TradingState.HALTED)
    assert "open for more than" in ks.status.reason
    assert [s.state for s in states] == ["REDUCING", "ACTIVE", "REDUCING", "HALTED"]
    await ks.stop()


async def test_daily_loss_when_account_update_breaches_then_trips(store):
    from decimal import Decimal

    from engine.bus.events import AccountUpdated
    from engine.model import AccountSnapshot
    from engine.risk.engine import RiskEngine

    bus = Bus()
    risk = RiskEngine(now=bus.clock.now)
    ks = KillSwitch(store, bus)
    ks.watch(risk)
    bus.publish(AccountUpdated(account=AccountSnapshot("A", Decimal(100_000), Decimal(100_000), Decimal(100_000),
                                                       day_pnl=Decimal(-4_000))))
    assert ks.state is TradingState.ACTIVE
    bus.publish(AccountUpdated(account=AccountSnapshot("A", Decimal(95_000), Decimal(95_000), Decimal(95_000),
                                                       day_pnl=Decimal(-5_000))))
    assert ks.state is TradingState.HALTED and "daily loss" in ks.status.reason
    await asyncio.sleep(0)
    # reset while still beyond the limit: no immediate re-trip (the user must be able to close positions) ...
    await ks.reset(by="alice", confirmed=True)
    loss = AccountSnapshot("A", Decimal(94_000), Decimal(94_000), Decimal(94_000), day_pnl=Decimal(-6_000))
    bus.publish(AccountUpdated(account=loss))
    assert ks.state is TradingState.ACTIVE
    # ... until the breach has cleared once; a new breach trips again
    bus.publish(AccountUpdated(account=AccountSnapshot("A", Decimal(99_000), Decimal(99_000), Decimal(99_000),
                                                       day_pnl=Decimal(-1_000))))
    bus.publish(AccountUpdated(account=loss))
    assert ks.state is TradingState.HALTED
    await asyncio.sleep(0)


async def test_cli_kill_when_engine_running_then_engine_cancels_within_one_second(store, tmp_path):
    bus = Bus()
    cancelled = asyncio.Event()

    async def cancel_all(reason):
        cancelled.set()
        return 3

    ks = KillSwitch(store, bus, RiskConfig(kill_switch_poll_s=0.2))
    ks.bind(cancel_all)
    await ks.start()
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import sys; from engine.risk.cli import register; import argparse;"
        "p = argparse.ArgumentParser(); s = p.add_subparsers(); register(s);"
        "a = p.parse_args(sys.argv[1:]); sys.exit(a.func(a))",
        "kill", "--db", str(store.path), "--reason", "from terminal", env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    t0 = asyncio.get_running_loop().time()
    await asyncio.wait_for(cancelled.wait(), 1.5)
    assert asyncio.get_running_loop().time() - t0 < 1.0
    assert ks.state is TradingState.HALTED and ks.status.by == "cli"
    await ks.stop()


async def test_trip_in_store_when_engine_not_running_then_next_start_is_halted(store):
    trip_in_store(store, "overnight", by="cli")
    bus = Bus()
    done = asyncio.Event()

    async def cancel_all(reason):
        done.set()
        return 0

    ks = KillSwitch(store, bus)
    ks.bind(cancel_all)
    assert ks.state is TradingState.HALTED
    await ks.start()  # a persisted HALTED sweeps working orders at start
    await asyncio.wait_for(done.wait(), 1.0)
    await ks.stop()
