"""The trader's own alerts: conditions on price, IV, Greeks and P&L, evaluated on the engine's events, firing
once on a crossing until re-armed; bad rules are refused with the reason."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from pydantic import ValidationError

from engine.bus import Alert, Bus
from engine.bus.commands import ApplySettings
from engine.bus.events import AccountUpdated, ClockTicked, UnderlyingUpdated
from engine.clock import ManualClock
from engine.core import Engine, EngineConfig
from engine.model.orders import AccountSnapshot
from engine.notify.config import NotifyConfig, UserAlertRule
from engine.notify.notifier import Notifier
from engine.notify.rules import Notification
from engine.notify.user_rules import RearmUserAlert, UserRuleEvaluator
from engine.risk.greeks import Exposure
from engine.settings import load_settings
from tests.sim_start import pinned_settings

T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)


def _wire(rules, exposure=None):
    bus = Bus(clock=ManualClock(T0))
    out: list[Notification] = []
    ev = UserRuleEvaluator(rules, out.append, exposure)
    for etype, fn in ev.handlers():
        bus.subscribe(etype, fn)
    return bus, ev, out


def _prices(bus, *prices, symbol="SPY"):
    for p in prices:
        bus.publish(UnderlyingUpdated(symbol=symbol, price=p))


def test_a_once_rule_fires_on_the_crossing_and_not_again_until_rearmed():
    bus, ev, out = _wire([UserAlertRule(name="spy-590", symbol="SPY", metric="last", op="crosses", value=590)])
    _prices(bus, 595, 592, 591)
    assert out == []  # no crossing yet (and the first value alone is not one)
    _prices(bus, 589.5)
    assert [n.rule for n in out] == ["spy-590"] and "from 591" in out[0].message
    _prices(bus, 591, 588, 592, 587)  # crosses back and forth: disarmed
    assert len(out) == 1
    assert ev.rearm("spy-590") == ["spy-590"]
    _prices(bus, 586)  # re-armed, but below and staying below: no new crossing
    assert len(out) == 1
    _prices(bus, 590.5)
    assert len(out) == 2
    _prices(bus, 600, symbol="QQQ")  # another symbol's price never reaches the rule
    assert len(out) == 2


def test_every_time_above_and_below_fire_on_each_new_edge():
    bus, _ev, out = _wire([
        UserAlertRule(name="up", symbol="SPY", metric="last", op="above", value=600, repeat="every"),
        UserAlertRule(name="down", symbol="SPY", metric="last", op="below", value=580, repeat="every"),
    ])
    _prices(bus, 601)  # already above on the first value: that is the condition holding
    _prices(bus, 602, 603)  # stays above: no repeat
    _prices(bus, 599, 604)  # clears and returns: a new edge
    _prices(bus, 579, 578, 581, 577)
    assert [n.rule for n in out] == ["up", "up", "down", "down"]


def test_portfolio_greeks_position_greeks_and_pnl_today():
    total = [Exposure(delta=100.0, theta=-20.0)]
    by = [{"SPY": Exposure(vega=300.0)}]
    bus, _ev, out = _wire([
        UserAlertRule(name="delta", target="portfolio", metric="delta", op="above", value=500),
        UserAlertRule(name="spy-vega", target="position", symbol="spy", metric="vega", op="above", value=1000),
        UserAlertRule(name="pnl", target="portfolio", metric="pnl_today", op="below", value=-1000),
    ], exposure=lambda: (total[0], by[0]))
    bus.publish(ClockTicked(now=T0))
    assert out == []
    total[0] = Exposure(delta=650.0)
    by[0] = {"SPY": Exposure(vega=1500.0)}
    bus.publish(ClockTicked(now=T0))
    bus.publish(AccountUpdated(account=AccountSnapshot(account_id="P", cash=Decimal(1), net_liquidation=Decimal(1),
                                                       buying_power=Decimal(1), day_pnl=Decimal(-1200))))
    assert [n.rule for n in out] == ["delta", "spy-vega", "pnl"]
    assert "P&L today ($) is -1,200" in out[2].message


@pytest.mark.parametrize("bad, reason", [
    ({"name": "x", "target": "symbol", "symbol": "SPY", "metric": "delta", "value": 1}, "a symbol has no delta"),
    ({"name": "x", "target": "portfolio", "metric": "last", "value": 1}, "a portfolio has no last"),
    ({"name": "x", "target": "position", "metric": "vega", "value": 1}, "needs a symbol"),
    ({"name": "x", "target": "portfolio", "symbol": "SPY", "metric": "delta", "value": 1}, "takes no symbol"),
    ({"name": "x", "symbol": "SPY", "metric": "last", "value": -5}, "must be positive"),
    ({"name": "x", "symbol": "SPY", "metric": "iv", "value": 0.25 * 0}, "IV is in percent"),
    ({"name": "x", "symbol": "SPY", "metric": "iv_rank", "value": 150}, "from 0 to 100"),
    ({"name": "x", "symbol": "SPY", "metric": "last", "op": "near", "value": 1}, "'above', 'below' or 'crosses'"),
    ({"name": "bad name", "symbol": "SPY", "metric": "last", "value": 1}, "pattern"),
])
def test_bad_rules_are_refused_with_the_reason(bad, reason):
    with pytest.raises(ValidationError, match=reason):
        UserAlertRule.model_validate(bad)


def test_names_are_unique_across_rule_kinds_and_destinations_must_exist():
    with pytest.raises(ValidationError, match="duplicate rule names: kill-switch"):
        NotifyConfig.model_validate({"user_rules": [{"name": "kill-switch", "symbol": "SPY", "value": 1}]})
    with pytest.raises(ValidationError, match="unknown destinations: pager"):
        NotifyConfig.model_validate({"user_rules": [{"name": "a", "symbol": "SPY", "value": 1,
                                                     "destinations": ["pager"]}]})


async def test_every_crossing_reaches_the_alerts_dock_without_deduplication():
    bus = Bus(clock=ManualClock(T0))
    alerts: list[Alert] = []
    bus.subscribe(Alert, alerts.append)
    cfg = NotifyConfig(rules=[], user_rules=[
        UserAlertRule(name="x", symbol="SPY", metric="last", op="crosses", value=590, repeat="every")])
    notifier = Notifier(bus, cfg, secrets=lambda _n: None, now=ManualClock(T0).now)
    await notifier.start()
    try:
        _prices(bus, 591, 589, 591)
        assert [a.source for a in alerts] == ["notify:x", "notify:x"]  # the 15-minute dedupe does not apply
        with pytest.raises(KeyError, match="no enabled user alert named 'nope'"):
            await bus.send(RearmUserAlert(name="nope"))
    finally:
        await notifier.stop()


async def _wait(pred, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_on_the_engine_a_saved_rule_fires_once_when_the_simulated_price_crosses(tmp_path):
    """The simulated market's own price path: a rule at the price now fires at the first crossing, once;
    after RearmUserAlert it fires at a later crossing again. The rule is saved in settings.toml."""
    cfg = EngineConfig.for_directory(tmp_path, settings=pinned_settings(), clock_interval_s=0.05)
    engine = Engine(cfg)
    await engine.start()
    try:
        alerts: list[Alert] = []
        crossings: list[float] = []
        engine.bus.subscribe(Alert, lambda a: alerts.append(a) if a.source == "notify:spy-level" else None)
        await _wait(lambda: engine.feed.last_price("SPY") is not None)
        level = round(float(engine.feed.last_price("SPY")), 2)
        side = [None]

        def watch(ev: UnderlyingUpdated) -> None:  # the crossings the rule should see, counted independently
            if ev.symbol != "SPY" or ev.price == level:
                return
            above = ev.price > level
            if side[0] is not None and above != side[0]:
                crossings.append(ev.price)
            side[0] = above

        rule = UserAlertRule(name="spy-level", symbol="SPY", metric="last", op="crosses", value=level)
        s = engine.settings
        new = s.model_copy(update={"notify": s.notify.model_copy(update={"user_rules": [rule]})})
        engine.bus.subscribe(UnderlyingUpdated, watch)
        await engine.bus.send(ApplySettings(settings=new))
        await _wait(lambda: len(crossings) >= 3)
        assert len(alerts) == 1  # fired at the first crossing only
        assert "SPY last price ($) crosses" in alerts[0].message
        await engine.bus.send(RearmUserAlert(name="spy-level"))
        n = len(crossings)
        await _wait(lambda: len(crossings) > n + 1)
        assert len(alerts) == 2
        saved = load_settings(cfg.paths.settings_file).settings.notify.user_rules
        assert [r.name for r in saved] == ["spy-level"] and saved[0].value == level
    finally:
        await engine.stop()
