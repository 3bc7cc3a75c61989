"""The job template RPCs (CreateJobTemplate ... DeleteJobTemplate) and RerunJob.

Mixed into :class:`jobscheduler.api.servicer.JobSchedulerServicer`.
"""

from __future__ import annotations

from typing import Any

import grpc

from jobscheduler._generated import jobscheduler_pb2 as pb


class TemplateRpcs:
    """Placeholder until templates land: every RPC answers UNIMPLEMENTED."""

    async def CreateJobTemplate(
        self, request: pb.CreateJobTemplateRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.JobTemplate:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "job templates are not implemented yet")

    async def GetJobTemplate(
        self, request: pb.GetJobTemplateRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.JobTemplate:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "job templates are not implemented yet")

    async def ListJobTemplates(
        self, request: pb.ListJobTemplatesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListJobTemplatesResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "job templates are not implemented yet")

    async def UpdateJobTemplate(
        self, request: pb.UpdateJobTemplateRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.JobTemplate:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "job templates are not implemented yet")

    async def DeleteJobTemplate(
        self, request: pb.DeleteJobTemplateRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.DeleteJobTemplateResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "job templates are not implemented yet")

    async def RerunJob(
        self, request: pb.RerunJobRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.RerunJobResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "rerun is not implemented yet")
