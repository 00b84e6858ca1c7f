"""Ordered schema migrations. Append-only: a released migration is never edited.

Version ranges by area (so parallel work never collides): core 1–9, simulated market/paper 10–19,
order path/risk 20–29, backtest 30–39, broker adapters 40–49, surface 50–59, operations (history, journal) 60–69,
strategy host 70–79, ML and model tracking 80–89.
Each migration runs exactly once, inside one transaction, and bumps ``schema_version``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    apply: Callable[[sqlite3.Connection], None] | str


V1_CORE = """
CREATE TABLE orders (
    order_id TEXT PRIMARY KEY,
    client_order_id TEXT NOT NULL UNIQUE,
    broker TEXT NOT NULL,
    account_id TEXT NOT NULL DEFAULT '',
    broker_order_id TEXT,
    status TEXT NOT NULL,
    source TEXT NOT NULL,
    strategy_id TEXT,
    tag TEXT NOT NULL DEFAULT '',
    order_type TEXT NOT NULL,
    tif TEXT NOT NULL,
    quantity INTEGER NOT NULL,
    filled_quantity INTEGER NOT NULL DEFAULT 0,
    limit_price TEXT,
    avg_fill_price TEXT,
    legs TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX orders_status ON orders(status);
CREATE TABLE order_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    order_id TEXT NOT NULL,
    ts TEXT NOT NULL,
    status TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX order_events_order ON order_events(order_id);
CREATE TABLE fills (
    fill_id TEXT PRIMARY KEY,
    order_id TEXT NOT NULL,
    client_order_id TEXT NOT NULL DEFAULT '',
    symbol TEXT NOT NULL,
    multiplier INTEGER NOT NULL,
    quantity INTEGER NOT NULL,
    price TEXT NOT NULL,
    fee TEXT NOT NULL,
    leg_index INTEGER NOT NULL DEFAULT 0,
    kind TEXT NOT NULL DEFAULT 'trade',
    ts TEXT NOT NULL
);
CREATE INDEX fills_order ON fills(order_id);
CREATE TABLE positions (
    account_id TEXT NOT NULL,
    symbol TEXT NOT NULL,
    multiplier INTEGER NOT NULL,
    quantity INTEGER NOT NULL,
    avg_price TEXT NOT NULL,
    realized_pnl TEXT NOT NULL DEFAULT '0',
    opened_at TEXT,
    strategy_id TEXT,
    PRIMARY KEY (account_id, symbol)
);
CREATE TABLE approvals (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    order_id TEXT NOT NULL,
    decision TEXT NOT NULL,
    by TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    ts TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE risk_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts TEXT NOT NULL,
    kind TEXT NOT NULL,
    order_id TEXT,
    detail TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE kv (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE settings_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts TEXT NOT NULL,
    source TEXT NOT NULL,
    content TEXT NOT NULL,
    errors TEXT NOT NULL DEFAULT '[]'
);
"""

V2_ANALYTICS = """
CREATE TABLE backtest_runs (
    run_id TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    strategy TEXT NOT NULL,
    params TEXT NOT NULL DEFAULT '{}',
    config TEXT NOT NULL DEFAULT '{}',
    status TEXT NOT NULL,
    metrics TEXT NOT NULL DEFAULT '{}',
    seed INTEGER
);
CREATE TABLE backtest_trades (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    trade_no INTEGER NOT NULL,
    opened_at TEXT,
    closed_at TEXT,
    symbol TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '{}',
    pnl TEXT NOT NULL,
    fees TEXT NOT NULL DEFAULT '0'
);
CREATE INDEX backtest_trades_run ON backtest_trades(run_id);
CREATE TABLE backtest_equity (
    run_id TEXT NOT NULL,
    ts TEXT NOT NULL,
    equity REAL NOT NULL,
    cash REAL,
    PRIMARY KEY (run_id, ts)
);
CREATE TABLE chain_snapshots (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    underlying TEXT NOT NULL,
    ts TEXT NOT NULL,
    source TEXT NOT NULL,
    payload BLOB NOT NULL
);
CREATE INDEX chain_snapshots_und_ts ON chain_snapshots(underlying, ts);
CREATE TABLE iv_history (
    underlying TEXT NOT NULL,
    day TEXT NOT NULL,
    atm_iv REAL NOT NULL,
    close REAL,
    source TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (underlying, day)
);
"""

V30_BACKTEST = """
ALTER TABLE backtest_runs ADD COLUMN finished_at TEXT;
ALTER TABLE backtest_runs ADD COLUMN elapsed_s REAL;
ALTER TABLE backtest_runs ADD COLUMN error TEXT NOT NULL DEFAULT '';
ALTER TABLE backtest_runs ADD COLUMN sweep_id TEXT;
CREATE INDEX backtest_runs_sweep ON backtest_runs(sweep_id);
ALTER TABLE backtest_equity ADD COLUMN daily_pnl REAL;
ALTER TABLE backtest_equity ADD COLUMN drawdown REAL;
ALTER TABLE backtest_equity ADD COLUMN delta REAL;
ALTER TABLE backtest_equity ADD COLUMN gamma REAL;
ALTER TABLE backtest_equity ADD COLUMN theta REAL;
ALTER TABLE backtest_equity ADD COLUMN vega REAL;
ALTER TABLE backtest_equity ADD COLUMN regime TEXT
"""

V31_BACKTEST = """
ALTER TABLE backtest_equity ADD COLUMN margin REAL
"""

V10_PAPER = """
CREATE TABLE paper_accounts (
    account_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE paper_orders (
    order_id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    status TEXT NOT NULL,
    payload TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX paper_orders_account_status ON paper_orders(account_id, status);
CREATE TABLE paper_positions (
    account_id TEXT NOT NULL,
    symbol TEXT NOT NULL,
    payload TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (account_id, symbol)
);
CREATE TABLE paper_fills (
    fill_id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    order_id TEXT NOT NULL,
    symbol TEXT NOT NULL,
    kind TEXT NOT NULL,
    flagged INTEGER NOT NULL DEFAULT 0,
    payload TEXT NOT NULL,
    ts TEXT NOT NULL
);
CREATE INDEX paper_fills_account ON paper_fills(account_id, ts);
"""

V60_OPERATIONS = """
CREATE TABLE pnl_history (
    account_id TEXT NOT NULL,
    mode TEXT NOT NULL,
    strategy_id TEXT NOT NULL DEFAULT '',
    ts TEXT NOT NULL,
    broker TEXT NOT NULL DEFAULT '',
    net_liquidation REAL,
    cash REAL,
    day_pnl REAL,
    realized_pnl REAL,
    unrealized_pnl REAL,
    delta REAL,
    beta_delta REAL,
    gamma REAL,
    theta REAL,
    vega REAL,
    regime TEXT,
    PRIMARY KEY (account_id, mode, strategy_id, ts)
);
CREATE INDEX pnl_history_ts ON pnl_history(ts);
CREATE TABLE journal_notes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    order_id TEXT NOT NULL,
    ts TEXT NOT NULL,
    note TEXT NOT NULL DEFAULT '',
    tags TEXT NOT NULL DEFAULT ''
);
CREATE INDEX journal_notes_order ON journal_notes(order_id);
CREATE INDEX journal_notes_ts ON journal_notes(ts)
"""

V50_HISTORY = """
CREATE TABLE history_backfills (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    underlying TEXT NOT NULL,
    source TEXT NOT NULL,
    first_day TEXT NOT NULL,
    last_day TEXT NOT NULL,
    rows INTEGER NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX history_backfills_underlying ON history_backfills(underlying);
CREATE INDEX iv_history_day ON iv_history(day)
"""

V51_HIST_VOL = """
ALTER TABLE iv_history ADD COLUMN hist_vol REAL
"""

V70_STRATEGIES = """
CREATE TABLE strategy_state (
    strategy_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    state TEXT NOT NULL,
    mode TEXT NOT NULL DEFAULT 'paper',
    payload TEXT NOT NULL DEFAULT '{}',
    updated_at TEXT NOT NULL
);
CREATE TABLE strategy_fills (
    fill_id TEXT NOT NULL,
    strategy_id TEXT NOT NULL,
    order_id TEXT NOT NULL DEFAULT '',
    seq INTEGER NOT NULL,
    payload TEXT NOT NULL,
    ts TEXT NOT NULL,
    PRIMARY KEY (strategy_id, fill_id)
);
CREATE INDEX strategy_fills_seq ON strategy_fills(strategy_id, seq)
"""

V20_ORDER_TYPES = """
ALTER TABLE orders ADD COLUMN stop_price TEXT
"""

V80_ENSEMBLE_TRACKER = """
CREATE TABLE ensemble_tracker (
    regime TEXT NOT NULL,
    model TEXT NOT NULL,
    error REAL NOT NULL,
    observations INTEGER NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (regime, model)
)
"""

V21_ORDER_GROUPS = """
CREATE TABLE order_groups (
    group_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    entry_order_id TEXT,
    entry_client_order_id TEXT NOT NULL DEFAULT '',
    member_order_ids TEXT NOT NULL DEFAULT '[]',
    held TEXT NOT NULL DEFAULT '[]',
    profit_pct TEXT,
    source TEXT NOT NULL DEFAULT '',
    reason TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX order_groups_status ON order_groups(status)
"""

V61_DAILY_BARS = """
CREATE TABLE daily_bars (
    symbol TEXT NOT NULL,
    day TEXT NOT NULL,
    open REAL NOT NULL,
    high REAL NOT NULL,
    low REAL NOT NULL,
    close REAL NOT NULL,
    volume REAL,
    source TEXT NOT NULL,
    PRIMARY KEY (symbol, day)
)
"""

MIGRATIONS: list[Migration] = [
    Migration(1, "core tables: orders, events, fills, positions, approvals, risk, audit, kv, settings history", V1_CORE),
    Migration(2, "analytics tables: backtests, chain snapshots, IV history", V2_ANALYTICS),
    Migration(10, "paper exchange: account state, working orders, positions with full contract terms, fill log", V10_PAPER),
    Migration(20, "order path: stop and stop-limit orders' trigger price", V20_ORDER_TYPES),
    Migration(21, "order path: order groups (OCO, bracket, profit taker) and their exits waiting for a fill",
              V21_ORDER_GROUPS),
    Migration(30, "backtest: run timing/errors/sweep id, daily P&L, drawdown, Greeks and regime per equity row", V30_BACKTEST),
    Migration(31, "backtest: buying-power requirement per equity row", V31_BACKTEST),
    Migration(50, "history: a log of daily-history backfills (source, days, rows) per underlying", V50_HISTORY),
    Migration(51, "history: a broker's 30-day historical volatility per day (IBKR HISTORICAL_VOLATILITY)",
              V51_HIST_VOL),
    Migration(60, "operations: P&L, Greeks and equity history per account and mode; trade journal", V60_OPERATIONS),
    Migration(61, "history: daily OHLCV bars per symbol with their source (broker candles, yfinance)",
              V61_DAILY_BARS),
    Migration(70, "strategy host: each strategy's state (books, orders, custom state) and its attributed fills",
              V70_STRATEGIES),
    Migration(80, "ML: the pricing ensemble tracker's decayed error per regime and model", V80_ENSEMBLE_TRACKER),
]


def ordered_migrations() -> list[Migration]:
    """All migrations sorted by version; duplicate versions are a programming error."""
    ms = sorted(MIGRATIONS, key=lambda m: m.version)
    versions = [m.version for m in ms]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration versions: {versions}")
    return ms
