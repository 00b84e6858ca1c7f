"""The credentials dialog connects a broker (a loopback tastytrade server), the chain switches to its
quotes while trading stays PAPER, and disconnecting returns to the simulated market."""

from __future__ import annotations

from engine.credentials import CredentialStore
from tests.brokers.fakes.tastytrade_server import ACCOUNT, PROVIDER_SECRET, REFRESH_TOKEN, FakeTastytrade
from tests.qt_fixtures import run_async


def test_connect_from_the_dialog_then_paper_on_broker_quotes_and_disconnect_restores_simulated(qtbot, engine):
    from app.dialogs.credentials_dialog import CredentialsDialog

    fake = FakeTastytrade()
    run_async(qtbot, fake.start(), timeout=20)
    try:
        brokers = engine.settings.brokers
        tt = brokers.tastytrade.model_copy(update={"api_url": fake.api_url, "streamer_url": fake.streamer_url,
                                                   "call_timeout_s": 5})
        engine.settings = engine.settings.model_copy(update={"brokers": brokers.model_copy(update={"tastytrade": tt})})
        store = CredentialStore(backend=None, env={"OPTIONDESK_TT_PROVIDER_SECRET": PROVIDER_SECRET,
                                                   "OPTIONDESK_TT_REFRESH_TOKEN": REFRESH_TOKEN})
        dlg = CredentialsDialog(engine, store=store, checks={})
        qtbot.addWidget(dlg)
        dlg.open()
        assert dlg.tt_connect.text() == "Connect"
        with qtbot.waitSignal(dlg.connection_changed, timeout=60_000) as sig:
            dlg.tt_connect.click()
        broker, connected, message = sig.args
        assert (broker, connected) == ("tastytrade", True), message
        assert ACCOUNT not in message and ACCOUNT[-4:] in message  # account masked
        assert engine.feed.name == "tastytrade" and engine.router.mode == "paper"
        assert dlg.tt_connect.text() == "Disconnect"
        with qtbot.waitSignal(dlg.connection_changed, timeout=60_000) as sig:
            dlg.tt_connect.click()
        assert sig.args[:2] == ["tastytrade", False]
        assert engine.feed is engine.simulated_feed and dlg.tt_connect.text() == "Connect"
    finally:
        run_async(qtbot, fake.stop(), timeout=20)
    orders_sent = [r for r in fake.requests if r[0] in ("POST", "PUT", "DELETE") and "/orders" in r[1]]
    assert orders_sent == []  # connecting never places anything


def test_connect_when_no_credentials_then_the_dialog_says_why_and_stays_on_the_simulated_market(qtbot, engine):
    from app.dialogs.credentials_dialog import CredentialsDialog

    dlg = CredentialsDialog(engine, store=CredentialStore(backend=None, env={}), checks={})
    qtbot.addWidget(dlg)
    with qtbot.waitSignal(dlg.connection_changed, timeout=60_000) as sig:
        dlg.tt_connect.click()
    assert sig.args[1] is False
    assert "FAILED" in dlg.result_label.text() and "credential" in dlg.result_label.text().lower()
    assert engine.feed is engine.simulated_feed


def test_window_when_connected_to_tastytrade_then_chain_shows_the_brokers_contracts(qtbot, window, engine):
    from pathlib import Path

    from app.selftest import image_is_blank

    fake = FakeTastytrade()
    run_async(qtbot, fake.start(), timeout=20)
    try:
        brokers = engine.settings.brokers
        tt = brokers.tastytrade.model_copy(update={"api_url": fake.api_url, "streamer_url": fake.streamer_url,
                                                   "call_timeout_s": 5})
        store = CredentialStore(backend=None, env={"OPTIONDESK_TT_PROVIDER_SECRET": PROVIDER_SECRET,
                                                   "OPTIONDESK_TT_REFRESH_TOKEN": REFRESH_TOKEN})
        run_async(qtbot, engine.connect_broker("tastytrade", credentials=store,
                                               config=brokers.model_copy(update={"tastytrade": tt})), timeout=60)
        chain_panel = window.panels["chain"]
        expected = {f"SPY{e:%y%m%d}" for e in fake.expirations}

        def shows_broker_chain() -> bool:
            ch = chain_panel.chain
            return ch is not None and ch.root == "SPY" and str(ch.symbol[0])[:9] in expected \
                and bool(ch.valid_mask().any())

        qtbot.waitUntil(shows_broker_chain, timeout=30_000)
        flushes = window.bridge.flushes  # a few bridge flushes so every panel repaints on broker data
        qtbot.waitUntil(lambda: window.bridge.flushes >= flushes + 3, timeout=10_000)
        summary = window.trading_toolbar.controls["account"]
        assert summary.account is not None and summary.account.broker == "paper"  # PAPER: not the broker's balance
        out = Path("build/broker-shots")
        out.mkdir(parents=True, exist_ok=True)
        shot = window.grab()
        assert not image_is_blank(shot.toImage())
        assert shot.save(str(out / "window-tastytrade-loopback.png"))
    finally:
        run_async(qtbot, engine.disconnect_broker("tastytrade"), timeout=30)
        run_async(qtbot, fake.stop(), timeout=20)
