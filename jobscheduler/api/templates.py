"""The job template RPCs (CreateJobTemplate ... DeleteJobTemplate) and RerunJob: decode, call
the core (JobService.templates, JobService.rerun), encode.

Mixed into :class:`jobscheduler.api.servicer.JobSchedulerServicer`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from jobscheduler import tracing
from jobscheduler._generated import jobscheduler_pb2 as pb
from jobscheduler.api import convert
from jobscheduler.api.context import log_field
from jobscheduler.api.convert_templates import optional_job, template_message
from jobscheduler.api.guard import guarded
from jobscheduler.core.auth import Caller
from jobscheduler.core.service import JobService
from jobscheduler.core.templates import JobTemplates

Context = grpc.aio.ServicerContext[Any, Any]


class TemplateRpcs:
    _service: JobService
    _caller: Callable[[Context], Awaitable[Caller]]

    def _templates(self) -> JobTemplates:
        return self._service.require_templates()

    @guarded
    async def CreateJobTemplate(
        self, request: pb.CreateJobTemplateRequest, context: Context
    ) -> pb.JobTemplate:
        caller = await self._caller(context)
        template = await self._templates().create(
            request.name, request.description, optional_job(request), caller
        )
        log_field(template=template.stored.name)
        return template_message(template)

    @guarded
    async def GetJobTemplate(self, request: pb.GetJobTemplateRequest, context: Context) -> pb.JobTemplate:
        caller = await self._caller(context)
        return template_message(await self._templates().get(request.name, request.version, caller))

    @guarded
    async def ListJobTemplates(
        self, request: pb.ListJobTemplatesRequest, context: Context
    ) -> pb.ListJobTemplatesResponse:
        caller = await self._caller(context)
        templates, token = await self._templates().list(
            caller,
            page_size=request.page_size,
            page_token=request.page_token,
            name_prefix=request.name_prefix,
        )
        return pb.ListJobTemplatesResponse(
            templates=[template_message(t) for t in templates], next_page_token=token
        )

    @guarded
    async def UpdateJobTemplate(
        self, request: pb.UpdateJobTemplateRequest, context: Context
    ) -> pb.JobTemplate:
        caller = await self._caller(context)
        description = request.description if request.HasField("description") else None
        template = await self._templates().update(request.name, description, optional_job(request), caller)
        log_field(template=template.stored.name)
        return template_message(template)

    @guarded
    async def DeleteJobTemplate(
        self, request: pb.DeleteJobTemplateRequest, context: Context
    ) -> pb.DeleteJobTemplateResponse:
        caller = await self._caller(context)
        deleted = await self._templates().delete(request.name, caller)
        return pb.DeleteJobTemplateResponse(name=request.name, versions=deleted)

    @guarded
    async def RerunJob(self, request: pb.RerunJobRequest, context: Context) -> pb.RerunJobResponse:
        log_field(job_id=request.job_id[:64])  # logged before it is validated: bounded
        caller = await self._caller(context)
        record = await self._service.rerun(
            request.job_id,
            optional_job(request, "overrides"),
            caller,
            request_id=request.request_id,
            traceparent=tracing.current_traceparent(),
        )
        return pb.RerunJobResponse(
            job_id=record.job_id, job=convert.job_message(record), rerun_of=record.rerun_of
        )
