"""Qt views of the engine: dockable panels, live tables and plots.

``PANELS`` lists the panel classes the app docks (each a :class:`widgets.base.Panel` subclass with
``title`` and ``panel_id``). Panels link to each other through :func:`widgets.links.links_for`
(chain clicks → ticket, ticket/positions → payoff, chain expiry → smile); the app only docks them and
feeds every panel's ``apply_events`` from its bus bridge. Widgets render engine results; no trading logic.
"""

from __future__ import annotations

from widgets.approvals import ApprovalPanel
from widgets.backtest_runner import BacktestPanel
from widgets.base import EventAccumulator, EventBatch, Panel, send_command
from widgets.chain_table import ChainPanel
from widgets.greeks_view import GreeksPanel
from widgets.order_ticket import TicketPanel
from widgets.orders_view import OrdersPanel
from widgets.payoff_view import PayoffPanel
from widgets.pnl_view import PnLPanel
from widgets.positions_view import PositionsPanel
from widgets.surface_view import SurfacePanel

PANELS: tuple[type[Panel], ...] = (
    ChainPanel, TicketPanel, ApprovalPanel, PositionsPanel, OrdersPanel, SurfacePanel, GreeksPanel, PayoffPanel,
    PnLPanel, BacktestPanel,
)

__all__ = [
    "PANELS", "ApprovalPanel", "BacktestPanel", "ChainPanel", "EventAccumulator", "EventBatch", "GreeksPanel",
    "OrdersPanel", "Panel", "PayoffPanel", "PnLPanel", "PositionsPanel", "SurfacePanel", "TicketPanel", "send_command",
]
