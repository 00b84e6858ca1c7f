"""Cross-panel links: one :class:`DeskLinks` per engine, shared by every panel built on it.

Panels talk to each other through these signals, so the app does not need to wire pairs of panels:
the chain adds legs to the ticket, the ticket and the positions table feed the payoff panel, and the
chain's underlying/expiry selection drives the smile panel.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

from PySide6 import QtCore

if TYPE_CHECKING:
    from engine.core import Engine


class DeskLinks(QtCore.QObject):
    #: an underlying symbol was selected (chain panel)
    underlying_selected = QtCore.Signal(str)
    #: a panel (the watchlist) asks for an underlying: the chain panel selects it and announces
    #: ``underlying_selected``
    underlying_requested = QtCore.Signal(str)
    #: (underlying, expiry as numpy datetime64[s]) selected in the chain
    expiry_selected = QtCore.Signal(str, object)
    #: one ``engine.model.Leg`` to add to the ticket (chain click)
    leg_requested = QtCore.Signal(object)
    #: a tuple of ``Leg`` replacing the ticket's legs (strategy template, "close position")
    legs_replaced = QtCore.Signal(object)
    #: the ticket changed: dict(legs=tuple[Leg], quantity=int, underlying=str)
    ticket_changed = QtCore.Signal(object)
    #: positions picked for analysis: tuple[engine.model.Position]
    positions_selected = QtCore.Signal(object)
    #: run a backtest of dict(strategy=name, params=dict) in the Backtest panel ("Backtest these parameters" in
    #: the Strategies panel); the window brings the Backtest dock to the front
    backtest_requested = QtCore.Signal(object)

    def __init__(self) -> None:
        super().__init__()
        #: the latest selection, for panels created after it was made
        self.underlying = ""
        self.expiry: object = None
        self.underlying_selected.connect(self._remember_underlying)
        self.expiry_selected.connect(self._remember_expiry)

    def _remember_underlying(self, symbol: str) -> None:
        self.underlying = symbol

    def _remember_expiry(self, underlying: str, expiry: object) -> None:
        self.underlying, self.expiry = underlying, expiry


_LINKS: weakref.WeakKeyDictionary[Any, DeskLinks] = weakref.WeakKeyDictionary()
_LINKS_BY_ID: dict[int, DeskLinks] = {}


def links_for(engine: Engine | None) -> DeskLinks:
    """The :class:`DeskLinks` shared by every panel of ``engine`` (created on first use)."""
    try:
        links = _LINKS.get(engine)
        if links is None:
            links = _LINKS[engine] = DeskLinks()
        return links
    except TypeError:  # engine not weak-referenceable
        return _LINKS_BY_ID.setdefault(id(engine), DeskLinks())
