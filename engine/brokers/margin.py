"""Buying power and margin of the paper account (Reg-T style, per underlying).

Per underlying, options are margined as one group:

1. short calls not covered by long calls or long shares, and short puts not covered by long puts, are
   *naked*: each uses the standard Reg-T formula per contract ``multiplier × (mark + max(p·S − OTM,
   m·X))`` with p = 20 % (15 % for broad-based indices), m = 10 % and X = S for calls, the strike for
   puts; the riskiest ones (lowest call strikes, highest put strikes) count as the naked ones;
2. what remains is defined risk: its requirement is the worst loss of its expiry payoff over every
   underlying price (evaluated at 0 and at each strike; the payoff is linear in between and bounded
   beyond), i.e. the spread width for verticals, the wider side for iron condors. Calendars are
   treated as if all legs expired together (conservative for long calendars).

The requirement is the lesser of that and margining every short as naked (a very wide spread never
needs more than its short leg alone).

Buying power = cash + (1 − m_s)·long stock − (1 + m_s)·short stock − option requirement, where m_s is
the stock margin (Reg-T initial 50 %; 100 % in a cash account): a long share costs half its value, a short
sale keeps its proceeds and needs another 50 % (150 % in all). Long options are paid in full and lend nothing.
The account's maintenance requirement counts shares at the maintenance rates instead (25 % long, 30 % short).
Long shares cover short calls (100 per contract); short shares are not counted as covering short puts
(conservative: the put stays margined as naked).

This is the **one** margin model: the paper exchange margins its account with it and the risk engine's
``buying_power`` check estimates an order's need with it (:func:`order_effect`: the same positions, the same
fill estimate at the touch, the same :class:`MarginRules`), so an order that passes the risk engine's check is
not then refused by the paper broker for buying power. The rules are written out in docs/trading-rules.md.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

#: broad-based index underlyings (the index rate applies; their options are cash settled)
DEFAULT_INDEX_SYMBOLS = ("SPX", "NDX", "RUT", "XSP", "VIX", "DJX", "OEX")
NAKED_EQUITY_PCT = 0.20
NAKED_INDEX_PCT = 0.15
NAKED_MIN_PCT = 0.10
STOCK_MARGIN = 0.50
#: maintenance of stock positions (FINRA 4210 minimums): 25 % of long, 30 % of short market value
LONG_STOCK_MAINTENANCE = 0.25
SHORT_STOCK_MAINTENANCE = 0.30


@dataclass(frozen=True, slots=True)
class OptionHolding:
    strike: float
    is_call: bool
    contracts: int  # signed
    multiplier: int
    mark: float  # per unit


def naked_requirement(strike: float, is_call: bool, spot: float, mark: float, multiplier: int,
                      pct: float, min_pct: float) -> float:
    """Reg-T requirement of one naked short contract, dollars."""
    otm = max(strike - spot, 0.0) if is_call else max(spot - strike, 0.0)
    floor = min_pct * (spot if is_call else strike)
    return multiplier * (max(mark, 0.0) + max(pct * spot - otm, floor))


def option_requirement(holdings: Iterable[OptionHolding], spot: float, shares: int, *, index: bool,
                       naked_pct: float = 0.20, index_pct: float = 0.15, min_pct: float = 0.10) -> float:
    """Margin requirement (dollars, ≥ 0) of one underlying's options, with ``shares`` of the underlying."""
    hs = [h for h in holdings if h.contracts != 0]
    if not hs:
        return 0.0
    pct = index_pct if index else naked_pct
    # expand into unit lots (one contract each) so coverage can be assigned lot by lot
    calls_long = sorted((h for h in hs if h.is_call and h.contracts > 0), key=lambda h: h.strike)
    puts_long = sorted((h for h in hs if not h.is_call and h.contracts > 0), key=lambda h: -h.strike)
    calls_short = sorted((h for h in hs if h.is_call and h.contracts < 0), key=lambda h: h.strike)
    puts_short = sorted((h for h in hs if not h.is_call and h.contracts < 0), key=lambda h: -h.strike)
    n_call_long = sum(h.contracts for h in calls_long)
    n_put_long = sum(h.contracts for h in puts_long)
    mult = hs[0].multiplier
    covered_by_shares = max(shares, 0) // mult if mult > 0 else 0
    naked = 0.0
    remaining: list[OptionHolding] = list(calls_long) + list(puts_long)
    # calls: uncovered = short calls − long calls − covering shares; the lowest strikes are the naked ones
    uncovered_calls = max(-sum(h.contracts for h in calls_short) - n_call_long - covered_by_shares, 0)
    for h in calls_short:
        n = -h.contracts
        take = min(n, uncovered_calls)
        if take:
            naked += take * naked_requirement(h.strike, True, spot, h.mark, h.multiplier, pct, min_pct)
            uncovered_calls -= take
        if n - take:
            remaining.append(OptionHolding(h.strike, True, -(n - take), h.multiplier, h.mark))
    uncovered_puts = max(-sum(h.contracts for h in puts_short) - n_put_long, 0)
    for h in puts_short:
        n = -h.contracts
        take = min(n, uncovered_puts)
        if take:
            naked += take * naked_requirement(h.strike, False, spot, h.mark, h.multiplier, pct, min_pct)
            uncovered_puts -= take
        if n - take:
            remaining.append(OptionHolding(h.strike, False, -(n - take), h.multiplier, h.mark))
    grouped = naked + defined_risk(remaining, covered_shares=min(covered_by_shares * mult, max(shares, 0)))
    # the lesser of: the grouped requirement, or every short margined as naked (long options ignored)
    all_naked = sum(-h.contracts * naked_requirement(h.strike, h.is_call, spot, h.mark, h.multiplier, pct, min_pct)
                    for h in hs if h.contracts < 0)
    return min(grouped, all_naked)


def defined_risk(holdings: list[OptionHolding], covered_shares: int = 0) -> float:
    """Worst expiry-payoff loss of a bounded option group (dollars, ≥ 0); shares count as payoff S·n."""
    hs = [h for h in holdings if h.contracts != 0]
    if not hs:
        return 0.0
    strikes = np.array([h.strike for h in hs])
    qty = np.array([h.contracts * h.multiplier for h in hs], dtype=float)
    calls = np.array([h.is_call for h in hs])
    grid = np.concatenate(([0.0], np.unique(strikes)))
    s = grid[:, None]
    payoff = np.where(calls, np.maximum(s - strikes, 0.0), np.maximum(strikes - s, 0.0)) @ qty
    if covered_shares:
        # only the shares covering short calls enter, so a covered call's floor is the stock itself
        short_call_units = -qty[calls & (qty < 0)].sum()
        payoff = payoff + np.minimum(covered_shares, short_call_units) * grid
    # slope beyond the highest strike: Σ call units (+ covering shares); ≥ 0 after the naked split
    return float(max(0.0, -payoff.min()))


def buying_power(cash: float, long_stock_value: float, short_stock_value: float, option_req: float,
                 stock_margin: float) -> float:
    """Reg-T style option buying power (dollars); ``short_stock_value`` is a positive amount."""
    return cash + (1.0 - stock_margin) * long_stock_value - (1.0 + stock_margin) * short_stock_value - option_req


# ---- the model both sides use -----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class MarginRules:
    """The numbers of the margin model (paper settings ``[paper]`` carry them; see ``PaperConfig.margin_rules``)."""

    naked_equity_pct: float = NAKED_EQUITY_PCT
    naked_index_pct: float = NAKED_INDEX_PCT
    naked_min_pct: float = NAKED_MIN_PCT
    stock_margin: float = STOCK_MARGIN
    long_stock_maintenance: float = LONG_STOCK_MAINTENANCE
    short_stock_maintenance: float = SHORT_STOCK_MAINTENANCE
    #: a cash account: stock is paid in full (no naked options either; the exchange enforces that)
    cash_account: bool = False
    index_symbols: frozenset[str] = field(default_factory=lambda: frozenset(DEFAULT_INDEX_SYMBOLS))

    def is_index(self, underlying: str) -> bool:
        return underlying in self.index_symbols

    @property
    def stock_rate(self) -> float:
        return 1.0 if self.cash_account else self.stock_margin

    def group_requirement(self, underlying: str, spot: float | None, holdings: Iterable[Holding]) -> float:
        """Option requirement of one underlying's holdings (dollars). No price for the underlying (None):
        nothing can be computed and 0 is returned; NaN propagates (the risk engine then denies)."""
        options: list[OptionHolding] = []
        shares = 0
        for h in holdings:
            if h.is_option:
                if h.quantity:
                    options.append(OptionHolding(h.strike, h.is_call, h.quantity, h.multiplier, h.mark))
            else:
                shares += h.quantity * h.multiplier
        if not options or spot is None:
            return 0.0
        if not math.isfinite(spot):
            return math.nan
        return option_requirement(options, spot, shares, index=self.is_index(underlying),
                                  naked_pct=self.naked_equity_pct, index_pct=self.naked_index_pct,
                                  min_pct=self.naked_min_pct)

    def buying_power(self, cash: float, long_stock_value: float, short_stock_value: float,
                     option_req: float) -> float:
        return buying_power(cash, long_stock_value, short_stock_value, option_req, self.stock_rate)

    def stock_maintenance(self, long_stock_value: float, short_stock_value: float) -> float:
        """Maintenance requirement of stock positions (dollars): Reg-T lends against shares at the initial
        rate (50 %) but only calls for more when equity falls below the maintenance rate — 25 % of long and
        30 % of short market value. Fully paid shares in a cash account carry none."""
        if self.cash_account:
            return 0.0
        return self.long_stock_maintenance * long_stock_value + self.short_stock_maintenance * short_stock_value


@dataclass(frozen=True, slots=True)
class Holding:
    """One position of an underlying's group as the margin model sees it (``mark`` per unit)."""

    quantity: int
    multiplier: int
    mark: float
    is_option: bool = True
    strike: float = 0.0
    is_call: bool = False

    def moved(self, dq: int) -> Holding:
        return Holding(self.quantity + dq, self.multiplier, self.mark, self.is_option, self.strike, self.is_call)


@dataclass(frozen=True, slots=True)
class Trade:
    """One leg of an order as it would fill: ``quantity`` signed (buy +), ``price`` per unit."""

    key: str
    underlying: str
    holding: Holding  # the instrument (quantity ignored) with its current mark
    quantity: int
    price: float


@dataclass(frozen=True, slots=True)
class MarginEffect:
    """What an order filled at its estimated prices does to the account (dollars)."""

    requirement_before: float
    requirement_after: float
    cash_change: float
    buying_power_change: float  # negative when the order uses buying power
    requirements_after: dict[str, float]  # per underlying touched


def _stock_values(holdings: Iterable[Holding]) -> tuple[float, float]:
    long_v = short_v = 0.0
    for h in holdings:
        if not h.is_option:
            v = h.quantity * h.mark * h.multiplier
            if v >= 0:
                long_v += v
            else:
                short_v -= v
    return long_v, short_v


def order_effect(rules: MarginRules, groups: Mapping[str, Mapping[str, Holding]], spots: Mapping[str, float | None],
                 trades: Iterable[Trade], *, requirements_before: Mapping[str, float] | None = None,
                 cash_change: float | None = None) -> MarginEffect:
    """Buying-power effect of filling ``trades`` on top of ``groups`` (per underlying: key → holding).

    ``requirements_before`` may supply cached requirements of the touched underlyings; ``cash_change``
    overrides the cash the trades move (when no per-leg price exists, the order's net limit)."""
    trades = list(trades)
    after: dict[str, dict[str, Holding]] = {}
    cash = 0.0
    for t in trades:
        book = after.setdefault(t.underlying, dict(groups.get(t.underlying, {})))
        cur = book.get(t.key)
        book[t.key] = cur.moved(t.quantity) if cur is not None else t.holding.moved(t.quantity - t.holding.quantity)
        cash -= t.quantity * t.price * t.holding.multiplier
    if cash_change is not None:
        cash = cash_change
    req_before = req_after = 0.0
    by_und: dict[str, float] = {}
    long0 = short0 = long1 = short1 = 0.0
    for u, book in after.items():
        before = groups.get(u, {})
        if requirements_before is not None and u in requirements_before:
            req_before += requirements_before[u]
        else:
            req_before += rules.group_requirement(u, spots.get(u), before.values())
        by_und[u] = rules.group_requirement(u, spots.get(u), book.values())
        req_after += by_und[u]
        lv, sv = _stock_values(before.values())
        long0, short0 = long0 + lv, short0 + sv
        lv, sv = _stock_values(book.values())
        long1, short1 = long1 + lv, short1 + sv
    m = rules.stock_rate
    change = cash + (1.0 - m) * (long1 - long0) - (1.0 + m) * (short1 - short0) - (req_after - req_before)
    return MarginEffect(req_before, req_after, cash, change, by_und)
