"""Underlying dynamics: a Bates-style market factor (Heston variance + jumps) with regime switching,
and names driven by the factor (beta) plus idiosyncratic noise.

Time here is *trading time* in years: a session plus the overnight gap before it is 1/252 year.
Within a session each second is ``1 / (252 · session_seconds · (1 + overnight_share))`` year and the
overnight gap is one step of ``overnight_share / (252 · (1 + overnight_share))`` year, so the daily
close-to-close variance is ``σ² / 252``.

Randomness: one row of standard normals per step, drawn from ``numpy.random.Generator(PCG64(seed))``.
Drawing rows in one block or one at a time gives the same numbers, so a path depends only on the seed
and the sequence of step sizes, not on how the steps were batched (real-time vs fast vs historical).

Factor:  dv = κ(θ_r − v)dt + ξ_r √v dW_v (stepped by a moment-matched lognormal, exact mean/variance);  dlnF = (μ − ½v − λκ_J)dt + √v dW_F + J,  corr(dW_v, dW_F) = ρ_r
Name i:  dlnS_i = (r − q_i + β_i·ERP − ½σ_i²)dt + β_i(√v dW_F + J) + s_i √(stress) dW_i
The VIX-like index is 100·√(VRP · E[average variance over the next 30 days] + jump variance).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import ndtr

from engine.market.config import RegimeSpec, SimulatorConfig
from engine.market.simulated.index import IndexBasket

#: seconds in a regular session (09:30–16:00)
SESSION_SECONDS = 23_400.0
VIX_HORIZON_YEARS = 21.0 / 252.0  # 30 calendar days ≈ 21 sessions of trading time
EQUITY_RISK_PREMIUM = 0.05


@dataclass(frozen=True, slots=True)
class PathStep:
    """The result of :meth:`FactorDynamics.advance`: per-step spots (``n_steps × n_names``) and state."""

    spots: np.ndarray
    variance: np.ndarray  # factor variance after each step
    regime: np.ndarray  # regime index after each step
    jumps: np.ndarray  # factor log-jump in each step (0 when none)


class FactorDynamics:
    """The stochastic state of the whole universe. Deterministic under ``config.seed``."""

    def __init__(self, config: SimulatorConfig, *, lock_regime: bool = False) -> None:
        self.config = config
        self.regimes: list[RegimeSpec] = list(config.regimes)
        self.names = [u.symbol for u in config.universe]
        self.kinds = [u.kind for u in config.universe]
        self.beta = np.array([u.beta for u in config.universe], dtype=float)
        self.idio = np.array([u.idio_vol for u in config.universe], dtype=float)
        self.q = np.array([u.dividend_yield for u in config.universe], dtype=float)
        self.vrp = np.array([u.variance_premium for u in config.universe], dtype=float)
        self.is_vol_index = np.array([u.kind == "vol_index" for u in config.universe], dtype=bool)
        self.r = config.risk_free_rate
        others = ~self.is_vol_index
        self._mu = self.r - self.q + self.beta * EQUITY_RISK_PREMIUM
        self._half_beta2 = 0.5 * self.beta**2
        self._idio2 = self.idio**2
        self._index_vrp = float(self.vrp[others].max()) if others.any() else 1.15
        self.lock_regime = lock_regime
        names = [r.name for r in self.regimes]
        self.regime = names.index(config.initial_regime)
        self.v = self.regimes[self.regime].vol ** 2
        self.log_s = np.log(np.array([u.spot for u in config.universe], dtype=float))
        self._calm_var = min(r.vol for r in self.regimes) ** 2
        self._rng = np.random.Generator(np.random.PCG64(config.seed))
        self._width = 5 + len(self.names)  # z_v, z_2, jump uniform, regime uniform, jump size, one per name
        # the market reference the VIX-like index follows (the factor itself)
        self._vix_rows = np.nonzero(self.is_vol_index)[0]
        self.log_s[self._vix_rows] = np.log(self.vix_level())
        # synthetic indices: their level is the weighted sum of their members' (engine.market.simulated.index)
        self._baskets = IndexBasket(self.names, [u.components for u in config.universe])
        self._baskets.apply(self.log_s)
        self.steps_taken = 0
        self._switch_targets = self._transition_weights()

    # ---- regime model -------------------------------------------------------------------------
    def _transition_weights(self) -> np.ndarray:
        """Where a regime goes when it leaves: mostly to its neighbours in the configured order."""
        n = len(self.regimes)
        w = np.zeros((n, n))
        for i in range(n):
            for j in range(n):
                if i != j:
                    w[i, j] = 1.0 / abs(i - j) ** 2
            if w[i].sum() > 0:
                w[i] /= w[i].sum()
        return np.cumsum(w, axis=1)

    @property
    def regime_spec(self) -> RegimeSpec:
        return self.regimes[self.regime]

    @property
    def regime_name(self) -> str:
        return self.regime_spec.name

    def set_regime(self, name: str) -> None:
        """Force a regime (tests, scenario replays); the variance reverts to its level from here."""
        names = [r.name for r in self.regimes]
        if name not in names:
            raise ValueError(f"unknown regime {name!r}; choose one of {names}")
        self.regime = names.index(name)

    # ---- state --------------------------------------------------------------------------------
    @property
    def spots(self) -> np.ndarray:
        return np.exp(self.log_s)

    def stress(self) -> float:
        """Factor variance relative to the calmest regime's long-run level (1 = calm)."""
        return max(self.v, 1e-8) / self._calm_var

    def expected_variance(self, tau: np.ndarray) -> np.ndarray:
        """E[∫₀^τ v dt] / τ for trading times ``tau`` (years), plus the regime's jump variance."""
        spec = self.regime_spec
        theta, kappa = spec.vol**2, spec.kappa
        tau = np.maximum(np.asarray(tau, float), 1e-9)
        avg = theta + (self.v - theta) * (1.0 - np.exp(-kappa * tau)) / (kappa * tau)
        return np.maximum(avg, 1e-6) + spec.jump_intensity * (spec.jump_mean**2 + spec.jump_std**2)

    def vix_level(self) -> float:
        """The VIX-like index: 100·√(30-day expected variance × the index variance premium × skew convexity)."""
        spec = self.regime_spec
        theta, kappa, tau = spec.vol**2, spec.kappa, VIX_HORIZON_YEARS
        avg = max(theta + (self.v - theta) * (1.0 - math.exp(-kappa * tau)) / (kappa * tau), 1e-6)
        avg += spec.jump_intensity * (spec.jump_mean**2 + spec.jump_std**2)
        return 100.0 * math.sqrt(avg * self._index_vrp * 1.08)

    # ---- stepping -----------------------------------------------------------------------------
    def advance(self, dts: np.ndarray | list[float], *, record: bool = False) -> PathStep | None:
        """Advance by steps of ``dts`` trading years. With ``record`` return every step's spots."""
        dts = np.asarray(dts, dtype=float)
        n = len(dts)
        if n == 0:
            return None
        if np.any(dts < 0) or not np.all(np.isfinite(dts)):
            raise ValueError("step sizes must be finite and non-negative")
        z = self._rng.standard_normal((n, self._width))
        u_jump = ndtr(z[:, 2])
        u_regime = ndtr(z[:, 3])
        v_path = np.empty(n)
        sqrt_var_dt = np.empty(n)  # √(v dt) driving the factor's diffusion
        z_f = np.empty(n)
        jump = np.zeros(n)
        var_dt = np.empty(n)
        comp_dt = np.empty(n)
        regimes = np.empty(n, dtype=np.int16)
        v = self.v
        regime = self.regime
        specs = self.regimes
        cum = self._switch_targets
        zv_all, z2_all, zj_all = z[:, 0], z[:, 1], z[:, 4]
        for t in range(n):
            dt = dts[t]
            spec = specs[regime]
            vp = v if v > 0.0 else 0.0
            sq = math.sqrt(vp * dt)
            zv = zv_all[t]
            zf = spec.rho * zv + math.sqrt(1.0 - spec.rho * spec.rho) * z2_all[t]
            # jumps: at most one per step (λ·dt is small at our step sizes)
            lam_dt = spec.jump_intensity * dt
            kj = math.exp(spec.jump_mean + 0.5 * spec.jump_std**2) - 1.0
            if u_jump[t] < lam_dt:
                jump[t] = spec.jump_mean + spec.jump_std * zj_all[t]
            var_dt[t] = vp * dt
            comp_dt[t] = spec.jump_intensity * kj * dt
            sqrt_var_dt[t] = sq
            z_f[t] = zf
            # moment-matched lognormal step (exact mean and variance of the CIR transition; stays positive)
            theta, kappa, xi = spec.vol**2, spec.kappa, spec.vol_of_vol
            e = math.exp(-kappa * dt)
            m = theta + (vp - theta) * e
            s2 = vp * xi * xi * e * (1.0 - e) / kappa + theta * xi * xi * (1.0 - e) ** 2 / (2.0 * kappa)
            sig2 = math.log1p(s2 / (m * m)) if m > 0 else 0.0
            v = m * math.exp(-0.5 * sig2 + math.sqrt(sig2) * zv)
            if jump[t] < 0:  # crashes lift variance
                v += 4.0 * jump[t] ** 2
            # regime switching: leave with probability dt_days / mean duration
            if not self.lock_regime and len(specs) > 1:
                p_leave = dt * 252.0 / spec.mean_duration_days
                if u_regime[t] < p_leave:
                    pick = u_regime[t] / p_leave  # uniform on [0,1) given the switch
                    new = int(np.searchsorted(cum[regime], pick, side="right"))
                    new = min(new, len(specs) - 1)
                    if new == regime:
                        new = (regime + 1) % len(specs)
                    if specs[new].vol > spec.vol:
                        v = max(v, 0.6 * specs[new].vol ** 2)  # stress arrives with a shock
                    regime = new
            v_path[t] = v
            regimes[t] = regime
        self.v = v
        self.regime = regime
        # names: β × factor shock + idiosyncratic noise scaled by stress
        stress_root = np.sqrt(np.maximum(v_path, 1e-8) / self._calm_var)[:, None]
        dt_col = dts[:, None]
        idio_var_dt = self._idio2 * stress_root * dt_col  # σ_idio²·√stress·dt
        dlog = self._mu * dt_col
        dlog += self.beta * (sqrt_var_dt * z_f + jump - comp_dt)[:, None]
        dlog -= self._half_beta2 * var_dt[:, None]
        dlog -= 0.5 * idio_var_dt
        dlog += np.sqrt(idio_var_dt) * z[:, 5:]
        # summing from the current level (not adding it afterwards) keeps batching bit-exact
        path = np.cumsum(np.vstack([self.log_s[None, :], dlog]), axis=0)[1:]
        if self._baskets:
            self._baskets.apply(path[-1], path if record else None)
        self.log_s = path[-1].copy()
        self.steps_taken += n
        if len(self._vix_rows):
            vix = self.vix_level()
            self.log_s[self._vix_rows] = math.log(vix)
            if record:
                # the index follows the variance path step by step
                spec = self.regime_spec
                theta, kappa = spec.vol**2, spec.kappa
                tau = VIX_HORIZON_YEARS
                avg = theta + (v_path - theta) * (1 - math.exp(-kappa * tau)) / (kappa * tau)
                jv = spec.jump_intensity * (spec.jump_mean**2 + spec.jump_std**2)
                vrp = float(self.vrp[~self.is_vol_index].max()) if (~self.is_vol_index).any() else 1.15
                level = 100.0 * np.sqrt((np.maximum(avg, 1e-6) + jv) * vrp * 1.08)
                path[:, self._vix_rows] = np.log(level)[:, None]
        if not record:
            return None
        return PathStep(spots=np.exp(path), variance=v_path, regime=regimes, jumps=jump)

    # ---- serialisation ------------------------------------------------------------------------
    def state(self) -> dict[str, object]:
        """Everything needed to continue the path exactly (RNG state included)."""
        return {
            "v": self.v, "regime": self.regime, "log_s": self.log_s.tolist(), "steps": self.steps_taken,
            "rng": self._rng.bit_generator.state,
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state`'s output (a JSON round trip of it: plain numbers, lists and the RNG's
        state dict)."""
        self.v = float(state["v"])
        self.regime = int(state["regime"])
        self.log_s = np.asarray(state["log_s"], dtype=float)
        self.steps_taken = int(state["steps"])
        self._rng.bit_generator.state = state["rng"]


def session_step_years(seconds: float, overnight_share: float) -> float:
    """Trading-time years of ``seconds`` of an open session."""
    return seconds / (252.0 * SESSION_SECONDS * (1.0 + overnight_share))


def overnight_step_years(overnight_share: float) -> float:
    """Trading-time years of one overnight (or weekend/holiday) gap."""
    return overnight_share / (252.0 * (1.0 + overnight_share))
