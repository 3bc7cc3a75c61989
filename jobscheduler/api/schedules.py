"""The schedule RPCs (CreateSchedule ... TriggerSchedule): decode, call the core, encode.

Mixed into :class:`jobscheduler.api.servicer.JobSchedulerServicer`. The ScheduleService is
attached to the servicer's JobService by the composition root (:func:`attach`); without one
(a server built without schedules) every RPC answers UNIMPLEMENTED.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from jobscheduler._generated import jobscheduler_pb2 as pb
from jobscheduler.api import convert
from jobscheduler.api import convert_schedules as sconvert
from jobscheduler.api.context import log_field
from jobscheduler.core.auth import Caller
from jobscheduler.core.schedules.service import ScheduleService
from jobscheduler.core.service import JobService

Req = TypeVar("Req")
Resp = TypeVar("Resp")
_ATTACHED: weakref.WeakKeyDictionary[JobService, ScheduleService] = weakref.WeakKeyDictionary()


def attach(jobs: JobService, schedules: ScheduleService) -> None:
    """Serve ``schedules`` from every servicer built on ``jobs``."""
    _ATTACHED[jobs] = schedules


Handler = Callable[[Any, Req, grpc.aio.ServicerContext[Any, Any]], Awaitable[Resp]]


def _guard(method: Handler[Req, Resp]) -> Handler[Req, Resp]:
    """The servicer's ``_guarded`` (errors to status codes), looked up when called: the servicer
    module imports this one."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Req, context: grpc.aio.ServicerContext[Any, Any]) -> Resp:
        from jobscheduler.api.servicer import _guarded

        return await _guarded(method)(self, request, context)

    return wrapper


class ScheduleRpcs:
    """The six schedule RPCs; ``_service``, ``_caller`` and ``_guarded`` are the servicer's."""

    _service: JobService

    async def _caller(self, context: grpc.aio.ServicerContext[Any, Any]) -> Caller:
        raise NotImplementedError  # pragma: no cover (the servicer's)

    async def _schedules(self, context: grpc.aio.ServicerContext[Any, Any]) -> tuple[ScheduleService, Caller]:
        service = _ATTACHED.get(self._service)
        if service is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "schedules are not available on this server")
        caller = await self._caller(context)
        assert service is not None
        return service, caller

    @_guard
    async def CreateSchedule(
        self, request: pb.CreateScheduleRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.Schedule:
        log_field(schedule=request.name[:64])
        service, caller = await self._schedules(context)
        return sconvert.schedule(await service.create(sconvert.spec(request), caller))

    @_guard
    async def GetSchedule(
        self, request: pb.GetScheduleRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.Schedule:
        log_field(schedule=request.name[:64])
        service, caller = await self._schedules(context)
        return sconvert.schedule(await service.get(request.name, caller))

    @_guard
    async def ListSchedules(
        self, request: pb.ListSchedulesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListSchedulesResponse:
        service, caller = await self._schedules(context)
        views, token = await service.list(
            caller,
            page_size=request.page_size,
            page_token=request.page_token,
            owner=request.owner,
            name_prefix=request.name_prefix,
        )
        return pb.ListSchedulesResponse(
            schedules=[sconvert.schedule(v) for v in views], next_page_token=token
        )

    @_guard
    async def UpdateSchedule(
        self, request: pb.UpdateScheduleRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.Schedule:
        log_field(schedule=request.name[:64])
        service, caller = await self._schedules(context)
        return sconvert.schedule(await service.update(request.name, sconvert.changes(request), caller))

    @_guard
    async def DeleteSchedule(
        self, request: pb.DeleteScheduleRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.DeleteScheduleResponse:
        log_field(schedule=request.name[:64])
        service, caller = await self._schedules(context)
        view, cancelled = await service.delete(request.name, caller, cancel_jobs=request.cancel_jobs)
        return pb.DeleteScheduleResponse(schedule=sconvert.schedule(view), cancelled_job_ids=list(cancelled))

    @_guard
    async def TriggerSchedule(
        self, request: pb.TriggerScheduleRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.TriggerScheduleResponse:
        log_field(schedule=request.name[:64])
        service, caller = await self._schedules(context)
        record = await service.trigger(request.name, caller)
        log_field(job_id=record.job_id)
        return pb.TriggerScheduleResponse(job_id=record.job_id, job=convert.job_message(record))
