""":class:`AsyncClient`'s schedule, template and rerun methods: :class:`Client`'s, awaited (the
requests are built in ``_calls``; the docstrings are on :class:`Client`)."""

# ruff: noqa: ASYNC109 (``timeout`` is the call's gRPC deadline, as in _async.py)

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable
from typing import TypeVar, Unpack

from jobscheduler.client import _calls as calls
from jobscheduler.client._convert import new_request_id
from jobscheduler.client._types import Job, JobRequest, JobTemplate, Schedule, ScheduleDeletion

_T = TypeVar("_T")


class AsyncScheduleMethods:
    """Mixed into :class:`AsyncClient`, which provides ``_call``."""

    async def _call(self, call: calls.Call[_T], timeout: float | None) -> _T:
        raise NotImplementedError  # pragma: no cover - AsyncClient's

    async def _pages(
        self, page: Callable[[str], calls.Call[calls.Page[_T]]], timeout: float | None
    ) -> AsyncIterator[_T]:
        token = ""
        while True:
            answer = await self._call(page(token), timeout)
            for item in answer.items:
                yield item
            token = answer.next_page_token
            if not token:
                return

    async def rerun(
        self,
        job_id: str,
        overrides: JobRequest | None = None,
        *,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> Job:
        """As :meth:`Client.rerun`."""
        call = calls.rerun(job_id, overrides, request_id=request_id or new_request_id())
        return await self._call(call, timeout)

    async def create_schedule(
        self,
        name: str,
        cron: str,
        job: JobRequest,
        *,
        timeout: float | None = None,
        **options: Unpack[calls.ScheduleOptions],
    ) -> Schedule:
        """As :meth:`Client.create_schedule`."""
        return await self._call(calls.create_schedule(name, cron, job, **options), timeout)

    async def get_schedule(self, name: str, *, timeout: float | None = None) -> Schedule:
        """As :meth:`Client.get_schedule`."""
        return await self._call(calls.get_schedule(name), timeout)

    def list_schedules(
        self, *, name_prefix: str = "", owner: str = "", page_size: int = 0, timeout: float | None = None
    ) -> AsyncIterator[Schedule]:
        """As :meth:`Client.list_schedules` (an async iterator)."""
        page = functools.partial(
            calls.list_schedules, name_prefix=name_prefix, owner=owner, page_size=page_size
        )
        return self._pages(page, timeout)

    async def update_schedule(
        self, name: str, *, timeout: float | None = None, **changes: Unpack[calls.ScheduleChanges]
    ) -> Schedule:
        """As :meth:`Client.update_schedule`."""
        return await self._call(calls.update_schedule(name, **changes), timeout)

    async def delete_schedule(
        self, name: str, *, cancel_jobs: bool = False, timeout: float | None = None
    ) -> ScheduleDeletion:
        """As :meth:`Client.delete_schedule`."""
        return await self._call(calls.delete_schedule(name, cancel_jobs=cancel_jobs), timeout)

    async def trigger_schedule(self, name: str, *, timeout: float | None = None) -> Job:
        """As :meth:`Client.trigger_schedule`."""
        return await self._call(calls.trigger_schedule(name), timeout)

    async def create_template(
        self, name: str, job: JobRequest, *, description: str = "", timeout: float | None = None
    ) -> JobTemplate:
        """As :meth:`Client.create_template`."""
        return await self._call(calls.create_template(name, job, description=description), timeout)

    async def get_template(self, name: str, *, version: int = 0, timeout: float | None = None) -> JobTemplate:
        """As :meth:`Client.get_template`."""
        return await self._call(calls.get_template(name, version=version), timeout)

    def list_templates(
        self, *, name_prefix: str = "", page_size: int = 0, timeout: float | None = None
    ) -> AsyncIterator[JobTemplate]:
        """As :meth:`Client.list_templates` (an async iterator)."""
        page = functools.partial(calls.list_templates, name_prefix=name_prefix, page_size=page_size)
        return self._pages(page, timeout)

    async def update_template(
        self,
        name: str,
        job: JobRequest | None = None,
        *,
        description: str | None = None,
        timeout: float | None = None,
    ) -> JobTemplate:
        """As :meth:`Client.update_template`."""
        return await self._call(calls.update_template(name, job, description=description), timeout)

    async def delete_template(self, name: str, *, timeout: float | None = None) -> int:
        """As :meth:`Client.delete_template`."""
        return await self._call(calls.delete_template(name), timeout)


__all__ = ["AsyncScheduleMethods"]
