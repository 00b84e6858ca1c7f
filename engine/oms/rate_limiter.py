"""Order-rate token bucket. Synchronous: a burst on one loop cannot slip through between check and take.

``rate_per_s`` tokens are added per second up to ``capacity``; each order takes one. ``clock`` returns
monotonic seconds (injectable so tests and the backtester control time).
"""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBucket:
    def __init__(self, rate_per_s: float, capacity: int, clock: Callable[[], float] = time.monotonic) -> None:
        if not rate_per_s > 0:
            raise ValueError(f"token bucket rate must be > 0 per second, got {rate_per_s!r}")
        if capacity < 1:
            raise ValueError(f"token bucket capacity must be >= 1, got {capacity!r}")
        self.rate = float(rate_per_s)
        self.capacity = int(capacity)
        self._clock = clock
        self._tokens = float(capacity)
        self._last = clock()

    @classmethod
    def per_minute(cls, orders_per_minute: float, burst: int,
                   clock: Callable[[], float] = time.monotonic) -> TokenBucket:
        return cls(orders_per_minute / 60.0, burst, clock)

    def _refill(self) -> None:
        now = self._clock()
        if now > self._last:
            self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
        self._last = now

    @property
    def tokens(self) -> float:
        self._refill()
        return self._tokens

    def can_take(self, n: float = 1.0) -> bool:
        return self.tokens >= n

    def try_take(self, n: float = 1.0) -> bool:
        """Take ``n`` tokens if available (returns True) — check and take are one step."""
        self._refill()
        if self._tokens >= n:
            self._tokens -= n
            return True
        return False

    def seconds_until(self, n: float = 1.0) -> float:
        """How long until ``n`` tokens are available (0 when they already are)."""
        missing = n - self.tokens
        return max(0.0, missing / self.rate)

    def reconfigure(self, rate_per_s: float, capacity: int) -> None:
        self._refill()
        self.rate = float(rate_per_s)
        self.capacity = int(capacity)
        self._tokens = min(self._tokens, self.capacity)
