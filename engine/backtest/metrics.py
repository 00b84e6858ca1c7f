"""Performance statistics of a backtest, from the daily equity curve and the closed trades.

Conventions: daily simple returns of equity; annualisation with 252 trading days; Sharpe and Sortino
use a risk-free rate ``rf`` (annual, default 0) converted to a daily rate; max drawdown is the largest
peak-to-trough fall as a negative fraction; its duration counts trading days from the peak to the
recovery (or to the end when not recovered). Trade statistics use net P&L (after fees).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

TRADING_DAYS = 252


@dataclass(frozen=True, slots=True)
class TradeStats:
    pnl: float  # net of fees, dollars
    credit: float  # premium received at entry in dollars (0 for debit trades)
    regime: str = ""
    days_held: int = 0


@dataclass(frozen=True)
class Metrics:
    start_equity: float
    end_equity: float
    total_pnl: float
    total_return: float
    cagr: float
    ann_vol: float
    sharpe: float
    sortino: float
    calmar: float
    max_drawdown: float
    max_drawdown_days: int
    trades: int
    win_rate: float
    profit_factor: float
    avg_win: float
    avg_loss: float
    expectancy: float
    exposure: float
    premium_capture: float
    fees: float
    avg_days_held: float
    max_bp_used: float = math.nan  # largest buying-power requirement as a fraction of that day's equity
    avg_bp_used: float = math.nan  # its mean over the days a position was held
    per_regime: dict[str, dict[str, float]] = field(default_factory=dict)

    def as_dict(self) -> dict:
        d = asdict(self)
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


def drawdown(equity: np.ndarray, initial: float | None = None) -> np.ndarray:
    """Drawdown per day as a fraction of the running peak (≤ 0).

    ``initial``: the starting cash, which is the first peak — a run that loses on its first day is in
    drawdown that day (measured from the money put in, as summary.json's max drawdown is).
    """
    eq = np.asarray(equity, float)
    if len(eq) == 0:
        return eq
    peak = np.maximum.accumulate(eq if initial is None else np.r_[float(initial), eq])
    if initial is not None:
        peak = peak[1:]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(peak > 0, eq / peak - 1.0, 0.0)


def daily_pnl(equity: np.ndarray, initial: float | None = None) -> np.ndarray:
    """Equity change per row against the previous row; the first row against ``initial`` (the starting cash),
    so the rows sum to the run's total P&L to the cent (0 on the first row only without ``initial``)."""
    eq = np.asarray(equity, float)
    if len(eq) == 0:
        return eq
    return np.diff(np.r_[float(initial) if initial is not None else eq[0], eq])


def max_drawdown_duration(equity: np.ndarray) -> int:
    """Longest run of trading days spent below a previous peak."""
    dd = drawdown(equity) < -1e-12
    if not dd.any():
        return 0
    # lengths of runs of True
    padded = np.r_[False, dd, False].astype(np.int8)
    edges = np.diff(padded)
    starts, ends = np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0]
    return int((ends - starts).max())


def compute_metrics(
    equity: np.ndarray,
    trades: Sequence[TradeStats] = (),
    *,
    exposure_days: np.ndarray | None = None,
    fees: float = 0.0,
    rf: float = 0.0,
    regimes: np.ndarray | None = None,
    initial: float | None = None,
    margin: np.ndarray | None = None,
) -> Metrics:
    """Statistics of one run. ``exposure_days``: bool per day, True when a position was held.

    ``initial``: the starting capital before the first close (so the first day's P&L counts).
    """
    eq = np.asarray(equity, float)
    bp_max = bp_avg = math.nan
    if margin is not None and len(margin) == len(eq) and len(eq):
        with np.errstate(invalid="ignore", divide="ignore"):
            used = np.asarray(margin, float) / eq
        held = used > 0
        bp_max = float(used.max()) if len(used) else math.nan
        bp_avg = float(used[held].mean()) if held.any() else 0.0
    if initial is not None and len(eq):
        eq = np.r_[float(initial), eq]
        if regimes is not None and len(regimes) == len(eq) - 1:
            regimes = np.r_[np.asarray(regimes, dtype=object)[:1], np.asarray(regimes, dtype=object)]
    n = len(eq)
    start = float(eq[0]) if n else math.nan
    end = float(eq[-1]) if n else math.nan
    rets = np.diff(eq) / eq[:-1] if n > 1 else np.array([])
    rets = rets[np.isfinite(rets)]
    years = max(n - 1, 1) / TRADING_DAYS
    total_return = end / start - 1.0 if start else math.nan
    cagr = (end / start) ** (1.0 / years) - 1.0 if start > 0 and end > 0 else math.nan
    daily_rf = (1.0 + rf) ** (1.0 / TRADING_DAYS) - 1.0
    excess = rets - daily_rf
    sd = float(rets.std(ddof=1)) if len(rets) > 1 else math.nan
    ann_vol = sd * math.sqrt(TRADING_DAYS)
    sharpe = float(excess.mean() / sd * math.sqrt(TRADING_DAYS)) if len(rets) > 1 and sd > 0 else math.nan
    downside = np.sqrt(np.mean(np.minimum(excess, 0.0) ** 2)) if len(rets) else math.nan
    sortino = float(excess.mean() / downside * math.sqrt(TRADING_DAYS)) if len(rets) and downside > 0 else math.nan
    mdd = float(drawdown(eq).min()) if n else math.nan
    calmar = cagr / abs(mdd) if mdd < 0 and math.isfinite(cagr) else math.nan

    pnl = np.array([t.pnl for t in trades], float)
    wins, losses = pnl[pnl > 0], pnl[pnl <= 0]
    gross_loss = -losses.sum()
    credit = sum(t.credit for t in trades)
    per_regime: dict[str, dict[str, float]] = {}
    for reg in sorted({t.regime for t in trades}):
        sel = np.array([t.regime == reg for t in trades])
        rp = pnl[sel]
        per_regime[reg or "unknown"] = {"trades": int(sel.sum()), "pnl": float(rp.sum()),
                                        "win_rate": float((rp > 0).mean()) if len(rp) else math.nan}
    if regimes is not None and len(regimes) == n and n > 1:
        day_regime = np.asarray(regimes)[1:]
        for reg in np.unique(day_regime):
            r = np.diff(eq)[day_regime == reg]
            entry = per_regime.setdefault(str(reg), {"trades": 0, "pnl": 0.0, "win_rate": math.nan})
            entry["days"] = len(r)
            entry["daily_pnl"] = float(r.sum())
    return Metrics(
        start_equity=start, end_equity=end, total_pnl=end - start, total_return=total_return, cagr=cagr,
        ann_vol=ann_vol, sharpe=sharpe, sortino=sortino, calmar=calmar, max_drawdown=mdd,
        max_drawdown_days=max_drawdown_duration(eq), trades=len(trades),
        win_rate=float(len(wins) / len(pnl)) if len(pnl) else math.nan,
        profit_factor=float(wins.sum() / gross_loss) if gross_loss > 0 else (math.inf if len(wins) else math.nan),
        avg_win=float(wins.mean()) if len(wins) else math.nan,
        avg_loss=float(losses.mean()) if len(losses) else math.nan,
        expectancy=float(pnl.mean()) if len(pnl) else math.nan,
        exposure=float(np.mean(exposure_days)) if exposure_days is not None and len(exposure_days) else math.nan,
        premium_capture=float(pnl.sum() / credit) if credit > 0 else math.nan,
        fees=float(fees),
        avg_days_held=float(np.mean([t.days_held for t in trades])) if trades else math.nan,
        max_bp_used=bp_max, avg_bp_used=bp_avg,
        per_regime=per_regime,
    )


def monthly_returns(dates: np.ndarray, equity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(months as ``datetime64[M]``, return of each month from the previous month's last equity)."""
    d = np.asarray(dates).astype("datetime64[M]")
    eq = np.asarray(equity, float)
    if len(eq) == 0:
        return np.array([], dtype="datetime64[M]"), np.array([])
    months, last_idx = np.unique(d[::-1], return_index=True)
    last_idx = len(d) - 1 - last_idx
    month_end = eq[last_idx]
    prev = np.r_[eq[0], month_end[:-1]]
    return months, month_end / prev - 1.0
