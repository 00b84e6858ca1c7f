"""``optiondesk trade`` in a subprocess on the pinned simulated market: strategies trade headless, SIGTERM stops
cleanly with the report, ``--seconds`` ends a run by itself, unknown names are refused with the known ones."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import sys
import urllib.request
from pathlib import Path

SETTINGS = """
[simulator]
start = "2026-03-02"

[surface]
executor = "thread"

[notify]
enabled = false

[[strategies]]
name = "iron_condor"
id = "ic"
budget = { max_open_trades = 1 }
[strategies.params]
underlying = "SPY"
iv_rank_entry = 0.0
regimes = ["low_vol", "normal", "high_vol", "iv_contraction", "iv_expansion", "neutral"]
size_factors = { neutral = 1.0, low_vol = 1.0, normal = 1.0, high_vol = 1.0, iv_contraction = 1.0, iv_expansion = 1.0 }
dte_min = 20
dte_max = 60
pricing = { start = 1.0 }
"""


def home_with_settings(tmp_path: Path) -> Path:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "settings.toml").write_text(SETTINGS)
    return tmp_path


async def run_cli(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(sys.executable, "-m", "engine.cli", "trade", *args,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


def stored_fills(home: Path, strategy_id: str) -> int:
    from engine.paths import AppPaths

    db = AppPaths.under(home).database
    if not db.is_file():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1.0) as con:
            return con.execute("SELECT COUNT(*) FROM strategy_fills WHERE strategy_id=?", (strategy_id,)).fetchone()[0]
    except sqlite3.OperationalError:  # not migrated yet
        return 0


async def test_trade_runs_a_strategy_headless_serves_metrics_and_sigterm_stops_it_with_the_json_report(tmp_path):
    home = home_with_settings(tmp_path)
    proc = await run_cli("--strategy", "ic,put_write", "--json", "--home", str(home), "--speed", "60",
                         "--metrics-port", "0")
    lines: list[str] = []

    async def collect() -> None:  # read stderr as it comes: a full pipe would stall the child
        assert proc.stderr is not None
        async for raw in proc.stderr:
            lines.append(raw.decode())

    readers = [asyncio.ensure_future(collect()), asyncio.ensure_future(proc.stdout.read())]  # type: ignore[union-attr]
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 90
        while not any(line.startswith("metrics: http://127.0.0.1:") for line in lines):
            assert proc.returncode is None and loop.time() < deadline, "".join(lines)
            await asyncio.sleep(0.1)
        url = next(line for line in lines if line.startswith("metrics: ")).split(" ", 1)[1].strip()
        body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read().decode())
        assert "optiondesk_" in body  # the same exporter as `optiondesk serve`
        while stored_fills(home, "ic") < 4:
            assert proc.returncode is None, "trade exited before the strategy traded"
            assert loop.time() < deadline, "no fills of the strategy within 90 s"
            await asyncio.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 60)
        await asyncio.wait_for(asyncio.gather(*readers), 10)
        out, err = readers[1].result(), "".join(lines).encode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        for r in readers:
            r.cancel()
    assert proc.returncode == 0, err.decode()
    report = json.loads(out)["strategies"]
    assert set(report) == {"ic", "put_write"}
    ic = report["ic"]
    assert ic["mode"] == "paper" and ic["state"] == "running"
    assert [(o["tag"], o["status"]) for o in ic["orders"]][:1] == [("ic-00001:open", "filled")]
    assert len(ic["fills"]) >= 4 and {f["kind"] for f in ic["fills"]} == {"trade"}
    assert isinstance(ic["pnl_total"], float) and isinstance(ic["pnl_today"], float)
    assert ic["trades"][0]["tag"] == "ic-00001" and ic["open_trades"] == 1
    # the cash-secured put is bigger than the profile's max loss per trade: denied, with the reason
    assert all(o["status"] == "denied" and "max loss" in o["reason"] for o in report["put_write"]["orders"])
    text = err.decode()
    assert "strategy ic (iron_condor): running on the paper account" in text and "engine stopped" in text


async def test_trade_with_seconds_stops_by_itself_and_prints_a_summary(tmp_path):
    home = home_with_settings(tmp_path)
    proc = await run_cli("--strategy", "ic", "--seconds", "3", "--home", str(home))
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()
    text = out.decode()
    assert "engine stopped" in text and "\nic: running, " in text


async def test_trade_with_an_unknown_strategy_exits_2_listing_the_known_ones(tmp_path):
    home = home_with_settings(tmp_path)
    proc = await run_cli("--strategy", "iron_condor,nope", "--home", str(home))
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2
    message = err.decode()
    assert "unknown strategy 'nope'; known:" in message
    for known in ("ic", "iron_condor", "iv_rank_put_spread", "put_write"):
        assert known in message.split("known:", 1)[1]
    assert out == b""
