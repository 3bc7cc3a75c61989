"""Request validation shared by every job type: name, labels, scheduling fields, job ids.

Every request field is hostile: sizes are checked before anything else is looked at, no
check does work beyond what the (already bounded) input holds, and values echoed back in
a description are cut short (core.errors.brief).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from jobscheduler.core.errors import FieldViolation, InvalidArgument
from jobscheduler.core.manifests import RESERVED_LABEL_PREFIX, RESERVED_LABELS
from jobscheduler.core.model import ScheduleRequest
from jobscheduler.core.naming import (
    control_character_problem,
    dns1123_label_problem,
    env_name_problem,
    label_key_problem,
    label_value_problem,
    reserved_env_problem,
)
from jobscheduler.core.retries import MAX_RETRIES, MAX_RETRY_BACKOFF_SECONDS, MAX_RETRY_DELAY_SECONDS

MAX_LABELS: Final = 32
#: A job's env (every job type that takes one).
MAX_ENV_VARS: Final = 64
MAX_ENV_VALUE_LENGTH: Final = 4096
#: Names plus values, in bytes (UTF-8).
MAX_ENV_TOTAL_BYTES: Final = 32 * 1024
MAX_REQUEST_ID: Final = 128
MAX_CANCEL_REASON: Final = 256
MAX_TIMEOUT_SECONDS: Final = 7 * 86400
MAX_TTL_SECONDS: Final = 366 * 86400
#: How much longer than the longest retry delay a failed job with retries must be kept.
RETRY_TTL_MARGIN_SECONDS: Final = 60
MAX_START_DELAY_SECONDS: Final = 366 * 86400


def scheduling_violations(request: ScheduleRequest, now: datetime | None = None) -> list[FieldViolation]:
    out: list[FieldViolation] = []
    rid = request.request_id
    if len(rid) > MAX_REQUEST_ID or any(not ("!" <= ch <= "~") for ch in rid):
        out.append(
            FieldViolation(
                "request_id", f"must be at most {MAX_REQUEST_ID} printable ASCII characters, no spaces"
            )
        )
    if not 0 <= request.timeout_seconds <= MAX_TIMEOUT_SECONDS:
        out.append(
            FieldViolation("timeout_seconds", f"must be between 1 and {MAX_TIMEOUT_SECONDS} (7 days), or 0")
        )
    if request.start_after is not None and request.delay_seconds:
        out.append(FieldViolation("delay_seconds", "set either start_after or delay_seconds, not both"))
    if not 0 <= request.delay_seconds <= MAX_START_DELAY_SECONDS:
        out.append(
            FieldViolation("delay_seconds", f"must be between 0 and {MAX_START_DELAY_SECONDS} (366 days)")
        )
    now = now or datetime.now(UTC)
    if request.start_after is not None and request.start_after > now + timedelta(
        seconds=MAX_START_DELAY_SECONDS
    ):
        out.append(FieldViolation("start_after", "must be at most 366 days ahead"))
    retries_ok = 0 <= request.max_retries <= MAX_RETRIES
    if not retries_ok:
        out.append(FieldViolation("max_retries", f"must be between 0 and {MAX_RETRIES}"))
    backoff_ok = 0 <= request.retry_backoff_seconds <= MAX_RETRY_BACKOFF_SECONDS
    if not backoff_ok:
        out.append(
            FieldViolation("retry_backoff_seconds", f"must be between 0 and {MAX_RETRY_BACKOFF_SECONDS}")
        )
    ttl = request.ttl_seconds_after_finished
    if ttl is not None and not 0 <= ttl <= MAX_TTL_SECONDS:
        out.append(
            FieldViolation(
                "ttl_seconds_after_finished", f"must be between 0 (keep) and {MAX_TTL_SECONDS} (366 days)"
            )
        )
    elif ttl and request.max_retries > 0 and retries_ok and backoff_ok:
        # A retry is made from the failed Job: it must still exist when the retry is due.
        # (Only with max_retries and the backoff in range: 2 ** max_retries is unbounded work.)
        longest = min(request.retry_backoff_seconds * 2 ** (request.max_retries - 1), MAX_RETRY_DELAY_SECONDS)
        if ttl < longest + RETRY_TTL_MARGIN_SECONDS:
            out.append(
                FieldViolation(
                    "ttl_seconds_after_finished",
                    f"with max_retries the failed job must be kept until its retry is due:"
                    f" at least {longest + RETRY_TTL_MARGIN_SECONDS} seconds (or 0)",
                )
            )
    return out


def check_job_id(job_id: str) -> None:
    if not job_id:
        raise InvalidArgument.field("job_id", "must not be empty")
    if (problem := dns1123_label_problem(job_id)) is not None:
        raise InvalidArgument.field("job_id", f"is not a job id: {problem}")


def check_cancel_reason(reason: str) -> None:
    """The cancel reason becomes an annotation and a status message: short, one line."""
    if len(reason) > MAX_CANCEL_REASON:
        raise InvalidArgument.field("reason", f"must be at most {MAX_CANCEL_REASON} characters")
    if (problem := control_character_problem(reason)) is not None:
        raise InvalidArgument.field("reason", problem)


def name_violations(name: str) -> list[FieldViolation]:
    """The name becomes a label value (the Job's own name is the job id)."""
    if not name:
        return [FieldViolation("name", "must not be empty")]
    if (problem := label_value_problem(name)) is not None:
        return [FieldViolation("name", problem)]
    return []


def label_violations(labels: Mapping[str, str]) -> list[FieldViolation]:
    """Kubernetes label syntax (which admits no control characters), none of ours; too many
    labels is the one violation (the entries are not looked at)."""
    if len(labels) > MAX_LABELS:
        return [FieldViolation("labels", f"at most {MAX_LABELS} labels (got {len(labels)})")]
    out: list[FieldViolation] = []
    for key, value in labels.items():
        field = f"labels[{key}]"
        if key in RESERVED_LABELS or key.startswith(RESERVED_LABEL_PREFIX):
            out.append(FieldViolation(field, "is reserved for jobscheduler"))
        elif (problem := label_key_problem(key)) is not None:
            out.append(FieldViolation(field, f"key {problem}"))
        elif (problem := label_value_problem(value)) is not None:
            out.append(FieldViolation(field, f"value {problem}"))
    return out


def env_violations(
    field: str, env: Mapping[Any, Any], own: Collection[str] = (), own_reason: str = ""
) -> list[FieldViolation]:
    """A request's env: sizes first (nothing else is looked at when they are exceeded), then each
    name (syntax; the job type's ``own`` variables, refused with ``own_reason``; the names that
    steer a process: core.naming.RESERVED_ENV_NAMES) and value (no NUL or other control
    characters but tab and line breaks)."""
    if len(env) > MAX_ENV_VARS:
        return [FieldViolation(field, f"at most {MAX_ENV_VARS} variables (got {len(env)})")]
    if any(not isinstance(k, str) or not isinstance(v, str) for k, v in env.items()):
        return [FieldViolation(field, "must map names to string values")]
    # Lone surrogates (a stored request read back for a retry) are counted, not an error here.
    total = sum(len(f"{k}{v}".encode(errors="surrogatepass")) for k, v in env.items())
    if total > MAX_ENV_TOTAL_BYTES:
        return [
            FieldViolation(
                field, f"names and values together must be at most {MAX_ENV_TOTAL_BYTES} bytes (got {total})"
            )
        ]
    out: list[FieldViolation] = []
    for name, value in env.items():
        path = f"{field}[{name}]"
        if (problem := env_name_refusal(name, own, own_reason)) is not None:
            out.append(FieldViolation(path, problem))
        elif len(value) > MAX_ENV_VALUE_LENGTH:
            out.append(FieldViolation(path, f"value must be at most {MAX_ENV_VALUE_LENGTH} characters"))
        elif (problem := control_character_problem(value, multiline=True)) is not None:
            out.append(FieldViolation(path, f"value {problem}"))
    return out


def env_name_refusal(name: str, own: Collection[str] = (), own_reason: str = "") -> str | None:
    """Why a request may not set variable ``name``: its syntax, one of the job type's ``own``
    (``own_reason``), or a name that steers a process (core.naming.RESERVED_ENV_NAMES)."""
    if (problem := env_name_problem(name)) is not None:
        return problem
    if name in own:
        return own_reason
    return reserved_env_problem(name)
