"""The job-type handler registry.

A handler validates one job type's parameters and renders them into a
batch/v1 Job manifest. Adding a type is one module that defines a handler
plus one proto message; see README "Adding a job type".

There is no import-time global state: the composition root builds a
registry (``jobscheduler.jobtypes.builtin_registry``), tests build their
own, and everything that needs one takes it as an argument.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Mapping
from typing import Any, Generic, TypeVar

from jobscheduler.core.errors import InvalidArgument
from jobscheduler.core.manifests import RenderContext

P = TypeVar("P")


class JobHandler(abc.ABC, Generic[P]):
    """One job type: ``parse`` validates request parameters, ``render`` makes the Job manifest."""

    #: The type's name as it appears in Job messages and labels (``timer``).
    job_type: str
    #: The ScheduleJobRequest ``job`` oneof member carrying its parameters (``timer_job``).
    request_field: str

    @abc.abstractmethod
    def parse(self, params: Mapping[str, Any]) -> P:
        """Validate plain-data parameters; raise InvalidArgument naming each bad field.

        Field paths start with ``request_field`` (``timer_job.duration_seconds``).
        """

    @abc.abstractmethod
    def render(self, params: P, ctx: RenderContext) -> dict[str, Any]:
        """The batch/v1 Job manifest for validated parameters (pure)."""

    def image_override(self, params: P) -> tuple[str, str] | None:
        """``(field path, image)`` when the request picks its own image (checked against
        ALLOWED_IMAGES), or None when the handler's configured image is used."""
        return None

    def default_images(self) -> tuple[str, ...]:
        """The images the handler renders when the request picks none (configured by the
        operator, so trusted by the manifest check even outside ALLOWED_IMAGES)."""
        return ()


class HandlerRegistry:
    """Handlers by job type and by request field."""

    def __init__(self) -> None:
        self._by_type: dict[str, JobHandler[Any]] = {}
        self._by_field: dict[str, JobHandler[Any]] = {}

    def register(self, handler: JobHandler[Any]) -> JobHandler[Any]:
        if handler.job_type in self._by_type:
            raise ValueError(f"job type {handler.job_type!r} is registered already")
        if handler.request_field in self._by_field:
            raise ValueError(f"request field {handler.request_field!r} is registered already")
        self._by_type[handler.job_type] = handler
        self._by_field[handler.request_field] = handler
        return handler

    def for_request_field(self, request_field: str | None) -> JobHandler[Any]:
        handler = self._by_field.get(request_field or "")
        if handler is None:
            fields = ", ".join(sorted(self._by_field)) or "none registered"
            if request_field:
                raise InvalidArgument.field("job", f"job type {request_field!r} is not supported ({fields})")
            raise InvalidArgument.field("job", f"exactly one job type must be set ({fields})")
        return handler

    def for_type(self, job_type: str) -> JobHandler[Any] | None:
        return self._by_type.get(job_type)

    def __iter__(self) -> Iterator[JobHandler[Any]]:
        return iter(list(self._by_type.values()))

    def __len__(self) -> int:
        return len(self._by_type)
