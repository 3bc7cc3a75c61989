"""The health-check program run in a health-check job's pod (``jobscheduler healthcheck``).

It probes every target at once (HTTP GET with an expected status, TCP connect, gRPC
``grpc.health.v1.Health/Check``), each up to 1 + retries attempts bounded by its timeout, then
POSTs one JSON report to ``CONTROL_PLANE_ENDPOINT`` (the timer's delivery: retries on connection
errors, timeouts, 5xx and 429 with exponential backoff)::

    {"job_id": ..., "job_name": ..., "job_type": "healthcheck", "status": "healthy",
     "targets": [{"name": "api", "kind": "http", "healthy": true, "attempts": 1,
                  "latency_seconds": 0.012, "detail": "HTTP 200"}, ...],
     "started_at": "2025-01-01T00:00:00.000Z", "finished_at": "2025-01-01T00:00:01.000Z"}

``status`` is ``healthy`` (every target), ``unhealthy`` (at least one not) or ``cancelled``
(SIGTERM/SIGINT: the targets probed so far, at most 2 short report attempts).

Configuration (environment variables): ``HEALTHCHECK_TARGETS`` (required, a JSON list of
targets, see :mod:`jobscheduler.healthcheck._targets`), ``CONTROL_PLANE_ENDPOINT`` (required),
``JOB_ID`` (default ``$HOSTNAME``), ``JOB_NAME``, ``LOG_LEVEL``, ``REPORT_MAX_ATTEMPTS``,
``REPORT_BACKOFF_SECONDS``, ``REPORT_TIMEOUT_SECONDS``, ``TRACEPARENT``, as for the timer.

Exit codes: :data:`EXIT_OK`, :data:`EXIT_CONFIG_ERROR`, :data:`EXIT_REPORT_FAILED`,
:data:`EXIT_UNHEALTHY`, 143 (SIGTERM) and 130 (SIGINT).
"""

from __future__ import annotations

import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from types import FrameType
from typing import Any, Final

import structlog

from jobscheduler.core.tracecontext import parse_traceparent
from jobscheduler.healthcheck._config import HealthCheckConfig, resolve_config, resolve_log_level
from jobscheduler.healthcheck._probes import ProbeResult, probe
from jobscheduler.logs import configure_logging, get_logger
from jobscheduler.timer._config import ConfigError
from jobscheduler.timer._report import post_report

__all__ = ["EXIT_CONFIG_ERROR", "EXIT_OK", "EXIT_REPORT_FAILED", "EXIT_UNHEALTHY", "LOGGER_NAME", "main"]

#: Every target healthy, and the control plane acknowledged the report.
EXIT_OK: Final = 0
#: Missing or invalid configuration; nothing was probed (the Job fails at once: podFailurePolicy).
EXIT_CONFIG_ERROR: Final = 2
#: Every target healthy, but the report could not be delivered (the Job may retry).
EXIT_REPORT_FAILED: Final = 3
#: At least one target unhealthy (reported or not; the Job fails at once: podFailurePolicy).
EXIT_UNHEALTHY: Final = 4

LOGGER_NAME: Final = "jobscheduler.healthcheck"
JOB_TYPE: Final = "healthcheck"
CANCEL_REPORT_MAX_ATTEMPTS: Final = 2
CANCEL_REPORT_TIMEOUT_SECONDS: Final = 2.0
CANCEL_REPORT_BACKOFF_SECONDS: Final = 0.2
STOP_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT)
SIGNAL_POLL_SECONDS: Final = 0.5

Log = structlog.typing.FilteringBoundLogger


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _Events:
    """Probe results and stop signals in one queue (``SimpleQueue.put`` is safe in a signal handler)."""

    def __init__(self) -> None:
        self.queue: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self.stopping = threading.Event()
        self.signum: int | None = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.queue.put(("signal", signum))

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                signal.signal(signum, self._handle)

    def sleep(self, seconds: float) -> bool:
        """For the report's retries (all probes done): True as soon as a signal arrives."""
        if self.signum is not None:
            return True
        try:
            kind, value = self.queue.get(timeout=max(0.0, seconds))
        except queue.Empty:
            return False
        if kind == "signal":
            self.signum = int(value)
            self.stopping.set()
        return self.signum is not None


def _probe_all(config: HealthCheckConfig, events: _Events, log: Log) -> dict[str, ProbeResult]:
    """Each target in its own thread; returns when all are done or a stop signal arrives."""

    def run(index: int) -> None:
        # Stop signals go to the main thread: this thread and those it starts (gRPC's) block them.
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        target = config.targets[index]
        try:
            result = probe(target, events.stopping.wait)
        except BaseException as exc:  # a bug must not leave the main thread waiting for this target
            result = ProbeResult(
                target.name, target.kind, False, 0, 0.0, f"probe failed: {type(exc).__name__}"
            )
        events.queue.put(("result", result))

    for i in range(len(config.targets)):
        threading.Thread(target=run, args=(i,), name=f"probe-{i}", daemon=True).start()
    results: dict[str, ProbeResult] = {}
    while len(results) < len(config.targets):
        try:
            # A timeout, so that a pending signal handler runs even if the kernel picked another
            # thread for the signal (a blocked wait is not interrupted then).
            kind, value = events.queue.get(timeout=SIGNAL_POLL_SECONDS)
        except queue.Empty:
            continue
        if kind == "signal":
            events.signum = int(value)
            events.stopping.set()
            return results
        results[value.name] = value
        log.log(
            20 if value.healthy else 30,
            "target probed",
            **value.plain(),
        )
    return results


def _report_body(
    config: HealthCheckConfig, status: str, results: Mapping[str, ProbeResult], started_at: datetime
) -> dict[str, Any]:
    ordered = [results[t.name].plain() for t in config.targets if t.name in results]
    return {
        "job_id": config.job_id,
        "job_name": config.job_name,
        "job_type": JOB_TYPE,
        "status": status,
        "targets": ordered,
        "started_at": _rfc3339(started_at),
        "finished_at": _rfc3339(datetime.now(UTC)),
    }


def run(config: HealthCheckConfig, events: _Events) -> int:
    """Probe, report and return the exit code (logging must already be configured)."""
    parsed = parse_traceparent(config.traceparent)
    with structlog.contextvars.bound_contextvars(**({"trace_id": parsed[0]} if parsed else {})):
        return _run(config, events)


def _run(config: HealthCheckConfig, events: _Events) -> int:
    log: Log = get_logger(LOGGER_NAME)
    started_at = datetime.now(UTC)
    log.info(
        "healthcheck started",
        job_id=config.job_id,
        targets=[t.name for t in config.targets],
        endpoint=config.endpoint,
    )
    results = _probe_all(config, events, log)
    cancelled = events.signum is not None
    unhealthy = [name for name, r in results.items() if not r.healthy]
    status = "cancelled" if cancelled else ("unhealthy" if unhealthy else "healthy")
    log.log(
        30 if status != "healthy" else 20,
        f"healthcheck {status}",
        job_id=config.job_id,
        healthy=len(results) - len(unhealthy),
        unhealthy=sorted(unhealthy),
        probed=len(results),
        targets=len(config.targets),
    )
    report = post_report(
        config.endpoint,
        _report_body(config, status, results, started_at),
        max_attempts=min(CANCEL_REPORT_MAX_ATTEMPTS, config.report_max_attempts)
        if cancelled
        else config.report_max_attempts,
        backoff_seconds=config.report_backoff_seconds,
        timeout_seconds=min(CANCEL_REPORT_TIMEOUT_SECONDS, config.report_timeout_seconds)
        if cancelled
        else config.report_timeout_seconds,
        log=log,
        wait=_short_sleep if cancelled else events.sleep,
        traceparent=config.traceparent,
        program="healthcheck",
    )
    if report.delivered:
        log.info(
            "healthcheck reported", status=status, endpoint=config.endpoint, http_status=report.http_status
        )
    else:
        log.error(
            "healthcheck report could not be delivered to the control plane",
            status=status,
            endpoint=config.endpoint,
            attempts=report.attempts,
            http_status=report.http_status,
            last_error=report.last_error,
        )
    if events.signum is not None:
        return 128 + events.signum if events.signum > 0 else 128 + signal.SIGTERM.value
    if unhealthy:
        return EXIT_UNHEALTHY
    return EXIT_OK if report.delivered else EXIT_REPORT_FAILED


def _short_sleep(seconds: float) -> bool:
    time.sleep(min(seconds, CANCEL_REPORT_BACKOFF_SECONDS))
    return False


def _config_error(exc: ConfigError) -> int:
    get_logger(LOGGER_NAME).error(f"invalid healthcheck configuration: {exc}", variables=sorted(exc.problems))
    return EXIT_CONFIG_ERROR


def main(argv: Sequence[str] | None = None, *, environ: Mapping[str, str] | None = None) -> int:
    """Run the health-check program (configured by environment variables; ``argv`` excludes the
    program name and the ``healthcheck`` subcommand). Returns the exit code."""
    env = os.environ if environ is None else environ
    args = list(sys.argv[1:] if argv is None else argv)
    if args in (["-h"], ["--help"]):
        print(__doc__)
        return EXIT_OK
    try:
        level = resolve_log_level(env)
    except ConfigError:
        level = "info"  # resolve_config reports it with any other problem
    configure_logging(level)
    if args:
        return _config_error(
            ConfigError({"argv": f"takes no arguments (configured by its environment), got {args[:3]}"})
        )
    try:
        config = resolve_config(env)
    except ConfigError as exc:
        return _config_error(exc)
    events = _Events()
    events.install()
    return run(config, events)
