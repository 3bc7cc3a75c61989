"""The service core: what each RPC means, independent of gRPC and Kubernetes."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from jobscheduler.core.errors import AlreadyExists, FailedPrecondition, FieldViolation, InvalidArgument
from jobscheduler.core.manifests import (
    RESERVED_LABEL_PREFIX,
    RESERVED_LABELS,
    JobDefaults,
    RenderContext,
    validate_job_manifest,
)
from jobscheduler.core.model import JobPhase, JobRecord, ScheduleRequest
from jobscheduler.core.naming import (
    dns1123_label_problem,
    label_key_problem,
    label_value_problem,
    new_job_id,
)
from jobscheduler.core.ports import JobBackend
from jobscheduler.core.registry import HandlerRegistry

#: How many fresh ids ScheduleJob tries when a generated id is taken (vanishingly rare).
_ID_ATTEMPTS = 3
_MAX_LABELS = 32
_MAX_CANCEL_REASON = 256


class JobService:
    """Schedules, reads, lists and cancels jobs through a backend."""

    def __init__(
        self,
        backend: JobBackend,
        registry: HandlerRegistry,
        defaults: JobDefaults,
        *,
        id_factory: Callable[[], str] = new_job_id,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.backend = backend
        self.registry = registry
        self.defaults = defaults
        self._new_id = id_factory
        self._clock = clock

    async def schedule(self, request: ScheduleRequest) -> JobRecord:
        violations = [*_name_violations(request.name), *_label_violations(request.labels)]
        handler = self.registry.for_request_field(request.job_field)
        try:
            params = handler.parse(request.params)
        except InvalidArgument as exc:
            violations.extend(exc.violations)
        if violations:
            raise InvalidArgument(violations)
        for attempt in range(_ID_ATTEMPTS):
            ctx = RenderContext(
                job_id=self._new_id(),
                name=request.name,
                job_type=handler.job_type,
                defaults=self.defaults,
                labels=dict(request.labels),
            )
            manifest = handler.render(params, ctx)
            validate_job_manifest(manifest)
            try:
                return await self.backend.create(manifest)
            except AlreadyExists:
                if attempt == _ID_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def get(self, job_id: str) -> JobRecord:
        _check_job_id(job_id)
        return await self.backend.get(job_id)

    async def list(self) -> list[JobRecord]:
        records = await self.backend.list()
        epoch = datetime.min.replace(tzinfo=UTC)
        return sorted(records, key=lambda r: (r.created_at or epoch, r.job_id), reverse=True)

    async def cancel(self, job_id: str, reason: str = "") -> JobRecord:
        _check_job_id(job_id)
        if len(reason) > _MAX_CANCEL_REASON:
            raise InvalidArgument.field("reason", f"must be at most {_MAX_CANCEL_REASON} characters")
        record = await self.backend.get(job_id)
        if record.phase is JobPhase.CANCELLED:
            return record
        if record.phase.is_terminal:
            raise FailedPrecondition(
                f"job {job_id} has already finished ({record.phase.value}); cannot cancel"
            )
        return await self.backend.cancel(job_id, reason=reason or "cancelled by request", at=self._clock())


def _check_job_id(job_id: str) -> None:
    if not job_id:
        raise InvalidArgument.field("job_id", "must not be empty")
    if (problem := dns1123_label_problem(job_id)) is not None:
        raise InvalidArgument.field("job_id", f"is not a job id: {problem}")


def _name_violations(name: str) -> list[FieldViolation]:
    """The name becomes a label value (the Job's own name is the job id)."""
    if not name:
        return [FieldViolation("name", "must not be empty")]
    if (problem := label_value_problem(name)) is not None:
        return [FieldViolation("name", problem)]
    return []


def _label_violations(labels: Mapping[str, str]) -> list[FieldViolation]:
    out: list[FieldViolation] = []
    if len(labels) > _MAX_LABELS:
        out.append(FieldViolation("labels", f"at most {_MAX_LABELS} labels (got {len(labels)})"))
    for key, value in labels.items():
        field = f"labels[{key}]"
        if key in RESERVED_LABELS or key.startswith(RESERVED_LABEL_PREFIX):
            out.append(FieldViolation(field, "is reserved for jobscheduler"))
        elif (problem := label_key_problem(key)) is not None:
            out.append(FieldViolation(field, f"key {problem}"))
        elif (problem := label_value_problem(value)) is not None:
            out.append(FieldViolation(field, f"value {problem}"))
    return out
