"""Training as a job for a process pool, so the engine (or the GUI) never trains on its event loop.

``train_job`` is a plain function of plain data — a :class:`TrainRequest` holding the history source
(picklable: :class:`engine.history.SimulatedHistorySource` is) — returning the validation report and,
when a registry folder is given, where the model was registered. The caller owns the pool: one from
:func:`engine.process_pools.new_process_pool`, stopped with :func:`engine.process_pools.shutdown_pool`
(docs/architecture.md, "One loop"); :func:`train_off_loop` awaits the job on the running loop.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from engine.history.source import HistorySource

NO_HISTORY = "a TrainRequest needs a history source or the history itself"


@dataclass(frozen=True)
class TrainRequest:
    """What to train: history ``years`` before ``before`` from ``source``; ``config`` = TrainConfig fields."""

    source: HistorySource | None
    symbol: str
    before: date
    years: float = 5.0
    config: dict[str, Any] = field(default_factory=dict)
    strategy: str = "iv_rank_put_spread"
    #: registry name (default STRATEGY-SYMBOL)
    name: str | None = None
    #: register the final model here (None: validate only)
    models_dir: Path | None = None
    #: the rows themselves, already loaded (then ``source``/``before``/``years`` only describe them)
    history: Any = None
    #: feature cache folder (None: no cache)
    cache_dir: Path | None = None
    #: written into the model's metadata (the caller's engine clock, as ISO text)
    created_at: str = ""


def train_job(request: TrainRequest) -> dict[str, Any]:
    """Validate and (optionally) register; runs in a worker process. Raises ValueError on unusable input."""
    from engine.ml.data import load_history
    from engine.ml.features import FEATURE_NAMES, FEATURE_VERSION, cached_features
    from engine.ml.labels import PutSpreadRules, put_spread_labels
    from engine.ml.lstm import SEQ_LEN, require_torch
    from engine.ml.models import require_xgboost
    from engine.ml.registry import ModelRegistry
    from engine.ml.train import TrainConfig, evaluate, fit_final, make_dataset

    cfg = TrainConfig(**request.config)
    if request.history is None and request.source is None:
        raise ValueError(NO_HISTORY)
    if cfg.model == "xgboost":
        require_xgboost()  # fail before the history and the features are built, naming the extra to install
    if cfg.model == "lstm":
        require_torch()
    if request.history is not None:
        h = request.history
    elif request.source is not None:
        h = load_history(request.source, request.symbol, request.before, request.years)
    else:  # refused above before any work; named again so that the source is known to be there
        raise ValueError(NO_HISTORY)
    frame, _, _ = cached_features(h, request.cache_dir, seed=cfg.seed)
    rules = PutSpreadRules()
    ds = make_dataset(frame, put_spread_labels(h, rules), rules)
    report = evaluate(ds, cfg)
    window = [ds.days[int(ds.start[0])].isoformat(), ds.days[int(ds.end[-1])].isoformat()]
    report = {"strategy": request.strategy, "symbol": h.symbol, "seed": cfg.seed,
              "before": request.before.isoformat(), "data_hash": h.data_hash(), "training_window": window} | report
    model = fit_final(ds, cfg)
    report["importance"] = dict(list(model.importance(list(FEATURE_NAMES)).items())[:10])
    if request.models_dir is not None:
        meta = {"strategy": request.strategy, "symbol": h.symbol, "features": list(FEATURE_NAMES),
                "feature_version": FEATURE_VERSION, "training_window": window, "data_hash": h.data_hash(),
                "seed": cfg.seed, "source": h.source, "params": model.params, "rules": rules.to_dict(),
                "created_at": request.created_at, "positive_rate": float(ds.y.mean()),
                "min_confidence": cfg.min_confidence, "calibration": model.calibration,
                "sequence_length": SEQ_LEN if cfg.model == "lstm" else 1,
                "metrics": {k: report[k] for k in ("auc", "auc_ci", "brier", "brier_base_rate", "permutation_auc",
                                                    "permutation_p_value", "deflated_sharpe", "verdict",
                                                    "reading", "calibration_method")}
                | {"ece": report["reliability"]["ece"], "log_loss": report.get("log_loss"),
                   "calibration": report["calibration"]}}
        rec = ModelRegistry(request.models_dir).save(request.name or f"{request.strategy}-{h.symbol}", model, meta)
        report["registered"] = {"name": rec.name, "version": rec.version, "path": str(rec.path)}
    return report


async def train_off_loop(request: TrainRequest, executor: Executor) -> dict[str, Any]:
    """Run :func:`train_job` in ``executor`` (a process pool the caller owns) and await its report."""
    return await asyncio.get_running_loop().run_in_executor(executor, train_job, request)


@dataclass(frozen=True)
class EvaluateRequest:
    """Score registered model ``name`` on ``history`` (or ``years`` of ``source`` before ``before``)."""

    models_dir: Path
    name: str
    source: HistorySource | None = None
    symbol: str = ""
    before: date | None = None
    years: float = 5.0
    history: Any = None
    seed: int = 7
    cache_dir: Path | None = None


def evaluate_job(request: EvaluateRequest) -> dict[str, Any]:
    """Out-of-sample check of a registered model, for a worker process: on the training data only the
    candidates decided after its training window count; on other data (another path, later history) every
    resolved candidate does. Returns AUC with its block-bootstrap interval, Brier and the reliability curve."""
    import numpy as np

    from engine.ml import metrics as mt
    from engine.ml.data import load_history
    from engine.ml.features import FEATURE_NAMES, cached_features
    from engine.ml.labels import PutSpreadRules, put_spread_labels
    from engine.ml.registry import ModelRegistry
    from engine.ml.train import make_dataset

    model, rec = ModelRegistry(request.models_dir).load(request.name, features=FEATURE_NAMES)
    symbol = request.symbol or str(rec.meta.get("symbol") or "")
    if request.history is not None:
        h = request.history
    elif request.source is not None and request.before is not None:
        h = load_history(request.source, symbol, request.before, request.years)
    else:
        raise ValueError("an EvaluateRequest needs a history source and a day, or the history itself")
    if rec.meta.get("symbol") not in (None, h.symbol):
        raise ValueError(f"model {rec.name} was trained on {rec.meta.get('symbol')}, not {h.symbol}")
    frame, _, _ = cached_features(h, request.cache_dir, seed=request.seed)
    rules = PutSpreadRules(**(rec.meta.get("rules") or {}))
    ds = make_dataset(frame, put_spread_labels(h, rules), rules)
    same = h.data_hash() == rec.meta.get("data_hash")
    trained_to = date.fromisoformat(rec.meta["training_window"][1]) if rec.meta.get("training_window") else None
    keep = np.array([not same or (trained_to is not None and ds.days[int(s)] > trained_to) for s in ds.start])
    out: dict[str, Any] = {"name": rec.name, "version": rec.version, "symbol": h.symbol,
                           "scope": "after the training window" if same else "another history (all days)",
                           "samples": int(keep.sum()), "data_hash": h.data_hash()}
    if keep.sum() < 20 or len(np.unique(ds.y[keep])) < 2:
        out["message"] = f"only {int(keep.sum())} resolved candidates {out['scope']}: nothing to score yet"
        return out
    y = ds.y[keep]
    p = model.predict_proba(ds.inputs(model.kind)[keep])
    block = max(1, round(float(np.mean(ds.end - ds.start))))
    lo, hi = mt.block_bootstrap_auc(y, p, block=block, seed=request.seed)
    out |= {"auc": mt.auc(y, p), "auc_ci": [lo, hi], "brier": mt.brier(y, p), "positive_rate": float(y.mean()),
            "reliability": mt.reliability(y, p)}
    out["verdict"] = "edge" if lo > 0.5 else "no edge"
    return out
