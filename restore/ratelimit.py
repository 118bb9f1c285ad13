"""A token bucket shared by threads: at most ``rate`` messages a second, however many write."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class TokenBucket:
    """``take(n)`` returns once ``n`` tokens have accrued at ``rate`` per second.

    The bucket starts empty, so even a short run keeps the rate from its
    first message, and holds at most ``burst`` unused tokens, so a writer
    that was slow for a while (reading the archive, a retry) catches up by
    one burst at most. A take larger than what is there is granted in
    order and paid for by waiting: later takers wait behind it, which keeps
    batches of any size (and any number of threads) to the rate.
    """

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic):
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.burst = max(1.0, burst)
        self._clock = clock
        self._tokens = 0.0
        self._stamp = clock()
        self._lock = threading.Lock()

    def reserve(self, n: int) -> float:
        """Take ``n`` tokens now, owing what is missing: the seconds to wait before using them."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            self._tokens -= n
            return max(0.0, -self._tokens / self.rate)

    def take(self, n: int, stop: threading.Event | None = None) -> bool:
        """Wait until ``n`` messages may go; False when ``stop`` was set meanwhile."""
        delay = self.reserve(n)
        if stop is None:
            time.sleep(delay)
            return True
        return not stop.wait(delay) if delay else not stop.is_set()
