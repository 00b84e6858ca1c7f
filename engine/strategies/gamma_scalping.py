"""Gamma scalping: own cheap options, trade the underlying against them, and keep what the moves pay.

Entry: when the at-the-money implied vol of the chosen expiry is below the forecast of realized vol by at least
``min_edge``, buy a straddle (ATM call + put) or a strangle (calls and puts at ``strangle_delta``). The forecast
blends a short and a long close-to-close realized vol (:func:`engine.surface.realized.close_to_close`) of the
underlying's session closes — from the context when it offers ``realized_vol`` with history behind it, else
from the closes this strategy has seen itself (so it needs ``rv_long_window`` sessions before its first trade).

Hedging (:class:`HedgeBand`, rules as data): the position's delta in shares — the options' delta from the chain
plus the shares already held as hedge — is brought back to flat with a share order whenever it leaves the band
(``shares``, or ``delta_per_contract`` × contracts × multiplier), and at least every ``interval_s`` when it is
off by ``min_shares`` or more (the time-based fallback). A hedge is a marketable limit a hair beyond the touch;
one that would take the hedge through zero is sent as two orders (close, then open), as brokers book them.

P&L split, per trade (``trade.info``, persisted with the strategy's state): ``gamma_pnl`` — what the share hedges
made (their cash flows plus the shares still held at the spot); ``theta_pnl`` — what the options made (entry
debit against their mid now, or their closing fills): decay, plus whatever vega did. Both gross of fees
(``fees``). Exits: the total of the two against the debit (``stop_fraction``, ``profit_fraction``), the options
turning rich (IV above the forecast by ``exit_rich``), and the management rules (``dte_exit`` by default). Closing
sells the options and flattens the hedge shares in a separate share order; the trade stays active until both
are done.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import date
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from engine.model import Equity, Fill, Leg, OpenClose, OptionChain, Order, OrderIntent, OrderType, Side
from engine.strategies.base import (
    ManagedStrategy,
    ManagementRules,
    OpenTrade,
    StrategyContext,
    StrategyParams,
    leg_expiry,
    leg_marks,
    leg_option,
    market_date,
    option_leg,
    trade_to_dict,
)
from engine.strategies.selection import atm_row, deltas, nearest_delta_row, row_at_strike
from engine.surface.realized import close_to_close

HEDGE = ":hedge"
#: market seconds before a missing realized-vol forecast of the context is asked for again
FORECAST_RETRY_S = 60.0
FLATTEN = ":hedge:flatten"


class HedgeBand(BaseModel):
    """When the delta of a gamma-scalping trade is traded back to flat with shares.

    - ``shares``: the band in shares (hedge when |delta| exceeds it); None → ``delta_per_contract``;
    - ``delta_per_contract``: the band in delta, per option contract held (0.10 = 10 shares per 100-share contract);
    - ``interval_s``: the time-based fallback: at least this long after the last hedge, any delta of
      ``min_shares`` or more is hedged too (one trading day by default: the backtest's daily step);
    - ``price_tolerance``: the limit sits this fraction beyond the touch, so the hedge fills at once.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    shares: int | None = Field(None, ge=1)
    delta_per_contract: float = Field(0.10, gt=0, le=1)
    interval_s: float = Field(6.5 * 3600, gt=0)
    min_shares: int = Field(1, ge=1)
    price_tolerance: float = Field(0.0005, ge=0, le=0.01)

    def band(self, contracts: int, multiplier: int) -> float:
        return float(self.shares) if self.shares is not None else self.delta_per_contract * contracts * multiplier


class GammaScalpingParams(StrategyParams):
    underlying: str = "SPY"
    #: the options alone are not the trade: loss and profit exits look at options + hedges (below)
    rules: ManagementRules = ManagementRules(profit_target=None, stop_multiple=None, dte_exit=10, regime_exits=())
    structure: Literal["straddle", "strangle"] = "straddle"
    #: |delta| of each wing of a strangle
    strangle_delta: float = Field(0.35, gt=0.05, lt=0.5)
    dte_min: int = Field(21, ge=1)
    dte_max: int = Field(50, ge=1)
    dte_target: int = Field(35, ge=1)
    rv_window: int = Field(10, ge=2)
    rv_long_window: int = Field(30, ge=2)
    #: weight of the short window in the forecast (the rest on the long one)
    rv_short_weight: float = Field(0.5, ge=0, le=1)
    #: enter when forecast realized vol − ATM IV ≥ this (0.01 = one vol point)
    min_edge: float = Field(0.0, ge=-0.5, le=0.5)
    #: close when ATM IV − forecast ≥ this: the options are no longer cheap
    exit_rich: float | None = Field(0.04, gt=0)
    #: close when options + hedges have lost this fraction of the debit / made this fraction of it
    stop_fraction: float | None = Field(0.5, gt=0)
    profit_fraction: float | None = Field(0.5, gt=0)
    #: share of the risk profile's per-trade budget the debit may use (the order is never sent beyond it)
    budget_fraction: float = Field(0.95, gt=0, le=1)
    max_contracts: int = Field(10, ge=1)
    hedge: HedgeBand = HedgeBand()
    rate: float = 0.0
    dividend_yield: float = 0.0


class GammaScalping(ManagedStrategy[GammaScalpingParams]):
    name = "gamma_scalping"
    Params = GammaScalpingParams

    def __init__(self, params: Any = None, *, strategy_id: str | None = None) -> None:
        super().__init__(params, strategy_id=strategy_id)
        #: the underlying's last price per New York session (oldest first): this strategy's own vol history
        self.closes: dict[date, float] = {}
        self.last_signal: dict[str, float] = {}
        self._now_s = math.nan  # the time of the snapshot being handled (epoch seconds)
        #: (session, the context's forecast on it, when it was asked in epoch seconds)
        self._ctx_forecast: tuple[date, float, float] | None = None

    # ---- state across restarts -----------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        out = super().state()
        keep = max(self.params.rv_long_window, self.params.rv_window) + 2
        out["closes"] = {d.isoformat(): p for d, p in list(self.closes.items())[-keep:]}
        # a trade whose options are gone but whose hedge shares are not is still ours to flatten
        out["trades"] = [*out["trades"], *(trade_to_dict(t) for t in self.trades.values()
                                            if t.state == "closed" and t.info.get("hedge_shares"))]
        return out

    def restore(self, state: dict[str, Any]) -> None:
        super().restore(state)
        # a hedge in flight at a crash stays pending: its report comes back through reconciliation, or the
        # pending mark lapses after ``hedge.interval_s`` (never two hedges for one delta)
        self.closes = {date.fromisoformat(d): float(p) for d, p in (state.get("closes") or {}).items()}

    # ---- vol ----------------------------------------------------------------------------------------
    def forecast_vol(self, ctx: StrategyContext) -> float:
        """Forecast realized vol (annualised): short and long close-to-close windows, blended. The context's
        answer is asked once per session (it is a daily figure; live it is a query of the history store). A missing
        answer is asked again after ``FORECAST_RETRY_S``: live, the history service backfills the store off the
        loop at start, after the first chains have arrived — caching that first NaN for the session kept the
        strategy from ever trading on its first day (and a session is all a short paper run sees)."""
        p = self.params
        source = getattr(ctx, "realized_vol", None)
        if callable(source):
            now = ctx.now()
            today, now_s = market_date(now), now.timestamp()
            cached = self._ctx_forecast
            if cached is None or cached[0] != today or (
                    not math.isfinite(cached[1]) and now_s - cached[2] >= FORECAST_RETRY_S):
                short, long_ = float(source(p.underlying, p.rv_window)), float(source(p.underlying, p.rv_long_window))
                value = p.rv_short_weight * short + (1 - p.rv_short_weight) * long_
                self._ctx_forecast = cached = (today, value, now_s)
            if math.isfinite(cached[1]):
                return cached[1]
        closes = np.fromiter(self.closes.values(), dtype=float)
        if len(closes) < max(p.rv_window, p.rv_long_window) + 1:
            return math.nan
        short = float(close_to_close(closes[-(p.rv_window + 1):]))
        long_ = float(close_to_close(closes[-(p.rv_long_window + 1):]))
        return p.rv_short_weight * short + (1 - p.rv_short_weight) * long_

    def atm_iv(self, chain: OptionChain, expiry: np.datetime64) -> float:
        """Mean implied vol of the at-the-money call and put of ``expiry`` (NaN without quotes): the feed's own
        implied vol when the chain carries it (the simulated market, broker chains with Greeks, histories with an
        IV column), else Black-Scholes-Merton on the mid. It runs on every chain — for the entry, and for a
        held trade's ``iv_rich`` exit — and solving two vols costs ~5–9 ms a call, as much as the loop's whole
        budget per event: the feed has already solved them."""
        rows = [r for r in (atm_row(chain, expiry, call=True), atm_row(chain, expiry, call=False)) if r is not None]
        if not rows:
            return math.nan
        idx = np.array(rows, dtype=np.int64)
        vendor = chain.vendor.get("vendor_iv")
        vol = np.asarray(vendor[idx], dtype=float).copy() if vendor is not None else np.full(len(idx), np.nan)
        need = ~(np.isfinite(vol) & (vol > 0))
        if need.any():
            from engine.pricing import bsm

            r = idx[need]
            vol[need] = np.asarray(bsm.implied_vol(
                chain.mid[r], np.where(chain.is_call[r], "c", "p"), chain.spot, chain.strike[r],
                chain.time_to_expiry()[r], self.params.rate, self.params.dividend_yield), dtype=float)
        vol = vol[np.isfinite(vol)]
        return float(vol.mean()) if len(vol) else math.nan

    # ---- the chain ---------------------------------------------------------------------------------
    def on_chain(self, ctx: StrategyContext, chain: OptionChain) -> Sequence[OrderIntent]:
        if chain.underlying != self.underlying:
            return ()
        if math.isfinite(chain.spot) and chain.spot > 0:
            self.closes[market_date(chain.ts)] = float(chain.spot)
            while len(self.closes) > 4 * max(self.params.rv_window, self.params.rv_long_window):
                self.closes.pop(next(iter(self.closes)))
        for trade in self.trades.values():
            if trade.state == "open":
                self._mark(trade, chain)
        intents = list(super().on_chain(ctx, chain))
        intents.extend(self._hedges(ctx, chain))
        return intents

    def entries(self, ctx: StrategyContext, chain: OptionChain) -> Sequence[tuple[OpenTrade, OrderIntent]]:
        p = self.params
        today = market_date(ctx.now())
        forecast = self.forecast_vol(ctx)
        if not math.isfinite(forecast):  # no vol history yet: nothing to compare the options with
            self.last_signal = {"iv": math.nan, "forecast": forecast, "edge": math.nan}
            return ()
        budget = ctx.net_liquidation() * ctx.sizing().risk_per_trade * p.budget_fraction
        pick = self._affordable(chain, today, budget)
        if pick is None:
            return ()
        expiry, legs, mid, natural = pick
        iv = self.atm_iv(chain, expiry)
        self.last_signal = {"iv": iv, "forecast": forecast, "edge": forecast - iv}
        if not (math.isfinite(forecast) and math.isfinite(iv)) or forecast - iv < p.min_edge:
            return ()
        qty = min(int(budget // (natural * chain.multiplier)), p.max_contracts)
        if qty < 1:
            return ()  # the per-trade loss limit would deny it: not sent
        tag = self.new_tag()
        trade = OpenTrade(tag=tag, legs=legs, quantity=qty, expiry=leg_expiry(legs),
                          info={"entry_iv": iv, "entry_forecast": forecast, "hedge_shares": 0.0, "hedge_cash": 0.0,
                                "option_cash": 0.0, "fees": 0.0, "hedges": 0.0, "gamma_pnl": 0.0, "theta_pnl": 0.0,
                                "last_hedge_s": math.nan, "hedge_pending": 0.0})
        price = self.entry_price(ctx, mid, natural, float(legs[0].instrument.tick_size))
        return [(trade, self.intent(legs, qty, price, f"{tag}:open"))]

    def _affordable(self, chain: OptionChain, today: date,
                    budget: float) -> tuple[np.datetime64, tuple[Leg, ...], float, float] | None:
        """(expiry, legs, mid, natural) of the structure to buy: on the expiry in [``dte_min``, ``dte_max``] nearest
        ``dte_target`` whose one unit the per-trade budget pays, else on the nearest one (then too dear to send).

        Why not always the target's: a straddle's price grows with the square root of the time left, and at
        the desk's default account ($100,000, Moderate: 2 % a trade × ``budget_fraction``, $1,900) one ATM SPY
        straddle 29–39 days out costs $2,000–2,300 — with only the target's expiry the strategy sent nothing,
        day after day. The shorter expiry that fits carries more gamma per dollar, which is what it buys."""
        p = self.params
        uniq = np.unique(chain.expiry)
        days = (uniq.astype("datetime64[D]") - np.datetime64(today, "D")).astype(np.int64)
        ok = np.nonzero((days >= p.dte_min) & (days <= p.dte_max))[0]
        first: tuple[np.datetime64, tuple[int, int], float, float] | None = None
        pick: tuple[np.datetime64, tuple[int, int], float, float] | None = None
        for i in ok[np.argsort(np.abs(days[ok] - p.dte_target), kind="stable")]:
            rows = self._rows(chain, uniq[i])
            if rows is None:
                continue
            # both legs bought: natural = Σ ask, from the rows (legs are built for the one expiry chosen)
            bid, ask = chain.bid[list(rows)], chain.ask[list(rows)]
            with np.errstate(invalid="ignore"):
                if not (np.isfinite(bid) & np.isfinite(ask) & (ask >= bid) & (bid >= 0)).all():
                    continue
            natural = float(ask.sum())
            if not natural > 0:
                continue
            candidate = (uniq[i], rows, float(0.5 * (bid + ask).sum()), natural)
            if natural * chain.multiplier <= budget:
                pick = candidate
                break
            first = first or candidate
        pick = pick or first
        if pick is None:
            return None
        legs = tuple(option_leg(chain, r, Side.BUY) for r in pick[1])
        return pick[0], legs, pick[2], pick[3]

    def _rows(self, chain: OptionChain, expiry: np.datetime64) -> tuple[int, int] | None:
        p = self.params
        if p.structure == "straddle":
            call = atm_row(chain, expiry, call=True)
            if call is None:
                return None
            put = row_at_strike(chain, expiry, float(chain.strike[call]), call=False)
        else:
            call = nearest_delta_row(chain, expiry, p.strangle_delta, call=True, rate=p.rate,
                                     dividend_yield=p.dividend_yield)
            put = nearest_delta_row(chain, expiry, p.strangle_delta, call=False, rate=p.rate,
                                    dividend_yield=p.dividend_yield)
        if call is None or put is None or not (chain.ask[call] > 0 and chain.ask[put] > 0):
            return None
        return call, put

    # ---- exits --------------------------------------------------------------------------------------
    def strategy_exit(self, ctx: StrategyContext, trade: OpenTrade, mid: float) -> str | None:
        p = self.params
        debit = trade.entry_net * trade.filled * trade.legs[0].multiplier
        total = trade.info.get("gamma_pnl", 0.0) + trade.info.get("theta_pnl", 0.0)
        if debit > 0 and p.stop_fraction is not None and total <= -p.stop_fraction * debit:
            return "stop"
        if debit > 0 and p.profit_fraction is not None and total >= p.profit_fraction * debit:
            return "profit_target"
        if p.exit_rich is not None:
            iv, forecast = trade.info.get("iv_now", math.nan), self.forecast_vol(ctx)
            if math.isfinite(iv) and math.isfinite(forecast) and iv - forecast >= p.exit_rich:
                return "iv_rich"
        return None

    # ---- hedging ------------------------------------------------------------------------------------
    def option_delta(self, trade: OpenTrade, chain: OptionChain) -> float | None:
        """The trade's options' delta in shares (None when a leg has no delta today)."""
        syms = [leg.symbol for leg in trade.legs]
        try:
            rows = np.array([chain.row_of(s) for s in syms], dtype=np.int64)
        except (KeyError, ValueError):
            return None
        d = deltas(chain, rows, rate=self.params.rate, dividend_yield=self.params.dividend_yield)
        if not np.isfinite(d).all():
            return None
        ratio = np.array([leg.signed_ratio for leg in trade.legs], dtype=float)
        return float(ratio @ d) * trade.filled * trade.legs[0].multiplier

    def _hedges(self, ctx: StrategyContext, chain: OptionChain) -> list[OrderIntent]:
        out: list[OrderIntent] = []
        now_s = self._now_s = ctx.now().timestamp()
        for trade in list(self.trades.values()):
            if trade.info.get("hedge_pending"):
                sent = trade.info.get("hedge_sent_s", math.nan)
                if math.isfinite(sent) and now_s - sent < self.params.hedge.interval_s:
                    continue
                trade.info["hedge_pending"] = 0.0  # no report came back for it (refused before the OMS): go on
            held = int(trade.info.get("hedge_shares", 0.0))
            if trade.state in ("closing", "closed") and held:
                # options sold (or selling): the shares go too
                trade.state = "closing"
                out.extend(self._share_orders(trade, -held, held, chain.spot, f"{trade.tag}{FLATTEN}"))
                continue
            if trade.state != "open":
                continue
            opt = self.option_delta(trade, chain)
            if opt is None:
                continue
            net = opt + held
            band = self.params.hedge.band(trade.filled, trade.legs[0].multiplier)
            last = trade.info.get("last_hedge_s", math.nan)
            due = not math.isfinite(last) or now_s - last >= self.params.hedge.interval_s
            if abs(net) > band or (due and abs(net) >= self.params.hedge.min_shares):
                qty = -round(net)
                if qty:
                    trade.info["last_hedge_s"] = now_s
                    out.extend(self._share_orders(trade, qty, held, chain.spot, f"{trade.tag}{HEDGE}"))
        return out

    def _share_orders(self, trade: OpenTrade, qty: int, held: int, spot: float, tag: str) -> list[OrderIntent]:
        """Share orders trading ``qty`` (signed) against ``held``: closing what is held first, then opening."""
        close = 0
        if held and (qty > 0) != (held > 0):
            close = -held if abs(qty) >= abs(held) else qty
        parts = [(close, OpenClose.CLOSE)] if close else []
        if qty - close:
            parts.append((qty - close, OpenClose.OPEN))
        out = []
        tol = self.params.hedge.price_tolerance
        for q, oc in parts:
            side = Side.BUY if q > 0 else Side.SELL
            stock = Equity(self.underlying)
            px = Decimal(repr(spot * (1 + tol if q > 0 else 1 - tol)))
            px = (px / stock.tick_size).to_integral_value(ROUND_CEILING if q > 0 else ROUND_FLOOR) * stock.tick_size
            out.append(OrderIntent(legs=(Leg(stock, side, 1, oc),), quantity=abs(q), order_type=OrderType.LIMIT,
                                   limit_price=px if q > 0 else -px, tif=self.params.tif,
                                   source=f"strategy:{self.strategy_id}", strategy_id=self.strategy_id, tag=tag))
        if out:
            trade.info["hedge_pending"] = float(len(out))
            trade.info["hedge_sent_s"] = self._now_s
        return out

    # ---- order updates ------------------------------------------------------------------------------
    def on_order(self, ctx: StrategyContext, order: Order, fills: Sequence[Fill] = ()) -> Sequence[OrderIntent]:
        tag = order.tag.split(":", 1)[0]
        trade = self.trades.get(tag)
        if HEDGE in order.tag:
            if trade is not None:
                self._on_hedge(trade, order, fills)
            return ()
        out = super().on_order(ctx, order, fills)
        if trade is not None and fills:
            trades = [f for f in fills if f.kind == "trade"]
            trade.info["option_cash"] = trade.info.get("option_cash", 0.0) + float(
                sum(-f.quantity * float(f.price) * f.instrument.multiplier for f in trades))
            trade.info["fees"] = trade.info.get("fees", 0.0) + float(sum(float(f.fee) for f in fills))
            if trade.filled <= 0 and ":close" in order.tag:
                trade.info["theta_pnl"] = trade.info["option_cash"]
        if trade is not None and trade.state == "closed" and trade.info.get("hedge_shares"):
            trade.state = "closing"  # the hedge shares are flattened on the next snapshot
        return out

    def _on_hedge(self, trade: OpenTrade, order: Order, fills: Sequence[Fill]) -> None:
        for f in fills:
            if isinstance(f.instrument, Equity):
                trade.info["hedge_shares"] = trade.info.get("hedge_shares", 0.0) + f.quantity
                trade.info["hedge_cash"] = trade.info.get("hedge_cash", 0.0) - f.quantity * float(f.price)
                trade.info["fees"] = trade.info.get("fees", 0.0) + float(f.fee)
        if fills:
            trade.info["hedges"] = trade.info.get("hedges", 0.0) + 1
        if order.status.is_terminal:
            trade.info["hedge_pending"] = max(trade.info.get("hedge_pending", 0.0) - 1, 0.0)
        if not trade.info.get("hedge_shares"):
            trade.info["gamma_pnl"] = trade.info.get("hedge_cash", 0.0)
            if trade.state == "closing" and trade.filled <= 0:
                trade.state = "closed"

    def _mark(self, trade: OpenTrade, chain: OptionChain) -> None:
        """Update the trade's P&L split at this snapshot's marks."""
        info = trade.info
        info["gamma_pnl"] = info.get("hedge_cash", 0.0) + info.get("hedge_shares", 0.0) * chain.spot
        marks = leg_marks(chain, trade.legs)
        if marks is not None:
            info["theta_pnl"] = info.get("option_cash", 0.0) + marks[0] * trade.filled * trade.legs[0].multiplier
        expiry = np.datetime64(leg_option(trade.legs[0]).expires_at.replace(tzinfo=None), "s")
        info["iv_now"] = self.atm_iv(chain, expiry)

    def pnl_split(self) -> dict[str, dict[str, float]]:
        """Per trade tag: gamma (hedge) P&L, theta (option) P&L, fees and hedges sent, in dollars."""
        return {t.tag: {"gamma_pnl": t.info.get("gamma_pnl", 0.0), "theta_pnl": t.info.get("theta_pnl", 0.0),
                        "fees": t.info.get("fees", 0.0), "hedges": t.info.get("hedges", 0.0)}
                for t in self.trades.values() if t.filled or t.info.get("hedges")}

