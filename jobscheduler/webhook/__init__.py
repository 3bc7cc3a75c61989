"""The webhook program run inside a webhook job's pod (``jobscheduler webhook`` /
``python -m jobscheduler.webhook``).

It sends one HTTP(S) request, retrying (with a doubling backoff) until the response status is
one of the expected ones or the attempts run out, and logs each attempt's status with a bounded,
redacted excerpt of the response body. Its configuration comes from the environment variables
the webhook job's handler sets (see :mod:`jobscheduler.webhook._config`).

Exit codes: :data:`EXIT_OK`, :data:`EXIT_CONFIG_ERROR`, :data:`EXIT_UNEXPECTED_STATUS`,
:data:`EXIT_CONNECT_FAILED`, :data:`EXIT_CANCELLED` (SIGTERM; SIGINT: 130).
"""

from __future__ import annotations

import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from types import FrameType
from typing import Any, Final

import structlog

from jobscheduler.logs import configure_logging, get_logger
from jobscheduler.webhook._config import ConfigError, WebhookConfig, backoff_delay, resolve_config
from jobscheduler.webhook._request import Outcome, attempt, redact

__all__ = [
    "ATTEMPT_MARGIN_SECONDS",
    "EXIT_CANCELLED",
    "EXIT_CONFIG_ERROR",
    "EXIT_CONNECT_FAILED",
    "EXIT_OK",
    "EXIT_UNEXPECTED_STATUS",
    "main",
]

#: A response with an expected status.
EXIT_OK: Final = 0
#: Missing or invalid configuration: nothing was sent (retrying cannot help: the Job fails at once).
EXIT_CONFIG_ERROR: Final = 2
#: Every attempt was answered, the last one with a status that is not expected.
EXIT_UNEXPECTED_STATUS: Final = 3
#: The last attempt got no response (connection refused, DNS, TLS, timeout).
EXIT_CONNECT_FAILED: Final = 4
#: Stopped by SIGTERM (128 + 15).
EXIT_CANCELLED: Final = 128 + signal.SIGTERM.value

LOGGER_NAME: Final = "jobscheduler.webhook"

#: ("signal", signum, None) from a signal handler, ("done", attempt number, outcome) from an attempt.
_Event = tuple[str, int, Outcome | None]
#: An attempt as a whole (connecting, the answer's headers and body) may take this much longer
#: than its timeout, which urllib applies to each socket operation (a body sent a byte at a time
#: would never time out).
ATTEMPT_MARGIN_SECONDS: Final = 1.0


class _Run:
    """The attempts, each in a worker thread, so that SIGTERM stops a request or a backoff at once."""

    def __init__(self, config: WebhookConfig, log: structlog.typing.FilteringBoundLogger) -> None:
        self.config = config
        self.log = log
        # SimpleQueue.put is reentrant: safe from a signal handler on the main thread.
        self.events: queue.SimpleQueue[_Event] = queue.SimpleQueue()

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.events.put(("signal", signum, None))

    def _send(self, number: int) -> None:
        try:
            self.events.put(("done", number, attempt(self.config)))
        except Exception as exc:  # a surprise from urllib must not bypass the exit-code contract
            self.events.put(("done", number, Outcome(None, f"{type(exc).__name__}: {exc}")))

    def _next(self, seconds: float, number: int | None = None) -> _Event | None:
        """A signal, or attempt ``number``'s outcome, within ``seconds``; None when time is up.
        The outcome of an attempt given up on earlier is dropped."""
        until = time.monotonic() + seconds
        while (left := until - time.monotonic()) > 0:
            try:
                event = self.events.get(timeout=left)
            except queue.Empty:
                return None
            if event[0] == "signal" or event[1] == number:
                return event
        return None

    def run(self) -> int:
        c = self.config
        outcome = Outcome(None, "not sent")
        for number in range(1, c.max_attempts + 1):
            # A daemon thread: one given up on (too slow) does not keep the process alive.
            threading.Thread(target=self._send, args=(number,), name="webhook-attempt", daemon=True).start()
            event = self._next(c.timeout_seconds + ATTEMPT_MARGIN_SECONDS, number)
            if event is not None and event[0] == "signal":
                return self._cancelled(event[1], number)
            no_answer = Outcome(None, f"no complete answer within {c.timeout_seconds:g} s")
            outcome = event[2] if event is not None and event[2] is not None else no_answer
            fields = {
                "attempt": number,
                "max_attempts": c.max_attempts,
                "method": c.method,
                "url": self._url(),
            }
            if outcome.status is not None and c.expected(outcome.status):
                self.log.info(
                    "webhook succeeded", http_status=outcome.status, body_excerpt=outcome.excerpt, **fields
                )
                return EXIT_OK
            if outcome.status is not None:
                self.log.warning(
                    "webhook answered with an unexpected status",
                    http_status=outcome.status,
                    expected_status=sorted(c.expected_status) or "2xx",
                    body_excerpt=outcome.excerpt,
                    **fields,
                )
            else:
                self.log.warning("webhook request failed", error=outcome.error, **fields)
            if number < c.max_attempts:
                delay = backoff_delay(c.retry_backoff_seconds, number)
                self.log.info("webhook retrying", retry_in_seconds=delay, attempt=number)
                if (event := self._next(delay)) is not None:
                    return self._cancelled(event[1], number)
        if outcome.status is None:
            self.log.error(
                "webhook failed: could not connect",
                attempts=c.max_attempts,
                error=outcome.error,
                exit_code=EXIT_CONNECT_FAILED,
            )
            return EXIT_CONNECT_FAILED
        self.log.error(
            "webhook failed: unexpected status",
            attempts=c.max_attempts,
            http_status=outcome.status,
            exit_code=EXIT_UNEXPECTED_STATUS,
        )
        return EXIT_UNEXPECTED_STATUS

    def _url(self) -> str:
        return redact(self.config.url, self.config.secret_headers.values())

    def _cancelled(self, signum: int, number: int) -> int:
        code = 128 + signum
        self.log.info("webhook cancelled", signal=signum, attempt=number, exit_code=code)
        return code


def run(config: WebhookConfig, *, install_signals: bool = True) -> int:
    """Send the webhook and return the exit code (logging must already be configured)."""
    runner = _Run(config, get_logger(LOGGER_NAME))
    previous: dict[signal.Signals, Any] = {}
    if install_signals and threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, runner.on_signal)
    try:
        return _start(runner)
    finally:  # the handlers go when the run ends (a test, or an embedding program, keeps its own)
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _start(runner: _Run) -> int:
    config = runner.config
    runner.log.info(
        "webhook started",
        job_id=config.job_id,
        method=config.method,
        url=runner._url(),
        headers=sorted(config.headers),
        # Names only: the values come from secrets.
        secret_headers=sorted(config.secret_headers),
        body_bytes=len(config.body.encode()),
        timeout_seconds=config.timeout_seconds,
        max_attempts=config.max_attempts,
    )
    return runner.run()


def main(argv: Sequence[str] | None = None, *, environ: Mapping[str, str] | None = None) -> int:
    """Run the webhook program (``argv``: after ``webhook``; it takes no arguments but --help)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args in (["-h"], ["--help"]):
        print(__doc__)
        return EXIT_OK
    env = os.environ if environ is None else environ
    configure_logging("info")
    if args:
        get_logger(LOGGER_NAME).error("the webhook program takes no arguments", arguments=len(args))
        return EXIT_CONFIG_ERROR
    try:
        config = resolve_config(env)
    except ConfigError as exc:
        get_logger(LOGGER_NAME).error(
            f"invalid webhook configuration: {redact(str(exc), ())}",
            variables=sorted(exc.problems),
            exit_code=EXIT_CONFIG_ERROR,
        )
        return EXIT_CONFIG_ERROR
    configure_logging(config.log_level)
    return run(config)
