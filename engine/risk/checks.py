"""The pre-trade checks of :meth:`engine.risk.engine.RiskEngine.check`, one function per check, run from the
table :data:`CHECKS` in its order (after nautilus' ``_check_order`` / ``_check_orders_risk``).

The checks run in five named **stages**; each result is tagged with its stage:

1. ``validate`` — :func:`order_valid`: the order is well formed (:mod:`engine.oms.validation`: legs, bounded
   quantity and price, no index leg, no expired contract). A failure here ends the check: nothing later is
   meaningful for a malformed order, so it runs before the shared :class:`CheckContext` is built.
2. ``trading_state`` — ``trading_state``: HALTED / REDUCING.
3. ``order_risk`` — the order alone: ``market_data``, ``max_loss_per_trade``, ``stop_price``, ``price_collar``.
   A stop order is judged at the price it fills no worse than (:func:`engine.model.worst_price`: a stop-limit's
   limit, a stop's trigger — it becomes a market order there); its trigger must lie beyond the market
   (``stop_price``: a stop already through the mid would fire at once, a fat finger or a wrong side); a
   stop-limit's collar measures the limit from the trigger, where it starts working, not from today's mid.
4. ``portfolio_risk`` — the *projected* portfolio (positions + working orders + this order):
   ``position_size``, ``daily_loss``, ``drawdown``, ``delta``, ``gamma``, ``vega``, ``theta``, ``leverage``,
   ``open_positions``, ``buying_power``, then a hosted strategy's own budget.
5. ``throttle`` — ``order_rate``, ``duplicate``.

Every check after ``validate`` runs, so a denial lists every failed check in this order (the GUI, the audit
log and the tests read them in it). A check yields nothing when it does not apply (a limit order has no
``stop_price``; a reducing order skips the exposure limits). Checks read the engine and never change it: the
counters are updated by ``RiskEngine.check`` itself on a pass.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from engine.model import Equity, Instrument, Order, OrderType, stop_triggered
from engine.oms.validation import order_problem
from engine.risk.decision import CheckResult
from engine.risk.greeks import Exposure, LegRisk
from engine.risk.payoff import PayoffSummary
from engine.risk.state import TradingState

if TYPE_CHECKING:
    from engine.risk.engine import RiskEngine


@dataclass(slots=True)
class CheckContext:
    """What the checks after ``validate`` share, computed once per check."""

    order: Order
    state: TradingState
    is_ks: bool
    reducing: bool
    reduce_problem: str
    skip: frozenset[str]
    nl: float
    und: str
    insts: list[Instrument]
    units: np.ndarray
    orisk: LegRisk
    oexp: Exposure
    current: Exposure
    projected: Exposure
    legs: tuple[np.ndarray, ...]
    cost: float
    payoff: PayoffSummary
    mid: float
    bp_req: float
    natural: float = math.nan

    @property
    def usable_nl(self) -> float:
        """Net liquidation, NaN when unknown or not positive: a limit scaled by it then fails, never passes."""
        return self.nl if math.isfinite(self.nl) and self.nl > 0 else math.nan


#: a check: (engine, context, its stage) -> its results (none when it does not apply)
Check = Callable[["RiskEngine", CheckContext, str], Iterator[CheckResult]]


def order_valid(risk: RiskEngine, order: Order) -> CheckResult | None:
    """``validate``: why a malformed order (or one on an expired contract) goes no further; None when it is
    well formed."""
    try:
        problem = order_problem(order, risk.now())
    except Exception as exc:  # the validator is total; this guards a broken Order object itself
        return CheckResult("order_valid", False, message=f"malformed order: {exc}", stage="validate",
                           code="malformed")
    if problem is None:
        return None
    return CheckResult("order_valid", False, message=problem.message, stage="validate", code=problem.code)


def _limit(stage: str, name: str, value: float, limit: float, unit: str, what: str) -> CheckResult:
    ok = math.isfinite(value) and value <= limit + 1e-9
    return CheckResult(name, ok, value, limit, unit,
                       f"{what} {value:,.2f} {unit} {'within' if ok else 'exceeds'} limit {limit:,.2f} {unit}",
                       stage=stage)


# ---- trading_state -----------------------------------------------------------------------------------
def trading_state(risk: RiskEngine, ctx: CheckContext, stage: str) -> Iterator[CheckResult]:
    """HALTED passes only kill-switch flatten orders that reduce; REDUCING only reducers."""
    state = ctx.state
    if state is TradingState.HALTED and not (ctx.is_ks and ctx.reducing):
        yield CheckResult("trading_state", False, stage=stage, message=(
            "trading is HALTED: only cancels (and kill-switch flatten orders) are accepted"))
    elif state is TradingState.REDUCING and not ctx.reducing:
        yield CheckResult("trading_state", False, stage=stage, message=(
            "trading is REDUCING: only orders that reduce existing positions are accepted "
            f"({ctx.reduce_problem})"))
    else:
        yield CheckResult("trading_state", True, message=f"trading state {state.value}", stage=stage)


# ---- order_risk: the order alone ----------------------------------------------------------------------
def market_data(risk: RiskEngine, ctx: CheckContext, stage: str) -> Iterator[CheckResult]:
    """Every number the later checks need exists: quotes and vols for the legs, the account's value."""
    order = ctx.order
    problems = []
    if ctx.orisk.missing and not ctx.reducing:
        problems.append(f"no price / implied vol for {', '.join(ctx.orisk.missing)}")
    if not (math.isfinite(ctx.nl) and ctx.nl > 0):
        problems.append("no account value (net liquidation unknown)")
    if order.order_type is OrderType.MARKET and not math.isfinite(ctx.mid):
        problems.append("market order without a usable quote on every leg")
    if order.order_type.is_stop and not math.isfinite(ctx.mid):
        problems.append("stop order without a usable quote on every leg: cannot place its trigger")
    yield CheckResult("market_data", not problems, stage=stage, message="; ".join(problems) or "market data available")


def max_loss_per_trade(risk: RiskEngine, ctx: CheckContext, stage: str) -> Iterator[CheckResult]:
    """The order's own max loss (its stress loss when undefined) against the per-trade share of net liq; an
    order with shares counts what it adds to its underlying's risk, so a hedge is not judged as naked stock."""
    if ctx.reducing:
        return
    p = risk.profile
    limit = p.risk_per_trade_pct * ctx.usable_nl
    if any(isinstance(i, Equity) for i in ctx.insts):
        yield _limit(stage, "max_loss_per_trade", share_order_risk(risk, ctx), limit, "$",
                     f"stress loss (±{p.stress_move_pct:.0%}) added to {ctx.und}")
    else:
        yield _limit(stage, "max_loss_per_trade", ctx.payoff.risk, limit, "$",
                     "max loss" if ctx.payoff.defined_risk else f"stress loss (±{p.stress_move_pct:.0%})")


def share_order_risk(risk: RiskEngine, ctx: CheckContext) -> float:
    """The max loss of an order with shares in it: what it adds to its underlying's capital at risk.

    Why: shares alone have a stress loss (15 % of their value), but a delta hedge lowers the loss of the
    options it hedges — judged alone, every hedge of a long straddle would look like a naked stock trade.
    A stock purchase with nothing else held adds its full stress loss, as before."""
    after = risk.underlying_risk(ctx.und, ctx.legs, ctx.cost, ctx.payoff)
    before = risk.underlying_risk(ctx.und, None, 0.0, ctx.payoff)
    if not (math.isfinite(after) and math.isfinite(before)):
        return after
    return max(after - before, 0.0)


def stop_price(risk: RiskEngine, ctx: CheckContext, stage: str) -> Iterator[CheckResult]:
    """A stop's trigger lies beyond the market: one already through the mid would fire at once."""
    order = ctx.order
    if not (order.order_type.is_stop and order.stop_price is not None and math.isfinite(ctx.mid)):
        return
    stop = float(order.stop_price)
    fired = stop_triggered(stop, ctx.mid)
    yield CheckResult("stop_price", not fired, ctx.mid - stop, 0.0, "$", stage=stage, message=(
        f"stop {stop:.2f} is at or through the market (net mid {ctx.mid:.2f}): it would trigger at once "
        "(a buy stop goes above the market, a sell stop below)" if fired else
        f"stop {stop:.2f} triggers {stop - ctx.mid:.2f} beyond the net mid {ctx.mid:.2f}"))


def stop_limit_collar(risk: RiskEngine, ctx: CheckContext, stage: str) -> Iterator[CheckResult]:
    """``price_collar`` of a stop-limit: its limit measured from the trigger, where it starts working."""
    order, p = ctx.order, risk.profile
    if order.order_type is not OrderType.STOP_LIMIT or order.limit_price is None or order.stop_price is None \
            or "price_collar" in ctx.skip:
        return
    tick = float(order.legs[0].instrument.tick_size)
    stop, limit = float(order.stop_price), float(order.limit_price)
    allowed = max(p.collar_ticks * tick, p.collar_pct * abs(stop))
    worse = limit - stop  # + debit convention: a limit paying more than the trigger is worse
    yield CheckResult("price_collar", worse <= allowed + 1e-9, worse, allowed, "$", stage=stage,
                      message=f"stop-limit {limit:.2f} is {worse:+.2f} from its stop {stop:.2f}; allowed {allowed:.2f}")


def limit_collar(risk: RiskEngine, ctx: CheckContext, stage: str) -> Iterator[CheckResult]:
    """``price_collar`` of a limit order: its price against mid, on the worse-than-mid side only; a reducing
    order at or inside natural passes (getting out at the touch is the market's price, not a fat finger)."""
    order, p = ctx.order, risk.profile
    # a limit order without a price never gets here: ``validate`` denied it
    if order.order_type is not OrderType.LIMIT or order.limit_price is None or "price_collar" in ctx.skip:
        return
    tick = float(order.legs[0].instrument.tick_size)
    mid = ctx.mid
    if not math.isfinite(mid):
        yield CheckResult("price_collar", False, None, None, "$", stage=stage, message=(
            "no usable quote on every leg: cannot check the price against mid"))
        return
    allowed = max(p.collar_ticks * tick, p.collar_pct * abs(mid))
    limit = float(order.limit_price)
    worse = limit - mid  # + debit convention: paying more than mid is worse
    ticks = worse / tick if tick > 0 else math.nan
    text = (f"limit {limit:.2f} is {worse:+.2f} ({ticks:+.0f} ticks, "
            f"{(worse / abs(mid) if mid else math.inf):+.1%}) from mid {mid:.2f}")
    if ctx.reducing and math.isfinite(ctx.natural) and limit <= ctx.natural + 1e-9:
        # a stop or an exit in a wide market must not be held open by the collar (docs/risk-and-orders.md)
        yield CheckResult("price_collar", True, worse, max(allowed, ctx.natural - mid), "$", stage=stage,
                          message=f"{text}; reducing order at or inside natural {ctx.natural:.2f}: allowed")
    else:
        yield CheckResult("price_collar", worse <= allowed + 1e-9, worse, allowed, "$", stage=stage,
                          message=f"{text}; allowed {allowed:.2f}")


# ---- portfolio_risk: the projected portfolio (exposure limits skip reducing orders) ---------------------
def position_size(risk: RiskEngine, ctx: CheckContext, stage: str) -> Iterator[CheckResult]:
    """Capital at risk in the order's underlying, positions and working orders included."""
    if not ctx.reducing:
        yield _limit(stage, "position_size", risk.underlying_risk(ctx.und, ctx.legs, ctx.cost, ctx.payoff),
                     risk.profile.max_position_pct * ctx.usable_nl, "$", f"capital at risk in {ctx.und}")


def daily_loss(risk: RiskEngine, ctx: CheckContext, stage: str) -> Iterator[CheckResult]:
    if not ctx.reducing:
        yield _limit(stage, "daily_loss", -risk.portfolio.day_pnl, risk.profile.max_daily_loss_pct * ctx.usable_nl,
                     "$", "today's loss")


def drawdown(risk: RiskEngine, ctx: CheckContext, stage: str) -> Iterator[CheckResult]:
    if not ctx.reducing:
        yield _limit(stage, "drawdown", risk.drawdown(), risk.profile.max_drawdown_pct, "fraction",
                     "drawdown from peak equity")


def _greek(name: str, field: str, unit: str, limit_of: Callable[[RiskEngine, CheckContext], float]) -> Check:
    """A Greek limit: denies only an order that leaves the projected value beyond the limit *and* further from
    zero than before (a hedge of a portfolio already over its limit passes)."""

    def check(risk: RiskEngine, ctx: CheckContext, stage: str) -> Iterator[CheckResult]:
        if ctx.reducing:
            return
        limit = limit_of(risk, ctx)
        cur, proj = getattr(ctx.current, field), getattr(ctx.projected, field)
        ok = math.isfinite(proj) and (abs(proj) <= limit + 1e-9 or abs(proj) <= abs(cur) + 1e-9)
        yield CheckResult(name, ok, proj, limit, unit, stage=stage, message=(
            f"projected {name} {proj:,.2f} {unit} (now {cur:,.2f}) "
            f"{'within' if ok else 'exceeds'} limit ±{limit:,.2f}"))

    check.__name__ = check.__qualname__ = name
    return check


delta = _greek("delta", "beta_delta", "SPY sh", lambda risk, ctx: risk.profile.max_delta)
gamma = _greek("gamma", "beta_gamma", "SPY sh/$", lambda risk, ctx: risk.profile.max_gamma)
vega = _greek("vega", "vega", "$/vol pt", lambda risk, ctx: risk.profile.max_vega_pct * ctx.usable_nl)
theta = _greek("theta", "theta", "$/day", lambda risk, ctx: risk.profile.max_theta_pct * ctx.usable_nl)


def leverage(risk: RiskEngine, ctx: CheckContext, stage: str) -> Iterator[CheckResult]:
    """Gross delta dollars over all underlyings against a multiple of net liq (never denies a reduction of it)."""
    if ctx.reducing:
        return
    p = risk.profile
    cur_gross, proj_gross = risk.gross_delta_dollars(ctx.und, ctx.oexp.delta_dollars)
    lim = p.leverage_limit * ctx.usable_nl
    ok = math.isfinite(proj_gross) and (proj_gross <= lim + 1e-9 or proj_gross <= cur_gross + 1e-9)
    yield CheckResult("leverage", ok, proj_gross, lim, "$", stage=stage, message=(
        f"gross delta exposure {proj_gross:,.0f} $ (now {cur_gross:,.0f}) "
        f"{'within' if ok else 'exceeds'} {p.leverage_limit:.2f}× net liq = {lim:,.0f} $"))


def open_positions(risk: RiskEngine, ctx: CheckContext, stage: str) -> Iterator[CheckResult]:
    if ctx.reducing:
        return
    limit = risk.profile.max_positions
    count = len(risk.open_underlyings() | {ctx.und})
    yield CheckResult("open_positions", count <= limit, count, limit, "positions",
                      f"{count} open positions (by underlying) with this order; limit {limit}", stage=stage)


def buying_power(risk: RiskEngine, ctx: CheckContext, stage: str) -> Iterator[CheckResult]:
    """As the broker decides: an order that frees buying power always passes; reducing orders are checked too."""
    if "buying_power" in ctx.skip:
        return
    bp_req = ctx.bp_req
    available = risk.portfolio.buying_power - risk.reserved_buying_power
    ok = math.isfinite(bp_req) and (bp_req <= 1e-9 or (math.isfinite(available) and bp_req <= available + 1e-9))
    yield CheckResult("buying_power", ok, bp_req, available, "$", stage=stage, message=(
        f"needs ${bp_req:,.2f} of buying power, ${available:,.2f} available"))


def strategy_budget(risk: RiskEngine, ctx: CheckContext, stage: str) -> Iterator[CheckResult]:
    """A strategy's own budget (capital, loss today, open trades) and account, when a host registered one;
    the host's results carry their own names and stage."""
    if risk.strategy_budget is None or not ctx.order.strategy_id or ctx.is_ks:
        return
    yield from risk.strategy_budget(ctx.order, ctx.reducing, float(ctx.payoff.risk))


# ---- throttle ---------------------------------------------------------------------------------------------
def order_rate(risk: RiskEngine, ctx: CheckContext, stage: str) -> Iterator[CheckResult]:
    """The token bucket, peeked: the token is taken only when the whole check passes."""
    if "order_rate" in ctx.skip:
        return
    p, tokens = risk.profile, risk.bucket.tokens
    yield CheckResult("order_rate", tokens >= 1.0, tokens, 1.0, "tokens", stage=stage, message=(
        f"order rate limit {p.orders_per_minute:.0f}/min, burst {p.order_burst}: "
        + ("ok" if tokens >= 1.0 else f"next order allowed in {risk.bucket.seconds_until():.2f}s")))


def duplicate(risk: RiskEngine, ctx: CheckContext, stage: str) -> Iterator[CheckResult]:
    """The same order (legs, quantity, type, prices, source) again within the window: a double click."""
    window = risk.profile.duplicate_window_s
    if "duplicate" in ctx.skip or window <= 0:
        return
    age = risk.seconds_since_identical(ctx.order)
    dup = age is not None and age < window
    yield CheckResult("duplicate", not dup, age, window, "s", stage=stage, message="identical order submitted " + (
        f"{age:.2f}s ago (window {window:.1f}s)" if dup else "recently: no"))


#: every check after ``validate``, with its stage, in the order a decision lists them
CHECKS: tuple[tuple[str, Check], ...] = (
    ("trading_state", trading_state),
    ("order_risk", market_data),
    ("order_risk", max_loss_per_trade),
    ("order_risk", stop_price),
    ("order_risk", stop_limit_collar),
    ("order_risk", limit_collar),
    ("portfolio_risk", position_size),
    ("portfolio_risk", daily_loss),
    ("portfolio_risk", drawdown),
    ("portfolio_risk", delta),
    ("portfolio_risk", gamma),
    ("portfolio_risk", vega),
    ("portfolio_risk", theta),
    ("portfolio_risk", leverage),
    ("portfolio_risk", open_positions),
    ("portfolio_risk", buying_power),
    ("portfolio_risk", strategy_budget),
    ("throttle", order_rate),
    ("throttle", duplicate),
)


def run_checks(risk: RiskEngine, ctx: CheckContext) -> list[CheckResult]:
    """Every check of :data:`CHECKS` on one order, in order; none stops the others."""
    out = [CheckResult("order_valid", True, message="order is well formed", stage="validate")]
    for stage, check in CHECKS:
        out.extend(check(risk, ctx, stage))
    return out
