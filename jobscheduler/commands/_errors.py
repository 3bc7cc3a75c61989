"""Exit codes and the one-line error message for every failure (no tracebacks)."""

from __future__ import annotations

import sys
from typing import Final

from jobscheduler import client

EXIT_OK: Final = 0
#: The job ended FAILED or CANCELLED (``--wait``), or an error of no other class.
EXIT_FAILED: Final = 1
#: Bad command line: unknown flag, missing argument (argparse's own code).
EXIT_USAGE: Final = 2
EXIT_NOT_FOUND: Final = 3
#: The request was refused (INVALID_ARGUMENT, or a flag value the command checks itself).
EXIT_INVALID: Final = 4
#: The server could not be reached or did not answer in time (UNAVAILABLE, DEADLINE_EXCEEDED).
EXIT_UNAVAILABLE: Final = 5
#: UNAUTHENTICATED or PERMISSION_DENIED.
EXIT_DENIED: Final = 6
#: ALREADY_EXISTS (a request id reused with another request) or FAILED_PRECONDITION
#: (e.g. cancelling a finished job).
EXIT_CONFLICT: Final = 7
#: RESOURCE_EXHAUSTED: rate or stream limit.
EXIT_EXHAUSTED: Final = 8
EXIT_INTERRUPTED: Final = 130

EXIT_CODES: Final[tuple[tuple[type[client.JobSchedulerError], int], ...]] = (
    (client.NotFound, EXIT_NOT_FOUND),
    (client.InvalidArgument, EXIT_INVALID),
    (client.OutOfRange, EXIT_INVALID),
    (client.Unavailable, EXIT_UNAVAILABLE),
    (client.DeadlineExceeded, EXIT_UNAVAILABLE),
    (client.Unauthenticated, EXIT_DENIED),
    (client.PermissionDenied, EXIT_DENIED),
    (client.AlreadyExists, EXIT_CONFLICT),
    (client.FailedPrecondition, EXIT_CONFLICT),
    (client.ResourceExhausted, EXIT_EXHAUSTED),
)

_LABELS: Final = {
    "INVALID_ARGUMENT": "invalid argument",
    "NOT_FOUND": "not found",
    "UNAVAILABLE": "unavailable",
    "DEADLINE_EXCEEDED": "deadline exceeded",
    "UNAUTHENTICATED": "unauthenticated",
    "PERMISSION_DENIED": "permission denied",
    "ALREADY_EXISTS": "already exists",
    "FAILED_PRECONDITION": "failed precondition",
    "RESOURCE_EXHAUSTED": "resource exhausted",
}


def exit_code(exc: client.JobSchedulerError) -> int:
    for cls, code in EXIT_CODES:
        if isinstance(exc, cls):
            return code
    return EXIT_FAILED


def one_line(text: str, limit: int = 2000) -> str:
    """``text`` on one line of printable characters, cut to ``limit`` (messages come from a server)."""
    flat = "".join(ch if ch.isprintable() else " " for ch in text).strip()
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def describe(exc: client.JobSchedulerError, target: str = "") -> str:
    """``invalid argument: timer_job.duration_seconds: must be positive (got 0)``: the violations'
    fields first (they are what to fix), else the message; unreachable servers name the address."""
    label = _LABELS.get(exc.code, exc.code.replace("_", " ").lower())
    violations = exc.field_violations
    detail = "; ".join(str(v) for v in violations) if violations else exc.message
    if isinstance(exc, client.Unavailable | client.DeadlineExceeded) and target:
        detail = f"{target}: {detail}"
    text = f"{label}: {detail}"
    if exc.request_id and not isinstance(exc, client.Unavailable):
        text += f" (request id {exc.request_id})"
    return one_line(text)


def fail(message: str, code: int) -> int:
    """Print ``jobscheduler: message`` on stderr and return ``code``."""
    sys.stdout.flush()
    print(f"jobscheduler: {one_line(message)}", file=sys.stderr)
    return code
