"""Point-in-time features per underlying per day, vectorized over the whole history.

Every value on day *t* uses only rows up to and including *t*'s close, so the features of day *t* are
known at the decision time (*t*'s close) — :func:`point_in_time_violations` checks exactly that by
recomputing on truncated histories. The frame carries an ``available_at`` column (the UTC instant of
the close the row was computed at); training refuses a frame whose rows became available after their
label's decision time (:func:`check_available`).

The history service stores per day the close and the 30-calendar-day ATM IV of each underlying and of
the VIX-like index; skew, risk reversal, butterfly and the IV term structure are not in it, so they are
not features here (a chain-snapshot history would add them). Earnings dates are not in the simulated
market; days to the monthly expiry are. Each feature has one line in :data:`FEATURES` (and docs/ml.md)
saying why it is there.

Frames are cached as Parquet under the cache folder keyed by a hash of the input data, the feature
list and :data:`FEATURE_VERSION`, so a changed input or a changed definition never reads a stale file.
"""

from __future__ import annotations

import hashlib
import logging
import math
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from engine.ml.data import MarketHistory
from engine.model.instruments import NEW_YORK

log = logging.getLogger(__name__)

#: bump when a feature's definition changes: it is part of the cache key and of every model's metadata
FEATURE_VERSION = 2
ANNUAL = math.sqrt(252.0)
#: the regime mixture is refitted on the first session of each calendar quarter, on the REGIME_WINDOW sessions
#: before it: a day's probabilities then depend only on those sessions, not on where the history starts, so a
#: model scores the same day alike from a five-year history (training) and from the store's 300 sessions (live)
REGIME_WINDOW = 189
RULE_REGIMES = ("low_vol", "high_vol", "iv_expansion", "iv_contraction", "neutral")

#: name → why it is a feature (one line each; docs/ml.md lists the same)
FEATURES: dict[str, str] = {
    "atm_iv": "30-day ATM implied vol: the premium a short put spread collects scales with it",
    "iv_rank": "IV rank over the prior 252 days: the strategy's own entry signal (sell rich vol)",
    "iv_pct": "IV percentile over the prior 252 days: rank robust to one spike in the window",
    "iv_chg_1d": "1-day change in ATM IV: vol shocks cluster; a fresh spike often keeps rising",
    "iv_chg_5d": "5-day change in ATM IV: the recent direction of implied vol",
    "iv_chg_21d": "21-day change in ATM IV: slower vol trend, mean reversion horizon",
    "iv_z_63": "ATM IV z-score against its 63-day mean and std: how stretched vol is now",
    "rv_10": "10-day close-to-close realized vol (annualised): the most recent realized risk",
    "rv_21": "21-day close-to-close realized vol: the horizon of a 30-45 DTE trade",
    "rv_63": "63-day close-to-close realized vol: the slow baseline of realized risk",
    "rv_ewma": "EWMA realized vol (lambda 0.94, RiskMetrics): reacts fastest to a shock",
    "rv_ratio_10_63": "rv_10 / rv_63: realized-vol term structure (rising risk when > 1)",
    "rv_forecast": "HAR-style forecast of 21-day vol (0.2·rv_ewma + 0.4·rv_21 + 0.4·rv_63, fixed weights)",
    "vrp": "ATM IV minus rv_forecast: the variance risk premium a short-vol trade harvests",
    "vrp_naive": "ATM IV minus rv_21: the textbook VRP, kept beside the forecast one",
    "iv_rv_ratio": "ATM IV / rv_21: the regime rules' HV/IV input, inverted",
    "ret_1d": "1-day log return: short-term reversal after a down day",
    "ret_5d": "5-day log return: weekly momentum or reversal",
    "ret_21d": "21-day log return: monthly momentum (short puts suffer in downtrends)",
    "ret_63d": "63-day log return: quarterly trend",
    "ret_126d": "126-day log return: half-year trend",
    "ret_z_1d": "1-day return in units of daily rv_21: the size of today's move against recent risk",
    "drawdown_63": "close / 63-day high - 1: how far into a drawdown the underlying is",
    "dist_ma_50": "close / 50-day mean - 1: distance from trend, where the short strike sits",
    "vix": "VIX-like index level: market-wide fear, in points",
    "vix_chg_5d": "5-day change of the VIX-like index: a fear shock in progress",
    "vix_rank": "VIX-like index rank over the prior 252 days (the regime rules' vix_rank)",
    "vix_term_proxy": "VIX level / its 63-day mean: contango/backwardation proxy (no futures in history)",
    "vix_iv": "ATM IV of the VIX-like index's options (vol of vol): uncertainty about vol itself",
    "gmm_p_low": "probability of the low-vol state of a 3-state Gaussian mixture on (return, rv_21), refitted each quarter on the 189 sessions before it",
    "gmm_p_mid": "probability of the middle (trending/normal) state of that mixture",
    "gmm_p_high": "probability of the high-vol state of that mixture",
    "regime_low_vol": "rule regime is low_vol (engine.risk.regime thresholds on VIX, VIX rank, HV/IV)",
    "regime_high_vol": "rule regime is high_vol",
    "regime_iv_expansion": "rule regime is iv_expansion",
    "regime_iv_contraction": "rule regime is iv_contraction",
    "days_to_monthly_expiry": "calendar days to the next third-Friday expiry: pinning and roll effects",
}
FEATURE_NAMES: tuple[str, ...] = tuple(FEATURES)


class LeakageError(ValueError):
    """A feature row became known after the decision it would inform (look-ahead)."""


def close_instant(day: date) -> datetime:
    """The UTC instant of ``day``'s 16:00 New York close: when that day's features become known."""
    return datetime.combine(day, time(16, 0), tzinfo=NEW_YORK).astimezone(UTC)


def _prior_rank(x: np.ndarray, lookback: int = 252, min_history: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """Rank and percentile of each day's value against the prior ``lookback`` days (NaN under ``min_history``),
    with :func:`engine.surface.ivrank.iv_rank`'s rules, vectorized."""
    n = len(x)
    rank = np.full(n, np.nan)
    pct = np.full(n, np.nan)
    s = pd.Series(x)
    prior = s.shift(1)
    lo = prior.rolling(lookback, min_periods=min_history).min().to_numpy()
    hi = prior.rolling(lookback, min_periods=min_history).max().to_numpy()
    lo = np.minimum(lo, x)
    hi = np.maximum(hi, x)
    with np.errstate(invalid="ignore", divide="ignore"):
        rank = np.where(hi - lo > 1e-12, (x - lo) / (hi - lo), np.nan)
    if n > min_history:
        from numpy.lib.stride_tricks import sliding_window_view

        padded = np.concatenate([np.full(lookback, np.nan), x])
        win = sliding_window_view(padded[:-1], lookback)  # row t = the lookback days before t
        valid = np.isfinite(win).sum(axis=1)
        below = (win < x[:, None]).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            pct = np.where(valid >= min_history, below / np.maximum(valid, 1), np.nan)
    rank[~np.isfinite(x)] = np.nan
    pct[~np.isfinite(x)] = np.nan
    return rank, pct


def _ewma_vol(r: np.ndarray, lam: float = 0.94, warmup: int = 21) -> np.ndarray:
    """RiskMetrics EWMA of squared returns (recursive, so strictly causal); NaN during warm-up."""
    out = np.full(len(r), np.nan)
    var = np.nan
    seen = 0
    for i, x in enumerate(r.tolist()):
        if not math.isfinite(x):
            continue
        var = x * x if not math.isfinite(var) else lam * var + (1 - lam) * x * x
        seen += 1
        if seen >= warmup:
            out[i] = math.sqrt(var) * ANNUAL
    return out


def _quarter_starts(days: tuple[date, ...]) -> np.ndarray:
    """Indices of the sessions that open a calendar quarter, judged against the previous session (so the
    history's first row, whose previous session is unknown, never is one)."""
    q = np.array([d.year * 4 + (d.month - 1) // 3 for d in days], dtype=np.int64)
    return np.flatnonzero(np.r_[False, q[1:] != q[:-1]]) if len(q) else np.array([], dtype=np.int64)


def _regime_probabilities(ret: np.ndarray, rv: np.ndarray, seed: int, days: tuple[date, ...]) -> np.ndarray:
    """(n, 3) probabilities of the low/mid/high realized-vol states. At each quarter's first session the
    mixture is fitted on the :data:`REGIME_WINDOW` sessions before it (all of them with a return and a
    realized vol, else no fit) and scores that quarter's sessions; rows before the first fit are NaN. Point
    in time, and independent of how far back the history reaches. Components are ordered by their mean
    realized vol."""
    from engine.analytics.gmm import GaussianMixture

    n = len(ret)
    out = np.full((n, 3), np.nan)
    x = np.column_stack([ret * ANNUAL, rv])
    ok = np.all(np.isfinite(x), axis=1)
    starts = _quarter_starts(days)
    for j, start in enumerate(starts.tolist()):
        lo = start - REGIME_WINDOW
        if lo < 0 or not ok[lo:start].all():
            continue
        gm = GaussianMixture(3, seed=seed, n_init=1, reg_covar=1e-5)
        gm.fit(x[lo:start])
        order = np.argsort(gm.fitted()[1][:, 1])
        stop = int(starts[j + 1]) if j + 1 < len(starts) else n
        rows = np.arange(start, stop)
        rows = rows[ok[rows]]
        if len(rows):
            out[rows] = gm.predict_proba(x[rows])[:, order]
    return out


def _third_friday(year: int, month: int) -> date:
    first = date(year, month, 1)
    return first + timedelta(days=(4 - first.weekday()) % 7 + 14)


def _days_to_monthly(days: tuple[date, ...]) -> np.ndarray:
    out = np.empty(len(days))
    for i, d in enumerate(days):
        exp = _third_friday(d.year, d.month)
        if exp < d:
            y, m = (d.year + 1, 1) if d.month == 12 else (d.year, d.month + 1)
            exp = _third_friday(y, m)
        out[i] = (exp - d).days
    return out


def build_features(h: MarketHistory, *, seed: int = 7) -> pd.DataFrame:
    """The feature frame of ``h``: one row per day (index = day), :data:`FEATURE_NAMES` columns in order,
    plus ``available_at``. Early rows hold NaN where a window is not yet full (never a made-up value)."""
    from engine.risk.regime import classify_vix

    c = np.asarray(h.close, float)
    iv = np.asarray(h.atm_iv, float)
    vix = np.asarray(h.vix, float)
    logc = np.log(c)
    ret = np.concatenate([[np.nan], np.diff(logc)])
    rs = pd.Series(ret)
    ivs = pd.Series(iv)
    cs = pd.Series(c)
    vs = pd.Series(vix)

    def rv(w: int) -> np.ndarray:
        return (rs.rolling(w, min_periods=w).std(ddof=1) * ANNUAL).to_numpy()

    def lag_ret(w: int) -> np.ndarray:
        return np.concatenate([np.full(w, np.nan), logc[w:] - logc[:-w]]) if len(c) > w else np.full(len(c), np.nan)

    f: dict[str, np.ndarray] = {}
    f["atm_iv"] = iv
    f["iv_rank"], f["iv_pct"] = _prior_rank(iv)
    f["iv_chg_1d"] = ivs.diff(1).to_numpy()
    f["iv_chg_5d"] = ivs.diff(5).to_numpy()
    f["iv_chg_21d"] = ivs.diff(21).to_numpy()
    m63 = ivs.rolling(63, min_periods=63).mean()
    s63 = ivs.rolling(63, min_periods=63).std(ddof=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        f["iv_z_63"] = ((ivs - m63) / s63).to_numpy()
    f["rv_10"], f["rv_21"], f["rv_63"] = rv(10), rv(21), rv(63)
    f["rv_ewma"] = _ewma_vol(ret)
    with np.errstate(invalid="ignore", divide="ignore"):
        f["rv_ratio_10_63"] = f["rv_10"] / f["rv_63"]
        f["rv_forecast"] = 0.2 * f["rv_ewma"] + 0.4 * f["rv_21"] + 0.4 * f["rv_63"]
        f["vrp"] = iv - f["rv_forecast"]
        f["vrp_naive"] = iv - f["rv_21"]
        f["iv_rv_ratio"] = iv / f["rv_21"]
    for w in (1, 5, 21, 63, 126):
        f[f"ret_{w}d"] = lag_ret(w)
    with np.errstate(invalid="ignore", divide="ignore"):
        f["ret_z_1d"] = ret / (f["rv_21"] / ANNUAL)
        f["drawdown_63"] = c / cs.rolling(63, min_periods=63).max().to_numpy() - 1.0
        f["dist_ma_50"] = c / cs.rolling(50, min_periods=50).mean().to_numpy() - 1.0
    f["vix"] = vix
    f["vix_chg_5d"] = vs.diff(5).to_numpy()
    f["vix_rank"], _ = _prior_rank(vix)
    with np.errstate(invalid="ignore", divide="ignore"):
        f["vix_term_proxy"] = vix / vs.rolling(63, min_periods=63).mean().to_numpy()
    f["vix_iv"] = np.asarray(h.vix_iv, float)
    probs = _regime_probabilities(ret, f["rv_21"], seed, h.days)
    f["gmm_p_low"], f["gmm_p_mid"], f["gmm_p_high"] = probs[:, 0], probs[:, 1], probs[:, 2]
    with np.errstate(invalid="ignore", divide="ignore"):
        hv_iv = f["rv_21"] / iv
    regimes = [classify_vix(a, b, x) for a, b, x in zip(vix.tolist(), f["vix_rank"].tolist(), hv_iv.tolist(),
                                                         strict=True)]
    for name in RULE_REGIMES[:-1]:
        f[f"regime_{name}"] = np.array([1.0 if r == name else 0.0 for r in regimes])
    f["days_to_monthly_expiry"] = _days_to_monthly(h.days)
    missing = set(FEATURE_NAMES) - set(f)
    if missing:  # a definition was added to FEATURES without code: fail loudly, never train on a hole
        raise RuntimeError(f"features without a definition: {sorted(missing)}")
    frame = pd.DataFrame({k: np.asarray(f[k], float) for k in FEATURE_NAMES},
                         index=pd.Index(list(h.days), name="day"))
    frame["available_at"] = [close_instant(d) for d in h.days]
    return frame


def cache_key(h: MarketHistory, seed: int) -> str:
    """Hash of the input data, the feature list, the definitions' version and the regime seed."""
    k = hashlib.sha256(f"{h.data_hash()}|{FEATURE_VERSION}|{seed}|{','.join(FEATURE_NAMES)}".encode())
    return k.hexdigest()[:20]


def cached_features(h: MarketHistory, cache: Path | None, *, seed: int = 7) -> tuple[pd.DataFrame, Path | None, bool]:
    """:func:`build_features` through a Parquet cache: (frame, file, True when read from the cache).

    An unreadable cache file is rebuilt (it is derived data), never trusted.
    """
    if cache is None:
        return build_features(h, seed=seed), None, False
    path = Path(cache) / f"features-{h.symbol}-{cache_key(h, seed)}.parquet"
    if path.exists():
        try:
            frame = pd.read_parquet(path)
            if list(frame.columns[:len(FEATURE_NAMES)]) == list(FEATURE_NAMES):
                frame.index = pd.Index([d if isinstance(d, date) else pd.Timestamp(d).date() for d in frame.index],
                                       name="day")
                frame["available_at"] = [pd.Timestamp(t).to_pydatetime() for t in frame["available_at"]]
                return frame, path, True
        except Exception as exc:  # a torn or foreign file: rebuild it
            log.warning("feature cache %s unreadable (%s); rebuilding", path, exc)
    frame = build_features(h, seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    frame.to_parquet(tmp)
    tmp.replace(path)
    return frame, path, False


def check_available(frame: pd.DataFrame, decision_at: pd.Series | list[datetime] | np.ndarray) -> None:
    """Refuse rows whose features became known after their decision time (:class:`LeakageError`)."""
    avail = pd.to_datetime(pd.Series(list(frame["available_at"])), utc=True).to_numpy()
    decide = pd.to_datetime(pd.Series(list(decision_at)), utc=True).to_numpy()
    if len(avail) != len(decide):
        raise ValueError(f"{len(avail)} feature rows for {len(decide)} decisions")
    late = np.nonzero(avail > decide)[0]
    if len(late):
        i = int(late[0])
        raise LeakageError(f"{len(late)} feature rows are stamped after their decision time, first on "
                           f"{frame.index[i]}: available {avail[i]} > decision {decide[i]}")


def point_in_time_violations(h: MarketHistory, cuts: list[int], *, seed: int = 7,
                             builder=build_features) -> list[tuple[date, str]]:
    """Recompute the features on the history truncated after each day in ``cuts`` and compare that day's row
    with the full-history row: any difference is a feature that looked ahead. Returns (day, feature) pairs."""
    full = builder(h, seed=seed)
    bad: list[tuple[date, str]] = []
    for cut in cuts:
        part = builder(h.head(cut + 1), seed=seed)
        a = full.iloc[cut][list(FEATURE_NAMES)].to_numpy(float)
        b = part.iloc[cut][list(FEATURE_NAMES)].to_numpy(float)
        same = np.isclose(a, b, rtol=1e-9, atol=1e-12, equal_nan=True)
        bad.extend((h.days[cut], FEATURE_NAMES[j]) for j in np.nonzero(~same)[0])
    return bad
