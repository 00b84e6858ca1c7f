"""Run every benchmark (or those named on the command line) and print one JSON document.

    python -m benchmarks            # all
    python -m benchmarks bus pricing

The JSON goes to stdout. The progress, the pricing table and, at the end, every speed target of the run
in one table (``benchmarks/_targets.py``: figure, warmed peer, ratio, met) go to stderr.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import platform
import sys
import time
import traceback
from pathlib import Path


def main(argv: list[str]) -> int:
    here = Path(__file__).parent
    names = argv or sorted(m.name for m in pkgutil.iter_modules([str(here)]) if not m.name.startswith("_"))
    out: dict[str, object] = {"machine": {"python": platform.python_version(), "platform": platform.platform(),
                                          "cpus": __import__("os").cpu_count()}}
    failed = False
    for name in names:
        t0 = time.perf_counter()
        try:
            mod = importlib.import_module(f"benchmarks.{name}")
            result = mod.run()
        except Exception as exc:
            failed = True
            result = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-2000:]}
        result["wall_s"] = round(time.perf_counter() - t0, 2)
        out[name] = result
        print(f"[bench] {name} done in {result['wall_s']} s", file=sys.stderr, flush=True)
    from benchmarks._targets import render, summary

    targets = summary(out)
    if targets is not None:
        out["targets"] = targets
        print(render(targets), file=sys.stderr, flush=True)
    print(json.dumps(out, indent=2, default=str))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
