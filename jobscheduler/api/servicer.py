"""The JobScheduler gRPC servicer: decode, call the core, encode, map errors."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import nullcontext
from datetime import UTC, datetime
from typing import Any

import grpc

from jobscheduler import tracing
from jobscheduler._generated import jobscheduler_pb2 as pb
from jobscheduler._generated import jobscheduler_pb2_grpc as pb_grpc
from jobscheduler.api import convert, jobbytes
from jobscheduler.api.auth import credentials, peer_address
from jobscheduler.api.context import log_field
from jobscheduler.api.guard import guarded, guarded_stream
from jobscheduler.api.schedules import ScheduleRpcs
from jobscheduler.api.schemas import message_schema
from jobscheduler.api.templates import TemplateRpcs
from jobscheduler.core.auth import AllowAll, Authenticator, Caller, token_digest
from jobscheduler.core.limits import RateLimiter, StreamSlots
from jobscheduler.core.registry import JobHandler
from jobscheduler.core.schedules.service import ScheduleService
from jobscheduler.core.service import JobService
from jobscheduler.logs import get_logger

log = get_logger("jobscheduler.api")


class JobSchedulerServicer(ScheduleRpcs, TemplateRpcs, pb_grpc.JobSchedulerServicer):
    def __init__(
        self,
        service: JobService,
        authenticator: Authenticator | None = None,
        limiter: RateLimiter | None = None,
        streams: StreamSlots | None = None,
        auth_failures: RateLimiter | None = None,
        schedules: ScheduleService | None = None,
    ) -> None:
        self._service = service
        #: The schedule RPCs' service (None: they answer UNIMPLEMENTED).
        self._schedule_service = schedules
        self._authenticator: Authenticator = authenticator or AllowAll()
        self._limiter = limiter or RateLimiter(0, 1)
        self._streams = streams or StreamSlots(0, 0)
        #: Failed authentications per peer address, checked before authenticating.
        self._auth_failures = auth_failures or RateLimiter(0, 1)
        #: (peer, token digest, certificate identity) -> calls checking those credentials now
        self._checking: dict[tuple[str, str, str], int] = {}

    async def _caller(self, context: grpc.aio.ServicerContext[Any, Any]) -> Caller:
        """Who calls (UNAUTHENTICATED without valid credentials), within their rate limit.

        A peer address with too many failed attempts is RESOURCE_EXHAUSTED before its
        credentials are looked at: garbage tokens do not each cost a TokenReview. The first
        call with given credentials from a peer is charged *before* they are checked and
        refunded when they pass, so a wave of concurrent calls with different garbage tokens
        cannot all pass the check (calls with the same credentials meanwhile share one review
        and are not charged again); a check that fails for any reason (a refused token, or the
        API server not answering) stays charged."""
        peer = peer_address(context)
        self._auth_failures.check(peer, "failed authentications")
        presented = credentials(context)
        key = (peer, token_digest(presented.bearer_token or ""), presented.peer_identity or "")
        first = key not in self._checking
        if first:
            self._auth_failures.charge(peer)
        self._checking[key] = self._checking.get(key, 0) + 1
        try:
            caller = await self._authenticator.authenticate(presented)
        finally:
            if (left := self._checking.pop(key) - 1) > 0:
                self._checking[key] = left
        if first:
            self._auth_failures.refund(peer)
        log_field(caller=caller.identity)
        self._limiter.acquire(caller.identity)
        return caller

    @guarded
    async def ScheduleJob(
        self, request: pb.ScheduleJobRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ScheduleJobResponse:
        caller = await self._caller(context)
        record = await self._service.schedule(
            convert.schedule_request(request), caller, traceparent=tracing.current_traceparent()
        )
        log_field(job_id=record.job_id, job_type=record.type)
        return pb.ScheduleJobResponse(job_id=record.job_id, job=convert.job_message(record))

    @guarded
    async def GetJobStatus(  # type: ignore[override]  # a serialised answer, sent as it is (server.py)
        self, request: pb.GetJobStatusRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> bytes:
        log_field(job_id=request.job_id[:64])  # logged before it is validated: bounded
        caller = await self._caller(context)
        record = await self._service.get(request.job_id, caller)
        return jobbytes.JOBS.get_response(record)

    @guarded
    async def ListJobs(  # type: ignore[override]  # a serialised answer, sent as it is (server.py)
        self, request: pb.ListJobsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> bytes:
        caller = await self._caller(context)
        page = await self._service.list(
            convert.job_filter(request.filter), request.page_size, request.page_token, caller
        )
        # (each job's encoding is cached per record version: api/jobbytes.py)
        return jobbytes.JOBS.list_response(page.records, page.next_page_token, page.resume_token)

    @guarded
    async def CancelJob(
        self, request: pb.CancelJobRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.CancelJobResponse:
        log_field(job_id=request.job_id[:64])  # logged before it is validated: bounded
        caller = await self._caller(context)
        record = await self._service.cancel(request.job_id, request.reason, caller)
        return pb.CancelJobResponse(job=convert.job_message(record))

    @guarded
    async def ListQueues(
        self, request: pb.ListQueuesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListQueuesResponse:
        # Aggregate counts over every owner: any authenticated caller may read them.
        await self._caller(context)
        now = datetime.now(UTC)
        return pb.ListQueuesResponse(
            queues=[convert.queue_status(q, now) for q in self._service.queues_status()]
        )

    @guarded
    async def ListJobTypes(
        self, request: pb.ListJobTypesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListJobTypesResponse:
        # What may be submitted: any authenticated caller may read it.
        await self._caller(context)
        return pb.ListJobTypesResponse(
            types=[
                pb.JobType(
                    name=h.job_type,
                    request_field=h.request_field,
                    description=h.description,
                    builtin=h.builtin,
                    package=h.package,
                    version=h.version,
                    parameters_schema=json.dumps(_parameters_schema(h), sort_keys=True, ensure_ascii=False),
                )
                for h in sorted(self._service.registry, key=lambda h: (not h.builtin, h.job_type))
            ]
        )

    @guarded_stream
    async def WatchJob(  # type: ignore[override]  # serialised JobEvents, sent as they are (server.py)
        self, request: pb.WatchJobRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[bytes]:
        log_field(job_id=request.job_id[:64])  # logged before it is validated: bounded
        caller = await self._caller(context)
        with self._streams.hold(caller.identity):
            async for event in self._service.watch_job(request.job_id, caller):
                yield convert.job_event_bytes(event, self._service.index)

    @guarded_stream
    async def WatchJobs(  # type: ignore[override]  # serialised JobEvents, sent as they are (server.py)
        self, request: pb.WatchJobsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[bytes]:
        caller = await self._caller(context)
        job_filter = convert.job_filter(request.filter)
        index = self._service.index
        with self._streams.hold(caller.identity):
            async for event in self._service.watch_jobs(job_filter, request.resume_token, caller):
                yield convert.job_event_bytes(event, index)

    @guarded_stream
    async def GetJobLogs(
        self, request: pb.GetJobLogsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.LogLine]:
        log_field(job_id=request.job_id[:64])  # logged before it is validated: bounded
        caller = await self._caller(context)
        lines = self._service.logs(
            request.job_id,
            follow=request.follow,
            tail_lines=request.tail_lines,
            attempt=request.attempt,
            caller=caller,
        )
        # Only a followed log stays open; reading what is there ends by itself.
        with self._streams.hold(caller.identity) if request.follow else nullcontext():
            async for line in lines:
                yield convert.log_line(line)


def _parameters_schema(handler: JobHandler[Any]) -> dict[str, Any]:
    """The handler's own schema; a built-in type declaring none: its request message's."""
    if handler.builtin and type(handler).parameters_schema is JobHandler.parameters_schema:
        field = pb.ScheduleJobRequest.DESCRIPTOR.fields_by_name.get(handler.request_field)
        if field is not None and field.message_type is not None:
            return message_schema(field.message_type)
    return handler.parameters_schema()
