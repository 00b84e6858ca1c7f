"""``optiondesk selftest``: the whole workstation, offscreen, on the simulated market, end to end.

Steps (each must pass; the first failure ends the run and is named in the exit message):

1. open window — the full main window is shown and paints (grab is not blank);
2. stream quotes — the bridge delivers simulated-market quotes to the GUI;
3. paper order through approval — manual approval on, an order from the order ticket waits in
   ``PENDING_APPROVAL``, the test approves it (as a user would), and it fills on the paper broker;
4. risk slider — the toolbar slider moves; the engine answers with the new profile; the readout shows it;
5. kill switch trip — the toolbar kill switch halts trading; a new order from the ticket is denied;
6. kill switch reset — the confirmation dialog is accepted; trading is ACTIVE again;
7. backtest — a short backtest is started from the backtest panel and finishes;
8. import chains — a small chain file is imported through the Data panel (ImportChains) and shows there;
9. streaming run — quotes keep streaming for ``--seconds`` without an error in the log;
10. screenshots — a PNG of the window and of each panel (when ``--screenshots DIR`` is given); the Strategies
   panel's strategy (configured in a fresh home, stopped until then) is started from the panel first.

Exit code 0 when every step passed, 1 otherwise (the failed step and why on stderr), 2 when the window
could not even start.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


#: written to a fresh self-test home's settings, so the Strategies panel has a strategy to show. Stopped at start:
#: its orders must not mix into the approval and kill-switch steps; the screenshots step starts it.
SELFTEST_STRATEGIES = """[[strategies]]
name = "iv_rank_put_spread"
id = "selftest-ivps"
enabled = false
params = { underlying = "SPY" }
"""


class StepFailed(Exception):
    def __init__(self, step: str, detail: str) -> None:
        super().__init__(f"{step}: {detail}")
        self.step = step
        self.detail = detail


@dataclass
class StepResult:
    step: str
    ok: bool
    detail: str
    seconds: float


class _ErrorCollector(logging.Handler):
    """Keeps every ERROR (and worse) log record raised during the run."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def wait_until(predicate: Callable[[], Any], timeout: float, what: str, step: str, poll: float = 0.05) -> Any:
    """Poll ``predicate`` on the loop (Qt keeps running) until truthy; StepFailed naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise StepFailed(step, f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(poll)


def image_is_blank(image: Any) -> bool:
    """True when a QImage is (nearly) one colour: sampled on a 40×40 grid."""
    if image.isNull() or image.width() < 2 or image.height() < 2:
        return True
    colours = set()
    for y in range(0, image.height(), max(1, image.height() // 40)):
        for x in range(0, image.width(), max(1, image.width() // 40)):
            colours.add(image.pixel(x, y))
    return len(colours) <= 3


class SelfTest:
    """Drives a started :class:`app.runtime.Workstation` through the steps above."""

    def __init__(self, seconds: float = 8.0, screenshots: str | Path | None = None) -> None:
        self.seconds = max(0.0, float(seconds))
        self.screenshots = Path(screenshots) if screenshots else None
        self.results: list[StepResult] = []
        self.errors = _ErrorCollector()
        self.events: dict[str, int] = {}
        self.seen: list[Any] = []
        self.ws: Any = None

    # ---- plumbing ----------------------------------------------------------------------------------
    @property
    def window(self) -> Any:
        return self.ws.window

    @property
    def engine(self) -> Any:
        return self.ws.engine

    def _count(self, batch: Any) -> None:
        for ev in batch.all_events():
            name = type(ev).__name__
            self.events[name] = self.events.get(name, 0) + 1
            if not ev.conflate:
                self.seen.append(ev)

    def _events_of(self, type_name: str) -> list[Any]:
        return [e for e in self.seen if type(e).__name__ == type_name]

    def _require(self, step: str, *components: str) -> None:
        from widgets.engine_queries import missing_components

        missing = missing_components(self.engine, *components)
        if missing:
            raise StepFailed(step, f"the engine has no {', '.join(missing)} (not wired in engine/core.py)")

    def _panel(self, step: str, *ids: str) -> Any:
        for pid in ids:
            panel = self.window.panels.get(pid)
            if panel is not None:
                return panel
        raise StepFailed(step, f"no panel with id {' or '.join(ids)} in the window")

    async def _step(self, name: str, fn: Callable[[], Awaitable[str]]) -> None:
        t0 = time.monotonic()
        try:
            detail = await fn()
        except StepFailed:
            self.results.append(StepResult(name, False, "", time.monotonic() - t0))
            raise
        except Exception as exc:
            self.results.append(StepResult(name, False, f"{type(exc).__name__}: {exc}", time.monotonic() - t0))
            log.exception("self-test step %s crashed", name)
            raise StepFailed(name, f"{type(exc).__name__}: {exc}") from exc
        self.results.append(StepResult(name, True, detail or "", time.monotonic() - t0))
        print(f"  ok  {name:<34} {detail}", flush=True)

    # ---- the run -----------------------------------------------------------------------------------
    async def run(self, ws: Any) -> None:
        self.ws = ws
        logging.getLogger().addHandler(self.errors)
        ws.window.bridge.add_consumer(self._count, "selftest")
        try:
            await self._step("open window", self.step_open_window)
            await self._step("stream quotes", self.step_stream_quotes)
            await self._step("paper order through approval", self.step_order_through_approval)
            await self._step("risk slider", self.step_risk_slider)
            await self._step("kill switch trip blocks the ticket", self.step_kill_switch_trip)
            await self._step("kill switch reset", self.step_kill_switch_reset)
            await self._step("backtest from the panel", self.step_backtest)
            await self._step("import chains from the Data panel", self.step_import_chains)
            await self._step("streaming run", self.step_streaming)
            await self._step("screenshots", self.step_screenshots)
        finally:
            logging.getLogger().removeHandler(self.errors)

    # ---- steps -------------------------------------------------------------------------------------
    async def step_open_window(self) -> str:
        step = "open window"
        w = self.window
        await wait_until(lambda: w.isVisible(), 5, "the window to show", step)
        await asyncio.sleep(0.3)
        if image_is_blank(w.grab().toImage()):
            raise StepFailed(step, "the window painted blank")
        return f"{len(w.panels)} panels, toolbar: {', '.join(w.trading_toolbar.controls)}"

    def _quote_events(self) -> int:
        return sum(self.events.get(n, 0) for n in ("QuoteUpdated", "QuotesUpdated", "ChainUpdated"))

    async def step_stream_quotes(self) -> str:
        step = "stream quotes"
        self._require(step, "feed")
        await wait_until(lambda: self._quote_events() >= 20, 20, "20 quote/chain events through the bridge", step)
        chain = self._panel(step, "chain")
        await wait_until(lambda: chain.model.rowCount() > 0, 10, "rows in the chain panel", step)
        return f"{self._quote_events()} quote/chain events, {self.window.bridge.flushes} flushes"

    def _ticket(self, step: str) -> Any:
        return self._panel(step, "ticket", "order_ticket")

    def _pick_call(self, step: str) -> tuple[Any, float]:
        """A near-the-money call with a two-sided quote, a few expiries out: (option, ask)."""
        import numpy as np

        feed = self.engine.feed
        chain = None
        for u in feed.underlyings():
            chain = feed.last_chain(u)
            if chain is not None and len(chain):
                break
        if chain is None:
            raise StepFailed(step, "the simulated feed has no chain")
        valid = chain.valid_mask() & chain.is_call & (chain.ask > 0.05)
        expiries = chain.expiries()
        target = expiries[min(2, len(expiries) - 1)]
        rows = np.flatnonzero(valid & (chain.expiry == target))
        if rows.size == 0:
            rows = np.flatnonzero(valid)
        if rows.size == 0:
            raise StepFailed(step, "no call with a valid ask in the chain")
        row = int(rows[np.argmin(np.abs(chain.strike[rows] - chain.spot))])
        return chain.option(row), float(chain.ask[row])

    def _build_ticket_order(self, step: str) -> Any:
        """Fill the order ticket with one near-the-money call, limit at the natural price (the ask)."""
        from engine.model import Leg, Side

        ticket = self._ticket(step)
        option, ask = self._pick_call(step)
        ticket.clear()
        ticket.add_leg(Leg(option, Side.BUY, 1))
        ticket.qty_spin.setValue(1)
        natural = getattr(getattr(ticket, "prices", None), "natural", None)
        if isinstance(natural, float) and math.isfinite(natural):
            ticket.set_price_from("natural")
        else:
            ticket.price_spin.setValue(round(ask + 0.05, 2))
        return ticket

    async def step_order_through_approval(self) -> str:
        step = "paper order through approval"
        self._require(step, "oms", "paper_broker")
        from engine.bus.commands import ApproveOrder, SetApprovalMode

        await self.engine.bus.send(SetApprovalMode(enabled=True))
        ticket = self._build_ticket_order(step)
        n_pending = len(self._events_of("OrderPendingApproval"))
        ticket.submit()
        pending = await wait_until(
            lambda: self._events_of("OrderPendingApproval")[n_pending:], 10, "the order to wait for approval", step
        )
        order = pending[0].order
        approvals = self.window.panels.get("approvals")
        if approvals is not None and hasattr(approvals, "approve"):
            await wait_until(lambda: approvals.has_order(order.order_id), 5, "the order in the approval queue", step)
            approvals.approve(order.order_id)
        else:
            await self.engine.bus.send(ApproveOrder(order_id=order.order_id, by="selftest"))

        def filled() -> bool:
            return any(e.order.order_id == order.order_id and e.order.status.value == "filled" for e in self._events_of("OrderFilled"))

        def denied() -> list[Any]:
            return [e for e in self._events_of("OrderDenied") + self._events_of("OrderRejected") if e.order.order_id == order.order_id]

        await wait_until(lambda: filled() or denied(), 30, "the order to fill", step)
        if denied():
            e = denied()[0]
            raise StepFailed(step, f"order was {type(e).__name__}: {e.order.reason}")
        await self.engine.bus.send(SetApprovalMode(enabled=False))
        return f"order {order.order_id} approved and filled"

    async def step_risk_slider(self) -> str:
        step = "risk slider"
        slider = self.window.trading_toolbar.controls.get("risk")
        if slider is None:
            raise StepFailed(step, "no risk slider in the toolbar (engine has no SetRiskLevel handler)")
        target = 25 if slider.slider.value() != 25 else 75
        before = slider.readout.text()
        slider.set_level(target)
        await wait_until(lambda: slider.profile is not None and round(slider.profile.level) == target, 5,
                         f"the engine's profile at level {target}", step)
        await wait_until(lambda: slider.readout.text() != before, 3, "the readout to change", step)
        return f"level {target}: {slider.readout.text()}"

    async def step_kill_switch_trip(self) -> str:
        step = "kill switch trip blocks the ticket"
        ks = self.window.trading_toolbar.controls.get("kill_switch")
        if ks is None:
            raise StepFailed(step, "no kill switch in the toolbar")
        self.window.trading_toolbar.kill_switch_action.trigger()  # Ctrl+Shift+K
        await wait_until(lambda: ks.state == "HALTED", 5, "the HALTED state", step)
        await wait_until(lambda: "HALTED" in self.window.status_state.text(), 3, "HALTED in the status bar", step)
        ticket = self._build_ticket_order(step)
        n_events = len(self.seen)
        ticket.submit()
        if "halted" not in ticket.message.text().lower():
            raise StepFailed(step, f"the ticket did not refuse while HALTED: {ticket.message.text()!r}")
        await asyncio.sleep(0.3)
        if any(type(e).__name__ == "OrderCreated" for e in self.seen[n_events:]):
            raise StepFailed(step, "an order was created while HALTED")
        # an order that reaches the engine anyway (a strategy, a script) is denied
        from engine.bus.commands import SubmitOrder

        intent = ticket.build_intent()
        order = await self.engine.bus.send(SubmitOrder(intent=intent))
        status = getattr(getattr(order, "status", None), "value", "")
        if status != "denied":
            raise StepFailed(step, f"the engine accepted an order while HALTED (status {status!r})")
        return f"HALTED; ticket refused; engine denied: {order.reason}"

    async def step_kill_switch_reset(self) -> str:
        step = "kill switch reset"
        ks = self.window.trading_toolbar.controls["kill_switch"]
        ks.on_click()  # HALTED → asks for confirmation
        await wait_until(lambda: ks.confirm_dialog is not None and ks.confirm_dialog.isVisible(), 3,
                         "the reset confirmation", step)
        dlg = ks.confirm_dialog
        reset_button = next(b for b in dlg.buttons() if b.text().startswith("Reset"))
        reset_button.click()
        await wait_until(lambda: ks.state == "ACTIVE", 5, "the ACTIVE state", step)
        return "confirmed; ACTIVE"

    async def step_backtest(self) -> str:
        step = "backtest from the panel"
        panel = self._panel(step, "backtest", "backtests")
        panel.run_quick()
        await wait_until(lambda: panel.is_finished(), 180, "the backtest to finish", step, poll=0.2)
        result = getattr(panel, "result", None)
        if result is None or getattr(result, "status", "") == "failed":
            why = getattr(result, "error", "") or panel.summary()
            raise StepFailed(step, f"the backtest did not complete: {why}")
        return str(panel.summary())

    async def step_import_chains(self) -> str:
        """A vendor-style chain file (a few weeks of the simulated market in the native layout, written in the
        self-test's data folder) imported through the Data panel, so its screenshot shows imported chains."""
        step = "import chains from the Data panel"
        self._require(step, "store")
        await wait_until(lambda: self.window.panels.get("data") is not None, 20, "the Data panel to be built", step)
        panel = self._panel(step, "data")
        path = self.engine.paths.data_dir / "selftest-chains" / "SPY_native.csv"

        def write() -> None:
            from engine.backtest.chain_files import write_history
            from engine.backtest.sources import simulated_history

            path.parent.mkdir(parents=True, exist_ok=True)
            write_history(simulated_history("SPY", 0.08, 7, max_strikes=20, use_cache=False), path)

        await asyncio.to_thread(write)
        panel.last_finished = None
        panel.import_files([path], "auto", "")
        await wait_until(lambda: panel.last_finished is not None, 60, "the import to finish", step, poll=0.1)
        ev = panel.last_finished
        if ev.error or ev.cancelled:
            raise StepFailed(step, ev.error or "the import was cancelled")
        root = panel.coverage.root("SPY") if panel.coverage is not None else None
        if root is None or not root.days:
            raise StepFailed(step, "the imported SPY chains do not show in the Data panel")
        return f"{root.rows:,} rows of SPY over {root.days} days ({root.first_day} to {root.last_day})"

    async def step_streaming(self) -> str:
        step = "streaming run"
        start = self._quote_events()
        t0 = time.monotonic()
        await asyncio.sleep(self.seconds)
        got = self._quote_events() - start
        if self.seconds >= 1 and got == 0:
            raise StepFailed(step, f"no quotes streamed in {self.seconds:.0f} s")
        problems = [r.getMessage() for r in self.errors.records]
        problems += [f"{e.source}: {e.message}" for e in self.window.alerts.all_entries if e.level == "error"]
        problems += [e.describe() for e in self._events_of("SubscriberFailed")]
        if self.window.bridge.failures:
            problems.append(f"{self.window.bridge.failures} GUI render failure(s)")
        if problems:
            raise StepFailed(step, f"{len(problems)} error(s) logged, first: {problems[0]}")
        slowest = max(self.window.bridge.consumer_max_ms.items(), key=lambda kv: kv[1], default=("-", 0.0))
        return (f"{got} quote/chain events in {time.monotonic() - t0:.1f} s, max GUI flush "
                f"{self.window.bridge.max_flush_ms:.0f} ms (slowest panel {slowest[0]} {slowest[1]:.0f} ms)")

    async def step_screenshots(self) -> str:
        step = "screenshots"
        if self.screenshots is None:
            return "skipped (no --screenshots DIR)"
        self.screenshots.mkdir(parents=True, exist_ok=True)
        written = []
        main = self.screenshots / "window.png"
        if not self.window.grab().save(str(main)):
            raise StepFailed(step, f"could not write {main}")
        written.append(main.name)
        await self._start_a_strategy(step)
        blank = []
        for dock in self.window.docks.values():
            dock.show()
            dock.raise_()
        await asyncio.sleep(0.4)  # let raised tabs repaint at their real size
        for pid, pixmap in self.window.grab_panels().items():
            path = self.screenshots / f"panel_{pid}.png"
            if not pixmap.save(str(path)):
                raise StepFailed(step, f"could not write {path}")
            if image_is_blank(pixmap.toImage()):
                blank.append(pid)
            written.append(path.name)
        written.append(await self._shoot_alert_rules(step))
        written.append(await self._shoot_analysis(step))
        if blank:
            raise StepFailed(step, f"blank panel(s): {', '.join(blank)}")
        return f"{len(written)} PNGs in {self.screenshots}"

    async def _shoot_alert_rules(self, step: str) -> str:
        """The Alert rules dialog on its *My alerts* tab, with an example alert at SPY's price (not saved)."""
        from app.dialogs.alert_rules_dialog import AlertRulesDialog
        from engine.notify.config import UserAlertRule

        dialog = AlertRulesDialog(self.engine, self.window)
        try:
            price = self.engine.feed.last_price("SPY") if self.engine.feed is not None else None
            dialog.add_user_rule_row(UserAlertRule(name="spy-level", symbol="SPY", metric="last", op="crosses",
                                                   value=round(float(price or 600.0), 2)))
            dialog.add_user_rule_row(UserAlertRule(name="portfolio-delta", target="portfolio", metric="delta",
                                                   op="above", value=500, repeat="every"))
            dialog.tabs.setCurrentIndex(0)
            dialog.resize(1280, 420)
            dialog.show()
            await asyncio.sleep(0.1)
            pixmap = dialog.grab()
            path = self.screenshots / "panel_alerts_rules.png"
            if not pixmap.save(str(path)):
                raise StepFailed(step, f"could not write {path}")
            if image_is_blank(pixmap.toImage()):
                raise StepFailed(step, "blank Alert rules dialog")
            return path.name
        finally:
            dialog.reject()
            dialog.deleteLater()


    async def _shoot_analysis(self, step: str) -> str:
        """The payoff panel's analysis on an iron condor built on the ticket (not sent): date slider a third of
        the way, IV +5 pts, "with trade" on, the probabilities back from the workers."""
        payoff, ticket = self.window.panels.get("payoff"), self.window.panels.get("ticket")
        if payoff is None or ticket is None:
            raise StepFailed(step, "no payoff or ticket panel for panel_analysis.png")
        ticket.template_box.setCurrentIndex(ticket.template_box.findText("Iron condor"))
        ticket.build_button.click()
        payoff.trade_check.setChecked(True)
        payoff.date_slider.setValue(payoff.date_slider.maximum() // 3)
        payoff.iv_slider.setValue(5)
        deadline = time.monotonic() + 20.0
        while payoff.probs is None and time.monotonic() < deadline:  # the P50 Monte Carlo runs in a worker
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.1)
        pixmap = payoff.grab()
        path = self.screenshots / "panel_analysis.png"
        if not pixmap.save(str(path)):
            raise StepFailed(step, f"could not write {path}")
        if payoff.prof is None or image_is_blank(pixmap.toImage()):
            raise StepFailed(step, f"blank analysis panel ({payoff.error or 'no payoff'})")
        return path.name

    async def _start_a_strategy(self, step: str) -> None:
        """Start the first stopped strategy from the Strategies panel, so its screenshot shows one running."""
        if "strategies" not in self.window.panels:
            self.window.build_all_panels()
        panel = self.window.panels.get("strategies")
        if panel is None or not panel.statuses:
            return
        sid = next((s.strategy_id for s in panel.statuses.values() if s.state == "stopped"), "")
        if not sid:
            return
        panel.select(sid)
        panel.start_selected()
        await wait_until(lambda: panel.statuses[sid].state == "running" or panel.last_error, 10,
                         f"strategy {sid} to start from the Strategies panel", step)
        if panel.statuses[sid].state != "running":
            raise StepFailed(step, f"strategy {sid} did not start: {panel.last_error}")


def main(seconds: float = 8.0, screenshots: str | None = None, home: str | None = None, as_json: bool = False) -> int:
    """Run the self-test in this process (offscreen unless a display is forced); returns the exit code."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from app.runtime import Workstation, create_application, run_event_loop, run_workstation
    from engine.core import EngineConfig
    from engine.logging_setup import setup_logging
    from engine.paths import AppPaths

    tmp = None
    if home is None:
        tmp = tempfile.TemporaryDirectory(prefix="optiondesk-selftest-")
        home = tmp.name
    paths = AppPaths.under(Path(home)).ensure()
    if not paths.settings_file.exists():
        paths.settings_file.write_text(SELFTEST_STRATEGIES)
    setup_logging(paths.log_dir, "INFO", console=False)
    print(f"optiondesk selftest (home {home})", flush=True)
    test = SelfTest(seconds=seconds, screenshots=screenshots)
    app = create_application([sys.argv[0]])
    ws = Workstation(EngineConfig(paths=paths, seed=7), restore_layout=False)
    code = 0
    failure = ""
    try:
        # seconds=0: shut down as soon as the steps are done (otherwise it waits for a user quit)
        run_event_loop(app, run_workstation(ws, on_ready=test.run, app=app, seconds=0))
    except StepFailed as exc:
        code, failure = 1, f"FAILED step '{exc.step}': {exc.detail}"
    except Exception as exc:  # the window or the engine could not start at all
        log.exception("self-test could not start")
        code, failure = 2, f"FAILED to start the workstation: {type(exc).__name__}: {exc}"
    if as_json:
        print(json.dumps({"ok": code == 0, "failure": failure, "steps": [asdict(r) for r in test.results]}, indent=2))
    if failure:
        print(failure, file=sys.stderr, flush=True)
    else:
        total = sum(r.seconds for r in test.results)
        print(f"selftest passed: {len(test.results)} steps in {total:.1f} s", flush=True)
    if tmp is not None:
        tmp.cleanup()
    return code
