"""The ML-gated ``iv_rank_put_spread`` row of the backtest results table, trained in the same run.

Honest and reproducible: the table's gate is not "whatever model the user has registered" (a row nobody can
regenerate), and it is not a model that saw the backtest window (leakage). The model is trained by the same
purged walk-forward job as ``optiondesk ml train`` (no label permutations: the table needs the model, not its
null), on :data:`TRAIN_YEARS` of the seeded simulated daily history that end the day before the backtest's
first day, registered in a throw-away folder, and the twin runs ``iv_rank_put_spread`` with
``ml = {model = …}`` (the model's own gate) on the same market as the ungated row. The scorer reads features
from the same daily history source, point in time (:mod:`engine.ml.signal`).

On the simulated market that daily path is not the path the chain backtest trades (docs/ml.md, "Strategy
hook"), so the gate there cannot carry an edge: the row measures what the filter costs or saves by chance
(fewer trades), which is what an honest table should show until the backtest runs on real history.
"""

from __future__ import annotations

import tempfile
from datetime import date
from pathlib import Path
from typing import Any

STRATEGY = "iv_rank_put_spread"
LABEL = "iv_rank_put_spread (ML-gated)"
MODEL_NAME = "iv_rank_put_spread-table"
#: years of daily history the gate's model is trained on, ending before the backtest window
TRAIN_YEARS = 5.0


def model_kind() -> str:
    """XGBoost when installed (the issue's model), else the logistic baseline (no extra needed)."""
    try:
        import xgboost  # noqa: F401
    except ImportError:
        return "logistic"
    return "xgboost"


def gated_row(config: dict[str, Any], history: Any = None, *, train_years: float = TRAIN_YEARS,
              kind: str | None = None, models_dir: Path | None = None) -> dict[str, Any]:
    """Train the gate on the history before the backtest window, then the gated twin's table row (CPU work for
    the CLI's process or a worker). The row carries ``ml_model`` (kind, training window, out-of-sample AUC and
    verdict of the walk-forward) so the table says what gated it."""
    from engine.backtest.config import BacktestConfig
    from engine.backtest.sweep import _cached_history
    from engine.backtest.table import table_row
    from engine.history.simulated import SimulatedHistorySource
    from engine.market.config import SimulatorConfig
    from engine.ml.data import load_history
    from engine.ml.jobs import TrainRequest, train_job
    from engine.ml.signal import BACKTEST_HORIZON_DAYS, MLScorer

    cfg = BacktestConfig.model_validate({**config, "strategy": STRATEGY, "params": {}, "run_id": ""})
    if history is None:
        history = _cached_history(cfg.data, cfg.symbol, cfg.years, cfg.seed, tuple(sorted(cfg.columns.items())),
                                  cfg.bars, cfg.sim_max_strikes)
    first = date.fromisoformat(str(history.dates[0]))
    source = SimulatedHistorySource(SimulatorConfig(seed=cfg.seed))
    kind = kind or model_kind()
    with tempfile.TemporaryDirectory(prefix="optiondesk-gate-") as tmp:
        folder = Path(models_dir) if models_dir is not None else Path(tmp)
        report = train_job(TrainRequest(source=source, symbol=cfg.symbol, before=first, years=train_years,
                                        config={"model": kind, "n_permutations": 0, "seed": cfg.seed},
                                        strategy=STRATEGY, name=MODEL_NAME, models_dir=folder))

        def daily(underlying: str, before: date) -> Any:
            return load_history(source, underlying, before, train_years + 1.0)

        scorer = MLScorer(folder, seed=cfg.seed, horizon_days=BACKTEST_HORIZON_DAYS, history=daily)
        row = table_row(config, STRATEGY, history, params={"ml": {"model": MODEL_NAME}}, ml_scorer=scorer,
                        label=LABEL)
    window = (report.get("registered") or {}).get("training_window") or report.get("training_window")
    row["ml_model"] = {"kind": kind, "training_window": list(window) if window else None,
                       "auc": report.get("auc"), "auc_ci": report.get("auc_ci"), "verdict": report.get("verdict"),
                       "trained_before": first.isoformat(), "years": train_years}
    return row
