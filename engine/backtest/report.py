"""Exports of a backtest result: trades.csv, equity.csv, orders.csv, summary.json and a PNG report.

The PNG (equity, drawdown, monthly returns heatmap, daily P&L histogram) is drawn with matplotlib's
Agg canvas directly — never ``pyplot``, so no GUI backend (Qt) is ever selected or imported.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from engine.backtest.metrics import monthly_returns

if TYPE_CHECKING:
    from engine.backtest.runner import BacktestResult

TRADE_COLUMNS = ("trade_no", "tag", "underlying", "opened_at", "closed_at", "legs", "quantity", "entry_price",
                 "exit_price", "exit_reason", "gross_pnl", "fees", "net_pnl", "credit", "regime", "status")


def write_trades_csv(result: BacktestResult, path: str | Path) -> Path:
    path = Path(path)
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=TRADE_COLUMNS)
        w.writeheader()
        for t in result.trades:
            w.writerow(t.as_row())
    return path


def write_equity_csv(result: BacktestResult, path: str | Path) -> Path:
    path = Path(path)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["date", "equity", "cash", "daily_pnl", "drawdown", "delta", "gamma", "theta", "vega", "margin",
                    "iv_rank", "regime"])
        g = result.greeks
        stamps = result.dates if result.times is None else [f"{t}Z" for t in result.times]
        # whole cents, and each row's P&L the difference of the printed equities (the first row's from the
        # starting cash): the column sums to the printed total exactly, as summary.json's total_pnl
        cents = np.rint(np.asarray(result.equity, float) * 100.0).astype(np.int64)
        start = result.config.get("initial_cash")
        first = round(float(start) * 100.0) if start is not None else (int(cents[0]) if len(cents) else 0)
        daily_cents = np.diff(np.r_[first, cents])
        for i, d in enumerate(stamps):
            w.writerow([str(d), _cents(int(cents[i])), f"{result.cash[i]:.2f}", _cents(int(daily_cents[i])),
                        f"{result.drawdown[i]:.6f}", f"{g['delta'][i]:.4f}", f"{g['gamma'][i]:.6f}",
                        f"{g['theta'][i]:.4f}", f"{g['vega'][i]:.4f}", f"{g['margin'][i]:.2f}",
                        "" if not math.isfinite(result.iv_rank[i]) else f"{result.iv_rank[i]:.4f}",
                        result.regime[i]])
    return path


def write_orders_csv(result: BacktestResult, path: str | Path) -> Path:
    path = Path(path)
    cols = ("order_id", "created_at", "tag", "status", "quantity", "limit_price", "avg_fill_price", "legs", "reason")
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        for row in result.orders:
            w.writerow({c: row.get(c, "") for c in cols})
    return path


def summary_json(result: BacktestResult) -> dict:
    rec = {k: str(v) for k, v in result.reconciliation().items()}
    return {"summary": result.summary(), "per_regime": result.metrics.per_regime, "reconciliation": rec,
            "params": result.params, "config": result.config, "info": result.info, "error": result.error,
            "elapsed_s": round(result.elapsed_s, 4)}


def export_all(result: BacktestResult, out_dir: str | Path, *, png: bool = True) -> dict[str, Path]:
    """Write every export into ``out_dir`` (created); returns the paths by kind."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "trades": write_trades_csv(result, out / "trades.csv"),
        "equity": write_equity_csv(result, out / "equity.csv"),
        "orders": write_orders_csv(result, out / "orders.csv"),
    }
    (out / "summary.json").write_text(json.dumps(summary_json(result), indent=2, default=str))
    paths["summary"] = out / "summary.json"
    if png:
        paths["report"] = render_png(result, out / "report.png")
    return paths


def render_png(result: BacktestResult, path: str | Path, *, dpi: int = 100) -> Path:
    """Equity, drawdown, monthly returns and daily P&L distribution on one 12×9 in. page."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    fig = Figure(figsize=(12, 9), dpi=dpi)
    FigureCanvasAgg(fig)
    gs = fig.add_gridspec(3, 2, height_ratios=[2.2, 1.0, 1.6], hspace=0.45, wspace=0.18)
    stamps = result.times if result.times is not None else result.dates.astype("datetime64[D]")
    x = stamps.astype("datetime64[ms]").astype(object)
    m = result.metrics

    ax = fig.add_subplot(gs[0, :])
    ax.plot(x, result.equity, color="#1f5fa8", lw=1.3)
    ax.set_title(f"{result.strategy} — {result.info.get('underlying', '')}   equity (marked to market daily)",
                 loc="left", fontsize=11)
    ax.grid(alpha=0.3)
    ax.set_ylabel("$")
    stats = (f"return {_pct(m.total_return)}   CAGR {_pct(m.cagr)}   Sharpe {_num(m.sharpe)}   "
             f"Sortino {_num(m.sortino)}   max DD {_pct(m.max_drawdown)}   trades {m.trades}   "
             f"win {_pct(m.win_rate)}   PF {_num(m.profit_factor)}   fees ${m.fees:,.0f}")
    ax.text(0.0, -0.12, stats, transform=ax.transAxes, fontsize=9, va="top")

    ax2 = fig.add_subplot(gs[1, :], sharex=ax)
    ax2.fill_between(x, result.drawdown * 100, 0, color="#c0392b", alpha=0.5, lw=0)
    ax2.set_ylabel("drawdown %")
    ax2.grid(alpha=0.3)

    ax3 = fig.add_subplot(gs[2, 0])
    months, rets = monthly_returns(result.dates, result.equity)
    if len(months):
        years = months.astype("datetime64[Y]").astype(int) + 1970
        mon = months.astype(int) % 12
        ys = np.unique(years)
        grid = np.full((len(ys), 12), np.nan)
        grid[np.searchsorted(ys, years), mon] = rets * 100
        lim = max(np.nanmax(np.abs(grid)) if np.isfinite(grid).any() else 1.0, 0.5)
        im = ax3.imshow(grid, cmap="RdYlGn", vmin=-lim, vmax=lim, aspect="auto")
        ax3.set_yticks(range(len(ys)), [str(y) for y in ys], fontsize=8)
        ax3.set_xticks(range(12), list("JFMAMJJASOND"), fontsize=8)
        for (r, c), v in np.ndenumerate(grid):
            if np.isfinite(v):
                ax3.text(c, r, f"{v:.1f}", ha="center", va="center", fontsize=6)
        fig.colorbar(im, ax=ax3, fraction=0.04)
    ax3.set_title("monthly returns %", loc="left", fontsize=10)

    ax4 = fig.add_subplot(gs[2, 1])
    pnl = result.daily_pnl[np.abs(result.daily_pnl) > 0.005]  # days when the account moved
    if len(pnl):
        ax4.hist(pnl, bins=min(50, max(5, len(pnl) // 4)), color="#7f8c8d")
    ax4.set_ylabel("days")
    ax4.set_title(f"daily P&L ($) on {len(pnl)} days with a change", loc="left", fontsize=10)
    ax4.grid(alpha=0.3)
    fig.savefig(path, format="png")
    return path


def _cents(c: int) -> str:
    """Whole cents as dollars, exactly (no float rounding): -1234 → "-12.34"."""
    sign = "-" if c < 0 else ""
    return f"{sign}{abs(c) // 100}.{abs(c) % 100:02d}"


def _pct(v: float) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{v * 100:.1f}%"


def _num(v: float) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{v:.2f}"
