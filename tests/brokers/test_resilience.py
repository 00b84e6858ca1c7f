"""Circuit breaker, backoff, timeouts, reconnector, the live arm, credentials and log redaction."""

from __future__ import annotations

import asyncio
import logging
import random
import subprocess
import sys
from pathlib import Path

import pytest

from engine.brokers.base import BrokerError
from engine.brokers.circuit_breaker import (
    BreakerState,
    CircuitBreaker,
    CircuitBreakerStateChanged,
    CircuitOpenError,
)
from engine.brokers.config import IBKR_PORT_PRESETS, IbkrConfig, ReconnectConfig
from engine.brokers.resilience import (
    BrokerNotArmed,
    BrokerTimeout,
    LiveArm,
    Reconnector,
    backoff_delays,
    with_timeout,
)
from engine.bus.events import ConnectionStateChanged
from engine.credentials import (
    CredentialsMissing,
    CredentialStore,
    install_log_redaction,
    mask_account,
    redactor,
)


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


async def _fail() -> None:
    raise BrokerError("connection reset")


async def _ok() -> str:
    return "ok"


class Rejected(Exception):
    pass


async def _reject() -> None:
    raise Rejected("insufficient buying power")


# ---- circuit breaker -----------------------------------------------------------------------------------
async def test_breaker_opens_after_threshold_then_half_open_probe_closes_it(bus, recorder):
    clock = Clock()
    cb = CircuitBreaker("broker:x", bus, failure_threshold=3, reset_timeout_s=10, clock=clock)
    for _ in range(2):
        with pytest.raises(BrokerError):
            await cb.call("place", _fail)
    assert cb.state is BreakerState.CLOSED and cb.failures == 2
    with pytest.raises(BrokerError):
        await cb.call("place", _fail)
    assert cb.state is BreakerState.OPEN
    with pytest.raises(CircuitOpenError, match="circuit open"):
        await cb.call("place", _ok)
    clock.t = 10.0
    assert cb.state is BreakerState.HALF_OPEN
    assert cb.allow() and not cb.allow()  # exactly one probe in flight
    cb.record_success()
    assert cb.state is BreakerState.CLOSED
    states = [(e.previous, e.state) for e in recorder.of(CircuitBreakerStateChanged)]
    assert states == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]


async def test_failed_probe_reopens_and_rejections_do_not_count():
    clock = Clock()
    cb = CircuitBreaker("broker:x", failure_threshold=1, reset_timeout_s=5, clock=clock)
    for _ in range(5):
        with pytest.raises(Rejected):
            await cb.call("place", _reject, is_failure=lambda e: not isinstance(e, Rejected))
    assert cb.state is BreakerState.CLOSED
    with pytest.raises(BrokerError):
        await cb.call("place", _fail)
    clock.t = 5.0
    with pytest.raises(BrokerError):
        await cb.call("place", _fail)  # the probe fails
    assert cb.state is BreakerState.OPEN
    clock.t = 10.0
    assert await cb.call("place", _ok) == "ok" and cb.state is BreakerState.CLOSED


def test_breaker_rejects_bad_parameters():
    with pytest.raises(ValueError, match="failure_threshold"):
        CircuitBreaker("x", failure_threshold=0)
    with pytest.raises(ValueError, match="reset_timeout_s"):
        CircuitBreaker("x", reset_timeout_s=0)


# ---- backoff, timeout, reconnect ------------------------------------------------------------------------
def test_backoff_grows_geometrically_with_bounded_jitter_and_cap():
    d = backoff_delays(1.0, 8.0, 2.0, 0.2, random.Random(7))
    delays = [next(d) for _ in range(8)]
    for base, got in zip([1, 2, 4, 8, 8, 8, 8, 8], delays, strict=True):
        assert base * 0.8 <= got <= base * 1.2
    again = backoff_delays(1.0, 8.0, 2.0, 0.2, random.Random(7))
    assert [next(again) for _ in range(8)] == delays  # deterministic for a seed
    assert len({round(x, 6) for x in delays[3:]}) > 1  # jitter spreads reconnect storms
    with pytest.raises(ValueError):
        next(backoff_delays(0))


async def test_with_timeout_names_the_call():
    with pytest.raises(BrokerTimeout, match=r"ibkr whatIf timed out after 0\.05 s"):
        await with_timeout(asyncio.Event().wait(), 0.05, "ibkr whatIf")
    assert await with_timeout(_ok(), 1, "x") == "ok"


async def test_reconnector_retries_with_backoff_until_connected(bus, recorder):
    attempts = []

    async def connect() -> None:
        attempts.append(1)
        if len(attempts) < 3:
            raise OSError("connection refused")

    rc = Reconnector("broker:x", connect, bus=bus, config=ReconnectConfig(initial_delay_s=0.01, max_delay_s=0.02),
                     rng=random.Random(1))
    assert await rc.run() is True and len(attempts) == 3
    states = [e.state for e in recorder.of(ConnectionStateChanged)]
    assert states[-1] == "connected" and states.count("connecting") == 3
    assert recorder.of(ConnectionStateChanged)[-1].latency_ms is not None


async def test_reconnector_gives_up_after_max_attempts(bus, recorder):
    rc = Reconnector("broker:x", _fail, bus=bus,
                     config=ReconnectConfig(initial_delay_s=0.01, max_delay_s=0.01, max_attempts=2))
    assert await rc.run() is False
    last = recorder.of(ConnectionStateChanged)[-1]
    assert last.state == "failed" and "connection reset" in last.detail


# ---- live arm -----------------------------------------------------------------------------------------
def test_live_arm_only_for_the_connected_account():
    arm = LiveArm("x")
    with pytest.raises(BrokerNotArmed, match="not armed"):
        arm.check("A1234", "submit")
    with pytest.raises(BrokerNotArmed, match=r"\*\*\*\*9999"):
        arm.arm("ZZ9999", "A12345678")
    with pytest.raises(ValueError):
        arm.arm("", "A12345678")
    arm.arm("A12345678", "A12345678")
    arm.check("A12345678", "submit")
    arm.check("", "submit")
    with pytest.raises(BrokerNotArmed, match="differs"):
        arm.check("B12345678", "submit")
    arm.disarm()
    with pytest.raises(BrokerNotArmed):
        arm.check("A12345678", "submit")


def test_ibkr_presets_and_paper_ports():
    assert IbkrConfig.preset("gateway-paper").port == 4002 and IbkrConfig.preset("gateway-paper").is_paper_port
    assert not IbkrConfig.preset("tws-live").is_paper_port
    assert IBKR_PORT_PRESETS == {"tws-paper": 7497, "tws-live": 7496, "gateway-paper": 4002, "gateway-live": 4001}
    with pytest.raises(ValueError, match="unknown IBKR preset"):
        IbkrConfig.preset("cloud")


# ---- credentials ---------------------------------------------------------------------------------------
class BrokenKeyring:
    priority = 5

    def get_password(self, service: str, name: str) -> str | None:
        raise RuntimeError("dbus went away")

    def set_password(self, service: str, name: str, value: str) -> None:
        raise RuntimeError("dbus went away")

    def delete_password(self, service: str, name: str) -> None:
        raise RuntimeError("dbus went away")


class DictKeyring:
    priority = 1

    def __init__(self) -> None:
        self.data: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, name: str) -> str | None:
        return self.data.get((service, name))

    def set_password(self, service: str, name: str, value: str) -> None:
        self.data[(service, name)] = value

    def delete_password(self, service: str, name: str) -> None:
        self.data.pop((service, name), None)


def test_fail_keyring_means_session_only_memory_store():
    from keyring.backends import fail

    store = CredentialStore(backend=fail.Keyring(), env={})
    st = store.status()
    assert not st.backend_available and "memory" in st.detail and st.backend.endswith("fail.Keyring")
    assert store.set_tastytrade("sec-123456", "tok-123456") == "memory"
    creds = store.tastytrade()
    assert creds.refresh_token == "tok-123456" and creds.source == "memory"
    store.delete("tastytrade.refresh_token")
    with pytest.raises(CredentialsMissing, match=r"tastytrade\.refresh_token"):
        store.tastytrade()


def test_keyring_backend_is_used_under_service_optiondesk():
    kr = DictKeyring()
    store = CredentialStore(backend=kr, env={})
    assert store.status().backend_available
    assert store.set_tastytrade("sec-abcdef", "tok-abcdef", sandbox=True) == "keyring"
    assert kr.data[("optiondesk", "tastytrade-sandbox.refresh_token")] == "tok-abcdef"
    assert store.has_tastytrade(sandbox=True) and not store.has_tastytrade()
    assert CredentialStore(backend=kr, env={}).tastytrade(sandbox=True).source == "keyring"


def test_failing_keyring_degrades_to_memory_with_a_clear_status():
    store = CredentialStore(backend=BrokenKeyring(), env={})
    assert store.status().backend_available
    assert store.set("tastytrade.provider_secret", "sec-zzzzzz") == "memory"
    assert not store.status().backend_available and "keyring failed" in store.status().detail
    assert store.get("tastytrade.provider_secret") == "sec-zzzzzz"


def test_environment_overrides_keyring_and_is_never_written():
    kr = DictKeyring()
    kr.set_password("optiondesk", "tastytrade.refresh_token", "from-keyring")
    store = CredentialStore(backend=kr, env={"OPTIONDESK_TT_REFRESH_TOKEN": "from-env-123",
                                             "OPTIONDESK_TT_PROVIDER_SECRET": "env-secret-1"})
    assert store.get("tastytrade.refresh_token") == "from-env-123"
    assert store.source("tastytrade.refresh_token") == "environment"
    assert kr.data == {("optiondesk", "tastytrade.refresh_token"): "from-keyring"}
    with pytest.raises(ValueError, match="non-empty"):
        store.set("tastytrade.refresh_token", "  ")


def test_mask_account():
    assert mask_account("5WT12345") == "****2345" and mask_account("DU1") == "***"


def test_log_redaction_masks_registered_secrets_accounts_and_tracebacks(caplog):
    install_log_redaction()
    redactor().register("super-secret-value-42")
    redactor().register_account("U99887766")
    log = logging.getLogger("engine.test.redaction")
    with caplog.at_level(logging.INFO, logger="engine.test.redaction"):
        log.info("token %s for account %s", "super-secret-value-42", "U99887766")
        try:
            raise RuntimeError("failed with super-secret-value-42")
        except RuntimeError:
            log.exception("boom")
    text = caplog.text
    assert "super-secret-value-42" not in text and "U99887766" not in text
    assert "****7766" in text and "***" in text


def test_engine_modules_import_without_the_broker_sdks():
    code = ("import sys\n"
            "import engine.brokers.tastytrade, engine.brokers.ibkr, engine.market.tastytrade, engine.market.ibkr\n"
            "import engine.brokers.check, engine.brokers.cli, engine.brokers.circuit_breaker, engine.credentials\n"
            "print(sorted(m for m in ('tastytrade', 'ib_async', 'httpx2', 'keyring') if m in sys.modules))\n")
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True,
                         cwd=root)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
