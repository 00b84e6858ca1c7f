"""The opt-in Prometheus endpoint: off by default, on 127.0.0.1 when asked, sane ``optiondesk_`` series,
stopped with the engine — in-process and through ``optiondesk serve --metrics-port``."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from engine.bus import Alert
from engine.bus.commands import TripKillSwitch
from engine.core import Engine, EngineConfig
from tests.sim_start import pinned_settings

SERIES = re.compile(r"^(optiondesk_[a-z_]+)(\{[^}]*\})? (\S+)$", re.M)


def _scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {name + (labels or ""): float(value) for name, labels, value in SERIES.findall(text)}


async def test_metrics_are_off_by_default(tmp_path):
    async with Engine(EngineConfig.for_directory(tmp_path, feed="none")) as engine:
        assert engine.metrics is None and engine.settings.monitoring.metrics_port is None
        assert engine.notifier is not None  # the desktop notifier runs; nothing leaves the machine by default


async def test_engine_serves_sane_optiondesk_series_and_stops_the_server(tmp_path):
    cfg = EngineConfig.for_directory(tmp_path, settings=pinned_settings(), metrics_port=0, clock_interval_s=0.05)
    engine = Engine(cfg)
    await engine.start()
    try:
        port = engine.metrics.port
        assert engine.metrics._server.server_address[0] == "127.0.0.1"
        m = await asyncio.to_thread(_scrape, port)
        assert m["optiondesk_net_liquidation_dollars"] == pytest.approx(100_000, rel=0.5)
        assert m['optiondesk_trading_state{state="ACTIVE"}'] == 1.0 and m["optiondesk_kill_switch_halted"] == 0.0
        assert 0.0 <= m["optiondesk_loop_lag_seconds"] < 1.0
        assert 0.0 <= m["optiondesk_heartbeat_age_seconds"] < 5.0
        for name in ("optiondesk_orders_submitted_total", "optiondesk_fills_total", "optiondesk_var_dollars",
                     'optiondesk_portfolio_greek{greek="delta"}', "optiondesk_quote_rate",
                     "optiondesk_kill_switch_trips_total"):
            assert name in m or any(k.startswith(name) for k in m), name
        alerts: list[Alert] = []
        engine.bus.subscribe(Alert, alerts.append)
        await engine.bus.send(TripKillSwitch(reason="metrics test", by="test"))
        deadline = time.monotonic() + 10
        while True:
            m = await asyncio.to_thread(_scrape, port)
            if m["optiondesk_kill_switch_halted"] == 1.0:
                break
            assert time.monotonic() < deadline, "the halted state never reached the metrics"
            await asyncio.sleep(0.05)
        assert m["optiondesk_kill_switch_trips_total"] == 1.0 and m['optiondesk_trading_state{state="HALTED"}'] == 1.0
        assert m['optiondesk_notifications{destination="desktop",outcome="sent"}'] >= 1.0
        assert any(a.source == "notify:kill-switch" and a.level == "critical" for a in alerts)
    finally:
        await engine.stop()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass


async def test_a_taken_port_is_a_clear_error_and_the_engine_does_not_start(tmp_path):
    from engine.monitoring import MonitoringError

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        engine = Engine(EngineConfig.for_directory(tmp_path, feed="none", metrics_port=port))
        with pytest.raises(MonitoringError, match=f"cannot serve metrics on 127.0.0.1:{port}"):
            await engine.start()
    assert not engine.started


def test_headless_serve_exposes_metrics_until_interrupted(tmp_path):
    from engine.paths import AppPaths
    from engine.settings.loader import save_settings

    save_settings(pinned_settings(), AppPaths.under(tmp_path).settings_file)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("QT_QPA_PLATFORM", None)
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "serve", "--home", str(tmp_path),
                             "--metrics-port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=Path(__file__).resolve().parents[2])
    try:
        port = None
        deadline = time.monotonic() + 60
        while port is None:
            assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read() if proc.poll() else ""
            line = proc.stdout.readline()
            found = re.search(r"metrics: http://127\.0\.0\.1:(\d+)/metrics", line)
            port = int(found.group(1)) if found else None
        m = _scrape(port)
        assert m["optiondesk_net_liquidation_dollars"] > 0
        assert m['optiondesk_trading_state{state="ACTIVE"}'] == 1.0
        assert "optiondesk_heartbeat_age_seconds" in m
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "engine stopped" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)


async def test_orders_fills_and_denials_by_check_are_counted(tmp_path):
    """The order path's events move the counters: a filled spread and a spread the risk engine denies."""
    import importlib.util

    from engine.bus.commands import SubmitOrder
    from engine.model import OrderStatus
    from engine.monitoring import MetricsExporter

    root = Path(__file__).resolve().parents[1]
    for name, path in (("risk_kit", root / "risk" / "kit.py"), ("oms_harness", root / "oms" / "harness.py")):
        if name not in sys.modules:
            spec = importlib.util.spec_from_file_location(name, path)
            mod = importlib.util.module_from_spec(spec)
            sys.modules[name] = mod
            spec.loader.exec_module(mod)
    from oms_harness import Harness, wait_for

    desk = await Harness(tmp_path / "db.sqlite").start()
    exporter = MetricsExporter(desk, 0, sample_interval_s=0.05)
    await exporter.start()
    try:
        filled = await desk.bus.send(SubmitOrder(intent=desk.put_spread(natural=True)))
        await wait_for(lambda: desk.oms.order(filled.order_id).status is OrderStatus.FILLED)
        denied = await desk.bus.send(SubmitOrder(intent=desk.put_spread(qty=10)))
        assert denied.status is OrderStatus.DENIED
        m = await asyncio.to_thread(_scrape, exporter.port)
    finally:
        await exporter.stop()
        await desk.stop()
    assert m['optiondesk_orders_submitted_total{broker="paper"}'] == 1.0
    assert m["optiondesk_fills_total"] == 2.0 and m["optiondesk_filled_contracts_total"] == 2.0  # two legs
    assert m['optiondesk_orders_denied_total{check="max_loss_per_trade"}'] == 1.0


def test_the_grafana_dashboard_only_queries_series_the_exporter_serves():
    import json
    import types

    from prometheus_client import generate_latest

    from engine.monitoring import MetricsExporter

    exporter = MetricsExporter(types.SimpleNamespace(brokers={"paper": None}), 0)
    exporter.orders_denied.labels("max_loss_per_trade")
    exporter.feed_latency.labels("feed:x")
    exporter.pnl.labels("day")
    exporter.greeks.labels("delta")
    exporter.notifications.labels("desktop", "sent")
    served = {line.split("{")[0].split(" ")[0] for line in generate_latest(exporter.registry).decode().splitlines()
              if line.startswith("optiondesk_")}
    dash = json.loads((Path(__file__).resolve().parents[2] / "resources" / "grafana" / "optiondesk-dashboard.json")
                      .read_text())
    queried = {name for p in dash["panels"] for t in p["targets"] for name in re.findall(r"optiondesk_[a-z_]+", t["expr"])}
    assert queried and queried <= served, queried - served
    assert len(dash["panels"]) >= 10
