"""Fee schedules for the paper exchange, with the brokers' published schedules as presets.

All amounts are Decimal dollars. A schedule splits a fill's cost into

- **commission** — per contract (or share), with an optional per-leg cap and a per-order minimum
  (applied cumulatively across partial fills of one order by :class:`OrderFeeTracker`);
- **pass-through fees** — clearing, regulatory (ORF/OCC), FINRA TAF on sales, SEC fee on sale notional
  and proprietary index-option fees, never capped.

Presets (figures as published by each broker; verify before relying on them, they change):

- ``tastytrade`` — tastytrade pricing page (tastytrade.com/pricing), as of 2025: stock and ETF options
  $1.00 per contract to open, capped at $10.00 per leg, $0 to close; index options the same plus the
  exchange's proprietary index fee (SPX ≈ $0.65/contract); clearing $0.10 per contract each way;
  stocks $0 commission; regulatory fees passed through.
- ``ibkr_fixed`` — Interactive Brokers "IBKR Pro Fixed" (interactivebrokers.com, commissions: options and
  stocks), as of 2025: options $0.65 per contract (premium ≥ $0.10), $0.50 (premium $0.05–0.10), $0.25
  (< $0.05), minimum $1.00 per order, exchange/clearing fees included; stocks $0.005 per share, minimum
  $1.00, maximum 1 % of trade value; regulatory fees passed through.
- ``flat_065`` — $0.65 per contract each way, nothing else (the original backtester's assumption).
- ``zero`` — no costs.

Regulatory pass-throughs used by both broker presets (2025 rates, rounded): ORF+OCC $0.03 per contract,
FINRA TAF $0.00279 per contract sold, SEC fee $27.80 per $1,000,000 of sale proceeds (stocks and options).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal

from engine.model import Option

CENT = Decimal("0.01")
_Z = Decimal(0)


def _d(x: str | int | float) -> Decimal:
    return Decimal(str(x))


@dataclass(frozen=True, slots=True)
class FeeSchedule:
    name: str
    source: str
    as_of: str
    option_open: Decimal = _Z  # commission per contract, opening
    option_close: Decimal = _Z  # commission per contract, closing
    option_tiers: tuple[tuple[Decimal, Decimal], ...] = ()  # (premium below, per-contract) overrides, ascending
    option_cap_per_leg: Decimal | None = None
    option_min_per_order: Decimal | None = None
    option_clearing: Decimal = _Z  # per contract, each way
    option_regulatory: Decimal = _Z  # ORF/OCC per contract, each way
    index_fee: Decimal = _Z  # proprietary index-option fee per contract
    finra_taf_per_contract_sold: Decimal = _Z
    stock_per_share: Decimal = _Z
    stock_min_per_order: Decimal | None = None
    stock_max_pct: Decimal | None = None  # of trade value
    stock_clearing_per_share: Decimal = _Z
    sec_fee_rate: Decimal = _Z  # × sale proceeds
    exercise_fee: Decimal = _Z  # per exercise/assignment event (per position)
    index_roots: frozenset[str] = field(default_factory=lambda: frozenset(
        {"SPX", "SPXW", "NDX", "NDXP", "RUT", "RUTW", "VIX", "VIXW", "XSP", "DJX", "OEX", "XEO"}))

    def commission(self, instrument: object, quantity: int, price: Decimal, opening: int) -> Decimal:
        """Raw commission of one fill (before caps/minimums): ``quantity`` > 0 units, ``opening`` of them open."""
        if isinstance(instrument, Option):
            closing = quantity - opening
            per_open, per_close = self.option_open, self.option_close
            for below, rate in self.option_tiers:
                if price < below:
                    per_open = per_close = rate
                    break
            return per_open * opening + per_close * closing
        comm = self.stock_per_share * quantity
        if self.stock_max_pct is not None:
            comm = min(comm, self.stock_max_pct * price * quantity)
        return comm

    def pass_through(self, instrument: object, quantity: int, price: Decimal, is_sale: bool) -> Decimal:
        """Clearing, regulatory and index fees of one fill (never capped)."""
        if isinstance(instrument, Option):
            fee = (self.option_clearing + self.option_regulatory) * quantity
            if instrument.root in self.index_roots or instrument.underlying in self.index_roots:
                fee += self.index_fee * quantity
            if is_sale:
                fee += self.finra_taf_per_contract_sold * quantity
                fee += self.sec_fee_rate * price * quantity * instrument.multiplier
            return fee
        fee = self.stock_clearing_per_share * quantity
        if is_sale:
            fee += self.sec_fee_rate * price * quantity
        return fee

    def cap_for(self, instrument: object) -> Decimal | None:
        return self.option_cap_per_leg if isinstance(instrument, Option) else None

    def minimum_for(self, instrument: object) -> Decimal | None:
        return self.option_min_per_order if isinstance(instrument, Option) else self.stock_min_per_order


#: the regulatory pass-through fees every US broker charges alike (option ORF, FINRA TAF, SEC fee)
_ORF, _TAF, _SEC = _d("0.03"), _d("0.00279"), _d("0.0000278")

PRESETS: dict[str, FeeSchedule] = {
    "tastytrade": FeeSchedule(
        name="tastytrade", source="https://tastytrade.com/pricing/", as_of="2025",
        option_open=_d("1.00"), option_close=_Z, option_cap_per_leg=_d("10.00"), option_clearing=_d("0.10"),
        index_fee=_d("0.65"), option_regulatory=_ORF, finra_taf_per_contract_sold=_TAF, sec_fee_rate=_SEC,
    ),
    "ibkr_fixed": FeeSchedule(
        name="ibkr_fixed", source="https://www.interactivebrokers.com/en/pricing/commissions-options.php",
        as_of="2025", option_open=_d("0.65"), option_close=_d("0.65"),
        option_tiers=((_d("0.05"), _d("0.25")), (_d("0.10"), _d("0.50"))), option_min_per_order=_d("1.00"),
        stock_per_share=_d("0.005"), stock_min_per_order=_d("1.00"), stock_max_pct=_d("0.01"),
        option_regulatory=_ORF, finra_taf_per_contract_sold=_TAF, sec_fee_rate=_SEC,
    ),
    "flat_065": FeeSchedule(name="flat_065", source="original backtester assumption", as_of="-",
                            option_open=_d("0.65"), option_close=_d("0.65")),
    "zero": FeeSchedule(name="zero", source="-", as_of="-"),
}


def fee_schedule(name: str) -> FeeSchedule:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown fee preset {name!r}; choose one of {sorted(PRESETS)}") from None


class OrderFeeTracker:
    """Applies per-leg caps and the per-order minimum cumulatively over an order's partial fills."""

    __slots__ = ("charged_leg", "charged_total", "raw_leg", "raw_total")

    def __init__(self) -> None:
        self.raw_leg: dict[int, Decimal] = {}
        self.charged_leg: dict[int, Decimal] = {}
        self.raw_total = _Z
        self.charged_total = _Z

    def charge(self, schedule: FeeSchedule, legs: list[tuple[int, object, int, Decimal, int]]) -> dict[int, Decimal]:
        """Fees per leg index for one execution report.

        ``legs``: (leg_index, instrument, quantity > 0, price, opening quantity) per leg filled now.
        """
        out: dict[int, Decimal] = {}
        minimum: Decimal | None = None
        for leg_index, inst, qty, price, opening in legs:
            raw = schedule.commission(inst, qty, price, opening)
            cum = self.raw_leg.get(leg_index, _Z) + raw
            self.raw_leg[leg_index] = cum
            cap = schedule.cap_for(inst)
            allowed = min(cum, cap) if cap is not None else cum
            comm = allowed - self.charged_leg.get(leg_index, _Z)
            self.charged_leg[leg_index] = allowed
            out[leg_index] = comm
            m = schedule.minimum_for(inst)
            if m is not None:
                minimum = m if minimum is None else max(minimum, m)
        total = sum(out.values(), _Z)
        self.charged_total += total
        if minimum is not None and self.charged_total < minimum and legs:
            top_up = minimum - self.charged_total
            first = legs[0][0]
            out[first] += top_up
            self.charged_total += top_up
        return out

    def state(self) -> dict[str, object]:
        return {"raw_leg": {str(k): str(v) for k, v in self.raw_leg.items()},
                "charged_leg": {str(k): str(v) for k, v in self.charged_leg.items()},
                "raw_total": str(self.raw_total), "charged_total": str(self.charged_total)}

    @classmethod
    def from_state(cls, state: dict[str, object]) -> OrderFeeTracker:
        t = cls()
        t.raw_leg = _leg_amounts(state.get("raw_leg"))
        t.charged_leg = _leg_amounts(state.get("charged_leg"))
        t.raw_total = Decimal(str(state.get("raw_total", "0")))
        t.charged_total = Decimal(str(state.get("charged_total", "0")))
        return t


def _leg_amounts(value: object) -> dict[int, Decimal]:
    """A stored ``{leg index: amount}`` map (keys and amounts as strings in the JSON state); absent: empty."""
    if not isinstance(value, dict):
        return {}
    return {int(k): Decimal(str(v)) for k, v in value.items()}


def to_cents(x: Decimal) -> Decimal:
    """Round a fee to whole cents (half up), as brokers bill."""
    return x.quantize(CENT, rounding=ROUND_HALF_UP)
