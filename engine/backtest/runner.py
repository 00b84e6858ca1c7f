"""The event-driven backtest loop: one strategy over a :class:`ChainHistory`, day by day.

Each step (one quote date, at its 16:00 New York close):

1. the exchange sees the day's quotes: resting orders that the market now crosses fill;
2. the strategy gets ``on_chain`` (and ``on_timer``) and its intents go down the order path
   (OrderFactory → RiskEngine → auto-approval → the paper exchange shared with paper trading);
3. DAY orders still working expire;
4. contracts expiring today settle at intrinsic value from the day's underlying close (exercise and
   assignment per the paper exchange); assigned shares are sold the next step when
   ``liquidate_assignments`` is on;
5. everything held is marked to market (options at mid, else intrinsic; shares at spot), giving the
   day's equity, and the portfolio Greeks are recorded.

Progress is reported through a callback (fraction, ETA) and cancellation is cooperative: the loop
checks the token every step and returns a result with ``status == "cancelled"``.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import numpy as np

from engine.backtest.config import BacktestConfig
from engine.backtest.data import ChainHistory
from engine.backtest.ledger import TradeLedger, TradeRecord
from engine.backtest.metrics import Metrics, TradeStats, compute_metrics, drawdown
from engine.backtest.signals import SignalSeries, compute_signals
from engine.model import Equity, Fill, Leg, Option, Order, OrderIntent, OrderStatus, Side
from engine.strategies.base import SizingLimits, Strategy, market_date


# ---- progress and cancel -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Progress:
    """How far a run is: ``fraction`` in [0, 1], ``eta_s`` seconds left (NaN before it can be estimated)."""

    run_id: str
    fraction: float
    day: str
    eta_s: float
    elapsed_s: float


class CancelToken:
    """Cooperative cancellation. Wrap any object with ``is_set()`` (threading/multiprocessing Event)."""

    def __init__(self, event: Any = None) -> None:
        self._event = event
        self._flag = False

    def cancel(self) -> None:
        self._flag = True
        if self._event is not None:
            self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._flag or (self._event is not None and self._event.is_set())


class BacktestCancelled(Exception):
    pass


# ---- the result ----------------------------------------------------------------------------------------
@dataclass
class BacktestResult:
    """Everything the GUI's results panel and the exports need (picklable, no engine objects inside)."""

    run_id: str
    strategy: str
    params: dict[str, Any]
    config: dict[str, Any]
    status: str  # completed | cancelled | failed
    dates: np.ndarray  # datetime64[D]
    equity: np.ndarray  # dollars, marked to market at each close
    cash: np.ndarray
    drawdown: np.ndarray  # fraction ≤ 0
    daily_pnl: np.ndarray  # dollars, equity change vs the previous close (first day 0)
    greeks: dict[str, np.ndarray]  # delta (shares), gamma, theta ($/day), vega ($/vol point) per day
    regime: np.ndarray
    iv_rank: np.ndarray
    trades: list[TradeRecord]
    orders: list[dict[str, Any]]  # every order the strategy sent, with its final status
    metrics: Metrics
    fees: Decimal
    elapsed_s: float
    error: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        m = self.metrics.as_dict()
        m.pop("per_regime", None)
        return {"run_id": self.run_id, "strategy": self.strategy, "status": self.status, **m}

    def reconciliation(self) -> dict[str, Decimal]:
        """Total P&L vs Σ trade P&L − fees (open trades at their mark), to the cent."""
        closed = sum((t.gross_pnl for t in self.trades if not t.is_open), Decimal(0))
        open_ = sum((t.gross_pnl + Decimal(repr(t.open_value)) for t in self.trades if t.is_open), Decimal(0))
        total = Decimal(repr(float(self.equity[-1] - self.equity[0]))) if len(self.equity) else Decimal(0)
        cents = Decimal("0.01")
        return {"total_pnl": total.quantize(cents), "trades_gross": (closed + open_).quantize(cents),
                "fees": self.fees.quantize(cents),
                "difference": (total - (closed + open_ - self.fees)).quantize(cents)}


# ---- the context the strategy sees ---------------------------------------------------------------------
class BacktestContext:
    """:class:`~engine.strategies.base.StrategyContext` over the backtest's state at the current step."""

    def __init__(self, sizing: SizingLimits) -> None:
        self._now: datetime | None = None
        self._nl = 0.0
        self._ivr = math.nan
        self._regime = "neutral"
        self._sizing = sizing
        self._underlying = ""

    def now(self) -> datetime:
        assert self._now is not None
        return self._now

    def net_liquidation(self) -> float:
        return self._nl

    def iv_rank(self, underlying: str) -> float:
        return self._ivr if underlying == self._underlying else math.nan

    def regime(self, underlying: str) -> str:
        return self._regime

    def sizing(self) -> SizingLimits:
        return self._sizing


ProgressCallback = Callable[[Progress], None]


class Backtest:
    """One run: ``Backtest(config, history, strategy).run(progress, cancel)``.

    ``route`` is the order path into the simulated exchange; by default the paper exchange with the
    config's fee preset and slippage, behind the OMS's OrderFactory and the RiskEngine at the config's
    risk level with auto-approval (see :mod:`engine.backtest.execution`).
    """

    def __init__(self, config: BacktestConfig, history: ChainHistory, strategy: Strategy | None = None, *,
                 route: Any = None, signals: SignalSeries | None = None) -> None:
        from engine import strategies

        self.config = config
        self.history = history
        self.strategy = strategy or strategies.create(config.strategy, {"underlying": history.underlying,
                                                                        **config.params})
        self.run_id = config.run_id or uuid.uuid4().hex[:12]
        self.signals = signals or compute_signals(history, lookback=config.iv_lookback,
                                                  min_history=config.iv_min_history, rate=config.rate,
                                                  dividend_yield=config.dividend_yield)
        if route is None:
            from engine.backtest.execution import PaperRoute

            route = PaperRoute(config, history)
        self.route = route
        self.ledger = TradeLedger()
        self.orders: dict[str, Order] = {}
        self.intents: list[OrderIntent] = []

    # ---- main loop -------------------------------------------------------------------------------
    def run(self, progress: ProgressCallback | None = None, cancel: CancelToken | None = None,
            *, progress_every: int = 21) -> BacktestResult:
        h, cfg, strat = self.history, self.config, self.strategy
        n = h.n_days
        t0 = time.perf_counter()
        equity = np.full(n, np.nan)
        cash = np.full(n, np.nan)
        exposure = np.zeros(n, bool)
        greeks = {k: np.zeros(n) for k in ("delta", "gamma", "theta", "vega")}
        ctx = BacktestContext(self.route.sizing())
        ctx._underlying = h.underlying
        status = "completed"
        error = ""
        last = -1
        try:
            for i in range(n):
                if cancel is not None and cancel.cancelled:
                    status = "cancelled"
                    break
                now = h.timestamp(i)
                chain = h.chain(i)
                self.route.set_market(chain, now)
                ctx._now = now
                ctx._ivr = float(self.signals.iv_rank[i])
                ctx._regime = str(self.signals.regime[i])
                ctx._nl = float(equity[i - 1]) if i else cfg.initial_cash
                if i == 0:
                    strat.on_start(ctx)
                # 1. resting orders meet today's market
                self._book(self.route.on_market(), ctx)
                # 2. assigned shares from yesterday's settlement are sold at today's price
                if cfg.liquidate_assignments:
                    self._liquidate_stock(ctx)
                # 3. the strategy
                intents = list(strat.on_chain(ctx, chain)) + list(strat.on_timer(ctx, now))
                self._send(intents, ctx)
                # 4. DAY orders expire at the close
                self._book(self.route.end_of_day(), ctx)
                # 5. settlement of today's expiries at intrinsic value
                fills = self.route.settle(market_date(now), float(h.spot[i]))
                if fills:
                    self.ledger.on_fills(None, fills, now, regime=ctx._regime, underlying=h.underlying)
                # 6. mark to market
                value, g, held = self.route.mark(i)
                cash[i] = float(self.route.cash())
                equity[i] = cash[i] + value
                exposure[i] = held
                for k in greeks:
                    greeks[k][i] = g.get(k, 0.0)
                last = i
                if progress is not None and (i % progress_every == 0 or i == n - 1):
                    el = time.perf_counter() - t0
                    frac = (i + 1) / n
                    progress(Progress(self.run_id, frac, str(h.dates[i]), el / frac * (1 - frac) if i else math.nan, el))
        except Exception as exc:  # a failing run still returns what it has, with the error
            status = "failed"
            error = f"{type(exc).__name__}: {exc}"
        k = last + 1
        if cfg.close_open_at_end or True:
            self._mark_open_trades(k - 1)
        eq = equity[:k]
        trades = [t for t in self.ledger.trades.values()]
        stats = [TradeStats(pnl=float(t.net_pnl), credit=float(t.credit), regime=t.regime,
                            days_held=(market_date(t.closed_at) - market_date(t.opened_at)).days)
                 for t in trades if not t.is_open]
        metrics = compute_metrics(eq, stats, exposure_days=exposure[:k], fees=float(self.ledger.fees),
                                  regimes=self.signals.regime[:k])
        daily = np.r_[0.0, np.diff(eq)] if k else np.array([])
        return BacktestResult(
            run_id=self.run_id, strategy=strat.name, params=strat.params.model_dump(mode="json"),
            config=cfg.model_dump(mode="json"), status=status, dates=h.dates[:k], equity=eq, cash=cash[:k],
            drawdown=drawdown(eq), daily_pnl=daily, greeks={g: v[:k] for g, v in greeks.items()},
            regime=self.signals.regime[:k], iv_rank=self.signals.iv_rank[:k], trades=trades,
            orders=[_order_row(o) for o in self.orders.values()], metrics=metrics, fees=self.ledger.fees,
            elapsed_s=time.perf_counter() - t0, error=error,
            info={"underlying": h.underlying, "source": h.source, "days": k, "rows": int(h.offsets[k]) if k else 0},
        )

    # ---- helpers ---------------------------------------------------------------------------------
    def _send(self, intents: list[OrderIntent], ctx: BacktestContext) -> None:
        queue = list(intents)
        while queue:
            intent = queue.pop(0)
            self.intents.append(intent)
            for order, fills in self.route.submit(intent):
                queue.extend(self._update(order, fills, ctx))

    def _book(self, updates, ctx: BacktestContext) -> None:
        follow: list[OrderIntent] = []
        for order, fills in updates:
            follow.extend(self._update(order, fills, ctx))
        if follow:
            self._send(follow, ctx)

    def _update(self, order: Order, fills: tuple[Fill, ...], ctx: BacktestContext) -> list[OrderIntent]:
        self.orders[order.order_id] = order
        if fills:
            self.ledger.on_fills(order, fills, ctx.now(), regime=ctx._regime, underlying=self.history.underlying)
        if order.strategy_id != self.strategy.strategy_id:
            return []
        return list(self.strategy.on_order(ctx, order, fills))

    def _liquidate_stock(self, ctx: BacktestContext) -> None:
        for key, pos in self.route.positions().items():
            if pos.quantity == 0 or not isinstance(pos.instrument, Equity):
                continue
            tag = self.ledger.owner.get(key, f"assigned-{key}")
            side = Side.SELL if pos.quantity > 0 else Side.BUY
            intent = OrderIntent(legs=(Leg(pos.instrument, side),), quantity=abs(pos.quantity),
                                 order_type=_market(), source="backtest", strategy_id="backtest",
                                 tag=f"{tag}:liquidate")
            self._send([intent], ctx)

    def _mark_open_trades(self, i: int) -> None:
        if i < 0:
            return
        marks = self.route.marks_by_symbol(i)
        for t in self.ledger.open():
            t.open_value = float(sum(q * marks.get(sym, (0.0, 1))[0] * marks.get(sym, (0.0, 1))[1]
                                     for sym, q in t.holdings.items()))


def _market():
    from engine.model import OrderType

    return OrderType.MARKET


def _order_row(o: Order) -> dict[str, Any]:
    return {
        "order_id": o.order_id, "created_at": o.created_at.isoformat(), "tag": o.tag, "status": o.status.value,
        "quantity": o.quantity, "limit_price": str(o.limit_price) if o.limit_price is not None else "",
        "avg_fill_price": str(o.avg_fill_price) if o.avg_fill_price is not None else "",
        "legs": " / ".join(f"{leg.side.value} {leg.ratio} {leg.symbol}" for leg in o.legs), "reason": o.reason,
    }


def intrinsic(option: Option, spot: float) -> float:
    k = float(option.strike)
    return max(spot - k, 0.0) if option.is_call else max(k - spot, 0.0)


__all__ = [
    "Backtest",
    "BacktestCancelled",
    "BacktestResult",
    "CancelToken",
    "OrderStatus",
    "Progress",
    "intrinsic",
]
