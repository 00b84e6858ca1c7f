"""Labels: the outcome of the put-credit-spread candidate the ``iv_rank_put_spread`` strategy would open each day.

Each day *t* (decision at *t*'s close) gets one candidate: sell the put nearest |Δ| = ``short_delta`` and buy
the put ``width`` (a fraction of spot) lower, ``dte`` calendar days out, priced with Black-Scholes-Merton at
that day's ATM IV. It is marked every following session at that session's close and ATM IV and closed by
the strategy's :class:`engine.strategies.base.ManagementRules` defaults: profit target (50 % of the credit),
stop (loss = 2 × credit), or the DTE exit (21 days left). The label is 1 when the closed trade made money
after costs. ``end`` is the exit session: a label is unknown until then, so labels overlap and the
validation purges training rows whose label window reaches into a test window.

This is a mark-to-model replay on the daily history (flat vol at the ATM IV, no skew: the history has no
skew), not a backtest of quoted chains; the backtester (``optiondesk backtest``) runs the quoted version.
A candidate whose exit lies beyond the last day is unresolved and left out (its label is not known yet).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date

import numpy as np
from scipy.stats import norm

from engine.ml.data import MarketHistory
from engine.ml.features import close_instant


@dataclass(frozen=True)
class PutSpreadRules:
    """The candidate trade and its exits (defaults: the strategy's and ManagementRules' defaults)."""

    dte: int = 45
    short_delta: float = 0.25
    width: float = 0.01  # long strike = short strike × (1 − width)
    profit_target: float = 0.5
    stop_multiple: float = 2.0
    dte_exit: int = 21
    rate: float = 0.04
    dividend_yield: float = 0.0
    multiplier: int = 100
    #: commission + half the bid/ask per contract per side, in dollars: four contract-sides per round trip
    cost_per_contract: float = 1.65
    #: the ungated strategy's entry rule (IV rank above this, rule regime not neutral)
    iv_rank_entry: float = 0.70

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True, eq=False)
class LabelSet:
    """Per resolved candidate: the decision row, its exit row, outcome, P&L and risk (dollars per spread)."""

    start: np.ndarray  # int row of the decision day
    end: np.ndarray  # int row of the exit day (≥ start + 1)
    y: np.ndarray  # 1 = made money after costs
    pnl: np.ndarray
    max_risk: np.ndarray
    credit: np.ndarray
    reason: np.ndarray  # object: profit_target | stop | dte_exit
    days: tuple[date, ...]

    def __len__(self) -> int:
        return len(self.start)

    @property
    def decision_at(self) -> list:
        return [close_instant(self.days[i]) for i in self.start.tolist()]


def _put(S: np.ndarray, K: np.ndarray, T: np.ndarray, r: float, q: float, v: np.ndarray) -> np.ndarray:
    """European put (vectorized; at T ≤ 0 the intrinsic value)."""
    with np.errstate(all="ignore"):
        sq = v * np.sqrt(np.maximum(T, 1e-12))
        d1 = (np.log(S / K) + (r - q + 0.5 * v * v) * T) / sq
        d2 = d1 - sq
        p = K * np.exp(-r * T) * norm.cdf(-d2) - S * np.exp(-q * T) * norm.cdf(-d1)
    return np.where(T > 1e-9, p, np.maximum(K - S, 0.0))


def put_spread_labels(h: MarketHistory, rules: PutSpreadRules | None = None) -> LabelSet:
    """Replay one candidate per day (see the module docstring); vectorized over days × holding sessions."""
    rl = rules or PutSpreadRules()
    n = len(h)
    S = np.asarray(h.close, float)
    iv = np.asarray(h.atm_iv, float)
    ords = np.array([d.toordinal() for d in h.days], dtype=np.int64)
    r, q = rl.rate, rl.dividend_yield
    T0 = rl.dte / 365.0
    # |Δ_put| = e^{-qT} N(−d1) = δ  →  d1 = −N⁻¹(δ e^{qT});  K = S·exp((r − q + σ²/2)T − d1 σ√T)
    d1 = -norm.ppf(rl.short_delta * np.exp(q * T0))
    Ks = S * np.exp((r - q + 0.5 * iv * iv) * T0 - d1 * iv * np.sqrt(T0))
    Kl = Ks * (1.0 - rl.width)
    T0v = np.full(n, T0)
    credit = _put(S, Ks, T0v, r, q, iv) - _put(S, Kl, T0v, r, q, iv)
    costs = 4 * rl.cost_per_contract / rl.multiplier  # per unit
    horizon = int(np.ceil(rl.dte * 252 / 365)) + 5
    # (n, horizon) grid of later sessions for every decision row
    idx = np.arange(n)[:, None] + np.arange(1, horizon + 1)[None, :]
    inside = idx < n
    j = np.where(inside, idx, n - 1)
    days_left = rl.dte - (ords[j] - ords[:, None])  # calendar days to expiry at each later session
    T = np.maximum(days_left, 0) / 365.0
    val = (_put(S[j], Ks[:, None], T, r, q, iv[j]) - _put(S[j], Kl[:, None], T, r, q, iv[j]))
    pnl_unit = credit[:, None] - val
    hit_pt = pnl_unit >= rl.profit_target * credit[:, None] - 1e-12
    hit_stop = pnl_unit <= -rl.stop_multiple * credit[:, None] + 1e-12
    hit_dte = days_left <= rl.dte_exit
    fire = (hit_pt | hit_stop | hit_dte) & inside
    any_fire = fire.any(axis=1)
    first = np.argmax(fire, axis=1)
    rows = np.nonzero(any_fire & np.isfinite(credit) & (credit > 0))[0]
    k = first[rows]
    exit_pnl = pnl_unit[rows, k]
    reason = np.where(hit_pt[rows, k], "profit_target", np.where(hit_stop[rows, k], "stop", "dte_exit"))
    start_l, end_l, pnl_l, reason_l = rows, idx[rows, k], exit_pnl, reason
    dollars = (np.asarray(pnl_l) - costs) * rl.multiplier
    width_d = (Ks - Kl)[rows]
    risk = (width_d - credit[rows]) * rl.multiplier + 4 * rl.cost_per_contract
    return LabelSet(start=np.asarray(start_l, np.int64), end=np.asarray(end_l, np.int64),
                    y=(dollars > 0).astype(np.int64), pnl=dollars, max_risk=risk,
                    credit=credit[rows] * rl.multiplier, reason=np.asarray(reason_l, dtype=object), days=h.days)


def strategy_entries(features_iv_rank: np.ndarray, features_regime_neutral: np.ndarray,
                     rules: PutSpreadRules | None = None) -> np.ndarray:
    """Rows where the ungated strategy would enter: IV rank above the entry level and the regime not neutral."""
    rl = rules or PutSpreadRules()
    with np.errstate(invalid="ignore"):
        return (np.nan_to_num(features_iv_rank, nan=-1.0) > rl.iv_rank_entry) & ~features_regime_neutral
