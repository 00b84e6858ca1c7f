"""Issue 14 in the window: "Kill and flatten" with its own confirmation (finding 5), and a second window on the
same data folder says which process holds it (finding 6)."""

from __future__ import annotations

import os

import pytest
from PySide6 import QtWidgets

from engine.instance_lock import InstanceLock, InstanceLocked
from engine.risk.kill_switch import read_record


def test_kill_and_flatten_is_offered_and_asks_first(window, engine, qtbot):
    tb = window.trading_toolbar
    ks = tb.controls["kill_switch"]
    menu_texts = [a.text() for m in window.menuBar().findChildren(QtWidgets.QMenu) for a in m.actions()]
    assert "Kill and flatten…" in menu_texts and tb.kill_flatten_action in ks.button.actions()
    # cancelling the confirmation does nothing
    qtbot.mouseClick(ks.flatten_button, __import__("PySide6").QtCore.Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: ks.flatten_dialog is not None and ks.flatten_dialog.isVisible(), timeout=3000)
    next(b for b in ks.flatten_dialog.buttons() if b.text() == "Cancel").click()
    flushes = window.bridge.flushes  # a trip sent now would have been handled by the second flush after
    qtbot.waitUntil(lambda: window.bridge.flushes >= flushes + 2, timeout=5000)
    assert str(engine.kill_switch.state) == "ACTIVE" and ks.state == "ACTIVE"
    # confirming halts with the flatten intent (stored, then carried out and cleared)
    tb.kill_flatten_action.trigger()
    qtbot.waitUntil(lambda: ks.flatten_dialog is not None and ks.flatten_dialog.isVisible(), timeout=3000)
    assert "close every position" in ks.flatten_dialog.text()
    next(b for b in ks.flatten_dialog.buttons() if b.text() == "Kill and flatten").click()
    qtbot.waitUntil(lambda: ks.state == "HALTED", timeout=5000)
    assert engine.kill_switch.status.reason == "manual: kill and flatten"
    qtbot.waitUntil(lambda: not read_record(engine.store).flatten, timeout=5000)
    audit = engine.store.audit.list("trading_state:HALTED")
    assert any(a["detail"].get("flatten") for a in audit)


def test_second_window_when_data_folder_is_locked_then_says_which_process(tmp_path, qtbot):
    from app.runtime import instance_locked_box, refuse_second_instance

    lock = InstanceLock(tmp_path)
    lock.acquire()
    try:
        with pytest.raises(InstanceLocked) as info:
            refuse_second_instance(tmp_path, show=False)
        box = instance_locked_box(info.value)
        qtbot.addWidget(box)
        assert f"process {os.getpid()}" in box.text() and "optiondesk kill" in box.informativeText()
    finally:
        lock.release()
    refuse_second_instance(tmp_path, show=False)  # free: no error
