"""What the Models panel shows about one registered model beyond its validation: why it rates today's
candidate as it does, which features it leans on, and whether today's inputs still look like its training data.

- **Importance**: XGBoost's total gain per feature (logistic: |standardised coefficient|; LSTM: input-weight
  mass) — which features the trees split on, not whether they help out of sample.
- **Today's candidate**: the calibrated P(win) of the newest day's candidate and each feature's additive share
  of its margin (XGBoost ``pred_contribs``; the contributions sum to the margin less the bias).
- **Drift**: the population stability index of each feature, the last :data:`RECENT_DAYS` sessions against
  the training window, on ten quantile bins of the training distribution:
  ``PSI = Σ (p_now − p_train)·ln(p_now / p_train)``. The usual rule of thumb (< 0.1 stable, 0.1–0.25
  moderate, > 0.25 shifted) assumes independent rows; these features are slow (a 63-day realized vol barely
  moves in 60 sessions), so any 60-session window sits in a few bins and scores a PSI of several even inside
  the training data. Each feature's PSI is therefore also compared with the same statistic over the training
  window's own non-overlapping 60-session blocks: ``usual`` is the largest of them, and a feature reads
  *shifted* above both 0.25 and its usual level — drift beyond what the model already saw. PSI saturates
  (every value in one bin scores the same whether that bin's edge was passed by a little or a lot), so a
  feature also reads *shifted* when at least :data:`OUT_OF_RANGE` of its recent values lie outside the range
  it took in training: the model extrapolates there.

:func:`insight_job` is CPU work for a worker process (``Engine.run_cpu``), on the same history source the
service trains and evaluates on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from engine.bus.messages import Command, Event

#: sessions that count as "now" for the drift check (about three months)
RECENT_DAYS = 60
PSI_BINS = 10
PSI_MODERATE, PSI_MAJOR = 0.1, 0.25
#: share of recent values outside the training range that reads as shifted on its own
OUT_OF_RANGE = 0.1


@dataclass(frozen=True, slots=True, kw_only=True)
class ExplainModel(Command):
    """Compute the insight of registered model ``name`` (importance, today's candidate, drift) off the loop."""

    name: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelInsightReady(Event):
    """The insight of ``name`` v``version`` (``insight``: :func:`insight_job`'s dict; ``error`` if it failed)."""

    severity: ClassVar[str] = "debug"
    name: str
    version: int = 0
    insight: dict[str, Any] | None = None
    error: str = ""


@dataclass(frozen=True)
class InsightRequest:
    models_dir: Path
    name: str
    source: Any
    symbol: str
    before: date
    years: float = 5.0
    seed: int = 7
    cache_dir: Path | None = None
    recent_days: int = RECENT_DAYS


def psi(reference: np.ndarray, current: np.ndarray, bins: int = PSI_BINS) -> np.ndarray:
    """Population stability index per column of ``current`` against ``reference`` (rows × features), on
    ``bins`` quantile bins of the reference; NaNs ignored, empty bins floored at 1e-4 so the log is finite.
    NaN for a feature with fewer than ``bins`` finite values on either side."""
    ref = np.asarray(reference, float)
    cur = np.asarray(current, float)
    if ref.ndim == 1:
        ref, cur = ref[:, None], cur[:, None]
    with np.errstate(all="ignore"):
        edges = np.nanquantile(ref, np.linspace(0, 1, bins + 1)[1:-1], axis=0)  # (bins−1) × features
    out = np.full(ref.shape[1], np.nan)
    for j in range(ref.shape[1]):  # one feature at a time: 37 columns, each fully vectorized
        r, c = ref[:, j], cur[:, j]
        r, c = r[np.isfinite(r)], c[np.isfinite(c)]
        if len(r) < bins or len(c) < bins or not np.all(np.isfinite(edges[:, j])):
            continue
        e = np.unique(edges[:, j])
        pr = np.bincount(np.searchsorted(e, r, side="right"), minlength=len(e) + 1) / len(r)
        pc = np.bincount(np.searchsorted(e, c, side="right"), minlength=len(e) + 1) / len(c)
        pr, pc = np.maximum(pr, 1e-4), np.maximum(pc, 1e-4)
        out[j] = float(np.sum((pc - pr) * np.log(pc / pr)))
    return out


def usual_psi(reference: np.ndarray, block: int, *, quantile: float = 1.0) -> np.ndarray:
    """Per feature, the ``quantile`` (default: the largest) of the PSI of ``reference``'s own non-overlapping
    ``block``-row windows against the whole of it: how large the PSI of a window the model trained on gets
    (NaN with fewer than three windows)."""
    ref = np.asarray(reference, float)
    starts = range(0, len(ref) - block + 1, block)
    blocks = [psi(ref, ref[i:i + block]) for i in starts]
    if len(blocks) < 3:
        return np.full(ref.shape[1], np.nan)
    with np.errstate(all="ignore"):
        return np.nanquantile(np.vstack(blocks), quantile, axis=0)


def out_of_range(reference: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Per feature, the share of ``current``'s finite values outside ``reference``'s [min, max] (NaN: none)."""
    ref = np.asarray(reference, float)
    cur = np.asarray(current, float)
    with np.errstate(all="ignore"):
        lo, hi = np.nanmin(ref, axis=0), np.nanmax(ref, axis=0)
        finite = np.isfinite(cur)
        outside = finite & ((cur < lo) | (cur > hi))
        n = finite.sum(axis=0)
        return np.where(n > 0, outside.sum(axis=0) / np.maximum(n, 1), np.nan)


def drift_reading(value: float | None, usual: float | None, outside: float | None = None) -> str:
    """stable / moderate / as in training / shifted: "shifted" beyond the training window's own largest PSI (and 0.25), or
    with :data:`OUT_OF_RANGE` of the recent values outside the training range."""
    if outside is not None and math.isfinite(outside) and outside >= OUT_OF_RANGE:
        return "shifted"
    if value is None or not math.isfinite(value):
        return "—"
    known = usual if usual is not None and math.isfinite(usual) else None
    if value > max(PSI_MAJOR, known if known is not None else 0.0):
        return "shifted"
    if known is not None and value > PSI_MODERATE:
        return "as in training"  # high, but no higher than the model's own training windows
    return "moderate" if value > PSI_MODERATE else "stable"


def _clean(x: float) -> float | None:
    return float(x) if math.isfinite(float(x)) else None


def insight_job(request: InsightRequest) -> dict[str, Any]:
    """Importance, today's candidate with its contributions, and per-feature drift (module docstring)."""
    from engine.ml.data import load_history
    from engine.ml.features import FEATURE_NAMES, cached_features
    from engine.ml.registry import ModelRegistry

    model, rec = ModelRegistry(request.models_dir).load(request.name, features=FEATURE_NAMES)
    symbol = request.symbol or str(rec.meta.get("symbol") or "")
    h = load_history(request.source, symbol, request.before, request.years)
    frame, _, _ = cached_features(h, request.cache_dir, seed=request.seed)
    names = list(FEATURE_NAMES)
    X = frame[names].to_numpy(float)
    days = [d if isinstance(d, date) else date.fromisoformat(str(d)[:10]) for d in frame.index]
    out: dict[str, Any] = {"name": rec.name, "version": rec.version, "kind": model.kind, "symbol": h.symbol,
                           "importance": model.importance(names),
                           "importance_type": {"xgboost": "total gain", "logistic": "|standardised coefficient|",
                                               "lstm": "input-weight mass"}.get(model.kind, "")}
    # today's candidate: the newest day whose features are all known
    known = np.flatnonzero(np.all(np.isfinite(X), axis=1))
    if len(known):
        i = int(known[-1])
        x = X[i]
        if model.kind == "lstm":
            from engine.ml.lstm import SEQ_LEN, sequences

            x = sequences(X, np.array([i]), SEQ_LEN)[0]
        prob = float(model.predict_proba(x[None, ...] if model.kind == "lstm" else x.reshape(1, -1))[0])
        gate = rec.meta.get("min_confidence", rec.meta.get("positive_rate"))
        out["candidate"] = {"day": days[i].isoformat(), "probability": prob,
                            "gate": None if gate is None else float(gate),
                            "contributions": model.contributions(x, names),
                            "contributions_type": "pred_contribs (margin)" if model.kind == "xgboost" else
                            ("coefficient × standardised value" if model.kind == "logistic" else "occlusion")}
    # drift: the recent sessions against the training window
    window = rec.meta.get("training_window")
    if window:
        lo, hi = date.fromisoformat(window[0]), date.fromisoformat(window[1])
        d = np.array(days, dtype="datetime64[D]")
        train = (d >= np.datetime64(lo)) & (d <= np.datetime64(hi))
        recent = np.zeros(len(days), bool)
        recent[-request.recent_days:] = True
        values = psi(X[train], X[recent])
        usual = usual_psi(X[train], request.recent_days)
        outside = out_of_range(X[train], X[recent])
        out["drift"] = {"recent_from": days[-request.recent_days].isoformat() if len(days) >= request.recent_days
                        else (days[0].isoformat() if days else ""),
                        "recent_to": days[-1].isoformat() if days else "", "training_window": list(window),
                        "overlap_days": int((train & recent).sum()),
                        "psi": {n: _clean(v) for n, v in zip(names, values, strict=True)},
                        "usual": {n: _clean(v) for n, v in zip(names, usual, strict=True)},
                        "out_of_range": {n: _clean(v) for n, v in zip(names, outside, strict=True)}}
    return out
