"""tastytrade complex orders: an engine one-cancels-other pair goes out as one native OCO.

The order group manager (``engine/oms/groups.py``) sends each member of an OCO pair — an OCO group, or a
bracket's two exits once its entry has filled — as an ordinary order through the one order path, one after the
other, every member tagged ``oco:<group id>``. tastytrade takes an OCO only as one request
(``POST /accounts/{n}/complex-orders`` with ``type`` OCO and both orders in ``orders``), after which the venue
itself cancels the sibling of a fill, even while Optiondesk is not running. So the adapter holds the first member
that reaches it (:class:`OcoPairing`) until its sibling does, then places both at once. A sibling that ends before
it reaches the adapter (denied by our risk engine, refused at approval, cancelled, rejected) releases the held
member, which then goes out alone: the engine's own one-cancels-other logic is all the pair has left, as before.

While held, a member is ``SUBMITTED`` for the OMS and listed among the adapter's open orders, so a
reconciliation neither rejects it nor resends it; a cancel takes it back without a broker call.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Literal

from engine.model import Order, oco_group_of

#: groups remembered as "a member ended before reaching us": their other member goes out alone
_SOLO_MEMORY = 1000


@dataclass(frozen=True, slots=True)
class Pairing:
    """What to do with an OCO member that reached the adapter."""

    action: Literal["alone", "hold", "pair"]
    sibling: Order | None = None  # with ``pair``: the held member to place together with this one


class OcoPairing:
    """Holds the first member of each one-cancels-other group until its sibling arrives or ends."""

    def __init__(self) -> None:
        self._held: dict[str, Order] = {}
        self._solo: OrderedDict[str, None] = OrderedDict()

    def offer(self, order: Order) -> Pairing:
        """The member ``order`` reached the adapter: hold it, pair it with its held sibling, or send it alone
        (no group tag, or its sibling already ended without reaching the broker)."""
        gid = oco_group_of(order.tag)
        if gid is None:
            return Pairing("alone")
        if gid in self._solo:
            del self._solo[gid]
            return Pairing("alone")
        held = self._held.get(gid)
        if held is None or held.client_order_id == order.client_order_id:
            self._held[gid] = order
            return Pairing("hold")
        del self._held[gid]
        return Pairing("pair", held)

    def ended(self, order: Order) -> Order | None:
        """A member ended without reaching the broker with its sibling: the held sibling to send alone, if any.

        The held member itself ending (cancelled while held) only forgets it; a member ending while nothing is
        held marks the group so that its other member, when it comes, goes out alone."""
        gid = oco_group_of(order.tag)
        if gid is None:
            return None
        held = self._held.get(gid)
        if held is None:
            self._solo[gid] = None
            while len(self._solo) > _SOLO_MEMORY:
                self._solo.popitem(last=False)
            return None
        if held.client_order_id == order.client_order_id:
            del self._held[gid]
            return None
        del self._held[gid]
        return held

    def release(self, order: Order) -> bool:
        """Take ``order`` back if it is held (a cancel before it was placed); True when it was."""
        gid = oco_group_of(order.tag)
        if gid is None:
            return False
        held = self._held.get(gid)
        if held is None or held.client_order_id != order.client_order_id:
            return False
        del self._held[gid]
        return True

    def sibling_of(self, order: Order) -> Order | None:
        """The held member ``order`` would pair with (its preview is then the pair's), without taking it."""
        gid = oco_group_of(order.tag)
        held = self._held.get(gid) if gid is not None else None
        return held if held is not None and held.client_order_id != order.client_order_id else None

    def held(self) -> list[Order]:
        return list(self._held.values())

    def is_held(self, client_order_id: str) -> bool:
        return any(o.client_order_id == client_order_id for o in self._held.values())


@functools.cache
def _oco_model() -> Any:
    """The SDK model of a generic OCO (two orders of any type). The SDK's own ``OCOOrder`` insists on a limit
    and a stop; an engine OCO group may pair any two orders, so this one lists them as they are."""
    from tastytrade.order import AnyOrder, BaseComplexOrder, ComplexOrderType

    class GenericOco(BaseComplexOrder):
        type: ComplexOrderType = ComplexOrderType.OCO
        orders: list[AnyOrder]

    return GenericOco


def oco_request(first: Any, second: Any) -> Any:
    """The complex-order request (``type`` OCO, ``orders`` [first, second]) for two SDK orders."""
    return _oco_model()(orders=[first, second])


@functools.cache
def _otoco_model() -> Any:
    """The SDK model of a native bracket: the SDK's ``OTOCOOrder`` wants a limit target and a stop-limit loss, while
    a bracket's stop may be a plain stop, so this one lists the trigger and both exits as they are."""
    from tastytrade.order import AnyOrder, BaseComplexOrder, ComplexOrderType

    class GenericOtoco(BaseComplexOrder):
        type: ComplexOrderType = ComplexOrderType.OTOCO
        trigger_order: AnyOrder
        orders: list[AnyOrder]

    return GenericOtoco


def otoco_request(entry: Any, target: Any, stop: Any) -> Any:
    """The complex-order request of a native bracket (``type`` OTOCO, ``trigger-order`` the entry, ``orders``
    [target, stop]): tastytrade holds the exits as ``Contingent`` until the entry fills, then works them as an OCO."""
    return _otoco_model()(trigger_order=entry, orders=[target, stop])


def members(complex_order: Any) -> list[Any]:
    """Every member order of a placed complex order (the trigger first, when there is one)."""
    trigger = getattr(complex_order, "trigger_order", None)
    return ([trigger] if trigger is not None else []) + list(complex_order.orders or ())
