"""dispersion: sell index vol against long member vol when implied correlation is above the correlation expected.

In a trader's words: an index's implied vol is its members' implied vols combined through a correlation. Backed
out of the prices, that **implied correlation** is usually higher than the correlation the members then realize
— index options carry a premium. When implied minus forecast realized correlation is at least ``min_spread``
(0.10), sell the index's at-the-money straddle with wings ``wing_fraction`` (5 %) of the level away (an iron
butterfly: defined risk), and buy at-the-money straddles of the members, **vega-weighted**: the members' long
vega adds up to ``vega_ratio`` (1.0) × the index's short vega, split in proportion to each member's weight ×
implied vol (its share of the index's vol). Close everything when the spread has fallen to ``exit_spread`` (0.02)
or ``dte_exit`` (7) days before the index expiry; if one entry fails while others filled, the filled ones are
closed at once (``unwind``): half a dispersion trade is a plain directional vol bet.

The math (vectorized over the members), with value weights ``w_i`` (shares × price over the index level):

- implied correlation ``ρ = (σ_I² − Σ w_i² σ_i²) / ((Σ w_i σ_i)² − Σ w_i² σ_i²)`` from ATM implied vols of the
  expiry nearest ``dte_target``;
- forecast realized correlation: the same formula over close-to-close realized vols of the last ``rv_window``
  sessions (the context's when it knows them, else the closes the strategy records itself).

One order per underlying (a combo cannot span underlyings), tags ``<trade>.<SYMBOL>:open`` and
``<trade>.<SYMBOL>:close:<reason>``; entries and exits at the natural inside the price collar, so the legs of one
trade fill together or not at all as far as the market allows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any, ClassVar

import numpy as np
from pydantic import Field, model_validator

from engine.market.simulated.index import BASKET
from engine.model import Fill, OptionChain, Order, OrderIntent, OrderStatus, Side
from engine.strategies.base import (
    OpenTrade,
    Strategy,
    StrategyContext,
    StrategyParams,
    closing_leg,
    entry_marks,
    leg_expiry,
    leg_marks,
    market_date,
    option_leg,
    trade_from_dict,
    trade_to_dict,
    walk_price,
)
from engine.strategies.selection import atm_row, pick_expiry, wing_row
from engine.strategies.spec import BacktestSpec
from engine.strategies.structures import atm_iv, budget_contracts, combo_greeks, payoff_limits


def _default_components() -> dict[str, float]:
    from engine.market.simulated.index import BASKET

    return {m[0]: m[4] for m in BASKET}


class DispersionParams(StrategyParams):
    underlying: str = "DSPX"
    #: the index's members and their shares in it (default: the simulated basket of engine.market.simulated.index)
    components: dict[str, float] = Field(default_factory=_default_components)
    dte_min: int = Field(20, ge=1)
    dte_max: int = Field(50, ge=1)
    dte_target: int = 30
    rv_window: int = Field(20, ge=5)
    min_spread: float = Field(0.10, ge=0, le=2)
    exit_spread: float = Field(0.02, ge=-1, le=2)
    dte_exit: int = Field(7, ge=0)
    vega_ratio: float = Field(1.0, gt=0, le=5)
    wing_fraction: float = Field(0.05, gt=0, le=0.5)
    budget_use: float = Field(0.5, gt=0, le=1)
    max_index_contracts: int = Field(10, ge=1)
    rate: float = 0.0
    dividend_yield: float = 0.0

    @model_validator(mode="after")
    def _check(self) -> DispersionParams:
        if not 2 <= len(self.components) <= 20:
            raise ValueError(f"components: an index needs 2-20 members, got {len(self.components)}")
        if any(w <= 0 for w in self.components.values()):
            raise ValueError("components: shares must be positive")
        if self.underlying in self.components:
            raise ValueError(f"components: the index {self.underlying} cannot be its own member")
        if self.dte_min > self.dte_max:
            raise ValueError(f"dte_min {self.dte_min} is above dte_max {self.dte_max}")
        if self.exit_spread >= self.min_spread:
            raise ValueError(f"exit_spread {self.exit_spread} must be below min_spread {self.min_spread}")
        return self


def implied_correlation(index_vol: float, member_vols: np.ndarray, weights: np.ndarray) -> float:
    """The one correlation that makes the members' vols (value weights ``weights``) add up to ``index_vol``."""
    wv = np.asarray(weights, float) * np.asarray(member_vols, float)
    own = float(np.sum(wv**2))
    cross = float(np.sum(wv)) ** 2 - own
    return (index_vol**2 - own) / cross if cross > 0 else math.nan


def close_to_close_vol(closes: np.ndarray) -> float:
    """Annualised vol of daily log returns (252 sessions a year); NaN with fewer than two closes."""
    closes = np.asarray(closes, float)
    if len(closes) < 3:
        return math.nan
    r = np.diff(np.log(closes))
    return float(np.std(r, ddof=1) * math.sqrt(252.0))


class Dispersion(Strategy[DispersionParams]):
    name = "dispersion"
    Params = DispersionParams
    #: one trade holds the index and each member: seven underlyings, above the Moderate profile's five
    #: positions (which denied the last members' legs and unwound every entry). A backtest names these limits in
    #: its summary; live, the user's profile decides.
    risk_limits: ClassVar[dict[str, float]] = {"max_positions": 8}
    #: the index, its members and an account in which the vega-weighted legs are whole contracts
    backtest_spec: ClassVar[BacktestSpec] = BacktestSpec(
        symbol="DSPX", members=tuple(m[0] for m in BASKET), initial_cash=1_000_000.0,
        why="a dispersion trade needs the index and its members on one clock (the multi-underlying replay), and "
        "an account in which the vega-weighted member straddles are whole contracts ($1,000,000)")

    def __init__(self, params: Any = None, *, strategy_id: str | None = None) -> None:
        super().__init__(params, strategy_id=strategy_id)
        self.chains: dict[str, OptionChain] = {}
        self.closes: dict[str, dict[date, float]] = {}
        self.groups: dict[str, OpenTrade] = {}  # per underlying of the current trade (tag <trade>.<SYMBOL>)
        self.trade_tag = ""
        self.last_signal: dict[str, float] = {}
        self._seq = 0
        self._expiries: dict[str, np.datetime64] = {}  # of the last signal: the expiry per underlying
        self._ivs = np.zeros(0)  # ... and the ATM implied vols (index first)

    @property
    def underlyings(self) -> tuple[str, ...]:
        return (self.params.underlying, *self.params.components)

    # ---- state --------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {"seq": self._seq, "trade": self.trade_tag,
                "groups": [trade_to_dict(g) for g in self.groups.values() if g.state != "closed"],
                "closes": {s: {d.isoformat(): p for d, p in c.items()} for s, c in self.closes.items()}}

    def restore(self, state: dict[str, Any]) -> None:
        self._seq = int(state.get("seq", 0))
        self.trade_tag = str(state.get("trade", ""))
        self.groups = {g.tag: g for g in (trade_from_dict(d) for d in state.get("groups", ()))}
        self.closes = {s: {date.fromisoformat(d): float(p) for d, p in c.items()}
                       for s, c in (state.get("closes") or {}).items()}

    # ---- the signal ---------------------------------------------------------------------------------
    def weights(self) -> np.ndarray:
        """Value weights of the members at their latest spots."""
        p = self.params
        spots = np.array([self.chains[s].spot for s in p.components], float)
        value = spots * np.array(list(p.components.values()), float)
        return value / value.sum()

    def forecast_vols(self, ctx: StrategyContext) -> np.ndarray:
        """Realized vol per underlying (index first): the context's, else the strategy's own closes."""
        p = self.params
        out = []
        for sym in self.underlyings:
            v = math.nan
            source = getattr(ctx, "realized_vol", None)
            if callable(source):
                v = float(source(sym, p.rv_window))
            if not math.isfinite(v):
                closes = np.fromiter(self.closes.get(sym, {}).values(), float)
                v = close_to_close_vol(closes[-(p.rv_window + 1):]) if len(closes) > p.rv_window else math.nan
            out.append(v)
        return np.array(out)

    def signal(self, ctx: StrategyContext) -> dict[str, float] | None:
        """Implied and forecast realized correlation and the index expiry; None when a chain or a vol is missing."""
        p = self.params
        today = market_date(ctx.now())
        expiries = {}
        ivs = []
        for sym in self.underlyings:
            ch = self.chains.get(sym)
            if ch is None or market_date(ch.ts) != today:
                return None
            exp = pick_expiry(ch, today, p.dte_min, p.dte_max, p.dte_target)
            if exp is None:
                return None
            expiries[sym] = exp
            ivs.append(atm_iv(ch, exp, rate=p.rate, dividend_yield=p.dividend_yield))
        iv = np.array(ivs)
        rv = self.forecast_vols(ctx)
        if not (np.isfinite(iv).all() and np.isfinite(rv).all()):
            return None
        w = self.weights()
        implied = implied_correlation(float(iv[0]), iv[1:], w)
        realized = implied_correlation(float(rv[0]), rv[1:], w)
        self.last_signal = {"implied": implied, "realized": realized, "spread": implied - realized}
        self._expiries = expiries
        self._ivs = iv
        return self.last_signal

    # ---- callbacks ----------------------------------------------------------------------------------
    def on_chain(self, ctx: StrategyContext, chain: OptionChain) -> Sequence[OrderIntent]:
        if chain.underlying not in self.underlyings:
            return ()
        self.chains[chain.underlying] = chain
        if math.isfinite(chain.spot) and chain.spot > 0:
            self.closes.setdefault(chain.underlying, {})[market_date(chain.ts)] = float(chain.spot)
            book = self.closes[chain.underlying]
            for d in sorted(book)[: max(len(book) - 4 * self.params.rv_window, 0)]:
                del book[d]
        if chain.underlying != self.params.underlying:
            return ()  # decisions are made on the index's snapshot, with the members' of the same day
        if any(g.state in ("opening", "closing") for g in self.groups.values()):
            return ()
        if self.groups:
            return self._manage(ctx)
        sig = self.signal(ctx)
        if sig is None or not sig["spread"] >= self.params.min_spread:
            return ()
        return self._enter(ctx)

    def _enter(self, ctx: StrategyContext) -> list[OrderIntent]:
        p = self.params
        index = self.chains[p.underlying]
        exp = self._expiries[p.underlying]
        fly = self._iron_fly(index, exp)
        marks = None if fly is None else entry_marks(index, fly)
        if marks is None:
            return []
        _, max_loss = payoff_limits(fly, marks[1])
        n_index = budget_contracts(ctx.net_liquidation(), ctx.sizing().risk_per_trade, max_loss, index.multiplier,
                                   budget_use=p.budget_use, max_contracts=p.max_index_contracts)
        index_vega = abs(combo_greeks(index, fly, rate=p.rate, dividend_yield=p.dividend_yield).get("vega", math.nan))
        if n_index <= 0 or not math.isfinite(index_vega):
            return []
        plan: list[tuple[str, OptionChain, tuple, int]] = [(p.underlying, index, fly, n_index)]
        share = self.weights() * self._ivs[1:]
        share = share / share.sum()
        target = p.vega_ratio * index_vega * n_index * share  # $ per vol point per member
        for sym, tgt in zip(p.components, target, strict=True):
            ch = self.chains[sym]
            straddle = self._straddle(ch, self._expiries[sym])
            if straddle is None:
                return []
            vega = combo_greeks(ch, straddle, rate=p.rate, dividend_yield=p.dividend_yield).get("vega", math.nan)
            n = round(tgt / vega) if math.isfinite(vega) and vega > 0 else 0
            if n > 0:
                plan.append((sym, ch, straddle, n))
        if len(plan) < 3:
            return []  # fewer than two members: not a dispersion trade
        self._seq += 1
        self.trade_tag = f"{self.strategy_id}-{self._seq:05d}"
        sz = ctx.sizing()
        out = []
        for sym, ch, legs, n in plan:
            m = entry_marks(ch, legs)
            if m is None:
                self.groups.clear()
                return []
            tag = f"{self.trade_tag}.{sym}"
            self.groups[tag] = OpenTrade(tag=tag, legs=tuple(legs), quantity=n, expiry=leg_expiry(legs),
                                         info={"spread": self.last_signal["spread"]})
            price = walk_price(m[0], m[1], 1.0, float(legs[0].instrument.tick_size), (sz.collar_ticks, sz.collar_pct))
            out.append(self.intent(legs, n, price, f"{tag}:open"))
        return out

    def _iron_fly(self, chain: OptionChain, exp: np.datetime64):
        width = self.params.wing_fraction * chain.spot
        legs = []
        for call in (False, True):
            short = atm_row(chain, exp, call=call)
            if short is None:
                return None
            wing = wing_row(chain, exp, float(chain.strike[short]), width, call=call)
            if wing is None:
                return None
            legs += [option_leg(chain, short, Side.SELL), option_leg(chain, wing, Side.BUY)]
        return tuple(legs)

    def _straddle(self, chain: OptionChain, exp: np.datetime64):
        put, call = atm_row(chain, exp, call=False), atm_row(chain, exp, call=True)
        if put is None or call is None or chain.strike[put] != chain.strike[call]:
            return None
        return (option_leg(chain, call, Side.BUY), option_leg(chain, put, Side.BUY))

    def _manage(self, ctx: StrategyContext) -> list[OrderIntent]:
        p = self.params
        today = market_date(ctx.now())
        index_group = self.groups.get(f"{self.trade_tag}.{p.underlying}")
        reason = None
        if index_group is not None and (index_group.expiry - today).days <= p.dte_exit:
            reason = "dte_exit"
        else:
            sig = self.signal(ctx)
            if sig is not None and sig["spread"] <= p.exit_spread:
                reason = "spread_closed"
        return self.close_all(ctx, reason) if reason else []

    def close_all(self, ctx: StrategyContext, reason: str) -> list[OrderIntent]:
        """Closing orders at the natural for every group still held (``reason`` in their tags)."""
        out = []
        for tag, g in self.groups.items():
            if g.state != "open" or g.filled <= 0:
                continue
            ch = self.chains.get(tag.rsplit(".", 1)[1])
            marks = None if ch is None else leg_marks(ch, g.legs)
            if marks is None:
                continue
            legs = tuple(closing_leg(leg) for leg in g.legs)
            g.state, g.exit_reason = "closing", reason
            price = walk_price(-marks[0], -marks[1], 1.0, float(legs[0].instrument.tick_size), None)
            out.append(self.intent(legs, g.filled, price, f"{tag}:close:{reason}"))
        return out

    def on_order(self, ctx: StrategyContext, order: Order, fills: Sequence[Fill] = ()) -> Sequence[OrderIntent]:
        g = self.groups.get(order.tag.split(":", 1)[0])
        if g is None:
            return ()
        closing = ":close" in order.tag
        qty = sum(abs(f.quantity) for f in fills if f.leg_index == 0) // order.legs[0].ratio
        if closing:
            g.filled -= qty
            if g.filled <= 0:
                g.state = "closed"
        elif qty:
            g.filled += qty
            g.state = "open"
            g.opened_at = g.opened_at or ctx.now()
        if order.status.is_terminal and order.status is not OrderStatus.FILLED:
            if closing:
                g.state = "open" if g.filled > 0 else "closed"  # retried on the next index snapshot
            elif g.filled == 0:
                g.state = "closed"
                g.exit_reason = order.status.value
                # half a dispersion trade is a directional vol bet: close what did fill
                return self.close_all(ctx, "unwind")
        if self.groups and all(x.state == "closed" for x in self.groups.values()):
            self.groups.clear()
            self.trade_tag = ""
        return ()

    def on_timer(self, ctx: StrategyContext, now: datetime) -> Sequence[OrderIntent]:
        """Expired groups settle at the exchange: they are over."""
        today = market_date(now)
        for g in self.groups.values():
            if g.state in ("open", "closing") and g.expiry < today:
                g.state, g.exit_reason = "closed", g.exit_reason or "expired"
        if self.groups and all(x.state == "closed" for x in self.groups.values()):
            self.groups.clear()
            self.trade_tag = ""
        return ()


__all__ = ["Dispersion", "DispersionParams", "close_to_close_vol", "implied_correlation"]
