"""The paper exchange's session clock and option settlement: DAY orders expire at the close (also a close the
exchange did not see), expired options exercise, are assigned, cash-settle or expire worthless, and short calls
may be assigned early before a dividend.

A layer of :class:`~engine.brokers.paper_exchange.PaperExchange` over :class:`~engine.brokers.paper_matching.Matching`.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from engine.brokers.fees import to_cents
from engine.brokers.paper_book import _PRICE_Q, _Z, ExecutionReport
from engine.brokers.paper_matching import Matching
from engine.model import Equity, Fill, Option, OrderStatus, Position, Settlement, TimeInForce
from engine.model.instruments import NEW_YORK


class ExchangeSessions(Matching):
    """Time: session open and close, DAY expiry, option expiration (see the module docstring)."""

    # ---- time: session close, DAY expiry, option expiration -----------------------------------
    def on_time(self, now: datetime, settlement_prices: dict[str, float] | None = None) -> list[ExecutionReport]:
        """Advance the exchange clock: at a session close DAY orders expire; expired options settle."""
        self._now = now
        reports: list[ExecutionReport] = []
        cal = self._cal()
        d = now.astimezone(NEW_YORK).date()
        if self._session != d and cal.is_session(d):
            o, _ = cal.open_close(d)
            if now >= o:
                self._session = d
                self.day_start_equity = self.net_liquidation()
                # DAY orders that lived through a close the exchange did not see (the app was down) expire now;
                # a DAY order placed after the last close (pre-market) is good for this session
                _, previous_close = cal.open_close(cal.previous_session(d))
                reports.extend(self.expire_day_orders(created_before=previous_close))
        last_session = cal.session_on_or_before(d)
        _, close = cal.open_close(last_session)
        if now >= close and self._session_closed != last_session:
            self._session_closed = last_session
            reports.extend(self.expire_day_orders(created_before=close))
        reports.extend(self.settle_expired(now, settlement_prices))
        return reports

    def expire_day_orders(self, created_before: datetime | None = None) -> list[ExecutionReport]:
        """Expire working DAY orders (only those created before ``created_before`` when given)."""
        out = []
        for oid, w in list(self.working.items()):
            if w.order.tif is TimeInForce.DAY and (created_before is None or w.order.created_at < created_before):
                del self.working[oid]
                out.append(ExecutionReport("expired", w.order.evolve(status=OrderStatus.EXPIRED,
                                                                     reason="DAY order expired at the close",
                                                                     updated_at=self.now)))
        return out

    def settle_expired(self, now: datetime, settlement_prices: dict[str, float] | None = None) -> list[ExecutionReport]:
        """Settle every option position whose expiry instant has passed.

        Physical (equity/ETF): ITM by ≥ $0.01 exercises/assigns into shares at the strike; cash-settled
        (index): intrinsic value in cash — AM-settled at the opening print of the expiry day, PM at the
        close; OTM expires worthless. ``settlement_prices`` overrides the underlying price per symbol.
        """
        self._now = now
        due = [p for p in self.positions.values()
               if isinstance(p.instrument, Option) and p.instrument.expires_at <= now]
        if not due:
            return []
        fills: list[Fill] = []
        changed: dict[str, Position] = {}
        for p in sorted(due, key=lambda x: x.instrument.key):
            inst: Option = p.instrument  # type: ignore[assignment]
            settle = self._settlement_price(inst, settlement_prices)
            if settle is None:
                continue
            K = float(inst.strike)
            intrinsic = (settle - K) if inst.is_call else (K - settle)
            itm = intrinsic >= 0.01 - 1e-9
            q = p.quantity
            if itm and inst.settlement is Settlement.PHYSICAL:
                kind = "exercise" if q > 0 else "assignment"
                f1 = Fill(fill_id=self._next_id("F"), order_id="", instrument=inst, quantity=-q, price=_Z, ts=now,
                          fee=to_cents(self.fees.exercise_fee), kind=kind)
                changed[inst.key] = self._apply(f1)
                shares = q * inst.multiplier * (1 if inst.is_call else -1)
                stock = Equity(inst.underlying)
                f2 = Fill(fill_id=self._next_id("F"), order_id="", instrument=stock, quantity=shares,
                          price=Decimal(str(inst.strike)), ts=now, kind=kind)
                changed[stock.key] = self._apply(f2)
                fills += [f1, f2]
            elif itm:
                px = Decimal(str(round(intrinsic, 4))).quantize(_PRICE_Q)
                f = Fill(fill_id=self._next_id("F"), order_id="", instrument=inst, quantity=-q, price=px, ts=now,
                         kind="cash_settlement")
                changed[inst.key] = self._apply(f)
                fills.append(f)
            else:
                f = Fill(fill_id=self._next_id("F"), order_id="", instrument=inst, quantity=-q, price=_Z, ts=now,
                         kind="expiration")
                changed[inst.key] = self._apply(f)
                fills.append(f)
        if not fills:
            return []
        return [ExecutionReport("settlement", None, tuple(fills), tuple(changed.values()),
                                note=f"{len(due)} expiring position(s) settled")]

    def _settlement_price(self, inst: Option, overrides: dict[str, float] | None) -> float | None:
        und = inst.underlying
        if overrides and und in overrides:
            return float(overrides[und])
        if inst.settlement is Settlement.CASH_AM:
            d = inst.expires_at.astimezone(NEW_YORK).date()
            if (und, d) in self._opening:
                return self._opening[(und, d)]
        return self._und_price.get(und)

    def early_assignments(self, underlying: str, dividend: float, now: datetime | None = None) -> list[ExecutionReport]:
        """Before an ex-dividend date: assign short American calls whose time value is below ``dividend``.

        Only when ``early_assignment`` is enabled; fills are flagged ``kind="early_assignment"``.
        """
        if now is not None:
            self._now = now
        if not self.config.early_assignment or dividend <= 0:
            return []
        spot = self._und_price.get(underlying)
        if spot is None:
            return []
        fills: list[Fill] = []
        changed: dict[str, Position] = {}
        for p in sorted(list(self.positions.values()), key=lambda x: x.instrument.key):
            inst = p.instrument
            if not (isinstance(inst, Option) and inst.underlying == underlying and inst.is_call and p.quantity < 0
                    and inst.settlement is Settlement.PHYSICAL):
                continue
            intrinsic = spot - float(inst.strike)
            if intrinsic <= 0:
                continue
            extrinsic = self.mark(inst) - intrinsic
            if extrinsic >= dividend:
                continue
            f1 = Fill(fill_id=self._next_id("F"), order_id="", instrument=inst, quantity=-p.quantity, price=_Z,
                      ts=self.now, fee=to_cents(self.fees.exercise_fee), kind="early_assignment")
            changed[inst.key] = self._apply(f1)
            stock = Equity(underlying)
            f2 = Fill(fill_id=self._next_id("F"), order_id="", instrument=stock, quantity=p.quantity * inst.multiplier,
                      price=Decimal(str(inst.strike)), ts=self.now, kind="early_assignment")
            changed[stock.key] = self._apply(f2)
            fills += [f1, f2]
        if not fills:
            return []
        return [ExecutionReport("settlement", None, tuple(fills), tuple(changed.values()),
                                note=f"early assignment before a ${dividend:.2f} dividend")]

