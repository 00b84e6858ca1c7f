"""The event-driven backtest loop: one strategy over a :class:`ChainHistory`, day by day.

Each step (one quote date, at its 16:00 New York close):

1. the exchange sees the day's quotes: resting orders that the market now crosses fill;
2. the strategy gets ``on_chain`` (and ``on_timer``) and its intents go down the live order path
   (OrderManager → RiskEngine → ApprovalGate → ModeRouter → PaperBroker → the paper exchange shared with
   paper trading; :mod:`engine.backtest.kernel`);
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

import logging
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
from engine.backtest.metrics import Metrics, TradeStats, compute_metrics, daily_pnl, drawdown
from engine.backtest.signals import SignalSeries, compute_signals
from engine.model import Order, OrderIntent, OrderType
from engine.strategies.base import SizingLimits, Strategy, market_date

log = logging.getLogger(__name__)


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
    daily_pnl: np.ndarray  # dollars, equity change vs the previous close (first day: vs the starting cash)
    greeks: dict[str, np.ndarray]  # delta (shares), gamma, theta ($/day), vega ($/vol point), margin ($) per day
    regime: np.ndarray
    iv_rank: np.ndarray
    trades: list[TradeRecord]
    orders: list[dict[str, Any]]  # every order the strategy sent, with its final status
    metrics: Metrics
    fees: Decimal
    elapsed_s: float
    error: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    times: np.ndarray | None = None  # intraday runs: each step's UTC instant (``daily_pnl`` is then per step)

    def summary(self) -> dict[str, Any]:
        """The headline numbers, plus how the order path ran: whether the pre-trade risk checks were on (a run
        without them says so here, in words) and whether the kill switch halted the run."""
        from engine.backtest.execution import RISK_CHECKS_BYPASSED

        m = self.metrics.as_dict()
        m.pop("per_regime", None)
        out = {"run_id": self.run_id, "strategy": self.strategy, "status": self.status, **m,
               "risk_checks": bool(self.info.get("risk_checks", self.config.get("risk_checks", True))),
               "halted": self.info.get("halt") or None, "risk_limits": self.info.get("risk_limits") or None}
        if not out["risk_checks"]:
            out["warning"] = RISK_CHECKS_BYPASSED
        return out

    def reconciliation(self) -> dict[str, Decimal]:
        """Total P&L vs Σ trade P&L − fees (open trades at their mark), to the cent."""
        closed = sum((t.gross_pnl for t in self.trades if not t.is_open), Decimal(0))
        open_ = sum((t.gross_pnl + Decimal(repr(t.open_value)) for t in self.trades if t.is_open), Decimal(0))
        start = float(self.config.get("initial_cash", self.equity[0] if len(self.equity) else 0.0))
        total = Decimal(repr(float(self.equity[-1] - start))) if len(self.equity) else Decimal(0)
        cents = Decimal("0.01")
        return {"total_pnl": total.quantize(cents), "trades_gross": (closed + open_).quantize(cents),
                "fees": self.fees.quantize(cents),
                "difference": (total - (closed + open_ - self.fees)).quantize(cents) + 0}  # + 0: no "-0.00"


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
        self._closes: dict[Any, float] = {}  # session date -> the underlying's last price seen on it
        self._member_closes: dict[str, dict[Any, float]] = {}  # the same for each member of a multi-underlying run
        self._delta: Callable[[], float] | None = None  # the exchange's delta of everything held, this step
        self._history: Any = None  # the replayed history: its earnings dates answer next_event
        self._events: dict[str, Any] | None = None
        self._ml: Any = None  # engine.ml.signal.MLScorer, built at the first ML-filtered entry

    def now(self) -> datetime:
        assert self._now is not None
        return self._now

    def realized_vol(self, underlying: str, window: int = 20) -> float:
        """Close-to-close vol of the last ``window`` session closes up to this step (NaN: fewer seen), of the
        replayed underlying or of a member replayed beside it."""
        from engine.surface.realized import close_to_close

        closes = self._closes if underlying == self._underlying else self._member_closes.get(underlying, {})
        if len(closes) < window + 1:
            return math.nan
        return float(close_to_close(np.fromiter(closes.values(), dtype=float)[-(window + 1):]))

    def portfolio_delta(self, underlying: str, strategy_id: str | None = None) -> float:
        """Delta in shares of what the account holds (one strategy per run: its positions are the account's)."""
        if underlying != self._underlying or self._delta is None:
            return math.nan
        return float(self._delta())

    def next_event(self, underlying: str) -> Any:
        """The first earnings date of the replayed history on or after this step's day (None: none known)."""
        if self._events is None:
            from engine.market.simulated.earnings import history_events

            self._events = history_events(self._history)
        today = market_date(self.now())
        return next((d for d in self._events.get(underlying, ()) if d >= today), None)

    def ml_probability(self, underlying: str, model: str) -> Any:
        """A registered model's P(win) on features known before this step (:mod:`engine.ml.signal`)."""
        from engine.ml.signal import backtest_reading

        self._ml, reading = backtest_reading(self._ml, underlying, model, self.now())
        return reading

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

    Orders take the live path (OrderManager: OrderFactory → RiskEngine → ApprovalGate, automatic → ModeRouter →
    PaperBroker → the shared :class:`~engine.brokers.paper_exchange.PaperExchange`, with the live KillSwitch), on a
    private event loop driven synchronously by this loop (see :mod:`engine.backtest.kernel`). The strategy object
    is the one that runs live.
    """

    def __init__(self, config: BacktestConfig, history: ChainHistory, strategy: Strategy | None = None, *,
                 signals: SignalSeries | None = None, ml_scorer: Any = None,
                 members: dict[str, ChainHistory] | None = None) -> None:
        from engine import strategies

        self.config = config
        self.history = history
        #: more underlyings replayed on ``history``'s steps (an index's members): their chains reach the strategy
        #: before ``history``'s on each step, and the one exchange marks, settles and risk-checks them all
        self.members = dict(members or {})
        for sym, m in self.members.items():
            if m.n_days != history.n_days or not np.array_equal(m.dates, history.dates) or (
                    (m.times is None) != (history.times is None)) or (
                    m.times is not None and history.times is not None and not np.array_equal(m.times, history.times)):
                raise ValueError(f"member {sym} is not on the steps of {history.underlying}: a multi-underlying "
                                 "replay needs every history on the same snapshots")
        self.strategy = strategy or strategies.create(config.strategy, {"underlying": history.underlying,
                                                                        **config.params})
        self.run_id = config.run_id or uuid.uuid4().hex[:12]
        self.signals = signals or compute_signals(history, lookback=config.iv_lookback,
                                                  min_history=config.iv_min_history, rate=config.rate,
                                                  dividend_yield=config.dividend_yield)
        self.ledger = TradeLedger()
        self.orders: dict[str, Order] = {}
        self.intents: list[OrderIntent] = []
        self.exchange: Any = None
        #: the ML filter's scorer (engine.ml.signal.MLScorer; None: the app registry's default, built lazily)
        self.ml_scorer = ml_scorer

    def run(self, progress: ProgressCallback | None = None, cancel: CancelToken | None = None,
            *, progress_every: int = 21) -> BacktestResult:
        from engine.backtest.execution import RISK_CHECKS_BYPASSED, BacktestExchange

        h, cfg, strat = self.history, self.config, self.strategy
        n = h.n_days
        t0 = time.perf_counter()
        equity = np.full(n, np.nan)
        cash = np.full(n, np.nan)
        exposure = np.zeros(n, bool)
        greeks = {k: np.zeros(n) for k in ("delta", "gamma", "theta", "vega", "margin")}
        status, error, last = "completed", "", -1
        ex = self.exchange = BacktestExchange(cfg, h, risk_limits=dict(getattr(strat, "risk_limits", {}) or {}),
                                              members=self.members)
        ctx = BacktestContext(ex.sizing())
        ctx._underlying = h.underlying
        ctx._history = h
        ctx._ml = self.ml_scorer
        try:
            for i in range(n):
                if cancel is not None and cancel.cancelled:
                    status = "cancelled"
                    break
                chain = h.chain(i)
                others = tuple(m.chain(i) for m in self.members.values())
                now = chain.ts
                ctx._now = now
                ctx._ivr = float(self.signals.iv_rank[i])
                ctx._regime = str(self.signals.regime[i])
                if i == 0:
                    strat.on_start(ctx)
                # 1. the day's market: resting orders may fill against the new quotes
                self._handle(ex.begin_day(i, chain, others), ctx)
                self._handle(ex.check_limits(i), ctx)  # the kill switch sees the account at the new quotes
                ctx._nl = float(ex.cash()) + ex.position_value(i)  # the account as the strategy would see it live
                if math.isfinite(chain.spot):
                    ctx._closes[market_date(now)] = chain.spot
                for c in others:
                    if math.isfinite(c.spot):
                        ctx._member_closes.setdefault(c.underlying, {})[market_date(now)] = c.spot
                ctx._delta = lambda i=i: ex.mark(i)[1].get("delta", 0.0)
                # 2. shares received on assignment are sold at today's close
                if cfg.liquidate_assignments:
                    self._send(ex.liquidation_intents(), ctx)
                # the price walk's interval: a resting attempt that has waited its interval is withdrawn, so the
                # strategy's next attempt (on this snapshot, or the first one past the interval) is one step
                # closer to natural — within the session on an intraday history, not only from day to day
                self._withdraw_stale(ctx)
                # 3. the strategy sees the chain and its timer
                # (the members' chains first: a multi-underlying strategy decides on the replayed one's snapshot)
                self._send([*(x for c in others for x in strat.on_chain(ctx, c)), *strat.on_chain(ctx, chain),
                            *strat.on_timer(ctx, now)], ctx)
                # 4. at a session's close: DAY orders still working expire; early assignment before an
                # ex-dividend date; 5. expiries whose instant has passed settle at intrinsic value
                resend: list[OrderIntent] = []
                if h.session_end(i):
                    # the strategy's next attempts for orders expiring now go out after settlement and the
                    # kill switch's look at the account, as live (where they come back through the bus)
                    resend = self._handle(ex.end_of_day(), ctx, dispatch=False)
                    if cfg.early_assignment and i + 1 < n:
                        self._handle(ex.early_assignments(h.dates[i + 1].astype(object)), ctx)
                self._handle(ex.settle(), ctx)
                self._handle(ex.check_limits(i), ctx)
                self._send(resend, ctx)
                # 6. mark to market at the close
                value, g, held = ex.mark(i)
                cash[i] = float(ex.cash())
                equity[i] = cash[i] + value
                exposure[i] = held
                for greek, v in g.items():
                    greeks[greek][i] = v
                last = i
                if progress is not None and (i % progress_every == 0 or i == n - 1):
                    el = time.perf_counter() - t0
                    frac = (i + 1) / n
                    progress(Progress(self.run_id, frac, str(h.dates[i]), el / frac * (1 - frac) if i else math.nan, el))
        except Exception as exc:  # a failing run still returns what it has, with the error
            log.exception("backtest %s failed", self.run_id)
            status = "failed"
            error = f"{type(exc).__name__}: {exc}"
        finally:
            halt, state = dict(ex.halt), ex.trading_state.value
            ex.close()  # the kernel's loop and store end with the run
        k = last + 1
        marks = ex.marks_by_symbol(k - 1)
        for t in self.ledger.open():
            t.open_value = float(sum(q * marks[sym][0] * marks[sym][1] for sym, q in t.holdings.items() if sym in marks))
        eq = equity[:k]
        trades = list(self.ledger.trades.values())
        stats = [TradeStats(pnl=float(t.net_pnl), credit=float(t.credit), regime=t.regime,
                            days_held=(market_date(t.closed_at) - market_date(t.opened_at)).days)
                 for t in trades if t.closed_at is not None]
        closes = h.session_ends()
        closes = closes[closes < k]  # statistics are daily: each session's last snapshot
        if k and (not len(closes) or closes[-1] != k - 1):
            closes = np.r_[closes, k - 1]  # a cancelled intraday run ends mid-session
        metrics = compute_metrics(eq[closes], stats, exposure_days=exposure[closes], fees=float(self.ledger.fees),
                                  regimes=self.signals.regime[closes], initial=cfg.initial_cash,
                                  margin=greeks["margin"][closes])
        daily = daily_pnl(eq, cfg.initial_cash)
        return BacktestResult(
            run_id=self.run_id, strategy=strat.name, params=strat.params.model_dump(mode="json"),
            config=cfg.model_dump(mode="json"), status=status, dates=h.dates[:k], equity=eq, cash=cash[:k],
            drawdown=drawdown(eq, cfg.initial_cash), daily_pnl=daily, greeks={g: v[:k] for g, v in greeks.items()},
            regime=self.signals.regime[:k], iv_rank=self.signals.iv_rank[:k], trades=trades,
            orders=[_order_row(o) for o in self.orders.values()], metrics=metrics, fees=self.ledger.fees,
            elapsed_s=time.perf_counter() - t0, error=error,
            times=None if h.times is None else h.times[:k],
            info={"underlying": h.underlying, "members": list(self.members), "source": h.source, "days": len(closes), "steps": k,
                  "rows": int(h.offsets[k]) if k else 0, "denied_orders": ex.denials,
                  "denied_by_check": dict(ex.kernel.denied_by_check), "risk_limits": dict(ex.risk_limits),
                  "ledger_cash_flow": str(self.ledger.cash_flow), "risk_checks": cfg.risk_checks,
                  "trading_state": state, "halt": halt,
                  **({"warning": RISK_CHECKS_BYPASSED} if not cfg.risk_checks else {})},
        )

    # ---- order flow ------------------------------------------------------------------------------
    def _withdraw_stale(self, ctx: BacktestContext) -> None:
        """Cancel (through the OMS) the strategy's working limit orders older than its ``pricing.interval_s``.
        The strategy hears the cancel as it would live (``on_order``) and prices its next attempt one walk step
        closer to natural after the interval (:class:`~engine.strategies.base.PriceWalk`)."""
        walk = getattr(self.strategy.params, "pricing", None)
        interval = float(getattr(walk, "interval_s", 0.0) or 0.0)
        if interval <= 0:
            return
        now = ctx.now()
        sid = self.strategy.strategy_id
        stale = [o for o in self.orders.values() if o.strategy_id == sid and o.status.is_working
                 and o.order_type is OrderType.LIMIT and (now - o.created_at).total_seconds() >= interval]
        for o in stale:
            self._handle(self.exchange.cancel(o.order_id, f"price walk: unfilled after {interval:g}s"), ctx)

    def _send(self, intents: list[OrderIntent], ctx: BacktestContext) -> None:
        queue = list(intents)
        while queue:
            intent = queue.pop(0)
            self.intents.append(intent)
            queue.extend(self._handle(self.exchange.submit(intent), ctx, dispatch=False))
        return None

    def _handle(self, reports, ctx: BacktestContext, *, dispatch: bool = True) -> list[OrderIntent]:
        """Book reports in the ledger and pass the strategy's own order updates to it."""
        follow: list[OrderIntent] = []
        for r in reports:
            order = r.order
            if order is None:  # settlement of expiring positions
                self.ledger.on_fills(None, r.fills, ctx.now(), regime=ctx._regime, underlying=self.history.underlying)
                continue
            self.orders[order.order_id] = order
            if r.fills:
                # a member's order books under the member (a multi-underlying run); one underlying: the history's
                und = order.underlying if self.members and order.underlying else self.history.underlying
                self.ledger.on_fills(order, r.fills, ctx.now(), regime=ctx._regime, underlying=und)
            if order.strategy_id == self.strategy.strategy_id and r.kind != "accepted":
                follow.extend(self.strategy.on_order(ctx, order, r.fills))
        if dispatch and follow:
            self._send(follow, ctx)
            return []
        return follow


def _order_row(o: Order) -> dict[str, Any]:
    return {
        "order_id": o.order_id, "created_at": o.created_at.isoformat(), "tag": o.tag, "status": o.status.value,
        "quantity": o.quantity, "limit_price": str(o.limit_price) if o.limit_price is not None else "",
        "avg_fill_price": str(o.avg_fill_price) if o.avg_fill_price is not None else "",
        "legs": " / ".join(f"{leg.side.value} {leg.ratio} {leg.symbol}" for leg in o.legs), "reason": o.reason,
    }


__all__ = ["Backtest", "BacktestContext", "BacktestResult", "CancelToken", "Progress"]
