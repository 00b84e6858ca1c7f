"""The latest chain of one underlying with streamed quotes applied (what several panels read).

``ChainUpdated`` replaces the snapshot; ``QuotesUpdated`` rows (indices into the current snapshot) update
bid/ask in place; ``UnderlyingUpdated`` moves the spot. :meth:`snapshot` returns an immutable
``OptionChain`` with the current quotes and spot.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from engine.bus.events import ChainUpdated, QuotesUpdated, UnderlyingUpdated
from engine.model import OptionChain
from widgets import engine_queries as eq
from widgets.base import EventBatch

if TYPE_CHECKING:
    from engine.core import Engine


class LiveChain:
    def __init__(self, engine: Engine | None = None, underlying: str = "") -> None:
        self.engine = engine
        self.underlying = ""
        self.chain: OptionChain | None = None
        self.bid = np.array([])
        self.ask = np.array([])
        self.spot = math.nan
        self.version = 0
        if underlying:
            self.select(underlying)

    def select(self, underlying: str) -> bool:
        """Follow ``underlying``; loads the feed's cached snapshot. True when the underlying changed."""
        if underlying == self.underlying:
            return False
        self.underlying = underlying
        self.chain = None
        self.bid = np.array([])
        self.ask = np.array([])
        self.spot = math.nan
        cached = eq.last_chain(self.engine, underlying) if self.engine is not None else None
        if cached is not None:
            self.set_chain(cached)
        self.version += 1
        return True

    def reload(self) -> None:
        """Drop the snapshot and re-read the same underlying from the engine's (possibly new) feed."""
        underlying, self.underlying = self.underlying, ""
        if underlying:
            self.select(underlying)

    def set_chain(self, chain: OptionChain) -> None:
        self.chain = chain
        self.bid = np.array(chain.bid, dtype=float, copy=True)
        self.ask = np.array(chain.ask, dtype=float, copy=True)
        self.spot = chain.spot
        self.version += 1

    def apply(self, batch: EventBatch) -> bool:
        """Apply a batch; True when anything of this underlying changed."""
        if not self.underlying:
            return False
        changed = False
        ev = batch.latest(ChainUpdated).get(self.underlying)
        if ev is not None:
            self.set_chain(ev.chain)
            changed = True
        if self.chain is not None:
            n = len(self.bid)
            for q in batch.latest(QuotesUpdated).values():
                if q.underlying != self.underlying:
                    continue
                rows = np.asarray(q.rows, dtype=int)
                if len(rows) and rows.max() < n:
                    self.bid[rows] = q.bid
                    self.ask[rows] = q.ask
                    changed = True
        u = batch.latest(UnderlyingUpdated).get(self.underlying)
        if u is not None and math.isfinite(u.price):
            self.spot = u.price
            changed = True
        if changed:
            self.version += 1
        return changed

    def snapshot(self) -> OptionChain | None:
        if self.chain is None:
            return None
        spot = self.spot if math.isfinite(self.spot) else self.chain.spot
        return self.chain.with_quotes(self.bid.copy(), self.ask.copy(), spot=spot)
