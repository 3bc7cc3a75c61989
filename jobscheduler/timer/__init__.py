"""The timer program run inside a timer job's pod (``jobscheduler timer`` / ``python -m jobscheduler.timer``).

It waits ``DURATION_SECONDS``, then POSTs a JSON status report to ``CONTROL_PLANE_ENDPOINT``::

    {"job_id": ..., "timer_name": ..., "status": "completed", "duration_seconds": ...,
     "started_at": "2025-01-01T00:00:00.000Z", "finished_at": "2025-01-01T00:00:10.000Z"}

retrying connection errors, timeouts, 5xx and 429 with exponential backoff. SIGTERM/SIGINT stop the
wait at once; a ``"cancelled"`` report is then sent (at most 2 short attempts) before exiting.

Configuration (environment variable / overriding flag):

- ``TIMER_NAME`` / ``--timer-name``: required, non-empty
- ``DURATION_SECONDS`` / ``--duration-seconds``: required, > 0, may be fractional
- ``CONTROL_PLANE_ENDPOINT`` / ``--control-plane-endpoint``: required, http:// or https:// URL
- ``LOG_LEVEL`` / ``--log-level``: trace, debug, info (default), warn, error
- ``JOB_ID`` / ``--job-id``: default ``$HOSTNAME`` (the pod name), else ""
- ``REPORT_MAX_ATTEMPTS`` / ``--report-max-attempts``: default 5
- ``REPORT_BACKOFF_SECONDS`` / ``--report-backoff-seconds``: default 0.5, doubling, capped at 8 s
- ``REPORT_TIMEOUT_SECONDS`` / ``--report-timeout-seconds``: per attempt, default 5
- ``TRACEPARENT`` (set by the service when tracing is on): the job's W3C trace context; the
  report request continues that trace (``traceparent`` header) and log lines carry its
  ``trace_id``; ignored when malformed

A flag wins over its variable; an empty variable counts as unset.

Exit codes: :data:`EXIT_OK`, :data:`EXIT_CONFIG_ERROR`, :data:`EXIT_REPORT_FAILED`,
:data:`EXIT_CANCELLED` (SIGTERM; SIGINT gives 128 + 2 = 130, :data:`EXIT_INTERRUPTED`).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import structlog

from jobscheduler.core.tracecontext import parse_traceparent
from jobscheduler.logs import configure_logging, get_logger
from jobscheduler.timer._config import ConfigError, TimerConfig, parse_args, resolve_config, resolve_log_level
from jobscheduler.timer._report import ReportResult, post_report
from jobscheduler.timer._stop import StopRequest

__all__ = [
    "EXIT_CANCELLED",
    "EXIT_CONFIG_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_REPORT_FAILED",
    "LOGGER_NAME",
    "main",
]

#: The timer ran to completion and the control plane acknowledged the report (2xx).
EXIT_OK: Final = 0
#: Missing or invalid configuration (also a bad command line); nothing was timed.
EXIT_CONFIG_ERROR: Final = 2
#: The timer ran to completion but the completion report could not be delivered.
EXIT_REPORT_FAILED: Final = 3
#: Stopped by SIGTERM (128 + 15), whether or not the cancellation report got through.
EXIT_CANCELLED: Final = 128 + signal.SIGTERM.value
#: Stopped by SIGINT (128 + 2), whether or not the cancellation report got through.
EXIT_INTERRUPTED: Final = 128 + signal.SIGINT.value

LOGGER_NAME: Final = "jobscheduler.timer"

STATUS_COMPLETED: Final = "completed"
STATUS_CANCELLED: Final = "cancelled"

#: The cancellation report must fit well inside Kubernetes' 30 s termination grace period.
CANCEL_REPORT_MAX_ATTEMPTS: Final = 2
CANCEL_REPORT_TIMEOUT_SECONDS: Final = 2.0
CANCEL_REPORT_BACKOFF_SECONDS: Final = 0.2


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def progress_interval(duration_seconds: float) -> float:
    """Seconds between progress log lines: a tenth of the duration, within [1, 30]."""
    return max(1.0, min(30.0, duration_seconds / 10))


def _exit_code_for(signum: int) -> int:
    return 128 + signum if signum > 0 else EXIT_CANCELLED


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return str(signum)


def _report_body(
    config: TimerConfig, status: str, started_at: datetime, finished_at: datetime
) -> dict[str, Any]:
    return {
        "job_id": config.job_id,
        "timer_name": config.timer_name,
        "status": status,
        "duration_seconds": config.duration_seconds,
        "started_at": _rfc3339(started_at),
        "finished_at": _rfc3339(finished_at),
    }


def _wait_for_duration(
    config: TimerConfig, stop: StopRequest, log: structlog.typing.FilteringBoundLogger
) -> tuple[bool, float]:
    """Wait the configured duration, logging progress. Returns (stopped early, elapsed seconds)."""
    interval = progress_interval(config.duration_seconds)
    start = time.monotonic()
    deadline = start + config.duration_seconds
    next_progress = start + interval
    while True:
        now = time.monotonic()
        if now >= deadline:
            return False, now - start
        if stop.wait(min(deadline, next_progress) - now):
            return True, time.monotonic() - start
        now = time.monotonic()
        if next_progress <= now < deadline:
            log.info(
                "timer progress",
                timer_name=config.timer_name,
                elapsed_seconds=round(now - start, 3),
                remaining_seconds=round(deadline - now, 3),
            )
            while next_progress <= now:
                next_progress += interval


def _log_undelivered(
    log: structlog.typing.FilteringBoundLogger,
    config: TimerConfig,
    status: str,
    result: ReportResult,
    what: str,
    report: str,
) -> None:
    log.error(
        f"timer {what} but the {report} report could not be delivered to the control plane",
        timer_name=config.timer_name,
        job_id=config.job_id,
        status=status,
        endpoint=config.endpoint,
        attempts=result.attempts,
        http_status=result.http_status,
        last_error=result.last_error,
    )


def _cancel(
    config: TimerConfig,
    log: structlog.typing.FilteringBoundLogger,
    signum: int,
    started_at: datetime,
    elapsed: float,
) -> int:
    log.info(
        "timer cancelled",
        timer_name=config.timer_name,
        job_id=config.job_id,
        signal=_signal_name(signum),
        elapsed_seconds=round(elapsed, 3),
        remaining_seconds=round(max(0.0, config.duration_seconds - elapsed), 3),
    )
    body = _report_body(config, STATUS_CANCELLED, started_at, datetime.now(UTC))

    def sleep(seconds: float) -> bool:
        time.sleep(seconds)
        return False

    result = post_report(
        config.endpoint,
        body,
        max_attempts=min(CANCEL_REPORT_MAX_ATTEMPTS, config.report_max_attempts),
        backoff_seconds=min(CANCEL_REPORT_BACKOFF_SECONDS, config.report_backoff_seconds),
        timeout_seconds=min(CANCEL_REPORT_TIMEOUT_SECONDS, config.report_timeout_seconds),
        log=log,
        wait=sleep,
        traceparent=config.traceparent,
    )
    code = _exit_code_for(signum)
    if result.delivered:
        log.info(
            "timer cancellation reported",
            timer_name=config.timer_name,
            endpoint=config.endpoint,
            http_status=result.http_status,
            attempts=result.attempts,
            exit_code=code,
        )
    else:
        _log_undelivered(log, config, STATUS_CANCELLED, result, "was cancelled", "cancellation")
    return code


def run(config: TimerConfig, stop: StopRequest) -> int:
    """Time, report and return the exit code (logging must already be configured). With the
    job's trace context (TRACEPARENT), every log line carries its ``trace_id``."""
    parsed = parse_traceparent(config.traceparent)
    with structlog.contextvars.bound_contextvars(**({"trace_id": parsed[0]} if parsed else {})):
        return _run(config, stop)


def _run(config: TimerConfig, stop: StopRequest) -> int:
    log = get_logger(LOGGER_NAME)
    started_at = datetime.now(UTC)
    log.info(
        "timer started",
        timer_name=config.timer_name,
        duration_seconds=config.duration_seconds,
        job_id=config.job_id,
        endpoint=config.endpoint,
        progress_interval_seconds=progress_interval(config.duration_seconds),
    )
    stopped, elapsed = _wait_for_duration(config, stop, log)
    if stopped:
        return _cancel(config, log, stop.signum or 0, started_at, elapsed)

    finished_at = datetime.now(UTC)
    log.info(
        "timer completed",
        timer_name=config.timer_name,
        job_id=config.job_id,
        duration_seconds=config.duration_seconds,
        elapsed_seconds=round(elapsed, 3),
    )
    body = _report_body(config, STATUS_COMPLETED, started_at, finished_at)
    result = post_report(
        config.endpoint,
        body,
        max_attempts=config.report_max_attempts,
        backoff_seconds=config.report_backoff_seconds,
        timeout_seconds=config.report_timeout_seconds,
        log=log,
        wait=stop.wait,
        traceparent=config.traceparent,
    )
    if result.delivered:
        log.info(
            "timer completion reported",
            timer_name=config.timer_name,
            endpoint=config.endpoint,
            http_status=result.http_status,
            attempts=result.attempts,
        )
        return EXIT_OK
    _log_undelivered(log, config, STATUS_COMPLETED, result, "completed", "completion")
    if result.interrupted and stop.signum is not None:
        # Terminated while still retrying: give up the remaining attempts and exit as a terminated process.
        code = _exit_code_for(stop.signum)
        log.info("timer report retries abandoned on signal", signal=_signal_name(stop.signum), exit_code=code)
        return code
    return EXIT_REPORT_FAILED


def _config_error(exc: ConfigError) -> int:
    log = get_logger(LOGGER_NAME)
    variables = [name for name in exc.problems if name != "argv"]
    log.error(f"invalid timer configuration: {exc}", variables=variables)
    return EXIT_CONFIG_ERROR


def main(argv: Sequence[str] | None = None, *, environ: Mapping[str, str] | None = None) -> int:
    """Run the timer program; ``argv`` excludes the program name (and any ``timer`` subcommand).

    Returns the process exit code (see the ``EXIT_*`` constants).
    """
    env = os.environ if environ is None else environ
    try:
        args = parse_args(sys.argv[1:] if argv is None else list(argv))
    except ConfigError as exc:
        configure_logging("info")
        return _config_error(exc)
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    try:
        level = resolve_log_level(args, env)
    except ConfigError:
        level = "info"  # resolve_config reports the bad LOG_LEVEL along with any other problem
    configure_logging(level)
    try:
        config = resolve_config(args, env)
    except ConfigError as exc:
        return _config_error(exc)

    # Handlers go in before the start line is logged: once "timer started" is out, SIGTERM is handled.
    stop = StopRequest()
    stop.install(signal.SIGTERM, signal.SIGINT)
    return run(config, stop)
