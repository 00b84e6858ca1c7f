"""Settings (validated, errors next to the field), credentials (keyring or session-only), live refusal."""

from __future__ import annotations

import tomllib

import keyring.backend
import pytest
from PySide6 import QtWidgets

from engine.credentials import TT_PROVIDER_SECRET, TT_REFRESH_TOKEN, CredentialStore


class InMemoryKeyring(keyring.backend.KeyringBackend):
    """A real keyring backend (the keyring API) that keeps passwords in a dict."""

    priority = 1

    def __init__(self) -> None:
        super().__init__()
        self.passwords: dict[tuple[str, str], str] = {}

    def get_password(self, service, username):
        return self.passwords.get((service, username))

    def set_password(self, service, username, password):
        self.passwords[(service, username)] = password

    def delete_password(self, service, username):
        self.passwords.pop((service, username), None)


def _no_env() -> dict[str, str]:
    return {}


# ---- settings ---------------------------------------------------------------------------------------
def test_settings_dialog_shows_the_error_next_to_the_bad_field_and_writes_nothing(qtbot, engine):
    from app.dialogs.settings_dialog import SettingsDialog

    dlg = SettingsDialog(engine)
    qtbot.addWidget(dlg)
    dlg.open()
    hz = dlg.editors["general.ui_refresh_hz"]
    hz.editor.setText("500")  # le=60
    seed = dlg.editors["general.seed"]
    seed.editor.setText("seven")
    dlg.save_button.click()
    assert dlg.isVisible()
    assert hz.error.isVisibleTo(dlg) and "60" in hz.error.text()
    assert seed.error.isVisibleTo(dlg) and "integer" in seed.error.text()
    assert not engine.paths.settings_file.exists()
    assert "2 setting(s) need attention" in dlg.summary.text()


def test_settings_dialog_saves_a_valid_form_to_the_toml_file(qtbot, engine):
    from app.dialogs.settings_dialog import SettingsDialog

    dlg = SettingsDialog(engine)
    qtbot.addWidget(dlg)
    saved = []
    dlg.saved.connect(saved.append)
    dlg.open()
    dlg.editors["general.ui_refresh_hz"].editor.setText("12.5")
    dlg.editors["general.theme"].editor.setCurrentText("light")
    dlg.save_button.click()
    qtbot.waitUntil(lambda: bool(saved), timeout=5000)
    data = tomllib.loads(engine.paths.settings_file.read_text())
    assert data["general"]["ui_refresh_hz"] == 12.5
    assert data["general"]["theme"] == "light"
    assert saved == [str(engine.paths.settings_file)]
    assert engine.settings.general.ui_refresh_hz == 12.5
    # neither is applied to the running window: the dialog stays open and says so
    assert dlg.result.at_restart == ("general.theme", "general.ui_refresh_hz")
    assert dlg.isVisible() and "Takes effect at the next start" in dlg.outcome.text()


# ---- credentials ------------------------------------------------------------------------------------
def test_credentials_dialog_stores_secrets_in_the_keyring_and_never_shows_them(qtbot, engine):
    from app.dialogs.credentials_dialog import CredentialsDialog

    backend = InMemoryKeyring()
    store = CredentialStore(backend=backend, env=_no_env())
    dlg = CredentialsDialog(engine, store=store, checks={})
    qtbot.addWidget(dlg)
    dlg.open()
    assert "stored in the OS keyring" in dlg.keyring_label.text()
    qtbot.waitUntil(lambda: dlg.tt_state.text() == "no", timeout=3000)
    dlg.tt_secret.setText("provider-secret-123")
    dlg.tt_token.setText("refresh-token-456")
    with qtbot.waitSignal(dlg.stored, timeout=3000) as sig:
        dlg.tt_save.click()
    assert sig.args == ["keyring"]
    assert backend.passwords[("optiondesk", TT_PROVIDER_SECRET)] == "provider-secret-123"
    assert backend.passwords[("optiondesk", TT_REFRESH_TOKEN)] == "refresh-token-456"
    assert dlg.tt_secret.text() == "" and dlg.tt_token.text() == ""
    qtbot.waitUntil(lambda: dlg.tt_state.text() == "yes — keyring", timeout=3000)
    assert "provider-secret-123" not in dlg.result_label.text()
    assert store.has_tastytrade()


def test_credentials_dialog_grows_with_a_status_message_instead_of_squashing_fields(qtbot, engine):
    from app.dialogs.credentials_dialog import CredentialsDialog

    store = CredentialStore(backend=InMemoryKeyring(), env=_no_env())
    dlg = CredentialsDialog(engine, store=store, checks={})
    qtbot.addWidget(dlg)
    dlg.open()
    qtbot.waitExposed(dlg)
    port_h, client_h, dlg_h = dlg.ib_port.height(), dlg.ib_client.height(), dlg.height()
    assert port_h >= dlg.ib_port.sizeHint().height()
    message = "tastytrade: the session could not be refreshed — " * 6
    dlg.result_label.setText(message)
    dlg.ib_error.setText("port: Input should be less than or equal to 65535; client id: not a number " * 2)
    qtbot.waitUntil(lambda: dlg.height() > dlg_h, timeout=3000)
    qtbot.waitUntil(lambda: dlg.ib_port.height() == port_h, timeout=3000)  # 23 px, not squashed to 14
    assert dlg.ib_client.height() == client_h


def test_credentials_dialog_without_a_keyring_says_session_only(qtbot, engine):
    from keyring.backends import fail

    from app.dialogs.credentials_dialog import CredentialsDialog

    store = CredentialStore(backend=fail.Keyring(), env=_no_env())
    dlg = CredentialsDialog(engine, store=store, checks={})
    qtbot.addWidget(dlg)
    dlg.open()
    assert "No usable keyring backend" in dlg.keyring_label.text()
    assert "session only" in dlg.keyring_label.text()
    dlg.tt_secret.setText("s3cret-value")
    dlg.tt_token.setText("t0ken-value")
    with qtbot.waitSignal(dlg.stored, timeout=3000) as sig:
        dlg.tt_save.click()
    assert sig.args == ["memory"]
    assert "this session only" in dlg.result_label.text()
    assert store.source(TT_PROVIDER_SECRET) == "memory"


def test_credentials_dialog_refuses_half_filled_secrets(qtbot, engine):
    from app.dialogs.credentials_dialog import CredentialsDialog

    store = CredentialStore(backend=InMemoryKeyring(), env=_no_env())
    dlg = CredentialsDialog(engine, store=store, checks={})
    qtbot.addWidget(dlg)
    dlg.tt_secret.setText("only-the-secret")
    dlg.tt_save.click()
    assert dlg.tt_error.text() == "enter the refresh token"
    assert not store.has_tastytrade()


def test_ibkr_presets_set_the_port_and_flag_paper_ports(qtbot, engine):
    from app.dialogs.credentials_dialog import CredentialsDialog

    dlg = CredentialsDialog(engine, store=CredentialStore(backend=InMemoryKeyring(), env=_no_env()), checks={})
    qtbot.addWidget(dlg)
    dlg.ib_preset.setCurrentIndex(dlg.ib_preset.findText("IB Gateway — paper (4002)"))
    assert dlg.ib_port.value() == 4002
    assert "paper port" in dlg.ib_note.text()
    dlg.ib_preset.setCurrentIndex(dlg.ib_preset.findText("TWS — live (7496)"))
    assert dlg.ib_port.value() == 7496 and "REAL-MONEY" in dlg.ib_note.text()
    dlg.ib_port.setValue(7497)
    assert dlg.ib_preset.currentText() == "TWS — paper (7497)"


def test_test_connection_button_appears_only_with_a_check_and_reports_its_result(qtbot, engine):
    from app.dialogs.credentials_dialog import CredentialsDialog

    calls = []

    async def check_ibkr(engine, host, port, client_id, credentials=None):
        calls.append((host, port, client_id))
        return False

    store = CredentialStore(backend=InMemoryKeyring(), env=_no_env())
    without = CredentialsDialog(engine, store=store, checks={})
    qtbot.addWidget(without)
    assert without.ib_test is None and without.tt_test is None
    dlg = CredentialsDialog(engine, store=store, checks={"ibkr": check_ibkr})
    qtbot.addWidget(dlg)
    assert dlg.tt_test is None and dlg.ib_test is not None
    with qtbot.waitSignal(dlg.check_finished, timeout=3000) as sig:
        dlg.ib_test.click()
    assert sig.args[:2] == ["ibkr", False]
    assert calls == [("127.0.0.1", 7497, 17)]
    assert "FAILED" in dlg.result_label.text()


# ---- live mode --------------------------------------------------------------------------------------
def test_live_switch_is_refused_without_credentials(engine):
    from app.live_mode import live_switch_check

    engine.credentials = CredentialStore(backend=InMemoryKeyring(), env=_no_env())
    check = live_switch_check(engine)
    assert not check.ok
    assert "no broker credentials stored" in check.reason


def test_live_confirm_dialog_names_broker_and_account_and_needs_the_acknowledgement(qtbot):
    from app.dialogs.live_confirm import LiveConfirmDialog

    dlg = LiveConfirmDialog("tastytrade", "5WT12345", "tastytrade account 5WT12345", "live")
    qtbot.addWidget(dlg)
    dlg.open()
    text = dlg.findChild(QtWidgets.QLabel, "liveConfirmText").text()
    assert "tastytrade" in text and "5WT12345" in text and "REAL-MONEY" in text
    assert not dlg.confirm.isEnabled()
    dlg.ack.setChecked(True)
    assert dlg.confirm.isEnabled()
    with qtbot.waitSignal(dlg.finished, timeout=1000) as sig:
        dlg.confirm.click()
    assert sig.args == [QtWidgets.QDialog.DialogCode.Accepted.value] or sig.args == [1]


@pytest.mark.parametrize("theme", ["dark", "light"])
def test_theme_files_exist_and_style_the_kill_switch(theme):
    from app.themes import style_sheet

    css = style_sheet(theme)
    assert "killSwitchButton" in css and 'tradingState="HALTED"' in css and 'mode="live"' in css


@pytest.mark.parametrize("theme", ["dark", "light"])
def test_a_checked_box_shows_a_tick_not_a_plain_square(qtbot, theme):
    import re

    from PySide6 import QtGui

    from app.themes import style_sheet

    def white_pixels(css: str) -> int:
        box = QtWidgets.QCheckBox("Manual approval")
        qtbot.addWidget(box)
        box.setStyleSheet(css)
        box.setChecked(True)
        box.resize(160, 24)
        img = box.grab().toImage().convertToFormat(QtGui.QImage.Format.Format_RGB32)
        colours = [QtGui.QColor(img.pixel(x, y)) for x in range(0, 18) for y in range(img.height())]
        return sum(1 for c in colours if c.lightness() > 225 and c.saturation() < 40)

    css = style_sheet(theme)
    assert "@ICONS@" not in css
    untick = re.sub(r"(QCheckBox::indicator:checked \{[^}]*image: )url\([^)]*\)", r"\1none", css)
    assert untick != css
    # the tick is white on the blue indicator: it adds white pixels a plain blue square lacks
    assert white_pixels(css) >= white_pixels(untick) + 6


def test_the_shipped_default_settings_file_validates_without_errors():
    from pathlib import Path

    from engine.settings import validate

    path = Path(__file__).resolve().parents[2] / "resources" / "default-settings.toml"
    settings, errors = validate(tomllib.loads(path.read_text()))
    assert errors == []
    assert settings.general.start_mode == "paper"
