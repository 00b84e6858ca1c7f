"""Regime router: which strategies may open trades in which regime, as rule data.

In a trader's words: a book of strategies, each with the regimes it is allowed to open trades in — sell
premium (put spreads, condors) when vol is high or falling, buy it (debit spreads) when vol is cheap or
expanding, stand aside when the regime is ``neutral``. Every chain goes to every child strategy; a child
whose regime list does not contain today's regime is paused for entries only, so it still takes profits,
stops out and closes at its DTE exit on the trades it already holds. At most ``max_entries_per_chain`` new
trade per snapshot (one by default), the children asked in their listed order: the list is a priority. Order updates always reach the child
that placed the order, whatever the regime now.

Orders carry the router's strategy id (so the host and the backtester deliver their updates here) and the
child's tags (``<router id>.<child>-00001:open``), by which the router hands each update to its owner.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from engine.model import Fill, OptionChain, Order, OrderIntent
from engine.strategies.base import REGIMES, Strategy, StrategyContext, StrategyParams


class RoutedChild(BaseModel):
    """One child: a registered strategy by name, its parameters and the regimes it may open trades in."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    params: dict[str, Any] = Field(default_factory=dict)
    regimes: tuple[str, ...]

    @model_validator(mode="after")
    def _known(self) -> RoutedChild:
        from engine.strategies import registry

        known = registry()
        if self.name not in known or self.name == "regime_router":
            names = ", ".join(sorted(n for n in known if n != "regime_router"))
            raise ValueError(f"unknown child strategy {self.name!r} (known: {names})")
        unknown = [r for r in self.regimes if r not in REGIMES]
        if unknown:
            raise ValueError(f"child {self.name}: unknown regimes {unknown} (known: {', '.join(REGIMES)})")
        return self


#: built unvalidated (the registry that validates names imports this module); the names are registered ones
#: sell premium when it is rich or falling, buy it when cheap or expanding; the two directional children share
#: the portfolio delta limit (a quarter of the Moderate limit each) and buy different widths, so that they never
#: hold the very same spread (whose identical closing orders the risk engine's duplicate guard would hold up)
DEFAULT_CHILDREN = (
    RoutedChild.model_construct(name="iv_rank_put_spread", params={}, regimes=("high_vol", "iv_contraction")),
    RoutedChild.model_construct(name="iron_condor", params={"iv_rank_entry": 0.3}, regimes=("iv_contraction",)),
    RoutedChild.model_construct(name="iv_rank_debit", params={"greeks": {"delta_shares": 25.0}},
                                regimes=("low_vol", "iv_expansion")),
    RoutedChild.model_construct(name="momentum_debit", params={"greeks": {"delta_shares": 25.0}, "width": 5.0},
                                regimes=("low_vol", "iv_expansion")),
)


class RegimeRouterParams(StrategyParams):
    """``underlying``, ``tif`` and ``max_open_trades`` apply to the children (each child's own limit still
    holds); the router's ``rules`` and ``pricing`` are not used — each child manages with its own."""

    children: tuple[RoutedChild, ...] = DEFAULT_CHILDREN
    #: at most this many new trades per chain snapshot, children asked in their listed order (their priority):
    #: two children opening the same spread at once would be one position twice (and a duplicate order)
    max_entries_per_chain: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _some(self) -> RegimeRouterParams:
        if not self.children:
            raise ValueError("children: a regime router needs at least one child strategy")
        return self


class RegimeRouter(Strategy[RegimeRouterParams]):
    name = "regime_router"
    Params = RegimeRouterParams

    def __init__(self, params: Any = None, *, strategy_id: str | None = None) -> None:
        super().__init__(params, strategy_id=strategy_id)
        from engine.strategies import create

        self.children: list[Strategy] = []
        self.allowed: list[frozenset[str]] = []
        seen: dict[str, int] = {}
        for spec in self.params.children:
            seen[spec.name] = seen.get(spec.name, 0) + 1
            suffix = "" if seen[spec.name] == 1 else f"{seen[spec.name]}"
            child_id = f"{self.strategy_id}.{spec.name}{suffix}"
            child = create(spec.name, {**spec.params, "underlying": self.params.underlying, "tif": self.params.tif},
                           strategy_id=child_id)
            self.children.append(child)
            self.allowed.append(frozenset(spec.regimes))
        self._owner: dict[str, int] = {}  # trade tag (before the first ':') -> child index

    # ---- routing ----------------------------------------------------------------------------------
    def _child_of(self, tag: str) -> int | None:
        key = tag.split(":", 1)[0]
        if key in self._owner:
            return self._owner[key]
        for i, child in enumerate(self.children):  # after a restart: the child id prefixes its tags
            if key.startswith(child.strategy_id + "-"):
                return i
        return None

    def _adopt(self, index: int, intents: Sequence[OrderIntent]) -> list[OrderIntent]:
        """The child's intents under the router's id (so their updates come here), remembering the owner."""
        out = []
        for intent in intents:
            self._owner[intent.tag.split(":", 1)[0]] = index
            out.append(replace(intent, strategy_id=self.strategy_id, source=f"strategy:{self.strategy_id}"))
        return out

    def _gate(self, ctx: StrategyContext) -> None:
        regime = ctx.regime(self.underlying)
        for child, allowed in zip(self.children, self.allowed, strict=True):
            child.entries_paused = regime not in allowed

    # ---- callbacks --------------------------------------------------------------------------------
    def on_start(self, ctx: StrategyContext) -> None:
        for child in self.children:
            child.on_start(ctx)

    def on_chain(self, ctx: StrategyContext, chain: OptionChain) -> Sequence[OrderIntent]:
        self._gate(ctx)
        out: list[OrderIntent] = []
        opened = 0
        for i, child in enumerate(self.children):
            if opened >= self.params.max_entries_per_chain:
                child.entries_paused = True  # exits still go on
            got = self._adopt(i, child.on_chain(ctx, chain))
            opened += sum(1 for intent in got if intent.tag.endswith(":open"))
            out += got
        return out

    def on_timer(self, ctx: StrategyContext, now: datetime) -> Sequence[OrderIntent]:
        self._gate(ctx)
        out: list[OrderIntent] = []
        for i, child in enumerate(self.children):
            out += self._adopt(i, child.on_timer(ctx, now))
        return out

    def on_order(self, ctx: StrategyContext, order: Order, fills: Sequence[Fill] = ()) -> Sequence[OrderIntent]:
        i = self._child_of(order.tag)
        if i is None:
            return ()
        self._gate(ctx)  # a re-sent entry attempt is an entry: only in an allowed regime
        return self._adopt(i, self.children[i].on_order(ctx, order, fills))

    def fit(self, history: Any) -> None:
        for child in self.children:
            child.fit(history)

    # ---- state ------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Each child's state under its id, and which child owns which trade tag."""
        return {"children": {c.strategy_id: c.state() for c in self.children}, "owners": dict(self._owner)}

    def restore(self, state: dict[str, Any]) -> None:
        saved = state.get("children") or {}
        for child in self.children:
            if child.strategy_id in saved:
                child.restore(saved[child.strategy_id])
        self._owner = {str(k): int(v) for k, v in (state.get("owners") or {}).items() if 0 <= int(v) < len(self.children)}
