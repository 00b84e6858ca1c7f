"""Notifications reach a loopback SMTP server (STARTTLS + login) and loopback webhooks; a destination that
answers 500 or nothing is retried with backoff, reported in the window, and never blocks the loop."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from engine.bus import Alert, Bus
from engine.bus.events import AccountUpdated, KillSwitchTripped
from engine.clock import ManualClock
from engine.credentials import CredentialStore, redactor
from engine.model.orders import AccountSnapshot
from engine.notify.config import (
    AlertRule,
    DesktopDestination,
    EmailDestination,
    NotifyConfig,
    WebhookDestination,
    secret_name,
)
from engine.notify.notifier import Notifier, NotifyError, send_test
from tests.notify.conftest import SMTP_PASSWORD, SMTP_USER

T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)


class _NoKeyring:
    """A keyring backend that is not usable: the store keeps secrets in memory (headless Linux)."""

    priority = 0


def _store(**secrets: str) -> CredentialStore:
    store = CredentialStore(backend=_NoKeyring(), env={})
    for name, value in secrets.items():
        store.set(name, value)
    return store


def _email(smtp, **kw) -> EmailDestination:
    return EmailDestination(name="mail", host="127.0.0.1", port=smtp.port, security="starttls", username=SMTP_USER,
                            sender="optiondesk@example.test", recipients=["me@example.test"], ca_file=str(smtp.ca_file),
                            timeout_s=5, **kw)


async def _poll(cond, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def _started(config: NotifyConfig, store: CredentialStore, bus: Bus) -> Notifier:
    n = Notifier(bus, config, secrets=store.get, now=ManualClock(T0).now)
    await n.start()
    return n


async def test_kill_switch_trip_reaches_the_loopback_smtp_server_over_starttls_with_login(smtp):
    store = _store(**{secret_name("mail", "password"): SMTP_PASSWORD})
    bus = Bus(clock=ManualClock(T0))
    cfg = NotifyConfig(rules=[AlertRule(name="kill-switch", kind="kill_switch", level="critical")],
                       destinations=[_email(smtp)])
    notifier = await _started(cfg, store, bus)
    try:
        bus.publish(KillSwitchTripped(reason="daily loss limit", by="engine", cancelled_orders=3))
        await _poll(lambda: notifier.stats["mail"].sent == 1)  # after the server took it and the session ended
    finally:
        await notifier.stop()
    sender, rcpts, msg = smtp.messages[0]
    assert (sender, rcpts) == ("optiondesk@example.test", ["me@example.test"])
    assert msg["Subject"] == "Optiondesk critical: Kill switch tripped"
    body = msg.get_content()
    assert "daily loss limit" in body and "3 working orders cancelled" in body
    assert smtp.logins == [(SMTP_USER, smtp.logins[0][1])]  # logged in, and only after STARTTLS (server rule)


async def test_email_to_a_server_with_an_untrusted_certificate_is_refused_with_a_clear_error(smtp, tmp_path):
    from tests.notify.servers import self_signed_cert

    (tmp_path / "other").mkdir()
    other_ca, _ = self_signed_cert(tmp_path / "other")
    store = _store(**{secret_name("mail", "password"): SMTP_PASSWORD})
    cfg = NotifyConfig(rules=[], destinations=[_email(smtp).model_copy(update={"ca_file": str(other_ca)})])
    with pytest.raises(NotifyError, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
        await send_test(cfg, "mail", secrets=store.get, now=ManualClock(T0).now)
    assert smtp.messages == []


async def test_send_test_reaches_smtp_and_the_password_never_appears_in_settings_or_the_error(smtp):
    store = _store(**{secret_name("mail", "password"): SMTP_PASSWORD})
    cfg = NotifyConfig(rules=[], destinations=[_email(smtp)])
    msg = await send_test(cfg, "mail", secrets=store.get, now=ManualClock(T0).now)
    assert "delivered to mail" in msg
    assert "test of the 'mail' destination" in smtp.messages[0][2].get_content()
    from engine.settings import Settings
    from engine.settings.loader import to_toml

    assert SMTP_PASSWORD not in to_toml(Settings(notify=cfg))
    missing = _store()  # no password stored: no login, and this server requires one
    with pytest.raises(NotifyError, match=r"e-mail via 127\.0\.0\.1") as err:
        await send_test(cfg, "mail", secrets=missing.get, now=ManualClock(T0).now)
    assert "530" in str(err.value) or "Authentication required" in str(err.value)


async def test_slack_and_telegram_payloads_reach_the_loopback_webhook(web):
    store = _store(**{secret_name("slack", "url"): f"{web.url}/services/T000/B000/XXXX",
                      secret_name("tg", "token"): "123456:ABC-telegram-token"})
    bus = Bus(clock=ManualClock(T0))
    cfg = NotifyConfig(
        rules=[AlertRule(name="dd-warn", kind="drawdown", threshold=0.20, level="warning")],
        destinations=[WebhookDestination(name="slack", format="slack"),
                      WebhookDestination(name="tg", format="telegram", base_url=web.url, chat_id="-10042")])
    notifier = await _started(cfg, store, bus)
    try:
        for nl in (100_000, 90_000, 79_000, 78_000):  # 21 % then 22 % below the peak: one notification
            bus.publish(AccountUpdated(account=AccountSnapshot(account_id="P", cash=Decimal(nl),
                                                               net_liquidation=Decimal(nl), buying_power=Decimal(nl))))
        await _poll(lambda: notifier.stats["slack"].sent == 1 and notifier.stats["tg"].sent == 1)
    finally:
        await notifier.stop()
    by_path = {path: (headers, body) for path, headers, body in web.requests}
    assert len(web.requests) == 2
    slack = by_path["/services/T000/B000/XXXX"][1]
    assert set(slack) == {"text"} and "Drawdown 21.0%" in slack["text"] and ":warning:" in slack["text"]
    tg = by_path["/bot123456:ABC-telegram-token/sendMessage"][1]
    assert tg["chat_id"] == "-10042" and tg["text"].startswith("WARNING: Drawdown 21.0%")
    assert "123456:ABC-telegram-token" not in redactor().redact(f"url {web.url}/bot123456:ABC-telegram-token/x")


async def test_a_500_is_retried_with_backoff_then_succeeds(web):
    web.script = [500, 500]
    store = _store()
    bus = Bus(clock=ManualClock(T0))
    alerts: list[Alert] = []
    bus.subscribe(Alert, alerts.append)
    cfg = NotifyConfig(rules=[AlertRule(name="kill-switch", kind="kill_switch", level="critical")],
                       destinations=[WebhookDestination(name="hook", format="generic", url=f"{web.url}/hook")],
                       attempts=3, backoff_s=0.05)
    notifier = await _started(cfg, store, bus)
    try:
        t0 = time.monotonic()
        bus.publish(KillSwitchTripped(reason="manual", by="user"))
        await _poll(lambda: notifier.stats["hook"].sent == 1)
        elapsed = time.monotonic() - t0
    finally:
        await notifier.stop()
    assert len(web.requests) == 3
    assert elapsed >= 0.05 + 0.10  # two backoffs: 0.05 s, then 0.10 s
    assert web.requests[-1][2]["rule"] == "kill-switch" and web.requests[-1][2]["level"] == "critical"
    assert not [a for a in alerts if a.source == "notify"]


async def test_a_destination_that_always_fails_raises_a_clear_alert_in_the_window(web):
    web.script = [500] * 10
    bus = Bus(clock=ManualClock(T0))
    alerts: list[Alert] = []
    bus.subscribe(Alert, alerts.append)
    cfg = NotifyConfig(rules=[AlertRule(name="kill-switch", kind="kill_switch", level="critical")],
                       destinations=[WebhookDestination(name="hook", format="generic", url=f"{web.url}/hook"),
                                     DesktopDestination(name="desktop")],
                       attempts=3, backoff_s=0.01)
    notifier = await _started(cfg, _store(), bus)
    try:
        bus.publish(KillSwitchTripped(reason="manual", by="user"))
        await _poll(lambda: notifier.stats["hook"].failed == 1)
    finally:
        await notifier.stop()
    assert len(web.requests) == 3
    failure = [a for a in alerts if a.source == "notify"]
    assert len(failure) == 1 and failure[0].level == "error"
    assert "could not be delivered to hook after 3 attempts: webhook hook: HTTP 500" in failure[0].message
    desktop = [a for a in alerts if a.source == "notify:kill-switch"]
    assert len(desktop) == 1 and desktop[0].level == "critical"


async def test_a_destination_that_never_answers_does_not_block_the_loop(web):
    web.script = ["hang"] * 5
    bus = Bus(clock=ManualClock(T0))
    alerts: list[Alert] = []
    bus.subscribe(Alert, alerts.append)
    cfg = NotifyConfig(rules=[AlertRule(name="kill-switch", kind="kill_switch", level="critical")],
                       destinations=[WebhookDestination(name="hook", format="generic", url=f"{web.url}/hook",
                                                        timeout_s=1.0)],
                       attempts=2, backoff_s=0.01)
    notifier = await _started(cfg, _store(), bus)
    loop = asyncio.get_running_loop()
    worst = 0.0
    try:
        bus.publish(KillSwitchTripped(reason="manual", by="user"))
        deadline = time.monotonic() + 10
        while notifier.stats["hook"].failed == 0:
            assert time.monotonic() < deadline, "the hanging destination was never given up"
            t = loop.time()
            await asyncio.sleep(0.01)
            worst = max(worst, loop.time() - t - 0.01)
    finally:
        await notifier.stop()
    assert worst < 0.5  # the loop kept turning while each attempt waited 1 s for an answer
    assert "timed out" in next(a for a in alerts if a.source == "notify").message


async def test_duplicates_are_suppressed_and_the_hourly_rate_limit_holds(web):
    bus = Bus(clock=ManualClock(T0))
    now = [1000.0]
    cfg = NotifyConfig(rules=[AlertRule(name="ks", kind="kill_switch", level="critical"),
                              AlertRule(name="spike", kind="rejection_spike", threshold=1, level="error")],
                       destinations=[WebhookDestination(name="hook", format="generic", url=f"{web.url}/hook")],
                       dedupe_s=600, max_per_hour=2)
    notifier = Notifier(bus, cfg, secrets=_store().get, now=ManualClock(T0).now, monotonic=lambda: now[0])
    await notifier.start()
    from engine.bus.events import KillSwitchReset

    try:
        bus.publish(KillSwitchTripped(reason="one", by="user"))
        bus.publish(KillSwitchReset(by="user"))
        bus.publish(KillSwitchTripped(reason="two", by="user"))  # same rule within 600 s: suppressed
        now[0] += 601
        bus.publish(KillSwitchReset(by="user"))
        bus.publish(KillSwitchTripped(reason="three", by="user"))  # after the window: sent (2nd this hour)
        now[0] += 601
        bus.publish(KillSwitchReset(by="user"))
        bus.publish(KillSwitchTripped(reason="four", by="user"))  # third within the hour: rate limited
        await _poll(lambda: notifier.stats["hook"].sent == 2)  # the other two were counted inline
    finally:
        await notifier.stop()
    st = notifier.stats["hook"]
    assert (st.sent, st.suppressed, st.rate_limited) == (2, 1, 1)
    # two sender threads: the order of arrival is not promised
    assert sorted(r[2]["message"].split(": ")[1].split(".")[0] for r in web.requests) == ["one", "three"]


async def test_an_event_published_from_a_worker_thread_is_routed_on_the_loop(web):
    bus = Bus(clock=ManualClock(T0))
    cfg = NotifyConfig(rules=[AlertRule(name="kill-switch", kind="kill_switch", level="critical")],
                       destinations=[WebhookDestination(name="hook", format="generic", url=f"{web.url}/hook")])
    notifier = await _started(cfg, _store(), bus)
    try:
        await asyncio.to_thread(bus.publish, KillSwitchTripped(reason="from a thread", by="engine"))
        await _poll(lambda: notifier.stats["hook"].sent == 1)
    finally:
        await notifier.stop()
    assert "from a thread" in web.requests[0][2]["message"]


async def test_implicit_tls_smtp_delivers(tmp_path):
    from tests.notify.servers import smtps_server

    gen = smtps_server(tmp_path)
    server = next(gen)
    try:
        dest = EmailDestination(name="mail", host="127.0.0.1", port=server.port, security="ssl",
                                sender="optiondesk@example.test", recipients=["me@example.test"],
                                ca_file=str(server.ca_file), timeout_s=5)
        cfg = NotifyConfig(rules=[], destinations=[dest])
        assert "delivered" in await send_test(cfg, "mail", secrets=_store().get, now=ManualClock(T0).now)
    finally:
        gen.close()
    assert server.messages[0][2]["Subject"] == "Optiondesk info: Optiondesk test notification"
