"""Credentials: OS keyring under service ``optiondesk``, environment overrides, session-only fallback.

Where a secret comes from, in order:

1. environment variables read **once** when the store is created (``OPTIONDESK_TT_PROVIDER_SECRET``,
   ``OPTIONDESK_TT_REFRESH_TOKEN``) — for scripts, CI and servers without a keyring; never written;
2. the OS keyring (service ``optiondesk``), the default;
3. an in-memory, session-only store when no usable keyring backend exists (headless Linux gives
   ``keyring.backends.fail.Keyring``). :meth:`CredentialStore.status` then reports
   ``backend_available=False`` so the GUI can say secrets will be forgotten on exit.

Nothing here writes a secret to disk, a log, the settings or the database. :class:`SecretRedactor`
masks registered secrets and account numbers (all but the last 4 characters) in every log record once
:func:`install_log_redaction` has run.

Keyring calls may block on D-Bus: call them from an executor when on the GUI loop.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

SERVICE = "optiondesk"

ENV_TT_PROVIDER_SECRET = "OPTIONDESK_TT_PROVIDER_SECRET"
ENV_TT_REFRESH_TOKEN = "OPTIONDESK_TT_REFRESH_TOKEN"

TT_PROVIDER_SECRET = "tastytrade.provider_secret"
TT_REFRESH_TOKEN = "tastytrade.refresh_token"
TT_SANDBOX_PROVIDER_SECRET = "tastytrade-sandbox.provider_secret"
TT_SANDBOX_REFRESH_TOKEN = "tastytrade-sandbox.refresh_token"

_ENV_KEYS = {
    TT_PROVIDER_SECRET: ENV_TT_PROVIDER_SECRET,
    TT_REFRESH_TOKEN: ENV_TT_REFRESH_TOKEN,
    TT_SANDBOX_PROVIDER_SECRET: ENV_TT_PROVIDER_SECRET,
    TT_SANDBOX_REFRESH_TOKEN: ENV_TT_REFRESH_TOKEN,
}

log = logging.getLogger(__name__)


class CredentialsMissing(LookupError):
    """The credentials a broker needs are not stored anywhere."""


@dataclass(frozen=True, slots=True)
class CredentialStatus:
    """What the Credentials dialog shows: the backend name and whether secrets survive a restart."""

    backend: str
    backend_available: bool
    detail: str = ""


@dataclass(frozen=True, slots=True)
class TastytradeCredentials:
    provider_secret: str
    refresh_token: str
    source: str  # environment | keyring | memory

    def __repr__(self) -> str:  # never print the secrets
        return f"TastytradeCredentials(source={self.source!r}, provider_secret=***, refresh_token=***)"


def mask_account(account: str) -> str:
    """An account number showing only its last 4 characters: ``"5WT12345"`` → ``"****2345"``."""
    account = str(account)
    if len(account) <= 4:
        return "*" * len(account)
    return "****" + account[-4:]


class CredentialStore:
    """Secrets by name. ``backend`` injects a keyring backend (tests); default: ``keyring.get_keyring()``."""

    def __init__(self, backend: Any | None = None, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self._env = {name: env[var] for name, var in _ENV_KEYS.items() if env.get(var)}
        self._memory: dict[str, str] = {}
        self._lock = threading.Lock()
        self._backend, self._status = self._probe(backend)
        for value in self._env.values():
            redactor().register(value)

    # ---- backend --------------------------------------------------------------------------------
    @staticmethod
    def _probe(backend: Any | None) -> tuple[Any | None, CredentialStatus]:
        try:
            import keyring
            from keyring.backends import fail

            kr = backend if backend is not None else keyring.get_keyring()
        except Exception as exc:  # keyring broken or absent
            return None, CredentialStatus("none", False, f"keyring unavailable ({type(exc).__name__}); "
                                          "secrets are kept in memory for this session only")
        name = f"{type(kr).__module__}.{type(kr).__name__}"
        priority = getattr(kr, "priority", 1)
        try:
            priority = float(priority)
        except Exception:  # a third-party backend's priority may be anything, even a property that raises
            priority = 1.0
        if isinstance(kr, fail.Keyring) or priority <= 0:
            return None, CredentialStatus(name, False, "no usable keyring backend; secrets are kept in memory "
                                          "for this session only and forgotten on exit")
        return kr, CredentialStatus(name, True, "secrets are stored in the OS keyring")

    def status(self) -> CredentialStatus:
        return self._status

    def _degrade(self, exc: BaseException) -> None:
        log.warning("keyring backend failed (%s); keeping secrets in memory for this session", type(exc).__name__)
        self._backend = None
        self._status = CredentialStatus(self._status.backend, False,
                                        f"keyring failed ({type(exc).__name__}); secrets are kept in memory "
                                        "for this session only")

    # ---- generic API ----------------------------------------------------------------------------
    def get(self, name: str) -> str | None:
        """The secret ``name``: environment, then keyring, then the session store; None when absent."""
        if name in self._env:
            return self._env[name]
        return self._stored(name)

    def _stored(self, name: str) -> str | None:
        with self._lock:
            if name in self._memory:
                return self._memory[name]
            if self._backend is None:
                return None
            try:
                value = self._backend.get_password(SERVICE, name)
            except Exception as exc:  # keyring backends raise their own types (dbus, secretstorage): fall back to memory
                self._degrade(exc)
                return None
        if value:
            redactor().register(value)
        return value or None

    def source(self, name: str) -> str | None:
        """Where ``name`` comes from: environment | keyring | memory | None."""
        if name in self._env:
            return "environment"
        with self._lock:
            if name in self._memory:
                return "memory"
        return "keyring" if self._stored(name) is not None else None

    def set(self, name: str, value: str) -> str:
        """Store a secret; returns where it went (``keyring`` or ``memory``). Empty values are refused."""
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"credential {name!r} must be a non-empty string")
        redactor().register(value)
        with self._lock:
            if self._backend is not None:
                try:
                    self._backend.set_password(SERVICE, name, value)
                    self._memory.pop(name, None)
                    return "keyring"
                except Exception as exc:  # keyring backends raise their own types (dbus, secretstorage): fall back to memory
                    self._degrade(exc)
            self._memory[name] = value
            return "memory"

    def delete(self, name: str) -> None:
        with self._lock:
            self._memory.pop(name, None)
            if self._backend is not None:
                try:
                    self._backend.delete_password(SERVICE, name)
                except Exception as exc:  # absent entry or failed backend: nothing more to delete
                    log.debug("keyring delete of %s: %s", name, type(exc).__name__)

    # ---- tastytrade -----------------------------------------------------------------------------
    @staticmethod
    def _tt_names(sandbox: bool) -> tuple[str, str]:
        if sandbox:
            return TT_SANDBOX_PROVIDER_SECRET, TT_SANDBOX_REFRESH_TOKEN
        return TT_PROVIDER_SECRET, TT_REFRESH_TOKEN

    def tastytrade(self, sandbox: bool = False) -> TastytradeCredentials:
        """The OAuth provider secret + refresh token; raises :class:`CredentialsMissing` naming what is absent."""
        secret_name, token_name = self._tt_names(sandbox)
        secret, token = self.get(secret_name), self.get(token_name)
        missing = [n for n, v in ((secret_name, secret), (token_name, token)) if not v]
        if missing:
            raise CredentialsMissing(
                f"tastytrade{' sandbox' if sandbox else ''} credentials missing: {', '.join(missing)} "
                f"(store them in the Credentials dialog or set {ENV_TT_PROVIDER_SECRET}/{ENV_TT_REFRESH_TOKEN})"
            )
        sources = {self.source(secret_name), self.source(token_name)}
        return TastytradeCredentials(secret, token, "+".join(sorted(s for s in sources if s)))  # type: ignore[arg-type]

    def set_tastytrade(self, provider_secret: str, refresh_token: str, sandbox: bool = False) -> str:
        secret_name, token_name = self._tt_names(sandbox)
        where = self.set(secret_name, provider_secret)
        self.set(token_name, refresh_token)
        return where

    def has_tastytrade(self, sandbox: bool = False) -> bool:
        try:
            self.tastytrade(sandbox)
        except CredentialsMissing:
            return False
        return True


# ---- log redaction ------------------------------------------------------------------------------
# belt and braces for secrets never registered (e.g. a token an SDK fetched and logged by itself)
_BEARER = re.compile(r"([Bb]earer\s+)[A-Za-z0-9._~+/=-]{6,}")
_JSON_SECRET = re.compile(
    r"(['\"](?:token|access_token|refresh_token|client_secret|auth-token|session_token|provider_secret)['\"]"
    r"\s*:\s*['\"](?:Bearer\s+)?)[^'\"]{4,}")


class SecretRedactor:
    """Replaces registered secrets in text. Account numbers keep their last 4 characters."""

    def __init__(self) -> None:
        self._items: dict[str, str] = {}
        self._lock = threading.Lock()

    def register(self, secret: str | None, *, account: bool = False) -> None:
        if not secret or len(str(secret)) < 4:
            return
        secret = str(secret)
        with self._lock:
            self._items[secret] = mask_account(secret) if account else "***"

    def register_account(self, account: str | None) -> None:
        self.register(account, account=True)

    def redact(self, text: str) -> str:
        if "earer " in text or "token" in text or "secret" in text:
            text = _BEARER.sub(r"\1***", text)
            text = _JSON_SECRET.sub(r"\1***", text)
        if not self._items:
            return text
        with self._lock:
            items = sorted(self._items.items(), key=lambda kv: -len(kv[0]))
        for secret, mask in items:
            if secret in text:
                text = text.replace(secret, mask)
        return text


_REDACTOR = SecretRedactor()
_INSTALLED = False
_INSTALL_LOCK = threading.Lock()


def redactor() -> SecretRedactor:
    """The process-wide redactor used by :func:`install_log_redaction`."""
    return _REDACTOR


def install_log_redaction() -> None:
    """Redact every log record at creation (all loggers, all handlers). Idempotent."""
    global _INSTALLED
    with _INSTALL_LOCK:
        if _INSTALLED:
            return
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            try:
                message = record.getMessage()
            except Exception:  # a record whose args do not format is logged as it is, not lost
                return record
            redacted = _REDACTOR.redact(message)
            if record.exc_info and not record.exc_text:
                record.exc_text = _REDACTOR.redact(logging.Formatter().formatException(record.exc_info))
            elif record.exc_text:
                record.exc_text = _REDACTOR.redact(record.exc_text)
            if redacted != message or record.args:
                record.msg, record.args = redacted, ()
            return record

        logging.setLogRecordFactory(factory)
        _INSTALLED = True


def quiet_sdk_loggers() -> None:
    """The tastytrade SDK logs bearer tokens at DEBUG: keep it at WARNING (docs/architecture.md §8). ib_async's client
    dumps every wire message (account numbers, orders) at DEBUG: keep it at INFO."""
    logging.getLogger("tastytrade").setLevel(logging.WARNING)
    ib_client = logging.getLogger("ib_async.client")
    if ib_client.getEffectiveLevel() < logging.INFO:
        ib_client.setLevel(logging.INFO)
