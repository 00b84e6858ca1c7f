"""``python tests/chaos/run.py [--quick]``: run the chaos families and print one JSON document.

The full campaign (``make chaos``) takes a few minutes on two cores; ``--quick`` is the one-minute subset that
``test_chaos_quick.py`` runs inside ``make test``. Exit status 0 when every case survived with nothing lost,
duplicated or left working after a trip; 1 otherwise (the document's ``failures`` name each case with the
command that reproduces it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: the repository's tests/, not a site-packages "tests"
    import types
    from pathlib import Path as _Path

    _ROOT = _Path(__file__).resolve().parents[2]
    sys.path.insert(0, str(_ROOT))
    _pkg = types.ModuleType("tests")
    _pkg.__path__ = [str(_ROOT / "tests")]
    sys.modules["tests"] = _pkg

from tests.chaos.report import Case, summarise

FAMILIES = ("sigkill", "broker", "disk", "instances", "corruption")
#: (sigkill cases, lives per case) — the quick subset still kills ≥ 12 times and trips every way once
SIZES = {"quick": (4, 3), "full": (20, 3)}


async def run_suite(*, quick: bool, seed: int = 14, families: tuple[str, ...] = FAMILIES, only: int | None = None,
                    workdir: Path | None = None) -> dict[str, Any]:
    t0 = time.perf_counter()
    base = Path(tempfile.mkdtemp(prefix="optiondesk-chaos-", dir=workdir))
    cases: list[Case] = []
    try:
        if "sigkill" in families:
            from tests.chaos import sigkill

            n, lives = SIZES["quick" if quick else "full"]
            cases += await sigkill.run_family(base / "sigkill", seed=seed, cases=n, lives=lives, only=only)
        if "broker" in families:
            from tests.chaos import broker_faults

            cases += await broker_faults.run_family(base / "broker", quick=quick)
        if "disk" in families:
            from tests.chaos import disk_full

            cases += await disk_full.run_family(base / "disk", quick=quick)
        if "instances" in families:
            from tests.chaos import instances

            cases += await instances.run_family(base / "instances", quick=quick)
        if "corruption" in families:
            from tests.chaos import corruption

            cases += await corruption.run_family(base / "corruption", quick=quick)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return summarise(cases, quick=quick, seed=seed, seconds=time.perf_counter() - t0)


def ok(doc: dict[str, Any]) -> bool:
    return (doc["cases"] == doc["survived"] and not doc["orders_lost"] and not doc["orders_duplicated"]
            and not doc["left_working_after_trip"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="tests/chaos/run.py", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="the one-minute subset (what make test runs)")
    ap.add_argument("--seed", type=int, default=14, help="seed of the SIGKILL campaign (default 14)")
    ap.add_argument("--family", action="append", choices=FAMILIES, help="run only these families (repeatable)")
    ap.add_argument("--only", type=int, default=None, help="run only this SIGKILL case index (a reproduction)")
    args = ap.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.CRITICAL)  # expected faults log loudly; the document is the output
    doc = asyncio.run(run_suite(quick=args.quick, seed=args.seed, families=tuple(args.family or FAMILIES),
                                only=args.only))
    json.dump(doc, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")
    return 0 if ok(doc) else 1


if __name__ == "__main__":
    sys.exit(main())
