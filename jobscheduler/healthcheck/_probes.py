"""Probing one target: HTTP GET (status), TCP connect, gRPC ``grpc.health.v1.Health/Check``;
each attempt bounded by the target's timeout, failures retried with backoff."""

from __future__ import annotations

import http.client
import socket
import ssl
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from jobscheduler.healthcheck._targets import Target, probe_backoff

#: A result's detail is a short status line, never a response body, at most this long.
MAX_DETAIL_LENGTH: Final = 200
USER_AGENT: Final = "jobscheduler-healthcheck"


@dataclass(frozen=True, slots=True)
class ProbeResult:
    name: str
    kind: str
    healthy: bool
    attempts: int
    #: Seconds the last attempt took.
    latency_seconds: float
    detail: str

    def plain(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "healthy": self.healthy,
            "attempts": self.attempts,
            "latency_seconds": round(self.latency_seconds, 3),
            "detail": self.detail,
        }


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_DETAIL_LENGTH else text[: MAX_DETAIL_LENGTH - 3] + "..."


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _http(target: Target) -> tuple[bool, str]:
    parts = urllib.parse.urlsplit(target.url)
    host = parts.hostname or ""
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(
            host, parts.port, timeout=target.timeout_seconds, context=ssl.create_default_context()
        )
    else:
        conn = http.client.HTTPConnection(host, parts.port, timeout=target.timeout_seconds)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    try:
        conn.request("GET", path, headers={"User-Agent": USER_AGENT, "Accept": "*/*", "Connection": "close"})
        status = conn.getresponse().status
    finally:
        conn.close()
    if target.expected_status:
        ok = status in target.expected_status
        expected = ", ".join(map(str, target.expected_status))
    else:
        ok, expected = 200 <= status < 300, "2xx"
    return ok, f"HTTP {status}" if ok else f"HTTP {status} (expected {expected})"


def _tcp(target: Target) -> tuple[bool, str]:
    with socket.create_connection((target.host, target.port), timeout=target.timeout_seconds):
        return True, "connected"


def _grpc(target: Target) -> tuple[bool, str]:
    import grpc  # only gRPC probes pay for importing it
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    address = f"[{target.host}]:{target.port}" if ":" in target.host else f"{target.host}:{target.port}"
    options = [("grpc.enable_http_proxy", 0), ("grpc.enable_retries", 0)]
    if target.tls:
        channel = grpc.secure_channel(address, grpc.ssl_channel_credentials(), options=options)
    else:
        channel = grpc.insecure_channel(address, options=options)
    try:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            answer = stub.Check(
                health_pb2.HealthCheckRequest(service=target.service), timeout=target.timeout_seconds
            )
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else None
            details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
            return False, f"{code.name if code else 'UNKNOWN'}: {details or ''}".rstrip(": ")
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
        return answer.status == health_pb2.HealthCheckResponse.SERVING, status
    finally:
        channel.close()


_ATTEMPTS: Final[dict[str, Callable[[Target], tuple[bool, str]]]] = {
    "http": _http,
    "tcp": _tcp,
    "grpc": _grpc,
}


def probe(target: Target, wait: Callable[[float], bool]) -> ProbeResult:
    """Probe ``target`` until healthy or out of attempts. ``wait(seconds)`` sleeps between
    attempts and returns True to give up (the job is being stopped)."""
    attempt_once = _ATTEMPTS[target.kind]
    attempt, latency, detail = 0, 0.0, "not probed"
    for attempt in range(1, target.attempts + 1):
        start = time.monotonic()
        try:
            healthy, detail = attempt_once(target)
        except Exception as exc:  # connection refused, timeouts, TLS, DNS, malformed answers
            healthy, detail = False, _error(exc)
        latency = time.monotonic() - start
        if healthy:
            return ProbeResult(target.name, target.kind, True, attempt, latency, _clip(detail))
        if attempt < target.attempts and wait(probe_backoff(attempt)):
            break
    return ProbeResult(target.name, target.kind, False, attempt, latency, _clip(detail))
