"""The strategy budget check: the risk engine's ``strategy_budget`` hook, answered by the strategy host.

Orders of a strategy must reach the account its mode names (every order, closing ones too), and opening orders
must fit its budget: the number of trades it holds or is opening, the capital its active trades may lose (Σ
max loss at their entry checks + this order) and its loss today. A closing order is never held back by a
budget: a budget limits what a strategy may add, not how it gets out. Each denial names the strategy and the
limit with the numbers, as the Strategies panel and the order's denial show them.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from engine.backtest.ledger import TradeLedger
from engine.model import Order
from engine.strategies.base import ManagedStrategy

if TYPE_CHECKING:
    from engine.risk.engine import CheckResult
    from engine.strategies.host import Hosted, StrategyHost


def check_budget(host: StrategyHost, order: Order, reducing: bool, risk: float) -> list[CheckResult]:
    """The checks of ``order`` against its strategy's account and budget (none for an order of no strategy).
    ``risk`` is the order's max loss in dollars as the risk engine computed it; an opening order that passes
    every check commits it to the strategy's capital until its trade is closed or never filled."""
    from engine.risk.engine import CheckResult

    hs = host.hosted.get(order.strategy_id or "")
    if hs is None or hs.entry is None:
        return []
    stage = "portfolio_risk"
    problem = host._account_problem(hs, order)
    out = [CheckResult("strategy_account", problem is None, stage=stage,
                       message=problem or f"strategy {hs.strategy_id} on its {hs.mode} account")]
    if reducing:
        return out
    b = hs.entry.budget
    tag = TradeLedger.trade_tag(order)
    if b.max_open_trades is not None:
        n = open_trade_count(hs, exclude=tag)
        ok = n < b.max_open_trades
        out.append(CheckResult("strategy_open_trades", ok, n + 1, b.max_open_trades, "trades", stage=stage,
                               message=f"strategy {hs.strategy_id}: {n + 1} open trades "
                                       f"{'within' if ok else 'exceeds'} its budget of {b.max_open_trades}"))
    if b.capital is not None:
        used = committed(hs, exclude=tag)
        need = risk if math.isfinite(risk) else math.inf
        ok = used + need <= b.capital + 1e-9
        out.append(CheckResult("strategy_capital", ok, used + need, b.capital, "$", stage=stage,
                               message=f"strategy {hs.strategy_id}: max loss ${used:,.2f} committed + "
                                       f"${need:,.2f} this order {'within' if ok else 'exceeds'} its capital "
                                       f"${b.capital:,.2f}"))
    if b.max_loss_per_day is not None:
        today = host.pnl(hs)[0]
        ok = today > -b.max_loss_per_day
        out.append(CheckResult("strategy_daily_loss", ok, -today, b.max_loss_per_day, "$", stage=stage,
                               message=f"strategy {hs.strategy_id}: P&L today ${today:,.2f} "
                                       f"{'within' if ok else 'has reached'} its max loss per day "
                                       f"${b.max_loss_per_day:,.2f}"))
    if all(r.passed for r in out) and math.isfinite(risk):
        hs.entry_risk[tag] = risk
    return out


def active_tags(hs: Hosted) -> set[str]:
    """Tags of the trades the strategy holds or is opening: its own books when it keeps them, else its ledger's."""
    s = hs.strategy
    if isinstance(s, ManagedStrategy):
        return {t.tag for t in s.active_trades()}
    return {t.tag for t in hs.ledger.open()}


def open_trade_count(hs: Hosted, exclude: str = "") -> int:
    return len(active_tags(hs) - {exclude})


def committed(hs: Hosted, exclude: str = "") -> float:
    """Dollars of max loss the strategy's active trades committed at their entry checks; trades closed or never
    filled give theirs back here."""
    active = active_tags(hs) - {exclude}
    for tag in [t for t in hs.entry_risk if t not in active]:
        del hs.entry_risk[tag]  # closed or never filled: its capital is free again
    return float(sum(hs.entry_risk.values()))


__all__ = ["active_tags", "check_budget", "committed", "open_trade_count"]
