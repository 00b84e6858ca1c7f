"""The :class:`~engine.core.Engine`'s commands and connections, once it runs: brokers connected and
disconnected (their feed replacing the simulated market and back), the chain window and expirations, settings
applied from one source, and the simulated clock moved — each audited and published on the bus."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from engine.bus import (
    ApplySettings,
    Bus,
    JumpToNextRealSession,
    ListExpirations,
    RestartSimulatedDay,
    SearchSymbols,
    SelectUnderlying,
    SettingsApplied,
)
from engine.engine_state import EngineState, log

if TYPE_CHECKING:
    from engine.facade_types import Feed


class EngineCommands(EngineState):
    """Broker connections, the feed's chain commands, settings and the simulated clock."""

    # ---- broker connections ----------------------------------------------------------------------
    async def connect_broker(self, name: str, *, credentials: Any = None, config: Any = None,
                             use_live_data: bool = True) -> Any:
        """Connect tastytrade or IBKR and make it routable; by default its quotes replace the simulated
        market (paper trading on live data: the paper broker fills on whatever feed publishes).
        ``config``: a ``BrokersConfig`` to use instead of the settings (the credentials dialog's fields).

        The broker is *not* live: only ``SwitchMode(mode="live", confirmed_account_id=...)`` arms it.
        Raises ``BrokerError``/``CredentialsMissing`` with a readable message when it cannot connect.
        """
        from engine.brokers.adapters import build_adapter
        from engine.bus import FeedChanged

        assert self.bus is not None and self.router is not None and self.market is not None
        if name in self.adapters:
            return self.adapters[name].broker
        if credentials is None:
            if self.credentials is None:
                from engine.credentials import CredentialStore

                self.credentials = await asyncio.to_thread(CredentialStore)  # reads the env once, probes the keyring
            credentials = self.credentials
        symbols = self.simulated_feed.underlyings() if self.simulated_feed is not None else ["SPY"]
        adapter = build_adapter(name, config or self.settings.brokers, self.bus, credentials=credentials,
                                underlyings=[s for s in symbols if s != "VIX"])
        try:
            await adapter.broker.connect()
        except BaseException:
            with contextlib.suppress(Exception):
                await adapter.broker.disconnect()
            raise
        self.adapters[name] = adapter
        self.brokers[name] = adapter.broker
        self.router.add_broker(adapter.broker)  # no router breaker: the adapter wraps every call in its own
        if use_live_data:
            await adapter.feed.start()
            if self.feed is self.simulated_feed and self.feed is not None:
                await self.feed.stop()
            self.feed = adapter.feed
            self.market.feed = adapter.feed
            self.clock = self.wall_clock  # live data: the engine clock is the real one
            self.bus.publish(FeedChanged(feed=adapter.feed.name, underlyings=tuple(adapter.feed.underlyings())))
            if self.surfaces is not None:
                self.surfaces.recorded_source = "surface"
            source = adapter.history_source(asyncio.get_running_loop())
            if self.history is not None and source is not None:  # IV rank from the broker's own history
                await self.history.use_source(source, [u for u in adapter.feed.underlyings() if u != "VIX"])
        return adapter.broker

    async def disconnect_broker(self, name: str) -> None:
        """Disconnect a broker; refused while the engine is live on it. The simulated market resumes."""
        from engine.bus import FeedChanged
        from engine.oms.router import ModeSwitchError

        assert self.bus is not None and self.router is not None and self.market is not None
        adapter = self.adapters.get(name)
        if adapter is None:
            return
        if self.router.is_live and self.router.active_name == name:
            raise ModeSwitchError(f"switch to paper before disconnecting {name}")
        self.adapters.pop(name)
        self.brokers.pop(name, None)
        self.router.brokers.pop(name, None)
        live_feed: Feed = adapter.feed
        if self.feed is live_feed:
            await live_feed.stop()
            self.feed = self.simulated_feed
            self.market.feed = self.simulated_feed
            if self.simulated_feed is not None:
                self.clock = self.simulated_feed.clock
                await self.simulated_feed.start()
                self.bus.publish(FeedChanged(feed=self.simulated_feed.name,
                                             underlyings=tuple(self.simulated_feed.underlyings())))
                if self.surfaces is not None:
                    self.surfaces.recorded_source = "simulated surface"
                if self.history is not None and self.history.source is not None \
                        and self.history.source.name == name:
                    from engine.history import SimulatedHistorySource

                    market = self.simulated_feed.market
                    await self.history.use_source(SimulatedHistorySource(market.config, anchor=market.spots()),
                                                  list(market.symbols))
        else:
            await adapter.feed.stop()
        await adapter.broker.disconnect()

    async def _disconnect_all_brokers(self) -> None:
        for name in list(self.adapters):
            adapter = self.adapters.pop(name)
            for step in (adapter.feed.stop, adapter.broker.disconnect):
                try:
                    await asyncio.wait_for(step(), 10)
                except Exception:  # one adapter failing to stop must not keep the other brokers connected at shutdown
                    log.exception("error while disconnecting %s", name)

    async def _cmd_select_underlying(self, cmd: SelectUnderlying) -> None:
        """Stream the visible window of a chain from whichever feed is current (it survives feed swaps)."""
        from engine.market.feed import FeedError

        if self.feed is None:
            raise FeedError("no market-data feed is running")
        await self.feed.subscribe(cmd.symbol, list(cmd.expiries) or None, cmd.strikes)

    async def _cmd_list_expirations(self, cmd: ListExpirations) -> list[Any]:
        from engine.market.feed import FeedError

        if self.feed is None:
            raise FeedError("no market-data feed is running")
        return sorted(await self.feed.expirations(cmd.symbol))

    async def _cmd_search_symbols(self, cmd: SearchSymbols) -> list[Any]:
        """The current feed's symbol search (engine/market/symbols.py): a connected broker's, else the simulated
        market's own list."""
        from engine.market.feed import FeedError

        if self.feed is None:
            raise FeedError("no market-data feed is running")
        return await self.feed.search_symbols(cmd.prefix, cmd.limit)

    # ---- settings: one source --------------------------------------------------------------------
    def _register_settings_handlers(self, bus: Bus) -> None:
        """``ApplySettings`` and ``ListExpirations``; and ``engine.settings`` follows the level and approval
        mode the components run at (the store's persisted values win over the file at start, and the
        slider and the approval toggle change them later), so every reader sees one value."""
        from engine.bus import ApprovalModeChanged, RiskProfileChanged

        bus.register(ApplySettings, self._cmd_apply_settings)
        bus.register(ListExpirations, self._cmd_list_expirations)
        bus.register(SearchSymbols, self._cmd_search_symbols)
        self._sync_settings_from_components()
        subs = [bus.subscribe(RiskProfileChanged, lambda _ev: self._sync_settings_from_components(),
                              name="Engine.settings_risk_level"),
                bus.subscribe(ApprovalModeChanged, lambda _ev: self._sync_settings_from_components(),
                              name="Engine.settings_approval")]

        async def unsubscribe() -> None:
            for sub in subs:
                sub.cancel()

        self.on_stop(unsubscribe)

    def _sync_settings_from_components(self) -> None:
        s = self.settings
        risk = s.risk
        if self.risk is not None and risk.level != self.risk.profile.level:
            risk = risk.model_copy(update={"level": self.risk.profile.level})
        oms = s.oms
        if self.oms is not None:
            gate = self.oms.gate.enabled
            oms = oms.model_copy(update={"approval_in_paper": bool(gate.get("paper", oms.approval_in_paper)),
                                         "approval_in_live": bool(gate.get("live", oms.approval_in_live))})
        if risk is not s.risk or oms != s.oms:
            self.settings = s.model_copy(update={"risk": risk, "oms": oms})

    async def _cmd_apply_settings(self, cmd: ApplySettings) -> SettingsApplied:
        """Save, swap, then let each running component take what it owns: the risk level through the
        slider's ``SetRiskLevel``, manual approval through the gate (``SetApprovalMode`` for the current
        mode), notification rules and destinations by reconfiguring the notifier. Everything else was
        wired into components at start and is reported as taking effect at the next start."""
        from engine.bus import SetApprovalMode, SetRiskLevel
        from engine.settings import Settings, save_settings

        assert self.bus is not None
        new = cmd.settings
        if not isinstance(new, Settings):
            raise TypeError(f"ApplySettings needs engine.settings.Settings, not {type(new).__name__}")
        changed = _changed_keys(self.settings, new)
        path: str | None = None
        if cmd.save:
            path = str(await asyncio.to_thread(save_settings, new, self.paths.settings_file))
        self.settings = new
        applied: set[str] = set()
        if self.risk is not None and new.risk.level != self.risk.profile.level:
            await self.bus.send(SetRiskLevel(level=float(new.risk.level)))
            applied.add("risk.level")
        elif "risk.level" in changed:
            applied.add("risk.level")  # already the running level
        if self.oms is not None and self.router is not None:
            from engine.oms.manager import KV_APPROVAL

            gate = self.oms.gate
            for mode, wanted in (("paper", new.oms.approval_in_paper), ("live", new.oms.approval_in_live)):
                key = f"oms.approval_in_{mode}"
                if gate.enabled.get(mode) != wanted:
                    if mode == self.router.mode:
                        await self.bus.send(SetApprovalMode(enabled=wanted, by=cmd.by))
                    else:
                        gate.set_enabled(mode, wanted, cmd.by)
                        if self.store is not None:
                            self.store.kv.set(KV_APPROVAL, gate.enabled)
                    applied.add(key)
                elif key in changed:
                    applied.add(key)
        notify_keys = {k for k in changed if k.startswith("notify.") and k != "notify.enabled"}
        if notify_keys and self.notifier is not None and new.notify.enabled:
            await self.notifier.reconfigure(new.notify)
            applied |= notify_keys
        self._sync_settings_from_components()
        if self.store is not None:
            self.store.audit.record(cmd.by, "settings", {"changed": sorted(changed), "path": path})
        return SettingsApplied(path=path, applied=tuple(sorted(applied)),
                               at_restart=tuple(sorted(set(changed) - applied)))

    # ---- the simulated clock ---------------------------------------------------------------------
    def _running_simulation(self) -> Any:
        from engine.market.feed import FeedError

        if self.simulated_feed is None or self.feed is not self.simulated_feed:
            raise FeedError("the simulated market is not running (a broker's live data is the feed): "
                            "its clock cannot be moved")
        return self.simulated_feed

    async def _cmd_restart_simulated_day(self, cmd: RestartSimulatedDay) -> Any:
        """Back to the open of the simulated day, its path replayed; audited. Returns the new market time."""
        feed = self._running_simulation()
        before = feed.now()
        now = await feed.restart_day()
        self._clock_moved("restart_day", before, now, cmd.by)
        return now

    async def _cmd_jump_to_next_real_session(self, cmd: JumpToNextRealSession) -> Any:
        """The simulated market to the open of the real session running now or opening next; audited."""
        feed = self._running_simulation()
        wall = self.wall_clock.now()
        cal = feed.market.calendar
        session = cal.current_or_next_session(wall)
        target, _ = cal.open_close(session)
        before = feed.now()
        now = await feed.jump_to(target)
        self._clock_moved("jump_to_real_session", before, now, cmd.by, wall=wall)
        return now

    def _clock_moved(self, action: str, before: Any, now: Any, by: str, **detail: Any) -> None:
        from engine.bus import SimulatedClockMoved

        assert self.store is not None and self.bus is not None
        self.store.audit.record(by, f"simulated_clock:{action}", {
            "from": before.isoformat(), "to": now.isoformat(), **{k: v.isoformat() for k, v in detail.items()}})
        self.bus.publish(SimulatedClockMoved(action=action, previous=before, now=now, by=by))
        self._publish_session()


def _changed_keys(old: Any, new: Any) -> set[str]:
    """Dotted keys whose values differ between two settings models (mappings compared key by key,
    lists as a whole: a rule list is one setting)."""
    changed: set[str] = set()

    def walk(a: Any, b: Any, prefix: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for k in set(a) | set(b):
                walk(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else str(k))
        elif a != b:
            changed.add(prefix)

    walk(old.model_dump(mode="json"), new.model_dump(mode="json"), "")
    return changed
