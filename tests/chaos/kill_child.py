"""One life of the engine in the SIGKILL campaign: start (which recovers whatever the last life left), trade,
maybe trip the kill switch, and die by SIGKILL — at the N-th persisted step, at the k-th persisted step after a
trip began, or whenever the parent's random timer fires.

Usage: ``python tests/chaos/kill_child.py DB PARAMS_JSON``. It reports on stdout, one line per fact, written
with one ``write(2)`` each so a line is either whole in the pipe or absent when the kill lands:

- ``READY`` — start-up (and its recovery) finished; the parent's timer starts now;
- ``A <client order id>`` — an intent was accepted: persisted as the first step of the order path;
- ``T START <mode>`` / ``T DONE <cancelled>`` — a trip began / returned.

A life that reaches the end of its workload kills itself, so every life ends the same way: SIGKILL.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sys
from decimal import Decimal
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

from engine.bus.commands import ApproveOrder
from engine.model import Leg, Order, OrderIntent, OrderStatus, OrderType, Side
from engine.oms.config import OmsConfig
from engine.risk.kill_switch import trip_in_store
from engine.store import Store
from tests.chaos.kit import Harness, opt, wait_for


def say(line: str) -> None:
    os.write(1, (line + "\n").encode())


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class Life:
    def __init__(self, db: Path, p: dict[str, Any]) -> None:
        self.db = db
        self.p = p
        self.rng = random.Random(p["seed"] * 7919 + p["round"])
        self.steps = 0
        self.trip_steps: int | None = None  # persisted steps since the trip began (None: no trip yet)
        kill = p["kill"]
        self.kill_at = int(kill.split(":")[1]) if kill.startswith("hook:") else None
        self.kill_in_trip = int(kill.split(":")[1]) if kill.startswith("trip:") else None

    def hook(self, order: Order, step: str) -> None:
        self.steps += 1
        if step == "intent":
            say(f"A {order.client_order_id}")
        if self.kill_at is not None and self.steps >= self.kill_at:
            die()
        if self.trip_steps is not None:
            self.trip_steps += 1
            if self.kill_in_trip is not None and self.trip_steps >= self.kill_in_trip:
                die()

    def intent(self, h: Harness, kind: str, coid: str) -> OrderIntent:
        rng = self.rng
        if kind == "spread":
            return h.put_spread(natural=rng.random() < 0.6, client_order_id=coid)
        right = rng.choice("CP")
        inst = opt(rng.choice((600, 610, 620)) if right == "C" else rng.choice((580, 590, 600)), right)
        _bid, ask = h.market.bid_ask(inst)
        if kind == "resting":  # a buy below the bid: rests at the paper exchange
            price = Decimal(f"{max(0.05, h.mid(inst) - rng.uniform(0.5, 2.0)):.2f}")
        else:  # marketable: fills at once (a position for the flatten to close)
            price = Decimal(f"{ask:.2f}")
        return OrderIntent(legs=(Leg(inst, Side.BUY),), quantity=rng.choice((1, 1, 2)), order_type=OrderType.LIMIT,
                           limit_price=price, client_order_id=coid)

    async def trip(self, h: Harness) -> None:
        mode = self.p["trip"]
        say(f"T START {mode}")
        self.trip_steps = 0
        if mode == "cli":  # `optiondesk kill` beside the engine: the record first, the engine acts on its poll
            other = Store.open(self.db)
            try:
                trip_in_store(other, "chaos: kill from the command line", by="cli", flatten=self.rng.random() < 0.5)
            finally:
                other.close()
            await wait_for(lambda: h.kill_switch.tripped, timeout=5)
            await wait_for(lambda: not h.paper.exchange.open_orders(), timeout=5)
            cancelled = -1
        else:
            cancelled = await h.kill_switch.trip("chaos: kill switch drill", by="chaos", flatten=mode == "flatten")
        say(f"T DONE {cancelled}")
        if self.kill_in_trip is not None:  # the trip persisted fewer steps than asked: die right after it
            die()

    async def trade(self, h: Harness) -> None:
        rng, p = self.rng, self.p
        accepted: list[str] = [o.client_order_id for o in h.store.orders.list()]
        for i in range(p.get("intents", 400)):
            if p["trip"] != "none" and i == p["trip_after"]:
                await self.trip(h)
            kind = rng.choice(("spread", "resting", "resting", "marketable", "resubmit", "cancel"))
            if kind == "cancel":
                working = h.oms.working_orders()
                if working:
                    o = rng.choice(working)
                    try:
                        await h.oms.cancel(o.order_id, by="chaos")
                    except Exception as exc:  # a cancel that loses a race with a fill is an answer, not a crash
                        say(f"E cancel {type(exc).__name__}: {exc}")
                continue
            if kind == "resubmit" and accepted:  # a strategy resending after a restart: same client order id
                coid = rng.choice(accepted)
                order = await h.oms.submit(self.intent(h, "resting", coid))
                if order.client_order_id != coid:
                    say(f"E resubmit of {coid} made {order.client_order_id}")
                continue
            coid = f"s{p['seed']}-r{p['round']}-{i}"
            order = await h.oms.submit(self.intent(h, "resting" if kind == "resubmit" else kind, coid))
            accepted.append(coid)
            if order.status is OrderStatus.PENDING_APPROVAL and rng.random() < 0.7:
                await h.oms._cmd_approve(ApproveOrder(order_id=order.order_id, by="chaos"))
            await asyncio.sleep(rng.choice((0.0, 0.0, 0.001, 0.003)))

    async def run(self) -> None:
        oms = OmsConfig(approval_in_paper=bool(self.p["approval"]))
        h = await Harness(self.db, oms_config=oms, on_persisted=self.hook).start()
        say("READY")
        if self.p["phase"] == "recover":  # the restart itself is the target: let recovery and the kill switch act
            await asyncio.sleep(self.rng.uniform(0.05, 0.4))
        else:
            await self.trade(h)
        die()


def main() -> int:
    db, params = Path(sys.argv[1]), json.loads(sys.argv[2])
    asyncio.run(Life(db, params).run())
    return 3  # never reached: every life ends by SIGKILL


if __name__ == "__main__":
    sys.exit(main())
