"""The alert rules editor: shows the settings' rules, refuses bad input in red, tests a destination as
edited against a loopback webhook, stores secrets outside the settings, and saves + applies the rules."""

from __future__ import annotations

import json
import tomllib

import pytest

from tests.notify.servers import http_server
from tests.qt_fixtures import run_async, wait_for_condition


class _NoKeyring:
    priority = 0


@pytest.fixture()
def web():
    yield from http_server()


@pytest.fixture()
def dialog(qtbot, engine):
    from app.dialogs.alert_rules_dialog import AlertRulesDialog
    from engine.credentials import CredentialStore

    engine.credentials = CredentialStore(backend=_NoKeyring(), env={})  # never the developer's keyring
    dlg = AlertRulesDialog(engine)
    qtbot.addWidget(dlg)
    dlg.show()
    return dlg


def _row_of(table, name: str) -> int:
    return next(r for r in range(table.rowCount()) if table.item(r, 1).text() == name)


def test_dialog_shows_the_default_rules_and_is_not_blank(dialog, tmp_path):
    names = [dialog.rules.item(r, 1).text() for r in range(dialog.rules.rowCount())]
    assert names[:2] == ["drawdown-warning", "drawdown-trip"] and len(names) == 9
    assert dialog.rules.item(0, 3).text() == "0.2" and dialog.rules.item(1, 3).text() == "0.25"
    assert dialog.dests.item(0, 1).text() == "desktop"
    image = dialog.grab().toImage()
    assert image.width() > 200 and len({image.pixel(x, y) for x in range(0, image.width(), 7)
                                        for y in range(0, image.height(), 7)}) > 5


def test_a_bad_threshold_is_shown_in_red_and_nothing_is_saved(dialog, engine):
    dialog.rules.item(0, 3).setText("20")  # 20 is not a fraction
    dialog.save()
    assert "fraction between 0 and 1" in dialog.status.text() and "f56c6c" in dialog.status.styleSheet()
    assert dialog.last_saved is None and dialog.isVisible()
    assert not engine.paths.settings_file.exists()


def test_send_test_reaches_the_loopback_webhook_as_edited_and_save_applies_it(qtbot, dialog, engine, web):
    row = dialog.add_destination_row({"type": "webhook", "name": "ops", "format": "generic", "url": f"{web.url}/ops"})
    dialog.dests.selectRow(row)
    results = []
    dialog.tested.connect(lambda *a: results.append(a))
    task = dialog.send_test_selected()
    run_async(qtbot, task, timeout=15)
    assert results == [("ops", True, "test notification delivered to ops")]
    assert web.requests[0][0] == "/ops" and web.requests[0][2]["title"] == "Optiondesk test notification"

    web.script = [500]
    run_async(qtbot, dialog.send_test_selected(), timeout=15)
    assert results[-1][1] is False and "HTTP 500" in dialog.status.text()

    dialog.rules.item(_row_of(dialog.rules, "kill-switch"), 6).setText("ops")
    dialog.save()
    wait_for_condition(qtbot, lambda: dialog.last_saved is not None, timeout=5)
    assert dialog.at_restart == ()  # the running notifier took the new destinations and rules
    saved = tomllib.loads(engine.paths.settings_file.read_text())["notify"]
    assert {"type": "webhook", "name": "ops", "format": "generic"}.items() <= next(
        d for d in saved["destinations"] if d["name"] == "ops").items()
    wait_for_condition(qtbot, lambda: "ops" in engine.notifier.stats, timeout=5)
    assert engine.settings.notify.destinations[-1].name == "ops"


def test_set_secret_goes_to_the_credential_store_not_the_settings(qtbot, dialog, engine):
    row = dialog.add_destination_row({"type": "webhook", "name": "tg", "format": "telegram", "chat_id": "42"})
    dialog.dests.selectRow(row)
    assert dialog.secret_entry("tg") == "notify.tg.token"
    dialog.store_secret("notify.tg.token", "999:telegram-secret")
    assert engine.credentials.get("notify.tg.token") == "999:telegram-secret"
    assert "session only" in dialog.status.text()
    dialog.save()
    wait_for_condition(qtbot, lambda: dialog.last_saved is not None, timeout=5)
    assert "999:telegram-secret" not in engine.paths.settings_file.read_text()
    assert json.dumps(dialog.last_saved.model_dump(mode="json")).count("telegram-secret") == 0


def _user_rule(name="spy-590", **kw):
    from engine.notify.config import UserAlertRule

    return UserAlertRule(name=name, **{"symbol": "ZZZ", "metric": "last", "op": "crosses", "value": 590, **kw})


def test_my_alerts_bad_rule_is_refused_with_the_reason(dialog, engine):
    row = dialog.add_user_rule_row(_user_rule())
    dialog.user_rules.cellWidget(row, 4).setCurrentText("delta")  # a symbol has no delta
    dialog.save()
    assert "a symbol has no delta" in dialog.status.text() and "f56c6c" in dialog.status.styleSheet()
    assert dialog.last_saved is None and not engine.paths.settings_file.exists()
    dialog.user_rules.cellWidget(row, 4).setCurrentText("last")
    dialog.user_rules.item(row, 6).setText("five hundred")
    dialog.save()
    assert "the value must be a number" in dialog.status.text()


def test_my_alerts_are_saved_fire_in_the_engine_and_rearm_from_the_dialog(qtbot, dialog, engine):
    from app.dialogs.alert_rules_dialog import AlertRulesDialog
    from engine.bus.events import Alert, UnderlyingUpdated

    alerts = []
    engine.bus.subscribe(Alert, lambda a: alerts.append(a) if a.source == "notify:spy-590" else None)
    dialog.add_user_rule_row(_user_rule())
    dialog.save()
    wait_for_condition(qtbot, lambda: dialog.last_saved is not None)
    saved = tomllib.loads(engine.paths.settings_file.read_text())["notify"]["user_rules"]
    assert saved[0]["name"] == "spy-590" and saved[0]["value"] == 590

    for p in (595.0, 589.0, 591.0, 588.0):
        engine.bus.publish(UnderlyingUpdated(symbol="ZZZ", price=p))  # not a simulated symbol
    wait_for_condition(qtbot, lambda: len(alerts) == 1)
    again = AlertRulesDialog(engine)
    qtbot.addWidget(again)
    again.tabs.setCurrentIndex(0)
    again.resize(1100, 420)
    again.show()
    assert again.user_rules.item(0, 10).text().startswith("fired — re-arm (1×, last 588")
    again.grab().save("/tmp/alert_rules_my_alerts.png")
    again.user_rules.selectRow(0)
    again.rearm_selected()
    wait_for_condition(qtbot, lambda: "re-armed: spy-590" in again.status.text())
    assert again.user_rules.item(0, 10).text().startswith("armed")
    engine.bus.publish(UnderlyingUpdated(symbol="ZZZ", price=592.0))
    wait_for_condition(qtbot, lambda: len(alerts) == 2)


def test_a_user_alert_at_warning_is_a_desktop_notification_and_a_row_in_the_alerts_panel(qtbot):
    from app.alerts import AlertsPanel
    from engine.bus import Alert
    from widgets.base import EventBatch

    panel = AlertsPanel(engine=None)
    qtbot.addWidget(panel)
    notified = []
    panel.notify.connect(lambda lvl, title, msg: notified.append((lvl, title)))
    panel.apply_events(EventBatch.from_events([
        Alert(level="warning", source="notify:spy-590", message="Alert spy-590: SPY last price ($) crosses 590"),
        Alert(level="warning", source="strategy:x", message="an ordinary warning"),
    ]))
    assert notified == [("warning", "Optiondesk — notify:spy-590")]
    assert any("spy-590" in m for m in panel.messages())
