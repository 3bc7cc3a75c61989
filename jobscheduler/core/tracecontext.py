"""W3C trace context on Jobs: the ``traceparent`` of the ScheduleJob call that created a Job is
stored on it (TRACEPARENT_ANNOTATION) and given to its containers (the TRACEPARENT variable), so
the job's program can continue that trace in its report request.

Plain strings only: the core imports no OpenTelemetry; the API layer reads the current context
(jobscheduler.tracing) and passes its ``traceparent`` in.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from typing import Any, Final

TRACEPARENT_ANNOTATION: Final = "jobscheduler.io/traceparent"
#: The environment variable a job's containers get (reserved: see core.naming).
TRACEPARENT_ENV: Final = "TRACEPARENT"

#: version 00: ``00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>``, lowercase, ids not all zero.
_TRACEPARENT: Final = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ZERO_TRACE: Final = "0" * 32
_ZERO_SPAN: Final = "0" * 16


def parse_traceparent(value: object) -> tuple[str, str, str] | None:
    """(trace id, parent span id, flags) of a well-formed version-00 ``traceparent``, else None.
    Anything longer than the 55 characters of one is refused before it is looked at."""
    if not isinstance(value, str) or len(value) != 55:
        return None
    match = _TRACEPARENT.fullmatch(value)
    if match is None or match.group(1) == _ZERO_TRACE or match.group(2) == _ZERO_SPAN:
        return None
    return match.group(1), match.group(2), match.group(3)


def child_traceparent(value: object) -> str | None:
    """A ``traceparent`` in the same trace as ``value`` with a new (random) parent id: what a job's
    program sends with its report so the request is a new step of the job's trace; None if
    ``value`` is not a well-formed traceparent."""
    parsed = parse_traceparent(value)
    if parsed is None:
        return None
    trace_id, _, flags = parsed
    span_id = _ZERO_SPAN
    while span_id == _ZERO_SPAN:
        span_id = secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-{flags}"


def apply_trace_context(manifest: dict[str, Any], traceparent: object) -> None:
    """Store ``traceparent`` on the Job (annotation) and set TRACEPARENT in each of its containers'
    env (replacing one that is there). Nothing happens if it is not a well-formed traceparent."""
    if parse_traceparent(traceparent) is None:
        return
    assert isinstance(traceparent, str)
    manifest.setdefault("metadata", {}).setdefault("annotations", {})[TRACEPARENT_ANNOTATION] = traceparent
    pod = manifest.get("spec", {}).get("template", {}).get("spec", {})
    for container in pod.get("containers") or ():
        env = [e for e in container.get("env") or () if e.get("name") != TRACEPARENT_ENV]
        env.append({"name": TRACEPARENT_ENV, "value": traceparent})
        container["env"] = env


def stored_traceparent(annotations: Mapping[str, Any]) -> str | None:
    """The traceparent stored on a Job (TRACEPARENT_ANNOTATION), if it is a well-formed one."""
    value = annotations.get(TRACEPARENT_ANNOTATION)
    return value if parse_traceparent(value) is not None else None
