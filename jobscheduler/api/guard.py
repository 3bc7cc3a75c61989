"""The servicer methods' wrappers: our errors to their status codes, anything else to INTERNAL
without a traceback (one place for every RPC module: servicer, schedules, templates)."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from jobscheduler import metrics
from jobscheduler.api.context import current_request_id, log_field
from jobscheduler.api.errors import internal_status, to_status
from jobscheduler.core.errors import JobSchedulerError
from jobscheduler.logs import get_logger

log = get_logger("jobscheduler.api")

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Handler = Callable[[Any, Req, grpc.aio.ServicerContext[Any, Any]], Awaitable[Resp]]


def guarded(method: Handler[Req, Resp]) -> Handler[Req, Resp]:
    """Turn our errors into their status codes, and anything else into INTERNAL without a traceback."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Req, context: grpc.aio.ServicerContext[Any, Any]) -> Resp:
        try:
            return await method(self, request, context)
        except JobSchedulerError as exc:
            log_field(error=exc.message)
            status = to_status(exc)
        except Exception:
            log.exception("unhandled error", method=method.__name__)
            status = internal_status(current_request_id())
        await context.abort(status.code, status.details, status.trailing_metadata)

    return wrapper


StreamHandler = Callable[[Any, Req, grpc.aio.ServicerContext[Any, Any]], AsyncIterator[Resp]]


def guarded_stream(method: StreamHandler[Req, Resp]) -> StreamHandler[Req, Resp]:
    """``guarded`` for server-streaming methods; also counts open streams."""
    name = method.__name__

    @functools.wraps(method)
    async def wrapper(
        self: Any, request: Req, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Resp]:
        metrics.OPEN_STREAMS.labels(name).inc()
        try:
            try:
                async for item in method(self, request, context):
                    yield item
                return
            except JobSchedulerError as exc:
                log_field(error=exc.message)
                status = to_status(exc)
            except Exception:
                log.exception("unhandled error", method=name)
                status = internal_status(current_request_id())
            await context.abort(status.code, status.details, status.trailing_metadata)
        finally:
            metrics.OPEN_STREAMS.labels(name).dec()

    return wrapper
