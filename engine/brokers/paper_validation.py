"""What an order may do on the paper exchange: its validation (contracts listed and live, prices on the venue's
tick and signed like the side, stops, cash-account shorts) and the buying power it needs (the margin model of
:mod:`engine.brokers.margin`, the same arithmetic the risk engine runs), and the preview built from both.

A layer of :class:`~engine.brokers.paper_exchange.PaperExchange` over :class:`~engine.brokers.paper_book.ExchangeBook`.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from decimal import Decimal
from functools import reduce
from math import gcd

from engine.brokers.base import OrderPreview
from engine.brokers.fees import OrderFeeTracker, to_cents
from engine.brokers.margin import Holding, Trade, order_effect
from engine.brokers.paper_book import _Z, ExchangeBook
from engine.market.simulated.ticks import COMBO_TICK
from engine.model import Equity, Index, Instrument, Option, Order, OrderType, Position, is_on_tick


class OrderChecks(ExchangeBook):
    """Validation, buying power and previews (see the module docstring)."""

    # ---- validation ---------------------------------------------------------------------------
    def _validate(self, order: Order, *, check_bp: bool = True,
                  keys: list[str] | None = None) -> tuple[str, list[tuple[str, str, int]]]:
        if check_bp and order.order_id in self.working:
            return f"order id {order.order_id} is already working", []
        if not order.legs:
            return "order has no legs", []
        if not isinstance(order.quantity, int) or order.quantity <= 0:
            return f"quantity must be a positive whole number, got {order.quantity}", []
        keys = keys if keys is not None else [leg.instrument.key for leg in order.legs]
        if len(set(keys)) != len(keys):
            return "the same contract appears in two legs", []
        if len(order.legs) > 1:
            g = reduce(gcd, [leg.ratio for leg in order.legs])
            if g > 1:
                ratios = ":".join(str(leg.ratio) for leg in order.legs)
                return (f"leg ratios {ratios} do not reduce: divide them by {g} and multiply the quantity "
                        f"instead"), []
        refs: list[tuple[str, str, int]] = []
        for leg, key in zip(order.legs, keys, strict=True):
            inst = leg.instrument
            if isinstance(inst, Index):
                return f"{inst.symbol} is an index and cannot be traded; trade its options", []
            if isinstance(inst, Option):
                und = self._symbol_index.get(key)
                if und is None:
                    known = inst.underlying in self._books
                    where = f"the {inst.underlying} chain" if known else f"any chain (no market data for {inst.underlying})"
                    return f"unknown contract {key}: not listed in {where}", []
                book = self._books[und]
                row = book.rows[key]
                if book.expiry_s[row] <= self.now.timestamp():
                    exp = datetime.fromtimestamp(int(book.expiry_s[row]), tz=UTC)
                    return f"contract {key} expired at {exp:%Y-%m-%d %H:%M} UTC", []
                refs.append(("opt", und, row))
            else:
                if inst.symbol not in self._und_price:
                    return f"no market data for {inst.symbol}", []
                refs.append(("stk", inst.symbol, -1))
        if order.order_type.is_stop:
            problem = self._stop_problem(order)
            if problem:
                return problem, refs
        if order.order_type.has_limit:
            problem = self._price_problem(order)
            if problem:
                return problem, refs
        elif order.order_type is OrderType.MARKET:
            for leg, ref in zip(order.legs, refs, strict=True):
                bid, ask, _, _ = self._touch(ref)
                side_px = ask if leg.side.sign > 0 else bid
                if not math.isfinite(side_px) or side_px < 0 or (leg.side.sign < 0 and side_px <= 0 and ref[0] == "opt"):
                    which = "ask" if leg.side.sign > 0 else "bid"
                    return f"market order needs a quote: no {which} for {leg.instrument.key}", refs
        problem = self._cash_account_problem(order)
        if problem:
            return problem, refs
        if check_bp and self.config.check_buying_power:
            problem = self._buying_power_problem(order, refs)
            if problem:
                return problem, refs
        return "", refs

    def _cash_account_problem(self, order: Order, quantity: int | None = None) -> str:
        """A cash account cannot go short: selling more than is held is refused."""
        if self.config.account_type != "cash":
            return ""
        q = order.remaining_quantity if quantity is None else quantity
        for leg in order.legs:
            pos = self.positions.get(leg.instrument.key)
            held = pos.quantity if pos else 0
            if leg.side.sign < 0 and held - leg.ratio * q < 0:
                return f"cash account: selling {leg.ratio * q} {leg.instrument.key} would open a short position"
        return ""

    def _stop_problem(self, order: Order) -> str:
        """A stop's trigger: present, finite, signed like the side (as a limit), on the venue's tick."""
        stop = order.stop_price
        if stop is None or not stop.is_finite():
            return f"a {order.order_type.value.replace('_', '-')} order needs a finite stop price, got {stop}"
        if len(order.legs) == 1:
            leg = order.legs[0]
            if (leg.side.sign > 0) != (stop > 0) or stop == 0:
                want = "positive (a debit)" if leg.side.sign > 0 else "negative (a credit: -1.00 sells at 1.00)"
                return f"a single-leg {leg.side.value} stop must be {want}, got {stop}"
            inst = leg.instrument
            tick = self.tick_size(inst, abs(stop)) if isinstance(inst, Option) else inst.tick_size
        else:
            tick = COMBO_TICK
        if not is_on_tick(stop, tick):
            return f"stop price {stop} is not on the {tick} tick"
        return ""

    def _price_problem(self, order: Order) -> str:
        price = order.limit_price
        if price is None:
            return "limit order needs a limit price"
        if not price.is_finite():
            return f"limit price {price} is not a number"
        if len(order.legs) == 1:
            leg = order.legs[0]
            inst = leg.instrument
            # signed like every net price: a buy is a debit (> 0), a sell a credit (< 0)
            if leg.side.sign > 0 and price <= 0:
                return f"a single-leg buy limit must be positive (a debit), got {price}"
            if leg.side.sign < 0 and price >= 0:
                return f"a single-leg sell limit must be negative (a credit: -1.50 sells at 1.50), got {price}"
            tick = self.tick_size(inst, abs(price)) if isinstance(inst, Option) else inst.tick_size
        else:
            tick = COMBO_TICK
        if not is_on_tick(price, tick):
            return f"limit price {price} is not on the {tick} tick"
        return ""

    # ---- buying power -------------------------------------------------------------------------
    def _positions_of(self, underlying: str) -> dict[str, Position]:
        return {k: self.positions[k] for k in self._und_keys.get(underlying, ()) if k in self.positions}

    def _requirement_for(self, underlying: str, positions: dict[str, Position]) -> float:
        """Margin of ``underlying``'s holdings within ``positions`` (pass only that underlying's for speed)."""
        return self.margin.group_requirement(underlying, self._und_price.get(underlying),
                                             self._holdings(underlying, positions).values())

    def _holdings(self, underlying: str, positions: dict[str, Position]) -> dict[str, Holding]:
        """The margin model's view of ``underlying``'s options and shares within ``positions``."""
        out: dict[str, Holding] = {}
        for key, p in positions.items():
            inst = p.instrument
            if isinstance(inst, Option) and inst.underlying == underlying:
                out[key] = self._holding(key, inst, p.quantity)
            elif isinstance(inst, Equity) and inst.symbol == underlying:
                out[key] = self._holding(key, inst, p.quantity)
        return out

    def _holding(self, key: str, inst: Instrument, quantity: int) -> Holding:
        if isinstance(inst, Option):
            return Holding(quantity, inst.multiplier, self._mark(key, inst), True, float(inst.strike), inst.is_call)
        return Holding(quantity, inst.multiplier, self._mark(key, inst), False)

    def _underlyings_held(self) -> set[str]:
        return {u for u, keys in self._und_keys.items() if keys}

    def requirement(self) -> float:
        """Total option margin requirement (dollars); cached per underlying until its positions or quotes change."""
        total = 0.0
        for u in self._underlyings_held():
            key = (self._pos_version.get(u, 0), self._mkt_version.get(u, 0))
            hit = self._req_cache.get(u)
            if hit is not None and hit[:2] == key:
                total += hit[2]
                continue
            value = self._requirement_for(u, self._positions_of(u))
            self._req_cache[u] = (*key, value)
            total += value
        return total

    def requirement_by_underlying(self) -> dict[str, float]:
        """Option margin requirement per underlying held (dollars): the account's breakdown, so the Activity
        panel shows the very numbers :meth:`requirement` adds up (the same per-underlying cache)."""
        self.requirement()
        return {u: self._req_cache[u][2] for u in sorted(self._underlyings_held()) if u in self._req_cache}

    def _stock_values(self, positions: dict[str, Position]) -> tuple[float, float]:
        long_v = short_v = 0.0
        # a stock position is keyed by its symbol, which is also an underlying name: only those can be stock
        for key in self._und_keys if positions is self.positions else positions:
            p = positions.get(key)
            if p is not None and isinstance(p.instrument, Equity):
                v = p.quantity * self._mark(key, p.instrument)
                if v >= 0:
                    long_v += v
                else:
                    short_v -= v
        return long_v, short_v

    def _stock_margin(self) -> float:
        return 1.0 if self.config.account_type == "cash" else self.config.stock_margin

    def buying_power(self) -> float:
        long_v, short_v = self._stock_values(self.positions)
        return self.margin.buying_power(float(self.cash), long_v, short_v, self.requirement())

    def _projection(self, order: Order, refs: list[tuple[str, str, int]]) -> tuple[float, float, float, float] | None:
        """(buying power now, after a fill at the touch, requirement now, after) or None without quotes.

        The arithmetic is :func:`engine.brokers.margin.order_effect`, the same the risk engine runs."""
        est = self._estimate_fill(order, refs)
        if est is None:
            return None
        qty = order.remaining_quantity
        trades: list[Trade] = []
        groups: dict[str, dict[str, Holding]] = {}
        spots: dict[str, float | None] = {}
        for leg, ref, price in zip(order.legs, refs, est, strict=True):
            inst = self._canonical(leg.instrument, ref)
            und = self._und_of(inst)
            if und not in groups:
                groups[und] = self._holdings(und, self._positions_of(und))
                spots[und] = self._und_price.get(und)
            trades.append(Trade(inst.key, und, self._holding(inst.key, inst, 0), leg.side.sign * leg.ratio * qty,
                                price))
        req_now = self.requirement()  # refreshes the per-underlying cache used just below
        before = {u: self._req_cache[u][2] for u in groups if u in self._req_cache
                  and self._req_cache[u][:2] == (self._pos_version.get(u, 0), self._mkt_version.get(u, 0))}
        effect = order_effect(self.margin, groups, spots, trades, requirements_before=before)
        self._projected = (order.order_id, qty,
                           {u: (self._pos_version.get(u, 0), self._mkt_version.get(u, 0)) for u in groups},
                           effect.requirements_after)
        req_after = req_now - effect.requirement_before + effect.requirement_after
        long_v, short_v = self._stock_values(self.positions)
        bp_now = self.margin.buying_power(float(self.cash), long_v, short_v, req_now)
        return bp_now, bp_now + effect.buying_power_change, req_now, req_after

    def _buying_power_problem(self, order: Order, refs: list[tuple[str, str, int]]) -> str:
        proj = self._projection(order, refs)
        if proj is None:
            return ""
        bp_now, bp_after, _, _ = proj
        if bp_after < 0 and bp_after < bp_now - 1e-6:
            need = bp_now - bp_after
            return f"insufficient buying power: the order needs ${need:,.2f}, ${max(bp_now, 0.0):,.2f} available"
        return ""

    def preview(self, order: Order) -> OrderPreview:
        """What ``order`` would do if filled at the touch now: buying-power effect, fees, margin change."""
        reason, refs = self._validate(order, check_bp=False)
        if reason:
            return OrderPreview(errors=(reason,), source="estimate")
        proj = self._projection(order, refs)
        est = self._estimate_fill(order, refs)
        fee = _Z
        if est is not None:
            tracker = OrderFeeTracker()
            legs: list[tuple[int, object, int, Decimal, int]] = []
            for i, (leg, ref, px) in enumerate(zip(order.legs, refs, est, strict=True)):
                inst = self._canonical(leg.instrument, ref)
                dq = leg.side.sign * leg.ratio * order.quantity
                pos = self.positions.get(inst.key)
                held = pos.quantity if pos else 0
                closing = min(abs(dq), abs(held)) if held * dq < 0 else 0
                legs.append((i, inst, abs(dq), Decimal(str(px)), abs(dq) - closing))
                fee += self.fees.pass_through(inst, abs(dq), Decimal(str(px)), dq < 0)
            fee += sum(tracker.charge(self.fees, legs).values(), _Z)
        warnings: tuple[str, ...] = ()
        if proj is None:
            return OrderPreview(commission=to_cents(fee), warnings=("no quotes: buying power not estimated",))
        bp_now, bp_after, req_now, req_after = proj
        if bp_after < 0:
            warnings = (f"buying power would be ${bp_after:,.2f}",)
        return OrderPreview(buying_power_effect=Decimal(str(round(bp_after - bp_now, 2))), commission=to_cents(fee),
                            margin_change=Decimal(str(round(req_after - req_now, 2))), warnings=warnings,
                            source="estimate")

    def _estimate_fill(self, order: Order, refs: list[tuple[str, str, int]]) -> list[float] | None:
        """Per-leg price estimate: the touch (or the limit spread over the legs when no quote)."""
        out = []
        for leg, ref in zip(order.legs, refs, strict=True):
            bid, ask, _, _ = self._touch(ref)
            px = ask if leg.side.sign > 0 else bid
            if not math.isfinite(px):
                if len(order.legs) == 1 and order.limit_price is not None:
                    px = abs(float(order.limit_price))
                else:
                    return None
            out.append(px)
        return out

