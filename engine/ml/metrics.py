"""Honest metrics for overlapping daily samples: AUC with a block-bootstrap interval, Brier score, calibration,
per-trade Sharpe and the deflated Sharpe ratio (Bailey & López de Prado, 2014).

Daily candidates with 10-30-session holding periods are far from independent; an i.i.d. bootstrap would
give intervals several times too narrow. The bootstrap here resamples contiguous blocks of the label
horizon's length, and the Sharpe ratio's sample size is the number of non-overlapping trades.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.stats import kurtosis, norm, rankdata, skew

EULER_GAMMA = 0.5772156649015329


def auc(y: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC by ranks (Mann-Whitney), ties averaged; NaN when one class is absent."""
    y = np.asarray(y).astype(bool)
    n1 = int(y.sum())
    n0 = len(y) - n1
    if n1 == 0 or n0 == 0:
        return float("nan")
    r = rankdata(score)
    return float((r[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def block_bootstrap_auc(y: np.ndarray, score: np.ndarray, *, block: int, n_boot: int = 1000, seed: int = 7,
                        level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the AUC under a moving-block bootstrap (blocks of ``block`` consecutive samples)."""
    y = np.asarray(y)
    score = np.asarray(score, float)
    n = len(y)
    block = max(1, min(int(block), n))
    rng = np.random.default_rng(seed)
    n_blocks = math.ceil(n / block)
    stats = np.empty(n_boot)
    offs = np.arange(block)
    for b in range(n_boot):
        starts = rng.integers(0, n - block + 1, n_blocks)
        idx = (starts[:, None] + offs[None, :]).ravel()[:n]
        stats[b] = auc(y[idx], score[idx])
    stats = stats[np.isfinite(stats)]
    if not len(stats):
        return float("nan"), float("nan")
    a = (1 - level) / 2
    return float(np.quantile(stats, a)), float(np.quantile(stats, 1 - a))


def brier(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean((np.asarray(p, float) - np.asarray(y, float)) ** 2))


def calibration_curve(y: np.ndarray, p: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    """Mean predicted vs observed frequency in equal-count bins of the predictions (empty bins skipped)."""
    y = np.asarray(y, float)
    p = np.asarray(p, float)
    order = np.argsort(p, kind="stable")
    out = []
    for chunk in np.array_split(order, min(bins, len(p))):
        if len(chunk):
            out.append({"predicted": float(p[chunk].mean()), "observed": float(y[chunk].mean()), "n": len(chunk)})
    return out


def reliability(y: np.ndarray, p: np.ndarray, bins: int = 10) -> dict[str, Any]:
    """The reliability curve (equal-count bins) with its summary numbers: expected calibration error (the
    n-weighted mean |observed − predicted|), the largest bin gap, and the mean prediction beside the observed
    rate (a model can rank well and still promise a win rate it never delivers)."""
    curve = calibration_curve(y, p, bins)
    n = sum(b["n"] for b in curve)
    gaps = [abs(b["observed"] - b["predicted"]) for b in curve]
    ece = float(sum(g * b["n"] for g, b in zip(gaps, curve, strict=True)) / n) if n else float("nan")
    return {"bins": curve, "ece": ece, "max_gap": float(max(gaps)) if gaps else float("nan"),
            "mean_predicted": float(np.mean(p)) if len(p) else float("nan"),
            "observed_rate": float(np.mean(y)) if len(y) else float("nan")}


def sharpe(returns: np.ndarray) -> float:
    """Per-trade Sharpe ratio (mean / std of returns on risk); NaN with fewer than two trades or no spread."""
    r = np.asarray(returns, float)
    if len(r) < 2:
        return float("nan")
    sd = r.std(ddof=1)
    return float(r.mean() / sd) if sd > 0 else float("nan")


def deflated_sharpe(returns: np.ndarray, trial_sharpes: list[float], *, effective_n: float | None = None) -> float:
    """Probability that the true Sharpe exceeds the best Sharpe expected from ``len(trial_sharpes)`` tries.

    ``effective_n`` (default: the number of returns) is the independent sample size: pass the number of
    non-overlapping trades. The benchmark Sharpe uses the variance of the trials' Sharpes, floored at the
    estimator's own variance (1/(n-1)) so a handful of similar trials cannot shrink it to nothing.
    """
    r = np.asarray(returns, float)
    sr = sharpe(r)
    if not math.isfinite(sr):
        return float("nan")
    n = float(effective_n if effective_n is not None else len(r))
    if n < 2:
        return float("nan")
    trials = [s for s in trial_sharpes if math.isfinite(s)]
    N = max(1, len(trials))
    if N > 1:
        var = max(float(np.var(trials, ddof=1)), 1.0 / (n - 1))
        sr0 = math.sqrt(var) * ((1 - EULER_GAMMA) * norm.ppf(1 - 1 / N) + EULER_GAMMA * norm.ppf(1 - 1 / (N * math.e)))
    else:
        sr0 = 0.0
    g3 = float(skew(r)) if len(r) > 2 else 0.0
    g4 = float(kurtosis(r, fisher=False)) if len(r) > 3 else 3.0
    denom = 1 - g3 * sr + (g4 - 1) / 4 * sr * sr
    if not denom > 0:
        return float("nan")
    return float(norm.cdf((sr - sr0) * math.sqrt(n - 1) / math.sqrt(denom)))


def pnl_summary(pnl: np.ndarray, risk: np.ndarray, hold: np.ndarray) -> dict[str, Any]:
    """Trades, total and mean P&L (dollars per spread), win rate, per-trade Sharpe on risk, and the number of
    non-overlapping trades (sessions covered / mean holding sessions) the Sharpe's sample size is."""
    pnl = np.asarray(pnl, float)
    n = len(pnl)
    if n == 0:
        return {"trades": 0, "total_pnl": 0.0, "mean_pnl": None, "win_rate": None, "sharpe": None,
                "independent_trades": 0.0}
    ret = pnl / np.asarray(risk, float)
    s = sharpe(ret)
    eff = max(1.0, n / max(1.0, float(np.mean(hold))))
    return {"trades": n, "total_pnl": float(pnl.sum()), "mean_pnl": float(pnl.mean()),
            "win_rate": float((pnl > 0).mean()), "sharpe": s if math.isfinite(s) else None,
            "independent_trades": round(eff, 1)}
