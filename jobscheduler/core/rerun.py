"""RerunJob: a new job from a finished (or cancelled) job's stored request, with overrides.

The original is never copied: its request stored on the Job (core.requests) is read back and
checked, RerunJob's ``overrides`` are laid over it (core.overlay, as over a template), and the
result goes through ScheduleJob's validation like any new request. The rerun keeps the
original's template name and version and is linked to it by ``rerun_of``.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from typing import Any, Final

from jobscheduler.core.errors import FailedPrecondition, FieldViolation, InvalidArgument
from jobscheduler.core.model import JobOrigin, JobRecord, ScheduleRequest
from jobscheduler.core.overlay import overlay
from jobscheduler.core.requests import parse_stored_request, request_digest

#: Overrides a rerun does not take: it has its own request_id, and reruns what the job ran.
_NOT_OVERRIDDEN: Final = ("request_id", "template", "template_version")
_NO_OVERRIDES: Final = ScheduleRequest(name="", job_field=None, params={})


def rerun_request(
    record: JobRecord, manifest: Mapping[str, Any], overrides: ScheduleRequest | None, request_id: str
) -> tuple[ScheduleRequest, JobOrigin, str]:
    """The rerun's request, origin and request digest (what tells a retry of ``request_id``
    from a reuse: the original and the overrides). INVALID_ARGUMENT naming ``overrides.<field>``;
    FAILED_PRECONDITION for a job that has not finished or has no valid stored request."""
    overrides = overrides or _NO_OVERRIDES
    refused = [
        FieldViolation(f"overrides.{f}", "cannot be overridden in a rerun")
        for f in _NOT_OVERRIDDEN
        if getattr(overrides, f) != getattr(_NO_OVERRIDES, f)
    ]
    if refused:
        raise InvalidArgument(refused)
    if not record.phase.is_terminal:
        raise FailedPrecondition(
            f"job {record.job_id} has not finished ({record.phase.value}); only a finished or"
            " cancelled job can be rerun"
        )
    annotations = (manifest.get("metadata") or {}).get("annotations") or {}
    try:
        base = parse_stored_request(annotations)
    except InvalidArgument as exc:
        raise FailedPrecondition(
            f"job {record.job_id} has no valid stored request to rerun: {exc.message}"
        ) from None
    request = dataclasses.replace(overlay(base, overrides), request_id=request_id)
    origin = JobOrigin(
        template=record.template, template_version=record.template_version, rerun_of=record.job_id
    )
    body = f"rerun\0{record.job_id}\0{request_digest(overrides)}"
    return request, origin, hashlib.sha256(body.encode()).hexdigest()[:16]


def overrides_violations(exc: InvalidArgument) -> InvalidArgument:
    """A rerun's validation errors named as RerunJobRequest's fields (``overrides.<field>``)."""
    return InvalidArgument(
        [
            v if v.field == "request_id" else FieldViolation(f"overrides.{v.field}", v.description)
            for v in exc.violations
        ]
    )
