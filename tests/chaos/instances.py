"""Two instances on one data folder: the second engine is refused naming the holder, and the command-line tools
that must work beside a running engine do — ``optiondesk kill`` trips it (the running engine cancels every
working order within 200 ms) and ``optiondesk risk`` reports HALTED."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from datetime import datetime
from decimal import Decimal
from pathlib import Path

from engine.model import Leg, OrderIntent, OrderType, Side
from engine.risk.kill_switch import read_status
from tests.chaos.kit import ROOT, Harness, opt, wait_for
from tests.chaos.report import Case, run_case


async def cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "engine.cli", *args, cwd=str(ROOT), env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return int(proc.returncode or 0), out.decode(errors="replace"), err.decode(errors="replace")


async def two_engines(c: Case, tmp: Path) -> None:
    from engine.core import Engine, EngineConfig
    from engine.instance_lock import InstanceLocked

    folder = tmp / "two"
    first = Engine(EngineConfig.for_directory(folder, feed="none"))
    await first.start()
    try:
        second = Engine(EngineConfig.for_directory(folder, feed="none"))
        try:
            await second.start()
        except InstanceLocked as exc:
            c.expect(f"process {os.getpid()}" in str(exc), f"the refusal does not name the holder: {exc}")
        else:
            c.fail("a second engine started on the same data folder")
            await second.stop()
        code, out, err = await cli("risk", "--db", str(first.paths.database))
        c.expect(code == 0 and "Trading state" in out, f"`optiondesk risk` beside the engine: exit {code} {err[-300:]}")
    finally:
        await first.stop()


async def kill_beside(c: Case, tmp: Path) -> None:
    path = tmp / "beside.sqlite"
    desk = await Harness(path).start()
    try:
        for i in range(5):
            inst = opt(610, "C") if i % 2 == 0 else opt(590, "P")
            await desk.oms.submit(OrderIntent(legs=(Leg(inst, Side.BUY),), quantity=1, order_type=OrderType.LIMIT,
                                              limit_price=Decimal(f"{desk.mid(inst) - 1.0 - 0.05 * i:.2f}")))
        await wait_for(lambda: len(desk.paper.exchange.open_orders()) == 5)
        gone_at: list[float] = []

        async def watch() -> None:  # wall time at which the running engine had cancelled everything
            await wait_for(lambda: not desk.paper.exchange.open_orders(), timeout=30)
            gone_at.append(time.time())

        watcher = asyncio.ensure_future(watch())
        code, out, err = await cli("kill", "--db", str(path), "--reason", "chaos: kill beside the engine")
        c.trips += 1
        c.expect(code == 0 and out.startswith("HALTED"), f"`optiondesk kill` exit {code}: {out} {err[-300:]}")
        try:
            await asyncio.wait_for(watcher, 3)
        except (TimeoutError, AssertionError):
            watcher.cancel()
        if gone_at:  # from the CLI's write (its record's timestamp, wall clock) to the last cancel
            written = datetime.fromisoformat(read_status(desk.store).since).timestamp()
            c.figures["engine_acted_ms"] = round((gone_at[0] - written) * 1000)
            c.expect(gone_at[0] - written < 0.2, f"the engine acted {gone_at[0] - written:.3f} s after the write")
        left = desk.paper.exchange.open_orders()
        c.left_working += len(left)
        c.expect(not left, f"{len(left)} order(s) working 3 s after `optiondesk kill`")
        c.expect(desk.kill_switch.tripped, "the running engine did not adopt HALTED")
        code, out, _ = await cli("risk", "--db", str(path))
        c.expect("HALTED" in out, f"`optiondesk risk` does not say HALTED: {out[:200]}")
    finally:
        await desk.stop()


async def run_family(base: Path, *, quick: bool) -> list[Case]:
    base.mkdir(parents=True, exist_ok=True)
    out = []
    for name, fn in (("two-engines-one-folder", two_engines), ("kill-and-risk-beside-engine", kill_beside)):
        case = Case("instances", name, repro=f"python tests/chaos/run.py --family instances  (case {name})")
        out.append(await run_case(case, lambda c, fn=fn: fn(c, base)))
    return out
