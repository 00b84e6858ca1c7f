"""Historical mode: N sessions / years of daily (and optionally intraday) chain snapshots for the backtester.

Same seed and arguments → the same snapshots, bit for bit. The day's snapshot is taken at the close
(contracts expiring at that close are already gone; they settle on the close recorded in the bars).

- :func:`iter_sessions` — a generator of :class:`SessionSnapshot` (chains at the close, open/close prices,
  regime, optional intraday chains);
- :func:`generate_daily_history` — one root's history as a :class:`engine.backtest.data.ChainHistory`;
- :func:`generate_daily_histories` — several underlyings from one run of the market (an index and its members);
- :func:`generate_history` — writes a reproducible directory: ``chains/<ROOT>.parquet`` (the backtester's
  flat layout: underlying, quote_date, expiration, strike, option_type, bid, ask, underlying_price, iv,
  delta, volume, open_interest, plus root/settlement/style/multiplier), ``bars/<SYMBOL>.parquet`` (date,
  open, close, regime), optional ``intraday/<ROOT>.parquet`` (with a ``ts`` column) and ``manifest.json``;
- :func:`load_history` — reads one root back as a ``ChainHistory``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.clock import WallClock
from engine.market.config import SimulatorConfig
from engine.market.simulated.market import SimulatedMarket, market_calendar_for
from engine.model import ExerciseStyle, OptionChain, Settlement

if TYPE_CHECKING:
    from engine.backtest.data import ChainHistory

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


@dataclass(frozen=True, slots=True)
class SessionSnapshot:
    session: date
    ts: datetime  # the close, UTC
    chains: dict[str, OptionChain]  # per underlying, at the close
    open: dict[str, float]
    close: dict[str, float]
    regime: str
    intraday: list[tuple[datetime, dict[str, OptionChain]]] = field(default_factory=list)


def _history_config(config: SimulatorConfig, step_seconds: float) -> SimulatorConfig:
    streaming = config.streaming.model_copy(update={"step_seconds": step_seconds})
    return config.model_copy(update={"streaming": streaming})


def iter_sessions(config: SimulatorConfig, start: date, sessions: int, *, intraday_minutes: float | None = None,
                  step_seconds: float = 1800.0) -> Iterator[SessionSnapshot]:
    """Simulate ``sessions`` sessions from the first session on/after ``start``; one snapshot per close."""
    if sessions <= 0:
        raise ValueError(f"sessions must be positive, got {sessions}")
    if intraday_minutes is not None and not intraday_minutes > 0:
        raise ValueError(f"intraday_minutes must be positive, got {intraday_minutes}")
    cfg = _history_config(config, step_seconds)
    market = SimulatedMarket(cfg, start=start, calendar=market_calendar_for(start, years_after=4))
    for i in range(sessions):
        if i > 0:
            market.advance_to(market.calendar.next_open(market.now), reprice=False)
        intraday: list[tuple[datetime, dict[str, OptionChain]]] = []
        if intraday_minutes:
            t = market.session_open + timedelta(minutes=intraday_minutes)
            while t < market.session_close:
                market.advance_to(t)
                intraday.append((market.now, {s: market.chain(s) for s in market.symbols}))
                t += timedelta(minutes=intraday_minutes)
        market.advance_to(market.session_close, reprice=False)
        market.reprice_full()
        marks = market.marks[market.session]
        yield SessionSnapshot(
            session=market.session, ts=market.now, chains={s: market.chain(s) for s in market.symbols},
            open=dict(marks.open), close=dict(marks.close), regime=market.regime, intraday=intraday,
        )


def _resolve_root(config: SimulatorConfig, symbol: str, root: str | None) -> tuple[str, str]:
    """(underlying, root) for a symbol that is an underlying or an OCC root."""
    for spec in config.universe:
        roots = [r.root for r in spec.roots]
        if root is not None and spec.symbol == symbol:
            if root not in roots:
                raise ValueError(f"{symbol} has roots {roots}, not {root!r}")
            return spec.symbol, root
        if symbol in roots:
            return spec.symbol, symbol
        if spec.symbol == symbol:
            return spec.symbol, roots[0]
    raise ValueError(f"unknown simulated symbol {symbol!r}; available: {[u.symbol for u in config.universe]}")


def _sessions_for(start: date | None, years: float | None, days: int | None) -> tuple[date, int]:
    if (years is None) == (days is None):
        raise ValueError("give exactly one of years or days")
    if days is not None and days <= 0:
        raise ValueError(f"days must be positive, got {days}")
    if years is not None and not years > 0:
        raise ValueError(f"years must be positive, got {years}")
    if start is None:
        calendar_days = float(years) * 365.25 if years is not None else float(days) * 1.45  # type: ignore[arg-type]
        # no start given: a history that ends about today (real date), as an imported file would
        start = (WallClock().now() - timedelta(days=calendar_days + 7)).date()
    n = days if days is not None else round(float(years) * 252)  # type: ignore[arg-type]
    return start, max(n, 1)


def _rows(chain: OptionChain, root: str | None, quote_day: date) -> dict[str, np.ndarray]:
    sym = chain.symbol
    if root is not None:
        # compact OCC: the root is everything before the 15-character tail
        mask = np.array([s[:-15] == root for s in sym], dtype=bool)
        chain = chain.take(mask)
    n = len(chain)
    return {
        "underlying": np.full(n, chain.underlying, dtype=object),
        "quote_date": np.full(n, np.datetime64(quote_day, "D")),
        "expiration": chain.expiry.astype("datetime64[D]"),
        "expires_at": chain.expiry,
        "strike": chain.strike,
        "option_type": np.where(chain.is_call, "C", "P").astype(object),
        "bid": chain.bid,
        "ask": chain.ask,
        "underlying_price": np.full(n, chain.spot),
        "iv": chain.vendor.get("vendor_iv", np.full(n, np.nan)),
        "delta": chain.vendor.get("vendor_delta", np.full(n, np.nan)),
        "volume": chain.volume,
        "open_interest": chain.open_interest,
    }


def _root_meta(config: SimulatorConfig, root: str) -> dict[str, Any]:
    for spec in config.universe:
        for r in spec.roots:
            if r.root == root:
                cash = spec.kind in ("index", "vol_index")
                settlement = ("cash_am" if r.settlement == "cash_am" else "cash_pm") if cash else "physical"
                return {"underlying": spec.symbol, "root": root, "multiplier": r.multiplier, "style": r.style,
                        "settlement": settlement}
    raise ValueError(f"unknown root {root!r}")


def generate_daily_history(symbol: str, *, years: float | None = None, days: int | None = None, seed: int = 7,
                           start: date | None = None, root: str | None = None,
                           config: SimulatorConfig | None = None) -> ChainHistory:
    """Daily close snapshots of one root as a ``ChainHistory`` (deterministic for the arguments).

    ``symbol`` is an underlying (its first root: ``SPX`` → the AM-settled ``SPX`` monthlies) or a root
    (``SPXW``). Without ``start`` the history ends about a week before today.
    """
    from engine.backtest.data import build_history

    cfg = (config or SimulatorConfig()).model_copy(update={"seed": seed})
    und, root_name = _resolve_root(cfg, symbol, root)
    cfg = cfg.restricted_to([und])
    start_d, n = _sessions_for(start, years, days)
    parts: list[dict[str, np.ndarray]] = []
    for snap in iter_sessions(cfg, start_d, n):
        parts.append(_rows(snap.chains[und], root_name, snap.session))
    cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    meta = _root_meta(cfg, root_name)
    history = build_history(
        und, cols["quote_date"], cols["expiration"], cols["strike"], cols["option_type"] == "C", cols["bid"],
        cols["ask"], spot_by_row=cols["underlying_price"], iv=cols["iv"], delta=cols["delta"],
        volume=cols["volume"], open_interest=cols["open_interest"], multiplier=meta["multiplier"],
        style=ExerciseStyle(meta["style"]), settlement=Settlement(meta["settlement"]), root=root_name,
        source=f"simulated seed={seed}",
    )
    from engine.market.simulated.earnings import EarningsSchedule

    history.events = {und: EarningsSchedule.for_config(cfg).dates(und)}  # the context's next_event reads them
    return history


def generate_daily_histories(symbols: Sequence[str], *, years: float | None = None, days: int | None = None,
                             seed: int = 7, start: date | None = None,
                             config: SimulatorConfig | None = None) -> dict[str, ChainHistory]:
    """Daily close snapshots of several underlyings from **one** run of the simulated market, by symbol (each its
    first root). One run, not one per symbol: an index and its members must share a path — generated apart, each
    would draw its own market and the index would not be its members' basket."""
    from engine.backtest.data import build_history
    from engine.market.simulated.earnings import EarningsSchedule

    cfg = (config or SimulatorConfig()).model_copy(update={"seed": seed})
    roots = dict(_resolve_root(cfg, s, None) for s in symbols)
    cfg = cfg.restricted_to(list(roots))
    start_d, n = _sessions_for(start, years, days)
    parts: dict[str, list[dict[str, np.ndarray]]] = {und: [] for und in roots}
    for snap in iter_sessions(cfg, start_d, n):
        for und, root_name in roots.items():
            parts[und].append(_rows(snap.chains[und], root_name, snap.session))
    schedule = EarningsSchedule.for_config(cfg)
    out: dict[str, ChainHistory] = {}
    for und, root_name in roots.items():
        cols = {k: np.concatenate([p[k] for p in parts[und]]) for k in parts[und][0]}
        meta = _root_meta(cfg, root_name)
        h = build_history(
            und, cols["quote_date"], cols["expiration"], cols["strike"], cols["option_type"] == "C", cols["bid"],
            cols["ask"], spot_by_row=cols["underlying_price"], iv=cols["iv"], delta=cols["delta"],
            volume=cols["volume"], open_interest=cols["open_interest"], multiplier=meta["multiplier"],
            style=ExerciseStyle(meta["style"]), settlement=Settlement(meta["settlement"]), root=root_name,
            source=f"simulated seed={seed}",
        )
        h.events = {und: schedule.dates(und)}
        out[und] = h
    return out


@dataclass(frozen=True, slots=True)
class HistoryManifest:
    """What :func:`generate_history` wrote (also saved as ``manifest.json``)."""

    directory: Path
    seed: int
    symbols: tuple[str, ...]
    roots: tuple[str, ...]
    start: date
    end: date
    sessions: int
    rows: int
    files: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT_VERSION, "seed": self.seed, "symbols": list(self.symbols), "roots": list(self.roots),
                "start": self.start.isoformat(), "end": self.end.isoformat(), "sessions": self.sessions,
                "rows": self.rows, "files": list(self.files)}


def generate_history(out_dir: str | Path, *, symbols: Sequence[str] | None = None, days: int | None = None,
                     years: float | None = None, seed: int = 7, start: date | None = None,
                     intraday_minutes: float | None = None, config: SimulatorConfig | None = None) -> HistoryManifest:
    """Simulate and write a reproducible history directory (see the module docstring for the layout)."""
    import pandas as pd

    from engine.parquet_support import parquet_module

    parquet_module(out_dir)  # the directory is Parquet: refuse before simulating, in a build without pyarrow
    cfg = (config or SimulatorConfig()).model_copy(update={"seed": seed})
    if symbols:
        cfg = cfg.restricted_to(list(symbols))
    start_d, n = _sessions_for(start, years, days)
    out = Path(out_dir)
    (out / "chains").mkdir(parents=True, exist_ok=True)
    (out / "bars").mkdir(parents=True, exist_ok=True)
    roots = {r.root: spec.symbol for spec in cfg.universe for r in spec.roots}
    chain_parts: dict[str, list[dict[str, np.ndarray]]] = {r: [] for r in roots}
    intra_parts: dict[str, list[dict[str, np.ndarray]]] = {r: [] for r in roots}
    bars: dict[str, list[dict[str, Any]]] = {u.symbol: [] for u in cfg.universe}
    sessions: list[date] = []
    for snap in iter_sessions(cfg, start_d, n, intraday_minutes=intraday_minutes):
        sessions.append(snap.session)
        for root, und in roots.items():
            chain_parts[root].append(_rows(snap.chains[und], root, snap.session))
            for ts, chains in snap.intraday:
                rows = _rows(chains[und], root, snap.session)
                rows["ts"] = np.full(len(rows["strike"]), np.datetime64(ts.replace(tzinfo=None), "s"))
                intra_parts[root].append(rows)
        for sym in bars:
            bars[sym].append({"date": snap.session, "open": snap.open.get(sym), "close": snap.close.get(sym),
                              "regime": snap.regime})
    files: list[str] = []
    total = 0
    for root, parts in chain_parts.items():
        meta = _root_meta(cfg, root)
        frame = pd.DataFrame({k: np.concatenate([p[k] for p in parts]) for k in parts[0]})
        for key in ("root", "settlement", "style", "multiplier"):
            frame[key] = meta[key]
        frame["expires_at"] = frame["expires_at"].astype("datetime64[s]")
        path = out / "chains" / f"{root}.parquet"
        frame.to_parquet(path, index=False)
        files.append(str(path.relative_to(out)))
        total += len(frame)
        if intra_parts[root]:
            (out / "intraday").mkdir(exist_ok=True)
            iframe = pd.DataFrame({k: np.concatenate([p[k] for p in intra_parts[root]]) for k in intra_parts[root][0]})
            ipath = out / "intraday" / f"{root}.parquet"
            iframe.to_parquet(ipath, index=False)
            files.append(str(ipath.relative_to(out)))
    for sym, bar_rows in bars.items():
        path = out / "bars" / f"{sym}.parquet"
        pd.DataFrame(bar_rows).to_parquet(path, index=False)
        files.append(str(path.relative_to(out)))
    manifest = HistoryManifest(directory=out, seed=seed, symbols=tuple(bars), roots=tuple(roots), start=sessions[0],
                               end=sessions[-1], sessions=len(sessions), rows=total, files=tuple(files))
    body = manifest.to_dict() | {"config": json.loads(cfg.model_dump_json())}
    (out / MANIFEST).write_text(json.dumps(body, indent=2, sort_keys=True))
    return manifest


def load_history(directory: str | Path, root: str) -> ChainHistory:
    """One root of a directory written by :func:`generate_history`, as a ``ChainHistory``."""
    from engine.backtest.chain_files import load_chain_file

    d = Path(directory)
    manifest_path = d / MANIFEST
    if not manifest_path.exists():
        raise FileNotFoundError(f"{d} has no {MANIFEST}: not a simulated history directory")
    manifest = json.loads(manifest_path.read_text())
    if root not in manifest["roots"]:
        raise ValueError(f"{d} holds roots {manifest['roots']}, not {root!r}")
    cfg = SimulatorConfig.model_validate(manifest["config"])
    meta = _root_meta(cfg, root)
    history = load_chain_file(d / "chains" / f"{root}.parquet", underlying=meta["underlying"],
                              multiplier=meta["multiplier"], style=ExerciseStyle(meta["style"]),
                              settlement=Settlement(meta["settlement"]))
    history.root = root
    history._symbols = None
    return history
