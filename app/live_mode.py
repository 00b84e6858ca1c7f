"""Preconditions of the Paper → Live switch, checked before the confirmation dialog opens.

The engine's mode router re-checks them when ``SwitchMode`` arrives; this module only decides what the
toolbar tells the user up front (docs/architecture.md §6): live needs stored credentials, a connected broker with
an account, and no working orders.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.model import OrderStatus
from widgets import engine_queries as eq

if TYPE_CHECKING:
    from engine.core import Engine
    from engine.credentials import CredentialStore

log = logging.getLogger(__name__)

#: Orders that block a mode switch: at a broker, or about to be (awaiting approval / approved).
WORKING = (OrderStatus.PENDING_APPROVAL, OrderStatus.APPROVED, OrderStatus.SUBMITTED, OrderStatus.WORKING,
           OrderStatus.PARTIALLY_FILLED)


@dataclass(frozen=True, slots=True)
class LiveCheck:
    ok: bool
    reason: str = ""
    broker: str = ""
    account_id: str = ""
    account_label: str = ""
    server: str = ""  # "live" or "paper server" (tastytrade sandbox, IBKR paper ports)


def credential_store(engine: Engine | None) -> CredentialStore:
    """The engine's credential store (created and shared on first use), or a fresh one without an engine."""
    from engine.credentials import CredentialStore

    if engine is None:
        return CredentialStore()
    if engine.credentials is None:
        engine.credentials = CredentialStore()
    return engine.credentials


def working_order_count(engine: Engine | None) -> int:
    """Orders live at a broker or awaiting approval, from the order store."""
    if engine is None or engine.store is None:
        return 0
    return len(engine.store.orders.list(statuses=WORKING))


def _tastytrade_sandbox(engine: Engine | None) -> bool:
    return eq.settings(engine).brokers.tastytrade.sandbox


def _has_credentials(engine: Engine | None) -> tuple[bool, str]:
    creds = credential_store(engine)
    sandbox = _tastytrade_sandbox(engine)
    try:
        if creds.has_tastytrade(sandbox=sandbox):
            return True, "tastytrade"
    except Exception as exc:
        log.warning("credential lookup failed: %s", type(exc).__name__)
    if engine is not None and "ibkr" in engine.brokers:  # TWS / IB Gateway authenticate the session themselves: a connection is the credential
        return True, "ibkr"
    return False, ""


def _account_of(broker: Any) -> str:
    for attr in ("account_id", "account"):
        value = getattr(broker, attr, None)
        if isinstance(value, str) and value:
            return value
        acct_id = getattr(value, "account_id", None)
        if acct_id:
            return str(acct_id)
    return ""


def _is_connected(broker: Any) -> bool:
    value = getattr(broker, "connected", None)
    if value is None:
        value = getattr(broker, "is_connected", None)
    if callable(value):
        value = value()
    return bool(value)


def live_switch_check(engine: Engine | None) -> LiveCheck:
    """Whether the toolbar may offer the live confirmation, and if not, why (one sentence)."""
    has_creds, _kind = _has_credentials(engine)
    if not has_creds:
        return LiveCheck(False, "no broker credentials stored — add them in File ▸ Credentials…")
    working = working_order_count(engine)
    if working:
        return LiveCheck(False, f"{working} order(s) still working — cancel them or wait for fills first")
    router = engine.router if engine is not None else None
    pool = router.brokers if router is not None else engine.brokers if engine is not None else {}
    paper_name = router.paper_name if router is not None else "paper"
    brokers = {name: b for name, b in pool.items() if name != paper_name and name != "paper"}
    if not brokers:
        return LiveCheck(False, "credentials are stored but no live broker is connected")
    reasons = []
    for name, broker in brokers.items():
        if not _is_connected(broker):
            reasons.append(f"{name} is not connected")
            continue
        account = _account_of(broker)
        if not account:
            reasons.append(f"{name} has no account selected")
            continue
        if router is not None:
            try:
                router.check_switch("live", name, account, working)
            except Exception as exc:  # ModeSwitchError: the router's own words
                reasons.append(str(exc))
                continue
        paper_server = bool(getattr(broker, "is_paper_server", False) or getattr(broker, "sandbox", False))
        label = f"{name} account {account}"
        return LiveCheck(True, "", name, account, label, "paper server" if paper_server else "live")
    return LiveCheck(False, "; ".join(reasons))
