"""The schedule RPCs (CreateSchedule ... TriggerSchedule): decode, call the core, encode.

Mixed into :class:`jobscheduler.api.servicer.JobSchedulerServicer`, which is given the
ScheduleService by the composition root; without one (a backend without a schedule store)
every RPC answers UNIMPLEMENTED.
"""

from __future__ import annotations

from typing import Any

import grpc

from jobscheduler._generated import jobscheduler_pb2 as pb
from jobscheduler.api import convert
from jobscheduler.api import convert_schedules as sconvert
from jobscheduler.api.context import log_field
from jobscheduler.api.guard import guarded
from jobscheduler.core.auth import Caller
from jobscheduler.core.schedules.service import ScheduleService
from jobscheduler.core.service import JobService


class ScheduleRpcs:
    """The six schedule RPCs; ``_service``, ``_schedule_service`` and ``_caller`` are the servicer's."""

    _service: JobService
    _schedule_service: ScheduleService | None

    async def _caller(self, context: grpc.aio.ServicerContext[Any, Any]) -> Caller:
        raise NotImplementedError  # pragma: no cover (the servicer's)

    async def _schedules(self, context: grpc.aio.ServicerContext[Any, Any]) -> tuple[ScheduleService, Caller]:
        service = self._schedule_service
        if service is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "schedules are not available on this server")
        caller = await self._caller(context)
        assert service is not None
        return service, caller

    @guarded
    async def CreateSchedule(
        self, request: pb.CreateScheduleRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.Schedule:
        log_field(schedule=request.name[:64])
        service, caller = await self._schedules(context)
        return sconvert.schedule(await service.create(sconvert.spec(request), caller))

    @guarded
    async def GetSchedule(
        self, request: pb.GetScheduleRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.Schedule:
        log_field(schedule=request.name[:64])
        service, caller = await self._schedules(context)
        return sconvert.schedule(await service.get(request.name, caller))

    @guarded
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

    @guarded
    async def UpdateSchedule(
        self, request: pb.UpdateScheduleRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.Schedule:
        log_field(schedule=request.name[:64])
        service, caller = await self._schedules(context)
        return sconvert.schedule(await service.update(request.name, sconvert.changes(request), caller))

    @guarded
    async def DeleteSchedule(
        self, request: pb.DeleteScheduleRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.DeleteScheduleResponse:
        log_field(schedule=request.name[:64])
        service, caller = await self._schedules(context)
        view, cancelled = await service.delete(request.name, caller, cancel_jobs=request.cancel_jobs)
        return pb.DeleteScheduleResponse(schedule=sconvert.schedule(view), cancelled_job_ids=list(cancelled))

    @guarded
    async def TriggerSchedule(
        self, request: pb.TriggerScheduleRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.TriggerScheduleResponse:
        log_field(schedule=request.name[:64])
        service, caller = await self._schedules(context)
        record = await service.trigger(request.name, caller)
        log_field(job_id=record.job_id)
        return pb.TriggerScheduleResponse(job_id=record.job_id, job=convert.job_message(record))
