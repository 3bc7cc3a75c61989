"""The grpc.aio server factory: JobScheduler, grpc.health.v1 and server reflection on one port."""

from __future__ import annotations

from typing import Final

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from jobscheduler import tracing
from jobscheduler._generated import jobscheduler_pb2 as pb
from jobscheduler._generated import jobscheduler_pb2_grpc as pb_grpc
from jobscheduler.api.interceptors import ObservabilityInterceptor
from jobscheduler.api.servicer import JobSchedulerServicer
from jobscheduler.core.auth import Authenticator
from jobscheduler.core.limits import RateLimiter, StreamSlots
from jobscheduler.core.service import JobService

SERVICE_NAME: Final = pb.DESCRIPTOR.services_by_name["JobScheduler"].full_name
#: Names grpc.health.v1 answers for: the whole server ("") and the JobScheduler service.
HEALTH_SERVICES: Final = ("", SERVICE_NAME)


class Health:
    """The grpc.health.v1 state: SERVING only while the backend is reachable."""

    def __init__(self) -> None:
        self.servicer = HealthServicer()

    async def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in HEALTH_SERVICES:
            await self.servicer.set(name, status)

    async def shutdown(self) -> None:
        await self.servicer.enter_graceful_shutdown()


#: The largest answer sent.
_MAX_ANSWER_BYTES = 4 * 1024 * 1024


def build_server(
    service: JobService,
    health: Health,
    *,
    max_message_bytes: int = 256 * 1024,
    authenticator: Authenticator | None = None,
    limiter: RateLimiter | None = None,
    streams: StreamSlots | None = None,
    auth_failures: RateLimiter | None = None,
) -> grpc.aio.Server:
    """A server with every service added and no port bound yet (``add_insecure_port``, then ``start``)."""
    options = [
        ("grpc.max_receive_message_length", max_message_bytes),
        # Answers (a ListJobs page of 1,000 jobs) may be larger than any request needs to be.
        ("grpc.max_send_message_length", max(max_message_bytes, _MAX_ANSWER_BYTES)),
        ("grpc.so_reuseport", 0),
    ]
    # The OpenTelemetry interceptor (when tracing is on) comes first, so the RPC's span is active
    # in everything it wraps: the access log line, the handler, the backend's Kubernetes calls.
    interceptors = [*tracing.server_interceptors(), ObservabilityInterceptor()]
    server = grpc.aio.server(interceptors=interceptors, options=options)
    # (an undecodable request body is INVALID_ARGUMENT, not grpc's UNKNOWN: the interceptor
    # decodes each request itself, for every service on the port)
    pb_grpc.add_JobSchedulerServicer_to_server(
        JobSchedulerServicer(service, authenticator, limiter, streams, auth_failures), server
    )
    health_pb2_grpc.add_HealthServicer_to_server(health.servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
        server,
    )
    return server
