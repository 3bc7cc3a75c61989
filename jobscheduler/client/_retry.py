"""Deadlines and the UNAVAILABLE backoff both clients share, and when a watch may resume."""

from __future__ import annotations

import datetime
import random
import time
from collections.abc import Sequence
from typing import TypedDict

import grpc

from jobscheduler.client._errors import stream_fell_behind
from jobscheduler.client._types import JobPhase

#: Default deadline of a unary call, retries included (seconds).
DEFAULT_TIMEOUT = 10.0
#: Default number of retries after UNAVAILABLE where retrying is safe.
DEFAULT_RETRIES = 6
#: First pause before a retry; doubled each time up to MAX_BACKOFF, with +-25 % jitter.
FIRST_BACKOFF = 0.1
MAX_BACKOFF = 5.0
#: A watch stream that lived this long before it dropped counts as having worked: the next
#: reconnect starts again at FIRST_BACKOFF and with the whole retry budget.
HEALTHY_STREAM_SECONDS = 5.0


class JobFilterArgs(TypedDict, total=False):
    """Which jobs to list or watch; every given field must match (AND)."""

    #: Job type, e.g. "timer".
    type: str
    #: Any of these phases (JobPhase or its name, any case).
    phases: Sequence[JobPhase | str]
    #: A Kubernetes label selector: "team=build,tier!=test", "env in (a,b)", "!legacy".
    label_selector: str
    #: Jobs whose name starts with this.
    name_prefix: str
    #: Created at or after / strictly before (timezone-aware).
    created_after: datetime.datetime
    created_before: datetime.datetime
    #: Jobs of this owner (others than your own need the admin role).
    owner: str
    #: Jobs of this admission queue.
    queue: str
    #: Jobs made by this schedule (its name).
    schedule: str
    #: Reruns of this job (``rerun``).
    rerun_of: str
    #: Jobs made from this job template (its name).
    template: str


def backoff(attempt: int) -> float:
    """The pause before retry number ``attempt`` (0-based)."""
    base = min(MAX_BACKOFF, FIRST_BACKOFF * 2.0 ** min(attempt, 32))
    jitter: float = random.uniform(0.75, 1.25)
    return base * jitter


class Deadline:
    """The end of one client call, retries included (None: no end)."""

    def __init__(self, timeout: float | None) -> None:
        if timeout is not None and timeout <= 0:
            raise ValueError("timeout must be positive (seconds) or None")
        self._end = None if timeout is None else time.monotonic() + timeout

    def remaining(self) -> float | None:
        return None if self._end is None else max(0.001, self._end - time.monotonic())

    def allows(self, pause: float) -> bool:
        """Whether a pause of ``pause`` seconds still leaves time for another attempt."""
        return self._end is None or time.monotonic() + pause < self._end - 0.05


def retryable(exc: grpc.RpcError) -> bool:
    code = exc.code() if hasattr(exc, "code") else None
    return code is grpc.StatusCode.UNAVAILABLE


def resumable(exc: grpc.RpcError) -> bool:
    """Whether a ``watch_all`` stream that ended with ``exc`` may be resumed from its last event's
    token: the connection dropped (UNAVAILABLE), or the server ended the stream for falling too far
    behind (OUT_OF_RANGE naming a resume token). Not another OUT_OF_RANGE: a token the server no
    longer has (older than its retained window, or from another run) cannot be resumed from."""
    if retryable(exc):
        return True
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else None
    return code is grpc.StatusCode.OUT_OF_RANGE and stream_fell_behind(details or "")
