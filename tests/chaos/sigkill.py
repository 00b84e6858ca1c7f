"""The SIGKILL campaign over the order path: each case is one database and several lives of the engine, each
life killed with SIGKILL — at a random persisted step, at a random step of a kill-switch trip, or at a random
moment picked by the parent — with manual approval on or off and trips with and without flatten (from the
window's button or from ``optiondesk kill``). After the last life the parent restarts the engine once more (the
restart reconciles with the paper broker) and counts (:mod:`tests.chaos.report`) what was lost, duplicated,
or left working after a trip.

The paper broker keeps its own books (``paper_orders``, ``paper_fills``) in the same SQLite file, written in its
own transactions: a kill between the broker's write and the order manager's is exactly the gap a real broker
connection has.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from engine.risk.kill_switch import read_record
from engine.risk.state import TradingState
from tests.chaos.kit import ROOT, Harness, wait_for
from tests.chaos.report import Case, run_case

TRIPS = ("none", "button", "flatten", "cli")
CHILD_TIMEOUT_S = 60.0
CHILD = Path(__file__).with_name("kill_child.py")


def plan_case(seed: int, index: int, lives: int) -> dict[str, Any]:
    """The case's lives, drawn from ``seed``: approval, the trip (in which life, after how many intents), and
    how each life dies. Every fourth case is a trip case of each kind so short runs still cover them all."""
    rng = random.Random(seed * 100_003 + index)
    trip = TRIPS[index % len(TRIPS)]
    trip_life = rng.randrange(lives) if trip != "none" else -1
    plans = []
    for life in range(lives):
        if life > trip_life >= 0:
            phase = "recover"  # after a trip: restarts only, killed during recovery and the kill switch's sweep
        else:
            phase = "trade"
        if life == trip_life:
            kill = rng.choice((f"trip:{rng.randint(1, 4)}", f"trip:{rng.randint(1, 4)}", "timer"))
        elif phase == "recover":
            kill = rng.choice((f"hook:{rng.randint(1, 3)}", "timer"))
        else:
            kill = rng.choice((f"hook:{rng.randint(2, 40)}", "timer"))
        plans.append({"seed": seed * 1000 + index, "round": life, "phase": phase, "kill": kill,
                      "approval": rng.random() < 0.4, "trip": trip if life == trip_life else "none",
                      "trip_after": rng.randint(2, 10), "intents": 400,
                      "timer_s": rng.uniform(0.05, 0.6)})
    return {"index": index, "lives": plans}


async def _life(db: Path, p: dict[str, Any]) -> tuple[int | None, list[str], str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(CHILD), str(db), json.dumps(p), cwd=str(ROOT), env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    lines: list[str] = []
    assert proc.stdout is not None and proc.stderr is not None
    err_task = asyncio.ensure_future(proc.stderr.read())

    async def read_all() -> None:
        timer: asyncio.TimerHandle | None = None
        while raw := await proc.stdout.readline():  # type: ignore[union-attr]
            line = raw.decode().rstrip("\n")
            lines.append(line)
            if line == "READY" and p["kill"] == "timer":
                timer = asyncio.get_running_loop().call_later(p["timer_s"], _kill, proc)
        if timer is not None:
            timer.cancel()

    try:
        await asyncio.wait_for(read_all(), CHILD_TIMEOUT_S)
        rc = await asyncio.wait_for(proc.wait(), 10)
    except TimeoutError:
        _kill(proc)
        await proc.wait()
        rc = None
    err = (await err_task).decode(errors="replace")
    return rc, lines, err


def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        try:
            os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


async def audit(db: Path, case: Case, accepted: set[str], trip_started: bool, flatten_asked: bool) -> None:
    """Restart (reconcile with the broker, let a stored HALTED cancel and flatten), then count."""
    h = await Harness(db).start()
    try:
        halted = h.kill_switch.tripped
        if trip_started or halted:
            try:  # the restarted kill switch sweeps the broker; poll, never sleep
                await wait_for(lambda: not h.paper.exchange.open_orders(), timeout=5)
            except AssertionError:
                pass
        if flatten_asked and halted:
            try:
                await wait_for(lambda: not h.kill_switch.flatten_pending and not h.paper.exchange.positions, timeout=5)
            except AssertionError:
                case.fail(f"flatten asked but not carried out after restart: {len(h.paper.exchange.positions)} "
                          f"position(s) open, flatten pending={h.kill_switch.flatten_pending}")
        orders = h.store.orders.list()
        by_coid = {o.client_order_id: o for o in orders}
        missing = sorted(accepted - set(by_coid))
        case.lost += len(missing)
        if missing:
            case.fail(f"accepted but not in the store: {missing[:5]}")
        broker_rows = [json.loads(r["payload"]) for r in h.store.query("SELECT payload FROM paper_orders")]
        at_broker = Counter(r["client_order_id"] for r in broker_rows)
        strangers = sorted(set(at_broker) - set(by_coid))
        case.lost += len(strangers)
        if strangers:
            case.fail(f"at the broker but unknown to the store: {strangers[:5]}")
        dups = {c: n for c, n in at_broker.items() if n > 1}
        case.duplicated += sum(n - 1 for n in dups.values())
        if dups:
            case.fail(f"several broker orders for one client order id: {dups}")
        filled: Counter[tuple[str, int]] = Counter()
        for f in await h.paper.fills():
            if f.kind == "trade":
                filled[(f.client_order_id, f.leg_index)] += abs(f.quantity)
        over = {k: v for k, v in filled.items() if k[0] in by_coid and k[1] < len(by_coid[k[0]].legs)
                and v > by_coid[k[0]].quantity * by_coid[k[0]].legs[k[1]].ratio}
        case.duplicated += len(over)
        if over:
            case.fail(f"fills beyond the order quantity: {over}")
        open_at_broker = h.paper.exchange.open_orders()
        for o in open_at_broker:  # the store agrees with the broker on what is working
            mine = by_coid.get(o.client_order_id)
            if mine is None or not mine.status.is_working:
                case.fail(f"{o.client_order_id} works at the broker but the store says "
                          f"{mine.status.value if mine else 'nothing'}")
        if trip_started:
            case.left_working += len(open_at_broker)
            if open_at_broker:
                case.fail(f"{len(open_at_broker)} order(s) working at the broker after a trip")
            rec = read_record(h.store)
            case.figures["state_after_restart"] = rec.status.state.value
            if rec.status.state is not TradingState.HALTED:
                case.trips_lost += 1
                case.fail(f"a trip was under way when the process was killed and is gone after the restart: "
                          f"trading state {rec.status.state.value}"
                          + (f", {len(h.paper.exchange.positions)} position(s) not flattened" if flatten_asked else ""))
        case.figures.update({"accepted": len(accepted), "orders": len(orders), "broker_orders": len(broker_rows),
                             "working_after": len(open_at_broker), "positions_after": len(h.paper.exchange.positions)})
    finally:
        await h.stop()


def sigkill_case(base: Path, seed: int, index: int, lives: int) -> Case:
    plan = plan_case(seed, index, lives)
    trip = next((life["trip"] for life in plan["lives"] if life["trip"] != "none"), "none")
    approval = "approval" if any(life["approval"] for life in plan["lives"]) else "no-approval"
    case = Case("sigkill", f"case{index:02d}-{trip}-{approval}")
    case.repro = (f"python tests/chaos/run.py --family sigkill --seed {seed} --only {index}  "
                  f"(lives: {[(life['phase'], life['kill'], life['trip']) for life in plan['lives']]})")
    case.figures["plan"] = plan  # replaced by the summary figures once audited
    db = base / f"sigkill-{index:02d}.sqlite"

    async def body(c: Case) -> None:
        accepted: set[str] = set()
        trip_started = flatten_asked = False
        for p in plan["lives"]:
            rc, lines, err = await _life(db, p)
            if rc == -signal.SIGKILL:
                c.kills += 1
            else:
                c.fail(f"life {p['round']} ended with {rc} instead of SIGKILL: {err[-1500:]}")
            for line in lines:
                if line.startswith("A "):
                    accepted.add(line[2:])
                elif line.startswith("T START"):
                    trip_started = True
                    c.trips += 1
                    flatten_asked = flatten_asked or line.endswith("flatten")
                elif line.startswith("E "):
                    c.fail(f"life {p['round']}: {line[2:]}")
            if "Traceback" in err:
                c.figures.setdefault("child_tracebacks", []).append(err[-800:])
        c.figures.pop("plan", None)
        await audit(db, c, accepted, trip_started, flatten_asked)

    case._body = body  # type: ignore[attr-defined]
    return case


async def run_family(base: Path, *, seed: int, cases: int, lives: int = 3, parallel: int = 2,
                     only: int | None = None) -> list[Case]:
    sem = asyncio.Semaphore(parallel)
    todo = [sigkill_case(base, seed, i, lives) for i in range(cases) if only is None or i == only]

    async def one(c: Case) -> Case:
        async with sem:
            return await run_case(c, c._body)  # type: ignore[attr-defined]

    return list(await asyncio.gather(*(one(c) for c in todo)))
