"""The ``[[strategies]]`` settings section: which strategies the engine's host runs, on which account, with what
parameters and budget (docs/strategies.md).

Each entry is validated on its own: one bad entry must not cost the user the rest of the settings file, nor the
other strategies. :func:`split_entries` keeps the good entries and names what is wrong with each bad one; the
settings loader reports those as settings errors and the strategy host shows the bad entry as a disabled
strategy with an alert. A strategy's parameters are checked against its own parameter model by the host
(the settings schema cannot know a strategy's parameters without importing every strategy).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class StrategyBudget(BaseModel):
    """What one strategy may commit, enforced by the risk engine before each opening order.

    ``capital``: dollars of max loss its open trades and working entries may add up to;
    ``max_loss_per_day``: once its P&L today is this many dollars down, no new trades that day;
    ``max_open_trades``: trades held or being opened at once. ``None`` leaves a limit off.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    capital: float | None = Field(None, gt=0)
    max_loss_per_day: float | None = Field(None, gt=0)
    max_open_trades: int | None = Field(None, ge=1)


class StrategyEntry(BaseModel):
    """One hosted strategy. ``name`` is the strategy class (``optiondesk trade --strategy`` names); ``id`` tells
    two copies of one class apart (default: the name) and tags its orders, fills and stored state."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    id: str = ""
    enabled: bool = True
    mode: Literal["paper", "live"] = "paper"
    #: the live account this strategy was confirmed for (set by ``SetStrategyMode``; must match the broker's)
    live_account: str = ""
    params: dict[str, Any] = Field(default_factory=dict)
    budget: StrategyBudget = Field(default_factory=StrategyBudget)

    @model_validator(mode="before")
    @classmethod
    def _default_id(cls, data: Any) -> Any:
        """The id defaults to the name: one copy of a strategy needs no id of its own."""
        if isinstance(data, dict) and not data.get("id") and isinstance(data.get("name"), str):
            data = {**data, "id": data["name"]}
        return data

    @model_validator(mode="after")
    def _check(self) -> StrategyEntry:
        if not _ID.match(self.id):
            raise ValueError(f"id {self.id!r} must be 1-64 letters, digits, '_', '-' or '.', starting with a "
                             "letter or digit")
        if self.mode == "live" and not self.live_account:
            raise ValueError("mode 'live' needs live_account (the confirmed live account id); strategies go "
                             "live only through a confirmation naming the account")
        return self

    @property
    def strategy_id(self) -> str:
        return self.id


def entry_label(raw: Any, index: int) -> str:
    """How a (possibly broken) entry is named in messages: its id, else its name, else its position."""
    if isinstance(raw, dict):
        for key in ("id", "name"):
            value = raw.get(key)
            if isinstance(value, str) and value:
                return value[:64]
    return f"strategies[{index}]"


def split_entries(raw: Any) -> tuple[list[StrategyEntry], list[tuple[int, str, str, str]]]:
    """Validate a ``strategies`` list entry by entry: (good entries, [(index, label, key, message)]).

    ``key`` is the dotted settings key of the problem (``strategies.2.budget.capital``). Duplicate ids are an
    error of the later entry: two runners must never share one strategy id (they would share orders)."""
    if raw is None:
        return [], []
    if not isinstance(raw, list):
        return [], [(-1, "strategies", "strategies", "must be a list of [[strategies]] tables")]
    good: list[StrategyEntry] = []
    bad: list[tuple[int, str, str, str]] = []
    seen: set[str] = set()
    for i, item in enumerate(raw):
        label = entry_label(item, i)
        if not isinstance(item, dict):
            bad.append((i, label, f"strategies.{i}", "must be a table (name, id, enabled, mode, params, budget)"))
            continue
        try:
            entry = StrategyEntry.model_validate(item)
        except ValidationError as exc:
            for e in exc.errors():
                loc = ".".join(str(p) for p in e["loc"])
                msg = "unknown setting (typo?)" if e["type"] == "extra_forbidden" else e["msg"]
                bad.append((i, label, f"strategies.{i}" + (f".{loc}" if loc else ""), msg))
            continue
        if entry.id in seen:
            bad.append((i, label, f"strategies.{i}.id", f"id {entry.id!r} is used by an earlier entry"))
            continue
        seen.add(entry.id)
        good.append(entry)
    return good, bad


__all__ = ["StrategyBudget", "StrategyEntry", "entry_label", "split_entries"]
