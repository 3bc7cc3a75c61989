"""Per-identity request rate limits (token buckets)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

from jobscheduler.core.errors import ResourceExhausted

#: Buckets kept at most; idle ones (full again) are dropped first, so memory stays bounded.
MAX_BUCKETS: Final = 100_000


class RateLimiter:
    """``rate`` requests per second per identity, bursts up to ``burst``; ``rate`` 0 disables it."""

    def __init__(self, rate: float, burst: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self._clock = clock
        #: identity -> (tokens, when they were counted)
        self._buckets: dict[str, tuple[float, float]] = {}

    def acquire(self, identity: str) -> None:
        """Take one request from ``identity``'s bucket, or raise ResourceExhausted with a retry delay."""
        if self.rate <= 0:
            return
        now = self._clock()
        tokens, then = self._buckets.get(identity, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - then) * self.rate)
        if tokens < 1.0:
            self._buckets[identity] = (tokens, now)
            wait = (1.0 - tokens) / self.rate
            raise ResourceExhausted(
                f"rate limit of {self.rate:g} requests/s (burst {self.burst}) exceeded for {identity!r};"
                f" retry in {wait:.2f}s",
                retry_after_seconds=wait,
            )
        self._buckets[identity] = (tokens - 1.0, now)
        if len(self._buckets) > MAX_BUCKETS:
            self._prune(now)

    def _prune(self, now: float) -> None:
        full_after = self.burst / self.rate
        for key, (_, then) in list(self._buckets.items()):
            if now - then >= full_after:
                del self._buckets[key]
        while len(self._buckets) > MAX_BUCKETS:  # all busy: forget the oldest (dicts keep order)
            del self._buckets[next(iter(self._buckets))]


def image_repository(image: str) -> str:
    """``registry/repo`` of ``registry/repo:tag@digest``."""
    image = image.split("@", 1)[0]
    slash = image.rfind("/")
    colon = image.rfind(":")
    return image[:colon] if colon > slash else image


class ImagePolicy:
    """Which images a request may choose (ALLOWED_IMAGES prefixes).

    A prefix matches at a boundary: ``ghcr.io/acme`` allows ``ghcr.io/acme/tool:1`` and
    ``ghcr.io/acme:2`` but not ``ghcr.io/acme-evil/tool``.
    """

    def __init__(self, prefixes: tuple[str, ...]) -> None:
        self.prefixes = tuple(p for p in prefixes if p)

    def allows(self, image: str) -> bool:
        for prefix in self.prefixes:
            if image == prefix:
                return True
            if image.startswith(prefix) and (prefix[-1] in "/:@" or image[len(prefix)] in "/:@"):
                return True
        return False
