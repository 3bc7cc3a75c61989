"""ScheduleRequest's fields, declared once: their canonical form, the request digest, and the
request stored on every Job (``jobscheduler.io/request``) that a retry is rendered from.

Every field of :class:`ScheduleRequest` is in the digest unless it is in :data:`NOT_DIGESTED`;
the fields that define the work (what a retry inherits) are :data:`STORED_FIELDS`, the others
belong to one submission only (its start time, its dependencies). A field added to
ScheduleRequest is digested at once; tests/test_core_requests.py fails until it is either
stored or declared a submission field.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Final

from jobscheduler.core.errors import BackendError, FieldViolation, InvalidArgument
from jobscheduler.core.limits import ImagePolicy
from jobscheduler.core.manifests import (
    MAX_RETRIES_ANNOTATION,
    PRIORITY_ANNOTATION,
    QUEUE_ANNOTATION,
    QUEUE_LABEL,
    REQUEST_ANNOTATION,
    RETRY_BACKOFF_ANNOTATION,
    JobDefaults,
    RenderContext,
    validate_job_manifest,
)
from jobscheduler.core.model import DEFAULT_QUEUE, Priority, ScheduleRequest
from jobscheduler.core.registry import HandlerRegistry, JobHandler

#: Not part of what a request asks for: a different request_id is a different request anyway.
NOT_DIGESTED: Final = frozenset({"request_id"})
#: The work: stored on the Job (REQUEST_ANNOTATION), inherited by its retries.
STORED_FIELDS: Final = (
    "name",
    "job_field",
    "params",
    "labels",
    "timeout_seconds",
    "ttl_seconds_after_finished",
    "max_retries",
    "retry_backoff_seconds",
    "queue",
    "priority",
)
#: This submission only (digested, not stored): a retry starts when it is due, with no dependencies.
SUBMISSION_FIELDS: Final = frozenset(
    {"start_after", "delay_seconds", "depends_on", "template", "template_version"}
)
#: The stored request's JSON, at most (Kubernetes allows 256 KiB for all annotations together).
MAX_STORED_REQUEST_BYTES: Final = 128 * 1024

#: Values that mean the same as another: an unset queue is ``default``, an unset priority NORMAL.
_NORMALIZE: Final[Mapping[str, Callable[[Any], Any]]] = {
    "queue": lambda v: v or DEFAULT_QUEUE,
    "priority": lambda v: v or Priority.NORMAL,
}


def canonical(name: str, value: Any) -> Any:
    """A field's value as plain JSON data: maps sorted by key (json does that), sequences as
    lists, times in ISO 8601, enums by name, and unset values as what they mean."""
    value = _NORMALIZE.get(name, lambda v: v)(value)
    return _plain(value)


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _defaults() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(ScheduleRequest):
        if f.default is not dataclasses.MISSING:
            out[f.name] = canonical(f.name, f.default)
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = canonical(f.name, f.default_factory())
    return out


#: Each field's canonical default: a field at its default is left out of the digest and the stored
#: request, so adding a field (with a default) changes neither for requests that do not set it.
_CANONICAL_DEFAULTS: Final = _defaults()
_MISSING: Final = object()


def canonical_fields(request: ScheduleRequest, names: Any) -> dict[str, Any]:
    """``{field: canonical value}`` of ``names``, fields at their default left out."""
    out: dict[str, Any] = {}
    for name in names:
        value = canonical(name, getattr(request, name))
        if value != _CANONICAL_DEFAULTS.get(name, _MISSING):
            out[name] = value
    return out


def digested_fields() -> tuple[str, ...]:
    """Every ScheduleRequest field but NOT_DIGESTED, in declaration order."""
    return tuple(f.name for f in dataclasses.fields(ScheduleRequest) if f.name not in NOT_DIGESTED)


def request_digest(request: ScheduleRequest) -> str:
    """What makes two ScheduleJob requests the same (16 hex digits of SHA-256 over canonical JSON)."""
    body = canonical_fields(request, digested_fields())
    raw = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def stored_request(request: ScheduleRequest) -> str:
    """The REQUEST_ANNOTATION value: the canonical JSON of the request's STORED_FIELDS. Maps keep
    the request's order (a retry renders env in the same order: ``$(VAR)`` references depend on it)."""
    body = canonical_fields(request, STORED_FIELDS)
    try:
        raw = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as exc:  # a handler's params that are not JSON data: our bug
        raise BackendError(f"the request cannot be stored on the Job: {exc}") from None
    size = len(raw.encode())
    if size > MAX_STORED_REQUEST_BYTES:
        raise InvalidArgument.field(
            request.job_field or "job",
            f"the request is {size} bytes as stored on the Job; at most {MAX_STORED_REQUEST_BYTES}",
        )
    return raw


#: Stored numbers are seconds or counts: beyond this (the API's int32) they cannot be ours.
_MAX_STORED_INT: Final = 2**31 - 1


def _int(value: Any, *, optional: bool = False) -> bool:
    if value is None:
        return optional
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _MAX_STORED_INT


#: What each stored field must be (JSON types); anything else makes the stored request invalid.
_STORED_TYPES: Final[Mapping[str, Callable[[Any], bool]]] = {
    "name": lambda v: isinstance(v, str),
    "job_field": lambda v: isinstance(v, str),
    "params": lambda v: isinstance(v, dict),
    "labels": lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in v.values()),
    "timeout_seconds": _int,
    "ttl_seconds_after_finished": lambda v: _int(v, optional=True),
    "max_retries": _int,
    "retry_backoff_seconds": _int,
    "queue": lambda v: isinstance(v, str),
    "priority": lambda v: isinstance(v, str) and v in Priority.__members__,
}


def parse_stored_request(annotations: Mapping[str, Any]) -> ScheduleRequest:
    """The request stored on a Job (REQUEST_ANNOTATION), checked for shape and size only (the
    handler and :func:`render_request` check the rest); InvalidArgument naming what is wrong."""
    where = REQUEST_ANNOTATION
    raw = annotations.get(REQUEST_ANNOTATION)
    if not isinstance(raw, str) or not raw:
        raise InvalidArgument.field(where, "is missing (a Job from an older version, or not ours)")
    if len(raw) > MAX_STORED_REQUEST_BYTES:
        raise InvalidArgument.field(where, f"is longer than {MAX_STORED_REQUEST_BYTES} characters")
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise InvalidArgument.field(where, f"is not JSON: {exc}") from None
    except RecursionError:
        raise InvalidArgument.field(where, "is nested too deeply") from None
    if not isinstance(body, dict):
        raise InvalidArgument.field(where, "must be a JSON object")
    unknown = sorted(set(body) - set(STORED_FIELDS))
    if unknown:
        raise InvalidArgument.field(where, f"has unknown fields: {', '.join(unknown)[:200]}")
    fields: dict[str, Any] = {}
    for name in STORED_FIELDS:
        if name not in body:
            if name not in _CANONICAL_DEFAULTS:
                raise InvalidArgument.field(f"{where}.{name}", "is missing")
            continue
        value = body[name]
        if not _STORED_TYPES[name](value):
            raise InvalidArgument.field(f"{where}.{name}", f"has the wrong type ({type(value).__name__})")
        fields[name] = value
    if "priority" in fields:
        fields["priority"] = Priority[fields["priority"]]
    return ScheduleRequest(**fields)


def image_violations(
    handler: JobHandler[Any], params: Any, images: ImagePolicy | None
) -> list[FieldViolation]:
    """The request's own image (if it picks one) against ALLOWED_IMAGES."""
    override = handler.image_override(params)
    if override is None or images is None or images.allows(override[1]):
        return []
    allowed = ", ".join(images.prefixes) or "none"
    return [FieldViolation(override[0], f"image {override[1]!r} is not allowed (ALLOWED_IMAGES: {allowed})")]


def parse_work(
    registry: HandlerRegistry, request: ScheduleRequest, images: ImagePolicy | None
) -> tuple[JobHandler[Any], Any]:
    """The handler and its validated parameters (handler.parse, then ALLOWED_IMAGES); InvalidArgument."""
    handler = registry.for_request_field(request.job_field, request.params)
    params = handler.parse(request.params)
    violations = image_violations(handler, params, images)
    if violations:
        raise InvalidArgument(violations)
    return handler, params


def render_request(
    handler: JobHandler[Any],
    params: Any,
    request: ScheduleRequest,
    *,
    job_id: str,
    owner: str,
    defaults: JobDefaults,
) -> dict[str, Any]:
    """The Job for ``request``'s work (ScheduleJob and retries alike): the handler's manifest with
    what the request adds to any job type: its retention, timeout, queue, priority, retry policy,
    and the request itself (REQUEST_ANNOTATION). Not validated yet: see :func:`check_manifest`."""
    if request.ttl_seconds_after_finished is not None:
        ttl = request.ttl_seconds_after_finished or None
        defaults = dataclasses.replace(defaults, ttl_seconds_after_finished=ttl)
    ctx = RenderContext(
        job_id=job_id,
        name=request.name,
        job_type=handler.job_type,
        defaults=defaults,
        labels=dict(request.labels),
        owner=owner,
    )
    manifest = handler.render(params, ctx)
    if request.timeout_seconds:
        manifest["spec"]["activeDeadlineSeconds"] = request.timeout_seconds
    queue = request.queue or DEFAULT_QUEUE
    manifest["metadata"]["labels"][QUEUE_LABEL] = queue
    annotations = manifest["metadata"].setdefault("annotations", {})
    if request.max_retries:
        annotations[MAX_RETRIES_ANNOTATION] = str(request.max_retries)
        annotations[RETRY_BACKOFF_ANNOTATION] = str(request.retry_backoff_seconds)
    annotations[QUEUE_ANNOTATION] = queue
    annotations[PRIORITY_ANNOTATION] = (request.priority or Priority.NORMAL).name
    annotations[REQUEST_ANNOTATION] = stored_request(request)
    return manifest


def check_manifest(manifest: dict[str, Any], handler: JobHandler[Any], images: ImagePolicy | None) -> None:
    """validate_job_manifest with ALLOWED_IMAGES, the handler's own (configured) images trusted;
    a Secret the manifest reads that ALLOWED_SECRETS does not list is the request's fault
    (InvalidArgument on the job type's field, naming the Secret)."""
    if images is not None:
        refused = sorted({name for name in secret_names(manifest) if not images.allows_secret(name)})
        if refused:
            allowed = ", ".join(sorted(images.secrets or ())) or "none"
            raise InvalidArgument.field(
                handler.request_field,
                f"Secret(s) {', '.join(refused)} may not be read by jobs (ALLOWED_SECRETS: {allowed})",
            )
    validate_job_manifest(manifest, images=images, trusted_images=handler.default_images())


def secret_names(manifest: Mapping[str, Any]) -> set[str]:
    """The Secrets a Job's containers read (env valueFrom.secretKeyRef)."""
    pod = ((manifest.get("spec") or {}).get("template") or {}).get("spec") or {}
    names: set[str] = set()
    for group in ("initContainers", "containers"):
        for container in pod.get(group) or ():
            for env in container.get("env") or ():
                ref = ((env.get("valueFrom") or {}).get("secretKeyRef") or {}).get("name")
                if ref is not None:
                    names.add(str(ref))
    return names
