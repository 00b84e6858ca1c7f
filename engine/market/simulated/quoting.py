"""The simulated implied-vol surface and the option quotes made on it.

Surface (per underlying and expiry): the ATM total implied variance is the expected variance of the
dynamics over the trading time to expiry, times the name's variance premium:
``θ_T = VRP · (β²·E[v̄]_τ + σ_idio²·√stress) · τ``. The smile is SSVI,
``w(k) = θ/2 · (1 + ρφk + √((φk + ρ)² + 1 − ρ²))`` with ``φ = η/√θ`` (power law γ = ½), ``k = ln(K/F)``;
``η(1 + |ρ|) ≤ 2`` keeps each slice free of butterfly arbitrage. In stress the skew steepens (η and
|ρ| grow with the regime's ``skew_multiplier``). The VIX-like index's options are priced on its
mean-reverting forward with positive skew.

Quotes: theoretical value from :mod:`engine.pricing.bsm` (European) plus, for American-style roots, the
early-exercise premium from :mod:`engine.pricing.american` (ALO, ``fast`` scheme) on the rows where it is
material — all rows when a listing is built, then ``american_rows_per_reprice`` rows per full reprice in
rotation (the premium moves slowly; the pricer costs ~15 ms per 1,000 options) — and never below the
exercise value. Bid/ask straddle the theo: the width is about
0.03 vol points of vega plus a delta-hedging term, widened for distance from ATM, short expiries,
high volatility and the regime, rounded outward to the tick schedule; the theo always lies in
``[bid, ask]``. Between full reprices, theos move by delta, gamma, vega and theta.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.market.config import SimulatorConfig
from engine.market.simulated.dynamics import FactorDynamics
from engine.market.simulated.earnings import EarningsSchedule
from engine.market.simulated.listing import Listing
from engine.market.simulated.ticks import tick_params
from engine.pricing import american, bsm

_SECONDS_PER_YEAR = 365.0 * 86400.0


@dataclass(eq=False)
class Surface:
    """Per-pair inputs of the smile at one instant."""

    T: np.ndarray  # calendar years ACT/365 per pair
    tau: np.ndarray  # trading years per pair
    forward: np.ndarray  # per pair
    theta: np.ndarray  # ATM total variance per pair
    rho: np.ndarray  # per pair
    eta: np.ndarray  # per pair


class QuoteEngine:
    """Prices a :class:`Listing` and keeps the latest quote columns (flat arrays, listing order)."""

    def __init__(self, config: SimulatorConfig, listing: Listing, seed: int,
                 previous: QuoteEngine | None = None) -> None:
        """``previous``: the engine of the last listing; early-exercise premiums of contracts still listed
        carry over, so only new contracts need the (slow) American pricer at the next reprice."""
        self.config = config
        self.listing = listing
        n = len(listing)
        self._rng = np.random.Generator(np.random.PCG64([seed, listing.session.toordinal()]))
        u = config.universe
        self.liquidity = np.array([x.liquidity for x in u])[listing.und]
        self.q_und = np.array([x.dividend_yield for x in u])
        self.q = self.q_und[listing.und]
        self.kind_und = np.array([x.kind for x in u], dtype=object)
        self.vol_index_pair = self.kind_und[listing.pair_und] == "vol_index"
        self.vol_index_row = self.vol_index_pair[listing.pair]
        self.rho0 = np.array([x.skew_rho for x in u])
        self.vrp = np.array([x.variance_premium for x in u])
        self.beta = np.array([x.beta for x in u])
        self.idio = np.array([x.idio_vol for x in u])
        # static per-contract noise: quote centre jitter (in half-spreads), size and open-interest scatter
        self._size_noise = self._rng.lognormal(0.0, 0.35, n)
        self._oi_noise = self._rng.lognormal(0.0, 0.6, n)
        self._vol_noise = self._rng.uniform(0.5, 1.5, n)
        self.open_interest = np.zeros(n)
        self.theo = np.full(n, np.nan)
        self.iv = np.full(n, np.nan)
        self.delta = np.full(n, np.nan)
        self.gamma = np.full(n, np.nan)
        self.vega = np.full(n, np.nan)
        self.theta = np.full(n, np.nan)
        self.half_spread = np.zeros(n)
        self.bid = np.full(n, np.nan)
        self.ask = np.full(n, np.nan)
        self.bid_size = np.zeros(n)
        self.ask_size = np.zeros(n)
        self.volume = np.zeros(n)
        self.last = np.full(n, np.nan)
        self._jitter = np.zeros(n)
        self._ref_spot = np.full(len(u), np.nan)
        self._ref_var = np.full(len(listing.pair_und), np.nan)
        self._ref_ts: np.datetime64 | None = None
        self._theo0 = np.full(n, np.nan)
        self._half_gamma = np.zeros(n)
        self._vega_pts = np.zeros(n)
        self._ref_S_minus_K = np.zeros(n)
        self._premium = np.zeros(n)
        self._premium_ts: np.datetime64 | None = None
        self._premium_cursor = 0
        self._premium_known = np.zeros(n, dtype=bool)
        if previous is not None and len(previous.listing):
            old = {sym: i for i, sym in enumerate(previous.listing.symbol)}
            at = np.array([old.get(sym, -1) for sym in listing.symbol], dtype=np.int64)
            kept = (at >= 0) & previous._premium_known[np.maximum(at, 0)]
            self._premium[kept] = previous._premium[at[kept]]
            self._premium_known = kept
        self._tick_lo, self._tick_hi, self._tick_threshold = tick_params(listing.scheme)
        self._tick_lo_c, self._tick_hi_c = np.rint(self._tick_lo * 100.0), np.rint(self._tick_hi * 100.0)
        self._inv_lo_c, self._inv_hi_c = 1.0 / self._tick_lo_c, 1.0 / self._tick_hi_c
        self._half_c = np.zeros(n)
        self._exercise_sign = np.where(listing.american, np.where(listing.is_call, 1.0, -1.0), 0.0)
        self._oi_set = False
        self._earnings = EarningsSchedule.for_config(config)

    # ---- surface ------------------------------------------------------------------------------
    def surface(self, now64: np.datetime64, tau_pair: np.ndarray, spots: np.ndarray,
                dyn: FactorDynamics) -> Surface:
        lst = self.listing
        r = self.config.risk_free_rate
        T = (lst.pair_expiry - now64).astype("timedelta64[s]").astype(float) / _SECONDS_PER_YEAR
        T = np.maximum(T, 1.0 / _SECONDS_PER_YEAR)
        tau = np.maximum(tau_pair, 1e-7)
        und = lst.pair_und
        spec = dyn.regime_spec
        avg = dyn.expected_variance(tau)
        stress = dyn.stress()
        var = self.vrp[und] * (self.beta[und] ** 2 * avg + self.idio[und] ** 2 * np.sqrt(stress))
        fwd = spots[und] * np.exp((r - self.q_und[und]) * T)
        skew_mult = spec.skew_multiplier
        rho = np.clip(self.rho0[und] * (1.0 + 0.25 * (skew_mult - 1.0)), -0.95, 0.95)
        eta = np.minimum(0.9 * skew_mult ** 0.7, 1.96 / (1.0 + np.abs(rho)))
        vi = self.vol_index_pair
        if vi.any():
            # the VIX-like index: mean-reverting forward, vol of vol from the variance process
            kappa, theta_lr = spec.kappa, spec.vol**2
            spot_var = (spots[und[vi]] / 100.0) ** 2
            fwd_var = theta_lr + (spot_var - theta_lr) * np.exp(-kappa * T[vi])
            fwd[vi] = 100.0 * np.sqrt(np.maximum(fwd_var, 1e-6))
            damp = np.sqrt((1.0 - np.exp(-2.0 * kappa * T[vi])) / (2.0 * kappa * T[vi]))
            vvol = np.clip(0.5 * spec.vol_of_vol / np.sqrt(max(dyn.v, 1e-6)) * damp, 0.3, 2.0)
            var[vi] = vvol**2 * T[vi] / np.maximum(tau[vi], 1e-9)
            eta[vi] = 0.6
        theta_atm = np.maximum(var * tau, 1e-10)
        if self._earnings:  # earnings announcements before an expiry add their move² (the IV ramp and crush)
            theta_atm = theta_atm + self._earnings.event_variance(und, now64, lst.pair_expiry)
        return Surface(T=T, tau=tau, forward=fwd, theta=theta_atm, rho=rho, eta=eta)

    def implied_vol(self, surf: Surface, strike: np.ndarray, pair: np.ndarray) -> np.ndarray:
        """SSVI implied vol of each row (calendar-time annualised)."""
        th = surf.theta[pair]
        rho = surf.rho[pair]
        phi = surf.eta[pair] / np.sqrt(th)
        k = np.log(strike / surf.forward[pair])
        pk = phi * k
        w = 0.5 * th * (1.0 + rho * pk + np.sqrt((pk + rho) ** 2 + 1.0 - rho * rho))
        return np.sqrt(w / surf.T[pair])

    # ---- full reprice -------------------------------------------------------------------------
    def full(self, now64: np.datetime64, tau_pair: np.ndarray, spots: np.ndarray, dyn: FactorDynamics,
             session_elapsed: float, *, refresh_american: bool = False) -> None:
        lst = self.listing
        if len(lst) == 0:
            return
        r = self.config.risk_free_rate
        surf = self.surface(now64, tau_pair, spots, dyn)
        pair = lst.pair
        iv = self.implied_vol(surf, lst.strike, pair)
        T = surf.T[pair]
        # the VIX-like index's options are priced on its forward: S_eff = F, q_eff = r (Black-76)
        S = spots[lst.und].copy()
        q = self.q.copy()
        vi = self.vol_index_row
        if vi.any():
            S[vi] = surf.forward[pair[vi]]
            q[vi] = r
        g = bsm.greeks(lst.is_call, S, lst.strike, T, r, q, iv,
                       outputs=("price", "delta", "gamma", "vega", "theta"))  # what the quotes use
        intrinsic = np.maximum(np.where(lst.is_call, S - lst.strike, lst.strike - S), 0.0)
        euro = np.maximum(g.price, 0.0)
        n = len(lst)
        if refresh_american:
            chunk = np.ones(n, dtype=bool)  # a forced refresh: every row now
        elif not self._premium_known.all():
            chunk = ~self._premium_known  # contracts without a premium yet (new listings)
        else:
            # then a rotating slice per full reprice keeps each reprice cheap (the premium moves slowly)
            step = self.config.american_rows_per_reprice
            idx = (np.arange(step) + self._premium_cursor) % n
            self._premium_cursor = int((self._premium_cursor + step) % n)
            chunk = np.zeros(n, dtype=bool)
            chunk[idx] = True
        self._update_premium(S, T, q, iv, euro, chunk)
        self._premium_known |= chunk
        self._premium_ts = now64
        # American rows: European value + early-exercise premium, never below the exercise value
        theo = np.where(lst.american, np.maximum(euro + self._premium, intrinsic), euro)
        self.iv, self.theo = iv, theo
        self.delta, self.gamma, self.vega, self.theta = g.delta, g.gamma, g.vega, g.theta
        # spread: vega-scaled width + hedging cost, widened for wings, short DTE, vol and regime
        x = np.log(lst.strike / surf.forward[pair]) / np.sqrt(surf.theta[pair])
        dte = T * 365.0
        atm_vol = np.sqrt(surf.theta / surf.T)[pair]
        spec = dyn.regime_spec
        width = (0.03 * g.vega + 0.00003 * S * np.abs(g.delta) + 0.002 * intrinsic ** 0.5)
        width *= (1.0 + 0.35 * np.abs(x)) * (1.0 + 0.3 / np.sqrt(dte + 0.25)) * np.sqrt(atm_vol / 0.18)
        width *= spec.spread_multiplier / self.liquidity
        self.half_spread = 0.5 * width
        self._half_c = self.half_spread * 100.0
        self._jitter = self._rng.uniform(-0.3, 0.3, len(lst))
        # sizes and open interest
        near = np.exp(-0.5 * np.minimum(x * x, 50.0))
        base = 20.0 + 480.0 * near
        self.bid_size = np.maximum(1.0, np.rint(base * self.liquidity * self._size_noise / np.sqrt(spec.spread_multiplier)))
        self.ask_size = np.maximum(1.0, np.rint(base * self.liquidity * self._size_noise[::-1].copy()
                                               / np.sqrt(spec.spread_multiplier)))
        if not self._oi_set:
            oi = (200.0 + 20_000.0 * np.exp(-0.5 * np.minimum((x / 1.5) ** 2, 50.0)))
            oi *= np.where(lst.monthly, 2.0, 0.6) * self.liquidity * self._oi_noise
            self.open_interest = np.rint(oi)
            self._oi_set = True
        self.volume = np.rint(self.open_interest * 0.12 * max(session_elapsed, 0.0) * self._vol_noise)
        self._ref_spot = spots.copy()
        self._ref_var = surf.theta / surf.tau
        self._ref_ts = now64
        self._theo0 = theo.copy()
        # coefficients of the incremental update (per row)
        self._half_gamma = 0.5 * self.gamma
        self._vega_pts = self.vega * iv * 100.0  # value change for a relative vol change of 1
        self._ref_S_minus_K = S - lst.strike
        self._round()
        traded = self.volume > 0
        self.last = np.where(traded, np.round(self.theo, 2), np.nan)

    def _update_premium(self, S: np.ndarray, T: np.ndarray, q: np.ndarray, iv: np.ndarray, euro: np.ndarray,
                        rows: np.ndarray) -> None:
        """American − European value (ALO, ``fast`` scheme) for ``rows`` where it exists: American puts, and
        American calls on dividend payers unless out of the money by more than 3 %; zero elsewhere."""
        lst = self.listing
        K = lst.strike
        material = lst.american & (T > 1.0 / 365.0) & (~lst.is_call | ((q > 0) & (S > 0.97 * K)))
        self._premium[rows & ~material] = 0.0
        todo = rows & material
        if todo.any():
            r = self.config.risk_free_rate
            amer = american.price(lst.is_call[todo], S[todo], K[todo], T[todo], r, q[todo], iv[todo], scheme="fast")
            self._premium[todo] = np.clip(np.nan_to_num(amer - euro[todo], nan=0.0), 0.0, None)

    # ---- incremental update -------------------------------------------------------------------
    def incremental(self, now64: np.datetime64, tau_pair: np.ndarray, spots: np.ndarray,
                    dyn: FactorDynamics) -> None:
        """Move theos by Δ·dS + ½Γ·dS² + vega·dσ + θ·dt since the last full reprice (cheap)."""
        lst = self.listing
        if len(lst) == 0 or self._ref_ts is None:
            return
        und = lst.pair_und
        tau = np.maximum(tau_pair, 1e-7)
        avg = dyn.expected_variance(tau)
        var = self.vrp[und] * (self.beta[und] ** 2 * avg + self.idio[und] ** 2 * np.sqrt(dyn.stress()))
        if self._earnings:  # the same event variance as the full reprice's, per unit of trading time
            var = var + self._earnings.event_variance(und, now64, lst.pair_expiry) / tau
        ratio = np.sqrt(np.maximum(var, 1e-10) / np.maximum(self._ref_var, 1e-10)) - 1.0
        ratio[self.vol_index_pair] = 0.0
        dS = (spots - self._ref_spot)[lst.und]
        d_days = float((now64 - self._ref_ts).astype("timedelta64[s]").astype(float)) / 86400.0
        theo = self._theo0 + dS * (self.delta + self._half_gamma * dS)
        theo += self._vega_pts * ratio[lst.pair]
        theo += self.theta * d_days
        # exercise floor: ±(S − K) for American calls/puts, 0 for European rows
        self.theo = np.maximum(theo, self._exercise_sign * (self._ref_S_minus_K + dS))
        self._round()

    def _round(self) -> None:
        """Bid/ask around the theo on the tick grid, in integer ticks (exact two-decimal floats).

        The centre jitter is within ±0.3 half-spreads, so ``centre − half < theo < centre + half``: the
        rounded-out bid and ask always bracket the theo.
        """
        theo = self.theo
        low = theo < self._tick_threshold
        tick_c = np.where(low, self._tick_lo_c, self._tick_hi_c)
        inv = np.where(low, self._inv_lo_c, self._inv_hi_c)
        half_c = np.maximum(self._half_c, 0.5 * tick_c)
        centre_c = theo * 100.0
        centre_c += self._jitter * half_c
        bid_k = np.floor((centre_c - half_c) * inv)
        ask_k = np.ceil((centre_c + half_c) * inv)
        np.maximum(ask_k, bid_k + 1.0, out=ask_k)
        np.maximum(bid_k, 0.0, out=bid_k)
        # integer cents ÷ 100 gives the exact two-decimal float (× 0.01 would leave 4.6000000000000005)
        tick_c /= 100.0
        self.bid = bid_k * tick_c
        self.ask = ask_k * tick_c
