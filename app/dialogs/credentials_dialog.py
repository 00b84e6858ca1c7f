"""Credentials dialog: tastytrade OAuth secrets (keyring) and the IBKR socket endpoint (settings).

- Secrets go only through :class:`engine.credentials.CredentialStore` — the OS keyring under service
  ``optiondesk``. Without a usable keyring backend the dialog says so: secrets are kept for this
  session only and forgotten on exit. Stored secrets are never shown back, only whether they exist
  and where they come from.
- IBKR host / port / client id are not secrets: they are the ``[brokers.ibkr]`` settings, with the
  TWS / IB Gateway paper and live port presets.
- Keyring calls may block (D-Bus), so they run in a worker thread; the dialog never blocks the loop
  and is opened with ``open()``, never ``exec()``.
- "Test connection" runs the broker adapters' connection check (``engine.brokers.check``: connect,
  accounts, balances, positions, chain, quotes, a dry-run preview — never an order).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from PySide6 import QtCore, QtWidgets

from widgets import engine_queries as eq
from widgets.base import qt_alive, send_command

if TYPE_CHECKING:
    from engine.brokers.config import BrokersConfig
    from engine.core import Engine

log = logging.getLogger(__name__)

IBKR_PRESETS: tuple[tuple[str, str, int], ...] = (
    ("tws-paper", "TWS — paper (7497)", 7497),
    ("tws-live", "TWS — live (7496)", 7496),
    ("gateway-paper", "IB Gateway — paper (4002)", 4002),
    ("gateway-live", "IB Gateway — live (4001)", 4001),
)

CheckFn = Callable[..., Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class CheckOutcome:
    ok: bool
    message: str


def _report_outcome(report: Any) -> CheckOutcome:
    if report.ok:
        return CheckOutcome(True, f"{report.endpoint}: every step passed ({', '.join(s.name for s in report.steps)})")
    failed = next((s for s in report.steps if not s.ok), None)
    why = f"{failed.name} failed: {failed.detail}" if failed else "incomplete"
    return CheckOutcome(False, f"{report.endpoint}: {why}")


def _brokers_config(engine: Engine | None) -> BrokersConfig:
    return eq.settings(engine).brokers


def discover_checks() -> dict[str, CheckFn]:
    """The broker connection checks (``engine.brokers.check.check_broker``) as dialog callables."""
    try:
        from engine.brokers.check import check_broker
    except ImportError:
        return {}

    async def check_tastytrade(engine: Engine | None, sandbox: bool, credentials: Any = None) -> CheckOutcome:
        cfg = _brokers_config(engine)
        cfg = cfg.model_copy(update={"tastytrade": cfg.tastytrade.model_copy(update={"sandbox": sandbox})})
        return _report_outcome(await check_broker("tastytrade", cfg, credentials=credentials))

    async def check_ibkr(engine: Engine | None, host: str, port: int, client_id: int, credentials: Any = None) -> CheckOutcome:
        cfg = _brokers_config(engine)
        ib = cfg.ibkr.model_copy(update={"host": host, "port": port, "client_id": client_id})
        cfg = cfg.model_copy(update={"ibkr": ib})
        return _report_outcome(await check_broker("ibkr", cfg, credentials=credentials))

    return {"tastytrade": check_tastytrade, "ibkr": check_ibkr}


_POOL: ThreadPoolExecutor | None = None


def _keyring_pool() -> ThreadPoolExecutor:
    # A plain Python pool: qasync's default executor uses QThreads, which Qt aborts on at exit.
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="optiondesk-keyring")
    return _POOL


def _run_blocking(fn: Callable[[], Any], done: Callable[[Any, BaseException | None], None]) -> None:
    """Run ``fn`` in a worker thread; ``done(result, error)`` back on the loop (GUI thread)."""
    loop = asyncio.get_event_loop()
    fut = loop.run_in_executor(_keyring_pool(), fn)

    def finish(f: asyncio.Future[Any]) -> None:
        if f.cancelled():
            done(None, asyncio.CancelledError())
            return
        exc = f.exception()
        done(None if exc else f.result(), exc)

    fut.add_done_callback(finish)


class CredentialsDialog(QtWidgets.QDialog):
    """``stored(where)`` fires after secrets were stored (``keyring`` or ``memory``)."""

    stored = QtCore.Signal(str)
    check_finished = QtCore.Signal(str, bool, str)  # broker, ok, message
    connection_changed = QtCore.Signal(str, bool, str)  # broker, connected, message

    def __init__(self, engine: Engine | None, store: Any = None, checks: dict[str, CheckFn] | None = None,
                 parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        from app.live_mode import credential_store

        self.engine = engine
        self.store = store if store is not None else credential_store(engine)
        self.checks = discover_checks() if checks is None else checks
        self.setObjectName("credentialsDialog")
        self.setWindowTitle("Broker credentials")
        self.busy = False
        self.last_message = ""

        status = self.store.status()
        self.keyring_label = QtWidgets.QLabel(
            f"Keyring: {status.backend} — {status.detail}" if status.backend_available
            else f"No usable keyring backend ({status.backend}): {status.detail}."
        )
        self.keyring_label.setObjectName("keyringStatus")
        self.keyring_label.setProperty("available", "true" if status.backend_available else "false")
        self.keyring_label.setWordWrap(True)

        # tastytrade ---------------------------------------------------------------------------------
        tt_box = QtWidgets.QGroupBox("tastytrade (OAuth)")
        tt = QtWidgets.QFormLayout(tt_box)
        self.tt_secret = QtWidgets.QLineEdit()
        self.tt_secret.setObjectName("ttProviderSecret")
        self.tt_secret.setEchoMode(QtWidgets.QLineEdit.EchoMode.Password)
        self.tt_token = QtWidgets.QLineEdit()
        self.tt_token.setObjectName("ttRefreshToken")
        self.tt_token.setEchoMode(QtWidgets.QLineEdit.EchoMode.Password)
        self.tt_sandbox = QtWidgets.QCheckBox("Sandbox (cert) environment — a paper server")
        self.tt_sandbox.setObjectName("ttSandbox")
        self.tt_sandbox.setChecked(self._settings_tt_sandbox())
        self.tt_sandbox.toggled.connect(self._refresh_tt_state)
        self.tt_state = QtWidgets.QLabel("")
        self.tt_state.setObjectName("ttState")
        self.tt_error = QtWidgets.QLabel("")
        self.tt_error.setProperty("role", "fieldError")
        self.tt_error.setWordWrap(True)
        tt.addRow("Provider secret", self.tt_secret)
        tt.addRow("Refresh token", self.tt_token)
        tt.addRow("", self.tt_sandbox)
        tt.addRow("Stored", self.tt_state)
        tt.addRow("", self.tt_error)
        tt_buttons = QtWidgets.QHBoxLayout()
        self.tt_save = QtWidgets.QPushButton("Store secrets")
        self.tt_save.setObjectName("ttStore")
        self.tt_save.clicked.connect(self.store_tastytrade)
        self.tt_forget = QtWidgets.QPushButton("Forget")
        self.tt_forget.clicked.connect(self.forget_tastytrade)
        tt_buttons.addWidget(self.tt_save)
        tt_buttons.addWidget(self.tt_forget)
        self.tt_test: QtWidgets.QPushButton | None = None
        if "tastytrade" in self.checks:
            self.tt_test = QtWidgets.QPushButton("Test connection")
            self.tt_test.setObjectName("ttTest")
            self.tt_test.clicked.connect(lambda: self.test_connection("tastytrade"))
            tt_buttons.addWidget(self.tt_test)
        self.tt_connect = QtWidgets.QPushButton("Connect")
        self.tt_connect.setObjectName("ttConnect")
        self.tt_connect.setToolTip("Connect and paper-trade on tastytrade's quotes; going live is a separate step")
        self.tt_connect.clicked.connect(lambda: self.toggle_connection("tastytrade"))
        tt_buttons.addWidget(self.tt_connect)
        tt_buttons.addStretch(1)
        tt.addRow(tt_buttons)

        # IBKR ---------------------------------------------------------------------------------------
        ib_box = QtWidgets.QGroupBox("Interactive Brokers (TWS / IB Gateway)")
        ib = QtWidgets.QFormLayout(ib_box)
        cfg = self._ibkr_settings()
        self.ib_preset = QtWidgets.QComboBox()
        self.ib_preset.setObjectName("ibPreset")
        self.ib_preset.addItem("Custom", None)
        for _key, label, port in IBKR_PRESETS:
            self.ib_preset.addItem(label, port)
        self.ib_host = QtWidgets.QLineEdit(str(getattr(cfg, "host", "127.0.0.1")))
        self.ib_host.setObjectName("ibHost")
        self.ib_port = QtWidgets.QSpinBox()
        self.ib_port.setObjectName("ibPort")
        self.ib_port.setRange(1, 65535)
        self.ib_port.setValue(int(getattr(cfg, "port", 7497)))
        self.ib_client = QtWidgets.QSpinBox()
        self.ib_client.setObjectName("ibClientId")
        self.ib_client.setRange(0, 2_147_483_647)
        self.ib_client.setValue(int(getattr(cfg, "client_id", 17)))
        self.ib_note = QtWidgets.QLabel("")
        self.ib_note.setObjectName("ibNote")
        self.ib_error = QtWidgets.QLabel("")
        self.ib_error.setProperty("role", "fieldError")
        self.ib_preset.currentIndexChanged.connect(self._on_preset)
        self.ib_port.valueChanged.connect(self._sync_preset)
        ib.addRow("Preset", self.ib_preset)
        ib.addRow("Host", self.ib_host)
        ib.addRow("Port", self.ib_port)
        ib.addRow("Client id", self.ib_client)
        ib.addRow("", self.ib_note)
        ib.addRow("", self.ib_error)
        ib_buttons = QtWidgets.QHBoxLayout()
        self.ib_save = QtWidgets.QPushButton("Save endpoint")
        self.ib_save.setObjectName("ibSave")
        self.ib_save.clicked.connect(self.save_ibkr)
        self.ib_save.setEnabled(self._settings_have_ibkr())
        if not self._settings_have_ibkr():
            self.ib_save.setToolTip("no engine is running: nothing to save the endpoint to")
        ib_buttons.addWidget(self.ib_save)
        self.ib_test: QtWidgets.QPushButton | None = None
        if "ibkr" in self.checks:
            self.ib_test = QtWidgets.QPushButton("Test connection")
            self.ib_test.setObjectName("ibTest")
            self.ib_test.clicked.connect(lambda: self.test_connection("ibkr"))
            ib_buttons.addWidget(self.ib_test)
        self.ib_connect = QtWidgets.QPushButton("Connect")
        self.ib_connect.setObjectName("ibConnect")
        self.ib_connect.setToolTip("Connect to TWS / IB Gateway and paper-trade on its quotes; going live is separate")
        self.ib_connect.clicked.connect(lambda: self.toggle_connection("ibkr"))
        ib_buttons.addWidget(self.ib_connect)
        ib_buttons.addStretch(1)
        ib.addRow(ib_buttons)
        self._sync_preset()

        self.result_label = QtWidgets.QLabel("")
        self.result_label.setObjectName("credentialsResult")
        self.result_label.setWordWrap(True)
        close = QtWidgets.QDialogButtonBox(QtWidgets.QDialogButtonBox.StandardButton.Close)
        close.rejected.connect(self.reject)
        lay = QtWidgets.QVBoxLayout(self)
        lay.addWidget(self.keyring_label)
        lay.addWidget(tt_box)
        lay.addWidget(ib_box)
        lay.addWidget(self.result_label)
        lay.addWidget(close)
        for field in (self.ib_port, self.ib_client, self.ib_host, self.ib_preset):
            field.setSizePolicy(QtWidgets.QSizePolicy.Policy.Expanding, QtWidgets.QSizePolicy.Policy.Fixed)
        self.ib_note.setWordWrap(True)
        self.ib_error.setWordWrap(True)
        self.setMinimumWidth(520)
        self._refresh_tt_state()
        self._sync_connect_buttons()

    def event(self, e: QtCore.QEvent) -> bool:
        """Grow with a status message instead of squashing Port and Client id to fit it: the layout's
        minimum size ignores the height a word-wrapped label needs at this width, so Qt never does."""
        handled = super().event(e)
        if e.type() == QtCore.QEvent.Type.LayoutRequest and self.layout() is not None:
            lay = self.layout()
            need = lay.heightForWidth(self.width()) if lay.hasHeightForWidth() else lay.sizeHint().height()
            if need > self.height():
                self.resize(self.width(), need)
        return handled

    # ---- settings helpers -------------------------------------------------------------------------
    def _brokers_settings(self) -> BrokersConfig:
        return eq.settings(self.engine).brokers

    def _settings_tt_sandbox(self) -> bool:
        return self._brokers_settings().tastytrade.sandbox

    def _ibkr_settings(self) -> Any:
        return self._brokers_settings().ibkr

    def _settings_have_ibkr(self) -> bool:
        """The endpoint is saved into the running engine's settings: nothing to save it to without one."""
        return self.engine is not None

    # ---- tastytrade -------------------------------------------------------------------------------
    def _refresh_tt_state(self) -> None:
        sandbox = self.tt_sandbox.isChecked()

        def look() -> str:
            from engine.credentials import (
                TT_PROVIDER_SECRET,
                TT_REFRESH_TOKEN,
                TT_SANDBOX_PROVIDER_SECRET,
                TT_SANDBOX_REFRESH_TOKEN,
            )

            names = (TT_SANDBOX_PROVIDER_SECRET, TT_SANDBOX_REFRESH_TOKEN) if sandbox else (TT_PROVIDER_SECRET, TT_REFRESH_TOKEN)
            sources = [self.store.source(n) for n in names]
            if all(sources):
                return "yes — " + " + ".join(sorted(set(sources)))  # type: ignore[arg-type]
            if any(sources):
                return "incomplete (one of the two is missing)"
            return "no"

        self.tt_state.setText("checking…")
        _run_blocking(look, lambda text, err: self.tt_state.setText(text if err is None else f"error: {type(err).__name__}"))

    def store_tastytrade(self) -> None:
        secret, token = self.tt_secret.text().strip(), self.tt_token.text().strip()
        missing = [n for n, v in (("provider secret", secret), ("refresh token", token)) if not v]
        if missing:
            self.tt_error.setText(f"enter the {' and the '.join(missing)}")
            return
        self.tt_error.setText("")
        sandbox = self.tt_sandbox.isChecked()
        self.busy = True
        self.tt_save.setEnabled(False)

        def done(where: Any, err: BaseException | None) -> None:
            self.busy = False
            self.tt_save.setEnabled(True)
            if err is not None:
                self.tt_error.setText(f"could not store: {err}")
                return
            self.tt_secret.clear()
            self.tt_token.clear()
            self.last_message = (
                "stored in the OS keyring" if where == "keyring"
                else "kept in memory for this session only (no keyring backend)"
            )
            self.result_label.setText(f"tastytrade{' sandbox' if sandbox else ''} secrets {self.last_message}.")
            self._refresh_tt_state()
            self.stored.emit(str(where))

        _run_blocking(lambda: self.store.set_tastytrade(secret, token, sandbox=sandbox), done)

    def forget_tastytrade(self) -> None:
        from engine.credentials import (
            TT_PROVIDER_SECRET,
            TT_REFRESH_TOKEN,
            TT_SANDBOX_PROVIDER_SECRET,
            TT_SANDBOX_REFRESH_TOKEN,
        )

        names = (
            (TT_SANDBOX_PROVIDER_SECRET, TT_SANDBOX_REFRESH_TOKEN) if self.tt_sandbox.isChecked()
            else (TT_PROVIDER_SECRET, TT_REFRESH_TOKEN)
        )

        def forget() -> None:
            for n in names:
                self.store.delete(n)

        def done(_r: Any, err: BaseException | None) -> None:
            self.result_label.setText("tastytrade secrets removed." if err is None else f"could not remove: {err}")
            self._refresh_tt_state()

        _run_blocking(forget, done)

    # ---- IBKR -------------------------------------------------------------------------------------
    def _on_preset(self, index: int) -> None:
        port = self.ib_preset.itemData(index)
        if port is not None:
            self.ib_port.blockSignals(True)
            self.ib_port.setValue(int(port))
            self.ib_port.blockSignals(False)
        self._render_ib_note()

    def _sync_preset(self) -> None:
        port = self.ib_port.value()
        idx = next((i for i in range(1, self.ib_preset.count()) if self.ib_preset.itemData(i) == port), 0)
        self.ib_preset.blockSignals(True)
        self.ib_preset.setCurrentIndex(idx)
        self.ib_preset.blockSignals(False)
        self._render_ib_note()

    def _render_ib_note(self) -> None:
        from engine.brokers.config import IBKR_PAPER_PORTS

        paper = self.ib_port.value() in IBKR_PAPER_PORTS
        self.ib_note.setText(
            "paper port: a broker paper account (still routed as live by Optiondesk)" if paper
            else "live port: REAL-MONEY account" if self.ib_preset.currentIndex() > 0 else ""
        )

    def ibkr_values(self) -> dict[str, Any]:
        return {"host": self.ib_host.text().strip(), "port": self.ib_port.value(), "client_id": self.ib_client.value()}

    def save_ibkr(self) -> None:
        from pydantic import ValidationError

        from engine.bus.commands import ApplySettings

        if self.engine is None:
            self.ib_error.setText("no engine: the endpoint cannot be saved")
            return
        settings = self.engine.settings
        values = self.ibkr_values()
        if not values["host"]:
            self.ib_error.setText("host is required")
            return
        try:
            new_ibkr = settings.brokers.ibkr.model_copy(update=values)
            new_ibkr = type(new_ibkr).model_validate(new_ibkr.model_dump())
            new_settings = settings.model_copy(update={"brokers": settings.brokers.model_copy(update={"ibkr": new_ibkr})})
        except ValidationError as exc:
            self.ib_error.setText("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))
            return
        self.ib_error.setText("")
        endpoint = f"{values['host']}:{values['port']} client {values['client_id']}"

        def saved(_result: Any) -> None:
            if qt_alive(self):
                self.result_label.setText(f"IBKR endpoint saved: {endpoint}.")

        def failed(message: str) -> None:
            if qt_alive(self):
                self.ib_error.setText(f"not saved: {message}")

        send_command(self.engine, ApplySettings(settings=new_settings), on_error=failed, on_result=saved)

    # ---- connect / disconnect ---------------------------------------------------------------------
    def _connected(self, broker: str) -> bool:
        return self.engine is not None and broker in self.engine.adapters

    def _sync_connect_buttons(self) -> None:
        for broker, button in (("tastytrade", self.tt_connect), ("ibkr", self.ib_connect)):
            button.setText("Disconnect" if self._connected(broker) else "Connect")
            button.setEnabled(self.engine is not None)

    def _connection_config(self, broker: str) -> Any:
        """The settings' [brokers] section with this dialog's fields applied (not saved)."""
        cfg = self._brokers_settings()
        if cfg is None:
            return None
        if broker == "tastytrade":
            return cfg.model_copy(update={"tastytrade": cfg.tastytrade.model_copy(
                update={"sandbox": self.tt_sandbox.isChecked()})})
        return cfg.model_copy(update={"ibkr": cfg.ibkr.model_copy(update=self.ibkr_values())})

    def toggle_connection(self, broker: str) -> asyncio.Task[Any]:
        """Connect (paper trading on the broker's quotes) or disconnect; the result lands in the dialog."""
        button = self.tt_connect if broker == "tastytrade" else self.ib_connect
        button.setEnabled(False)
        connecting = not self._connected(broker)
        self.result_label.setText(f"{'connecting' if connecting else 'disconnecting'} {broker}…")

        async def run() -> None:
            try:
                if connecting:
                    adapter = await asyncio.wait_for(self.engine.connect_broker(
                        broker, credentials=self.store, config=self._connection_config(broker)), timeout=120)
                    from engine.credentials import mask_account

                    message = (f"{broker} connected (account {mask_account(adapter.account_id)}): its quotes now "
                               f"drive the chain and paper fills. Use the toolbar's PAPER/LIVE switch to go live.")
                else:
                    await asyncio.wait_for(self.engine.disconnect_broker(broker), timeout=60)
                    message = f"{broker} disconnected: back on the simulated market."
                ok = True
            except Exception as exc:
                ok, message = False, f"{type(exc).__name__}: {exc}"
            self._sync_connect_buttons()
            self.result_label.setText(message if ok else f"{broker}: FAILED — {message}")
            self.connection_changed.emit(broker, self._connected(broker), message)

        return asyncio.get_event_loop().create_task(run(), name=f"credentials-connect:{broker}")

    # ---- connection checks ------------------------------------------------------------------------
    def test_connection(self, broker: str) -> asyncio.Task[Any] | None:
        fn = self.checks.get(broker)
        if fn is None:
            return None
        button = self.tt_test if broker == "tastytrade" else self.ib_test
        if button is not None:
            button.setEnabled(False)
        self.result_label.setText(f"testing {broker}…")
        kwargs: dict[str, Any] = {"engine": self.engine, "credentials": self.store}
        if broker == "tastytrade":
            kwargs["sandbox"] = self.tt_sandbox.isChecked()
        else:
            kwargs.update(self.ibkr_values())

        async def run() -> None:
            try:
                result = await asyncio.wait_for(fn(**kwargs), timeout=180)
                ok = bool(getattr(result, "ok", result if isinstance(result, bool) else True))
                message = str(getattr(result, "message", "") or ("connected" if ok else "failed"))
            except Exception as exc:
                ok, message = False, f"{type(exc).__name__}: {exc}"
            if button is not None:
                button.setEnabled(True)
            self.result_label.setText(f"{broker}: {'OK' if ok else 'FAILED'} — {message}")
            self.check_finished.emit(broker, ok, message)

        return asyncio.get_event_loop().create_task(run(), name=f"credentials-check:{broker}")
