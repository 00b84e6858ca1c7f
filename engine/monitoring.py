"""Opt-in Prometheus endpoint: ``/metrics`` on 127.0.0.1 with ``optiondesk_`` series.

Off by default; on with ``[monitoring] metrics_port`` in the settings or ``optiondesk serve --metrics-port P``.
Counters move inline from bus events (cheap: one increment); gauges are sampled once per
``sample_interval_s`` by a task on the loop, so the HTTP thread only reads the registry and never touches
engine state — except the heartbeat age, computed at scrape time from one float, so a scrape during a
stalled loop shows the stall growing.

The HTTP server (prometheus_client's WSGI server in one daemon thread) is owned by :class:`MetricsExporter`:
``stop()`` shuts it down and joins the thread with a bounded wait. See docs/operations.md (Monitoring).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from engine.bus.events import (
    AccountUpdated,
    ClockTicked,
    ConnectionStateChanged,
    KillSwitchTripped,
    OrderDenied,
    OrderFilled,
    OrderRejected,
    OrderSubmitted,
    QuotesUpdated,
    QuoteUpdated,
)

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
GREEKS = ("delta", "beta_delta", "gamma", "vega", "theta", "delta_dollars")
STATES = ("ACTIVE", "REDUCING", "HALTED")


class MonitoringError(RuntimeError):
    """The endpoint could not start (the port is taken, or not allowed)."""


class MetricsExporter:
    """Collects the engine's metrics into its own registry and serves them on ``127.0.0.1:port``."""

    def __init__(self, engine: Any, port: int, *, sample_interval_s: float = 1.0) -> None:
        self.engine = engine
        self.port = port
        self.sample_interval_s = sample_interval_s
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.orders_submitted = Counter("optiondesk_orders_submitted", "Orders sent to a broker", ["broker"], registry=r)
        self.orders_rejected = Counter("optiondesk_orders_rejected", "Orders the broker refused", ["broker"], registry=r)
        self.orders_denied = Counter("optiondesk_orders_denied", "Orders our risk engine denied, by failed check",
                                     ["check"], registry=r)
        self.fills = Counter("optiondesk_fills", "Leg executions", registry=r)
        self.filled_contracts = Counter("optiondesk_filled_contracts", "Contracts filled (absolute)", registry=r)
        self.kill_switch_trips = Counter("optiondesk_kill_switch_trips", "Kill-switch trips", registry=r)
        self.quote_updates = Counter("optiondesk_quote_updates", "Option quotes received", registry=r)
        self.trading_state = Gauge("optiondesk_trading_state", "1 for the current trading state", ["state"], registry=r)
        self.halted = Gauge("optiondesk_kill_switch_halted", "1 while the kill switch holds trading HALTED", registry=r)
        self.loop_lag = Gauge("optiondesk_loop_lag_seconds", "How late the sampler's sleep woke up (loop lag)",
                              registry=r)
        self.quote_rate = Gauge("optiondesk_quote_rate", "Option quotes per second over the last sample", registry=r)
        self.feed_latency = Gauge("optiondesk_feed_latency_seconds", "Latest latency a feed or broker reported",
                                  ["component"], registry=r)
        self.quote_age = Gauge("optiondesk_quote_age_seconds", "Engine-clock seconds since the last quote", registry=r)
        self.net_liq = Gauge("optiondesk_net_liquidation_dollars", "Account net liquidation", registry=r)
        self.pnl = Gauge("optiondesk_pnl_dollars", "Account P&L", ["kind"], registry=r)
        self.greeks = Gauge("optiondesk_portfolio_greek", "Portfolio Greeks of the positions", ["greek"], registry=r)
        self.var = Gauge("optiondesk_var_dollars", "Delta-gamma VaR of the book (latest risk snapshot)", registry=r)
        self.heartbeat_age = Gauge("optiondesk_heartbeat_age_seconds", "Seconds since the engine's last clock tick",
                                   registry=r)
        self.notifications = Gauge("optiondesk_notifications", "Notifications by destination and outcome",
                                   ["destination", "outcome"], registry=r)
        for broker in getattr(engine, "brokers", None) or {"paper": None}:  # series exist from the first scrape
            self.orders_submitted.labels(broker)
            self.orders_rejected.labels(broker)
        self.last_heartbeat = time.monotonic()
        self.heartbeat_age.set_function(lambda: time.monotonic() - self.last_heartbeat)
        self._quotes_since_sample = 0
        self._last_quote_ts: Any = None
        self._subs: list[Any] = []
        self._sampler: asyncio.Task[None] | None = None
        self._server: Any = None
        self._thread: Any = None

    # ---- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        try:
            self._server, self._thread = await asyncio.to_thread(start_http_server, self.port, HOST, self.registry)
        except OSError as exc:
            raise MonitoringError(f"cannot serve metrics on {HOST}:{self.port}: {exc.strerror or exc}") from exc
        self.port = self._server.server_port  # port 0: the one the OS chose
        bus = self.engine.bus
        for etype, fn in ((OrderSubmitted, self._on_submitted), (OrderRejected, self._on_rejected),
                          (OrderDenied, self._on_denied), (OrderFilled, self._on_filled),
                          (KillSwitchTripped, self._on_trip), (QuotesUpdated, self._on_quotes),
                          (QuoteUpdated, self._on_quote), (ConnectionStateChanged, self._on_connection),
                          (AccountUpdated, self._on_account), (ClockTicked, self._on_tick)):
            self._subs.append(bus.subscribe(etype, fn, name=f"metrics:{fn.__name__}"))
        self._sample()
        self._sampler = asyncio.get_running_loop().create_task(self._sample_loop(), name="metrics:sampler")
        log.info("metrics on http://%s:%d/metrics", HOST, self.port)

    async def stop(self, timeout: float = 5.0) -> None:
        for s in self._subs:
            s.cancel()
        self._subs.clear()
        if self._sampler is not None:
            self._sampler.cancel()
            await asyncio.gather(self._sampler, return_exceptions=True)
            self._sampler = None
        server, thread, self._server, self._thread = self._server, self._thread, None, None
        if server is None:
            return

        def shut() -> None:
            server.shutdown()  # returns once serve_forever has left its loop (poll interval 0.5 s)
            server.server_close()
            thread.join(timeout)

        try:
            await asyncio.wait_for(asyncio.to_thread(shut), timeout + 1.0)
        except TimeoutError:
            log.error("the metrics server did not stop within %.0f s", timeout)

    # ---- events (inline, O(1)) -------------------------------------------------------------------
    def _on_submitted(self, ev: OrderSubmitted) -> None:
        self.orders_submitted.labels(ev.order.broker).inc()

    def _on_rejected(self, ev: OrderRejected) -> None:
        self.orders_rejected.labels(ev.order.broker).inc()

    def _on_denied(self, ev: OrderDenied) -> None:
        names = {str(getattr(c, "name", None) or getattr(c, "check", None) or "other") for c in ev.checks}
        for name in names or {"other"}:
            self.orders_denied.labels(name).inc()

    def _on_filled(self, ev: OrderFilled) -> None:
        self.fills.inc(len(ev.fills))
        self.filled_contracts.inc(sum(abs(f.quantity) for f in ev.fills))

    def _on_trip(self, _ev: KillSwitchTripped) -> None:
        self.kill_switch_trips.inc()

    def _on_quotes(self, ev: QuotesUpdated) -> None:
        self._quotes_since_sample += len(ev.rows) if ev.rows is not None else 0
        self._last_quote_ts = ev.ts

    def _on_quote(self, ev: QuoteUpdated) -> None:
        self._quotes_since_sample += 1
        self._last_quote_ts = ev.ts

    def _on_connection(self, ev: ConnectionStateChanged) -> None:
        if ev.latency_ms is not None and math.isfinite(ev.latency_ms):
            self.feed_latency.labels(ev.component).set(ev.latency_ms / 1000.0)

    def _on_account(self, ev: AccountUpdated) -> None:
        a = ev.account
        self.net_liq.set(float(a.net_liquidation))
        self.pnl.labels("day").set(float(a.day_pnl))
        self.pnl.labels("realized").set(float(a.realized_pnl))
        self.pnl.labels("unrealized").set(float(a.unrealized_pnl))

    def _on_tick(self, _ev: ClockTicked) -> None:
        self.last_heartbeat = time.monotonic()

    # ---- sampling ---------------------------------------------------------------------------------
    async def _sample_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            t0 = loop.time()
            await asyncio.sleep(self.sample_interval_s)
            elapsed = loop.time() - t0
            self.loop_lag.set(max(0.0, elapsed - self.sample_interval_s))
            self.quote_rate.set(self._quotes_since_sample / elapsed if elapsed > 0 else 0.0)
            self._quotes_since_sample = 0
            try:
                self._sample()
            except Exception:  # a half-built engine (stopping): keep the last values
                log.debug("metrics sample failed", exc_info=True)

    def _sample(self) -> None:
        e = self.engine
        ks = getattr(e, "kill_switch", None)
        if ks is not None:
            state = str(getattr(ks.state, "value", ks.state))
            for s in STATES:
                self.trading_state.labels(s).set(1.0 if s == state else 0.0)
            self.halted.set(1.0 if state == "HALTED" else 0.0)
        risk_service = getattr(e, "risk_service", None)
        if risk_service is not None:
            total = risk_service.exposure()
            for g in GREEKS:
                self.greeks.labels(g).set(float(getattr(total, g)))
            snap = ks.store.kv.get("risk.snapshot") if ks is not None else None
            var = (snap or {}).get("var") if isinstance(snap, dict) else None
            self.var.set(float(var["var"]) if isinstance(var, dict) and var.get("var") is not None else 0.0)
        portfolio = getattr(e, "portfolio", None)
        if portfolio is not None and self.net_liq._value.get() == 0.0:  # before the first AccountUpdated
            with contextlib.suppress(Exception):
                self.net_liq.set(float(portfolio.net_liquidation))
        if self._last_quote_ts is not None:
            with contextlib.suppress(Exception):
                self.quote_age.set(max(0.0, (e.now() - self._last_quote_ts).total_seconds()))
        notifier = getattr(e, "notifier", None)
        if notifier is not None:
            for name, st in notifier.stats.items():
                for outcome in ("sent", "failed", "suppressed", "rate_limited"):
                    self.notifications.labels(name, outcome).set(getattr(st, outcome))
