"""The strategy host's commands: ``StartStrategy``, ``PauseStrategy``, ``StopStrategy``, ``SetStrategyParams`` and
``SetStrategyMode`` (engine/bus/commands.py), registered by :class:`~engine.strategies.host.StrategyHost` at start.

Each is audited, accepted or refused; a refusal raises :class:`StrategyCommandError` with the reason, which the
Strategies panel and ``optiondesk trade`` show as they are. Going live needs a confirmation naming a connected
live account and no open trades or working orders: money moves to another account only by its owner's word.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from engine.bus.commands import (
    CancelOrder,
    PauseStrategy,
    SetStrategyMode,
    SetStrategyParams,
    StartStrategy,
    StopStrategy,
)
from engine.bus.events import StrategyStateChanged
from engine.credentials import mask_account

if TYPE_CHECKING:
    from engine.strategies.host import Hosted, StrategyHost

log = logging.getLogger("engine.strategies.host")


class StrategyCommandError(ValueError):
    """A strategy command was refused; the message says why (shown to the user)."""


def get_hosted(host: StrategyHost, strategy_id: str) -> Hosted:
    """The strategy a command names; refused when it is unknown or its settings entry is invalid."""
    hs = host.hosted.get(strategy_id)
    if hs is None:
        raise StrategyCommandError(f"no strategy {strategy_id!r} in the settings (have: "
                                   f"{', '.join(sorted(host.hosted)) or 'none'})")
    if hs.entry is None:
        raise StrategyCommandError(f"strategy {strategy_id!r} has an invalid settings entry: {hs.reason}")
    return hs


async def start(host: StrategyHost, cmd: StartStrategy) -> str:
    hs = get_hosted(host, cmd.strategy_id)
    if host.kill_switch is not None and host.kill_switch.tripped:
        audit(host, cmd.by, "strategy_start_refused", hs, reason="kill switch tripped")
        raise StrategyCommandError(f"the kill switch is tripped: reset it before starting {hs.strategy_id}")
    if (problem := host._mode_problem(hs)) is not None:
        audit(host, cmd.by, "strategy_start_refused", hs, reason=problem)
        raise StrategyCommandError(problem)
    if hs.state == "running":
        return hs.state
    if hs.runner is None:
        host._load(hs)  # stopped or disabled: the books as last stored, in a fresh object
        host._build(hs)
        if hs.runner is None:
            raise StrategyCommandError(f"strategy {hs.strategy_id} cannot start: {hs.reason}")
    host._run(hs, reason=f"started by {cmd.by}", by=cmd.by)
    return hs.state


async def pause(host: StrategyHost, cmd: PauseStrategy) -> str:
    hs = get_hosted(host, cmd.strategy_id)
    if hs.state != "running" or hs.runner is None:
        raise StrategyCommandError(f"strategy {hs.strategy_id} is {hs.state}, not running")
    hs.runner.pause()
    hs.paused_by = "user"
    host._set_state(hs, "paused", cmd.reason)
    audit(host, cmd.by, "strategy_pause", hs, reason=cmd.reason)
    return hs.state


async def stop(host: StrategyHost, cmd: StopStrategy) -> str:
    hs = get_hosted(host, cmd.strategy_id)
    cancelled = 0
    if hs.runner is not None:
        runner, hs.runner = hs.runner, None
        runner.pause()
        await runner.stop()
        host._persist(hs, runner=runner)
        if cmd.cancel_orders:
            for o in runner.open_orders():
                try:
                    await host.bus.send(CancelOrder(order_id=o.order_id, by=f"strategy-host:{cmd.by}"))
                    cancelled += 1
                except Exception as exc:  # one refused cancel must not stop the others when a strategy is stopped
                    log.warning("strategy %s: could not cancel %s: %s", hs.strategy_id, o.order_id, exc)
    host._set_state(hs, "stopped", f"stopped by {cmd.by}" + (f"; {cancelled} order(s) cancelled" if cancelled else ""))
    audit(host, cmd.by, "strategy_stop", hs, cancelled=cancelled)
    return hs.state


async def set_params(host: StrategyHost, cmd: SetStrategyParams) -> dict[str, Any]:
    hs = get_hosted(host, cmd.strategy_id)
    from engine import strategies

    cls = strategies.registry()[hs.name]
    try:
        params = cls.parse_params(dict(cmd.params))
    except Exception as exc:  # a strategy's own parse_params may raise anything: it is a bad-parameters error
        raise StrategyCommandError(f"bad parameters for {hs.strategy_id}: {exc}") from None
    assert hs.entry is not None
    hs.entry = hs.entry.model_copy(update={"params": params.model_dump(mode="json")})
    if hs.strategy is not None:
        hs.strategy.params = params
    audit(host, cmd.by, "strategy_params", hs, params=params.model_dump(mode="json"))
    host._note(hs, "parameters changed")
    host.bus.publish(StrategyStateChanged(strategy_id=hs.strategy_id, name=hs.name, state=hs.state,
                                          previous=hs.state, mode=hs.mode, reason="parameters changed"))
    return params.model_dump(mode="json")


async def set_mode(host: StrategyHost, cmd: SetStrategyMode) -> str:
    hs = get_hosted(host, cmd.strategy_id)
    try:
        account = check_mode_change(host, hs, cmd.mode, cmd.confirm_account)
    except StrategyCommandError as exc:
        audit(host, cmd.by, "strategy_mode_refused", hs, mode=cmd.mode, reason=str(exc))
        raise
    hs.mode, hs.live_account = cmd.mode, account
    assert hs.entry is not None
    hs.entry = hs.entry.model_copy(update={"mode": cmd.mode, "live_account": account})
    audit(host, cmd.by, "strategy_mode", hs, mode=cmd.mode, account=mask_account(account) if account else "")
    if hs.state == "running" and (problem := host._mode_problem(hs)) is not None and hs.runner is not None:
        hs.runner.pause()
        hs.paused_by = "mode"
        host._set_state(hs, "paused", problem)
    elif hs.state == "paused" and hs.paused_by == "mode" and host._mode_problem(hs) is None and hs.runner:
        hs.runner.resume()
        host._set_state(hs, "running", f"now on its {cmd.mode} account")
    else:
        host._set_state(hs, hs.state, f"mode set to {cmd.mode}")
    return hs.mode


def check_mode_change(host: StrategyHost, hs: Hosted, mode: str, confirm: str | None) -> str:
    """The live account id a switch to ``mode`` is confirmed for ("" for paper); refuses with the reason."""
    if mode not in ("paper", "live"):
        raise StrategyCommandError(f"unknown mode {mode!r}: use 'paper' or 'live'")
    busy = host._open_trade_count(hs) + len(hs.runner.open_orders() if hs.runner else ())
    if mode != hs.mode and busy:
        raise StrategyCommandError(f"strategy {hs.strategy_id} has {busy} open trade(s) or working order(s) on "
                                   f"its {hs.mode} account: close them before moving it")
    if mode == "paper":
        return ""
    accounts = host.live_accounts()
    if not accounts:
        raise StrategyCommandError("no live broker is connected: a strategy can go live only on a connected "
                                   "broker's account")
    if not confirm:
        raise StrategyCommandError(f"enabling {hs.strategy_id} for live trading needs a confirmation naming the "
                                   f"account ({', '.join(mask_account(a) for a in accounts)})")
    if confirm not in accounts:
        raise StrategyCommandError(f"confirmation names account {mask_account(confirm)}, which is not a "
                                   f"connected live account ({', '.join(mask_account(a) for a in accounts)})")
    return confirm


def audit(host: StrategyHost, by: str, action: str, hs: Hosted, **detail: Any) -> None:
    try:
        host.store.audit.record(by, action, {"strategy_id": hs.strategy_id, **detail})
    except Exception:  # an audit write failing (full disk) must not undo the strategy command it records
        log.exception("could not audit %s", action)


__all__ = ["StrategyCommandError", "audit", "check_mode_change", "get_hosted", "pause", "set_mode",
           "set_params", "start", "stop"]
