"""``optiondesk ml features|train|evaluate|list``: trade-outcome models on the simulated market's history.

The history is the simulated market's seeded path (:class:`engine.history.SimulatedHistorySource`, the
history service's source), ``--years`` of sessions before ``--date``; one seed and date always give the
same data, features, folds and metrics. Training runs in this process, never on the app's event loop.

    optiondesk ml features --symbol SPY --years 5 --seed 7 --json
    optiondesk ml train --strategy iv_rank_put_spread --symbol SPY --years 5 --seed 7 --json
    optiondesk ml evaluate --name iv_rank_put_spread-SPY --symbol SPY --date 2026-06-01 --json
    optiondesk ml predict --name iv_rank_put_spread-SPY --symbol SPY --json
    optiondesk ml list --json
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from datetime import date
from pathlib import Path
from typing import Any

STRATEGIES = ("iv_rank_put_spread",)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--symbol", default="SPY", help="underlying (default SPY)")
    p.add_argument("--years", type=float, default=5.0, help="years of daily history (default 5)")
    p.add_argument("--seed", type=int, default=None, help="simulated market seed (default: the settings' seed)")
    p.add_argument("--date", default=None, help="history before this day, YYYY-MM-DD (default: the settings' "
                   "simulator start, else today)")
    p.add_argument("--db", type=Path, default=None,
                   help="read the history stored in this database (the history service's iv_history table: "
                        "recorded and backfilled days) instead of the simulated market's path")
    p.add_argument("--json", action="store_true", help="print JSON")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("ml", help="ML trade-outcome models: features, train, evaluate, list")
    sub = p.add_subparsers(dest="ml_command", metavar="ML_COMMAND", required=True)
    f = sub.add_parser("features", help="build (or read from the cache) the feature frame of an underlying")
    _common(f)
    f.set_defaults(func=_cmd_features)
    t = sub.add_parser("train", help="purged walk-forward validation, permutation test, then register the model")
    _common(t)
    t.add_argument("--strategy", default="iv_rank_put_spread", choices=STRATEGIES, help="whose candidate trades")
    t.add_argument("--model", default="xgboost", choices=("xgboost", "logistic", "lstm"),
                   help="classifier (default xgboost; lstm: a small torch LSTM over 20-day feature sequences)")
    t.add_argument("--calibration", default="auto", choices=("auto", "platt", "isotonic"),
                   help="probability map (default auto: Platt or isotonic, chosen on each calibration slice)")
    t.add_argument("--folds", type=int, default=5, help="walk-forward test folds (default 5)")
    t.add_argument("--embargo", type=int, default=5, help="embargo in sessions (default 5)")
    t.add_argument("--permutations", type=int, default=10, help="label permutations for the null AUC (default 10)")
    t.add_argument("--min-confidence", type=float, default=None,
                   help="gate level for the P&L comparison (default: each training fold's base win rate)")
    t.add_argument("--name", default=None, help="registry name (default STRATEGY-SYMBOL)")
    t.add_argument("--no-save", action="store_true", help="validate only; register nothing")
    t.add_argument("--models-dir", type=Path, default=None, help="registry folder (default: the data folder's models/)")
    t.set_defaults(func=_cmd_train)
    e = sub.add_parser("evaluate", help="score a registered model on the days after its training window")
    _common(e)
    e.add_argument("--name", required=True, help="registered model name")
    e.add_argument("--version", type=int, default=None, help="version (default: the latest)")
    e.add_argument("--models-dir", type=Path, default=None, help="registry folder")
    e.add_argument("--all-days", action="store_true",
                   help="score every candidate (for an independent path: another --seed); default: only the "
                        "candidates decided after the training window")
    e.set_defaults(func=_cmd_evaluate)
    pr = sub.add_parser("predict", help="a registered model's probability for the latest day's candidate trade")
    _common(pr)
    pr.add_argument("--name", required=True, help="registered model name")
    pr.add_argument("--version", type=int, default=None, help="version (default: the latest)")
    pr.add_argument("--models-dir", type=Path, default=None, help="registry folder")
    pr.set_defaults(func=_cmd_predict)
    ls = sub.add_parser("list", help="registered models with their training window and metrics")
    ls.add_argument("--models-dir", type=Path, default=None, help="registry folder")
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(func=_cmd_list)


def _settings() -> Any:
    from engine.paths import AppPaths
    from engine.settings.loader import load_settings

    return load_settings(AppPaths.default().settings_file).settings


def _history(args: argparse.Namespace) -> tuple[Any, int, date]:
    from engine.cli_errors import CliError
    from engine.clock import WallClock
    from engine.history.simulated import SimulatedHistorySource
    from engine.ml.data import MLDataError, load_history
    from engine.model.instruments import NEW_YORK

    settings = _settings()
    cfg = settings.simulator
    seed = args.seed if args.seed is not None else settings.general.seed
    if seed < 0:
        raise CliError(f"--seed must be ≥ 0, got {seed}")
    cfg = cfg.model_copy(update={"seed": seed})
    try:
        if args.date is not None:
            day = date.fromisoformat(args.date)
        elif cfg.start:
            day = date.fromisoformat(cfg.start)
        else:
            day = WallClock().now().astimezone(NEW_YORK).date()
    except ValueError:
        raise CliError(f"--date {args.date!r} is not a date (YYYY-MM-DD)") from None
    sym = args.symbol.upper()
    known = [u.symbol for u in cfg.universe]
    if sym not in known and args.db is None:
        raise CliError(f"unknown underlying {sym!r}; the simulated market has {', '.join(known)}")
    if not 0.5 <= args.years <= 30:
        raise CliError(f"--years must be between 0.5 and 30, got {args.years}")
    try:
        if args.db is not None:
            return _stored_history(args.db, sym, day, args.years), seed, day
        return load_history(SimulatedHistorySource(cfg), sym, day, args.years), seed, day
    except MLDataError as exc:
        raise CliError(str(exc)) from None


def _stored_history(db: Path, sym: str, day: date, years: float) -> Any:
    """The last ``years`` of stored sessions strictly before ``day``."""
    from datetime import timedelta

    from engine.cli_errors import CliError
    from engine.ml.data import SESSIONS_PER_YEAR, history_from_store
    from engine.store import Store

    if not db.exists():
        raise CliError(f"--db {db}: no such database")
    store = Store.open(db)
    try:
        h = history_from_store(store, sym, until=day - timedelta(days=1))
    finally:
        store.close()
    n = round(years * SESSIONS_PER_YEAR)
    return h.tail(n) if len(h) > n else h


def _registry(path: Path | None) -> Any:
    from engine.ml.registry import ModelRegistry
    from engine.paths import AppPaths

    return ModelRegistry(path if path is not None else AppPaths.default().models_dir)


def _cache() -> Path:
    from engine.paths import cache_dir

    return cache_dir() / "ml"


def _print(obj: Any, as_json: bool, text: str) -> None:
    from engine.cli_errors import dumps_json

    print(dumps_json(obj, indent=2) if as_json else text)


def _cmd_features(args: argparse.Namespace) -> int:
    import time

    from engine.ml.features import FEATURE_NAMES, cached_features

    t0 = time.perf_counter()
    h, seed, _day = _history(args)
    frame, path, hit = cached_features(h, _cache(), seed=seed)
    last = frame.iloc[-1]
    out = {"symbol": h.symbol, "source": h.source, "days": len(h), "first_day": h.days[0].isoformat(),
           "last_day": h.days[-1].isoformat(), "data_hash": h.data_hash(), "features": list(FEATURE_NAMES),
           "complete_rows": int(frame[list(FEATURE_NAMES)].notna().all(axis=1).sum()),
           "cache": str(path) if path else None, "cache_hit": hit,
           "latest": {k: (float(last[k]) if last[k] == last[k] else None) for k in FEATURE_NAMES},
           "seconds": round(time.perf_counter() - t0, 3)}
    lines = [f"{h.symbol}: {len(h)} days {out['first_day']}..{out['last_day']} ({h.source}), "
             f"{len(FEATURE_NAMES)} features, {out['complete_rows']} complete rows; "
             f"{'read from' if hit else 'written to'} {path}", f"latest ({out['last_day']}):"]
    lines += [f"  {k:24s} {v:.4g}" if v is not None else f"  {k:24s} —" for k, v in out["latest"].items()]
    _print(out, args.json, "\n".join(lines))
    return 0


def _fmt(x: Any, pct: bool = False) -> str:
    if x is None or x != x:
        return "—"
    return f"{x:.1%}" if pct else f"{x:.3f}"


def _cmd_train(args: argparse.Namespace) -> int:
    from engine.cli_errors import CliError, dumps_json
    from engine.clock import WallClock
    from engine.ml.jobs import TrainRequest, train_job
    from engine.ml.models import MLDependencyError
    from engine.ml.registry import RegistryError
    from engine.ml.train import TrainConfig

    h, seed, day = _history(args)
    try:
        cfg = TrainConfig(model=args.model, n_folds=args.folds, embargo=args.embargo,
                          n_permutations=args.permutations, seed=seed, min_confidence=args.min_confidence,
                          calibration=args.calibration)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    request = TrainRequest(source=None, symbol=h.symbol, before=day, years=args.years, history=h,
                           config=asdict(cfg), strategy=args.strategy, name=args.name,
                           models_dir=None if args.no_save else _registry(args.models_dir).root,
                           cache_dir=_cache(), created_at=WallClock().now().isoformat())
    try:
        report = train_job(request)
    except (MLDependencyError, RegistryError) as exc:
        raise CliError(str(exc)) from None
    except ValueError as exc:
        raise CliError(f"cannot validate: {exc}") from None
    if args.json:
        print(dumps_json(report, indent=2))
        return 0
    b = report["pnl"]
    print(f"{args.strategy} on {h.symbol}: {report['samples']} candidates, {report['test_samples']} out of sample "
          f"in {len(report['folds'])} purged walk-forward folds (embargo {cfg.embargo} sessions)")
    print(f"{cfg.model}: AUC {_fmt(report['auc'])} [{_fmt(report['auc_ci'][0])}, {_fmt(report['auc_ci'][1])}], "
          f"Brier {_fmt(report['brier'])} (base rate {_fmt(report['brier_base_rate'])}), "
          f"permuted-label AUC {_fmt(report['permutation_auc'])} (p = {_fmt(report['permutation_p_value'])})")
    for k, v in report["baseline"].items():
        print(f"{k} baseline: AUC {_fmt(v['auc'])} [{_fmt(v['auc_ci'][0])}, {_fmt(v['auc_ci'][1])}]")
    for k, v in b.items():
        print(f"  {k:28s} {v['trades']:4d} trades, P&L {v['total_pnl']:10.0f}, win {_fmt(v['win_rate'], True)}, "
              f"Sharpe/trade {_fmt(v['sharpe'])}")
    print(f"deflated Sharpe (gated, {report['trials']} trials): {_fmt(report['deflated_sharpe'])}")
    print(report["reading"])
    if "registered" in report:
        print(f"registered {report['registered']['name']} v{report['registered']['version']}")
    return 0


def _model_and_features(args: argparse.Namespace) -> tuple[Any, Any, Any, int, Any]:
    """The registered model named by ``args`` and the features of the history it is applied to; a model
    trained on another underlying is refused (its features would mean something else)."""
    from engine.cli_errors import CliError
    from engine.ml.features import FEATURE_NAMES, cached_features
    from engine.ml.models import MLDependencyError
    from engine.ml.registry import RegistryError

    try:
        model, rec = _registry(args.models_dir).load(args.name, args.version, features=FEATURE_NAMES)
    except (RegistryError, MLDependencyError) as exc:
        raise CliError(str(exc)) from None
    h, seed, _day = _history(args)
    if rec.meta.get("symbol") != h.symbol:
        raise CliError(f"model {rec.name} was trained on {rec.meta.get('symbol')}, not {h.symbol}")
    frame, _, _ = cached_features(h, _cache(), seed=seed)
    return model, rec, h, seed, frame


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import numpy as np

    from engine.cli_errors import CliError
    from engine.ml import metrics as mt
    from engine.ml.labels import PutSpreadRules, put_spread_labels
    from engine.ml.train import make_dataset

    model, rec, h, seed, frame = _model_and_features(args)
    rules = PutSpreadRules(**{k: v for k, v in (rec.meta.get("rules") or {}).items()})
    ds = make_dataset(frame, put_spread_labels(h, rules), rules)
    trained_to = date.fromisoformat(rec.meta["training_window"][1])
    if args.all_days and h.data_hash() == rec.meta.get("data_hash"):
        raise CliError(f"this is the data {rec.name} v{rec.version} was trained on; --all-days needs another "
                       "--seed (an independent path) or --date")
    after = np.array([args.all_days or ds.days[int(s)] > trained_to for s in ds.start])
    out: dict[str, Any] = {"name": rec.name, "version": rec.version, "symbol": h.symbol,
                           "trained_to": trained_to.isoformat(), "data_hash": h.data_hash(),
                           "scope": "all days" if args.all_days else "after the training window",
                           "samples": int(after.sum())}
    if after.sum() < 20:
        out["message"] = (f"only {int(after.sum())} resolved candidates {out['scope']} (training ends "
                          f"{trained_to}); pass a later --date, or --all-days with another --seed")
    else:
        y = ds.y[after]
        p = model.predict_proba(ds.inputs(model.kind)[after])
        block = max(1, round(float(np.mean(ds.end - ds.start))))
        out |= {"auc": mt.auc(y, p), "auc_ci": list(mt.block_bootstrap_auc(y, p, block=block, seed=seed)),
                "brier": mt.brier(y, p), "positive_rate": float(y.mean()), "calibration": mt.calibration_curve(y, p), "reliability": mt.reliability(y, p)}
    text = (f"{rec.name} v{rec.version} on {h.symbol} ({out['scope']}): {out['samples']} candidates; "
            + (out.get("message") or f"AUC {_fmt(out['auc'])} [{_fmt(out['auc_ci'][0])}, {_fmt(out['auc_ci'][1])}], "
               f"Brier {_fmt(out['brier'])}"))
    _print(out, args.json, text)
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    import numpy as np

    from engine.cli_errors import CliError
    from engine.ml.features import FEATURE_NAMES

    model, rec, h, _seed, frame = _model_and_features(args)
    x = frame[list(FEATURE_NAMES)].iloc[-1].to_numpy(float)
    missing = [n for n, v in zip(FEATURE_NAMES, x, strict=True) if not np.isfinite(v)]
    if missing:
        raise CliError(f"features not yet known on {h.days[-1]} (too little history): {', '.join(missing)}")
    if model.kind == "lstm":
        from engine.ml.lstm import SEQ_LEN, sequences

        x = sequences(frame[list(FEATURE_NAMES)].to_numpy(float), np.array([len(frame) - 1]), SEQ_LEN)[0]
    prob = float(model.predict_proba(x[None, ...] if model.kind == "lstm" else x.reshape(1, -1))[0])
    level = rec.meta.get("min_confidence")
    if level is None:
        level = rec.meta.get("positive_rate")
    contrib = model.contributions(x, list(FEATURE_NAMES))
    out = {"name": rec.name, "version": rec.version, "symbol": h.symbol, "day": h.days[-1].isoformat(),
           "probability": prob, "gate_level": level,
           "take": None if level is None else bool(prob >= level),
           "verdict": (rec.meta.get("metrics") or {}).get("verdict"),
           "contributions": dict(list(contrib.items())[:8])}
    text = (f"{rec.name} v{rec.version}, {h.symbol} candidate of {out['day']}: P(win) {prob:.1%}"
            + ("" if level is None else f" vs gate {level:.1%} → {'take' if out['take'] else 'skip'}")
            + f"; validation verdict: {out['verdict']}\n"
            + "\n".join(f"  {k:24s} {v:+.3f}" for k, v in out["contributions"].items()))
    _print(out, args.json, text)
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    rows = [r.summary() for r in _registry(args.models_dir).list()]
    lines = [f"{r['name']} v{r['version']}: {r['kind']} on {r['symbol']}, window {r['training_window']}, "
             f"AUC {_fmt(r['auc'])}, {r['verdict']}" for r in rows] or ["no registered models"]
    _print(rows, args.json, "\n".join(lines))
    return 0
