"""Read-only lookups of engine state for the panels (no I/O, no trading logic).

Components appear on the engine as their issues land (``feed``, ``oms``, ``risk``, ``surfaces`` ...);
every function here answers sensibly when a component is absent (empty list, None, settings default).
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from engine.model import OptionChain


def now(engine: Any) -> datetime:
    """Market time: the feed's (simulated) clock, else the engine clock; wall time (UTC) only without an
    engine (a panel shown on its own)."""
    feed = getattr(engine, "feed", None)
    if feed is not None:
        try:
            t = feed.now()
        except Exception:
            t = None
        if t is not None:
            return t
    clock = getattr(engine, "clock", None)
    if clock is not None:
        return clock.now()
    from engine.clock import WallClock

    return WallClock().now()


def underlyings(engine: Any) -> list[str]:
    feed = getattr(engine, "feed", None)
    if feed is None:
        return []
    try:
        return list(feed.underlyings())
    except Exception:
        return []


def last_chain(engine: Any, underlying: str) -> OptionChain | None:
    feed = getattr(engine, "feed", None)
    if feed is None or not underlying:
        return None
    try:
        return feed.last_chain(underlying)
    except Exception:
        return None


def last_price(engine: Any, symbol: str) -> float | None:
    feed = getattr(engine, "feed", None)
    if feed is None:
        return None
    try:
        p = feed.last_price(symbol)
    except Exception:
        return None
    return float(p) if p is not None and math.isfinite(p) else None


def rates(engine: Any, underlying: str) -> tuple[float, float]:
    """(risk-free rate, dividend yield) used by the engine's risk view, else the simulator settings."""
    risk = getattr(engine, "risk", None)
    view = getattr(risk, "market", None) or getattr(risk, "market_view", None)
    if view is not None and hasattr(view, "rate"):
        q = getattr(view, "dividend_yields", {}).get(underlying, 0.0)
        return float(view.rate), float(q)
    settings = getattr(engine, "settings", None)
    sim = getattr(settings, "simulator", None)
    r = float(getattr(sim, "risk_free_rate", 0.04)) if sim is not None else 0.04
    q = 0.0
    for spec in getattr(sim, "universe", []) or []:
        if getattr(spec, "symbol", None) == underlying:
            q = float(getattr(spec, "dividend_yield", 0.0) or 0.0)
    return r, q


def smile_vol_at(engine: Any, underlying: str, T: float) -> Any:
    """The engine's fitted smile at ``T`` years as a callable ``strikes -> vols`` (None without a surface).

    Used for the probability of profit so that the ticket and the payoff panel quote the same number.
    """
    import numpy as np

    surfaces = getattr(engine, "surfaces", None)
    if surfaces is None or not math.isfinite(T) or T <= 0:
        return None
    try:
        ev = surfaces.latest(underlying)
    except Exception:
        return None
    if ev is None or not getattr(ev.fit, "ok", True):
        return None
    surface = ev.fit.surface
    if getattr(surface, "empty", False):
        return None

    def vol_at(strikes: Any) -> Any:
        return np.asarray(surface.implied_vol(np.asarray(strikes, float), T), dtype=float)

    return vol_at


def stress_move(engine: Any) -> float:
    """The risk engine's stress move (0.15 = ±15 %), so views quote the loss the risk check limits."""
    risk = getattr(engine, "risk", None)
    prof = getattr(risk, "profile", None)
    value = getattr(prof, "stress_move_pct", None)
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0.15
    return v if math.isfinite(v) and 0 < v < 1 else 0.15
