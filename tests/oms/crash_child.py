"""Child process for the crash tests: runs the order path and SIGKILLs itself right after ``step`` is persisted.

Usage: python crash_child.py DB STEP KIND   (KIND: marketable | resting)
"""

import asyncio
import importlib.util
import os
import signal
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
for name, path in (("risk_kit", HERE.parent / "risk" / "kit.py"), ("oms_harness", HERE / "harness.py")):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)

from oms_harness import Harness  # noqa: E402


def main() -> int:
    db, target, kind = Path(sys.argv[1]), sys.argv[2], sys.argv[3]

    def hook(order, step):
        if step == target:
            os.kill(os.getpid(), signal.SIGKILL)

    async def run() -> None:
        h = await Harness(db, on_persisted=hook).start()
        intent = h.put_spread(natural=True) if kind == "marketable" else h.resting_call()
        await h.oms.submit(intent)
        await h.stop()

    asyncio.run(run())
    print("step never reached", target)
    return 3


if __name__ == "__main__":
    sys.exit(main())
