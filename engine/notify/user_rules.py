"""The trader's own alerts (:class:`~engine.notify.config.UserAlertRule`), evaluated on events the engine
already publishes — nothing is polled or priced for them.

- ``UnderlyingUpdated`` → a symbol's last price; ``SurfaceUpdated`` → its ATM IV and IV rank;
- ``AccountUpdated`` → the portfolio's P&L today;
- ``ClockTicked`` → portfolio and per-underlying Greeks, read from the risk engine's exposure (which it keeps
  current on its own clock tick), through the ``exposure`` callable the notifier is given.

Rules are columns (threshold, operator, previous value, armed) indexed per (metric, key), so one event
compares all of its rules in one numpy expression: the cost per quote is a dict lookup and a few vector
operations, independent of the chain. A rule fires on the *edge* into its condition (``crosses``: the value
moved from one side of the threshold to the other since the last event). ``once`` then disarms it until
:meth:`UserRuleEvaluator.rearm` (the ``RearmUserAlert`` command, or saving the rules again); ``every`` fires
again at the next edge.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from engine.bus.events import AccountUpdated, ClockTicked, UnderlyingUpdated
from engine.bus.messages import Command, Event
from engine.notify.config import METRIC_LABEL, UserAlertRule
from engine.notify.rules import Emit, Notification

_ABOVE, _BELOW, _CROSSES = 0, 1, 2
_OPS = {"above": _ABOVE, "below": _BELOW, "crosses": _CROSSES}
GREEKS = ("delta", "gamma", "theta", "vega")

#: (portfolio exposure, exposure per underlying); attributes delta, gamma, theta, vega
ExposureSource = Callable[[], tuple[Any, dict[str, Any]]]


@dataclass(frozen=True, slots=True, kw_only=True)
class RearmUserAlert(Command):
    """Arm a user alert again (after a ``once`` rule fired); ``name`` empty re-arms every user alert."""

    name: str = ""


class UserRuleEvaluator:
    def __init__(self, rules: list[UserAlertRule], emit: Emit, exposure: ExposureSource | None = None) -> None:
        self._emit = emit
        self._exposure = exposure
        self.rules = [r for r in rules if r.enabled]
        n = len(self.rules)
        self.threshold = np.array([r.value for r in self.rules], dtype=float)
        self.op = np.array([_OPS[r.op] for r in self.rules], dtype=np.int8)
        self.once = np.array([r.repeat == "once" for r in self.rules], dtype=bool)
        self.armed = np.ones(n, dtype=bool)
        self.prev = np.full(n, np.nan)  # last value seen per rule
        self.active = np.zeros(n, dtype=bool)  # condition true at the last value
        self.last_value = np.full(n, np.nan)
        self.fired_count = np.zeros(n, dtype=np.int64)
        #: (metric, key) → indices of the rules watching it; key is the symbol, or "" for the portfolio
        self._index: dict[tuple[str, str], np.ndarray] = {}
        groups: dict[tuple[str, str], list[int]] = {}
        for i, r in enumerate(self.rules):
            groups.setdefault((r.metric, r.symbol if r.target != "portfolio" else ""), []).append(i)
        self._index = {k: np.array(v, dtype=np.intp) for k, v in groups.items()}
        self._metrics = {m for m, _ in groups}
        self._position_keys = sorted({r.symbol for r in self.rules if r.target == "position"})

    def handlers(self) -> list[tuple[type[Event], Callable[[Any], None]]]:
        """Only the subscriptions some enabled rule needs."""
        from engine.surface.service import SurfaceUpdated

        out: list[tuple[type[Event], Callable[[Any], None]]] = []
        if "last" in self._metrics:
            out.append((UnderlyingUpdated, self.on_underlying))
        if self._metrics & {"iv", "iv_rank"}:
            out.append((SurfaceUpdated, self.on_surface))
        if "pnl_today" in self._metrics:
            out.append((AccountUpdated, self.on_account))
        if self._metrics & set(GREEKS) and self._exposure is not None:
            out.append((ClockTicked, self.on_tick))
        return out

    def index(self, name: str) -> int:
        return next(i for i, r in enumerate(self.rules) if r.name == name)

    def rearm(self, name: str = "") -> list[str]:
        """Arm ``name`` (every rule when empty) again; returns the names re-armed. Unknown name: KeyError."""
        if name:
            if not any(r.name == name for r in self.rules):
                raise KeyError(f"no enabled user alert named {name!r}")
            idx = np.array([self.index(name)])
        else:
            idx = np.flatnonzero(~self.armed)
        self.armed[idx] = True
        # a re-armed rule waits for the next edge: what holds now does not fire at once
        return [self.rules[i].name for i in idx]

    # ---- evaluation -------------------------------------------------------------------------------
    def update(self, metric: str, key: str, value: float, ts: datetime) -> None:
        """Feed one value of (metric, key) to every rule watching it (vectorised over those rules)."""
        idx = self._index.get((metric, key))
        if idx is None or not math.isfinite(value):
            return
        thr = self.threshold[idx]
        op = self.op[idx]
        prev = self.prev[idx]
        above, below = value > thr, value < thr
        known = ~np.isnan(prev)
        crossed = known & (((prev <= thr) & above) | ((prev >= thr) & below))
        now_active = np.where(op == _ABOVE, above, np.where(op == _BELOW, below, crossed))
        # above/below: the edge into the condition; a crossing is itself an edge (every crossing counts)
        edge = np.where(op == _CROSSES, crossed, now_active & ~self.active[idx])
        fire = edge & self.armed[idx]
        self.active[idx] = now_active
        self.prev[idx] = value
        self.last_value[idx] = value
        if not fire.any():
            return
        hits = idx[fire]
        self.fired_count[hits] += 1
        self.armed[hits[self.once[hits]]] = False
        for i, was in zip(hits, prev[fire], strict=True):
            self._fire(int(i), value, float(was), ts)

    def _fire(self, i: int, value: float, was: float, ts: datetime) -> None:
        r = self.rules[i]
        label = METRIC_LABEL[r.metric]
        moved = f" (from {was:,.4g})" if math.isfinite(was) else ""
        then = " Fires once: re-arm it in the Alert rules dialog." if r.repeat == "once" else ""
        self._emit(Notification(rule=r.name, kind="user", level=r.level, title=f"Alert {r.name}: {r.describe()}",
                                message=f"{label} is {value:,.4g}{moved}; the rule says {r.op} {r.value:g}.{then}",
                                ts=ts, dedupe=False))

    # ---- handlers ---------------------------------------------------------------------------------
    def on_underlying(self, ev: UnderlyingUpdated) -> None:
        self.update("last", ev.symbol, float(ev.price), ev.ts)

    def on_surface(self, ev: Any) -> None:
        self.update("iv", ev.underlying, float(ev.atm_iv) * 100.0, ev.ts)
        self.update("iv_rank", ev.underlying, float(ev.iv_rank.rank) * 100.0, ev.ts)

    def on_account(self, ev: AccountUpdated) -> None:
        self.update("pnl_today", "", float(ev.account.day_pnl), ev.ts)

    def on_tick(self, ev: ClockTicked) -> None:
        if self._exposure is None:
            return
        total, by_underlying = self._exposure()
        for g in GREEKS:
            if (g, "") in self._index:
                self.update(g, "", float(getattr(total, g)), ev.ts)
            for u in self._position_keys:
                if (g, u) in self._index:
                    e = by_underlying.get(u)
                    self.update(g, u, float(getattr(e, g)) if e is not None else 0.0, ev.ts)
