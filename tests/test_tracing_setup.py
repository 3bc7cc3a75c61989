"""Tracing's set-up and its parts: OTEL_* decide whether it is on (and nothing is loaded when it
is off), bad settings are a startup error, log lines carry the span's ids, and the W3C context
on a Job (core.tracecontext), its retries and its program."""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import subprocess
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
import structlog
from conftest import ROOT
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from jobscheduler import tracing
from jobscheduler.app import StartupError, serve
from jobscheduler.config import load_settings
from jobscheduler.core.tracecontext import (
    TRACEPARENT_ANNOTATION,
    apply_trace_context,
    child_traceparent,
    parse_traceparent,
)
from jobscheduler.logs import configure_logging, get_logger
from jobscheduler.timer import run as run_timer
from jobscheduler.timer._config import parse_args, resolve_config
from jobscheduler.timer._stop import StopRequest

CALLER_SPAN = "00f067aa0ba902b7"
CALLER_TRACEPARENT = f"00-4bf92f3577b34da6a3ce929d0e0e4736-{CALLER_SPAN}-01"


@pytest.fixture
def provider() -> Iterator[TracerProvider]:
    provider = TracerProvider()
    tracing.install(provider)
    try:
        yield provider
    finally:
        tracing.uninstall()
        provider.shutdown()


def container_env(job: dict[str, Any]) -> dict[str, str]:
    (container,) = job["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in container.get("env", ())}


def test_log_lines_carry_the_active_span_ids(
    provider: TracerProvider, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("info", json=True)
    try:
        log = get_logger("test")
        log.info("outside")
        tracer = trace.get_tracer("test", tracer_provider=provider)
        with tracer.start_as_current_span("work") as span:
            log.info("inside")
        lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    finally:
        structlog.reset_defaults()
    outside, inside = lines
    assert "trace_id" not in outside and "span_id" not in outside
    context = span.get_span_context()
    assert inside["trace_id"] == f"{context.trace_id:032x}"
    assert inside["span_id"] == f"{context.span_id:016x}"


def test_the_server_without_otel_settings_installs_no_provider_and_loads_no_sdk() -> None:
    """In a fresh interpreter (imports are per process): configure, build the server, run an RPC's
    worth of hooks; the SDK and the gRPC instrumentation are never imported."""
    code = """
import sys
from opentelemetry import trace
from jobscheduler import tracing
from jobscheduler.app import StartupError, serve
from jobscheduler.config import load_settings
from jobscheduler.api.server import Health, build_server
assert tracing.configure_from_env() is False
assert tracing.server_interceptors() == [] and tracing.current_traceparent() == ""
with tracing.child_span("x") as span:
    assert span is None
print(type(trace.get_tracer_provider()).__name__)
print(sorted(m for m in sys.modules if m.startswith(("opentelemetry.sdk", "opentelemetry.instrumentation"))))
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["ProxyTracerProvider", "[]"]


def test_an_exporter_that_is_not_installed_is_a_startup_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    for key, value in {"GRPC_HOST": "127.0.0.1", "BACKEND": "local", "DATA_DIR": str(tmp_path)}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "nosuch")
    with pytest.raises(StartupError, match="OTEL_TRACES_EXPORTER: no trace exporter 'nosuch' is installed"):
        asyncio.run(serve(load_settings()))
    assert not tracing.enabled()


@pytest.mark.parametrize(
    ("environ", "names"),
    [
        ({}, []),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"}, ["otlp"]),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, ["otlp"]),
        ({"OTEL_TRACES_EXPORTER": "console,otlp"}, ["console", "otlp"]),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"}, []),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, []),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "  "}, []),
    ],
)
def test_tracing_is_on_only_when_an_exporter_is_configured(environ: dict[str, str], names: list[str]) -> None:
    assert tracing.exporter_names(environ) == names


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"OTEL_TRACES_EXPORTER": "nosuch"}, "no trace exporter 'nosuch' is installed"),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "carrier-pigeon"}, "not supported"),
    ],
)
def test_unusable_settings_are_a_startup_error(environ: dict[str, str], message: str) -> None:
    with pytest.raises(tracing.TracingConfigError, match=message):
        tracing.configure_from_env(environ)
    assert not tracing.enabled()


def _job(env: Sequence[dict[str, str]]) -> dict[str, Any]:
    return {"spec": {"template": {"spec": {"containers": [{"name": "c", "env": list(env)}]}}}}


def test_the_trace_context_replaces_a_stale_one_and_ignores_a_malformed_one() -> None:
    job = _job([{"name": "A", "value": "1"}, {"name": "TRACEPARENT", "value": "stale"}])
    apply_trace_context(job, CALLER_TRACEPARENT)
    assert job["metadata"]["annotations"] == {TRACEPARENT_ANNOTATION: CALLER_TRACEPARENT}
    assert container_env(job) == {"A": "1", "TRACEPARENT": CALLER_TRACEPARENT}
    for bad in ("", "00-" + "0" * 32 + "-" + CALLER_SPAN + "-01", CALLER_TRACEPARENT.upper(), 7):
        untouched = _job([])
        apply_trace_context(untouched, bad)
        assert untouched == _job([])


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80) | st.from_regex(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}", fullmatch=True))
def test_only_a_well_formed_traceparent_is_taken_and_continued(value: str) -> None:
    parsed = parse_traceparent(value)
    child = child_traceparent(value)
    if parsed is None:
        assert child is None
        return
    assert value == f"00-{parsed[0]}-{parsed[1]}-{parsed[2]}"
    assert child is not None and parse_traceparent(child) is not None
    assert child[:36] == value[:36] and child[-3:] == value[-3:]  # same trace, same flags


def test_a_retry_continues_the_trace_of_the_job_it_retries() -> None:
    from test_retries import retry_of, stored_job

    failed = stored_job()
    apply_trace_context(failed, CALLER_TRACEPARENT)
    retry = retry_of(failed)
    assert retry["metadata"]["annotations"][TRACEPARENT_ANNOTATION] == CALLER_TRACEPARENT
    assert container_env(retry)["TRACEPARENT"] == CALLER_TRACEPARENT


def test_the_timer_logs_carry_the_trace_id_of_its_job(capsys: pytest.CaptureFixture[str]) -> None:
    env = {
        "TIMER_NAME": "t",
        "DURATION_SECONDS": "0.01",
        "CONTROL_PLANE_ENDPOINT": "http://127.0.0.1:9/",  # nothing listens: the report fails at once
        "REPORT_MAX_ATTEMPTS": "1",
        "TRACEPARENT": CALLER_TRACEPARENT,
    }
    configure_logging("info", json=True)
    try:
        code = run_timer(resolve_config(parse_args([]), env), StopRequest())
        lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    finally:
        structlog.reset_defaults()
    assert code == 3
    assert len(lines) >= 3  # started, completed, the report's failure
    assert all(line.get("trace_id") == CALLER_TRACEPARENT[3:35] for line in lines), lines
    assert structlog.contextvars.get_contextvars() == {}  # nothing left bound
