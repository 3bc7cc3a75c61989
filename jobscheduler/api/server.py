"""The grpc.aio server factory: JobScheduler, grpc.health.v1 and server reflection on one port."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, cast

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
from jobscheduler.core.schedules.service import ScheduleService
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


def _send(serialize: Callable[[Any], bytes]) -> Callable[[Any], bytes]:
    """A response serializer that sends bytes as they are (a message serialised beforehand,
    once for every stream that sends it) and serialises messages."""

    def send(message: Any) -> bytes:
        return message if type(message) is bytes else serialize(message)

    return send


class _PassThrough:
    """Stands in for the server in the generated ``add_..._to_server``: registers the same
    handlers, each with a response serializer that passes pre-serialised bytes through."""

    def __init__(self, server: grpc.aio.Server) -> None:
        self._server = server

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        pass  # the same handlers are registered below (grpc looks registered methods up first)

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        wrapped = {name: _with_pass_through(handler) for name, handler in handlers.items()}
        self._server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, wrapped),))
        cast(Any, self._server).add_registered_method_handlers(service, wrapped)  # (not in the stubs)


def _with_pass_through(handler: Any) -> Any:
    serializer = handler.response_serializer
    return handler._replace(response_serializer=_send(serializer)) if serializer is not None else handler


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
    schedules: ScheduleService | None = None,
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
        JobSchedulerServicer(service, authenticator, limiter, streams, auth_failures, schedules),
        _PassThrough(server),  # type: ignore[arg-type]  # (only the two methods the generated code calls)
    )
    health_pb2_grpc.add_HealthServicer_to_server(health.servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
        server,
    )
    return server
