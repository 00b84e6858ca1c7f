"""The broker connection check: ``optiondesk check-broker`` and the Credentials dialog's "Test connection".

Steps, in order; the first failure stops the check and names itself:
``connect`` → ``accounts`` → ``balances`` → ``positions`` → ``chain`` (the SPY chain) → ``quotes`` (at
least 5 option quotes for the nearest window) → ``preview`` (a dry-run / whatIf of a 1-lot SPY put
spread, never placed) → ``disconnect``.

Nothing here places an order: the adapters are never armed, and the preview is tastytrade's dry-run or
IBKR's whatIf. Account numbers in the report show only their last 4 digits.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from engine.brokers.config import BrokersConfig
from engine.credentials import CredentialStore, mask_account

STEPS = ("connect", "accounts", "balances", "positions", "chain", "quotes", "preview", "disconnect")


@dataclass
class CheckStep:
    name: str
    ok: bool
    detail: str = ""
    seconds: float = 0.0


@dataclass
class CheckReport:
    broker: str
    endpoint: str
    steps: list[CheckStep] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return bool(self.steps) and all(s.ok for s in self.steps) and len(self.steps) == len(STEPS)

    @property
    def failed_step(self) -> str | None:
        return next((s.name for s in self.steps if not s.ok), None)

    def to_dict(self) -> dict[str, Any]:
        return {"broker": self.broker, "endpoint": self.endpoint, "ok": self.ok, "failed_step": self.failed_step,
                "steps": [asdict(s) for s in self.steps], "facts": self.facts}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str)

    def format_text(self) -> str:
        lines = [f"check-broker {self.broker} @ {self.endpoint}"]
        for s in self.steps:
            lines.append(f"  [{'ok' if s.ok else 'FAILED'}] {s.name:<10} {s.seconds * 1e3:7.0f} ms  {s.detail}")
        lines.append("RESULT: OK" if self.ok else f"RESULT: FAILED at step '{self.failed_step}'")
        return "\n".join(lines)


class _Runner:
    def __init__(self, report: CheckReport, step_timeout_s: float) -> None:
        self.report = report
        self.step_timeout_s = step_timeout_s

    async def step(self, name: str, coro: Any) -> Any:
        t0 = time.perf_counter()
        try:
            result = await asyncio.wait_for(coro, self.step_timeout_s)
        except TimeoutError:
            self.report.steps.append(CheckStep(name, False, f"timed out after {self.step_timeout_s:g} s",
                                               time.perf_counter() - t0))
            raise _Stop from None
        except Exception as exc:  # the connection check reports every failure as a failed step, whatever the SDK raised
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            self.report.steps.append(CheckStep(name, False, f"{type(exc).__name__}: {detail}",
                                               time.perf_counter() - t0))
            raise _Stop from exc
        value, detail = result  # every step returns (value, one-line detail)
        self.report.steps.append(CheckStep(name, True, detail, time.perf_counter() - t0))
        return value


class _Stop(Exception):
    pass


def _spread_order(chain: Any, spot: float, underlying: str, now: datetime) -> Any:
    """A 1-lot put credit spread in the nearest expiry: short the first strike below spot, long the next."""
    import numpy as np

    from engine.model import Leg, OpenClose, Order, OrderStatus, OrderType, Side, TimeInForce

    first = chain.expiries()[0]
    puts = chain.take((chain.expiry == first) & ~chain.is_call)
    below = np.nonzero(puts.strike < spot)[0] if math.isfinite(spot) else np.arange(len(puts))
    if len(below) < 2:
        below = np.arange(len(puts))
    if len(below) < 2:
        raise ValueError(f"the {underlying} chain has fewer than two puts in its first expiry")
    short_row, long_row = int(below[-1]), int(below[-2])
    mids = puts.mid
    width = float(puts.strike[short_row] - puts.strike[long_row])
    credit = mids[short_row] - mids[long_row] if np.isfinite(mids[[short_row, long_row]]).all() else width / 3
    price = -Decimal(str(round(max(0.05, min(credit, width - 0.05)) * 20) / 20)).quantize(Decimal("0.01"))
    legs = (Leg(puts.option(short_row), Side.SELL, 1, OpenClose.OPEN),
            Leg(puts.option(long_row), Side.BUY, 1, OpenClose.OPEN))
    return Order(order_id="check-broker", client_order_id="check-broker", legs=legs, quantity=1,
                 order_type=OrderType.LIMIT, limit_price=price, tif=TimeInForce.DAY, status=OrderStatus.APPROVED,
                 created_at=now, updated_at=now, source="check-broker")


async def _wait_quotes(feed: Any, underlying: str, n: int) -> tuple[int, str]:
    import numpy as np

    while True:
        chain = feed.last_chain(underlying)
        got = int(np.isfinite(chain.bid).sum()) if chain is not None else 0
        if got >= n:
            return got, f"{got} option quotes; {underlying} {feed.last_price(underlying) or float('nan'):.2f}"
        await asyncio.sleep(0.05)


async def check_broker(broker: str, config: BrokersConfig | None = None, *, credentials: CredentialStore | None = None,
                       symbol: str = "SPY", min_quotes: int = 5, step_timeout_s: float = 20.0) -> CheckReport:
    """Run the connection check against ``broker`` (``tastytrade`` | ``ibkr``); never raises for broker faults."""
    from engine.bus import Bus

    config = config or BrokersConfig()
    bus = Bus()
    from engine.brokers.adapters import build_adapter

    built = build_adapter(broker, config, bus, credentials=credentials, underlyings=[symbol])
    adapter: Any = built.broker
    feed: Any = built.feed
    endpoint = built.endpoint
    report = CheckReport(broker, endpoint)
    run = _Runner(report, step_timeout_s)
    try:
        async def connect() -> tuple[None, str]:
            await adapter.connect()
            latency = adapter.conn.latency_ms
            report.facts["latency_ms"] = None if latency is None else round(latency, 1)
            return None, f"connected as {mask_account(adapter.account_id)} ({latency or 0:.0f} ms)"

        await run.step("connect", connect())

        async def accounts() -> tuple[None, str]:
            if broker == "tastytrade":
                ids = [a.account_number for a in adapter.conn.accounts]
            else:
                ids = list(adapter.conn.ib.managedAccounts())
            report.facts["accounts"] = [mask_account(a) for a in ids]
            return None, ", ".join(mask_account(a) for a in ids)

        await run.step("accounts", accounts())

        async def balances() -> tuple[None, str]:
            snap = await adapter.account()
            report.facts["net_liquidation"] = str(snap.net_liquidation)
            report.facts["buying_power"] = str(snap.buying_power)
            return None, f"net liq {snap.net_liquidation}, buying power {snap.buying_power}"

        await run.step("balances", balances())

        async def positions() -> tuple[None, str]:
            ps = await adapter.positions()
            report.facts["positions"] = len(ps)
            return None, f"{len(ps)} position(s)" + (": " + ", ".join(f"{p.symbol} {p.quantity:+d}" for p in ps[:5])
                                                    if ps else "")

        await run.step("positions", positions())

        async def chain() -> tuple[Any, str]:
            await feed.start()
            ch = await feed.chain(symbol)
            exps = ch.expiry_dates()
            report.facts["chain_rows"] = len(ch)
            return ch, f"{symbol}: {len(exps)} expirations, {len(ch)} contracts"

        ch = await run.step("chain", chain())

        async def quotes() -> tuple[int, str]:
            deadline = time.monotonic() + step_timeout_s
            while feed.last_price(symbol) is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            spot = feed.last_price(symbol) or float("nan")
            first = ch.expiry_dates()[0]
            lo, hi = (spot * 0.97, spot * 1.03) if math.isfinite(spot) else (float("-inf"), float("inf"))
            await feed.subscribe(symbol, [first], (lo, hi))
            got, detail = await _wait_quotes(feed, symbol, min_quotes)
            report.facts["quotes"] = got
            return got, detail

        await run.step("quotes", quotes())

        async def preview() -> tuple[None, str]:
            spot = feed.last_price(symbol) or float("nan")
            order = _spread_order(feed.last_chain(symbol) or ch, spot, symbol, bus.clock.now())
            pv = await adapter.preview(order)
            if pv.errors:
                raise RuntimeError("; ".join(pv.errors))
            legs = " / ".join(f"{leg.side.value} {leg.symbol}" for leg in order.legs)
            report.facts["preview"] = {"order": legs, "limit": str(order.limit_price),
                                       "buying_power_effect": str(pv.buying_power_effect),
                                       "commission": str(pv.commission), "warnings": list(pv.warnings)}
            return None, (f"{legs} @ {order.limit_price}: buying power effect {pv.buying_power_effect}, "
                          f"commission {pv.commission}")

        await run.step("preview", preview())
    except _Stop:
        pass
    finally:
        t0 = time.perf_counter()
        try:
            await asyncio.wait_for(feed.stop(), 10)
            await asyncio.wait_for(adapter.disconnect(), 10)
            ok, detail = True, "disconnected"
        except Exception as exc:  # a failed disconnect is one more step in the report, never a crash of the check
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        if report.failed_step is None:
            report.steps.append(CheckStep("disconnect", ok, detail, time.perf_counter() - t0))
    return report
