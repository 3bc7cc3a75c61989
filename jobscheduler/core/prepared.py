"""A ScheduleJob request validated and ready to create (JobService.prepare), and the checks
of the submission that need the service's state: its queue, its dependencies, its start time."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from jobscheduler.core.admission import QueueBook
from jobscheduler.core.auth import Caller
from jobscheduler.core.errors import FieldViolation, InvalidArgument
from jobscheduler.core.index import JobIndex
from jobscheduler.core.model import JobOrigin, JobPhase, ScheduleRequest
from jobscheduler.core.naming import dns1123_label_problem

_MAX_DEPENDENCIES = 32
#: How many jobs a dependency-cycle check walks at most.
_MAX_DEPENDENCY_WALK = 10_000


class Renderer(Protocol):
    def __call__(self, job_id: str, extra_annotations: Mapping[str, str] | None = None) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class PreparedJob:
    """A validated ScheduleJob request, not created yet (:meth:`JobService.prepare`).

    ``request``: the request as it will be created (a template's already laid under it);
    ``digest``: what tells a retry of its request_id from a reuse (core.requests.request_digest
    of the request as submitted, before a template is laid under it);
    ``held``: the phase the job is created suspended in (None: it starts at once);
    ``render(job_id, extra_annotations=None)``: its Job manifest under ``job_id``, checked
    (InvalidArgument for a dependency cycle through ``job_id`` or a refused manifest)."""

    request: ScheduleRequest
    digest: str
    caller: Caller
    held: JobPhase | None
    origin: JobOrigin | None
    render: Renderer


def queue_violations(request: ScheduleRequest, queues: QueueBook) -> list[FieldViolation]:
    out: list[FieldViolation] = []
    if request.queue and request.queue not in queues.queues:
        known = ", ".join(sorted(queues.queues))
        out.append(FieldViolation("queue", f"no queue {request.queue!r} (QUEUES has: {known})"))
    if len(request.depends_on) > _MAX_DEPENDENCIES:
        out.append(FieldViolation("depends_on", f"at most {_MAX_DEPENDENCIES} jobs"))
        return out  # (the entries are not looked at)
    seen: set[str] = set()
    for i, dep in enumerate(request.depends_on):
        if (problem := dns1123_label_problem(dep)) is not None:
            out.append(FieldViolation(f"depends_on[{i}]", f"is not a job id: {problem}"))
        elif dep in seen:
            out.append(FieldViolation(f"depends_on[{i}]", f"names {dep} twice"))
        seen.add(dep)
    return out


def check_dependencies(index: JobIndex, job_id: str, depends_on: tuple[str, ...], owner: str) -> None:
    """INVALID_ARGUMENT if the new job would be its own dependency, directly or through
    others (possible with request_id, whose job ids can be known before they exist). Only
    the owner's jobs are followed: another owner's is one that does not exist."""
    path: dict[str, str] = {}  # job -> the job that depends on it (back to the new one)
    todo = [(dep, job_id) for dep in depends_on]
    walked = 0
    while todo and walked < _MAX_DEPENDENCY_WALK:
        dep, via = todo.pop()
        if dep in path:
            continue
        path[dep] = via
        walked += 1
        if dep == job_id:
            back, current = [], via  # "via" depends on the new job: walk back to it
            while current != job_id:
                back.append(current)
                current = path[current]
            cycle = " -> ".join([job_id, *reversed(back), job_id])
            raise InvalidArgument.field("depends_on", f"dependency cycle: {cycle}")
        record = index.get(dep)
        if record is not None and record.owner == owner:
            todo.extend((d, dep) for d in record.depends_on)


def start_time(request: ScheduleRequest, now: datetime) -> datetime | None:
    """When a job asked to start later should start; None: now (a time in the past is now)."""
    if request.start_after is not None:
        start = request.start_after
    elif request.delay_seconds:
        start = now + timedelta(seconds=request.delay_seconds)
    else:
        return None
    return start if start > now else None
