"""The toolbar controls on the real engine: kill switch, paper/live, approval, risk slider; streaming."""

from __future__ import annotations

import logging
import os
import tomllib

from PySide6 import QtCore

from engine.bus.commands import SubmitOrder
from engine.model import Leg, OrderIntent, Side
from tests.qt_fixtures import run_async


def _atm_call_leg(engine) -> tuple[Leg, float]:
    import numpy as np

    chain = engine.feed.last_chain("SPY")
    rows = np.flatnonzero(chain.is_call & chain.valid_mask() & (chain.ask > 0.1))
    row = int(rows[np.argmin(np.abs(chain.strike[rows] - chain.spot))])
    return Leg(chain.option(row), Side.BUY, 1), float(chain.ask[row])


def test_kill_switch_button_halts_blocks_the_ticket_and_resets_only_after_confirmation(window, engine, qtbot):
    tb = window.trading_toolbar
    ks = tb.controls["kill_switch"]
    assert ks.state == "ACTIVE" and ks.button.text() == "■ HALT TRADING\nnow: trading normally"
    assert "ACTIVE" not in ks.button.text()  # "KILL SWITCH ACTIVE" read as tripped while trading was normal
    qtbot.mouseClick(ks.button, QtCore.Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: ks.state == "HALTED", timeout=5000)
    assert str(engine.kill_switch.state) == "HALTED"
    assert ks.button.text().startswith("TRADING HALTED") and "toolbar kill switch" in ks.reason_label.text()
    qtbot.waitUntil(lambda: window.status_state.text() == "trading HALTED", timeout=3000)

    # the ticket refuses at once, and the engine denies an order that gets there anyway
    ticket = window.panels["ticket"]
    qtbot.waitUntil(lambda: ticket.trading_state == "HALTED", timeout=3000)
    leg, ask = _atm_call_leg(engine)
    ticket.add_leg(leg)
    ticket.submit()
    assert "halted" in ticket.message.text().lower()
    intent = OrderIntent(legs=(leg,), quantity=1, limit_price=round(__import__("decimal").Decimal(str(ask)), 2))
    order = run_async(qtbot, engine.bus.send(SubmitOrder(intent=intent)))
    assert order.status.value == "denied"

    # the shortcut never resets; the confirmation's "Keep HALTED" keeps it halted
    tb.kill_switch_action.trigger()
    qtbot.mouseClick(ks.button, QtCore.Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: ks.confirm_dialog is not None and ks.confirm_dialog.isVisible(), timeout=3000)
    dlg = ks.confirm_dialog
    assert "toolbar kill switch" in dlg.informativeText()
    next(b for b in dlg.buttons() if b.text() == "Keep HALTED").click()
    flushes = window.bridge.flushes  # a reset sent now would have been handled by the second flush after
    qtbot.waitUntil(lambda: window.bridge.flushes >= flushes + 2, timeout=5000)
    assert str(engine.kill_switch.state) == "HALTED" and ks.state == "HALTED"
    qtbot.mouseClick(ks.button, QtCore.Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: ks.confirm_dialog is not None and ks.confirm_dialog.isVisible(), timeout=3000)
    next(b for b in ks.confirm_dialog.buttons() if b.text() == "Reset to ACTIVE").click()
    qtbot.waitUntil(lambda: ks.state == "ACTIVE", timeout=5000)
    assert str(engine.kill_switch.state) == "ACTIVE"
    assert not ks.reason_label.isVisibleTo(window)
    messages = " | ".join(window.alerts.messages())
    assert "KILL SWITCH TRIPPED" in messages and "Kill switch reset by user" in messages


def test_ctrl_shift_k_trips_the_kill_switch_from_anywhere_in_the_window(window, engine, qtbot):
    window.activateWindow()
    qtbot.keyClick(window.panels["chain"], QtCore.Qt.Key.Key_K,
                   QtCore.Qt.KeyboardModifier.ControlModifier | QtCore.Qt.KeyboardModifier.ShiftModifier)
    qtbot.waitUntil(lambda: str(engine.kill_switch.state) == "HALTED", timeout=5000)
    assert "Ctrl+Shift+K" in engine.kill_switch.status.reason


def test_an_automatic_trip_shows_its_reason_and_who_tripped(window, engine, qtbot):
    ks = window.trading_toolbar.controls["kill_switch"]
    run_async(qtbot, engine.kill_switch.trip("daily loss limit hit: −$5,210 ≤ −$5,000", by="risk"))
    qtbot.waitUntil(lambda: ks.state == "HALTED", timeout=5000)
    assert ks.reason == "daily loss limit hit: −$5,210 ≤ −$5,000 (by risk)"
    assert "daily loss limit" in ks.button.toolTip()
    qtbot.waitUntil(lambda: any(level == "critical" for level, _t, _m in window.notifications), timeout=3000)


def test_live_toggle_is_refused_without_credentials_and_stays_in_paper(window, engine, qtbot):
    from engine.credentials import CredentialStore
    from tests.app.test_dialogs import InMemoryKeyring

    engine.credentials = CredentialStore(backend=InMemoryKeyring(), env={})
    mode = window.trading_toolbar.controls["mode"]
    qtbot.mouseClick(mode.button, QtCore.Qt.MouseButton.LeftButton)
    assert mode.confirm_dialog is None
    assert "no broker credentials stored" in mode.last_refusal
    assert "no broker credentials stored" in mode.note.text()
    assert mode.mode == "paper" and engine.oms.router.mode == "paper"
    assert window.windowTitle() == "Optiondesk — PAPER" and not window.banner_bar.isVisible()


def test_live_toggle_with_credentials_but_no_connected_broker_says_so(window, engine, qtbot):
    from engine.credentials import CredentialStore
    from tests.app.test_dialogs import InMemoryKeyring

    store = CredentialStore(backend=InMemoryKeyring(), env={})
    store.set_tastytrade("secret-abc", "token-def")
    engine.credentials = store
    mode = window.trading_toolbar.controls["mode"]
    mode.toggle()
    assert mode.confirm_dialog is None
    assert "no live broker is connected" in mode.last_refusal


def test_risk_slider_sets_the_engine_level_and_shows_the_resulting_limits(window, engine, qtbot):
    slider = window.trading_toolbar.controls["risk"]
    before = slider.readout.text()
    assert "Max loss/trade $2,000" in before  # moderate: 2 % of $100,000
    slider.set_level(0)
    qtbot.waitUntil(lambda: engine.risk.profile.level == 0.0, timeout=3000)
    qtbot.waitUntil(lambda: "Max loss/trade $1,000" in slider.readout.text(), timeout=3000)
    assert "Daily loss $2,000" in slider.readout.text() and "Pos ≤ 3" in slider.readout.text()
    assert slider.value_label.text() == "0"


def test_manual_approval_toggle_switches_the_engine_gate(window, engine, qtbot):
    approval = window.trading_toolbar.controls["approval"]
    assert approval.box.isChecked() == engine.oms.gate.required("paper")
    approval.box.setChecked(True)
    qtbot.waitUntil(lambda: engine.oms.gate.required("paper"), timeout=3000)
    approval.box.setChecked(False)
    qtbot.waitUntil(lambda: not engine.oms.gate.required("paper"), timeout=3000)
    qtbot.waitUntil(lambda: "Manual approval OFF" in " | ".join(window.alerts.messages()), timeout=15_000)


def test_streaming_run_has_no_exception_in_the_log(window, engine, qtbot, caplog):
    """Real simulated-market streaming into the full window until the views have refreshed many times
    (OPTIONDESK_STREAM_TEST_FLUSHES, default 100). How fast they refresh is measured by benchmarks/gui.py,
    not asserted here: a loaded CI box runs at a few Hz."""
    flushes_wanted = int(os.environ.get("OPTIONDESK_STREAM_TEST_FLUSHES", "100"))
    caplog.set_level(logging.WARNING)
    counted = {"quotes": 0}
    market_data = ("QuoteUpdated", "QuotesUpdated", "ChainUpdated", "UnderlyingUpdated")

    def count(batch):
        counted["quotes"] += sum(1 for e in batch.all_events() if type(e).__name__ in market_data)

    window.bridge.add_consumer(count, "test")
    flushes0 = window.bridge.flushes
    qtbot.waitUntil(lambda: window.bridge.flushes - flushes0 >= flushes_wanted, timeout=flushes_wanted * 1000)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors[:5]]
    assert window.bridge.failures == 0
    assert counted["quotes"] >= flushes_wanted // 2  # market data kept coming, not only clock ticks
    assert window.panels["chain"].model.rowCount() > 0
    assert "error" not in [e.level for e in window.alerts.all_entries]


def test_risk_level_has_one_source_of_truth_slider_and_settings_dialog_agree(window, engine, qtbot):
    slider = window.trading_toolbar.controls["risk"]
    slider.set_level(0)
    qtbot.waitUntil(lambda: engine.risk.profile.level == 0.0, timeout=3000)
    assert engine.settings.risk.level == 0.0  # the settings follow the slider: one value for every reader
    dlg = window.open_settings_dialog()
    qtbot.addWidget(dlg)
    editor = dlg.editors["risk.level"]
    assert float(editor.raw_value()) == 0.0  # the level the engine runs at, not the file's 50
    editor.set_value(75)
    dlg.save_button.click()
    qtbot.waitUntil(lambda: dlg.result is not None, timeout=5000)
    assert dlg.result.applied == ("risk.level",) and dlg.result.at_restart == ()
    assert not dlg.isVisible()  # everything applied: nothing left to say
    qtbot.waitUntil(lambda: slider.slider.value() == 75, timeout=3000)  # the slider follows the dialog
    assert engine.risk.profile.level == 75.0 and engine.settings.risk.level == 75.0
    saved = tomllib.loads(engine.paths.settings_file.read_text())
    assert saved["risk"]["level"] == 75.0


def test_the_open_settings_dialog_follows_the_slider(window, engine, qtbot):
    dlg = window.open_settings_dialog()
    qtbot.addWidget(dlg)
    editor = dlg.editors["risk.level"]
    assert float(editor.raw_value()) == engine.risk.profile.level
    window.trading_toolbar.controls["risk"].set_level(20)
    qtbot.waitUntil(lambda: float(editor.raw_value()) == 20.0, timeout=5000)
    assert engine.risk.profile.level == 20.0 and engine.settings.risk.level == 20.0


def test_settings_dialog_applies_approval_now_and_names_what_waits_for_a_restart(window, engine, qtbot):
    assert not engine.oms.gate.required("paper")
    approval = window.trading_toolbar.controls["approval"]
    dlg = window.open_settings_dialog()
    qtbot.addWidget(dlg)
    dlg.editors["oms.approval_in_paper"].set_value(True)
    dlg.editors["general.ui_refresh_hz"].set_value(5.0)  # the bridge's timer is built at start
    dlg.save_button.click()
    qtbot.waitUntil(lambda: dlg.result is not None, timeout=5000)
    assert dlg.result.applied == ("oms.approval_in_paper",)
    assert dlg.result.at_restart == ("general.ui_refresh_hz",)
    assert dlg.isVisible() and dlg.outcome.isVisible()
    assert "next start: general.ui_refresh_hz" in dlg.outcome.text()
    assert engine.oms.gate.required("paper") and engine.settings.oms.approval_in_paper
    assert engine.settings.general.ui_refresh_hz == 5.0  # saved and swapped, only not live
    qtbot.waitUntil(lambda: approval.box.isChecked(), timeout=5000)  # the toolbar toggle agrees
