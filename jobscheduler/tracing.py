"""Tracing with OpenTelemetry, configured only by the standard ``OTEL_*`` variables.

Off unless an exporter is configured: ``OTEL_TRACES_EXPORTER`` names one (``otlp``, ``console``,
or any installed ``opentelemetry_traces_exporter`` entry point; ``none`` is off), or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``/``OTEL_EXPORTER_OTLP_ENDPOINT`` is set (then ``otlp``).
``OTEL_SDK_DISABLED=true`` turns it off whatever else is set. Off, no tracer provider is
installed, the gRPC server gets no tracing interceptor and every hook below returns at once.

On, the spans are: a server span for every RPC (opentelemetry-instrumentation-grpc; not for the
grpc.health.v1 probes), a client span for each Kubernetes API call made inside another span,
and a span for each admission write (admit, hold, fail; linked to the job's trace). The
ScheduleJob span's ``traceparent`` is stored on the Job and given to its containers
(core.tracecontext).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import os
from collections.abc import Callable, Coroutine, Mapping
from contextlib import AbstractContextManager
from typing import Any, Final, TypeVar, cast

from opentelemetry import trace
from opentelemetry.trace import (
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    Tracer,
    TracerProvider,
)

from jobscheduler.core.tracecontext import TRACEPARENT_ANNOTATION, parse_traceparent

_TRACER_NAME: Final = "jobscheduler"
_DEFAULT_SERVICE_NAME: Final = "jobscheduler"
_EXPORTER_GROUP: Final = "opentelemetry_traces_exporter"
#: OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL -> the exporter entry point ``otlp`` stands for
#: (grpc by default, as the OpenTelemetry Python SDK does).
_OTLP_BY_PROTOCOL: Final = {"grpc": "otlp_proto_grpc", "http/protobuf": "otlp_proto_http"}
_MAX_EXPORTERS: Final = 8

_NO_SPAN: Final[AbstractContextManager[None]] = contextlib.nullcontext()

_provider: TracerProvider | None = None
_tracer: Tracer | None = None
_configured_from_env = False

F = TypeVar("F", bound=Callable[..., Coroutine[Any, Any, Any]])


class TracingConfigError(ValueError):
    """The OTEL_* variables ask for something that cannot be set up (a startup error)."""


def exporter_names(environ: Mapping[str, str]) -> list[str]:
    """The trace exporters the variables ask for; [] means tracing is off."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    raw = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if raw:
        names = [name.strip() for name in raw.split(",") if name.strip()]
        if len(names) > _MAX_EXPORTERS:
            raise TracingConfigError(f"OTEL_TRACES_EXPORTER: at most {_MAX_EXPORTERS} exporters")
        return [] if "none" in names else list(dict.fromkeys(names))
    endpoints = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
    return ["otlp"] if any(environ.get(name, "").strip() for name in endpoints) else []


def _exporter(name: str, environ: Mapping[str, str]) -> Any:
    if name == "otlp":
        protocol = (
            environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "").strip()
            or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "").strip()
            or "grpc"
        ).lower()
        if protocol not in _OTLP_BY_PROTOCOL:
            raise TracingConfigError(
                f"OTEL_EXPORTER_OTLP_PROTOCOL: {protocol[:40]!r} is not supported"
                f" (use one of {', '.join(_OTLP_BY_PROTOCOL)})"
            )
        name = _OTLP_BY_PROTOCOL[protocol]
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    found = importlib.metadata.entry_points(group=_EXPORTER_GROUP, name=name)
    if not found:
        known = sorted({ep.name for ep in importlib.metadata.entry_points(group=_EXPORTER_GROUP)})
        raise TracingConfigError(
            f"OTEL_TRACES_EXPORTER: no trace exporter {name[:40]!r} is installed"
            f" (installed: {', '.join(['none', *known])})"
        )
    try:
        return next(iter(found)).load()()
    except Exception as exc:  # an exporter that cannot start with these settings
        raise TracingConfigError(f"OTEL_TRACES_EXPORTER: exporter {name!r} cannot start: {exc}") from exc


def configure_from_env(environ: Mapping[str, str] | None = None) -> bool:
    """Set tracing up from the OTEL_* variables (once per process; later calls change nothing).
    Returns whether tracing is on; TracingConfigError if the variables cannot be honoured."""
    global _configured_from_env
    if _configured_from_env or _provider is not None:
        return enabled()
    environ = os.environ if environ is None else environ
    names = exporter_names(environ)
    if not names:
        return False
    from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from jobscheduler.version import version_info

    exporters = [_exporter(name, environ) for name in names]
    resource = Resource.create({SERVICE_VERSION: version_info().version})
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: _DEFAULT_SERVICE_NAME}))
    provider = SdkTracerProvider(resource=resource)  # sampler: OTEL_TRACES_SAMPLER(_ARG)
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))  # OTEL_BSP_* variables
    trace.set_tracer_provider(provider)  # for any other OpenTelemetry user in the process
    install(provider)
    _configured_from_env = True
    return True


def install(provider: TracerProvider) -> None:
    """Trace through ``provider`` (configure_from_env does this; tests give their own)."""
    global _provider, _tracer
    from jobscheduler.version import version_info

    _provider = provider
    _tracer = provider.get_tracer(_TRACER_NAME, version_info().version)


def uninstall() -> None:
    """Tracing off again (for tests); the provider is not shut down."""
    global _provider, _tracer
    _provider = _tracer = None


def shutdown() -> None:
    """Export what is left and stop the exporters (at server shutdown)."""
    provider = _provider
    uninstall()
    stop = getattr(provider, "shutdown", None)
    if callable(stop):
        stop()


def enabled() -> bool:
    return _tracer is not None


def server_interceptors() -> list[Any]:
    """The OpenTelemetry gRPC server interceptor (a server span per RPC, the caller's
    ``traceparent`` metadata continued), or [] when tracing is off."""
    if _provider is None:
        return []
    from opentelemetry.instrumentation.grpc import aio_server_interceptor, filters

    interceptor: Callable[..., Any] = aio_server_interceptor  # (the package has no type hints)
    return [interceptor(tracer_provider=_provider, filter_=filters.negate(filters.health_check()))]


def current_traceparent() -> str:
    """The W3C ``traceparent`` of the active span, or "" (tracing off, or no span)."""
    if _tracer is None:
        return ""
    return traceparent_of(trace.get_current_span())


def traceparent_of(span: Span | None) -> str:
    """The W3C ``traceparent`` of ``span``, or "" (None, or not a valid span)."""
    if span is None:
        return ""
    context = span.get_span_context()
    if not context.is_valid:
        return ""
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def current_ids() -> tuple[str, str] | None:
    """(trace_id, span_id) in hex of the active span, for log lines; None when there is none."""
    if _tracer is None:
        return None
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


def _has_parent() -> bool:
    return trace.get_current_span().get_span_context().is_valid


def child_span(
    name: str, attributes: Mapping[str, str | int] | None = None, *, kind: SpanKind = SpanKind.CLIENT
) -> AbstractContextManager[Span | None]:
    """A span for a step of the current trace, made current; none (None) when tracing is off or
    no span is active (background work such as watches and Lease renewals is not traced)."""
    if _tracer is None or not _has_parent():
        return _NO_SPAN
    return _tracer.start_as_current_span(name, kind=kind, attributes=attributes)


def start_child_span(name: str, attributes: Mapping[str, str | int] | None = None) -> Span | None:
    """As child_span, but not made current and ended by the caller (``end_span``): for async
    generators, which must not leave a context attached across their ``yield``."""
    if _tracer is None or not _has_parent():
        return None
    return _tracer.start_span(name, kind=SpanKind.CLIENT, attributes=attributes)


def end_span(span: Span | None, error: BaseException | None = None) -> None:
    if span is None:
        return
    if isinstance(error, Exception):
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"[:200]))
    span.end()


def link_job_trace(annotations: Mapping[str, Any]) -> None:
    """Link the active span (an admission write) to the trace of the ScheduleJob call that created
    the job (its TRACEPARENT_ANNOTATION), if tracing is on and the Job has one."""
    if _tracer is None:
        return
    parsed = parse_traceparent(annotations.get(TRACEPARENT_ANNOTATION))
    if parsed is None:
        return
    trace_id, span_id, flags = parsed
    flags_ = TraceFlags(int(flags, 16))
    context = SpanContext(int(trace_id, 16), int(span_id, 16), is_remote=True, trace_flags=flags_)
    trace.get_current_span().add_link(context)


def set_attribute(key: str, value: str | int) -> None:
    """Set an attribute on the active span, if tracing is on (a no-op on a non-recording span)."""
    if _tracer is not None:
        trace.get_current_span().set_attribute(key, value)


def traced_write(name: str) -> Callable[[F], F]:
    """Decorate a backend's write method ``(self, job_id, ...)`` with a span named ``name``
    (a child of the active span, else a new trace), with the job id as an attribute."""

    def decorate(method: F) -> F:
        @functools.wraps(method)
        async def traced(self: object, job_id: str, *args: Any, **kwargs: Any) -> Any:
            if _tracer is None:
                return await method(self, job_id, *args, **kwargs)
            attributes = {"jobscheduler.job_id": job_id}
            with _tracer.start_as_current_span(name, kind=SpanKind.INTERNAL, attributes=attributes):
                return await method(self, job_id, *args, **kwargs)

        return cast(F, traced)

    return decorate
