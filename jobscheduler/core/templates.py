"""Job templates: named, versioned, owner-scoped partial ScheduleJob requests.

A template's request is stored in the canonical form of the request stored on every Job
(core.requests.stored_request): the work only, no submission fields. Each version is stored
once and never changed (UpdateJobTemplate adds the next); a job records the version it was
made from. Owners see only their own templates (another owner's is one that does not exist),
admins included: a template's name is unique per owner, not per namespace.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Protocol

from jobscheduler.core.auth import Caller
from jobscheduler.core.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from jobscheduler.core.manifests import REQUEST_ANNOTATION
from jobscheduler.core.model import ScheduleRequest
from jobscheduler.core.overlay import nested, overlay, refuse_set
from jobscheduler.core.requests import parse_stored_request, stored_request

MAX_TEMPLATE_NAME: Final = 52
MAX_DESCRIPTION_BYTES: Final = 1024
DEFAULT_PAGE_SIZE: Final = 50
MAX_PAGE_SIZE: Final = 1000
#: How often UpdateJobTemplate tries again when another update took its version number.
_UPDATE_ATTEMPTS: Final = 5
_NAME: Final = re.compile(r"[a-z](?:[a-z0-9-]{0,50}[a-z0-9])?")
_PREFIX: Final = re.compile(r"[a-z0-9-]{0,52}")
_TOKEN_PREFIX: Final = "t1:"
#: A ScheduleJob request's fields that belong to one submission: not allowed in a template.
_SUBMISSION_ONLY: Final = (
    "request_id",
    "start_after",
    "delay_seconds",
    "depends_on",
    "template",
    "template_version",
)


@dataclass(frozen=True, slots=True)
class StoredTemplate:
    """One version of a template as a store keeps it; ``request`` is the canonical JSON."""

    owner: str
    name: str
    version: int
    description: str
    request: str
    created_at: datetime
    #: When version 1 was stored (each version carries it).
    first_created_at: datetime


@dataclass(frozen=True, slots=True)
class JobTemplate:
    """One version of a template, its request read back."""

    stored: StoredTemplate
    request: ScheduleRequest


class TemplateStore(Protocol):
    """Where a backend keeps templates (local: SQLite; Kubernetes: one ConfigMap per version).

    Implementations raise only core errors (Unavailable when the storage cannot be reached)."""

    async def get(self, owner: str, name: str, version: int) -> StoredTemplate | None:
        """That version (0: the latest), None if there is none."""
        ...

    async def add(self, template: StoredTemplate) -> bool:
        """Store a new version; False (nothing stored) if that version exists already."""
        ...

    async def latest(self, owner: str, *, prefix: str, after: str, limit: int) -> list[StoredTemplate]:
        """The latest version of each of ``owner``'s templates whose name starts with ``prefix``
        and sorts after ``after``, by name, at most ``limit``."""
        ...

    async def delete(self, owner: str, name: str) -> int:
        """Delete every version; how many there were."""
        ...


#: Validates a template's request as a full ScheduleJob request (JobService's checks).
Check = Callable[[ScheduleRequest, Caller], Awaitable[None]]


def template_name_problem(name: str) -> str | None:
    if not name:
        return "must not be empty"
    if len(name) > MAX_TEMPLATE_NAME:
        return f"must be at most {MAX_TEMPLATE_NAME} characters (got {len(name)})"
    if not _NAME.fullmatch(name):
        return "must be lowercase letters, digits and '-', starting with a letter and ending alphanumeric"
    return None


def _check_name(name: str, field: str = "name") -> None:
    if (problem := template_name_problem(name)) is not None:
        raise InvalidArgument.field(field, problem)


def description_problem(description: str) -> str | None:
    """What is wrong with a template's or a schedule's description, if anything."""
    if (
        len(description) > MAX_DESCRIPTION_BYTES
        or len(description.encode(errors="replace")) > MAX_DESCRIPTION_BYTES
    ):
        return f"must be at most {MAX_DESCRIPTION_BYTES} bytes"
    if any(not (ch.isprintable() or ch in "\n\t") for ch in description):
        return "must not contain control characters"
    return None


def _check_description(description: str) -> None:
    if (problem := description_problem(description)) is not None:
        raise InvalidArgument.field("description", problem)


def read_template(stored: StoredTemplate) -> JobTemplate:
    """The stored version with its request parsed; FailedPrecondition if it cannot be."""
    try:
        request = parse_stored_request({REQUEST_ANNOTATION: stored.request})
    except InvalidArgument as exc:
        raise FailedPrecondition(
            f"template {stored.name!r} version {stored.version} holds no valid request: {exc.message}"
        ) from None
    return JobTemplate(stored, request)


def encode_page_token(name: str) -> str:
    return base64.urlsafe_b64encode((_TOKEN_PREFIX + name).encode()).decode()


def decode_page_token(token: str) -> str:
    """The name a page token continues after ("" for none); INVALID_ARGUMENT on page_token."""
    if not token:
        return ""
    if len(token) > 128:
        raise InvalidArgument.field("page_token", "is not a page token of ListJobTemplates")
    try:
        raw = base64.urlsafe_b64decode(token.encode("ascii")).decode()
    except (binascii.Error, UnicodeError, ValueError):
        raw = ""
    name = raw.removeprefix(_TOKEN_PREFIX)
    if not raw.startswith(_TOKEN_PREFIX) or template_name_problem(name) is not None:
        raise InvalidArgument.field("page_token", "is not a page token of ListJobTemplates")
    return name


class JobTemplates:
    """The template RPCs' meaning, over a :class:`TemplateStore`."""

    def __init__(self, store: TemplateStore, check: Check, clock: Callable[[], datetime]) -> None:
        self.store = store
        self._check = check
        self._clock = clock

    async def _request(self, name: str, job: ScheduleRequest | None, caller: Caller) -> str:
        """The template's request as stored: a full request without submission fields, its name
        defaulting to the template's; INVALID_ARGUMENT naming ``job.<field>``."""
        if job is None:
            raise InvalidArgument.field("job", "must be set (a ScheduleJobRequest with a job type member)")
        refuse_set(
            job, _SUBMISSION_ONLY, "job", "is not allowed in a template (it belongs to one submission)"
        )
        request = dataclasses.replace(job, name=job.name or name)
        try:
            await self._check(request, caller)
        except InvalidArgument as exc:
            raise nested(exc, "job") from None
        return stored_request(request)

    async def create(
        self, name: str, description: str, job: ScheduleRequest | None, caller: Caller
    ) -> JobTemplate:
        _check_name(name)
        _check_description(description)
        request = await self._request(name, job, caller)
        now = self._clock()
        version = StoredTemplate(caller.identity, name, 1, description, request, now, now)
        if await self.store.get(caller.identity, name, 0) is not None or not await self.store.add(version):
            raise AlreadyExists(f"job template {name!r} exists already")
        return read_template(version)

    async def get(self, name: str, version: int, caller: Caller) -> JobTemplate:
        _check_name(name)
        if version < 0:
            raise InvalidArgument.field("version", "must be 0 (the latest) or a version number")
        stored = await self.store.get(caller.identity, name, version)
        if stored is None:
            what = f"job template {name!r}" + (f" version {version}" if version else "")
            raise NotFound(f"{what} not found")
        return read_template(stored)

    async def list(
        self, caller: Caller, *, page_size: int = 0, page_token: str = "", name_prefix: str = ""
    ) -> tuple[list[JobTemplate], str]:
        """The latest version of each, by name; and the next page's token ("" after the last)."""
        if not 0 <= page_size <= MAX_PAGE_SIZE:
            raise InvalidArgument.field("page_size", f"must be between 0 and {MAX_PAGE_SIZE}")
        if not _PREFIX.fullmatch(name_prefix):
            raise InvalidArgument.field("name_prefix", "must be at most 52 of [a-z0-9-]")
        after = decode_page_token(page_token)
        size = page_size or DEFAULT_PAGE_SIZE
        items = await self.store.latest(caller.identity, prefix=name_prefix, after=after, limit=size + 1)
        token = encode_page_token(items[size - 1].name) if len(items) > size else ""
        return [read_template(t) for t in items[:size]], token

    async def update(
        self, name: str, description: str | None, job: ScheduleRequest | None, caller: Caller
    ) -> JobTemplate:
        """Store the next version: ``job`` (None: the latest's request), ``description`` (None:
        the latest's)."""
        _check_name(name)
        if description is not None:
            _check_description(description)
        request = await self._request(name, job, caller) if job is not None else None
        for _ in range(_UPDATE_ATTEMPTS):
            latest = await self.store.get(caller.identity, name, 0)
            if latest is None:
                raise NotFound(f"job template {name!r} not found")
            version = StoredTemplate(
                caller.identity,
                name,
                latest.version + 1,
                latest.description if description is None else description,
                latest.request if request is None else request,
                self._clock(),
                latest.first_created_at,
            )
            if await self.store.add(version):
                return read_template(version)
        raise FailedPrecondition(f"job template {name!r} kept changing under the update; retry")

    async def delete(self, name: str, caller: Caller) -> int:
        _check_name(name)
        deleted = await self.store.delete(caller.identity, name)
        if not deleted:
            raise NotFound(f"job template {name!r} not found")
        return deleted

    async def resolve(self, request: ScheduleRequest, caller: Caller) -> tuple[ScheduleRequest, int]:
        """ScheduleJobRequest.template: the caller's template (that version; 0: the latest) with
        ``request`` laid over it, and the version used. A template that does not exist is a
        request field naming nothing: INVALID_ARGUMENT on ``template`` (or ``template_version``)."""
        if not request.template:
            raise InvalidArgument.field("template_version", "is set without a template")
        _check_name(request.template, "template")
        if request.template_version < 0:
            raise InvalidArgument.field("template_version", "must be 0 (the latest) or a version number")
        stored = await self.store.get(caller.identity, request.template, request.template_version)
        if stored is None:
            if request.template_version and await self.store.get(caller.identity, request.template, 0):
                raise InvalidArgument.field(
                    "template_version",
                    f"job template {request.template!r} has no version {request.template_version}",
                )
            raise InvalidArgument.field("template", f"no job template {request.template!r}")
        return overlay(read_template(stored).request, request), stored.version
