"""What a backtest of every built-in strategy must get right (issue 15, "done means"), on a seeded two-year
simulated history: it trades; total P&L = Σ trade P&L − fees to the cent; the daily P&L rows sum to the total;
every option held to expiry settles at intrinsic value from that day's close; no closing order is denied by the
price collar; fewer than 10 % of entries are denied. Parametrized over the strategy registry, so a strategy
added later is held to the same standard (or marked here with the reason it cannot be)."""

from __future__ import annotations

import math
from decimal import Decimal

import numpy as np
import pytest

from engine import strategies
from engine.backtest.config import BacktestConfig
from engine.backtest.runner import Backtest, BacktestResult
from engine.backtest.sources import simulated_history
from engine.model import Option

#: strategies a daily SPY history cannot exercise, with the reason (they are still run: they must not fail)
NEEDS_MORE: dict[str, str] = {
    "zero_dte": "trades same-day expiries: needs an intraday history (a daily close has no time left to trade)",
    "gamma_scalping": "trades shares against long options: its round trips are hedges, not entries and exits",
    "delta_hedge": "an overlay that hedges another strategy's positions with shares: alone it has nothing to do",
    "earnings_crush": "sells premium into earnings events: SPY has none (the AAPL run is in test_earnings_crush.py)",
    "dispersion": "trades an index against its members: a one-underlying history holds no index and no members",
}


SEED = 1


@pytest.fixture(scope="module")
def two_years(tmp_path_factory):
    """Two years of the simulated SPY market (seed 1: a market in which each strategy's entry conditions occur),
    generated once for the module (cached in a temp dir)."""
    return simulated_history("SPY", 2.0, SEED, max_strikes=84, cache_dir=tmp_path_factory.mktemp("hist"))


def problems(result: BacktestResult, *, require_trades: bool = True) -> list[str]:
    """Every "done means" property ``result`` breaks, in words (empty: all hold)."""
    out: list[str] = []
    if result.status != "completed":
        return [f"status {result.status}: {result.error}"]
    closed = [t for t in result.trades if not t.is_open]
    if require_trades and not closed:
        out.append("no trade")
    rec = result.reconciliation()
    if rec["difference"] != Decimal("0.00"):
        out.append(f"total P&L {rec['total_pnl']} != Σ trades {rec['trades_gross']} − fees {rec['fees']}")
    total = Decimal(repr(float(result.equity[-1]))) - Decimal(repr(float(result.config["initial_cash"])))
    daily = Decimal(repr(float(np.sum(result.daily_pnl))))
    if abs(daily - total) >= Decimal("0.005"):
        out.append(f"daily P&L rows sum to {daily:.2f}, total is {total:.2f}")
    entries = [o for o in result.orders if o["tag"].endswith(":open")]
    denied = [o for o in entries if o["status"] == "denied"]
    if entries and len(denied) >= 0.10 * len(entries):
        out.append(f"{len(denied)} of {len(entries)} entries denied: {denied[0]['reason'][:120]}")
    collared = [o for o in result.orders if ":close" in o["tag"] and o["status"] == "denied"
                and "from mid" in o["reason"]]
    if collared:
        out.append(f"{len(collared)} closing order(s) denied by the price collar: {collared[0]['reason'][:120]}")
    return out


def _check_settlement(f, spot_at) -> list[str]:
    inst = f.instrument
    if not isinstance(inst, Option):
        return []
    close = spot_at.get(f.ts)
    if close is None:
        return [f"{inst.key} settled at {f.ts}, which is no close of the history"]
    k = float(inst.strike)
    intrinsic = max(close - k, 0.0) if inst.is_call else max(k - close, 0.0)
    if f.kind == "expiration" and intrinsic >= 0.01:
        return [f"{inst.key} expired worthless although {intrinsic:.2f} in the money at the close {close:.2f}"]
    if f.kind in ("exercise", "assignment") and intrinsic < 0.01 - 1e-9:
        return [f"{inst.key} {f.kind} although out of the money at the close {close:.2f}"]
    if f.kind == "cash_settlement" and not math.isclose(float(f.price), round(intrinsic, 2), abs_tol=0.005):
        return [f"{inst.key} cash-settled at {f.price}, intrinsic at the close {close:.2f} is {intrinsic:.2f}"]
    return []


@pytest.mark.parametrize("name", sorted(strategies.registry()))
def test_every_builtin_strategy_on_two_seeded_years_then_done_means_holds(name, two_years):
    cfg = BacktestConfig(strategy=name, symbol="SPY", years=2.0, seed=SEED)
    bt = Backtest(cfg, two_years)
    result = bt.run()
    settled = [f for f in bt.exchange.exchange.fill_log if f.kind in ("expiration", "exercise", "assignment",
                                                                      "cash_settlement")]
    spot_at = {two_years.timestamp(i): float(two_years.spot[i]) for i in range(two_years.n_days)}
    found = problems(result, require_trades=name not in NEEDS_MORE)
    found += [p for f in settled for p in _check_settlement(f, spot_at)]
    # nothing expired is still held at the end: every option past its expiry was settled
    last = two_years.timestamp(two_years.n_days - 1)
    stale = [k for k, p in bt.exchange.exchange.positions.items()
             if isinstance(p.instrument, Option) and p.instrument.expires_at <= last]
    if stale:
        found.append(f"options past expiry still held: {stale}")
    assert not found, f"{name}: " + "; ".join(found)
