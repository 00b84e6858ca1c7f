"""What every chaos case reports, and the one JSON document the suite prints.

The three money figures are defined once, here, so every family counts them the same way:

- **lost**: an intent the engine had accepted (persisted) that the store no longer has after restart and
  reconciliation, or an order at the broker the store does not know;
- **duplicated**: a second broker order for one client order id (or intent), or fills beyond an order's quantity;
- **left working after a trip**: an open order at the broker once a trip completed — also when the process was
  killed during the trip and restarted.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Case:
    family: str
    name: str
    survived: bool = True
    kills: int = 0
    lost: int = 0
    duplicated: int = 0
    left_working: int = 0
    trips: int = 0
    trips_lost: int = 0  # a trip under way when the process died, gone after the restart
    problems: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    repro: str = ""
    skipped: str = ""
    seconds: float = 0.0

    def fail(self, problem: str) -> None:
        """A behaviour the suite requires did not hold: the case did not survive (the reason is kept)."""
        self.survived = False
        self.problems.append(problem)

    def expect(self, ok: bool, problem: str) -> None:
        if not ok:
            self.fail(problem)

    def settle(self) -> Case:
        if self.lost or self.duplicated or self.left_working:
            self.survived = False
        return self


async def run_case(case: Case, body: Callable[[Case], Awaitable[None]]) -> Case:
    """Run one case body; an exception escaping it is a failed case with its traceback tail, never a crash of
    the whole suite (the other cases still run and are counted)."""
    t0 = time.perf_counter()
    try:
        await body(case)
    except Exception as exc:
        case.fail(f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=6)[-1500:]}")
    case.seconds = round(time.perf_counter() - t0, 2)
    return case.settle()


def summarise(cases: list[Case], *, quick: bool, seed: int, seconds: float) -> dict[str, Any]:
    ran = [c for c in cases if not c.skipped]
    families: dict[str, dict[str, Any]] = {}
    for c in cases:
        f = families.setdefault(c.family, {"cases": 0, "survived": 0, "skipped": 0, "kills": 0, "lost": 0,
                                           "duplicated": 0, "left_working_after_trip": 0, "trips": 0,
                                           "trips_lost": 0})
        if c.skipped:
            f["skipped"] += 1
            continue
        f["cases"] += 1
        f["survived"] += int(c.survived)
        f["kills"] += c.kills
        f["lost"] += c.lost
        f["duplicated"] += c.duplicated
        f["left_working_after_trip"] += c.left_working
        f["trips"] += c.trips
        f["trips_lost"] += c.trips_lost
    return {
        "suite": "chaos",
        "quick": quick,
        "seed": seed,
        "seconds": round(seconds, 1),
        "cases": len(ran),
        "survived": sum(c.survived for c in ran),
        "kills": sum(c.kills for c in ran),
        "trips": sum(c.trips for c in ran),
        "trips_lost_in_a_crash": sum(c.trips_lost for c in ran),
        "orders_lost": sum(c.lost for c in ran),
        "orders_duplicated": sum(c.duplicated for c in ran),
        "left_working_after_trip": sum(c.left_working for c in ran),
        "families": families,
        "skipped": [{"family": c.family, "case": c.name, "why": c.skipped} for c in cases if c.skipped],
        "failures": [{"family": c.family, "case": c.name, "problems": c.problems, "lost": c.lost,
                      "duplicated": c.duplicated, "left_working_after_trip": c.left_working, "repro": c.repro,
                      "figures": c.figures} for c in ran if not c.survived],
        "figures": {f"{c.family}/{c.name}": c.figures for c in ran if c.figures},
    }


def as_dict(case: Case) -> dict[str, Any]:
    return asdict(case)
