"""Registering the JobScheduler servicer so that an undecodable request body is INVALID_ARGUMENT.

grpc.aio deserializes a request before any handler or interceptor code runs, and answers
UNKNOWN ("Unexpected <class 'DecodeError'>") when the deserializer raises: no status can
be chosen from there. So each method's deserializer is wrapped to return an ``Undecodable``
marker instead of raising, and each method's behaviour to abort with INVALID_ARGUMENT
(google.rpc.BadRequest on the field ``request``) when it receives one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import grpc

from jobscheduler.api.context import log_field
from jobscheduler.api.errors import to_status
from jobscheduler.core.errors import InvalidArgument, brief

Context = grpc.aio.ServicerContext[Any, Any]
S = TypeVar("S")


@dataclass(frozen=True, slots=True)
class Undecodable:
    """What a method receives instead of a request whose body could not be decoded."""

    error: str


def safe_deserializer(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any]:
    def decode(raw: bytes) -> Any:
        if deserialize is None:
            return raw
        try:
            return deserialize(raw)
        except Exception as exc:  # DecodeError, and whatever else protobuf raises on garbage
            return Undecodable(f"{type(exc).__name__}: {exc}")

    return decode


async def _refuse(request: Undecodable, context: Context) -> None:
    exc = InvalidArgument.field("request", f"is not a valid protobuf message ({brief(request.error, 160)})")
    log_field(error=exc.message)
    status = to_status(exc)
    await context.abort(status.code, status.details, status.trailing_metadata)


def _unary(behavior: Callable[[Any, Context], Any]) -> Callable[[Any, Context], Any]:
    async def call(request: Any, context: Context) -> Any:
        if isinstance(request, Undecodable):
            await _refuse(request, context)
        return await behavior(request, context)

    return call


def _stream(behavior: Callable[[Any, Context], AsyncIterator[Any]]) -> Callable[[Any, Context], Any]:
    async def call(request: Any, context: Context) -> AsyncIterator[Any]:
        if isinstance(request, Undecodable):
            await _refuse(request, context)
        async for item in behavior(request, context):
            yield item

    return call


def guarded_handler(handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
    """``handler`` with a deserializer that never raises and a behaviour refusing ``Undecodable``."""
    decode = safe_deserializer(handler.request_deserializer)
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(
            _unary(cast(Any, handler.unary_unary)),
            request_deserializer=decode,
            response_serializer=handler.response_serializer,
        )
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            _stream(cast(Any, handler.unary_stream)),
            request_deserializer=decode,
            response_serializer=handler.response_serializer,
        )
    return handler  # (JobScheduler has no client-streaming methods)


class _Capture:
    """Stands in for the server while the generated code registers its method handlers."""

    def __init__(self) -> None:
        self.handlers: dict[str, dict[str, grpc.RpcMethodHandler[Any, Any]]] = {}

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        pass  # the same handlers come to add_registered_method_handlers

    def add_registered_method_handlers(
        self, service: str, handlers: Mapping[str, grpc.RpcMethodHandler[Any, Any]]
    ) -> None:
        self.handlers[service] = dict(handlers)


def guarded(add: Callable[[S, Any], None]) -> Callable[[S, grpc.aio.Server], None]:
    """A generated ``add_<Service>Servicer_to_server`` whose methods are all ``guarded_handler``'s."""

    def add_guarded(servicer: S, server: grpc.aio.Server) -> None:
        capture = _Capture()
        add(servicer, capture)
        for service, handlers in capture.handlers.items():
            methods = {name: guarded_handler(h) for name, h in handlers.items()}
            server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, methods),))
            server.add_registered_method_handlers(service, methods)  # type: ignore[attr-defined]

    return add_guarded
