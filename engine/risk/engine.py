"""The pre-trade risk engine: every order on the one path is checked here, synchronously.

``check(order)`` runs the checks of :mod:`engine.risk.checks` — one function per check, in five named stages
(``validate``, ``trading_state``, ``order_risk``, ``portfolio_risk``, ``throttle``), listed there — and
answers a :class:`~engine.risk.decision.RiskDecision` with every check's numbers. When all pass (and
``consume=True``) the counters update in the same synchronous call — a rate-limit token is taken, the
duplicate fingerprint recorded and the order's exposure reserved — so a burst of orders on one loop cannot slip
through between check and update.

Policy:
- An order *reduces* when every leg trades against a held position and, together with the working orders
  already closing that position, does not go beyond flat (nautilus' ``would_reduce_only``, VeighNa's frozen
  positions): holding +1, a working sell-1 leaves nothing for a second sell-1.
- Reducing orders skip the exposure limits (closing is always allowed unless HALTED, rate-limited, duplicated,
  fat-fingered or short of buying power); the price collar passes a reducing limit at or inside the combo's
  natural price (the touch), so an exit in a wide market is never held open by it; kill-switch flatten orders pass in HALTED and skip the price collar,
  the buying-power check, the rate limit and the duplicate guard.
- Buying power is the paper broker's margin model (:mod:`engine.brokers.margin`): the change in the account's
  buying power if the order filled now at the touch, with the underlying's positions grouped as the broker
  groups them.
- Greek limits deny only an order that leaves the projected value beyond the limit *and* further from zero than
  before. Cached position Greeks are refreshed by :meth:`refresh` (on position changes and once per clock
  tick), so a check costs only the order's own legs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from engine.brokers.margin import MarginRules
from engine.model import (
    Instrument,
    Option,
    Order,
    leg_weights,
    oco_group_of,
    price_multiplier,
    worst_price,
)
from engine.model.orders import bracket_group_of
from engine.oms.rate_limiter import TokenBucket
from engine.risk.buying_power import BuyingPowerEstimator
from engine.risk.checks import CheckContext, order_valid, run_checks
from engine.risk.config import RiskConfig
from engine.risk.decision import CheckResult, RiskDecision
from engine.risk.greeks import FIELDS, Exposure, LegRisk, leg_risk, underlying_of
from engine.risk.market_view import MarketView, key_of
from engine.risk.payoff import CALL, PUT, STOCK, PayoffSummary, summarize
from engine.risk.profile import RiskProfile, profile_for_level
from engine.risk.state import PortfolioState, TradingState

KILL_SWITCH_SOURCE = "kill_switch"


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
    keys: tuple[str, ...] = ()
    #: remaining quantity the units were computed for; ``fraction`` = what is still working of it
    base_remaining: int = 1
    fraction: float = 1.0
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


def fingerprint(order: Order) -> tuple[Any, ...]:
    legs = tuple((key_of(leg.instrument), leg.side.value, leg.ratio) for leg in order.legs)
    return (order.source, order.strategy_id, legs, order.quantity, order.order_type.value,
            None if order.limit_price is None else str(order.limit_price),
            None if order.stop_price is None else str(order.stop_price))


class RiskEngine:
    """Synchronous pre-trade checks and the counters they update. One instance per engine.

    ``margin``: the margin model's numbers (the paper broker's, see ``PaperConfig.margin_rules``)."""

    def __init__(self, config: RiskConfig | None = None, *, market: MarketView | None = None,
                 portfolio: PortfolioState | None = None,
                 trading_state: Callable[[], TradingState] = lambda: TradingState.ACTIVE,
                 now: Callable[[], datetime],
                 monotonic: Callable[[], float] = time.monotonic, level: float | None = None,
                 margin: MarginRules | None = None) -> None:
        self.config = config or RiskConfig()
        self.market = market or MarketView(rate=self.config.risk_free_rate,
                                           dividend_yields=self.config.dividend_yields)
        self.portfolio = portfolio or PortfolioState()
        self.trading_state = trading_state
        self.now = now
        self.margin = margin or MarginRules()
        self._monotonic = monotonic
        self._profile = profile_for_level(self.config.level if level is None else level, self.config)
        self.bucket = TokenBucket.per_minute(self._profile.orders_per_minute, self._profile.order_burst, monotonic)
        self._recent: dict[tuple[Any, ...], float] = {}
        self._reservations: dict[str, _Reservation] = {}
        #: one-cancels-other groups among the reservations (``engine.model.oco_group_of`` of the order's tag):
        #: siblings close the same quantity only once, since at most one of them fills
        self._oco_members: dict[str, set[str]] = {}
        #: native brackets' entries among the reservations (group id → order id): their exits close the position
        #: the entry would open, which the venue holds for them until the entry fills
        self._bracket_entries: dict[str, str] = {}
        # running aggregates of the reservations (kept exact by add/remove; reset when empty)
        self._w_vec = np.zeros(len(FIELDS))
        self._w_bp = 0.0
        self._w_dd: dict[str, float] = {}
        self._w_open: dict[str, int] = {}
        self._w_buy: dict[str, float] = {}  # instrument key -> units working orders would buy
        self._w_sell: dict[str, float] = {}  # instrument key -> units working orders would sell
        self._res_by_und: dict[str, set[str]] = {}
        self.estimated_betas: dict[str, float] = {}
        self.peak_equity: float | None = None
        self._cache_key: tuple[int, int] | None = None
        self._pos_risk: LegRisk | None = None
        self._pos_by_und: dict[str, Exposure] = {}
        self._pos_total = Exposure()
        self._pos_groups: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]] = {}
        self._pos_keys: dict[str, list[str]] = {}  # underlying -> position keys (the margin model's group)
        self._buying_power = BuyingPowerEstimator()  # the margin groups before an order, cached
        self.checks_run = 0
        #: a strategy's budget and account, checked for orders carrying a ``strategy_id``: (order, reducing,
        #: order max loss $) -> failed/passed checks. The strategy host registers it (engine/strategies/host.py).
        self.strategy_budget: Callable[[Order, bool, float], list[CheckResult]] | None = None

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
        pos_keys: dict[str, list[str]] = {}
        if positions:
            kinds, strikes, mults = _kinds(insts)
            marks = np.where(np.isfinite(risk.mark), risk.mark, [float(p.avg_price) for p in positions])
            for u in dict.fromkeys(risk.underlying.tolist()):
                m = risk.underlying == u
                cost = float((marks[m] * units[m] * mults[m]).sum())
                groups[str(u)] = (kinds[m], strikes[m], units[m], mults[m], cost)
            for p, u in zip(positions, risk.underlying.tolist(), strict=True):
                pos_keys.setdefault(str(u), []).append(key_of(p.instrument))
        self._pos_groups = groups
        self._pos_keys = pos_keys
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

    # ---- reducing -------------------------------------------------------------------------------
    def committed(self, key: str, *, selling: bool, exclude: str | None = None, oco: str | None = None) -> float:
        """Units of ``key`` that working orders (all but ``exclude`` and the members of the one-cancels-other
        group ``oco``) would still sell (or buy)."""
        total = (self._w_sell if selling else self._w_buy).get(key, 0.0)
        skip = set(self._oco_members.get(oco, ())) if oco is not None else set()
        if exclude is not None:
            skip.add(exclude)
        for oid in skip:
            r = self._reservations.get(oid)
            if r is None:
                continue
            for k, u in zip(r.keys, r.units, strict=True):
                if k == key and (u < 0) == selling:
                    total -= abs(u) * r.fraction
        return max(total, 0.0)

    def reduce_problem(self, order: Order) -> str:
        """Why ``order`` does not only reduce positions ("" when it does).

        Each leg must trade against a held position and fit in what is left of it after the working orders
        already closing it (the order's own reservation excepted, so re-checks at approval and at sending
        see it as they saw it at submission)."""
        if not order.legs:
            return "the order has no legs"
        q = order.remaining_quantity
        pending = self._bracket_pending(oco_group_of(order.tag))
        for leg in order.legs:
            key = key_of(leg.instrument)
            held = self.portfolio.quantity(key) + pending.get(key, 0)
            u = leg.signed_ratio * q
            if held == 0:
                return f"{key}: no position to reduce"
            if (u > 0) == (held > 0):
                return f"{key}: {leg.side.value} {abs(u)} adds to the {held:+d} position"
            taken = self.committed(key, selling=u < 0, exclude=order.order_id, oco=oco_group_of(order.tag))
            if abs(u) > abs(held) - taken + 1e-9:
                return (f"{key}: closing {abs(u)} of {held:+d} held, {taken:g} already committed to working "
                        f"closing orders")
        return ""

    def _bracket_pending(self, group: str | None) -> dict[str, int]:
        """What the working entry of native bracket ``group`` would still open, per instrument key: its exits,
        held at the venue until it fills, are judged as closing that (the part already filled is a position)."""
        oid = self._bracket_entries.get(group) if group is not None else None
        r = self._reservations.get(oid) if oid is not None else None
        if r is None:
            return {}
        out: dict[str, int] = {}
        for k, u in zip(r.keys, r.units, strict=True):
            out[k] = out.get(k, 0) + round(float(u) * r.fraction)
        return out

    def is_reducing(self, order: Order) -> bool:
        """True when every leg reduces a held position and, with the working closing orders, not beyond flat."""
        return not self.reduce_problem(order)

    # ---- prices and payoff ----------------------------------------------------------------------
    def combo_quote(self, order: Order) -> tuple[float, float, float]:
        """(mid, natural, far) net price per combo unit; + = debit. NaN when a leg has no usable quote."""
        mid = nat = far = 0.0
        for leg, w in zip(order.legs, leg_weights(order.legs), strict=True):
            bid, ask = self.market.bid_ask(leg.instrument)
            if not (math.isfinite(bid) and math.isfinite(ask)) or bid < 0 or ask < bid:
                return math.nan, math.nan, math.nan
            s = float(w)  # ± ratio; the shares of a mixed order per contract share (engine.model.leg_weights)
            mid += s * 0.5 * (bid + ask)
            nat += s * (ask if s > 0 else bid)
            far += s * (bid if s > 0 else ask)
        return mid, nat, far

    def _payoff(self, order: Order, legs: tuple[np.ndarray, ...], cost: float, *,
                breakevens: bool = True) -> PayoffSummary:
        kinds, strikes, mults, units = legs
        spot = self.market.spot(order.underlying)
        return summarize(kinds, strikes, units, mults, cost, spot, self._profile.stress_move_pct,
                         breakevens=breakevens)

    def _order_cost(self, order: Order, units: np.ndarray) -> float:
        worst = worst_price(order.order_type, order.limit_price, order.stop_price)
        if worst is not None:
            return float(worst) * price_multiplier(order.legs) * order.remaining_quantity
        mid = self.combo_quote(order)[0]
        return mid * price_multiplier(order.legs) * order.remaining_quantity

    # ---- buying power: the broker's margin model ------------------------------------------------
    def buying_power_required(self, order: Order) -> float:
        """Buying power the order uses if it fills now (dollars; negative when it frees some).

        :func:`engine.brokers.margin.order_effect` on the underlying's positions, every leg at the touch (buy at
        the ask, sell at the bid) — exactly the paper broker's estimate; without a quote the single leg's limit,
        or a combo's net limit as the cash."""
        if self._cache_key is None or self._cache_key[0] != self.portfolio.version:
            self.refresh(force=True)  # the position groups; market-only refreshes happen on the clock tick
        return self._buying_power.required(order, market=self.market, portfolio=self.portfolio,
                                           margin=self.margin, position_keys=self._pos_keys)

    # ---- the check ------------------------------------------------------------------------------
    def check(self, order: Order, *, consume: bool = True, skip: frozenset[str] = frozenset()) -> RiskDecision:
        """Run the checks; on a pass with ``consume`` take a token, record the fingerprint, reserve exposure."""
        self.checks_run += 1
        invalid = order_valid(self, order)
        if invalid is not None:
            return RiskDecision(order.order_id, False, (invalid,))
        ctx = self._context(order, skip)
        results = run_checks(self, ctx)
        passed = all(r.passed for r in results)
        decision = RiskDecision(order.order_id, passed, tuple(results), ctx.reducing, ctx.payoff, ctx.oexp,
                                ctx.projected, ctx.current, ctx.bp_req)
        if passed and consume:
            if "order_rate" not in ctx.skip:
                self.bucket.try_take()
            if "duplicate" not in ctx.skip and self._profile.duplicate_window_s > 0:
                self._remember(fingerprint(order))
            self.reserve(order, decision)
        return decision

    def _context(self, order: Order, skip: frozenset[str]) -> CheckContext:
        is_ks = order.source == KILL_SWITCH_SOURCE
        if is_ks:
            skip = skip | {"order_rate", "duplicate", "price_collar", "buying_power"}
        if self._cache_key is None or self._cache_key[0] != self.portfolio.version:
            self.refresh(force=True)  # positions changed; market-only refreshes happen on the clock tick
        problem = self.reduce_problem(order)
        insts, units = _leg_arrays(order)
        orisk = leg_risk(insts, units, self.market, self.now(), self.beta_of, self.config.beta_benchmark)
        oexp = orisk.total()
        current = self._pos_total + self.working_exposure
        legs = (*_kinds(insts), units)
        cost = self._order_cost(order, units)
        payoff = self._payoff(order, legs, cost)
        if not math.isfinite(cost):
            cost = 0.0
        mid, natural, _ = self.combo_quote(order)
        bp_req = self.buying_power_required(order)
        if not problem and self._bracket_pending(oco_group_of(order.tag)):
            # a native bracket's exit closes what its working entry opens, and that entry reserved its buying
            # power already; measured against today's positions it would look like a naked sale
            bp_req = 0.0
        return CheckContext(order=order, state=self.trading_state(), is_ks=is_ks, reducing=not problem,
                            reduce_problem=problem, skip=skip, nl=self.portfolio.net_liquidation,
                            und=order.underlying, insts=insts, units=units, orisk=orisk, oexp=oexp, current=current,
                            projected=current + oexp, legs=legs, cost=cost, payoff=payoff,
                            mid=mid, bp_req=bp_req, natural=natural)

    def seconds_since_identical(self, order: Order) -> float | None:
        """Seconds since an identical order (:func:`fingerprint`) passed, None when none did recently."""
        seen = self._recent.get(fingerprint(order))
        return None if seen is None else self._monotonic() - seen

    def _remember(self, fp: tuple[Any, ...]) -> None:
        nowm = self._monotonic()
        self._recent[fp] = nowm
        if len(self._recent) > 2048:
            window = self._profile.duplicate_window_s
            self._recent = {k: v for k, v in self._recent.items() if nowm - v < window}

    def underlying_risk(self, und: str, legs: tuple[np.ndarray, ...] | None, cost_: float,
                         payoff: PayoffSummary) -> float:
        """Capital at risk in one underlying after the order: positions + working orders + this order
        (``legs`` None: without an order, 0 when nothing is held or working)."""
        parts = []
        g = self._pos_groups.get(und)
        if g is not None:
            parts.append(g)
        for oid in self._res_by_und.get(und, ()):
            r = self._reservations[oid]
            if not r.reducing:
                parts.append((r.kinds, r.strikes, r.units * r.fraction, r.mults, r.cost * r.fraction))
        if not parts:
            return payoff.risk if legs is not None else 0.0
        if legs is not None:
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

    def gross_delta_dollars(self, und: str, add_dollars: float) -> tuple[float, float]:
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
        """Hold the order's exposure, buying power and the quantity it would close until it fills, is
        cancelled or ends. An order that frees buying power reserves none (it may never fill)."""
        insts, units = _leg_arrays(order)
        kinds, strikes, mults = _kinds(insts)
        cost = self._order_cost(order, units)
        e = decision.order_exposure
        bp = decision.buying_power_required
        r = _Reservation(order.order_id, order.underlying, e, max(bp, 0.0) if math.isfinite(bp) else 0.0, kinds,
                         strikes, units, mults, cost if math.isfinite(cost) else 0.0, decision.reducing,
                         keys=tuple(key_of(i) for i in insts), base_remaining=max(order.remaining_quantity, 1),
                         vec=np.nan_to_num(np.array([getattr(e, f) for f in FIELDS], dtype=float)))
        self.release(order.order_id)
        self._add(r)
        group = oco_group_of(order.tag)
        if group is not None:
            self._oco_members.setdefault(group, set()).add(order.order_id)
        entry_of = bracket_group_of(order.tag)
        if entry_of is not None:
            self._bracket_entries[entry_of] = order.order_id

    def _add(self, r: _Reservation) -> None:
        self._reservations[r.order_id] = r
        self._res_by_und.setdefault(r.underlying, set()).add(r.order_id)
        if not r.reducing:
            self._w_open[r.underlying] = self._w_open.get(r.underlying, 0) + 1
        self._apply(r, +1.0)

    def _apply(self, r: _Reservation, sign: float) -> None:
        k = sign * r.fraction
        self._w_vec += k * r.vec
        self._w_bp += k * r.bp
        self._w_dd[r.underlying] = self._w_dd.get(r.underlying, 0.0) + k * r.vec[FIELDS.index("delta_dollars")]
        for key, u in zip(r.keys, r.units, strict=True):
            side = self._w_sell if u < 0 else self._w_buy
            side[key] = side.get(key, 0.0) + k * abs(float(u))

    def release(self, order_id: str) -> None:
        r = self._reservations.pop(order_id, None)
        if r is None:
            return
        for entry_of in [g for g, oid in self._bracket_entries.items() if oid == order_id]:
            del self._bracket_entries[entry_of]
        for group in [g for g, ids in self._oco_members.items() if order_id in ids]:
            self._oco_members[group].discard(order_id)
            if not self._oco_members[group]:
                del self._oco_members[group]
        self._apply(r, -1.0)
        for key in r.keys:  # drop emptied keys so float dust never counts as committed quantity
            for side in (self._w_buy, self._w_sell):
                if key in side and side[key] < 1e-9:
                    del side[key]
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
            self._w_buy.clear()
            self._w_sell.clear()

    def take_reservation(self, order_id: str) -> _Reservation | None:
        """Remove and return a reservation (to re-check a modified order in its place)."""
        r = self._reservations.get(order_id)
        if r is not None:
            self.release(order_id)
        return r

    def restore_reservation(self, r: _Reservation | None, order: Order | None = None) -> None:
        """Put back a reservation taken by :meth:`take_reservation` (a refused modification); with ``order``,
        scaled to what of it is still working now (fills may have arrived meanwhile)."""
        if r is None:
            return
        self.release(r.order_id)
        self._add(r)
        if order is not None:
            self.update_fill(order)

    def update_fill(self, order: Order) -> None:
        """Shrink a reservation to the unfilled share (the filled part now shows up in positions)."""
        r = self._reservations.get(order.order_id)
        if r is None:
            return
        if order.status.is_terminal or order.remaining_quantity <= 0:
            self.release(order.order_id)
            return
        self._apply(r, -1.0)
        r.fraction = min(order.remaining_quantity / r.base_remaining, 1.0)
        self._apply(r, +1.0)

    def has_reservation(self, order_id: str) -> bool:
        return order_id in self._reservations

    def reserved_for(self, order_id: str) -> float:
        """Buying power reserved for one order now (dollars)."""
        r = self._reservations.get(order_id)
        return r.bp * r.fraction if r is not None else 0.0

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
            "leverage": (self.gross_delta_dollars("", 0.0)[0], p.leverage_limit * nl),
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

