"""A sliding-window rate limit per chat robot."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable

WINDOW_SECONDS = 60.0


class RateLimiter:
    """Allow at most `limit` sends in any 60-second window.

    A caller that finds the window full waits for the oldest send to leave it,
    but no longer than the wait it passes in. Callers are served one at a time
    in arrival order, so a burst of requests queues instead of overtaking.
    """

    def __init__(self, limit: int, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep):
        self.limit = limit
        self.clock = clock
        self.sleep = sleep
        self.sent: deque[float] = deque()
        self.lock = asyncio.Lock()

    def _prune(self, now: float) -> None:
        while self.sent and self.sent[0] <= now - WINDOW_SECONDS:
            self.sent.popleft()

    async def acquire(self, max_wait: float) -> bool:
        """Take a slot and return True, or return False if none frees within `max_wait` seconds."""
        async with self.lock:
            deadline = self.clock() + max_wait
            while True:
                now = self.clock()
                self._prune(now)
                if len(self.sent) < self.limit:
                    self.sent.append(now)
                    return True
                free_at = self.sent[0] + WINDOW_SECONDS
                if free_at > deadline:
                    return False
                await self.sleep(free_at - now)

    def retry_after(self) -> float:
        """Return the seconds until the next slot frees, 0 if one is free now."""
        now = self.clock()
        self._prune(now)
        if len(self.sent) < self.limit:
            return 0.0
        return max(0.0, self.sent[0] + WINDOW_SECONDS - now)
