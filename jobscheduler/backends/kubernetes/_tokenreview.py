"""AUTH_MODE=kubernetes: callers' ServiceAccount tokens, verified with a TokenReview."""

from __future__ import annotations

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


class TokenReviewer:
    """Asks the API server who a bearer token belongs to, for the expected audience.

    Successful reviews are cached for ``cache_seconds`` under the token's SHA-256 digest.
    """

    mode = "kubernetes"

    def __init__(
        self,
        api: KubeApi,
        *,
        audience: str,
        admins: frozenset[str] = frozenset(),
        cache_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        owns_api: bool = False,
    ) -> None:
        self._api = api
        self._owns_api = owns_api
        self.audience = audience
        self._admins = admins
        self._ttl = cache_seconds
        self._clock = clock
        self._cache: OrderedDict[str, tuple[Caller, float]] = OrderedDict()

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
        caller = await self._review(token)
        if self._ttl > 0:
            self._cache[digest] = (caller, now + self._ttl)
            self._cache.move_to_end(digest)
            while len(self._cache) > MAX_CACHED:
                self._cache.popitem(last=False)
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
