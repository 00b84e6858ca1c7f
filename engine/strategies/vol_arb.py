"""vol_arb: trade an option whose market mid is away from the model ensemble's fair value by more than it costs.

In a trader's words: fit the day's smile of each expiry, price the options on it with several models, and when
one option's mid sits further from their fair value than the spread you pay plus the models' own disagreement,
trade it — bought when cheap, sold when rich — against the next strike further out of the money, so the risk
is a defined-risk vertical and most of the vol exposure nets out. Close when the edge has closed.

How the fair value is made (vectorized over the chain):

1. **The desk's smile.** Implied vols of every usable mid (Black-Scholes-Merton; the same European inversion
   prices them back, so an early-exercise premium in a mid sits in its vol and comes back out), and per expiry a
   vega-weighted quadratic in log-moneyness ``k = ln(K/S)`` over the options with |Δ| in ``fit_delta``.
   The quadratic is the smooth smile a single quote's noise cannot move much.
2. **Pre-filter.** Only out-of-the-money options with |Δ| in ``trade_delta`` and ``dte_min``–``dte_max`` days
   whose mid is off the fit by more than their half-spread (in dollars: IV residual × vega) are candidates; the
   ``max_candidates`` (8) largest go on, with their wings. That keeps the ensemble's cost per snapshot at a few
   dozen options, in the backtest too.
3. **The ensemble** (:func:`engine.pricing.ensemble.fair_value`): Black-Scholes-Merton at the fitted vol and
   Merton jump diffusion with ``jumps`` whose diffusion vol is lowered so the total variance matches (the two
   agree on the level and disagree on the tails). ``fair`` is their mean, their spread the disagreement band.
4. **The trade.** A vertical's edge is Σ (fair − mid) over its legs in the direction traded; its cost band is
   Σ (half-spread + model dispersion) + fees per share. Trade the best vertical whose edge exceeds its band by
   ``min_edge`` (per share). Until the ML issue brings a calibrated band, that band is the spread plus the
   ensemble's own spread between models.

Exits: ``edge_closed`` when the held vertical's edge (same computation, its two legs) has fallen to
``exit_edge`` or below; plus the rules (stop when the loss reaches the debit paid or the credit received, close
7 days before expiry).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from engine.model import OptionChain, OrderIntent, Side
from engine.strategies.base import (
    ManagedStrategy,
    ManagementRules,
    OpenTrade,
    StrategyContext,
    StrategyParams,
    entry_marks,
    market_date,
    option_leg,
)
from engine.strategies.selection import expiry_days
from engine.strategies.structures import (
    GreekBudget,
    budget_contracts,
    payoff_limits,
    priced_entry,
    spread_debit_limits,
)

VOL_ARB_RULES = ManagementRules(profit_target=None, stop_multiple=1.0, dte_exit=7, regime_exits=())


class JumpModel(BaseModel):
    """Merton's jumps for the second member: intensity per year, mean and stdev of the log jump."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    lam: float = Field(0.5, ge=0, le=20)
    mu_j: float = Field(-0.02, ge=-0.5, le=0.5)
    sigma_j: float = Field(0.02, ge=0, le=0.5)


class VolArbParams(StrategyParams):
    rules: ManagementRules = VOL_ARB_RULES
    dte_min: int = Field(14, ge=1)
    dte_max: int = Field(60, ge=1)
    fit_delta: tuple[float, float] = (0.05, 0.95)
    trade_delta: tuple[float, float] = (0.15, 0.50)
    max_candidates: int = Field(8, ge=1, le=200)
    width: float = Field(5.0, gt=0)
    #: edge beyond the band required to trade, $ per share
    min_edge: float = Field(0.02, ge=0)
    #: the held vertical is closed when its edge has fallen to this ($ per share)
    exit_edge: float = 0.0
    #: fees per contract and leg, $ (tastytrade-like): part of the cost band
    fee_per_contract: float = Field(1.0, ge=0)
    jumps: JumpModel = JumpModel()
    budget_use: float = Field(0.5, gt=0, le=1)
    max_contracts: int = Field(20, ge=1)
    greeks: GreekBudget = GreekBudget()
    rate: float = 0.0
    dividend_yield: float = 0.0

    @model_validator(mode="after")
    def _ranges(self) -> VolArbParams:
        if self.dte_min > self.dte_max:
            raise ValueError(f"dte_min {self.dte_min} is above dte_max {self.dte_max}")
        for name in ("fit_delta", "trade_delta"):
            lo, hi = getattr(self, name)
            if not 0 <= lo < hi <= 1:
                raise ValueError(f"{name} must be 0 <= low < high <= 1, got {(lo, hi)}")
        return self


@dataclass(frozen=True, slots=True)
class Valuation:
    """Per chain row (NaN where not computed): market IV, fitted IV, fair value, model dispersion, half-spread."""

    iv: np.ndarray
    fit: np.ndarray
    fair: np.ndarray
    dispersion: np.ndarray
    half_spread: np.ndarray


def market_ivs(chain: OptionChain, rows: np.ndarray, rate: float, q: float) -> tuple[np.ndarray, np.ndarray]:
    """(implied vol of each row's mid, its Black-Scholes delta) — European inversion, vectorized."""
    from engine.pricing import bsm

    t = chain.time_to_expiry()[rows]
    right = np.where(chain.is_call[rows], "c", "p")
    iv = np.asarray(bsm.implied_vol(chain.mid[rows], right, chain.spot, chain.strike[rows], t, rate, q), float)
    g = bsm.greeks(right, chain.spot, chain.strike[rows], t, rate, q, np.where(np.isfinite(iv), iv, 0.2),
                   outputs=("delta", "vega"))
    return iv, np.asarray(g.delta, float)


def smile_fit(chain: OptionChain, rows: np.ndarray, iv: np.ndarray, delta: np.ndarray,
              band: tuple[float, float], rate: float, q: float) -> np.ndarray:
    """Fitted IV per row: per expiry, a vega-weighted quadratic in ln(K/S) over rows with |Δ| in ``band``
    (NaN for an expiry with fewer than 4 such rows)."""
    from engine.pricing import bsm

    out = np.full(len(rows), np.nan)
    k = np.log(chain.strike[rows] / chain.spot)
    t = chain.time_to_expiry()[rows]
    ok = np.isfinite(iv) & (np.abs(delta) >= band[0]) & (np.abs(delta) <= band[1])
    vega = np.asarray(bsm.greeks(np.where(chain.is_call[rows], "c", "p"), chain.spot, chain.strike[rows], t, rate,
                                 q, np.where(np.isfinite(iv), iv, 0.2), outputs=("vega",)).vega, float)
    expiries = chain.expiry[rows]
    for exp in np.unique(expiries):
        same = expiries == exp
        use = same & ok
        if use.sum() < 4:
            continue
        coef = np.polyfit(k[use], iv[use], 2, w=np.sqrt(np.maximum(vega[use], 1e-6)))
        out[same] = np.polyval(coef, k[same])
    return out


def ensemble_values(chain: OptionChain, rows: np.ndarray, fit_vol: np.ndarray, jumps: JumpModel, rate: float,
                    q: float) -> tuple[np.ndarray, np.ndarray]:
    """(fair, dispersion) per row from the pricing ensemble at the fitted vols (see the module docstring)."""
    from engine.pricing.ensemble import MertonParams, fair_value

    jump_var = jumps.lam * (jumps.mu_j ** 2 + jumps.sigma_j ** 2)
    diffusion = np.sqrt(np.maximum(fit_vol ** 2 - jump_var, 1e-6))  # Merton's total variance = the fitted one
    # the ignore below: MertonParams.sigma is declared float | None, yet the ensemble broadcasts a per-row array
    # as it does every vol (engine/pricing owns that declaration)
    res = fair_value(np.where(chain.is_call[rows], "c", "p"), chain.spot, chain.strike[rows],
                     chain.time_to_expiry()[rows], rate, q, fit_vol,
                     merton_params=MertonParams(jumps.lam, jumps.mu_j, jumps.sigma_j, sigma=diffusion),  # type: ignore[arg-type]
                     exercise="european")
    return np.asarray(res.fair, float), np.asarray(res.dispersion, float)


class VolArb(ManagedStrategy[VolArbParams]):
    name = "vol_arb"
    Params = VolArbParams

    # ---- the valuation ---------------------------------------------------------------------------
    def value_rows(self, chain: OptionChain, rows: np.ndarray, fit_rows: np.ndarray | None = None) -> Valuation:
        """Fit the smile over ``fit_rows`` (default: every usable row of the same expiries) and run the ensemble
        on ``rows`` only. Arrays are per chain row."""
        p = self.params
        n = len(chain)
        iv_all = np.full(n, np.nan)
        fit_all = np.full(n, np.nan)
        fair = np.full(n, np.nan)
        disp = np.full(n, np.nan)
        valid = chain.valid_mask() & (chain.bid > 0)
        if fit_rows is None:
            fit_rows = np.nonzero(valid & np.isin(chain.expiry, chain.expiry[rows]))[0]
        iv, delta = market_ivs(chain, fit_rows, p.rate, p.dividend_yield)
        iv_all[fit_rows] = iv
        fit_all[fit_rows] = smile_fit(chain, fit_rows, iv, delta, p.fit_delta, p.rate, p.dividend_yield)
        priced = rows[np.isfinite(fit_all[rows])]
        if len(priced):
            fair[priced], disp[priced] = ensemble_values(chain, priced, fit_all[priced], p.jumps, p.rate,
                                                         p.dividend_yield)
        return Valuation(iv=iv_all, fit=fit_all, fair=fair, dispersion=disp,
                         half_spread=0.5 * (chain.ask - chain.bid))

    def candidates(self, chain: OptionChain, today) -> tuple[np.ndarray, np.ndarray]:
        """(candidate rows, their wing rows): the pre-filter of the module docstring."""
        from engine.pricing import bsm

        p = self.params
        days = expiry_days(chain, today)
        valid = chain.valid_mask() & (chain.bid > 0)
        window = valid & (days >= p.dte_min) & (days <= p.dte_max)
        rows = np.nonzero(window)[0]
        if len(rows) < 8:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        iv, delta = market_ivs(chain, rows, p.rate, p.dividend_yield)
        fit = smile_fit(chain, rows, iv, delta, p.fit_delta, p.rate, p.dividend_yield)
        otm = np.where(chain.is_call[rows], chain.strike[rows] >= chain.spot, chain.strike[rows] < chain.spot)
        t = chain.time_to_expiry()[rows]
        vega = np.asarray(bsm.greeks(np.where(chain.is_call[rows], "c", "p"), chain.spot, chain.strike[rows], t,
                                     p.rate, p.dividend_yield, np.where(np.isfinite(fit), fit, 0.2),
                                     outputs=("vega",)).vega, float)  # $ per share per vol point
        off = np.abs(iv - fit) * 100.0 * vega  # $ per share the mid is off the smile
        half = 0.5 * (chain.ask[rows] - chain.bid[rows])
        ad = np.abs(delta)
        keep = otm & np.isfinite(off) & (ad >= p.trade_delta[0]) & (ad <= p.trade_delta[1]) & (off > half)
        cand = rows[keep]
        if len(cand) == 0:
            return cand, cand
        cand = cand[np.argsort(-(off[keep] / np.maximum(half[keep], 1e-6)))][: p.max_candidates]
        wings = np.array([self._wing(chain, int(r), window) for r in cand], dtype=np.int64)
        has = wings >= 0
        return cand[has], wings[has]

    def _wing(self, chain: OptionChain, row: int, usable: np.ndarray) -> int:
        """The same expiry and right, the listed strike nearest ``width`` further out of the money; -1 if none."""
        call = bool(chain.is_call[row])
        k = float(chain.strike[row])
        beyond = chain.strike > k + 1e-9 if call else chain.strike < k - 1e-9
        cand = np.nonzero(usable & (chain.expiry == chain.expiry[row]) & (chain.is_call == call) & beyond)[0]
        if len(cand) == 0:
            return -1
        target = k + self.params.width if call else k - self.params.width
        return int(cand[np.argmin(np.abs(chain.strike[cand] - target))])

    def vertical_edges(self, chain: OptionChain, cand: np.ndarray, wings: np.ndarray, val: Valuation,
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(direction, edge, band) per candidate vertical, $ per share: direction +1 buys the candidate and sells
        the wing, −1 sells it and buys the wing; edge Σ (fair − mid) in that direction; band Σ (half-spread +
        dispersion) + fees."""
        mid = chain.mid
        e_c = val.fair[cand] - mid[cand]
        e_w = val.fair[wings] - mid[wings]
        direction = np.where(e_c >= 0, 1.0, -1.0)
        edge = direction * (e_c - e_w)
        band = (val.half_spread[cand] + val.half_spread[wings] + val.dispersion[cand] + val.dispersion[wings]
                + 2 * self.params.fee_per_contract / chain.multiplier)
        return direction, edge, band

    # ---- entries and exits -------------------------------------------------------------------------
    def entries(self, ctx: StrategyContext, chain: OptionChain) -> Sequence[tuple[OpenTrade, OrderIntent]]:
        p = self.params
        cand, wings = self.candidates(chain, market_date(ctx.now()))
        if len(cand) == 0:
            return ()
        val = self.value_rows(chain, np.concatenate([cand, wings]))
        direction, edge, band = self.vertical_edges(chain, cand, wings, val)
        excess = edge - band
        excess = np.where(np.isfinite(excess), excess, -np.inf)
        best = int(np.argmax(excess))
        if not excess[best] > p.min_edge:
            return ()
        buy_first = direction[best] > 0
        legs = (option_leg(chain, int(cand[best]), Side.BUY if buy_first else Side.SELL),
                option_leg(chain, int(wings[best]), Side.SELL if buy_first else Side.BUY))
        marks = entry_marks(chain, legs)
        if marks is None:
            return ()
        _, max_loss = payoff_limits(legs, marks[1])
        qty = budget_contracts(ctx.net_liquidation(), ctx.sizing().risk_per_trade, max_loss, chain.multiplier,
                               budget_use=p.budget_use, max_contracts=p.max_contracts)
        width = abs(float(chain.strike[cand[best]] - chain.strike[wings[best]]))
        return priced_entry(self, ctx, chain, legs, qty, {"width": width, "edge": float(edge[best]),
                                                          "band": float(band[best])})

    def held_edge(self, chain: OptionChain, trade: OpenTrade) -> float:
        """The held vertical's edge now, $ per share: Σ signed ratio × (fair − mid) over its legs."""
        try:
            rows = np.array([chain.row_of(leg.symbol) for leg in trade.legs], dtype=np.int64)
        except KeyError:
            return math.nan
        val = self.value_rows(chain, rows)
        ratio = np.array([leg.signed_ratio for leg in trade.legs], float)
        return float(ratio @ (val.fair[rows] - chain.mid[rows]))

    def strategy_exit(self, ctx: StrategyContext, trade: OpenTrade, mid: float) -> str | None:
        chain = self._last_chain
        if chain is None:
            return None
        edge = self.held_edge(chain, trade)
        if math.isfinite(edge) and edge <= self.params.exit_edge:
            trade.info["exit_edge"] = edge
            return "edge_closed"
        return None

    def update_limits(self, trade: OpenTrade) -> None:
        spread_debit_limits(trade)
