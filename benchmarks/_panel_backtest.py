"""The README backtest run from the Backtest panel of the whole workstation (offscreen, simulated market
streaming), timed from the Run click to the results on screen. Prints one JSON line.

Run by :func:`benchmarks.backtest.panel_vs_cli` in a fresh process, as a user would start the window:

    python -m benchmarks._panel_backtest --years 5 --seed 7 [--settle 7] [--repeat]

The panel is brought to the front first and left ``--settle`` seconds, as a user takes to fill the form
(the panel starts its worker 5 s after it is shown). ``--repeat`` times a second run on the same data.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


async def _run_once(panel: Any) -> dict[str, Any]:
    stages: list[tuple[float, str]] = []
    t0 = time.perf_counter()
    panel.run()
    job = panel.job
    if job is not None:
        job.progressed.connect(lambda f, e, d, stage: stages.append((round(time.perf_counter() - t0, 2), stage)))
    while not panel.is_finished():
        await asyncio.sleep(0.05)
    seconds = time.perf_counter() - t0
    loading_s = next((t for t, st in stages if st == "running"), float("nan"))
    result = panel.result
    return {"seconds": round(seconds, 3), "until_first_running_s": loading_s,
            "status": getattr(result, "status", None), "days": len(getattr(result, "dates", ())),
            "worker_run_s": round(float(getattr(result, "elapsed_s", float("nan"))), 3),
            "total_pnl": float(result.metrics.total_pnl) if result is not None else None}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--years", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--settle", type=float, default=7.0)
    ap.add_argument("--repeat", action="store_true")
    args = ap.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6 import QtWidgets

    from app.runtime import Workstation, create_application, run_event_loop, run_workstation
    from engine.core import EngineConfig
    from engine.paths import AppPaths

    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="optiondesk-bench-panel-") as home:
        paths = AppPaths.under(Path(home)).ensure()
        app = create_application([sys.argv[0]])
        ws = Workstation(EngineConfig(paths=paths, seed=7), restore_layout=False)

        async def on_ready(ws: Any) -> None:
            panel = ws.window.panels["backtest"]
            dock = panel
            while dock is not None and not isinstance(dock, QtWidgets.QDockWidget):
                dock = dock.parentWidget()
            if dock is not None:
                dock.show()
                dock.raise_()
            await asyncio.sleep(args.settle)
            panel.source_box.setCurrentIndex(0)
            panel.use_dates.setChecked(False)
            panel.years_spin.setValue(args.years)
            panel.seed_spin.setValue(args.seed)
            out["worker_warm_at_click"] = bool(getattr(getattr(panel, "worker", None), "started", False))
            out["first"] = await _run_once(panel)
            if args.repeat:
                out["repeat"] = await _run_once(panel)

        run_event_loop(app, run_workstation(ws, on_ready=on_ready, app=app, seconds=0))
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
