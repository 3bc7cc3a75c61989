"""Delivering the timer's JSON status report over HTTP, with bounded retries and exponential backoff."""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.message import Message
from typing import IO, Any, Final

import structlog

from jobscheduler.core.tracecontext import child_traceparent

#: Upper bound of the delay between two attempts.
MAX_BACKOFF_SECONDS: Final = 8.0

#: HTTP statuses worth retrying besides 5xx.
_RETRYABLE_STATUSES: Final = frozenset({429})

_USER_AGENT: Final = "jobscheduler-timer"


@dataclass(frozen=True, slots=True)
class ReportResult:
    delivered: bool
    attempts: int
    http_status: int | None = None
    last_error: str | None = None
    #: True when retrying was abandoned because ``interrupted`` reported a stop request.
    interrupted: bool = False


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Report to the endpoint exactly as given: a redirect is an answer (an HTTPError), not followed."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: Message,
        newurl: str,
    ) -> urllib.request.Request | None:
        return None


#: Sends a request as given: a redirect is an answer, never followed (shared by the job programs).
NO_REDIRECTS: Final = urllib.request.build_opener(_NoRedirect())


def backoff_delay(initial: float, failed_attempts: int) -> float:
    """Delay after the ``failed_attempts``-th failure: initial, 2x, 4x, ... capped at MAX_BACKOFF_SECONDS."""
    # The exponent is bounded: 2.0 ** 1024 is an OverflowError, not a long delay.
    return min(MAX_BACKOFF_SECONDS, initial * 2.0 ** min(max(failed_attempts - 1, 0), 30))


def _retry_after(headers: Message | None) -> float | None:
    if headers is None:
        return None
    value: str | None = headers.get("Retry-After")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP date: ignore, use the regular backoff
    return seconds if seconds >= 0 else None


def _attempt(
    url: str, data: bytes, timeout: float, traceparent: str | None = None, user_agent: str = _USER_AGENT
) -> tuple[int, str | None, bool, float | None]:
    """One POST. Returns (http_status or 0, error or None on success, retryable, retry_after)."""
    headers = {"Content-Type": "application/json", "Accept": "application/json", "User-Agent": user_agent}
    if traceparent:
        headers["traceparent"] = traceparent
    request = urllib.request.Request(url, data=data, method="POST", headers=headers)
    try:
        with NO_REDIRECTS.open(request, timeout=timeout) as response:
            status: int = response.status
            response.read(64 * 1024)
    except urllib.error.HTTPError as exc:
        code = exc.code
        retry_after = _retry_after(exc.headers)
        exc.close()
        retryable = code >= 500 or code in _RETRYABLE_STATUSES
        return code, f"HTTP {code} {exc.reason}".rstrip(), retryable, retry_after
    except urllib.error.URLError as exc:
        return 0, f"{type(exc.reason).__name__}: {exc.reason}", True, None
    except (OSError, http.client.HTTPException) as exc:  # timeouts, resets, malformed responses
        return 0, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, True, None
    if 200 <= status < 300:
        return status, None, False, None
    return status, f"unexpected HTTP status {status}", status >= 500, None


def post_report(
    url: str,
    body: Mapping[str, Any],
    *,
    max_attempts: int,
    backoff_seconds: float,
    timeout_seconds: float,
    log: structlog.typing.FilteringBoundLogger,
    wait: Callable[[float], bool],
    traceparent: str = "",
    program: str = "timer",
) -> ReportResult:
    """POST ``body`` as JSON to ``url`` until a 2xx answer, a non-retryable failure or ``max_attempts``.

    Connection errors, timeouts, 5xx and 429 are retried after ``backoff_seconds``, doubling each time
    (capped at MAX_BACKOFF_SECONDS; a 429/503 Retry-After in seconds lengthens the delay within that cap).
    ``wait(seconds)`` does the sleeping between attempts and returns True to abandon retrying.
    ``traceparent``: the job's W3C trace context (TRACEPARENT); the report continues that trace
    (a ``traceparent`` header with the job's trace id and a new parent id), else none is sent.
    ``program`` names the sender in log events and the User-Agent (``jobscheduler-<program>``).
    """
    header = child_traceparent(traceparent)
    data = json.dumps(body, separators=(",", ":")).encode()
    status = str(body.get("status", ""))
    last_error: str | None = None
    last_status: int | None = None
    for attempt in range(1, max_attempts + 1):
        log.debug(
            f"sending {program} report",
            status=status,
            endpoint=url,
            attempt=attempt,
            max_attempts=max_attempts,
        )
        try:
            code, error, retryable, retry_after = _attempt(
                url, data, timeout_seconds, header, f"jobscheduler-{program}"
            )
        except Exception as exc:  # a surprise from urllib must not bypass the exit-code contract
            code, error, retryable, retry_after = 0, f"{type(exc).__name__}: {exc}", False, None
        last_status = code or None
        if error is None:
            return ReportResult(delivered=True, attempts=attempt, http_status=code)
        last_error = error
        if not retryable or attempt == max_attempts:
            log.warning(
                f"{program} report attempt failed",
                status=status,
                endpoint=url,
                attempt=attempt,
                max_attempts=max_attempts,
                error=error,
                retryable=retryable,
            )
            return ReportResult(delivered=False, attempts=attempt, http_status=last_status, last_error=error)
        delay = backoff_delay(backoff_seconds, attempt)
        if retry_after is not None:
            delay = min(MAX_BACKOFF_SECONDS, max(delay, retry_after))
        log.warning(
            f"{program} report attempt failed, retrying",
            status=status,
            endpoint=url,
            attempt=attempt,
            max_attempts=max_attempts,
            error=error,
            retry_in_seconds=round(delay, 3),
        )
        if wait(delay):
            return ReportResult(
                delivered=False, attempts=attempt, http_status=last_status, last_error=error, interrupted=True
            )
    # Only reached with max_attempts < 1, which the configuration rejects.
    return ReportResult(delivered=False, attempts=0, http_status=last_status, last_error=last_error)
