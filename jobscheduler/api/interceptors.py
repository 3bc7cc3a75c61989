"""One server interceptor that logs (structlog) and counts (Prometheus) every RPC."""

from __future__ import annotations

import asyncio
import inspect
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

import grpc

from jobscheduler import metrics
from jobscheduler.api import context as rpc_context
from jobscheduler.logs import get_logger

log = get_logger("jobscheduler.rpc")

REQUEST_ID_HEADER = "x-request-id"
#: Methods logged at debug level only (probes would drown the log).
_QUIET_SERVICES = frozenset({"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"})


def _code_of(context: grpc.aio.ServicerContext[Any, Any]) -> grpc.StatusCode:
    code: Any = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    if isinstance(code, int):
        for member in grpc.StatusCode:
            if member.value[0] == code:
                return member
    return grpc.StatusCode.OK


class _MethodMetrics:
    """The labelled metric children of one method, looked up once (``labels()`` costs per call)."""

    def __init__(self, grpc_type: str, service: str, method: str) -> None:
        self._labels = (grpc_type, service, method)
        self.started = metrics.GRPC_STARTED.labels(*self._labels)
        self.seconds = metrics.GRPC_HANDLING_SECONDS.labels(*self._labels)
        self._handled: dict[grpc.StatusCode, Any] = {}

    def handled(self, code: grpc.StatusCode) -> Any:
        child = self._handled.get(code)
        if child is None:
            child = self._handled[code] = metrics.GRPC_HANDLED.labels(*self._labels, code.name)
        return child


_METHOD_METRICS: dict[tuple[str, str, str], _MethodMetrics] = {}


def _children(grpc_type: str, service: str, method: str) -> _MethodMetrics:
    key = (grpc_type, service, method)
    found = _METHOD_METRICS.get(key)
    if found is None:
        found = _METHOD_METRICS[key] = _MethodMetrics(grpc_type, service, method)
    return found


def _failed_code(context: grpc.aio.ServicerContext[Any, Any], exc: BaseException) -> grpc.StatusCode:
    """The code of an RPC whose handler raised: what it aborted with, or CANCELLED/UNKNOWN."""
    code = _code_of(context)
    if code is not grpc.StatusCode.OK:
        return code
    if isinstance(exc, asyncio.CancelledError) or context.cancelled():
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            return grpc.StatusCode.DEADLINE_EXCEEDED  # what the client saw, too
        return grpc.StatusCode.CANCELLED  # the client went away (or the server is stopping)
    return grpc.StatusCode.UNKNOWN


if TYPE_CHECKING:  # the stubs make it generic; the runtime class is not subscriptable
    _Interceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    _Interceptor = grpc.aio.ServerInterceptor


class ObservabilityInterceptor(_Interceptor):
    """Per RPC: a request id (from ``x-request-id`` or new), one log line, and the standard metrics."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        full = handler_call_details.method or ""
        service, _, method = full.lstrip("/").rpartition("/")
        metadata = dict(handler_call_details.invocation_metadata or ())
        quiet = service in _QUIET_SERVICES

        def begin(context: grpc.aio.ServicerContext[Any, Any], grpc_type: str) -> tuple[str, dict[str, Any]]:
            request_id = str(metadata.get(REQUEST_ID_HEADER) or uuid.uuid4().hex[:16])
            fields = rpc_context.begin(request_id)
            context.set_trailing_metadata(((REQUEST_ID_HEADER, request_id),))
            _children(grpc_type, service, method).started.inc()
            return request_id, fields

        def finish(
            grpc_type: str,
            request_id: str,
            fields: dict[str, Any],
            code: grpc.StatusCode,
            started: float,
        ) -> None:
            elapsed = time.perf_counter() - started
            children = _children(grpc_type, service, method)
            children.handled(code).inc()
            children.seconds.observe(elapsed)
            emit = log.debug if quiet else (log.info if code is grpc.StatusCode.OK else log.warning)
            emit(
                "rpc",
                method=full,
                code=code.name,
                duration_ms=round(elapsed * 1000, 3),
                request_id=request_id,
                **fields,
            )

        if handler.unary_unary is not None:
            inner_uu: Callable[..., Awaitable[Any]] = handler.unary_unary

            async def unary_unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                started = time.perf_counter()
                request_id, fields = begin(context, "unary")
                code = grpc.StatusCode.UNKNOWN
                try:
                    response = await inner_uu(request, context)
                    code = _code_of(context)
                    return response
                except BaseException as exc:
                    code = _failed_code(context, exc)
                    raise
                finally:
                    finish("unary", request_id, fields, code, started)

            return grpc.unary_unary_rpc_method_handler(
                cast(Any, unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )

        def wrap_stream(inner: Callable[..., Any], grpc_type: str) -> Callable[..., Any]:
            # Streaming handlers are either async generators or coroutines that call
            # context.write(); the wrapper must be of the same kind.
            if inspect.isasyncgenfunction(inner):

                async def generator(
                    request: Any, context: grpc.aio.ServicerContext[Any, Any]
                ) -> AsyncIterator[Any]:
                    started = time.perf_counter()
                    request_id, fields = begin(context, grpc_type)
                    code = grpc.StatusCode.UNKNOWN
                    try:
                        async for item in inner(request, context):
                            yield item
                        code = _code_of(context)
                    except BaseException as exc:
                        code = _failed_code(context, exc)
                        raise
                    finally:
                        finish(grpc_type, request_id, fields, code, started)

                return generator

            async def coroutine(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                started = time.perf_counter()
                request_id, fields = begin(context, grpc_type)
                code = grpc.StatusCode.UNKNOWN
                try:
                    result = await inner(request, context)
                    code = _code_of(context)
                    return result
                except BaseException as exc:
                    code = _failed_code(context, exc)
                    raise
                finally:
                    finish(grpc_type, request_id, fields, code, started)

            return coroutine

        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                wrap_stream(handler.unary_stream, "server_stream"),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                wrap_stream(handler.stream_stream, "bidi_stream"),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler
