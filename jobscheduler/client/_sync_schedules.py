""":class:`Client`'s schedule, template and rerun methods (the requests are built in ``_calls``)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import TypeVar, Unpack

from jobscheduler.client import _calls as calls
from jobscheduler.client._convert import new_request_id
from jobscheduler.client._types import Job, JobRequest, JobTemplate, Schedule, ScheduleDeletion

_T = TypeVar("_T")


class ScheduleMethods:
    """Mixed into :class:`Client`, which provides ``_call``."""

    def _call(self, call: calls.Call[_T], timeout: float | None) -> _T:
        raise NotImplementedError  # pragma: no cover - Client's

    def _pages(
        self, page: Callable[[str], calls.Call[calls.Page[_T]]], timeout: float | None
    ) -> Iterator[_T]:
        token = ""
        while True:
            answer = self._call(page(token), timeout)
            yield from answer.items
            token = answer.next_page_token
            if not token:
                return

    # --- rerun ------------------------------------------------------------------------------------

    def rerun(
        self,
        job_id: str,
        overrides: JobRequest | None = None,
        *,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> Job:
        """A new job from a finished (or cancelled) job's stored request, ``overrides`` laid over it
        (its set fields only); the new job's ``rerun_of`` names ``job_id``. Like ``schedule``, it
        always sends a ``request_id`` (generated when not given), so a retry makes no second job."""
        call = calls.rerun(job_id, overrides, request_id=request_id or new_request_id())
        return self._call(call, timeout)

    # --- schedules --------------------------------------------------------------------------------

    def create_schedule(
        self,
        name: str,
        cron: str,
        job: JobRequest,
        *,
        timeout: float | None = None,
        **options: Unpack[calls.ScheduleOptions],
    ) -> Schedule:
        """A schedule ``name`` that makes ``job`` whenever ``cron`` (five fields or ``@hourly``-style)
        is due in ``time_zone``; ``options``: see :class:`ScheduleOptions`. Not retried after
        UNAVAILABLE (a retry of one that was made would be AlreadyExists)."""
        return self._call(calls.create_schedule(name, cron, job, **options), timeout)

    def get_schedule(self, name: str, *, timeout: float | None = None) -> Schedule:
        """The schedule and its status (next run time, active jobs, missed runs, ...)."""
        return self._call(calls.get_schedule(name), timeout)

    def list_schedules(
        self, *, name_prefix: str = "", owner: str = "", page_size: int = 0, timeout: float | None = None
    ) -> Iterator[Schedule]:
        """Every schedule (yours, or ``owner``'s with the admin role), by name, page after page."""
        page = functools.partial(
            calls.list_schedules, name_prefix=name_prefix, owner=owner, page_size=page_size
        )
        return self._pages(page, timeout)

    def update_schedule(
        self, name: str, *, timeout: float | None = None, **changes: Unpack[calls.ScheduleChanges]
    ) -> Schedule:
        """Change the given settings (see :class:`ScheduleChanges`); the others keep their values."""
        return self._call(calls.update_schedule(name, **changes), timeout)

    def delete_schedule(
        self, name: str, *, cancel_jobs: bool = False, timeout: float | None = None
    ) -> ScheduleDeletion:
        """Delete the schedule; its unfinished jobs run on, or are cancelled with ``cancel_jobs``."""
        return self._call(calls.delete_schedule(name, cancel_jobs=cancel_jobs), timeout)

    def trigger_schedule(self, name: str, *, timeout: float | None = None) -> Job:
        """One run now (also while suspended): the job it made. Not retried after UNAVAILABLE."""
        return self._call(calls.trigger_schedule(name), timeout)

    # --- templates --------------------------------------------------------------------------------

    def create_template(
        self, name: str, job: JobRequest, *, description: str = "", timeout: float | None = None
    ) -> JobTemplate:
        """Version 1 of template ``name``: ``job`` (a job type is required; its name defaults to
        the template's)."""
        return self._call(calls.create_template(name, job, description=description), timeout)

    def get_template(self, name: str, *, version: int = 0, timeout: float | None = None) -> JobTemplate:
        """A version of the template (0: the latest)."""
        return self._call(calls.get_template(name, version=version), timeout)

    def list_templates(
        self, *, name_prefix: str = "", page_size: int = 0, timeout: float | None = None
    ) -> Iterator[JobTemplate]:
        """The latest version of every template, by name, page after page."""
        page = functools.partial(calls.list_templates, name_prefix=name_prefix, page_size=page_size)
        return self._pages(page, timeout)

    def update_template(
        self,
        name: str,
        job: JobRequest | None = None,
        *,
        description: str | None = None,
        timeout: float | None = None,
    ) -> JobTemplate:
        """Store the next version: ``job`` replaces the request (None: the latest version's),
        ``description`` if given. Jobs keep the version they were made from."""
        return self._call(calls.update_template(name, job, description=description), timeout)

    def delete_template(self, name: str, *, timeout: float | None = None) -> int:
        """Delete every version of the template; how many there were."""
        return self._call(calls.delete_template(name), timeout)


__all__ = ["ScheduleMethods"]
