"""One server interceptor that logs (structlog) and counts (Prometheus) every RPC.

The metrics are go-grpc-prometheus's, names and label values alike (``grpc_code="NotFound"``,
``grpc_type="server_stream"``), so the standard gRPC dashboards and alerts read them."""

from __future__ import annotations

import asyncio
import inspect
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, NoReturn, cast

import grpc

from jobscheduler import metrics
from jobscheduler.api import context as rpc_context
from jobscheduler.api.errors import to_status
from jobscheduler.core.errors import InvalidArgument
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


#: go-grpc-prometheus's ``grpc_code`` values: Go's ``codes.Code.String()`` (``Canceled``, one l).
GRPC_CODE_NAMES: Final[dict[grpc.StatusCode, str]] = {
    grpc.StatusCode.OK: "OK",
    grpc.StatusCode.CANCELLED: "Canceled",
    grpc.StatusCode.UNKNOWN: "Unknown",
    grpc.StatusCode.INVALID_ARGUMENT: "InvalidArgument",
    grpc.StatusCode.DEADLINE_EXCEEDED: "DeadlineExceeded",
    grpc.StatusCode.NOT_FOUND: "NotFound",
    grpc.StatusCode.ALREADY_EXISTS: "AlreadyExists",
    grpc.StatusCode.PERMISSION_DENIED: "PermissionDenied",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "ResourceExhausted",
    grpc.StatusCode.FAILED_PRECONDITION: "FailedPrecondition",
    grpc.StatusCode.ABORTED: "Aborted",
    grpc.StatusCode.OUT_OF_RANGE: "OutOfRange",
    grpc.StatusCode.UNIMPLEMENTED: "Unimplemented",
    grpc.StatusCode.INTERNAL: "Internal",
    grpc.StatusCode.UNAVAILABLE: "Unavailable",
    grpc.StatusCode.DATA_LOSS: "DataLoss",
    grpc.StatusCode.UNAUTHENTICATED: "Unauthenticated",
}


class _MethodMetrics:
    """The labelled metric children of one method, looked up once (``labels()`` costs per call)."""

    def __init__(self, grpc_type: str, service: str, method: str) -> None:
        self._labels = (grpc_type, service, method)
        self.started = metrics.GRPC_STARTED.labels(*self._labels)
        self.seconds = metrics.GRPC_HANDLING_SECONDS.labels(*self._labels)
        self.received = metrics.GRPC_MSG_RECEIVED.labels(*self._labels)
        self.sent = metrics.GRPC_MSG_SENT.labels(*self._labels)
        self._handled: dict[grpc.StatusCode, Any] = {}

    def handled(self, code: grpc.StatusCode) -> Any:
        child = self._handled.get(code)
        if child is None:
            name = GRPC_CODE_NAMES.get(code, "Unknown")
            child = self._handled[code] = metrics.GRPC_HANDLED.labels(*self._labels, name)
        return child


_METHOD_METRICS: dict[tuple[str, str, str], _MethodMetrics] = {}


def _children(grpc_type: str, service: str, method: str) -> _MethodMetrics:
    key = (grpc_type, service, method)
    found = _METHOD_METRICS.get(key)
    if found is None:
        found = _METHOD_METRICS[key] = _MethodMetrics(grpc_type, service, method)
    return found


#: A caller's own ``x-request-id`` is used when it is this short and plain; else a new one.
_CALLER_REQUEST_ID: Final = re.compile(r"[A-Za-z0-9._:/=+-]{1,128}")


def request_id_of(metadata: dict[str, Any]) -> str:
    """The caller's ``x-request-id`` (bounded: it is logged and echoed), else a new one."""
    value = metadata.get(REQUEST_ID_HEADER)
    if isinstance(value, str) and _CALLER_REQUEST_ID.fullmatch(value):
        return value
    return uuid.uuid4().hex[:16]


def _with_request_id(metadata: Any, request_id: str) -> tuple[tuple[str, Any], ...]:
    items = tuple(metadata or ())
    if any(key == REQUEST_ID_HEADER for key, _ in items):
        return items
    return (*items, (REQUEST_ID_HEADER, request_id))


class _RequestIdContext:
    """The servicer context handed to handlers: every status it sends keeps ``x-request-id``
    in the trailing metadata (``abort`` sends the metadata it is given, e.g. error details,
    instead of what was set before); messages sent with ``write`` are counted (``sent``)."""

    def __init__(self, context: grpc.aio.ServicerContext[Any, Any], request_id: str, sent: Any) -> None:
        self._context = context
        self._request_id = request_id
        self._sent = sent

    async def write(self, message: Any) -> None:
        await self._context.write(message)
        self._sent.inc()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)

    def set_trailing_metadata(self, trailing_metadata: Any) -> None:
        self._context.set_trailing_metadata(_with_request_id(trailing_metadata, self._request_id))

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()) -> NoReturn:
        metadata = tuple(trailing_metadata or ()) or tuple(self._context.trailing_metadata() or ())
        await self._context.abort(code, details, _with_request_id(metadata, self._request_id))
        raise AssertionError("abort returned")  # pragma: no cover


async def _parse(
    deserializer: Callable[[bytes], Any] | None, raw: Any, context: grpc.aio.ServicerContext[Any, Any]
) -> Any:
    """The request message; INVALID_ARGUMENT (with the request id) when the bytes are not one.

    gRPC would answer INTERNAL before any handler (so without a request id) otherwise."""
    if deserializer is None:
        return raw
    try:
        return deserializer(raw)
    except Exception as exc:
        status = to_status(InvalidArgument.field("request", f"is not a valid message: {exc}"[:200]))
        await context.abort(status.code, status.details, status.trailing_metadata)


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


async def _counted(requests: AsyncIterator[Any], received: Any) -> AsyncIterator[Any]:
    """A client stream's messages, each counted as it is read."""
    async for request in requests:
        received.inc()
        yield request


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

        deserializer = handler.request_deserializer

        def begin(
            context: grpc.aio.ServicerContext[Any, Any], grpc_type: str
        ) -> tuple[str, dict[str, Any], Any]:
            request_id = request_id_of(metadata)
            fields = rpc_context.begin(request_id)
            context.set_trailing_metadata(((REQUEST_ID_HEADER, request_id),))
            children = _children(grpc_type, service, method)
            children.started.inc()
            return request_id, fields, _RequestIdContext(context, request_id, children.sent)

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

            async def unary_unary(raw: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                started = time.perf_counter()
                children = _children("unary", service, method)
                request_id, fields, wrapped = begin(context, "unary")
                code = grpc.StatusCode.UNKNOWN
                try:
                    request = await _parse(deserializer, raw, wrapped)
                    children.received.inc()
                    response = await inner_uu(request, wrapped)
                    code = _code_of(context)
                    if code is grpc.StatusCode.OK:
                        children.sent.inc()
                    return response
                except BaseException as exc:
                    code = _failed_code(context, exc)
                    raise
                finally:
                    finish("unary", request_id, fields, code, started)

            return grpc.unary_unary_rpc_method_handler(
                cast(Any, unary_unary),
                request_deserializer=None,  # _parse: bad bytes are INVALID_ARGUMENT
                response_serializer=handler.response_serializer,
            )

        def wrap_stream(inner: Callable[..., Any], grpc_type: str, parse: bool) -> Callable[..., Any]:
            # Streaming handlers are either async generators or coroutines that call
            # context.write(); the wrapper must be of the same kind. ``parse``: the request
            # is one message, deserialized here (bidi streams are left to gRPC). Every
            # message received and sent is counted (msg_received, msg_sent).
            children = _children(grpc_type, service, method)

            async def receive(raw: Any, wrapped: Any) -> Any:
                if not parse:
                    return _counted(raw, children.received)
                request = await _parse(deserializer, raw, wrapped)
                children.received.inc()
                return request

            if inspect.isasyncgenfunction(inner):

                async def generator(
                    raw: Any, context: grpc.aio.ServicerContext[Any, Any]
                ) -> AsyncIterator[Any]:
                    started = time.perf_counter()
                    request_id, fields, wrapped = begin(context, grpc_type)
                    code = grpc.StatusCode.UNKNOWN
                    try:
                        request = await receive(raw, wrapped)
                        async for item in inner(request, wrapped):
                            yield item
                            children.sent.inc()  # taken: gRPC has written it
                        code = _code_of(context)
                    except BaseException as exc:
                        code = _failed_code(context, exc)
                        raise
                    finally:
                        finish(grpc_type, request_id, fields, code, started)

                return generator

            async def coroutine(raw: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                started = time.perf_counter()
                request_id, fields, wrapped = begin(context, grpc_type)
                code = grpc.StatusCode.UNKNOWN
                try:
                    request = await receive(raw, wrapped)
                    result = await inner(request, wrapped)
                    code = _code_of(context)
                    if grpc_type == "client_stream" and code is grpc.StatusCode.OK:
                        children.sent.inc()  # its one response
                    return result
                except BaseException as exc:
                    code = _failed_code(context, exc)
                    raise
                finally:
                    finish(grpc_type, request_id, fields, code, started)

            return coroutine

        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                wrap_stream(handler.unary_stream, "server_stream", True),
                request_deserializer=None,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                wrap_stream(handler.stream_unary, "client_stream", False),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                wrap_stream(handler.stream_stream, "bidi_stream", False),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler
