"""Hand-built option chains for the strategy tests: Black-Scholes prices, deltas and IVs per expiry, so the
contracts a strategy picks and the prices it sends can be worked out by hand."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from engine.backtest.data import build_history
from engine.model import OptionChain
from engine.pricing import bsm
from engine.strategies.base import SizingLimits


class Ctx:
    """A StrategyContext with fixed answers (the protocol is ours; the backtester and live runner implement it)."""

    def __init__(self, now: datetime, *, ivr: float = 0.5, regime: str = "iv_contraction", nl: float = 100_000.0,
                 sizing: SizingLimits | None = None) -> None:
        self._now, self._ivr, self._regime, self._nl = now, ivr, regime, nl
        self._sizing = sizing or SizingLimits()

    def now(self) -> datetime:
        return self._now

    def net_liquidation(self) -> float:
        return self._nl

    def iv_rank(self, underlying: str) -> float:
        return self._ivr

    def regime(self, underlying: str) -> str:
        return self._regime

    def sizing(self) -> SizingLimits:
        return self._sizing


def close_of(day: str) -> datetime:
    """The 16:00 New York close of ``day`` (a winter date: 21:00 UTC)."""
    return datetime.fromisoformat(day).replace(hour=21, tzinfo=UTC)


def bsm_chain(day: str = "2024-03-01", spot: float = 500.0, expiries: dict[int, float] | None = None,
              strikes: np.ndarray | None = None, half_spread: float = 0.05, quote_time: str | None = None,
              underlying: str = "SPY") -> OptionChain:
    """Calls and puts on ``strikes`` (default 400..600 step 5) for each ``{days out: implied vol}`` expiry,
    mid = Black-Scholes (r = q = 0) at that vol, quotes mid ± ``half_spread`` (bid floored at 0.01), vendor
    IV and delta attached. ``quote_time`` (UTC ISO) makes an intraday snapshot instead of the close."""
    expiries = expiries or {35: 0.20}
    strikes = np.arange(400.0, 601.0, 5.0) if strikes is None else np.asarray(strikes, float)
    d0 = np.datetime64(day, "D")
    rows: dict[str, list] = {k: [] for k in ("exp", "k", "call", "mid", "iv", "delta")}
    snap = np.datetime64(quote_time, "s") if quote_time else None
    for days, vol in expiries.items():
        exp = d0 + np.timedelta64(days, "D")
        # years to the 16:00 close of the expiry from the snapshot (close to close without a quote time)
        t = max(days, 0) / 365.0
        if snap is not None:
            close = (exp.astype("datetime64[s]") + np.timedelta64(21, "h"))
            t = float((close - snap).astype(np.int64)) / (365.0 * 86400.0)
        for call in (True, False):
            right = "c" if call else "p"
            g = bsm.greeks(right, spot, strikes, t, 0.0, 0.0, vol, outputs=("price", "delta"))
            rows["exp"] += [exp] * len(strikes)
            rows["k"] += list(strikes)
            rows["call"] += [call] * len(strikes)
            rows["mid"] += list(np.asarray(g.price, float))
            rows["iv"] += [vol] * len(strikes)
            rows["delta"] += list(np.asarray(g.delta, float))
    mid = np.round(np.maximum(np.array(rows["mid"]), 0.06), 2)
    n = len(mid)
    bid = np.maximum(mid - half_spread, 0.01)
    ask = mid + half_spread
    qt = None if snap is None else np.full(n, snap)
    h = build_history(underlying, np.full(n, d0), np.array(rows["exp"], dtype="datetime64[D]"), np.array(rows["k"]),
                      np.array(rows["call"]), bid, ask, spot_by_row=np.full(n, spot), iv=np.array(rows["iv"]),
                      delta=np.array(rows["delta"]), quote_time=qt)
    return h.chain(0)


def row(chain: OptionChain, symbol: str) -> int:
    return chain.row_of(symbol)


def legs_of(intent) -> list[tuple[str, int, str]]:
    """(side, ratio, OCC symbol) per leg, for comparing an intent's legs with the expected ones."""
    return [(leg.side.value, leg.ratio, leg.symbol) for leg in intent.legs]


def order_of(intent, status=None, *, filled: bool = True, now: datetime | None = None):
    """The Order the path would make of ``intent`` (order id = its tag), FILLED by default."""
    from engine.model import Order, OrderStatus

    now = now or datetime(2024, 3, 1, 21, tzinfo=UTC)
    return Order(order_id=f"o-{intent.tag}", client_order_id=f"c-{intent.tag}", legs=intent.legs,
                 quantity=intent.quantity, order_type=intent.order_type, limit_price=intent.limit_price,
                 tif=intent.tif, status=status or OrderStatus.FILLED, created_at=now, updated_at=now,
                 source=intent.source, strategy_id=intent.strategy_id, tag=intent.tag,
                 filled_quantity=intent.quantity if filled else 0)


def fills_of(order, prices: list[str], now: datetime | None = None):
    """One fill per leg of ``order`` at ``prices`` (per unit), the whole quantity × the leg's ratio."""
    from decimal import Decimal

    from engine.model import Fill

    now = now or datetime(2024, 3, 1, 21, tzinfo=UTC)
    return [Fill(fill_id=f"f-{order.order_id}-{i}", order_id=order.order_id, instrument=leg.instrument,
                 quantity=leg.signed_ratio * order.quantity, price=Decimal(p), ts=now, leg_index=i)
            for i, (leg, p) in enumerate(zip(order.legs, prices, strict=True))]


def fill(strategy, ctx, intent, prices: list[str]):
    """Report ``intent`` filled at ``prices`` to ``strategy``; returns what it answers."""
    order = order_of(intent, now=ctx.now())
    return strategy.on_order(ctx, order, fills_of(order, prices, ctx.now()))


_HISTORIES: dict[tuple, object] = {}


def sim_year(seed: int = 7, start: str = "2021-01-04", years: float = 1.0):
    """One seeded year of the simulated SPY market (generated once per test process)."""
    key = (seed, start, years)
    if key not in _HISTORIES:
        from datetime import date

        from engine.market.simulated.history import generate_daily_history

        _HISTORIES[key] = generate_daily_history("SPY", years=years, seed=seed, start=date.fromisoformat(start))
    return _HISTORIES[key]


def run_backtest(name: str, history, params: dict | None = None, **config):
    """A backtest of strategy ``name`` over ``history`` through the full order path (risk checks on), with
    lookbacks short enough for a one-year history to have an IV rank after a month."""
    from engine.backtest.config import BacktestConfig
    from engine.backtest.runner import Backtest

    cfg = BacktestConfig(strategy=name, symbol="SPY", iv_lookback=60, iv_min_history=20, params=params or {},
                         **config)
    return Backtest(cfg, history).run()


def entry_denials(result) -> tuple[int, int]:
    """(entry orders, of which denied) of a backtest result."""
    opens = [o for o in result.orders if o["tag"].endswith(":open")]
    return len(opens), sum(1 for o in opens if o["status"] == "denied")
