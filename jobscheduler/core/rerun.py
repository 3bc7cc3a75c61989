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

from jobscheduler.core.errors import FailedPrecondition, InvalidArgument
from jobscheduler.core.model import JobOrigin, JobRecord, ScheduleRequest
from jobscheduler.core.overlay import NOTHING, overlay, refuse_set
from jobscheduler.core.requests import parse_stored_request, request_digest

#: Overrides a rerun does not take: it has its own request_id, and reruns what the job ran.
_NOT_OVERRIDDEN: Final = ("request_id", "template", "template_version")


def rerun_request(
    record: JobRecord, manifest: Mapping[str, Any], overrides: ScheduleRequest | None, request_id: str
) -> tuple[ScheduleRequest, JobOrigin, str]:
    """The rerun's request, origin and request digest (what tells a retry of ``request_id``
    from a reuse: the original and the overrides). INVALID_ARGUMENT naming ``overrides.<field>``;
    FAILED_PRECONDITION for a job that has not finished or has no valid stored request."""
    overrides = overrides or NOTHING
    refuse_set(overrides, _NOT_OVERRIDDEN, "overrides", "cannot be overridden in a rerun")
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
