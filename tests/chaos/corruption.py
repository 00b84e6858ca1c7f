"""The settings and database corruption matrix. Each damaged input must give a named, short answer and lose
nothing: a settings file falls back to defaults with an error naming the key (never an exception, never a hang,
the user's file kept); a database this release cannot use is refused in one line by the command line (never a
traceback); a damaged trading-state record means HALTED, ``optiondesk kill`` still works on it, and the next
start leaves no order working."""

from __future__ import annotations

import contextlib
import io
import os
import sqlite3
import threading
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

from engine.model import Leg, OrderIntent, OrderType, Side
from engine.risk.kill_switch import KV_STATE, KillSwitch
from engine.store import Store
from tests.chaos.kit import Harness, opt, wait_for
from tests.chaos.report import Case, run_case

# ---- settings ------------------------------------------------------------------------------------------------


def _loose_low() -> str:
    from engine.risk.config import HIGH

    loose = {**HIGH.model_dump(), "max_position_pct": 0.9, "max_daily_loss_pct": 0.5}
    body = "\n".join(f"{k} = {v!r}" for k, v in loose.items() if k != "regime_multipliers")
    return (f"[risk]\nlevel = 20\n[risk.low]\n{body}\n[risk.low.regime_multipliers]\n"
            "low_vol = 1.0\nnormal = 1.0\nhigh_vol = 0.5\n")


SETTINGS: dict[str, Callable[[Path], None]] = {
    "nested-arrays-50k": lambda p: p.write_text("[general]\nx = " + "[" * 50_000 + "]" * 50_000 + "\n"),
    "nested-tables-5k": lambda p: p.write_text("[" + ".".join(f"t{i}" for i in range(5000)) + "]\nv = 1\n"),
    "negative-seed": lambda p: p.write_text("[general]\nseed = -1\n"),
    "low-preset-looser-than-high": lambda p: p.write_text(_loose_low()),
    "fifo": lambda p: os.mkfifo(p),
    "folder": lambda p: p.mkdir(),
    "not-utf8": lambda p: p.write_bytes(b'[general]\ntheme = "d\xe9j\xe0 vu"\n'),
    "20-mb-value": lambda p: p.write_text('[general]\ntheme = "' + "x" * 20_000_000 + '"\n'),
    "toml-syntax-error": lambda p: p.write_text("[general\nseed = = 3\n"),
    "binary-garbage": lambda p: p.write_bytes(bytes(range(256)) * 64),
    "wrong-types": lambda p: p.write_text('[general]\nseed = "three"\n[risk]\nlevel = [1, 2]\n'),
}


async def settings_case(c: Case, tmp: Path, make: Callable[[Path], None]) -> None:
    from engine.settings import load_settings

    folder = tmp / c.name
    folder.mkdir(parents=True)
    p = folder / "settings.toml"
    make(p)
    box: dict = {}

    def load() -> None:
        try:
            box["r"] = load_settings(p)
        except BaseException as exc:
            box["exc"] = exc

    t = threading.Thread(target=load, daemon=True, name="chaos:settings")
    t.start()
    t.join(20)
    if t.is_alive():  # a FIFO opened for reading blocks until a writer comes: be that writer, then fail
        with contextlib.suppress(OSError), open(p, "wb"):
            pass
        t.join(5)
        c.fail("load_settings blocked")
        return
    if "exc" in box:
        c.fail(f"load_settings raised {type(box['exc']).__name__}: {str(box['exc'])[:200]}")
        return
    r = box["r"]
    text = "; ".join(str(e) for e in r.errors)
    c.expect(bool(r.errors), "no error named for a damaged settings file")
    c.expect(len(text) <= 300, f"the error is {len(text)} characters long")
    c.figures["error"] = text[:160]


# ---- database files --------------------------------------------------------------------------------------------


def _newer_schema(p: Path) -> None:
    Store.open(p).close()
    con = sqlite3.connect(p)
    con.execute("INSERT INTO schema_version(version, name, applied_at) VALUES (999, 'future', '2030-01-01')")
    con.commit()
    con.close()


def _truncated(p: Path) -> None:
    Store.open(p).close()
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 3])
    for side in ("-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            Path(str(p) + side).unlink()


def _foreign_sqlite(p: Path) -> None:
    con = sqlite3.connect(p)
    con.execute("CREATE TABLE photos(id INTEGER, name TEXT)")
    con.commit()
    con.close()


def _garbage_pages(p: Path) -> None:
    Store.open(p).close()
    data = bytearray(p.read_bytes())
    data[100:4096] = os.urandom(3996)  # the schema page, after the header
    p.write_bytes(bytes(data))


DATABASES: dict[str, tuple[Callable[[Path], None], bool]] = {  # name: (make, opens)
    "schema-999": (_newer_schema, False),
    "not-sqlite": (lambda p: p.write_bytes(b"this is not a database\n" * 200), False),
    "truncated": (_truncated, False),
    "foreign-sqlite": (_foreign_sqlite, False),
    "garbage-schema-page": (_garbage_pages, False),
    "a-folder": (lambda p: p.mkdir(), False),
    "zero-bytes": (lambda p: p.write_bytes(b""), True),
}


async def database_case(c: Case, tmp: Path, make: Callable[[Path], None], opens: bool) -> None:
    from engine.cli import main as cli_main

    folder = tmp / c.name
    folder.mkdir(parents=True)
    p = folder / "optiondesk.db"
    make(p)
    for command in (["risk", "--db", str(p)], ["kill", "--db", str(p), "--reason", "chaos"]):
        out, err = io.StringIO(), io.StringIO()
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = cli_main(command)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except Exception as exc:
            c.fail(f"`optiondesk {command[0]}` raised {type(exc).__name__}: {exc}")
            continue
        text = (out.getvalue() + err.getvalue()).strip()
        c.expect("Traceback" not in text, f"`optiondesk {command[0]}` printed a traceback")
        if opens:
            c.expect(code == 0, f"`optiondesk {command[0]}` on a usable database exited {code}: {text[-200:]}")
        else:
            c.expect(code != 0, f"`optiondesk {command[0]}` on an unusable database exited 0")
            c.expect(len(err.getvalue().strip().splitlines()) == 1,
                     f"`optiondesk {command[0]}` said {len(err.getvalue().strip().splitlines())} lines on stderr")
        c.figures[command[0]] = text.splitlines()[-1][:160] if text else ""


# ---- the trading-state record ----------------------------------------------------------------------------------

RECORDS = {"not-json": "{", "empty-object": "{}", "null": "null", "list": "[]", "zero": "0", "empty-string": '""',
           "false": "false", "seq-text": '{"state": "ACTIVE", "seq": "x"}', "unknown-state": '{"state": "ON", "seq": 1}',
           "integer": 7, "blob": b"\x00\xff"}


async def record_case(c: Case, tmp: Path, raw: object) -> None:
    path = tmp / f"{c.name}.sqlite"
    h = await Harness(path).start()
    try:
        for i in range(3):
            inst = opt(610, "C") if i % 2 == 0 else opt(590, "P")
            await h.oms.submit(OrderIntent(legs=(Leg(inst, Side.BUY),), quantity=1, order_type=OrderType.LIMIT,
                                           limit_price=Decimal(f"{h.mid(inst) - 1.0 - 0.05 * i:.2f}")))
        await wait_for(lambda: len(h.paper.exchange.open_orders()) == 3)
    finally:
        await h.stop()
    s = Store.open(path)
    s.execute("INSERT INTO kv(key, value, updated_at) VALUES (?,?,?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
              (KV_STATE, raw, "2026-01-05T15:00:00+00:00"))
    ks = KillSwitch(s)
    c.expect(ks.tripped, f"a damaged record ({raw!r}) reads as {ks.state.value}")
    s.close()
    h = await Harness(path).start()
    try:
        c.trips += 1
        with contextlib.suppress(AssertionError):
            await wait_for(lambda: not h.paper.exchange.open_orders(), timeout=5)
        left = h.paper.exchange.open_orders()
        c.left_working += len(left)
        c.expect(not left, f"{len(left)} order(s) working after a start on a damaged record")
        c.expect(h.kill_switch.tripped, f"start on a damaged record is {h.kill_switch.state.value}")
    finally:
        await h.stop()
    from engine.risk.cli import kill_command

    s = Store.open(path)
    try:
        code, line = kill_command(s, reason="chaos: kill on a damaged record", flatten=False, data_dir=None)
    finally:
        s.close()
    c.expect(code == 0, f"`optiondesk kill` on a damaged record: {line}")


async def run_family(base: Path, *, quick: bool) -> list[Case]:
    """The whole matrix, quick or not: it takes a few seconds."""
    base.mkdir(parents=True, exist_ok=True)
    out: list[Case] = []
    for name, make in SETTINGS.items():
        case = Case("corruption", f"settings-{name}", repro=f"python tests/chaos/run.py --family corruption  ({name})")
        out.append(await run_case(case, lambda c, make=make: settings_case(c, base, make)))
    for name, (make, opens) in DATABASES.items():
        case = Case("corruption", f"database-{name}", repro=f"python tests/chaos/run.py --family corruption  ({name})")
        out.append(await run_case(case, lambda c, make=make, opens=opens: database_case(c, base, make, opens)))
    for name, raw in RECORDS.items():
        case = Case("corruption", f"state-record-{name}", repro=f"python tests/chaos/run.py --family corruption  ({name})")
        out.append(await run_case(case, lambda c, raw=raw: record_case(c, base, raw)))
    return out
