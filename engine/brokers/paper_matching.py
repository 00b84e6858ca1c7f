"""Matching on the paper exchange: when a working order fills and at what prices (the fill model in
:mod:`engine.brokers.paper_exchange`'s docstring) — stops triggered at the mark, the touch plus slippage for takers,
resting limits at their limit, a combo's net spread over its legs, fees charged per fill.

A layer of :class:`~engine.brokers.paper_exchange.PaperExchange` over
:class:`~engine.brokers.paper_validation.OrderChecks`.
"""

from __future__ import annotations

import math
from decimal import Decimal

from engine.brokers.fees import to_cents
from engine.brokers.paper_book import _PRICE_Q, _Z, ExecutionReport, ReportKind, _Working
from engine.brokers.paper_validation import OrderChecks
from engine.model import Fill, Option, OrderStatus, OrderType, Position, net_price, stop_triggered


class Matching(OrderChecks):
    """Fills working orders against the latest quotes (see the module docstring)."""

    # ---- matching -----------------------------------------------------------------------------
    def _match(self, underlying: str) -> list[ExecutionReport]:
        if not self.working:
            return []
        reports: list[ExecutionReport] = []
        for w in list(self.working.values()):
            if any(ref[1] == underlying for ref in w.refs):
                reports.extend(self._try_fill(w, aggressive=False))
        return reports

    def _match_stock(self, symbol: str) -> list[ExecutionReport]:
        if not self.working:
            return []
        reports: list[ExecutionReport] = []
        for w in list(self.working.values()):
            if any(ref[0] == "stk" and ref[1] == symbol for ref in w.refs):
                reports.extend(self._try_fill(w, aggressive=False))
        return reports

    def _stop_net_mark(self, w: _Working) -> float:
        """The order's net price at the mid of each leg's two-sided quote; NaN when a leg has none."""
        net = 0.0
        for weight, ref in zip(w.weights, w.refs, strict=True):
            if ref[0] == "opt" and (ref[2] < 0 or ref[1] not in self._books):
                return math.nan
            bid, ask, _, _ = self._touch(ref)
            if ref[0] == "stk" and not (math.isfinite(bid) and math.isfinite(ask)):
                px = self._und_price.get(ref[1], math.nan)
            elif math.isfinite(bid) and math.isfinite(ask) and 0 <= bid <= ask and ask > 0:
                px = 0.5 * (bid + ask)
            else:
                return math.nan
            net += weight * px
        return net

    def _try_fill(self, w: _Working, *, aggressive: bool) -> list[ExecutionReport]:
        o = w.order
        if o.order_type.is_stop and not w.triggered:
            assert o.stop_price is not None  # validated at submit
            mark = self._stop_net_mark(w)
            if not (math.isfinite(mark) and stop_triggered(o.stop_price, mark)):
                return []
            w.triggered = True
            aggressive = True  # the order the trigger releases takes the touch, as a new order would
        net = 0.0
        touches: list[float] = []
        avail = math.inf
        spreads: list[float] = []
        floor_legs: dict[int, float] = {}  # leg index -> the venue's minimum price (a no-bid long sold)
        for i, (sign, ratio, weight, ref) in enumerate(zip(w.signs, w.ratios, w.weights, w.refs, strict=True)):
            if ref[0] == "opt" and (ref[2] < 0 or ref[1] not in self._books):
                return []
            bid, ask, bsz, asz = self._touch(ref)
            px = ask if sign > 0 else bid
            if sign < 0 and ref[0] == "opt" and math.isfinite(px) and px <= 0:
                if not self._closes_long(w, i, ratio):
                    return []  # nobody bids: an opening sell (or a short beyond the long) has no buyer
                # a long option nobody bids for is sold at the venue's minimum price, one tick
                # (docs/trading-rules.md): the exit of a spread is never stuck on its worthless wing
                px = float(self.tick_size(w.instruments[i], _Z))  # type: ignore[arg-type]
                floor_legs[i] = px
                bsz = math.inf
            if not math.isfinite(px) or px < 0:
                return []
            touches.append(px)
            spreads.append(ask - bid if math.isfinite(ask - bid) else 0.0)
            net += weight * px
            size = asz if sign > 0 else bsz
            if math.isfinite(size):
                avail = min(avail, size // ratio)
        is_market = o.order_type in (OrderType.MARKET, OrderType.STOP)
        limit = float(o.limit_price) if o.limit_price is not None and not is_market else math.inf
        if not is_market and net > limit + 1e-9:
            return []
        qty = o.remaining_quantity
        if self.config.partial_fills:
            if not math.isfinite(avail):
                avail = qty
            qty = int(min(qty, avail))
            if qty <= 0:
                return []
        # prices per leg: at the touch plus slippage for takers; resting limits fill at their limit
        if aggressive or is_market:
            leg_px = [px if i in floor_legs else self._slipped(px, sign, spread, ref)
                      for i, (px, sign, spread, ref) in enumerate(zip(touches, w.signs, spreads, w.refs, strict=True))]
            net_px = sum(wt * p for wt, p in zip(w.weights, leg_px, strict=True))
            if not is_market and net_px > limit + 1e-9:
                leg_px = self._allocate(touches, w, limit)
        else:
            leg_px = self._allocate(touches, w, limit)
        return [self._execute(w, qty, leg_px)]

    def _closes_long(self, w: _Working, i: int, ratio: int) -> bool:
        """Whether leg ``i`` of ``w`` sells no more of an option than the account holds long."""
        pos = self.positions.get(w.keys[i])
        return pos is not None and pos.quantity >= ratio * w.order.remaining_quantity

    def _slipped(self, px: float, sign: int, spread: float, ref: tuple[str, str, int]) -> float:
        s = self.config.slippage
        if s.model == "none" or s.value == 0:
            return px
        if s.model == "ticks":
            tick = 0.01 if ref[0] == "stk" else float(self.tick_size(self._instrument_at(ref), Decimal(str(px))))
            extra = s.value * tick
        elif s.model == "spread_fraction":
            extra = s.value * max(spread, 0.0)
        else:
            extra = px * s.value / 100.0
        return max(px + sign * extra, 0.0)

    def _instrument_at(self, ref: tuple[str, str, int]) -> Option:
        book = self._books[ref[1]]
        return book.chain.option(ref[2])

    def _allocate(self, touches: list[float], w: _Working, net_target: float) -> list[float]:
        """Leg prices summing (with the legs' net-price weights) to ``net_target``: the difference from the touch
        goes to the option leg with the largest price (kept non-negative); shares stay at the touch, as a mixed
        combo fills on the floor (the stock leg prints at the market, the options absorb the net)."""
        prices = list(touches)
        net_touch = sum(wt * p for wt, p in zip(w.weights, touches, strict=True))
        diff = net_target - net_touch
        if abs(diff) < 1e-12:
            return prices
        options = [i for i, ref in enumerate(w.refs) if ref[0] == "opt"]
        ranked = sorted(options or range(len(prices)), key=lambda i: -prices[i])
        for i in ranked:
            new = prices[i] + diff / w.weights[i]
            if new >= 0:
                prices[i] = new
                return prices
        i = ranked[0]
        prices[i] = max(prices[i] + diff / w.weights[i], 0.0)
        return prices

    def _execute(self, w: _Working, qty: int, leg_px: list[float]) -> ExecutionReport:
        o = w.order
        now = self.now
        fills: list[Fill] = []
        changed: list[Position] = []
        fee_legs: list[tuple[int, object, int, Decimal, int]] = []
        dec_px = [Decimal(str(round(p, 4))).quantize(_PRICE_Q) for p in leg_px]
        for i, leg in enumerate(o.legs):
            inst = w.instruments[i]
            dq = leg.side.sign * leg.ratio * qty
            pos = self.positions.get(w.keys[i])
            held = pos.quantity if pos else 0
            closing = min(abs(dq), abs(held)) if held * dq < 0 else 0
            fee_legs.append((i, inst, abs(dq), dec_px[i], abs(dq) - closing))
        commissions = w.fees.charge(self.fees, fee_legs)
        proj = self._projected
        reuse = (proj is not None and proj[0] == o.order_id and proj[1] == qty == o.remaining_quantity
                 and all((self._pos_version.get(u, 0), self._mkt_version.get(u, 0)) == v for u, v in proj[2].items()))
        for i, leg in enumerate(o.legs):
            inst = w.instruments[i]
            dq = leg.side.sign * leg.ratio * qty
            fee = commissions[i] + self.fees.pass_through(inst, abs(dq), dec_px[i], dq < 0)
            fill = Fill(fill_id=self._next_id("F"), order_id=o.order_id, instrument=inst, quantity=dq,
                        price=dec_px[i], ts=now, fee=to_cents(fee), leg_index=i, client_order_id=o.client_order_id)
            changed.append(self._apply(fill, w.keys[i]))
            fills.append(fill)
        filled = o.filled_quantity + qty
        net = net_price(o.legs, dec_px)
        prev_avg = o.avg_fill_price or _Z
        avg = ((prev_avg * o.filled_quantity + net * qty) / filled).quantize(_PRICE_Q)
        status = OrderStatus.FILLED if filled >= o.quantity else OrderStatus.PARTIALLY_FILLED
        if reuse:
            # positions and marks are those the projection saw (only this fill moved them): it is exact
            assert proj is not None
            for u, value in proj[3].items():
                self._req_cache[u] = (self._pos_version.get(u, 0), self._mkt_version.get(u, 0), value)
        self._projected = None
        w.order = o.evolve(status=status, filled_quantity=filled, avg_fill_price=avg, updated_at=now)
        if status is OrderStatus.FILLED:
            self.working.pop(o.order_id, None)
        kind: ReportKind = "filled" if status is OrderStatus.FILLED else "partially_filled"
        return ExecutionReport(kind, w.order, tuple(fills), tuple(changed))

