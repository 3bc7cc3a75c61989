"""Tracing with OpenTelemetry: one trace from a ScheduleJob call through the Kubernetes API calls
(emulator backend) to the Job's annotation and TRACEPARENT, and on to the timer's report request;
admission writes traced; log lines carrying the ids; and no tracing at all without OTEL_* settings.

The service runs in-process with an in-memory span exporter (tracing.install: the global tracer
provider is left alone); the timer's report goes to a sink on 127.0.0.1.
"""

from __future__ import annotations

import json
import pathlib
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
import pytest
from conftest import ServeProcess, ServiceThread, kubernetes_service, local_service, serve_env
from emulator import EmulatorThread
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from jobscheduler import tracing
from jobscheduler._generated import jobscheduler_pb2 as pb
from jobscheduler._generated import jobscheduler_pb2_grpc as pb_grpc
from jobscheduler.core.tracecontext import (
    TRACEPARENT_ANNOTATION,
    parse_traceparent,
)
from jobscheduler.timer import run as run_timer
from jobscheduler.timer._config import parse_args, resolve_config
from jobscheduler.timer._stop import StopRequest

T = 10
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
CALLER_TRACEPARENT = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on, into memory, for the service built inside the test."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    try:
        yield exporter
    finally:
        tracing.uninstall()
        provider.shutdown()


@pytest.fixture
def traced_service(spans: InMemorySpanExporter, kubeconfig: pathlib.Path) -> Iterator[ServiceThread]:
    svc = kubernetes_service(kubeconfig)
    try:
        yield svc
    finally:
        svc.stop()


def wait_for_span(
    exporter: InMemorySpanExporter, match: Callable[[ReadableSpan], bool], timeout: float = 5.0
) -> ReadableSpan:
    """The first finished span ``match`` accepts (spans end on the server's thread, a moment after
    the client has its answer)."""
    deadline = time.monotonic() + timeout
    while True:
        for span in exporter.get_finished_spans():
            if match(span):
                return span
        if time.monotonic() > deadline:
            names = [s.name for s in exporter.get_finished_spans()]
            raise AssertionError(f"no such span; finished: {names}")
        time.sleep(0.01)


def hex_ids(span: ReadableSpan) -> tuple[str, str]:
    assert span.context is not None
    return f"{span.context.trace_id:032x}", f"{span.context.span_id:016x}"


def parent_id(span: ReadableSpan) -> str | None:
    return f"{span.parent.span_id:016x}" if span.parent is not None else None


def timer_request(**fields: Any) -> pb.ScheduleJobRequest:
    timer = pb.TimerJob(
        duration_seconds=1, timer_name="traced", control_plane_endpoint="http://cp.example:1/"
    )
    return pb.ScheduleJobRequest(name="traced", timer_job=timer, **fields)


class _Sink(BaseHTTPRequestHandler):
    """A control plane stand-in that keeps each report's traceparent header and body."""

    protocol_version = "HTTP/1.1"
    received: list[tuple[str | None, dict[str, Any]]]
    arrived: threading.Event

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        self.received.append((self.headers.get("traceparent"), body))
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()
        self.arrived.set()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def sink() -> Iterator[tuple[str, type[_Sink]]]:
    handler = type("Sink", (_Sink,), {"received": [], "arrived": threading.Event()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/report", handler
    finally:
        server.shutdown()
        server.server_close()


def container_env(job: dict[str, Any]) -> dict[str, str]:
    (container,) = job["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in container.get("env", ())}


def test_one_trace_from_schedule_job_through_kubernetes_to_the_job_and_its_report(
    traced_service: ServiceThread,
    emulator: EmulatorThread,
    spans: InMemorySpanExporter,
    sink: tuple[str, type[_Sink]],
) -> None:
    response = traced_service.stub.ScheduleJob(
        timer_request(), timeout=T, metadata=[("traceparent", CALLER_TRACEPARENT)]
    )
    job_id = response.job_id

    # The RPC's server span continues the caller's trace ...
    server = wait_for_span(spans, lambda s: s.kind is SpanKind.SERVER and s.name.endswith("/ScheduleJob"))
    trace_id, server_span = hex_ids(server)
    assert trace_id == CALLER_TRACE and parent_id(server) == CALLER_SPAN
    # ... and the Job's creation is its child, a client span for the Kubernetes API call.
    create = wait_for_span(spans, lambda s: s.name == "kubernetes create jobs.batch")
    assert create.kind is SpanKind.CLIENT
    assert hex_ids(create)[0] == trace_id and parent_id(create) == server_span
    assert create.attributes is not None
    assert create.attributes["http.request.method"] == "POST"
    assert create.attributes["http.response.status_code"] == 201
    # The API server gets the context too (one that traces would continue it).
    sent = emulator.call(
        lambda e: [
            r.headers.get("traceparent")
            for r in e._requests
            if r.method.value == "POST" and r.url.path.endswith("/jobs")
        ]
    )
    assert sent == [f"00-{trace_id}-{hex_ids(create)[1]}-01"]

    # The Job carries the context: an annotation, and TRACEPARENT for its container.
    job = emulator.job(job_id)
    traceparent = f"00-{trace_id}-{server_span}-01"
    assert job["metadata"]["annotations"][TRACEPARENT_ANNOTATION] == traceparent
    env = container_env(job)
    assert env["TRACEPARENT"] == traceparent

    # The job's program, given its container's environment, continues the trace in its report.
    url, received = sink
    env.update(CONTROL_PLANE_ENDPOINT=url, DURATION_SECONDS="0.01", JOB_ID=job_id, LOG_LEVEL="error")
    assert run_timer(resolve_config(parse_args([]), env), StopRequest()) == 0
    assert received.arrived.wait(5)
    ((header, body),) = received.received
    assert body["job_id"] == job_id and body["status"] == "completed"
    parsed = parse_traceparent(header)
    assert parsed is not None, header
    assert parsed[0] == trace_id and parsed[1] != server_span  # same trace, a new step in it


def test_every_rpc_has_a_server_span_with_its_code_but_health_probes_none(
    traced_service: ServiceThread, spans: InMemorySpanExporter
) -> None:
    health_pb2_grpc.HealthStub(traced_service.channel).Check(health_pb2.HealthCheckRequest(), timeout=T)
    job_id = traced_service.stub.ScheduleJob(timer_request(), timeout=T).job_id
    watch = traced_service.stub.WatchJob(pb.WatchJobRequest(job_id=job_id), timeout=T)
    assert next(watch).job.job_id == job_id
    watch.cancel()
    with pytest.raises(grpc.RpcError):
        traced_service.stub.GetJobStatus(pb.GetJobStatusRequest(job_id="job-0000000000"), timeout=T)

    def server_span(method: str) -> ReadableSpan:
        name = f"/jobscheduler.JobScheduler/{method}"
        return wait_for_span(spans, lambda s: s.kind is SpanKind.SERVER and s.name == name)

    server_span("ScheduleJob")
    server_span("WatchJob")  # a stream, ended by the caller
    not_found = server_span("GetJobStatus")
    assert not_found.attributes is not None
    assert not_found.attributes["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]
    assert not [s.name for s in spans.get_finished_spans() if "grpc.health" in s.name]


def linked_to(span: ReadableSpan, other: ReadableSpan) -> bool:
    return any(
        other.context is not None
        and link.context.trace_id == other.context.trace_id
        and link.context.span_id == other.context.span_id
        for link in span.links
    )


def test_admission_writes_have_spans_with_their_kubernetes_calls(
    traced_service: ServiceThread, spans: InMemorySpanExporter
) -> None:
    # Held for a moment (start time), then admitted by the admission loop: no RPC is active then,
    # so the admission write starts a trace of its own, with the PATCH inside it, linked to the
    # trace of the ScheduleJob call that created the job.
    job_id = traced_service.stub.ScheduleJob(timer_request(delay_seconds=1), timeout=T).job_id
    server = wait_for_span(spans, lambda s: s.kind is SpanKind.SERVER and s.name.endswith("/ScheduleJob"))
    admit = wait_for_span(spans, lambda s: s.name == "admission admit", timeout=15)
    assert admit.attributes is not None and admit.attributes["jobscheduler.job_id"] == job_id
    assert linked_to(admit, server)
    trace_id, admit_span = hex_ids(admit)
    patch = wait_for_span(
        spans, lambda s: s.name == "kubernetes patch jobs.batch" and parent_id(s) == admit_span
    )
    assert hex_ids(patch)[0] == trace_id
    # Background API traffic (the informer's watch, the Lease) makes no root spans of its own.
    assert all(s.parent is not None for s in spans.get_finished_spans() if s.name.startswith("kubernetes "))


def test_a_local_job_reports_in_the_trace_of_its_schedule_job_call(
    spans: InMemorySpanExporter, tmp_path: pathlib.Path, sink: tuple[str, type[_Sink]]
) -> None:
    """The local backend runs the timer program itself: its report arrives in the RPC's trace;
    its admission (after a start delay) is linked to that trace."""
    url, received = sink
    svc = local_service(tmp_path / "data")
    try:
        request = timer_request(delay_seconds=1)
        request.timer_job.control_plane_endpoint = url
        job_id = svc.stub.ScheduleJob(request, timeout=T).job_id
        server = wait_for_span(spans, lambda s: s.kind is SpanKind.SERVER and s.name.endswith("/ScheduleJob"))
        admit = wait_for_span(spans, lambda s: s.name == "admission admit", timeout=15)
        assert received.arrived.wait(20), "no report from the local job"
    finally:
        svc.stop()
    assert linked_to(admit, server)
    ((header, body),) = received.received
    assert body["job_id"] == job_id
    parsed = parse_traceparent(header)
    assert parsed is not None and parsed[0] == hex_ids(server)[0], header


def test_without_otel_settings_tracing_is_off_and_the_job_gets_no_context(
    service: ServiceThread, emulator: EmulatorThread
) -> None:
    assert not tracing.enabled() and tracing.server_interceptors() == []
    response = service.stub.ScheduleJob(
        timer_request(), timeout=T, metadata=[("traceparent", CALLER_TRACEPARENT)]
    )
    job = emulator.job(response.job_id)
    assert TRACEPARENT_ANNOTATION not in job["metadata"]["annotations"]
    assert "TRACEPARENT" not in container_env(job)
    # Nor may a caller set it itself: it is the service's (a reserved env name).
    bad = timer_request()
    bad.timer_job.env["TRACEPARENT"] = CALLER_TRACEPARENT
    with pytest.raises(grpc.RpcError) as info:
        service.stub.ScheduleJob(bad, timeout=T)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "timer_job.env[TRACEPARENT]" in (info.value.details() or "")


class _Collector(BaseHTTPRequestHandler):
    """An OTLP/HTTP trace receiver: keeps (service.name, span name, trace id, kind) of each span."""

    protocol_version = "HTTP/1.1"
    spans: list[tuple[str, str, str, int]]
    scheduled: threading.Event

    def do_POST(self) -> None:
        export = ExportTraceServiceRequest.FromString(self.rfile.read(int(self.headers["Content-Length"])))
        for resource_spans in export.resource_spans:
            service = next(
                a.value.string_value for a in resource_spans.resource.attributes if a.key == "service.name"
            )
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    self.spans.append((service, span.name, span.trace_id.hex(), span.kind))
                    if span.name.endswith("/ScheduleJob"):
                        self.scheduled.set()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_serve_exports_spans_where_the_otel_variables_say(kubeconfig: pathlib.Path) -> None:
    """`jobscheduler serve` configured only by OTEL_* (OTLP over HTTP to a receiver on loopback):
    the ScheduleJob server span and its Kubernetes call arrive in one trace, under the service
    name given, and the RPC's log line carries that trace id."""
    handler = type("Collector", (_Collector,), {"spans": [], "scheduled": threading.Event()})
    collector = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    env = serve_env(
        kubeconfig,
        BACKEND="kubernetes",
        OTEL_TRACES_EXPORTER="otlp",
        OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=f"http://127.0.0.1:{collector.server_address[1]}/v1/traces",
        OTEL_BSP_SCHEDULE_DELAY="50",
        OTEL_SERVICE_NAME="jobscheduler-test",
    )
    try:
        proc = ServeProcess(env)
        try:
            with grpc.insecure_channel(f"127.0.0.1:{proc.grpc_port}") as channel:
                pb_grpc.JobSchedulerStub(channel).ScheduleJob(timer_request(), timeout=T)
            assert handler.scheduled.wait(10), handler.spans
        finally:
            assert proc.stop() == 0
    finally:
        collector.shutdown()
        collector.server_close()
    ((service, _, trace_id, _),) = [s for s in handler.spans if s[1].endswith("/ScheduleJob")]
    assert service == "jobscheduler-test"
    assert ("jobscheduler-test", "kubernetes create jobs.batch", trace_id, 3) in handler.spans  # CLIENT
    rpc_lines = [line for line in proc.lines if line.get("event") == "rpc"]
    assert any(line.get("trace_id") == trace_id for line in rpc_lines), rpc_lines
