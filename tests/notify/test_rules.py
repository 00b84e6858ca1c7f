"""Each alert rule fires once on its edge, from real bus events, and re-arms when its condition clears."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from pydantic import ValidationError

from engine.bus import Alert, Bus
from engine.bus.events import AccountUpdated, ClockTicked, OrderRejected, QuotesUpdated
from engine.clock import ManualClock
from engine.model.orders import AccountSnapshot
from engine.notify.config import AlertRule, NotifyConfig, default_rules
from engine.notify.notifier import Notifier
from engine.notify.rules import Notification, RuleEvaluator, StrategyDisabled
from engine.risk.regime import RegimeChanged

T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)


def _wire(rules: list[AlertRule]) -> tuple[Bus, ManualClock, list[Notification]]:
    clock = ManualClock(T0)
    bus = Bus(clock=clock)
    out: list[Notification] = []
    ev = RuleEvaluator(rules, out.append)
    for etype, fn in ev.handlers():
        bus.subscribe(etype, fn)
    return bus, clock, out


def _account(nl: float, day_pnl: float = 0.0) -> AccountUpdated:
    return AccountUpdated(account=AccountSnapshot(account_id="P", cash=Decimal(nl), net_liquidation=Decimal(nl),
                                                  buying_power=Decimal(nl), day_pnl=Decimal(day_pnl)))


def test_the_default_rules_are_the_trading_plans():
    rules = {r.name: r for r in default_rules()}
    assert rules["drawdown-warning"].threshold == 0.20 and rules["drawdown-warning"].level == "warning"
    assert rules["drawdown-trip"].threshold == 0.25 and rules["drawdown-trip"].level == "critical"
    assert {r.kind for r in rules.values()} == {"drawdown", "daily_loss", "rejection_spike", "feed_stall",
                                                "heartbeat_missing", "kill_switch", "regime_high_vol",
                                                "strategy_disabled"}


def test_drawdown_warning_and_trip_fire_once_each_and_rearm_after_recovery():
    bus, _, out = _wire([r for r in default_rules() if r.kind == "drawdown"])
    for nl in (100_000, 85_000, 79_000, 78_500, 74_000, 73_000):
        bus.publish(_account(nl))
    assert [n.rule for n in out] == ["drawdown-warning", "drawdown-trip"]
    assert out[1].level == "critical" and "26.0% below its peak $100,000" in out[1].message
    bus.publish(_account(95_000))  # recovered: both re-arm
    bus.publish(_account(79_000))
    assert [n.rule for n in out][-1] == "drawdown-warning" and len(out) == 3


def test_daily_loss_is_a_share_of_net_liquidation():
    bus, _, out = _wire([AlertRule(name="dl", kind="daily_loss", threshold=0.03, level="error")])
    bus.publish(_account(100_000, day_pnl=-2_900))
    assert out == []
    bus.publish(_account(97_000, day_pnl=-3_000))
    assert len(out) == 1 and "Lost $3,000.00 today" in out[0].message


def test_rejection_spike_counts_within_the_window_on_the_engine_clock():
    from engine.model import OrderStatus, Side
    from tests.risk.kit import make_order, opt

    bus, clock, out = _wire([AlertRule(name="rs", kind="rejection_spike", threshold=3, window_s=60, level="error")])
    rejected = make_order([(opt(590, "P"), Side.SELL, 1)], price="1.00", status=OrderStatus.REJECTED)
    for _ in range(2):
        bus.publish(OrderRejected(order=rejected))
        clock.advance(timedelta(seconds=50))
    bus.publish(OrderRejected(order=rejected))  # 3 in 100 s, but only 2 within 60 s
    assert out == []
    clock.advance(timedelta(seconds=5))
    bus.publish(OrderRejected(order=rejected))
    assert len(out) == 1 and "3 orders rejected by the broker within 60 s" in out[0].message


def test_feed_stall_only_while_the_market_is_open():
    bus, clock, out = _wire([AlertRule(name="fs", kind="feed_stall", threshold=60, level="error")])
    bus.publish(ClockTicked(now=T0, market_open=False))
    clock.advance(timedelta(seconds=600))
    bus.publish(ClockTicked(now=clock.now(), market_open=False))
    assert out == []  # closed market: silence is normal
    bus.publish(ClockTicked(now=clock.now(), market_open=True))
    bus.publish(QuotesUpdated(underlying="SPY", rows=[1], bid=[1.0], ask=[1.1]))
    clock.advance(timedelta(seconds=59))
    bus.publish(ClockTicked(now=clock.now(), market_open=True))
    assert out == []
    clock.advance(timedelta(seconds=2))
    bus.publish(ClockTicked(now=clock.now(), market_open=True))
    bus.publish(ClockTicked(now=clock.now(), market_open=True))
    assert len(out) == 1 and "No quote for 61 s" in out[0].message
    bus.publish(QuotesUpdated(underlying="SPY", rows=[1], bid=[1.0], ask=[1.1]))
    bus.publish(ClockTicked(now=clock.now(), market_open=True))
    clock.advance(timedelta(seconds=61))
    bus.publish(ClockTicked(now=clock.now(), market_open=True))
    assert len(out) == 2  # quotes came back (re-armed), then stalled again


def test_regime_and_strategy_rules():
    bus, _, out = _wire([AlertRule(name="hv", kind="regime_high_vol"),
                         AlertRule(name="sd", kind="strategy_disabled", level="error")])
    bus.publish(RegimeChanged(regime="neutral", previous="low_vol"))
    bus.publish(RegimeChanged(regime="crisis", previous="neutral", source="gmm"))
    bus.publish(StrategyDisabled(strategy_id="put-write", reason="ZeroDivisionError in on_bar"))
    bus.publish(Alert(level="error", source="strategy:condor", message="strategy condor disabled after an error"))
    bus.publish(Alert(level="error", source="feed", message="disabled something"))  # not a strategy
    assert [(n.rule, n.title) for n in out] == [("hv", "Regime: crisis"), ("sd", "Strategy put-write disabled"),
                                                ("sd", "strategy:condor disabled")]


async def test_missing_heartbeat_is_noticed_by_the_watchdog():
    bus = Bus(clock=ManualClock(T0))
    mono = [0.0]
    alerts: list[Alert] = []
    bus.subscribe(Alert, alerts.append)
    cfg = NotifyConfig(rules=[AlertRule(name="hb", kind="heartbeat_missing", threshold=30, level="critical")])
    notifier = Notifier(bus, cfg, secrets=lambda _n: None, now=ManualClock(T0).now, monotonic=lambda: mono[0],
                        heartbeat_check_s=0.01)
    await notifier.start()
    try:
        bus.publish(ClockTicked(now=T0))
        mono[0] = 29.0
        await asyncio.sleep(0.05)
        assert alerts == []
        mono[0] = 31.0
        deadline = time.monotonic() + 5
        while not alerts:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
    finally:
        await notifier.stop()
    assert alerts[0].source == "notify:hb" and "No engine heartbeat for 31 s" in alerts[0].message


@pytest.mark.parametrize("bad, message", [
    ({"rules": [{"name": "x", "kind": "drawdown", "threshold": 20}]}, "fraction between 0 and 1"),
    ({"rules": [{"name": "x", "kind": "kill_switch", "destinations": ["pager"]}]}, "unknown destinations: pager"),
    ({"rules": [{"name": "x", "kind": "kill_switch", "colour": "red"}]}, "Extra inputs are not permitted"),
    ({"destinations": [{"type": "webhook", "name": "s", "format": "slack", "url": "https://hooks.slack.com/x"}]},
     "is a secret"),
    ({"destinations": [{"type": "email", "name": "m", "host": "h", "sender": "a@b", "recipients": ["nobody"]}]},
     "not e-mail addresses: nobody"),
])
def test_bad_rules_and_destinations_are_clear_errors(bad, message):
    with pytest.raises(ValidationError, match=message):
        NotifyConfig.model_validate(bad)


def test_a_bad_notify_section_in_the_settings_file_names_the_key(tmp_path):
    from engine.settings import load_settings

    path = tmp_path / "settings.toml"
    path.write_text('[notify]\nmax_per_hour = 0\n')
    result = load_settings(path)
    assert any(e.key.startswith("notify.max_per_hour") for e in result.errors)
    assert result.settings.notify.max_per_hour == 30
