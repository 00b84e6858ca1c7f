"""The simulated market's own history: the seeded path that leads into the market's first session.

The simulator starts every underlying at its configured spot; to give IV rank, regimes and historical
VaR a past from the first minute, this source runs the same factor dynamics (Heston variance, jumps,
regime switches, per-name beta and idiosyncratic noise) over the sessions before the start, with a seed
derived from the market's seed and the start day, so one seed and start always give the same history.

The path always spans two years (``PATH_SESSIONS``) before the start, so asking for fewer sessions returns
the tail of one and the same path. Per session it records the close and the 30-calendar-day ATM implied
vol the simulator would quote at that close: the ATM total variance of its surface,
``VRP·(β²·E[v̄]_τ + σ_idio²·√stress)·τ`` over ``τ`` trading years (:mod:`engine.market.simulated.quoting`),
annualised over 30/365 calendar years; the VIX-like index gets its vol-of-vol. Only the dynamics are
stepped (no chains are built or priced), so a year of history for the whole universe costs tens of
milliseconds; the value is within a few per cent of what a surface fit of the quoted chain gives
(SPY at the pinned test start: 14.0 % vs 14.6 %).

Closes are scaled so each underlying's last historical close equals its spot at the market's start
(``anchor``): the path is continuous into the live market. Scaling leaves returns, realized vol and
IV untouched. Sessions are stepped in 30-minute steps plus the overnight gap, like the historical mode
(:mod:`engine.market.simulated.history`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import date, timedelta

import numpy as np

from engine.history.source import DailySeries
from engine.market.config import SimulatorConfig
from engine.market.simulated.dynamics import (
    SESSION_SECONDS,
    FactorDynamics,
    overnight_step_years,
    session_step_years,
)

TENOR_DAYS = 30.0
_STEP_SECONDS = 1800.0
#: sessions every simulated history path spans (two years), whatever the caller asks for
PATH_SESSIONS = 504


def _derived_seed(seed: int, before: date) -> int:
    """A seed for the path before ``before`` that differs from the forward path's (same seed would replay it)."""
    return (int(seed) * 1_000_003 + before.toordinal() * 7_919 + 0x5EED) % (2**63)


def model_atm_iv(dyn: FactorDynamics, config: SimulatorConfig, tenor_days: float = TENOR_DAYS) -> np.ndarray:
    """ATM implied vol per underlying at ``tenor_days`` calendar days, as the simulator's surface quotes it."""
    u = config.universe
    vrp = np.array([x.variance_premium for x in u])
    beta = np.array([x.beta for x in u])
    idio = np.array([x.idio_vol for x in u])
    is_vix = np.array([x.kind == "vol_index" for x in u])
    T = tenor_days / 365.0
    # trading time over the horizon: 30 calendar days hold 30·252/365 sessions of 1/252 year each, so τ = T
    tau = T
    avg = float(dyn.expected_variance(np.array([tau]))[0])
    var = vrp * (beta**2 * avg + idio**2 * math.sqrt(dyn.stress()))
    iv = np.sqrt(np.maximum(var * tau / T, 1e-10))
    if is_vix.any():
        spec = dyn.regime_spec
        kappa = spec.kappa
        damp = math.sqrt((1.0 - math.exp(-2.0 * kappa * T)) / (2.0 * kappa * T))
        vvol = min(max(0.5 * spec.vol_of_vol / math.sqrt(max(dyn.v, 1e-6)) * damp, 0.3), 2.0)
        iv[is_vix] = vvol
    return iv


class SimulatedHistorySource:
    """:class:`engine.history.source.HistorySource` over the simulator's seeded dynamics (picklable)."""

    def __init__(self, config: SimulatorConfig, *, anchor: Mapping[str, float] | None = None) -> None:
        self.config = config
        self.anchor = dict(anchor or {})
        self.name = f"simulated seed={config.seed}"

    def daily(self, underlyings: Sequence[str], before: date, sessions: int) -> dict[str, DailySeries]:
        """The last ``sessions`` sessions strictly before ``before`` (see the module docstring)."""
        if sessions <= 0:
            raise ValueError(f"sessions must be positive, got {sessions}")
        from engine.market.simulated.market import market_calendar

        cfg = self.config
        known = [u.symbol for u in cfg.universe]
        wanted = [s for s in underlyings if s in known]
        if not wanted:
            return {}
        # the path always starts PATH_SESSIONS (or ``sessions``, if more) before ``before``: asking for fewer
        # sessions returns the tail of the same path, so a CLI backfill and an engine backfill agree
        span = max(sessions, PATH_SESSIONS)
        first_guess = before - timedelta(days=int(span * 1.5) + 30)
        cal = market_calendar()  # the shared calendar the running market already built, when it covers the span
        if not (cal.first_session <= first_guess and before <= cal.last_session):
            cal = market_calendar(min(first_guess.year, before.year - 1), before.year + 1)
        days = [d for d in cal.sessions(first_guess, before - timedelta(days=1)) if d < before][-span:]
        if not days:
            return {}
        dyn = FactorDynamics(cfg.model_copy(update={"seed": _derived_seed(cfg.seed, before)}))
        share = cfg.overnight_variance_share
        closes = np.empty((len(days), len(known)))
        ivs = np.empty((len(days), len(known)))
        for i, d in enumerate(days):
            o, c = cal.open_close(d)
            seconds = (c - o).total_seconds() if c > o else SESSION_SECONDS
            n_full = int(seconds // _STEP_SECONDS)
            dts = [session_step_years(_STEP_SECONDS, share)] * n_full
            rest = seconds - n_full * _STEP_SECONDS
            if rest > 1e-9:
                dts.append(session_step_years(rest, share))
            if i > 0:
                dts.insert(0, overnight_step_years(share))
            dyn.advance(dts)
            closes[i] = dyn.spots
            ivs[i] = model_atm_iv(dyn, cfg)
        out: dict[str, DailySeries] = {}
        for sym in wanted:
            j = known.index(sym)
            close = closes[:, j]
            target = self.anchor.get(sym)
            if target is not None and math.isfinite(target) and target > 0:
                close = close * (float(target) / float(close[-1]))
            out[sym] = DailySeries(underlying=sym, days=tuple(days[-sessions:]), close=close[-sessions:].copy(),
                                   atm_iv=ivs[-sessions:, j].copy())
        return out
