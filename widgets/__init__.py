"""Qt views of the engine: dockable panels, live tables and plots.

``PANELS`` lists the panel classes the app docks (each a :class:`widgets.base.Panel` subclass with
``title`` and ``panel_id``). Panels link to each other through :func:`widgets.links.links_for`
(chain clicks → ticket, ticket/positions → payoff, chain expiry → smile); the app only docks them and
feeds every panel's ``apply_events`` from its bus bridge. Widgets render engine results; no trading logic.

The panel modules (and pyqtgraph and the pricing stack they pull in) load on first use:
``PANEL_SPECS`` names each panel without importing it, so the window can dock and paint its frame
first. ``widgets.PANELS`` and ``widgets.ChainPanel`` etc. import on access.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from widgets.base import Panel


@dataclass(frozen=True)
class PanelSpec:
    """A panel known by id, title and import path; :meth:`load` imports its class."""

    panel_id: str
    title: str
    module: str
    class_name: str

    def load(self) -> type[Panel]:
        cls = getattr(importlib.import_module(self.module), self.class_name)
        if cls.panel_id != self.panel_id:
            raise RuntimeError(f"{self.module}.{self.class_name} has panel_id {cls.panel_id!r}, not {self.panel_id!r}")
        return cls

    @classmethod
    def of(cls, panel_class: type[Panel]) -> PanelSpec:
        return cls(panel_class.panel_id, panel_class.title, panel_class.__module__, panel_class.__name__)


PANEL_SPECS: tuple[PanelSpec, ...] = (
    PanelSpec("chain", "Option chain", "widgets.chain_table", "ChainPanel"),
    PanelSpec("ticket", "Order ticket", "widgets.order_ticket", "TicketPanel"),
    PanelSpec("approvals", "Approvals", "widgets.approvals", "ApprovalPanel"),
    PanelSpec("positions", "Positions", "widgets.positions_view", "PositionsPanel"),
    PanelSpec("orders", "Orders", "widgets.orders_view", "OrdersPanel"),
    PanelSpec("surface", "Smile & surface", "widgets.surface_view", "SurfacePanel"),
    PanelSpec("greeks", "Portfolio Greeks", "widgets.greeks_view", "GreeksPanel"),
    PanelSpec("payoff", "Payoff & risk", "widgets.payoff_view", "PayoffPanel"),
    PanelSpec("pnl", "P&L", "widgets.pnl_view", "PnLPanel"),
    PanelSpec("backtest", "Backtest", "widgets.backtest_runner", "BacktestPanel"),
    PanelSpec("watchlist", "Watchlist", "widgets.watchlist", "WatchlistPanel"),
    PanelSpec("chart", "Chart", "widgets.underlying_chart", "UnderlyingChartPanel"),
    PanelSpec("data", "Data", "widgets.data_panel", "DataPanel"),
    PanelSpec("strategies", "Strategies", "widgets.strategies_panel", "StrategiesPanel"),
    PanelSpec("models", "Models", "widgets.models_panel", "ModelsPanel"),
    PanelSpec("strategy_builder", "Strategy builder", "widgets.strategy_builder", "StrategyBuilderPanel"),
    PanelSpec("activity", "Activity", "widgets.activity_panel", "ActivityPanel"),
)

_CLASSES = {spec.class_name: spec for spec in PANEL_SPECS}
_BASE = {"EventAccumulator", "EventBatch", "Panel", "send_command"}


def __getattr__(name: str) -> Any:
    if name == "PANELS":
        return tuple(spec.load() for spec in PANEL_SPECS)
    if name in _CLASSES:
        return _CLASSES[name].load()
    if name in _BASE:
        return getattr(importlib.import_module("widgets.base"), name)
    raise AttributeError(f"module 'widgets' has no attribute {name!r}")


__all__ = [
    "PANELS", "PANEL_SPECS", "ActivityPanel", "ApprovalPanel", "BacktestPanel", "ChainPanel", "EventAccumulator", "EventBatch",
    "GreeksPanel", "ModelsPanel", "OrdersPanel", "Panel", "PanelSpec", "PayoffPanel", "PnLPanel", "PositionsPanel", "StrategiesPanel", "StrategyBuilderPanel",
    "SurfacePanel", "TicketPanel", "send_command",
]
