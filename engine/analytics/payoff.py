"""Payoff and risk-profile curves of a set of option legs (an order ticket or selected positions).

Conventions:
- money in dollars; ``units`` are signed contracts (order quantity × leg ratio × side sign: + long);
  every leg carries its own ``multiplier``;
- ``entry`` is the price paid per unit (per share of the option price), so the net premium paid is
  ``Σ units·entry·multiplier`` (positive = debit paid, negative = credit received);
- time: ``expiry_years`` is ACT/365 years from *now* to each leg's expiry; ``days_forward`` moves the
  valuation date forward in calendar days; a leg whose remaining time is ≤ 0 is worth its intrinsic value;
- ``r`` and ``q`` are continuously compounded rate and dividend yield (explicit inputs); ``iv`` is each
  leg's implied vol (0.2 = 20 %), shifted by ``vol_shift`` (absolute, 0.05 = +5 vol points) for scenarios.

Leg values before expiry come from :func:`engine.pricing.bsm.price` (European BSM); the expiry summary
(max profit/loss, breakevens) comes from :func:`engine.risk.payoff.summarize`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

import numpy as np

from engine.model import Equity, Index, Leg, Option, Position, price_multiplier
from engine.pricing import bsm
from engine.pricing.inputs import FloatArray
from engine.risk.payoff import CALL, PUT, STOCK, PayoffSummary, summarize

DAYS_PER_YEAR = 365.0


@dataclass(frozen=True, eq=False)
class PayoffLegs:
    """Columnar legs for payoff maths (arrays of one length; see module conventions)."""

    kind: np.ndarray  # int: engine.risk.payoff STOCK / CALL / PUT
    strike: np.ndarray  # float; NaN for stock
    expiry_years: np.ndarray  # float; +inf for stock
    units: np.ndarray  # float, signed contracts (+ long)
    multiplier: np.ndarray  # float
    entry: np.ndarray  # float, price per unit paid
    iv: np.ndarray  # float, annualised implied vol used before expiry
    labels: tuple[str, ...] = field(default=())
    #: net premium paid in dollars when it is not Σ units·entry·multiplier (an order at its limit price)
    premium: float | None = None

    def __post_init__(self) -> None:
        n = len(self.kind)
        for name in ("strike", "expiry_years", "units", "multiplier", "entry", "iv"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"payoff leg column {name!r} has {len(getattr(self, name))} rows, expected {n}")

    def __len__(self) -> int:
        return len(self.kind)

    @property
    def cost(self) -> float:
        """Net premium paid in dollars (positive = debit, negative = credit)."""
        if self.premium is not None:
            return float(self.premium)
        return float(np.sum(self.units * self.entry * self.multiplier))

    @property
    def first_expiry_years(self) -> float:
        opt = self.expiry_years[self.kind != STOCK]
        return float(opt.min()) if len(opt) else math.nan


def _instrument_kind(inst: object) -> tuple[int, float, object]:
    if isinstance(inst, Option):
        return (CALL if inst.is_call else PUT), float(inst.strike), inst
    if isinstance(inst, Equity | Index):
        return STOCK, math.nan, inst
    raise ValueError(f"cannot build a payoff for instrument {inst!r}")


def payoff_legs(
    instruments: Sequence[object],
    units: Sequence[float] | FloatArray,
    entry: Sequence[float] | FloatArray,
    iv: Sequence[float] | FloatArray,
    now: datetime,
    labels: Sequence[str] = (),
) -> PayoffLegs:
    """Columnar payoff legs from instruments (``Option``/``Equity``/``Index``) and per-leg figures.

    ``entry`` NaN is refused (a payoff needs a price); ``iv`` NaN is allowed: that leg is then valued at
    intrinsic before expiry too, and the caller should say the vol is missing.
    """
    n = len(instruments)
    if not (len(units) == len(entry) == len(iv) == n):
        raise ValueError(f"payoff legs need one units/entry/iv per instrument ({n}), got "
                         f"{len(units)}/{len(entry)}/{len(iv)}")
    kind = np.empty(n, dtype=int)
    strike = np.empty(n)
    years = np.empty(n)
    mult = np.empty(n)
    for i, inst in enumerate(instruments):
        k, s, _ = _instrument_kind(inst)
        kind[i] = k
        strike[i] = s
        years[i] = inst.time_to_expiry(now) if isinstance(inst, Option) else math.inf
        mult[i] = float(getattr(inst, "multiplier", 1))
    entry_arr = np.asarray(entry, dtype=float)
    if not np.all(np.isfinite(entry_arr)):
        bad = [str(getattr(instruments[i], "key", instruments[i])) for i in np.nonzero(~np.isfinite(entry_arr))[0].tolist()]
        raise ValueError(f"payoff needs an entry price for every leg; missing for {', '.join(bad)}")
    return PayoffLegs(kind, strike, years, np.asarray(units, float), mult, entry_arr, np.asarray(iv, float),
                      tuple(labels) or tuple(str(getattr(i, "key", i)) for i in instruments))


def legs_from_order(
    legs: Sequence[Leg], quantity: int, entry: Sequence[float] | FloatArray, iv: Sequence[float] | FloatArray,
    now: datetime,
    net_price: float | None = None,
) -> PayoffLegs:
    """Payoff legs of an order: ``quantity`` × each leg's signed ratio; ``entry`` per leg (e.g. leg mids).

    ``net_price``: the order's limit price per combo unit (positive debit); when given, the premium is
    ``net_price × quantity × multiplier`` instead of the sum of the leg entries.
    """
    if quantity <= 0:
        raise ValueError(f"order quantity must be positive, got {quantity}")
    units = [leg.signed_ratio * quantity for leg in legs]
    out = payoff_legs([leg.instrument for leg in legs], units, entry, iv, now)
    if net_price is not None:
        if not math.isfinite(net_price):
            raise ValueError(f"net price must be finite, got {net_price}")
        # the net is quoted in the order's price multiplier: per contract share even when shares lead the legs
        out = replace(out, premium=float(net_price) * quantity * price_multiplier(list(legs)))
    return out


def legs_from_positions(positions: Sequence[Position], iv: Sequence[float], now: datetime) -> PayoffLegs:
    """Payoff legs of held positions at their average price (P&L relative to cost basis)."""
    return payoff_legs(
        [p.instrument for p in positions],
        [float(p.quantity) for p in positions],
        [float(p.avg_price) for p in positions],
        iv,
        now,
    )


def value_at(
    legs: PayoffLegs, spots: np.ndarray, days_forward: float, r: float, q: float, vol_shift: float = 0.0
) -> np.ndarray:
    """Market value in dollars of the legs at each spot, ``days_forward`` calendar days from now.

    Shape ``spots.shape + ()`` summed over legs. Options with time left and a vol use BSM; options at or
    past expiry (or without a vol) are worth intrinsic; stock is worth the spot.
    """
    s = np.asarray(spots, dtype=float)
    flat = s.reshape(-1, 1)
    t_left = legs.expiry_years - days_forward / DAYS_PER_YEAR
    vol = legs.iv + vol_shift
    k = legs.strike
    is_call = legs.kind == CALL
    intrinsic = np.where(
        legs.kind == STOCK, flat, np.where(is_call, np.maximum(flat - k, 0.0), np.maximum(k - flat, 0.0))
    )
    # a leg whose time left is float noise (the valuation date set to its expiry) is worth intrinsic
    live = (legs.kind != STOCK) & (t_left > 1e-12) & np.isfinite(vol) & (vol > 0)
    values = intrinsic
    if live.any():
        priced = bsm.price(is_call[live], flat, k[live], t_left[live], r, q, vol[live])
        values = intrinsic.copy()
        values[:, live] = np.where(np.isfinite(priced), priced, intrinsic[:, live])
    total = (values * (legs.units * legs.multiplier)).sum(axis=1)
    return total.reshape(s.shape)


def pnl_at(
    legs: PayoffLegs, spots: np.ndarray, days_forward: float, r: float, q: float, vol_shift: float = 0.0
) -> np.ndarray:
    """P&L in dollars versus the entry prices (value − net premium paid)."""
    return value_at(legs, spots, days_forward, r, q, vol_shift) - legs.cost


def terminal_cdf(
    strikes: np.ndarray, spot: float, T: float, r: float, q: float, vols: np.ndarray
) -> np.ndarray:
    """Risk-neutral P(S_T ≤ K) on an ascending strike grid from smile-consistent call prices.

    Breeden–Litzenberger: ``P(S_T ≤ K) = 1 + e^{rT} ∂C/∂K`` with ``C(K) = BSM(K, σ(K))`` — the smile's
    skew is included through ``vols`` (σ at each strike, e.g. from the fitted surface). The result is
    clipped to [0, 1] and made non-decreasing.
    """
    k = np.asarray(strikes, dtype=float)
    if len(k) < 3 or not np.all(np.diff(k) > 0):
        raise ValueError("terminal_cdf needs at least 3 strictly ascending strikes")
    if not (T > 0 and spot > 0):
        raise ValueError(f"terminal_cdf needs T > 0 and spot > 0, got T={T}, spot={spot}")
    v = np.asarray(vols, dtype=float)
    calls = bsm.price(True, spot, k, T, r, q, v)
    # outside the smile's data the vol may be NaN: fall back on the nearest finite vol
    if not np.all(np.isfinite(calls)):
        finite = np.isfinite(v) & (v > 0)
        if not finite.any():
            raise ValueError("terminal_cdf needs at least one finite implied vol")
        v = np.interp(k, k[finite], v[finite])
        calls = bsm.price(True, spot, k, T, r, q, v)
    dcdk = np.gradient(calls, k)
    cdf = np.clip(1.0 + math.exp(r * T) * dcdk, 0.0, 1.0)
    return np.maximum.accumulate(cdf)


def probability_of_profit(spots: np.ndarray, pnl: np.ndarray, cdf: np.ndarray) -> float:
    """P(P&L > 0 at expiry) given the P&L and the terminal CDF on the same ascending spot grid.

    Mass below the grid counts with the first point's sign, mass above with the last point's sign.
    """
    s = np.asarray(spots, float)
    p = np.asarray(pnl, float)
    c = np.asarray(cdf, float)
    if not (len(s) == len(p) == len(c)) or len(s) < 2:
        raise ValueError("spots, pnl and cdf must share one length (≥ 2)")
    mass = np.diff(c)
    mid_profit = 0.5 * (p[:-1] + p[1:]) > 0
    prob = float(mass[mid_profit].sum())
    if p[0] > 0:
        prob += float(c[0])
    if p[-1] > 0:
        prob += float(1.0 - c[-1])
    return min(max(prob, 0.0), 1.0)


@dataclass(frozen=True, eq=False)
class PayoffProfile:
    """Everything the payoff panel draws: curves by label on one spot grid, plus the expiry summary."""

    spots: np.ndarray
    curves: dict[str, np.ndarray]  # label -> P&L dollars; "Expiry" and "T+<n>d" / "Now"
    summary: PayoffSummary
    cost: float
    probability_of_profit: float  # NaN when no surface vol was available
    expiry_days: float
    stress: float = 0.15  # the stress move behind ``summary.stress_loss`` (0.15 = ±15 %)
    single_expiry: bool = True  # False: calendars/diagonals, whose max loss is read off the plotted curve

    def max_loss_text(self) -> str:
        """The maximum-loss label every view shows (see :func:`max_loss_text`)."""
        if not self.single_expiry:
            from engine.analytics.formatting import money

            return f"{money(self.summary.max_loss, 0)} within the plotted range"
        return max_loss_text(self.summary, self.stress)


def profile(
    legs: PayoffLegs,
    spot: float,
    r: float,
    q: float,
    *,
    days: Sequence[float] = (0.0,),
    width: float = 0.25,
    points: int = 241,
    vol_at: object = None,
    stress: float = 0.15,
) -> PayoffProfile:
    """P&L curves at the first expiry and at each of ``days`` (calendar days from now) on spot ±``width``.

    ``vol_at``: optional callable ``strikes -> vols`` at the first expiry (the fitted smile); with it the
    probability of profit uses the smile's terminal distribution, without it the legs' average IV.
    """
    if len(legs) == 0:
        raise ValueError("payoff profile needs at least one leg")
    if not (spot > 0 and math.isfinite(spot)):
        raise ValueError(f"payoff profile needs a positive spot, got {spot}")
    if not 0 < width < 1:
        raise ValueError(f"width must be in (0, 1), got {width}")
    strikes = legs.strike[np.isfinite(legs.strike)]
    lo = min(spot * (1 - width), float(strikes.min()) * 0.97 if len(strikes) else spot)
    hi = max(spot * (1 + width), float(strikes.max()) * 1.03 if len(strikes) else spot)
    grid = np.unique(np.concatenate([np.linspace(max(lo, 1e-6), hi, points), strikes, [spot]]))
    t_exp = legs.first_expiry_years
    expiry_days = t_exp * DAYS_PER_YEAR if math.isfinite(t_exp) else math.nan
    curves: dict[str, np.ndarray] = {}
    for d in days:
        if math.isfinite(expiry_days) and d >= expiry_days:
            continue
        label = "Now" if d == 0 else f"T+{d:g}d"
        curves[label] = pnl_at(legs, grid, d, r, q)
    if math.isfinite(expiry_days):
        curves["Expiry"] = pnl_at(legs, grid, expiry_days, r, q)
    else:
        curves["Expiry"] = pnl_at(legs, grid, 0.0, r, q)

    single_expiry = bool(np.all(np.isclose(legs.expiry_years[legs.kind != STOCK], t_exp)))
    if single_expiry:
        summary = summarize(legs.kind, np.nan_to_num(legs.strike), legs.units, legs.multiplier, legs.cost, spot,
                            stress)
    else:  # calendars/diagonals: the far legs keep time value at the first expiry; read the curve
        pnl = curves["Expiry"]
        sign = np.sign(pnl)
        cross = np.nonzero(sign[:-1] * sign[1:] < 0)[0]
        bes = tuple(float(grid[i] - pnl[i] * (grid[i + 1] - grid[i]) / (pnl[i + 1] - pnl[i])) for i in cross)
        summary = PayoffSummary(float(pnl.max()), max(0.0, -float(pnl.min())), bes, False,
                                max(0.0, -float(pnl.min())))

    pop = math.nan
    if math.isfinite(t_exp) and t_exp > 0:
        vols = None
        if callable(vol_at):
            vols = np.asarray(vol_at(grid), dtype=float)
        else:
            opt_iv = legs.iv[(legs.kind != STOCK) & np.isfinite(legs.iv)]
            if len(opt_iv):
                vols = np.full(len(grid), float(opt_iv.mean()))
        if vols is not None and np.isfinite(vols).any():
            cdf = terminal_cdf(grid, spot, t_exp, r, q, vols)
            pop = probability_of_profit(grid, curves["Expiry"], cdf)
    return PayoffProfile(grid, curves, summary, legs.cost, pop, expiry_days, stress, single_expiry)


def max_loss_text(summary: PayoffSummary, stress: float, money_fmt: object = None) -> str:
    """The one label for an order's or positions' maximum loss (ticket, payoff panel, approvals).

    Defined risk reads the loss at expiry. A naked short put's worst case is the underlying going to zero
    — that is what ``summary.max_loss`` holds — so it says so, and adds the loss at the ``stress`` move
    (the figure the risk engine limits), because "to zero" alone hides what a plausible crash costs.
    Naked short calls are unbounded: "unlimited", plus the stress loss.
    """
    from engine.analytics.formatting import money

    fmt = money_fmt if callable(money_fmt) else (lambda v: money(v, 0))
    at_stress = f"{fmt(summary.stress_loss)} at a {100 * stress:.0f}% move"
    if summary.defined_risk:
        return fmt(summary.max_loss)
    if math.isinf(summary.max_loss):
        return f"unlimited ({at_stress})"
    return f"{fmt(summary.max_loss)} to zero ({at_stress})"


def theta_to_expiry(legs: PayoffLegs, spot: float, r: float, q: float) -> tuple[float, float]:
    """(dollars gained from time decay between now and the first expiry at an unchanged spot, hours left).

    With less than a day left, theta per calendar day overstates the decay (it can exceed the whole
    premium: an SPX 0DTE put sold for $1,040 showed +$3,620/day). What can still decay is the remaining
    time value, so 0DTE views show this figure "to expiry" and per hour instead.
    """
    t = legs.first_expiry_years
    if not math.isfinite(t) or t <= 0:
        return 0.0, 0.0
    days = t * DAYS_PER_YEAR
    s = np.array([float(spot)])
    decay = float(value_at(legs, s, days, r, q)[0] - value_at(legs, s, 0.0, r, q)[0])
    return decay, days * 24.0


def theta_text(theta_per_day: float, legs: PayoffLegs | None, spot: float, r: float, q: float) -> str:
    """Theta as the ticket shows it: per day, or to expiry and per hour when less than a day remains."""
    from engine.analytics.formatting import money

    if legs is not None and len(legs) and math.isfinite(spot) and spot > 0:
        t = legs.first_expiry_years
        if math.isfinite(t) and 0 < t * DAYS_PER_YEAR < 1:
            decay, hours = theta_to_expiry(legs, spot, r, q)
            return f"{money(decay, 0, signed=True)} to expiry ({money(decay / hours, 0, signed=True)}/h)"
    if not math.isfinite(theta_per_day):
        return "—"
    return f"{money(theta_per_day, 2, signed=True)}/day"
