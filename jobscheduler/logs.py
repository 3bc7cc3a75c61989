"""Logging through structlog: JSON when stdout is not a terminal, console output when it is."""

from __future__ import annotations

import logging
import sys
from typing import Final

import structlog

#: Accepted LOG_LEVEL values (the reference README's set) and the stdlib level each maps to.
#: Python has no level below DEBUG that structlog filters on, so ``trace`` logs what ``debug`` does.
LEVELS: Final[dict[str, int]] = {
    "trace": logging.DEBUG,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def _logger_key(_: object, __: str, event: structlog.typing.EventDict) -> structlog.typing.EventDict:
    """Render get_logger's name under the conventional ``logger`` key."""
    if "logger_name" in event:
        event["logger"] = event.pop("logger_name")
    return event


def _trace_ids(_: object, __: str, event: structlog.typing.EventDict) -> structlog.typing.EventDict:
    """Add ``trace_id``/``span_id`` while a span is active (jobscheduler.tracing, when it is on).

    Looked up in sys.modules rather than imported: programs that never trace (the timer, the
    CLI) do not pay for importing OpenTelemetry."""
    tracing = sys.modules.get("jobscheduler.tracing")
    if tracing is not None and (ids := tracing.current_ids()) is not None:
        event.setdefault("trace_id", ids[0])
        event.setdefault("span_id", ids[1])
    return event


def configure_logging(level: str = "info", *, json: bool | None = None) -> None:
    """Configure structlog (and the stdlib root logger it renders through) once per process.

    ``json`` defaults to "stdout is not a terminal".
    """
    numeric = LEVELS.get(level.lower())
    if numeric is None:
        raise ValueError(f"unknown log level {level!r}; expected one of {', '.join(LEVELS)}")
    if json is None:
        json = not sys.stdout.isatty()
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            _logger_key,
            _trace_ids,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stdout),
        cache_logger_on_first_use=False,
    )
    # Libraries that log through the stdlib (grpc, kubernetes, aiohttp) go to stderr at WARNING+.
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=sys.stderr, force=True)


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    """A lazy logger: it takes the configuration in force when it logs, not when it was created,
    so module-level loggers follow ``configure_logging``."""
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(logger_name=name)
    return logger
