"""Qt views of the engine: dockable panels, live tables and plots.

``PANELS`` lists the panel classes the app docks (each a :class:`widgets.base.Panel` subclass with
``title`` and ``panel_id``). Widgets render engine results; they hold no trading logic.
"""

from __future__ import annotations

from widgets.base import EventAccumulator, EventBatch, Panel, send_command
from widgets.chain_table import ChainPanel

PANELS: tuple[type[Panel], ...] = (ChainPanel,)

__all__ = ["PANELS", "EventAccumulator", "EventBatch", "Panel", "send_command"]
