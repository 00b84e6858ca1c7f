"""The strategy host inside a real Engine on the pinned simulated market: orders through the one path, state that
survives a restart, budgets enforced by the risk engine, isolation of a failing strategy, the kill switch, the
paper/live account guard and bad settings entries (docs/strategies.md)."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable
from typing import Any

import pytest

import engine.strategies as strategies_pkg
from engine.bus import (
    Alert,
    OrderDenied,
    PauseStrategy,
    ResetKillSwitch,
    SetStrategyMode,
    SetStrategyParams,
    StartStrategy,
    StopStrategy,
    StrategyDisabled,
    StrategySignal,
    StrategyStateChanged,
    TripKillSwitch,
)
from engine.core import Engine, EngineConfig
from engine.model import OrderStatus
from engine.notify.config import AlertRule, NotifyConfig
from engine.notify.rules import RuleEvaluator
from engine.settings import Settings
from engine.strategies.base import ManagedStrategy
from engine.strategies.config import StrategyEntry
from engine.strategies.host import StrategyCommandError
from engine.surface.config import SurfaceConfig
from tests.sim_start import pinned_settings

ALL_REGIMES = ["low_vol", "normal", "high_vol", "iv_contraction", "iv_expansion", "neutral"]
HOLD = {"profit_target": None, "stop_multiple": None, "dte_exit": None, "regime_exits": None}


def condor(sid: str = "ic", *, underlying: str = "SPY", rules: dict[str, Any] | None = None,
           budget: dict[str, Any] | None = None, **params: Any) -> StrategyEntry:
    """An iron condor that trades on the first snapshot of the simulated market: any regime, any IV rank,
    priced at natural (so the paper exchange fills it at once)."""
    p = {"underlying": underlying, "iv_rank_entry": 0.0, "regimes": ALL_REGIMES,
         "size_factors": dict.fromkeys(ALL_REGIMES, 1.0), "dte_min": 20, "dte_max": 60, "pricing": {"start": 1.0},
         "rules": rules or HOLD, **params}
    return StrategyEntry(name="iron_condor", id=sid, params=p, budget=budget or {})


def settings(entries: list[StrategyEntry]) -> Settings:
    return pinned_settings(Settings(surface=SurfaceConfig(executor="thread"), notify=NotifyConfig(enabled=False),
                                    strategies=entries))


def config(tmp_path: Any, entries: list[StrategyEntry]) -> EngineConfig:
    return EngineConfig.for_directory(tmp_path, settings=settings(entries))


async def until(pred: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = pred()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def orders_of(engine: Engine, sid: str) -> list[Any]:
    return sorted(engine.strategies.hosted[sid].orders.values(), key=lambda o: o.created_at)


def filled_trade(engine: Engine, sid: str) -> Any:
    trades = [t for t in engine.strategies.open_trades(sid) if t.state == "open" and t.filled > 0]
    return trades[0] if trades else None


def record(engine: Engine, *types: type) -> list[Any]:
    got: list[Any] = []
    for t in types:
        engine.bus.subscribe(t, got.append)
    return got


# ---- a restart in the middle of a trade ---------------------------------------------------------------------
async def test_restart_in_the_middle_of_a_trade_then_the_strategy_knows_its_trade_and_manages_its_exit(tmp_path):
    async with Engine(config(tmp_path, [condor()])) as engine:
        trade = await until(lambda: filled_trade(engine, "ic"), "the condor's entry to fill")
        tag, legs = trade.tag, [leg.symbol for leg in trade.legs]
        first = engine.strategies.report("ic")
        assert [o["tag"] for o in first["orders"]] == [f"{tag}:open"]
        assert len(first["fills"]) == 4 and first["open_trades"] == 1
        signals = engine.strategies.status("ic").last_signal
        assert signals is not None and signals.action == "open" and signals.tag == tag

    # the same data folder, a new engine; the owner now exits at 365 DTE, so the held trade must be closed
    exiting = condor(rules={**HOLD, "dte_exit": 365})
    async with Engine(config(tmp_path, [exiting])) as engine:
        known = engine.strategies.open_trades("ic")
        assert [t.tag for t in known] == [tag]
        assert known[0].filled == 1 and [leg.symbol for leg in known[0].legs] == legs
        assert len(engine.strategies.report("ic")["fills"]) == 4  # the ledger came back from the store too
        await until(lambda: any(o.tag == f"{tag}:close:dte_exit" and o.status.value == "filled"
                                for o in orders_of(engine, "ic")), "the restored trade's exit to fill")
        # it managed the trade it already had: the first order after the restart is that trade's exit,
        # not a second entry (max_open_trades = 1 counts the restored trade)
        assert orders_of(engine, "ic")[0].tag == f"{tag}:close:dte_exit"
        report = engine.strategies.report("ic")
        closed = [t for t in report["trades"] if t["tag"] == tag]
        assert closed[0]["status"] == "closed" and closed[0]["exit_reason"] == "dte_exit"
        assert len([f for f in report["fills"] if f["order_id"] == orders_of(engine, "ic")[0].order_id]) == 4


# ---- one failing strategy -----------------------------------------------------------------------------------
class Exploding(ManagedStrategy):
    name = "exploding_test"

    def entries(self, ctx: Any, chain: Any) -> Any:
        raise RuntimeError("boom in entries")


async def test_a_strategy_that_raises_is_disabled_with_one_alert_and_the_others_keep_trading(tmp_path, monkeypatch):
    real = strategies_pkg.registry
    monkeypatch.setattr(strategies_pkg, "registry", lambda: {**real(), Exploding.name: Exploding})
    boom = StrategyEntry(name=Exploding.name, id="boom", params={"underlying": "SPY"})
    async with Engine(config(tmp_path, [boom, condor()])) as engine:
        notes: list[Any] = []
        evaluator = RuleEvaluator([AlertRule(name="sd", kind="strategy_disabled", level="error")], notes.append)
        for ev_type, handler in evaluator.handlers():
            engine.bus.subscribe(ev_type, handler)
        got = record(engine, StrategyDisabled, Alert)
        await until(lambda: engine.strategies.hosted["boom"].state == "disabled", "the failing strategy to be off")
        disabled = [e for e in got if isinstance(e, StrategyDisabled)]
        assert [e.strategy_id for e in disabled] == ["boom"]
        assert "RuntimeError in on_chain: boom in entries" in disabled[0].reason
        assert any(isinstance(e, Alert) and e.level == "error" and "boom" in e.message for e in got)
        assert len(notes) == 1 and notes[0].title == "Strategy boom disabled"  # one notification, not two
        assert engine.strategies.hosted["boom"].runner is None
        # the other strategy is untouched and trades
        await until(lambda: filled_trade(engine, "ic"), "the healthy strategy to trade")
        assert engine.strategies.status("ic").state == "running"
        stored = engine.store.query("SELECT state, payload FROM strategy_state WHERE strategy_id='boom'")[0]
        assert stored["state"] == "disabled" and "boom in entries" in json.loads(stored["payload"])["reason"]


# ---- the kill switch ------------------------------------------------------------------------------------------
async def test_kill_switch_trip_pauses_every_strategy_and_only_a_start_after_the_reset_resumes_them(tmp_path):
    async with Engine(config(tmp_path, [condor("a"), condor("b", underlying="QQQ")])) as engine:
        changes = record(engine, StrategyStateChanged)
        await engine.bus.send(TripKillSwitch(reason="test trip"))
        for sid in ("a", "b"):
            st = engine.strategies.status(sid)
            assert st.state == "paused" and "kill switch tripped (test trip)" in st.reason
            assert engine.strategies.hosted[sid].runner.paused
        assert {(c.strategy_id, c.previous, c.state) for c in changes} == {("a", "running", "paused"),
                                                                          ("b", "running", "paused")}
        with pytest.raises(StrategyCommandError, match="kill switch is tripped"):
            await engine.bus.send(StartStrategy(strategy_id="a"))
        await engine.bus.send(ResetKillSwitch(confirmed=True))
        assert [engine.strategies.status(s).state for s in ("a", "b")] == ["paused", "paused"]  # no auto-resume
        assert await engine.bus.send(StartStrategy(strategy_id="a")) == "running"
        assert not engine.strategies.hosted["a"].runner.paused
        assert engine.strategies.status("b").state == "paused"
        audit = engine.store.audit.list("strategy_start_refused")
        assert audit and audit[0]["detail"]["strategy_id"] == "a"


# ---- budgets in the risk engine -------------------------------------------------------------------------------
async def test_budget_limits_deny_opening_orders_naming_the_strategy_and_the_limit(tmp_path):
    entries = [condor("cap", budget={"capital": 100.0}),
               condor("two", underlying="QQQ", max_open_trades=2, budget={"max_open_trades": 1}),
               condor("day", underlying="IWM", max_open_trades=2, budget={"max_loss_per_day": 1.0})]
    async with Engine(config(tmp_path, entries)) as engine:
        denied = record(engine, OrderDenied)

        def reason(sid: str, text: str) -> bool:
            return any(d.order.strategy_id == sid and text in d.order.reason for d in denied)

        await until(lambda: reason("cap", "strategy cap: max loss $0.00 committed + $"), "the capital denial")
        assert reason("cap", "exceeds its capital $100.00")
        await until(lambda: reason("two", "strategy two: 2 open trades exceeds its budget of 1"),
                    "the open-trades denial")
        await until(lambda: reason("day", "strategy day: P&L today $-"), "the daily-loss denial")
        assert reason("day", "has reached its max loss per day $1.00")
        # each limited strategy still made the trade its budget allows
        assert filled_trade(engine, "two") and filled_trade(engine, "day") and not filled_trade(engine, "cap")


# ---- paper first: the account guard and the live confirmation ----------------------------------------------
async def test_a_strategy_order_bound_for_another_account_than_its_mode_is_denied_and_live_needs_a_confirmation(
        tmp_path):
    idle = condor("idle", underlying="IWM").model_copy(update={"enabled": False})
    async with Engine(config(tmp_path, [condor(), idle])) as engine:
        await until(lambda: filled_trade(engine, "ic"), "a strategy trade")
        order = orders_of(engine, "ic")[0]
        # the same order as the risk engine saw it (before any fill), bound for a live account
        elsewhere = order.evolve(order_id="elsewhere", broker="tastytrade", account_id="5WT12345",
                                 status=OrderStatus.PENDING_APPROVAL, filled_quantity=0, avg_fill_price=None,
                                 updated_at=order.updated_at)
        decision = engine.risk.check(elsewhere, consume=False)
        assert not decision.passed
        msg = next(r.message for r in decision.failed if r.name == "strategy_account")
        assert msg == ("strategy ic trades on the paper account but this order would go to tastytrade account "
                       "****2345")
        with pytest.raises(StrategyCommandError, match="strategy ic has 1 open trade"):
            await engine.bus.send(SetStrategyMode(strategy_id="ic", mode="live", confirm_account="5WT12345"))
        with pytest.raises(StrategyCommandError, match="no live broker is connected"):
            await engine.bus.send(SetStrategyMode(strategy_id="idle", mode="live", confirm_account="5WT12345"))
        refused = engine.store.audit.list("strategy_mode_refused")
        assert {(r["detail"]["strategy_id"], r["detail"]["mode"]) for r in refused} == {("ic", "live"),
                                                                                       ("idle", "live")}
        assert engine.strategies.status("ic").mode == "paper" and engine.strategies.status("idle").mode == "paper"


# ---- commands --------------------------------------------------------------------------------------------------
async def test_pause_stop_start_and_parameters_by_command(tmp_path):
    async with Engine(config(tmp_path, [condor(rules={**HOLD, "dte_exit": 5})])) as engine:
        signals = record(engine, StrategySignal)
        await until(lambda: filled_trade(engine, "ic"), "an entry")
        assert signals and signals[0].action == "open" and math.isnan(signals[0].confidence)
        assert await engine.bus.send(PauseStrategy(strategy_id="ic", reason="lunch")) == "paused"
        with pytest.raises(StrategyCommandError, match="is paused, not running"):
            await engine.bus.send(PauseStrategy(strategy_id="ic"))
        with pytest.raises(StrategyCommandError, match="bad parameters for ic"):
            await engine.bus.send(SetStrategyParams(strategy_id="ic", params={"short_delta": 3}))
        with pytest.raises(StrategyCommandError, match="no strategy 'nope'"):
            await engine.bus.send(StartStrategy(strategy_id="nope"))
        new = await engine.bus.send(SetStrategyParams(strategy_id="ic", params={
            **engine.strategies.status("ic").params, "rules": {**HOLD, "dte_exit": 40}}))
        assert new["rules"]["dte_exit"] == 40
        assert engine.strategies.hosted["ic"].strategy.params.rules.dte_exit == 40
        assert await engine.bus.send(StopStrategy(strategy_id="ic")) == "stopped"
        assert engine.strategies.hosted["ic"].runner is None
        assert await engine.bus.send(StartStrategy(strategy_id="ic")) == "running"
        assert [t.state for t in engine.strategies.open_trades("ic")] in (["open"], ["closing"])
        actions = {a["action"] for a in engine.store.audit.list() if a["action"].startswith("strategy_")}
        assert {"strategy_pause", "strategy_params", "strategy_stop", "strategy_state"} <= actions


# ---- settings -------------------------------------------------------------------------------------------------
SETTINGS_TOML = """
[simulator]
start = "2026-03-02"

[surface]
executor = "thread"

[notify]
enabled = false

[[strategies]]
name = "iron_condor"
id = "typo"
mode = "lve"

[[strategies]]
name = "iron_condor"
id = "badparams"
params = { short_delta = 3.0 }

[[strategies]]
name = "no_such_strategy"

[[strategies]]
name = "put_write"
enabled = false

[[strategies]]
name = "iv_rank_put_spread"
budget = { capital = 5000.0, max_open_trades = 2 }
"""


async def test_bad_settings_entries_are_disabled_strategies_with_reasons_and_the_rest_run(tmp_path):
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "settings.toml").write_text(SETTINGS_TOML)
    async with Engine(EngineConfig.for_directory(tmp_path)) as engine:
        assert engine.settings.general.seed == 7  # the rest of the file applied
        st = {s.strategy_id: s for s in engine.strategies.statuses()}
        assert st["typo"].state == "disabled" and "settings strategies.0.mode" in st["typo"].reason
        assert st["badparams"].state == "disabled" and "bad parameters for iron_condor" in st["badparams"].reason
        assert st["no_such_strategy"].state == "disabled" and "unknown strategy 'no_such_strategy'" in \
            st["no_such_strategy"].reason
        assert st["put_write"].state == "stopped"
        assert st["iv_rank_put_spread"].state == "running"
        assert engine.settings.strategies[-1].budget.capital == 5000.0
        with pytest.raises(StrategyCommandError, match="invalid settings entry"):
            await engine.bus.send(StartStrategy(strategy_id="typo"))


async def test_a_paused_strategy_stays_paused_after_a_restart_and_unusable_stored_books_disable_only_their_owner(
        tmp_path):
    entries = [condor("a"), condor("b", underlying="QQQ")]
    async with Engine(config(tmp_path, entries)) as engine:
        await until(lambda: filled_trade(engine, "a") and filled_trade(engine, "b"), "both to trade")
        await engine.bus.send(PauseStrategy(strategy_id="a", reason="lunch"))
    # between the runs b's stored books are damaged: a trade without legs
    from engine.store import Store

    store = Store.open(EngineConfig.for_directory(tmp_path).paths.database)
    row = store.query("SELECT payload FROM strategy_state WHERE strategy_id='b'")[0]
    payload = json.loads(row["payload"])
    payload["strategy"]["trades"] = [{"tag": "b-00001"}]
    store.execute("UPDATE strategy_state SET payload=? WHERE strategy_id='b'", (json.dumps(payload),))
    store.close()
    async with Engine(config(tmp_path, entries)) as engine:
        a, b = engine.strategies.status("a"), engine.strategies.status("b")
        assert (a.state, a.reason) == ("paused", "lunch") and a.open_trades == 1
        assert b.state == "disabled" and "its stored state could not be restored (KeyError" in b.reason
        assert await engine.bus.send(StartStrategy(strategy_id="a")) == "running"
