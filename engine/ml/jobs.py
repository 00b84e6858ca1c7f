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
        raise ValueError("a TrainRequest needs a history source or the history itself")
    if cfg.model == "xgboost":
        require_xgboost()  # fail before the history and the features are built, naming the extra to install
    if cfg.model == "lstm":
        require_torch()
    h = request.history if request.history is not None else load_history(request.source, request.symbol, request.before, request.years)
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
