"""AUTH_MODE=kubernetes: callers' ServiceAccount tokens, verified with a TokenReview."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Final

from jobscheduler.backends.kubernetes._client import KubeApi
from jobscheduler.backends.kubernetes._errors import Call
from jobscheduler.core.auth import Caller, Credentials, roles_for, token_digest
from jobscheduler.core.errors import JobSchedulerError, Unauthenticated, Unavailable
from jobscheduler.logs import get_logger

log = get_logger("jobscheduler.auth")

TOKENREVIEWS_PATH: Final = "/apis/authentication.k8s.io/v1/tokenreviews"
_CALL: Final = Call(verb="create", resource="tokenreviews.authentication.k8s.io", namespace="")
#: Verified tokens remembered at most (by digest), so a flood of callers cannot grow memory.
MAX_CACHED: Final = 10_000
#: How long a token the API server refused is refused again without asking (seconds).
FAILURE_CACHE_SECONDS: Final = 10.0


class TokenReviewer:
    """Asks the API server who a bearer token belongs to, for the expected audience.

    Successful reviews are cached for ``cache_seconds`` under the token's SHA-256 digest, refused
    tokens for ``failure_cache_seconds`` (both at most MAX_CACHED entries), and concurrent calls
    with one token share one review: garbage tokens do not each become API-server load.
    """

    mode = "kubernetes"

    def __init__(
        self,
        api: KubeApi,
        *,
        audience: str,
        admins: frozenset[str] = frozenset(),
        cache_seconds: float = 60.0,
        failure_cache_seconds: float = FAILURE_CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        owns_api: bool = False,
    ) -> None:
        self._api = api
        self._owns_api = owns_api
        self.audience = audience
        self._admins = admins
        self._ttl = cache_seconds
        self._clock = clock
        self._failure_ttl = failure_cache_seconds
        self._cache: OrderedDict[str, tuple[Caller, float]] = OrderedDict()
        #: digest -> (the refusal, until when it is repeated without asking)
        self._failed: OrderedDict[str, tuple[str, float]] = OrderedDict()
        #: digest -> the review in progress, awaited by every call with that token
        self._inflight: dict[str, asyncio.Task[Caller]] = {}

    async def close(self) -> None:
        """Close the API connection if it is this reviewer's own (not the backend's)."""
        if self._owns_api:
            await self._api.close()

    async def authenticate(self, credentials: Credentials) -> Caller:
        token = credentials.bearer_token
        if not token:
            raise Unauthenticated(
                "missing credentials: send 'authorization: Bearer <ServiceAccount token"
                f" with audience {self.audience!r}>'"
            )
        digest = token_digest(token)
        now = self._clock()
        cached = self._cache.get(digest)
        if cached is not None and cached[1] > now:
            return cached[0]
        failed = self._failed.get(digest)
        if failed is not None and failed[1] > now:
            raise Unauthenticated(failed[0])
        task = self._inflight.get(digest)
        if task is None:
            task = asyncio.ensure_future(self._review_and_remember(token, digest))
            task.add_done_callback(_retrieve)
            self._inflight[digest] = task
        # Shielded: a caller that gives up does not cancel the review the others wait for.
        return await asyncio.shield(task)

    async def _review_and_remember(self, token: str, digest: str) -> Caller:
        try:
            caller = await self._review(token)
        except Unauthenticated as exc:
            if self._failure_ttl > 0:
                _remember(self._failed, digest, (exc.message, self._clock() + self._failure_ttl))
            raise
        finally:
            del self._inflight[digest]
        if self._ttl > 0:
            _remember(self._cache, digest, (caller, self._clock() + self._ttl))
        return caller

    async def _review(self, token: str) -> Caller:
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token, "audiences": [self.audience]},
        }
        try:
            review = await self._api.request("POST", TOKENREVIEWS_PATH, _CALL, body=body)
        except JobSchedulerError as exc:
            log.error("token review failed", error=exc.message)
            raise Unavailable(f"cannot verify credentials right now: {exc.message}") from None
        status: dict[str, Any] = review.get("status") or {}
        if not status.get("authenticated"):
            raise Unauthenticated("invalid token" + (f": {status['error']}" if status.get("error") else ""))
        # An audience-aware API server returns the audiences the token is valid for.
        if self.audience not in (status.get("audiences") or []):
            raise Unauthenticated(f"the token is not valid for audience {self.audience!r}")
        user = status.get("user") or {}
        identity = str(user.get("username") or "")
        if not identity:
            raise Unauthenticated("the token review named no user")
        groups = [str(g) for g in user.get("groups") or []]
        return Caller(identity, roles_for([identity, *groups], self._admins))


def _remember(cache: OrderedDict[str, Any], digest: str, entry: Any) -> None:
    cache[digest] = entry
    cache.move_to_end(digest)
    while len(cache) > MAX_CACHED:
        cache.popitem(last=False)


def _retrieve(task: asyncio.Task[Caller]) -> None:
    """Mark the review's outcome as seen, even when every caller waiting for it gave up."""
    if not task.cancelled():
        task.exception()
