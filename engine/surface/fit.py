"""Fit a volatility surface to an option chain: forwards → implied vols → SVI slices → arbitrage repair.

:func:`fit_chain` never raises on market data: an empty chain, NaN quotes, all-zero bids, a single
expiry or an expiry with too few strikes give a :class:`SurfaceFit` whose ``reasons``/``notes`` and
per-row ``ivs.reason`` say what happened. Programming errors (wrong argument types/shapes) still raise.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from datetime import datetime

import numpy as np

from engine.model.chain import OptionChain
from engine.surface.analytics import TermStructure, term_structure
from engine.surface.arbitrage import ArbitrageReport, enforce_no_arbitrage
from engine.surface.config import SurfaceConfig
from engine.surface.forward import ForwardEstimate, row_medians
from engine.surface.quotes import ChainIVs, RateInput, chain_ivs
from engine.surface.surface import VolSurface
from engine.surface.svi import SVIBatchFit, SVIParams, fit_svi_batch, svi_total_variance

#: IV spread assumed where the bid or ask has no implied vol (weight of such a point in the fit)
_UNKNOWN_IV_SPREAD = 0.05
#: a point is an outlier when its mid IV is further than this many IV spreads from the first fit ...
_OUTLIER_SPREADS = 4.0
#: ... and further than this many vol units (0.01 = one vol point)
_OUTLIER_MIN_VOL = 0.01


@dataclass(frozen=True, slots=True)
class SliceFit:
    """One expiry: its forward, its SVI parameters (None when not fitted) and fit quality.

    ``rmse_bp`` is the unweighted RMS of (model − mid IV) over the smile points, in basis points of
    vol (1 bp = 0.0001); ``max_error_bp`` the largest absolute error; ``inside_spread`` the share
    of points whose model vol lies within [bid IV, ask IV].
    """

    expiry: np.datetime64
    T: float
    forward: ForwardEstimate
    params: SVIParams | None
    n_points: int
    rmse_bp: float
    max_error_bp: float
    inside_spread: float
    status: str  # fitted | skipped
    reason: str = ""


@dataclass(frozen=True, eq=False)
class SurfaceFit:
    """Everything one refit produced; plain immutable data, safe to pass between processes."""

    underlying: str
    ts: datetime
    spot: float
    surface: VolSurface
    slices: tuple[SliceFit, ...]
    ivs: ChainIVs
    term: TermStructure
    arbitrage: ArbitrageReport
    reasons: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    elapsed_ms: float = 0.0
    strikes: np.ndarray = field(default_factory=lambda: np.array([]))  # chain strikes (row order)
    is_call: np.ndarray = field(default_factory=lambda: np.array([], dtype=bool))

    @property
    def ok(self) -> bool:
        """True when at least one expiry was fitted."""
        return not self.surface.empty

    def fitted_slices(self) -> list[SliceFit]:
        return [s for s in self.slices if s.params is not None]


def _empty_fit(chain: OptionChain, ivs: ChainIVs, reasons: list[str], t0: float, notes=()) -> SurfaceFit:
    n = len(ivs.expiries)
    surface = VolSurface(chain.underlying, chain.ts, float(chain.spot), np.array([], dtype="datetime64[s]"),
                         np.array([]), np.array([]), np.array([]), np.zeros((0, 5)))
    fw = np.array([f.forward for f in ivs.forwards]) if n else np.array([])
    disc = np.array([f.discount for f in ivs.forwards]) if n else np.array([])
    term = term_structure(chain, ivs.expiries, ivs.T_expiry, fw, disc, np.full((n, 5), np.nan), ivs.expiry_index)
    slices = tuple(
        SliceFit(ivs.expiries[i], float(ivs.T_expiry[i]), ivs.forwards[i], None, 0, np.nan, np.nan, np.nan,
                 "skipped", _skip_reason(ivs, i))
        for i in range(n)
    )
    return SurfaceFit(chain.underlying, chain.ts, float(chain.spot), surface, slices, ivs, term, ArbitrageReport(),
                      tuple(reasons), tuple(notes), (time.perf_counter() - t0) * 1e3,
                      chain.strike.copy(), chain.is_call.copy())


def _skip_reason(ivs: ChainIVs, i: int) -> str:
    rows = ivs.expiry_index == i
    if not rows.any():
        return "no rows"
    counts: dict[str, int] = {}
    for r in ivs.reason[rows]:
        counts[r] = counts.get(r, 0) + 1
    if ivs.T_expiry[i] <= 0:
        return "expired"
    usable = int(np.count_nonzero(ivs.reason[rows] == "insufficient_strikes"))
    detail = ", ".join(f"{k or 'ok'}: {v}" for k, v in sorted(counts.items()))
    return f"insufficient valid strikes ({usable}); rows: {detail}"


def fit_chain(
    chain: OptionChain,
    *,
    rate: RateInput,
    dividend_yield: RateInput = 0.0,
    config: SurfaceConfig | None = None,
    now: datetime | None = None,
    quote_age: np.ndarray | None = None,
    repair: bool | None = None,
    warm: WarmStart | None = None,
) -> SurfaceFit:
    """Fit every expiry of ``chain`` (rates continuously compounded; a float or a callable curve of T).

    ``now`` defaults to the chain's timestamp; ``quote_age`` (seconds per row) enables the stale filter.
    ``repair`` overrides ``config.repair_arbitrage`` (``False``: check and report only; the service
    repairs afterwards with :func:`repair_fit`). ``warm``: the previous fit of this underlying (a
    streaming chain) to start the SVI search from; used only when it has every expiry being fitted,
    and a slice whose warm fit is clearly worse than its previous fit is refitted from scratch. Its
    repaired slices (``WarmStart.repaired``) are candidates of the arbitrage repair.
    """
    t0 = time.perf_counter()
    cfg = config or SurfaceConfig()
    if len(chain) == 0:
        return _empty_fit(chain, chain_ivs(chain, rate=rate, dividend_yield=dividend_yield, config=cfg, now=now),
                          ["empty chain: no options to fit"], t0)
    reasons: list[str] = []
    if not (np.isfinite(chain.spot) and chain.spot > 0):
        reasons.append(f"underlying price {chain.spot!r} is not usable; forwards come from parity only")
    ivs = chain_ivs(chain, rate=rate, dividend_yield=dividend_yield, config=cfg, now=now, quote_age=quote_age)
    notes = list(ivs.notes)
    for f, e in zip(ivs.forwards, ivs.expiries, strict=True):
        if f.fallback and f.T > 0:
            notes.append(f"{np.datetime_as_string(e, unit='D')}: forward from carry S·e^((r−q)T) ({f.note})")
    n_exp = len(ivs.expiries)
    fit_idx = [i for i in range(n_exp) if np.any(ivs.used & (ivs.expiry_index == i))]
    if not fit_idx:
        counts = ivs.reason_counts()
        detail = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
        reasons.append(f"no expiry has {cfg.min_strikes} or more valid strikes ({detail})")
        return _empty_fit(chain, ivs, reasons, t0, notes)

    # pad the smile points of every fitted expiry into (S, N) arrays for one batched fit
    rows_per = [np.nonzero(ivs.used & (ivs.expiry_index == i))[0] for i in fit_idx]
    K, W, OM, SPR = _smile_arrays(ivs, fit_idx, rows_per, cfg)
    start = warm.start_for(ivs.expiries[fit_idx]) if warm is not None else None
    batch = fit_svi_batch(K, W, OM, start=start)
    if start is not None and warm is not None:
        batch = _guard_warm(batch, start, warm.rmse_for(ivs.expiries[fit_idx]), K, W, OM, ivs.T_expiry[fit_idx])
    # one robust pass: points far outside their own bid/ask from the first fit are dropped as outliers
    T_col = ivs.T_expiry[fit_idx][:, None]
    model_iv = np.sqrt(np.maximum(svi_total_variance(K, *(batch.params[:, c : c + 1] for c in range(5))), 0.0) / T_col)
    quote_iv = np.sqrt(W / T_col)
    resid = np.abs(model_iv - quote_iv)
    live = OM > 0
    out = live & (resid > np.maximum(_OUTLIER_SPREADS * SPR, _OUTLIER_MIN_VOL))
    keep_enough = (live & ~out).sum(axis=1) >= cfg.min_strikes
    out &= keep_enough[:, None]
    if out.any():
        OM = np.where(out, 0.0, OM)
        batch = fit_svi_batch(K, W, OM, start=batch.params if start is not None else None)
        reason = ivs.reason.copy()
        used = ivs.used.copy()
        for j, rows in enumerate(rows_per):
            dropped = rows[out[j, : len(rows)]]
            reason[dropped] = "outlier"
            used[dropped] = False
        ivs = replace(ivs, reason=reason, used=used)
        rows_per = [rows[~out[j, : len(rows)]] for j, rows in enumerate(rows_per)]
        notes.append(f"{int(out.sum())} outlier quote(s) dropped (more than {_OUTLIER_SPREADS:g} IV spreads and "
                     f"{_OUTLIER_MIN_VOL * 100:g} vol points from the first fit)")
    if n_exp > len(fit_idx):
        reasons.append(f"{n_exp - len(fit_idx)} of {n_exp} expiries not fitted (see slices)")
    if len(fit_idx) == 1:
        notes.append("single fitted expiry: the surface scales its smile in time (constant vol per k)")
    do_repair = cfg.repair_arbitrage if repair is None else repair
    previous = warm.repaired_for(ivs.expiries[fit_idx]) if warm is not None and do_repair else None
    return _finish(chain, ivs, fit_idx, rows_per, K, W, OM, batch.params, cfg, do_repair, reasons, notes, t0,
                   previous)


@dataclass(frozen=True, eq=False)
class WarmStart:
    """The SVI slices of a previous fit, small enough to send to a worker process with every chain.

    Why: on a streaming chain the smile moves little between refits, so the SVI search can start from
    the previous slices instead of a coarse (m, σ) grid (about 3× cheaper). Take it from the fit
    *before* its arbitrage repair: that is the unconstrained optimum the next search looks for. The
    repaired slices (:meth:`with_repaired`) are arbitrage-free and near the next quotes: the next
    repair takes them where they stay clean instead of rebuilding an eSSVI backbone.
    """

    expiries: np.ndarray  # datetime64[s]
    params: np.ndarray  # (n, 5) raw SVI
    rmse_bp: np.ndarray  # (n,) each slice's RMSE to mid IV in that fit
    repaired: np.ndarray | None = None  # (n, 5) the arbitrage-free surface's slices, NaN rows where none

    @classmethod
    def from_fit(cls, fit: SurfaceFit) -> WarmStart | None:
        """The warm start of ``fit`` (made with ``repair=False``); None when it fitted nothing. A fit whose
        checks found no arbitrage is its own repaired surface."""
        fitted = fit.fitted_slices()
        if not fitted:
            return None
        params = np.array([_params_of(s) for s in fitted])
        return cls(np.array([s.expiry for s in fitted], dtype="datetime64[s]"), params,
                   np.array([s.rmse_bp for s in fitted]),
                   params.copy() if fit.arbitrage.arbitrage_free else None)

    def with_repaired(self, repaired: SurfaceFit) -> WarmStart:
        """This warm start with the slices of ``repaired`` (the arbitrage-free surface of the same chain)
        where they are clean; a repair that left arbitrage contributes nothing."""
        rows = np.full((len(self.expiries), 5), np.nan)
        if repaired.arbitrage.arbitrage_free:
            for s in repaired.fitted_slices():
                j = int(np.searchsorted(self.expiries, s.expiry))
                if j < len(self.expiries) and self.expiries[j] == s.expiry:
                    rows[j] = _params_of(s)
        return replace(self, repaired=rows)

    def repaired_for(self, expiries: np.ndarray) -> np.ndarray | None:
        """(S, 5) repaired slices for these expiries (NaN rows where there is none), or None."""
        if self.repaired is None or len(self.expiries) == 0:
            return None
        e = np.asarray(expiries, dtype="datetime64[s]")
        pos = np.clip(np.searchsorted(self.expiries, e), 0, len(self.expiries) - 1)
        out = np.where((self.expiries[pos] == e)[:, None], self.repaired[pos], np.nan)
        return out if np.isfinite(out).all(1).any() else None

    def _rows(self, expiries: np.ndarray) -> np.ndarray | None:
        e = np.asarray(expiries, dtype="datetime64[s]")
        pos = np.searchsorted(self.expiries, e)
        pos = np.clip(pos, 0, max(len(self.expiries) - 1, 0))
        if len(self.expiries) == 0 or not np.all(self.expiries[pos] == e):
            return None
        return pos

    def start_for(self, expiries: np.ndarray) -> np.ndarray | None:
        """(S, 5) starting parameters for these expiries, or None unless every one was fitted before."""
        rows = self._rows(expiries)
        return None if rows is None else self.params[rows]

    def rmse_for(self, expiries: np.ndarray) -> np.ndarray:
        rows = self._rows(expiries)
        return np.full(len(expiries), np.nan) if rows is None else self.rmse_bp[rows]


#: a warm-started slice fitting worse than max(1.5 × its previous RMSE, previous + 1 bp) is refitted cold
_WARM_RMSE_FACTOR = 1.5
_WARM_RMSE_SLACK_BP = 1.0


def _guard_warm(batch, start: np.ndarray, prev_rmse: np.ndarray, K: np.ndarray, W: np.ndarray, OM: np.ndarray,
                T: np.ndarray):
    """Refit from scratch the slices a warm start served badly (the smile changed shape: a jump, a new day)."""
    live = OM > 0
    model = svi_total_variance(K, *(batch.params[:, c : c + 1] for c in range(5)))
    with np.errstate(invalid="ignore", divide="ignore"):
        err = np.sqrt(np.maximum(model, 0.0) / T[:, None]) - np.sqrt(np.maximum(W, 0.0) / T[:, None])
        rmse = np.sqrt((np.where(live, err, 0.0) ** 2).sum(1) / np.maximum(live.sum(1), 1)) * 1e4
    bad = ~(rmse <= np.maximum(_WARM_RMSE_FACTOR * prev_rmse, prev_rmse + _WARM_RMSE_SLACK_BP))
    if not bad.any():
        return batch
    cold = fit_svi_batch(K[bad], W[bad], OM[bad])
    params, wrmse = batch.params.copy(), batch.wrmse.copy()
    better = cold.wrmse < wrmse[bad]
    rows = np.nonzero(bad)[0][better]
    params[rows] = cold.params[better]
    wrmse[rows] = cold.wrmse[better]
    return SVIBatchFit(params=params, wrmse=wrmse)


def repair_fit(fit: SurfaceFit, chain: OptionChain, config: SurfaceConfig | None = None,
               warm: WarmStart | None = None) -> SurfaceFit:
    """The arbitrage repair of a fit made with ``repair=False``, as its own step.

    Why separate: the service publishes the unrepaired surface at once and this repaired one when
    it is ready (the repair can cost as much as the fit). ``chain`` is the chain ``fit`` came from
    (the term structure's straddles read its quotes). A fit that is already arbitrage-free (or
    empty) comes back as it is. The result equals ``fit_chain(chain, ..., repair=True)`` (with the
    same ``warm``: its repaired slices are candidates of the repair).
    """
    cfg = config or SurfaceConfig()
    if not fit.ok or not fit.arbitrage.found or fit.arbitrage.repairs or fit.arbitrage.unresolved:
        return fit
    t0 = time.perf_counter() - fit.elapsed_ms / 1e3
    ivs = fit.ivs
    fit_idx = [i for i, s in enumerate(fit.slices) if s.params is not None]
    rows_per = [np.nonzero(ivs.used & (ivs.expiry_index == i))[0] for i in fit_idx]
    K, W, OM, _ = _smile_arrays(ivs, fit_idx, rows_per, cfg)
    previous = warm.repaired_for(ivs.expiries[fit_idx]) if warm is not None else None
    return _finish(chain, ivs, fit_idx, rows_per, K, W, OM, fit.surface.params, cfg, True, list(fit.reasons),
                   list(fit.notes), t0, previous)


def _params_of(s: SliceFit) -> np.ndarray:
    """A fitted slice's raw-SVI parameters as an array (NaN for a slice that was not fitted)."""
    return s.params.as_array() if s.params is not None else np.full(5, np.nan)


def _smile_arrays(ivs: ChainIVs, fit_idx: list[int], rows_per: list[np.ndarray],
                  cfg: SurfaceConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(S, N) arrays of k, total variance, fit weight and IV spread per fitted expiry (padding has weight 0,
    and repeats the slice's last point so it adds no new extreme). One pass over all slices' rows."""
    S = len(fit_idx)
    counts = np.array([len(r) for r in rows_per], dtype=int)
    N = int(counts.max()) if S else 0
    rows = np.concatenate(rows_per) if S else np.array([], dtype=int)
    j = np.repeat(np.arange(S), counts)
    col = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
    Ti = ivs.T_expiry[np.asarray(fit_idx, dtype=int)][j]
    k = ivs.k[rows]
    iv = ivs.iv_mid[rows]
    w = iv * iv * Ti
    ivs_spread = np.where(np.isfinite(ivs.iv_ask[rows]) & np.isfinite(ivs.iv_bid[rows]),
                          ivs.iv_ask[rows] - ivs.iv_bid[rows], _UNKNOWN_IV_SPREAD)
    quality = 1.0 / np.maximum(ivs_spread, cfg.min_iv_spread)
    flat = j * N + col  # 1-D fancy indexing (on flat views): several times faster than (row, column) pairs
    K = np.zeros((S, N))
    W = np.full((S, N), np.nan)
    SPR = np.zeros((S, N))
    OM = np.zeros((S, N))
    K.reshape(-1)[flat], W.reshape(-1)[flat], SPR.reshape(-1)[flat] = k, w, ivs_spread
    # residuals in w scaled to vol units (dσ = dw / (2σT)); w floored so one tiny-variance point cannot take
    # all the weight
    with np.errstate(all="ignore"):
        w_floor = np.maximum(0.1 * row_medians(W, ~np.isnan(W)), 1e-10) if N else np.zeros(S)
    OM.reshape(-1)[flat] = quality / (4.0 * np.maximum(w, w_floor[j]) * Ti)
    last = np.maximum(counts - 1, 0)
    pad = np.arange(N)[None, :] >= counts[:, None]
    K = np.where(pad, K[np.arange(S), last][:, None], K)
    W = np.where(pad, W[np.arange(S), last][:, None], W)
    return K, W, OM, SPR


def _finish(chain: OptionChain, ivs: ChainIVs, fit_idx: list[int], rows_per: list[np.ndarray], K: np.ndarray,
            W: np.ndarray, OM: np.ndarray, fitted: np.ndarray, cfg: SurfaceConfig, repair: bool,
            reasons: list[str], notes: list[str], t0: float, previous: np.ndarray | None = None) -> SurfaceFit:
    """Arbitrage check (and repair), per-slice quality, the surface and its term structure."""
    n_exp = len(ivs.expiries)
    labels = [np.datetime_as_string(ivs.expiries[i], unit="D") for i in fit_idx]
    T_fit = ivs.T_expiry[fit_idx]
    params, report = enforce_no_arbitrage(fitted, K, W, OM, labels, T=T_fit, repair=repair,
                                          max_cost_bp=cfg.max_repair_cost_bp, previous=previous)

    all_params = np.full((n_exp, 5), np.nan)
    all_params[fit_idx] = params
    # fit quality of every slice in one pass over all smile points (a loop per slice cost ~50 µs a slice)
    counts = np.array([len(r) for r in rows_per], dtype=int)
    rows = np.concatenate(rows_per)
    js = np.repeat(np.arange(len(fit_idx)), counts)
    pj = params[js]
    with np.errstate(invalid="ignore"):
        model = np.sqrt(np.maximum(svi_total_variance(ivs.k[rows], *pj.T), 0.0) / T_fit[js])
    err = model - ivs.iv_mid[rows]
    inside = (model >= ivs.iv_bid[rows] - 1e-12) & (model <= ivs.iv_ask[rows] + 1e-12)
    n = np.maximum(counts, 1)
    rmse = np.sqrt(np.bincount(js, weights=err * err, minlength=len(fit_idx)) / n) * 1e4
    starts = np.cumsum(counts) - counts
    worst = np.maximum.reduceat(np.abs(err), starts) * 1e4 if len(err) else np.zeros(len(fit_idx))
    share_inside = np.bincount(js, weights=inside.astype(float), minlength=len(fit_idx)) / n
    slot = {i: j for j, i in enumerate(fit_idx)}
    slices: list[SliceFit] = []
    for i in range(n_exp):
        f = ivs.forwards[i]
        j = slot.get(i)
        if j is None:
            slices.append(SliceFit(ivs.expiries[i], float(ivs.T_expiry[i]), f, None, 0, np.nan, np.nan, np.nan,
                                   "skipped", _skip_reason(ivs, i)))
            continue
        slices.append(SliceFit(ivs.expiries[i], float(T_fit[j]), f, SVIParams.from_array(params[j]), int(counts[j]),
                               float(rmse[j]), float(worst[j]), float(share_inside[j]), "fitted"))
    surface = VolSurface(
        underlying=chain.underlying, ts=chain.ts, spot=float(chain.spot), expiries=ivs.expiries[fit_idx],
        T=T_fit, forwards=np.array([ivs.forwards[i].forward for i in fit_idx]),
        rates=np.array([ivs.forwards[i].rate for i in fit_idx]), params=params,
    )
    fw = np.array([f.forward for f in ivs.forwards])
    disc = np.array([f.discount for f in ivs.forwards])
    term = term_structure(chain, ivs.expiries, ivs.T_expiry, fw, disc, all_params, ivs.expiry_index)
    return SurfaceFit(chain.underlying, chain.ts, float(chain.spot), surface, tuple(slices), ivs, term, report,
                      tuple(reasons), tuple(notes), (time.perf_counter() - t0) * 1e3,
                      chain.strike.copy(), chain.is_call.copy())
