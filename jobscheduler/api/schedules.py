"""The schedule RPCs (CreateSchedule ... TriggerSchedule): decode, call the core, encode.

Mixed into :class:`jobscheduler.api.servicer.JobSchedulerServicer`.
"""

from __future__ import annotations

from typing import Any

import grpc

from jobscheduler._generated import jobscheduler_pb2 as pb


class ScheduleRpcs:
    """Placeholder until the schedule service lands: every RPC answers UNIMPLEMENTED."""

    async def CreateSchedule(
        self, request: pb.CreateScheduleRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.Schedule:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "schedules are not implemented yet")

    async def GetSchedule(
        self, request: pb.GetScheduleRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.Schedule:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "schedules are not implemented yet")

    async def ListSchedules(
        self, request: pb.ListSchedulesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListSchedulesResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "schedules are not implemented yet")

    async def UpdateSchedule(
        self, request: pb.UpdateScheduleRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.Schedule:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "schedules are not implemented yet")

    async def DeleteSchedule(
        self, request: pb.DeleteScheduleRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.DeleteScheduleResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "schedules are not implemented yet")

    async def TriggerSchedule(
        self, request: pb.TriggerScheduleRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.TriggerScheduleResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "schedules are not implemented yet")
