"""Native brackets: an entry and its two exits that reach a broker one by one and leave for the venue together.

The order group manager (``engine/oms/groups.py``) sends a native bracket's three members through the one order
path (factory → risk → approval → router), each as an ordinary order: the entry tagged ``bracket:<group id>``,
then the profit target and the stop tagged ``oco:<group id>``. A venue that holds exits for an unfilled entry
(tastytrade OTOCO, IBKR parent/child orders) must receive all three in one step, so the adapter holds the members
(:class:`BracketAssembly`) until the set is complete and then places it.

A member that ends before it reaches the adapter (denied, refused at approval) leaves the others held: the group
manager then cancels the whole group, and a cancel takes a held member back without a broker call. Nothing is
ever sent with a part of its bracket missing — an entry without its stop is not what was approved.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.model import Order, oco_group_of
from engine.model.orders import NATIVE_BRACKET_ID_PREFIX, bracket_group_of

__all__ = ["BracketAssembly", "BracketSet", "bracket_of"]


def bracket_of(order: Order) -> tuple[str, str] | None:
    """``(group id, role)`` of a native bracket member (role ``entry`` or ``exit``), or None: an exit is an
    ``oco:`` member whose group id marks a native bracket (``NATIVE_BRACKET_ID_PREFIX``)."""
    gid = bracket_group_of(order.tag)
    if gid is not None:
        return gid, "entry"
    gid = oco_group_of(order.tag)
    return (gid, "exit") if gid is not None and gid.startswith(NATIVE_BRACKET_ID_PREFIX) else None


@dataclass
class BracketSet:
    """The members of one native bracket that have reached the adapter so far."""

    group_id: str
    entry: Order | None = None
    exits: list[Order] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.entry is not None and len(self.exits) == 2

    def members(self) -> list[Order]:
        return ([self.entry] if self.entry is not None else []) + self.exits


class BracketAssembly:
    """Holds native bracket members per group until the entry and both exits are in."""

    def __init__(self) -> None:
        self._sets: dict[str, BracketSet] = {}

    @staticmethod
    def claims(order: Order) -> bool:
        """True when ``order`` is a native bracket member; any other ``oco:`` order is an ordinary
        one-cancels-other member."""
        return bracket_of(order) is not None

    def offer(self, order: Order) -> BracketSet | None:
        """Take ``order`` in; the complete set (removed from the holds) once it is, else None (held)."""
        found = bracket_of(order)
        if found is None:
            raise ValueError(f"order {order.client_order_id} is not a native bracket member (tag {order.tag!r})")
        gid, role = found
        s = self._sets.setdefault(gid, BracketSet(gid))
        if role == "entry":
            s.entry = order
        elif all(o.client_order_id != order.client_order_id for o in s.exits):  # a resend is the same member
            if len(s.exits) == 2:
                raise ValueError(f"native bracket {gid} already has two exits; {order.client_order_id} is a third")
            s.exits.append(order)
        if not s.complete:
            return None
        del self._sets[gid]
        return s

    def release(self, order: Order) -> bool:
        """Take ``order`` back if it is held (cancelled, or ended before its set was complete); True when it was."""
        found = bracket_of(order)
        s = self._sets.get(found[0]) if found is not None else None
        if s is None:
            return False
        if s.entry is not None and s.entry.client_order_id == order.client_order_id:
            s.entry = None
        else:
            kept = [o for o in s.exits if o.client_order_id != order.client_order_id]
            if len(kept) == len(s.exits):
                return False
            s.exits = kept
        if not s.members():
            del self._sets[s.group_id]
        return True

    def held(self) -> list[Order]:
        return [o for s in self._sets.values() for o in s.members()]

    def is_held(self, client_order_id: str) -> bool:
        return any(o.client_order_id == client_order_id for o in self.held())
