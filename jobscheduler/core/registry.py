"""The job-type handler registry.

A handler validates one job type's parameters and renders them into a
batch/v1 Job manifest. Adding a built-in type is one module that defines a
handler plus one proto message; a plugin type is an installed package whose
entry point (group ``jobscheduler.job_types``) becomes a handler for the
``custom_job`` member, picked by ``custom_job.type`` (``dispatch_key``). Both
are JobHandler instances here; see README "Adding a job type".

There is no import-time global state: the composition root builds a
registry (``jobscheduler.jobtypes.builtin_registry``), tests build their
own, and everything that needs one takes it as an argument.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Mapping
from typing import Any, Generic, TypeVar

from jobscheduler.core.errors import InvalidArgument, brief
from jobscheduler.core.manifests import RenderContext

P = TypeVar("P")


class JobHandler(abc.ABC, Generic[P]):
    """One job type: ``parse`` validates request parameters, ``render`` makes the Job manifest."""

    #: The type's name as it appears in Job messages and labels (``timer``).
    job_type: str
    #: The ScheduleJobRequest ``job`` oneof member carrying its parameters (``timer_job``).
    request_field: str
    #: What ListJobTypes says the type does (one or two sentences).
    description: str = ""
    #: The distribution the type comes from and its version; empty for a built-in type.
    package: str = ""
    version: str = ""
    #: For a request field shared by several types (``custom_job``): the parameter naming the
    #: type (``type``); None when the request field is the type's alone.
    dispatch_key: str | None = None

    @property
    def builtin(self) -> bool:
        return not self.package

    def parameters_schema(self) -> dict[str, Any]:
        """The parameters' JSON Schema (Draft 2020-12) as ListJobTypes reports it; handlers
        override this default, which says no more than "an object"."""
        return {"type": "object"}

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
    """Handlers by job type and by request field (a shared field: by its dispatch key too)."""

    def __init__(self) -> None:
        self._by_type: dict[str, JobHandler[Any]] = {}
        self._by_field: dict[str, JobHandler[Any]] = {}
        #: Shared request fields: field -> (dispatch key, {type: handler}).
        self._shared: dict[str, tuple[str, dict[str, JobHandler[Any]]]] = {}

    def register(self, handler: JobHandler[Any]) -> JobHandler[Any]:
        """Add ``handler``; ValueError when its type is taken, or its request field is another
        type's (a shared field takes several types, all with the same dispatch key)."""
        name, field, key = handler.job_type, handler.request_field, handler.dispatch_key
        if name in self._by_type:
            raise ValueError(f"job type {name!r} is registered already")
        if field in self._by_field:
            raise ValueError(f"request field {field!r} is registered already")
        if key is None and field in self._shared:
            raise ValueError(
                f"request field {field!r} is shared by types picked by {self._shared[field][0]!r}"
            )
        if key is not None and self._shared.get(field, (key, {}))[0] != key:
            raise ValueError(
                f"request field {field!r} picks its type by {self._shared[field][0]!r}, not {key!r}"
            )
        self._by_type[name] = handler
        if key is None:
            self._by_field[field] = handler
        else:
            self._shared.setdefault(field, (key, {}))[1][name] = handler
        return handler

    def share(self, request_field: str, dispatch_key: str) -> None:
        """Declare ``request_field`` shared by types picked by ``dispatch_key`` before any is
        registered, so that a request naming none of them is told so on ``<field>.<key>``."""
        if request_field in self._by_field:
            raise ValueError(f"request field {request_field!r} is registered already")
        if self._shared.setdefault(request_field, (dispatch_key, {}))[0] != dispatch_key:
            raise ValueError(
                f"request field {request_field!r} picks its type by {self._shared[request_field][0]!r}"
            )

    def for_request_field(
        self, request_field: str | None, params: Mapping[str, Any] | None = None
    ) -> JobHandler[Any]:
        """The handler for a request's job member and its parameters (plain data; a shared
        member's dispatch key picks among its types); InvalidArgument naming what is wrong."""
        handler = self._by_field.get(request_field or "")
        if handler is not None:
            return handler
        shared = self._shared.get(request_field or "")
        if shared is None:
            fields = ", ".join(sorted([*self._by_field, *self._shared])) or "none registered"
            if request_field:
                raise InvalidArgument.field("job", f"job type {request_field!r} is not supported ({fields})")
            raise InvalidArgument.field("job", f"exactly one job type must be set ({fields})")
        key, handlers = shared
        name = (params or {}).get(key)
        handler = handlers.get(name) if isinstance(name, str) else None
        if handler is None:
            known = ", ".join(sorted(handlers)) or "none: no plugin job types are installed"
            what = f"unknown type {brief(name)}" if name else "must name a job type"
            raise InvalidArgument.field(f"{request_field}.{key}", f"{what} (known: {known})")
        return handler

    def for_type(self, job_type: str) -> JobHandler[Any] | None:
        return self._by_type.get(job_type)

    def __iter__(self) -> Iterator[JobHandler[Any]]:
        return iter(list(self._by_type.values()))

    def __len__(self) -> int:
        return len(self._by_type)
