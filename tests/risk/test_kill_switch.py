import asyncio
import json
import os
import subprocess
import sys

import pytest

from engine.brokers.circuit_breaker import CircuitBreakerStateChanged
from engine.bus import Bus
from engine.bus.events import KillSwitchTripped, TradingStateChanged
from engine.risk.config import RiskConfig
from engine.risk.kill_switch import KV_STATE, KillSwitch, parse_record, read_status, trip_in_store
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


@pytest.mark.parametrize("state", [None, 0, ["ACTIVE"], "active"])
def test_state_record_whose_state_is_not_a_state_name_when_parsed_then_halted_and_named(state):
    rec = parse_record(json.dumps({"state": state, "seq": 1}))
    assert rec.status.state is TradingState.HALTED and not rec.readable
    assert f"unknown state {state!r}" in rec.status.reason


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


class _Account:
    """A hand-written account for the flatten follow-through: closing orders end without closing
    (rejected, e.g. a broker's 429) ``fail_first`` times, then close every position."""

    def __init__(self, positions: int, fail_first: int, rest_first: bool = False) -> None:
        self.positions = positions
        self.fail_first = fail_first
        self.rest_first = rest_first  # the first closing order rests unfilled until re-priced
        self.working = 0
        self.sends = 0
        self.cancels = 0

    async def cancel_all(self, reason: str) -> int:
        return 0

    async def flatten(self, reason: str) -> int:
        self.sends += 1
        if self.sends <= self.fail_first:
            return 1  # accepted by our path, then rejected by the broker: nothing working, positions open
        if self.rest_first and self.sends == self.fail_first + 1:
            self.working = 1
            return 1
        self.positions = 0
        return 1

    def progress(self) -> tuple[int, int]:
        return self.positions, self.working

    async def cancel_flatten(self, reason: str) -> int:
        self.cancels += 1
        self.working = 0
        return 1


async def test_flatten_when_closing_orders_are_rejected_then_sent_again_until_flat_and_intent_kept_meanwhile(store):
    bus = Bus()
    acct = _Account(positions=3, fail_first=2)
    ks = KillSwitch(store, bus)
    ks.bind(acct.cancel_all, acct.flatten, acct.progress, acct.cancel_flatten)
    await ks.trip("drill", flatten=True)
    assert ks.flatten_pending  # sent is not done: the first closing orders were rejected
    assert _stored_flatten(store)
    await wait_for(lambda: acct.positions == 0 and not ks.flatten_pending, timeout=10)
    assert acct.sends == 3
    await wait_for(lambda: not _stored_flatten(store))
    assert ks.state is TradingState.HALTED


async def test_flatten_when_a_closing_order_rests_unfilled_then_cancelled_and_sent_again(store, monkeypatch):
    from engine.risk import kill_switch as ks_module

    monkeypatch.setattr(ks_module, "FLATTEN_REPRICE_S", 0.3)
    acct = _Account(positions=1, fail_first=0, rest_first=True)
    ks = KillSwitch(store, Bus())
    ks.bind(acct.cancel_all, acct.flatten, acct.progress, acct.cancel_flatten)
    await ks.trip("drill", flatten=True)
    await wait_for(lambda: acct.positions == 0 and not ks.flatten_pending, timeout=10)
    assert acct.cancels == 1 and acct.sends == 2


async def test_flatten_when_reset_before_flat_then_follow_through_stops(store):
    acct = _Account(positions=2, fail_first=10_000)
    ks = KillSwitch(store, Bus())
    ks.bind(acct.cancel_all, acct.flatten, acct.progress, acct.cancel_flatten)
    await ks.trip("drill", flatten=True)
    await wait_for(lambda: acct.sends >= 2)
    await ks.reset(confirmed=True)
    sends = acct.sends
    await asyncio.sleep(1.0)
    assert acct.sends == sends and not ks.flatten_pending
    await ks.stop()


def _stored_flatten(store) -> bool:
    import json

    rows = store.query("SELECT value FROM kv WHERE key=?", (KV_STATE,))
    return bool(rows and json.loads(rows[0][0]).get("flatten"))
