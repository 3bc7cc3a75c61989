"""Per-identity request rate limits (token buckets)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Final

from jobscheduler.core.errors import ResourceExhausted

#: Buckets kept at most; the least recently used are dropped first, so memory stays bounded.
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
            self._store(identity, (tokens, now))
            wait = (1.0 - tokens) / self.rate
            raise ResourceExhausted(
                f"rate limit of {self.rate:g} requests/s (burst {self.burst}) exceeded for {identity!r};"
                f" retry in {wait:.2f}s",
                retry_after_seconds=wait,
            )
        self._store(identity, (tokens - 1.0, now))

    def check(self, key: str, what: str) -> None:
        """Raise ResourceExhausted (naming ``what``) while ``key``'s bucket is empty; take nothing.

        With ``charge``: a bucket of *failures* (e.g. failed authentications per peer address),
        checked before the work that may fail."""
        if self.rate <= 0:
            return
        bucket = self._buckets.get(key)
        if bucket is None:
            return  # full
        tokens, then = bucket
        tokens = min(float(self.burst), tokens + (self._clock() - then) * self.rate)
        if tokens < 1.0:
            wait = (1.0 - tokens) / self.rate
            raise ResourceExhausted(
                f"too many {what} from {key} (at most {self.rate:g}/s, burst {self.burst});"
                f" retry in {wait:.2f}s",
                retry_after_seconds=wait,
            )

    def charge(self, key: str) -> None:
        """Take one from ``key``'s bucket. It may go into debt (down to -burst): failures that
        were already under way when the bucket ran dry are paid for by a longer wait."""
        if self.rate <= 0:
            return
        now = self._clock()
        tokens, then = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - then) * self.rate)
        self._store(key, (max(-float(self.burst), tokens - 1.0), now))

    def refund(self, key: str) -> None:
        """Give back what ``charge`` took for work that did not fail after all."""
        if self.rate <= 0 or (bucket := self._buckets.get(key)) is None:
            return
        tokens, then = bucket
        self._store(key, (min(float(self.burst), tokens + 1.0), then))

    def _store(self, key: str, bucket: tuple[float, float]) -> None:
        """Keep ``key``'s bucket as the most recently used (dicts keep insertion order), and at
        most MAX_BUCKETS of them: the least recently used goes first, in constant time (a scan
        of every bucket per call would itself be the cost an attacker with many keys wants)."""
        self._buckets.pop(key, None)
        self._buckets[key] = bucket
        while len(self._buckets) > MAX_BUCKETS:
            del self._buckets[next(iter(self._buckets))]


class StreamSlots:
    """Open server streams (watches, followed logs): at most ``per_caller`` per identity and
    ``total`` in all (0: no limit). A stream holds its slot (``hold``) until it ends, however
    it ends: completed, failed, cancelled or its client gone."""

    def __init__(self, per_caller: int, total: int) -> None:
        self.per_caller = per_caller
        self.total = total
        self._open: dict[str, int] = {}
        self._count = 0

    @property
    def open(self) -> int:
        return self._count

    def open_for(self, identity: str) -> int:
        return self._open.get(identity, 0)

    @contextmanager
    def hold(self, identity: str) -> Iterator[None]:
        """Take a slot for the ``with`` block, or raise ResourceExhausted."""
        mine = self._open.get(identity, 0)
        if self.per_caller and mine >= self.per_caller:
            raise ResourceExhausted(
                f"{identity!r} has {mine} streams open, the most allowed (MAX_STREAMS_PER_CALLER);"
                " close one first"
            )
        if self.total and self._count >= self.total:
            raise ResourceExhausted(
                f"the server has {self._count} streams open, the most allowed (MAX_STREAMS); retry later",
                retry_after_seconds=1.0,
            )
        self._open[identity] = mine + 1
        self._count += 1
        try:
            yield
        finally:
            self._count -= 1
            left = self._open[identity] - 1
            if left:
                self._open[identity] = left
            else:
                del self._open[identity]  # the dict holds only callers with open streams


def image_repository(image: str) -> str:
    """``registry/repo`` of ``registry/repo:tag@digest``."""
    image = image.split("@", 1)[0]
    slash = image.rfind("/")
    colon = image.rfind(":")
    return image[:colon] if colon > slash else image


class ImagePolicy:
    """Which images (ALLOWED_IMAGES prefixes) and Secrets (ALLOWED_SECRETS) a request may name.

    A prefix matches at a boundary: ``ghcr.io/acme`` allows ``ghcr.io/acme/tool:1`` and
    ``ghcr.io/acme:2`` but not ``ghcr.io/acme-evil/tool``. ``secrets`` None: any Secret (for
    tests and embedders); the service passes ALLOWED_SECRETS, empty by default: a job may read
    no Secret of the service's namespace (which holds the service's own token file and keys)
    until an operator lists the ones jobs may use.
    """

    def __init__(self, prefixes: tuple[str, ...], secrets: frozenset[str] | None = None) -> None:
        self.prefixes = tuple(p for p in prefixes if p)
        self.secrets = secrets

    def allows_secret(self, name: str) -> bool:
        return self.secrets is None or name in self.secrets

    def allows(self, image: str) -> bool:
        for prefix in self.prefixes:
            if image == prefix:
                return True
            if image.startswith(prefix) and (prefix[-1] in "/:@" or image[len(prefix)] in "/:@"):
                return True
        return False
