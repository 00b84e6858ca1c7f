"""Where the GUI loop stalls: a watchdog thread samples the main thread's Python stack while the
loop has not beaten for longer than a threshold (``OPTIONDESK_BENCH_STALLS=1 python -m benchmarks.gui
--child lag``). Each stall episode is attributed to the handlers Qt or asyncio ran during it (the
frames just below the event loop), so a slow paint and a slow bus handler are told apart."""

from __future__ import annotations

import collections
import sys
import threading
import time
import traceback


def _short(filename: str) -> str:
    for cut in ("site-packages/", "/work/main/", "/lib/python3.11/"):
        if cut in filename:
            return filename.split(cut)[-1]
    return filename


class StallSampler:
    def __init__(self, threshold_ms: float = 15.0, every_ms: float = 1.0) -> None:
        self.beat = time.perf_counter()
        self.threshold = threshold_ms / 1000.0
        self.every = every_ms / 1000.0
        self.main = threading.main_thread().ident
        self.stop = False
        self.episodes: list[tuple[float, collections.Counter]] = []
        self.leaf: collections.Counter = collections.Counter()
        threading.Thread(target=self._run, daemon=True, name="stall-sampler").start()

    def _handler(self, stack: list) -> tuple[str, str]:
        """(entry below the event loop, innermost frame) of a main-thread stack."""
        names = [f"{_short(f.filename)}:{f.name}" for f in stack]
        entry = "?"
        for i, n in enumerate(names):
            if n.endswith(":run_forever"):
                rest = [m for m in names[i + 1:] if "asyncio/events.py" not in m and "qasync" not in m]
                entry = " > ".join(rest[:2]) if rest else "<Qt, no Python frame>"
        return entry, names[-1] if names else "?"

    def _run(self) -> None:
        current: collections.Counter | None = None
        started = 0.0
        while not self.stop:
            time.sleep(self.every)
            stalled = time.perf_counter() - self.beat > self.threshold
            if not stalled:
                if current is not None:
                    self.episodes.append((time.perf_counter() - started, current))
                    current = None
                continue
            frame = sys._current_frames().get(self.main)
            if frame is None:
                continue
            entry, leaf = self._handler(traceback.extract_stack(frame))
            if current is None:
                current, started = collections.Counter(), self.beat
            current[entry] += 1
            self.leaf[leaf] += 1

    def report(self, k: int = 25) -> str:
        by_entry: collections.Counter = collections.Counter()
        for _dur, c in self.episodes:
            for e, n in c.items():
                by_entry[e] += n
        durs = sorted(d * 1000 for d, _ in self.episodes)
        out = [f"stall episodes (> {self.threshold * 1000:.0f} ms since last beat): {len(durs)}; "
               f"longest ms: {[round(d) for d in durs[-10:]]}"]
        out += ["-- samples by handler"] + [f"{n:5d}  {e}" for e, n in by_entry.most_common(k)]
        out += ["-- samples by innermost frame"] + [f"{n:5d}  {e}" for e, n in self.leaf.most_common(k)]
        out += ["-- the 8 longest episodes"]
        for d, c in sorted(self.episodes, key=lambda t: -t[0])[:8]:
            out.append(f"{d * 1000:6.0f} ms: " + "; ".join(f"{e} ×{n}" for e, n in c.most_common(4)))
        return "\n".join(out)
