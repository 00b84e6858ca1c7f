"""The first-run wizard: what it writes to the settings file, skipping, a failed write, and the layout and
broker choices applied to a real window (pinned simulated start: tests/sim_start.py via the fixtures)."""

from __future__ import annotations

import os
from pathlib import Path

from PySide6 import QtCore, QtWidgets

from app.dialogs.first_run import FirstRunWizard, needs_first_run, run_first_run
from engine.settings import load_settings


def _wizard(qtbot, settings_file: Path) -> FirstRunWizard:
    wiz = FirstRunWizard(settings_file)
    qtbot.addWidget(wiz)
    wiz.show()
    qtbot.waitExposed(wiz)
    return wiz


def test_defaults_are_paper_moderate_and_start_writes_them(qtbot, tmp_path):
    path = tmp_path / "config" / "settings.toml"
    assert needs_first_run(path)
    wiz = _wizard(qtbot, path)
    choice = wiz.current_choice()
    assert (choice.connect_broker, choice.risk_level, choice.theme, choice.layout) == (False, 50.0, "dark", "full")

    with qtbot.waitSignal(wiz.finished_choice, timeout=5000):
        qtbot.mouseClick(wiz.start_button, QtCore.Qt.MouseButton.LeftButton)
    assert wiz.result() == QtWidgets.QDialog.DialogCode.Accepted
    loaded = load_settings(path)
    assert loaded.existed and loaded.ok
    assert loaded.settings.risk.level == 50.0 and loaded.settings.general.theme == "dark"
    assert not needs_first_run(path)  # shown once


def test_choices_reach_the_settings_file(qtbot, tmp_path):
    path = tmp_path / "settings.toml"
    wiz = _wizard(qtbot, path)
    wiz.broker_radio.setChecked(True)
    wiz.risk_buttons["High"].setChecked(True)
    wiz.theme_combo.setCurrentIndex(wiz.theme_combo.findData("light"))
    wiz.layout_combo.setCurrentIndex(wiz.layout_combo.findData("essentials"))
    wiz.start()
    assert wiz.choice is not None and wiz.choice.connect_broker and wiz.choice.layout == "essentials"
    s = load_settings(path).settings
    assert s.risk.level == 75.0 and s.general.theme == "light"
    assert s.general.start_mode == "paper"  # a broker choice never starts the app in live mode


def test_skip_and_escape_write_the_defaults_so_the_wizard_does_not_return(qtbot, tmp_path):
    for name, act in (("skip", lambda w: w.skip_button.click()),
                      ("escape", lambda w: qtbot.keyClick(w, QtCore.Qt.Key.Key_Escape))):
        path = tmp_path / name / "settings.toml"
        wiz = _wizard(qtbot, path)
        wiz.risk_buttons["Low"].setChecked(True)  # ignored: skipping keeps the defaults
        act(wiz)
        assert wiz.choice is not None and wiz.choice.skipped, name
        assert wiz.result() == QtWidgets.QDialog.DialogCode.Rejected
        assert load_settings(path).settings.risk.level == 50.0
        assert not needs_first_run(path)


def test_a_failed_write_is_shown_and_keeps_the_dialog_open(qtbot, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the config folder should be")
    path = blocker / "settings.toml"
    wiz = _wizard(qtbot, path)
    wiz.start()
    assert wiz.choice is None and wiz.isVisible()
    assert wiz.error_label.isVisible() and "Could not write" in wiz.error_label.text()
    assert not path.exists()


def test_an_existing_settings_file_means_no_wizard(qtbot, tmp_path):
    path = tmp_path / "settings.toml"
    path.write_text("[general]\ntheme = \"light\"\n")
    assert run_first_run(path) is None  # returns without showing anything (no exec(), no hang)
    assert path.read_text() == "[general]\ntheme = \"light\"\n"


def test_essentials_layout_and_broker_choice_on_the_window(qtbot, window, tmp_path):
    from app.dialogs.credentials_dialog import CredentialsDialog

    wiz = _wizard(qtbot, tmp_path / "settings.toml")
    wiz.broker_radio.setChecked(True)
    wiz.layout_combo.setCurrentIndex(wiz.layout_combo.findData("essentials"))
    wiz.start()
    window.build_all_panels()
    wiz.choice.apply_to_window(window)
    qtbot.waitUntil(lambda: bool(window.findChildren(CredentialsDialog)), timeout=5000)
    open_docks = {pid for pid, d in window.docks.items() if d.isVisible()}
    assert "chain" in open_docks and "ticket" in open_docks
    assert open_docks <= {"chain", "ticket", "positions", "orders", "approvals", "alerts"}
    assert not window.docks["surface"].isVisible()
    for dlg in window.findChildren(CredentialsDialog):
        dlg.close()
    if os.environ.get("OPTIONDESK_SHOT_DIR"):  # a look at the wizard: OPTIONDESK_SHOT_DIR=/tmp/x pytest ...
        wiz2 = _wizard(qtbot, tmp_path / "other.toml")
        wiz2.grab().save(str(Path(os.environ["OPTIONDESK_SHOT_DIR"]) / "first_run.png"))


def test_a_smoke_run_of_a_fresh_install_never_shows_the_wizard(tmp_path):
    """``--seconds`` runs are unattended: a modal wizard would block them until the timeout kills them."""
    import subprocess
    import sys

    home = tmp_path / "home"
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    proc = subprocess.run([sys.executable, "-m", "app", "--home", str(home), "--seconds", "1"],
                          env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not (home / "config" / "settings.toml").exists()  # still a fresh install for the real first start
