"""The pre-trade risk engine: every order on the one path is checked here, synchronously.

``check(order)`` evaluates **every** check on the *projected* portfolio (positions + working orders + this
order) and returns a :class:`RiskDecision` listing each result with its numbers. When all pass (and
``consume=True``) the counters update in the same synchronous call — a rate-limit token is taken, the
duplicate fingerprint recorded and the order's exposure reserved — so a burst of orders on one loop cannot
slip through between check and update.

Checks (names as they appear in ``OrderDenied.checks``):
``trading_state``, ``order_valid``, ``market_data``, ``max_loss_per_trade``, ``position_size``, ``daily_loss``,
``drawdown``, ``delta``, ``gamma``, ``vega``, ``theta``, ``leverage``, ``open_positions``, ``buying_power``,
``price_collar``, ``order_rate``, ``duplicate``.

Policy: orders that only *reduce* existing positions skip the exposure limits (closing is always allowed
unless HALTED, rate-limited, duplicated or fat-fingered); kill-switch flatten orders pass in HALTED and skip
the price collar, the rate limit and the duplicate guard. Greek limits deny only an order that leaves the projected value beyond the limit *and*
further from zero than before. Cached position Greeks are refreshed by :meth:`refresh` (on position changes
and once per clock tick), so a check costs only the order's own legs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from engine.model import Equity, Index, Instrument, Option, Order, OrderType
from engine.oms.rate_limiter import TokenBucket
from engine.risk.config import RiskConfig
from engine.risk.greeks import FIELDS, Exposure, LegRisk, leg_risk, underlying_of
from engine.risk.market_view import MarketView, key_of
from engine.risk.payoff import CALL, PUT, STOCK, PayoffSummary, summarize
from engine.risk.profile import RiskProfile, profile_for_level
from engine.risk.state import PortfolioState, TradingState

KILL_SWITCH_SOURCE = "kill_switch"


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One check's outcome with its numbers (``value`` vs ``limit`` in ``unit``)."""

    name: str
    passed: bool
    value: float | None = None
    limit: float | None = None
    unit: str = ""
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "value": self.value, "limit": self.limit,
                "unit": self.unit, "message": self.message}


@dataclass(frozen=True, slots=True)
class RiskDecision:
    order_id: str
    passed: bool
    results: tuple[CheckResult, ...]
    reducing: bool = False
    payoff: PayoffSummary | None = None
    order_exposure: Exposure = field(default_factory=Exposure)
    projected: Exposure = field(default_factory=Exposure)
    current: Exposure = field(default_factory=Exposure)
    buying_power_required: float = 0.0

    @property
    def failed(self) -> tuple[CheckResult, ...]:
        return tuple(r for r in self.results if not r.passed)

    def summary(self) -> str:
        return "; ".join(r.message for r in self.failed) if self.failed else "all checks passed"


@dataclass(slots=True)
class _Reservation:
    order_id: str
    underlying: str
    exposure: Exposure
    bp: float
    kinds: np.ndarray
    strikes: np.ndarray
    units: np.ndarray
    mults: np.ndarray
    cost: float
    reducing: bool
    fraction: float = 1.0  # remaining share of the order still working
    vec: np.ndarray = field(default_factory=lambda: np.zeros(len(FIELDS)))


def _leg_arrays(order: Order, quantity: int | None = None) -> tuple[list[Instrument], np.ndarray]:
    q = order.remaining_quantity if quantity is None else quantity
    insts = [leg.instrument for leg in order.legs]
    units = np.array([leg.signed_ratio * q for leg in order.legs], dtype=float)
    return insts, units


def _kinds(insts: list[Instrument]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    kinds = np.array([(CALL if i.is_call else PUT) if isinstance(i, Option) else STOCK for i in insts], dtype=int)
    strikes = np.array([float(i.strike) if isinstance(i, Option) else 0.0 for i in insts], dtype=float)
    mults = np.array([i.multiplier for i in insts], dtype=float)
    return kinds, strikes, mults


def price_multiplier(order: Order) -> int:
    """The multiplier a combo's net price is quoted in: the first option leg's, else 1 (shares)."""
    for leg in order.legs:
        if isinstance(leg.instrument, Option):
            return leg.instrument.multiplier
    return 1


def fingerprint(order: Order) -> tuple[Any, ...]:
    legs = tuple((key_of(leg.instrument), leg.side.value, leg.ratio) for leg in order.legs)
    return (order.source, order.strategy_id, legs, order.quantity, order.order_type.value,
            None if order.limit_price is None else str(order.limit_price))


class RiskEngine:
    """Synchronous pre-trade checks and the counters they update. One instance per engine."""

    def __init__(self, config: RiskConfig | None = None, *, market: MarketView | None = None,
                 portfolio: PortfolioState | None = None,
                 trading_state: Callable[[], TradingState] = lambda: TradingState.ACTIVE,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC),
                 monotonic: Callable[[], float] = time.monotonic, level: float | None = None) -> None:
        self.config = config or RiskConfig()
        self.market = market or MarketView(rate=self.config.risk_free_rate,
                                           dividend_yields=self.config.dividend_yields)
        self.portfolio = portfolio or PortfolioState()
        self.trading_state = trading_state
        self.now = now
        self._monotonic = monotonic
        self._profile = profile_for_level(self.config.level if level is None else level, self.config)
        self.bucket = TokenBucket.per_minute(self._profile.orders_per_minute, self._profile.order_burst, monotonic)
        self._recent: dict[tuple[Any, ...], float] = {}
        self._reservations: dict[str, _Reservation] = {}
        # running aggregates of the reservations (kept exact by add/remove; reset when empty)
        self._w_vec = np.zeros(len(FIELDS))
        self._w_bp = 0.0
        self._w_dd: dict[str, float] = {}
        self._w_open: dict[str, int] = {}
        self._res_by_und: dict[str, set[str]] = {}
        self.estimated_betas: dict[str, float] = {}
        self.peak_equity: float | None = None
        self._cache_key: tuple[int, int] | None = None
        self._pos_risk: LegRisk | None = None
        self._pos_by_und: dict[str, Exposure] = {}
        self._pos_total = Exposure()
        self._pos_groups: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]] = {}
        self.checks_run = 0

    # ---- profile --------------------------------------------------------------------------------
    @property
    def profile(self) -> RiskProfile:
        return self._profile

    def set_level(self, level: float) -> RiskProfile:
        """Move the slider (ValueError outside 0..100). Existing positions are never touched."""
        self._profile = profile_for_level(level, self.config)
        self.bucket.reconfigure(self._profile.orders_per_minute / 60.0, self._profile.order_burst)
        return self._profile

    def beta_of(self, underlying: str) -> float:
        b = self.config.betas.get(underlying)
        if b is None:
            b = self.estimated_betas.get(underlying, 1.0)
        return float(b)

    # ---- cached position aggregates -------------------------------------------------------------
    def refresh(self, force: bool = False) -> None:
        """Recompute position Greeks and payoff groups (cheap no-op when nothing changed)."""
        key = (self.portfolio.version, self.market.version)
        if not force and key == self._cache_key:
            return
        positions = list(self.portfolio.positions.values())
        insts = [p.instrument for p in positions]
        units = np.array([p.quantity for p in positions], dtype=float)
        risk = leg_risk(insts, units, self.market, self.now(), self.beta_of, self.config.beta_benchmark)
        self._pos_risk = risk
        self._pos_by_und = risk.by_underlying()
        self._pos_total = risk.total()
        groups: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]] = {}
        if positions:
            kinds, strikes, mults = _kinds(insts)
            marks = np.where(np.isfinite(risk.mark), risk.mark, [float(p.avg_price) for p in positions])
            for u in dict.fromkeys(risk.underlying.tolist()):
                m = risk.underlying == u
                cost = float((marks[m] * units[m] * mults[m]).sum())
                groups[str(u)] = (kinds[m], strikes[m], units[m], mults[m], cost)
        self._pos_groups = groups
        self._cache_key = key

    @property
    def position_exposure(self) -> Exposure:
        self.refresh()
        return self._pos_total

    def position_exposure_by_underlying(self) -> dict[str, Exposure]:
        self.refresh()
        return dict(self._pos_by_und)

    @property
    def working_exposure(self) -> Exposure:
        return Exposure(*(float(x) for x in self._w_vec))

    @property
    def reserved_buying_power(self) -> float:
        return self._w_bp

    # ---- helpers --------------------------------------------------------------------------------
    def is_reducing(self, order: Order) -> bool:
        """True when every leg reduces an existing position (opposite sign, not beyond flat)."""
        if not order.legs:
            return False
        for leg in order.legs:
            held = self.portfolio.quantity(key_of(leg.instrument))
            u = leg.signed_ratio * order.remaining_quantity
            if held == 0 or (u > 0) == (held > 0) or abs(u) > abs(held):
                return False
        return True

    def combo_quote(self, order: Order) -> tuple[float, float, float]:
        """(mid, natural, far) net price per combo unit; + = debit. NaN when a leg has no usable quote."""
        mid = nat = far = 0.0
        for leg in order.legs:
            bid, ask = self.market.bid_ask(leg.instrument)
            if not (math.isfinite(bid) and math.isfinite(ask)) or bid < 0 or ask < bid:
                return math.nan, math.nan, math.nan
            s = leg.side.sign * leg.ratio
            mid += s * 0.5 * (bid + ask)
            nat += s * (ask if s > 0 else bid)
            far += s * (bid if s > 0 else ask)
        return mid, nat, far

    def order_payoff(self, order: Order) -> tuple[PayoffSummary, float]:
        """Expiry payoff summary of the order alone and its premium in dollars (+ = paid)."""
        insts, units = _leg_arrays(order)
        legs = (*_kinds(insts), units)
        cost = self._order_cost(order, units)
        return self._payoff(order, legs, cost), cost

    def _payoff(self, order: Order, legs: tuple[np.ndarray, ...], cost: float, *,
                breakevens: bool = True) -> PayoffSummary:
        kinds, strikes, mults, units = legs
        spot = self.market.spot(order.underlying)
        return summarize(kinds, strikes, units, mults, cost, spot, self._profile.stress_move_pct,
                         breakevens=breakevens)

    def _order_cost(self, order: Order, units: np.ndarray) -> float:
        if order.limit_price is not None:
            return float(order.limit_price) * price_multiplier(order) * order.remaining_quantity
        mid = self.combo_quote(order)[0]
        return mid * price_multiplier(order) * order.remaining_quantity

    def estimate_buying_power(self, order: Order, payoff: PayoffSummary, cost: float) -> float:
        """Our buying-power estimate in dollars (≥ 0): max loss when defined risk; Reg-T style otherwise.

        Reg-T for each net-short option: premium + max(20 % × S − OTM amount, 10 % × S (calls) / K (puts)),
        per share × multiplier; stock at 50 % of notional.
        """
        if payoff.defined_risk and math.isfinite(payoff.max_loss):
            return max(0.0, payoff.max_loss)
        spot = self.market.spot(order.underlying)
        req = 0.0
        for leg in order.legs:
            inst = leg.instrument
            u = leg.signed_ratio * order.remaining_quantity
            if isinstance(inst, Option):
                if u >= 0:
                    continue
                k = float(inst.strike)
                otm = max(0.0, k - spot) if inst.is_call else max(0.0, spot - k)
                floor = 0.10 * (spot if inst.is_call else k)
                prem = self.market.mid(inst)
                prem = 0.0 if not math.isfinite(prem) else prem
                req += (prem + max(0.20 * spot - otm, floor)) * inst.multiplier * abs(u)
            elif isinstance(inst, Equity | Index):
                req += 0.5 * abs(u) * spot * inst.multiplier
        return max(req - max(0.0, -cost), payoff.stress_loss, 0.0)

    # ---- the check ------------------------------------------------------------------------------
    def check(self, order: Order, *, consume: bool = True, skip: frozenset[str] = frozenset()) -> RiskDecision:
        """Run every check; on a pass with ``consume`` take a token, record the fingerprint, reserve exposure."""
        self.checks_run += 1
        p = self._profile
        results: list[CheckResult] = []
        add = results.append
        state = self.trading_state()
        is_ks = order.source == KILL_SWITCH_SOURCE
        reducing = self.is_reducing(order)

        # trading state
        if state is TradingState.HALTED and not (is_ks and reducing):
            add(CheckResult("trading_state", False, message="trading is HALTED: only cancels (and kill-switch "
                                                            "flatten orders) are accepted"))
        elif state is TradingState.REDUCING and not reducing:
            add(CheckResult("trading_state", False, message="trading is REDUCING: only orders that reduce "
                                                            "existing positions are accepted"))
        else:
            add(CheckResult("trading_state", True, message=f"trading state {state.value}"))

        # validity
        problems = []
        if order.quantity <= 0 or order.remaining_quantity <= 0:
            problems.append(f"quantity must be positive, got {order.remaining_quantity}")
        if order.order_type is OrderType.LIMIT and order.limit_price is None:
            problems.append("limit order without a limit price")
        if any(isinstance(leg.instrument, Index) for leg in order.legs):
            problems.append("an index itself is not tradable")
        add(CheckResult("order_valid", not problems, message="; ".join(problems) or "order is well formed"))
        if problems:
            return RiskDecision(order.order_id, False, tuple(results), reducing)

        if self._cache_key is None or self._cache_key[0] != self.portfolio.version:
            self.refresh(force=True)  # positions changed; market-only refreshes happen on the clock tick
        nl = self.portfolio.net_liquidation
        und = order.underlying
        insts, units = _leg_arrays(order)
        orisk = leg_risk(insts, units, self.market, self.now(), self.beta_of, self.config.beta_benchmark)
        oexp = orisk.total()
        working = self.working_exposure
        current = self._pos_total + working
        projected = current + oexp
        legs = (*_kinds(insts), units)
        cost = self._order_cost(order, units)
        payoff = self._payoff(order, legs, cost)
        mid = self.combo_quote(order)[0]
        if not math.isfinite(cost):
            cost = 0.0
        bp_req = self.estimate_buying_power(order, payoff, cost)

        # market data and account
        md_problems = []
        if orisk.missing and not reducing:
            md_problems.append(f"no price / implied vol for {', '.join(orisk.missing)}")
        if not (math.isfinite(nl) and nl > 0):
            md_problems.append("no account value (net liquidation unknown)")
        if order.order_type is OrderType.MARKET and not math.isfinite(mid):
            md_problems.append("market order without a usable quote on every leg")
        add(CheckResult("market_data", not md_problems, message="; ".join(md_problems) or "market data available"))
        nl_ok = math.isfinite(nl) and nl > 0
        nl_ = nl if nl_ok else math.nan

        def limit_check(name: str, value: float, limit: float, unit: str, what: str) -> None:
            ok = math.isfinite(value) and value <= limit + 1e-9
            add(CheckResult(name, ok, value, limit, unit,
                            f"{what} {value:,.2f} {unit} {'within' if ok else 'exceeds'} limit {limit:,.2f} {unit}"))

        if not reducing:
            limit_check("max_loss_per_trade", payoff.risk, p.risk_per_trade_pct * nl_, "$",
                        "max loss" if payoff.defined_risk else f"stress loss (±{p.stress_move_pct:.0%})")
            limit_check("position_size", self._underlying_risk(und, legs, cost, payoff), p.max_position_pct * nl_, "$",
                        f"capital at risk in {und}")
            day_loss = -self.portfolio.day_pnl
            limit_check("daily_loss", day_loss, p.max_daily_loss_pct * nl_, "$", "today's loss")
            dd = self.drawdown()
            limit_check("drawdown", dd, p.max_drawdown_pct, "fraction", "drawdown from peak equity")
            for name, field_, limit, unit in (
                ("delta", "beta_delta", p.max_delta, "SPY sh"),
                ("gamma", "beta_gamma", p.max_gamma, "SPY sh/$"),
                ("vega", "vega", p.max_vega_pct * nl_, "$/vol pt"),
                ("theta", "theta", p.max_theta_pct * nl_, "$/day"),
            ):
                cur, proj = getattr(current, field_), getattr(projected, field_)
                ok = math.isfinite(proj) and (abs(proj) <= limit + 1e-9 or abs(proj) <= abs(cur) + 1e-9)
                add(CheckResult(name, ok, proj, limit, unit,
                                f"projected {name} {proj:,.2f} {unit} (now {cur:,.2f}) "
                                f"{'within' if ok else 'exceeds'} limit ±{limit:,.2f}"))
            cur_gross, proj_gross = self._gross(und, oexp.delta_dollars)
            lim = p.leverage_limit * nl_
            ok = math.isfinite(proj_gross) and (proj_gross <= lim + 1e-9 or proj_gross <= cur_gross + 1e-9)
            add(CheckResult("leverage", ok, proj_gross, lim, "$",
                            f"gross delta exposure {proj_gross:,.0f} $ (now {cur_gross:,.0f}) "
                            f"{'within' if ok else 'exceeds'} {p.leverage_limit:.2f}× net liq = {lim:,.0f} $"))
            held = self.open_underlyings()
            count = len(held | {und})
            add(CheckResult("open_positions", count <= p.max_positions, count, p.max_positions, "positions",
                            f"{count} open positions (by underlying) with this order; limit {p.max_positions}"))
            available = self.portfolio.buying_power - self.reserved_buying_power
            ok = math.isfinite(available) and bp_req <= available + 1e-9
            add(CheckResult("buying_power", ok, bp_req, available, "$",
                            f"needs ${bp_req:,.2f} of buying power, ${available:,.2f} available"))

        # price collar: limit vs mid, worse-than-mid side only
        if order.order_type is OrderType.LIMIT and "price_collar" not in skip and not is_ks:
            tick = float(order.legs[0].instrument.tick_size)
            allowed = max(p.collar_ticks * tick, p.collar_pct * abs(mid)) if math.isfinite(mid) else math.nan
            if not math.isfinite(mid):
                add(CheckResult("price_collar", False, None, None, "$",
                                "no usable quote on every leg: cannot check the price against mid"))
            else:
                limit = float(order.limit_price)  # type: ignore[arg-type]
                worse = limit - mid  # + debit convention: paying more than mid is worse
                ok = worse <= allowed + 1e-9
                ticks = worse / tick if tick > 0 else math.nan
                add(CheckResult("price_collar", ok, worse, allowed, "$",
                                f"limit {limit:.2f} is {worse:+.2f} ({ticks:+.0f} ticks, "
                                f"{(worse / abs(mid) if mid else math.inf):+.1%}) from mid {mid:.2f}; "
                                f"allowed {allowed:.2f}"))

        # order rate (peek here; take on pass). Kill-switch flatten orders are never throttled or deduplicated.
        if is_ks:
            skip = skip | {"order_rate", "duplicate"}
        if "order_rate" not in skip:
            tokens = self.bucket.tokens
            add(CheckResult("order_rate", tokens >= 1.0, tokens, 1.0, "tokens",
                            f"order rate limit {p.orders_per_minute:.0f}/min, burst {p.order_burst}: "
                            + ("ok" if tokens >= 1.0 else f"next order allowed in {self.bucket.seconds_until():.2f}s")))

        # duplicate guard
        if "duplicate" not in skip and p.duplicate_window_s > 0:
            fp = fingerprint(order)
            seen = self._recent.get(fp)
            nowm = self._monotonic()
            dup = seen is not None and nowm - seen < p.duplicate_window_s
            add(CheckResult("duplicate", not dup, None if seen is None else nowm - seen, p.duplicate_window_s, "s",
                            "identical order submitted "
                            + (f"{nowm - seen:.2f}s ago (window {p.duplicate_window_s:.1f}s)" if dup else "recently: no")))

        passed = all(r.passed for r in results)
        decision = RiskDecision(order.order_id, passed, tuple(results), reducing, payoff, oexp, projected, current,
                                bp_req)
        if passed and consume:
            if "order_rate" not in skip:
                self.bucket.try_take()
            if "duplicate" not in skip and p.duplicate_window_s > 0:
                self._remember(fingerprint(order))
            self.reserve(order, decision)
        return decision

    def _remember(self, fp: tuple[Any, ...]) -> None:
        nowm = self._monotonic()
        self._recent[fp] = nowm
        if len(self._recent) > 2048:
            window = self._profile.duplicate_window_s
            self._recent = {k: v for k, v in self._recent.items() if nowm - v < window}

    def _underlying_risk(self, und: str, legs: tuple[np.ndarray, ...], cost_: float, payoff: PayoffSummary) -> float:
        """Capital at risk in one underlying after the order: positions + working orders + this order."""
        parts = []
        g = self._pos_groups.get(und)
        if g is not None:
            parts.append(g)
        for oid in self._res_by_und.get(und, ()):
            r = self._reservations[oid]
            if not r.reducing:
                parts.append((r.kinds, r.strikes, r.units * r.fraction, r.mults, r.cost * r.fraction))
        if not parts:
            return payoff.risk
        kinds, strikes, mults, units = legs
        parts.append((kinds, strikes, units, mults, cost_))
        k = np.concatenate([x[0] for x in parts])
        s = np.concatenate([x[1] for x in parts])
        u = np.concatenate([x[2] for x in parts])
        m = np.concatenate([x[3] for x in parts])
        cost = float(sum(x[4] for x in parts))
        if not math.isfinite(cost):
            return math.inf
        return summarize(k, s, u, m, cost, self.market.spot(und), self._profile.stress_move_pct,
                         breakevens=False).risk

    def _delta_dollars_by_underlying(self) -> dict[str, float]:
        out = {u: e.delta_dollars for u, e in self._pos_by_und.items()}
        for u, v in self._w_dd.items():
            out[u] = out.get(u, 0.0) + v
        return out

    def _gross(self, und: str, add_dollars: float) -> tuple[float, float]:
        """(current, projected) Σ|delta dollars| over underlyings when ``add_dollars`` is added to ``und``."""
        by = self._delta_dollars_by_underlying()
        cur = float(sum(abs(v) for v in by.values()))
        proj = cur - abs(by.get(und, 0.0)) + abs(by.get(und, 0.0) + add_dollars)
        return cur, proj

    def open_underlyings(self) -> set[str]:
        held = set(self._pos_by_und) if self._cache_key is not None else {
            underlying_of(p.instrument) for p in self.portfolio.positions.values()}
        held |= {u for u, n in self._w_open.items() if n > 0}
        return held

    def drawdown(self) -> float:
        eq = self.portfolio.net_liquidation
        if self.peak_equity is None or not math.isfinite(eq) or self.peak_equity <= 0:
            return 0.0
        return max(0.0, 1.0 - eq / self.peak_equity)

    # ---- reservations ---------------------------------------------------------------------------
    def reserve(self, order: Order, decision: RiskDecision) -> None:
        """Hold the order's exposure and buying power until it fills, is cancelled or ends."""
        insts, units = _leg_arrays(order)
        kinds, strikes, mults = _kinds(insts)
        cost = self._order_cost(order, units)
        e = decision.order_exposure
        r = _Reservation(order.order_id, order.underlying, e, decision.buying_power_required, kinds, strikes, units,
                         mults, cost if math.isfinite(cost) else 0.0, decision.reducing,
                         vec=np.nan_to_num(np.array([getattr(e, f) for f in FIELDS], dtype=float)))
        self.release(order.order_id)
        self._reservations[order.order_id] = r
        self._res_by_und.setdefault(r.underlying, set()).add(r.order_id)
        if not r.reducing:
            self._w_open[r.underlying] = self._w_open.get(r.underlying, 0) + 1
        self._apply(r, +1.0)

    def _apply(self, r: _Reservation, sign: float) -> None:
        k = sign * r.fraction
        self._w_vec += k * r.vec
        self._w_bp += k * (r.bp if math.isfinite(r.bp) else 0.0)
        self._w_dd[r.underlying] = self._w_dd.get(r.underlying, 0.0) + k * r.vec[FIELDS.index("delta_dollars")]

    def release(self, order_id: str) -> None:
        r = self._reservations.pop(order_id, None)
        if r is None:
            return
        self._apply(r, -1.0)
        ids = self._res_by_und.get(r.underlying)
        if ids is not None:
            ids.discard(order_id)
            if not ids:
                del self._res_by_und[r.underlying]
                self._w_dd.pop(r.underlying, None)
        if not r.reducing:
            self._w_open[r.underlying] -= 1
        if not self._reservations:  # no float drift survives an empty book
            self._w_vec[:] = 0.0
            self._w_bp = 0.0
            self._w_dd.clear()
            self._w_open.clear()

    def take_reservation(self, order_id: str) -> _Reservation | None:
        """Remove and return a reservation (to re-check a modified order in its place)."""
        r = self._reservations.get(order_id)
        if r is not None:
            self.release(order_id)
        return r

    def restore_reservation(self, r: _Reservation | None) -> None:
        if r is None:
            return
        self.release(r.order_id)
        self._reservations[r.order_id] = r
        self._res_by_und.setdefault(r.underlying, set()).add(r.order_id)
        if not r.reducing:
            self._w_open[r.underlying] = self._w_open.get(r.underlying, 0) + 1
        self._apply(r, +1.0)

    def update_fill(self, order: Order) -> None:
        """Shrink a reservation to the unfilled share (the filled part now shows up in positions)."""
        r = self._reservations.get(order.order_id)
        if r is None:
            return
        if order.status.is_terminal or order.remaining_quantity <= 0:
            self.release(order.order_id)
            return
        self._apply(r, -1.0)
        r.fraction = order.remaining_quantity / order.quantity
        self._apply(r, +1.0)

    def has_reservation(self, order_id: str) -> bool:
        return order_id in self._reservations

    @property
    def reservations(self) -> int:
        return len(self._reservations)

    # ---- reports --------------------------------------------------------------------------------
    def headroom(self) -> dict[str, dict[str, float]]:
        """Current value vs limit of each portfolio limit (for the approval preview and the GUI)."""
        self.refresh()
        p = self._profile
        nl = self.portfolio.net_liquidation
        cur = self._pos_total + self.working_exposure
        rows = {
            "delta": (cur.beta_delta, p.max_delta),
            "gamma": (cur.beta_gamma, p.max_gamma),
            "vega": (cur.vega, p.max_vega_pct * nl),
            "theta": (cur.theta, p.max_theta_pct * nl),
            "leverage": (self._gross("", 0.0)[0], p.leverage_limit * nl),
            "daily_loss": (-self.portfolio.day_pnl, p.max_daily_loss_pct * nl),
            "drawdown": (self.drawdown(), p.max_drawdown_pct),
            "open_positions": (float(len(self.open_underlyings())), float(p.max_positions)),
            "buying_power": (self.reserved_buying_power, self.portfolio.buying_power),
        }
        return {k: {"value": float(v), "limit": float(lim), "headroom": float(lim - abs(v))}
                for k, (v, lim) in rows.items()}

    def breaches(self) -> list[dict[str, Any]]:
        """Existing positions/limits already beyond the current profile (lowering the slider reports these)."""
        self.refresh()
        p = self._profile
        nl = self.portfolio.net_liquidation
        out: list[dict[str, Any]] = []
        for name, row in self.headroom().items():
            if name != "buying_power" and abs(row["value"]) > row["limit"] + 1e-9:
                out.append({"scope": "portfolio", "check": name, "value": row["value"], "limit": row["limit"]})
        if math.isfinite(nl) and nl > 0:
            for und, g in self._pos_groups.items():
                kinds, strikes, units, mults, cost = g
                risk = summarize(kinds, strikes, units, mults, cost, self.market.spot(und), p.stress_move_pct).risk
                if risk > p.max_position_pct * nl + 1e-9:
                    out.append({"scope": und, "check": "position_size", "value": risk,
                                "limit": p.max_position_pct * nl,
                                "symbols": [s.symbol for s in self.portfolio.positions.values()
                                            if underlying_of(s.instrument) == und]})
        return out

    def snapshot(self) -> dict[str, Any]:
        """JSON-friendly state for the GUI / CLI: profile, exposures, headroom."""
        self.refresh()
        return {
            "state": self.trading_state().value,
            "profile": self._profile.to_dict(),
            "positions_exposure": self._pos_total.to_dict(),
            "working_exposure": self.working_exposure.to_dict(),
            "by_underlying": {k: v.to_dict() for k, v in self._pos_by_und.items()},
            "headroom": self.headroom(),
            "missing_greeks": list(self._pos_risk.missing) if self._pos_risk else [],
            "net_liquidation": self.portfolio.net_liquidation,
        }

