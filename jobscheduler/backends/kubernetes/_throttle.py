"""Client-side rate limit on Kubernetes API writes: an asyncio token bucket with FIFO waiters.

As client-go's QPS/Burst: tokens accrue at ``qps`` per second, at most ``burst`` are saved up,
and each write takes one. A burst of submits therefore waits inside the service instead of
arriving at the API server all at once (where API Priority and Fairness would answer 429).

- Fair: waiters are served in arrival order. Only the head of the queue sleeps (for exactly
  the time until the next token); a caller that finds others waiting queues behind them even
  if a token happens to be free.
- Cancellable: a waiter whose task is cancelled (the RPC's deadline passed, the client went
  away) leaves the queue without taking a token; the next waiter moves up. A token is only
  ever taken by the running waiter itself, right before ``acquire`` returns, so there is no
  moment at which a token was granted to a task that is no longer going to use it.

Pure asyncio; the clock and sleep are injected so tests can drive time.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Final

#: Float slack when comparing token counts (a sleep of exactly the computed time may leave
#: 0.9999999999 tokens).
_EPSILON: Final = 1e-9


class WriteThrottle:
    """``qps`` writes per second, bursts up to ``burst``; ``qps`` 0 disables the limit."""

    def __init__(
        self,
        qps: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if qps < 0:
            raise ValueError(f"qps must be >= 0 (got {qps})")
        if burst < 1:
            raise ValueError(f"burst must be >= 1 (got {burst})")
        self.qps = qps
        self.burst = burst
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(burst)
        self._stamp = clock()
        #: Waiters in arrival order; each future is resolved when its waiter becomes the head.
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def enabled(self) -> bool:
        return self.qps > 0

    @property
    def waiting(self) -> int:
        """Callers queued for a token right now."""
        return len(self._waiters)

    def tokens(self) -> float:
        """Tokens available now (for tests and diagnostics)."""
        self._refill()
        return self._tokens

    def try_acquire(self) -> bool:
        """Take a token at once if one is free and nobody is waiting (no overtaking)."""
        if self.qps <= 0:
            return True
        if self._waiters:
            return False
        return self._take()

    async def acquire(self) -> None:
        """Wait for a token, in arrival order. Cancelling the caller while it waits takes no token."""
        if self.try_acquire():
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(turn)
        if len(self._waiters) == 1:
            turn.set_result(None)  # nobody ahead: the head at once
        try:
            await turn
            while not self._take():
                await self._sleep((1.0 - self._tokens) / self.qps)
        finally:
            self._leave(turn)

    def _refill(self) -> None:
        now = self._clock()
        if now > self._stamp:
            self._tokens = min(float(self.burst), self._tokens + (now - self._stamp) * self.qps)
        self._stamp = now

    def _take(self) -> bool:
        self._refill()
        if self._tokens < 1.0 - _EPSILON:
            return False
        self._tokens = max(0.0, self._tokens - 1.0)
        return True

    def _leave(self, turn: asyncio.Future[None]) -> None:
        """Remove a waiter (served or cancelled); if it was the head, wake the next one."""
        was_head = bool(self._waiters) and self._waiters[0] is turn
        self._waiters.remove(turn)
        if was_head and self._waiters and not self._waiters[0].done():
            self._waiters[0].set_result(None)
