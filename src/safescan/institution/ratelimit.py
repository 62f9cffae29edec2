"""Rate limiting of public endpoints per client address: an in-process token bucket (merchant
requests are limited in the database instead, shared by every API process)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from safescan.api.errors import RateLimited


class RateLimiter:
    """``rate`` requests per second with bursts of ``burst``, per key."""

    def __init__(
        self, rate: float, burst: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def check(self, key: str) -> None:
        """Take one token for ``key``; raise :class:`RateLimited` (HTTP 429) if none is left."""
        if self.rate <= 0:
            return
        now = self.clock()
        with self._lock:
            tokens, last = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens < 1.0:
                self._buckets[key] = (tokens, now)
                raise RateLimited(
                    f"more than {self.rate:g} requests per second for this merchant; slow down"
                )
            self._buckets[key] = (tokens - 1.0, now)
            if len(self._buckets) > 100_000:  # bound memory: forget idle merchants
                self._buckets.clear()

    def blocked(self, key: str) -> bool:
        """Whether ``key``'s bucket is empty now (takes nothing): a caller that spends tokens
        only on failures checks this before trying (see :mod:`.http.auth`)."""
        if self.rate <= 0:
            return False
        now = self.clock()
        with self._lock:
            tokens, last = self._buckets.get(key, (self.burst, now))
            return min(self.burst, tokens + (now - last) * self.rate) < 1.0
