"""The option chain's per-refresh engine work: IV and Greeks (``chain_metrics``), the optional columns
(``chain_columns``) and the expected move of every expiry (``expected_moves``), on the simulated SPY chain.

They run on the GUI's loop at each chain refresh (Greeks at most twice a second, the optional columns only while one
is shown, the expected moves every 2 s), so each must stay well under the loop's ~10 ms budget for a visible block.
Figures are the best of five on this shared 2-core machine (expect ±30 %).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import date
from typing import Any


def _best_ms(fn: Callable[[], Any], repeats: int = 5) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return round(best * 1000, 3)


def run() -> dict[str, Any]:
    import os

    import numpy as np

    from engine.analytics.chain_metrics import chain_columns, chain_metrics, expected_moves
    from engine.bus import Bus
    from engine.market.simulated.feed import SimulatedFeed
    from engine.surface.config import SurfaceConfig
    from engine.surface.service import run_fit_job

    feed = SimulatedFeed.quickstart(Bus(), symbols=("SPY",), seed=7, start=date(2026, 3, 2))
    chain = feed.market.chain("SPY")
    ex = chain.expiries()
    fit = run_fit_job(chain.take(np.isin(chain.expiry, ex[[1, 3, 6, 9]])), 0.04, 0.0, SurfaceConfig(), 30.0)
    surface = fit.fit.surface
    out: dict[str, Any] = {"chain_rows": len(chain), "expiries": len(ex), "load_avg_1m": os.getloadavg()[0]}
    for label, rows in (("one_expiry_block", np.flatnonzero(chain.expiry == ex[6])),
                        ("four_expiries_stacked", np.flatnonzero(np.isin(chain.expiry, ex[3:7]))),
                        ("whole_chain", np.arange(len(chain)))):
        m = chain_metrics(chain, rows, r=0.04)
        out[label] = {
            "rows": len(rows),
            "chain_metrics_ms": _best_ms(lambda rows=rows: chain_metrics(chain, rows, r=0.04)),
            "chain_columns_ms": _best_ms(lambda m=m: chain_columns(chain, m, r=0.04)),
            "chain_columns_with_theo_ms": _best_ms(lambda m=m: chain_columns(chain, m, r=0.04, surface=surface)),
        }
    out["expected_moves_all_expiries_ms"] = _best_ms(lambda: expected_moves(chain))
    return out


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
