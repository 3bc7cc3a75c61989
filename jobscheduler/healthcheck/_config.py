"""The health-check program's configuration, from environment variables (the Job's env)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from jobscheduler.core.tracecontext import TRACEPARENT_ENV
from jobscheduler.core.urls import url_problem
from jobscheduler.healthcheck._targets import Target, parse_targets
from jobscheduler.timer._config import (
    DEFAULT_REPORT_BACKOFF_SECONDS,
    DEFAULT_REPORT_MAX_ATTEMPTS,
    DEFAULT_REPORT_TIMEOUT_SECONDS,
    LOG_LEVELS,
    ConfigError,
)

TARGETS_ENV: Final = "HEALTHCHECK_TARGETS"
#: The targets' JSON is refused unread beyond this many characters.
MAX_TARGETS_JSON: Final = 256 * 1024
DEFAULT_LOG_LEVEL: Final = "info"


@dataclass(frozen=True, slots=True)
class HealthCheckConfig:
    targets: tuple[Target, ...]
    endpoint: str
    log_level: str
    job_id: str
    job_name: str
    report_max_attempts: int
    report_backoff_seconds: float
    report_timeout_seconds: float
    traceparent: str = ""


def _get(environ: Mapping[str, str], name: str) -> str | None:
    value = environ.get(name)
    return value.strip() if value is not None and value.strip() else None


def resolve_log_level(environ: Mapping[str, str]) -> str:
    raw = _get(environ, "LOG_LEVEL")
    if raw is None:
        return DEFAULT_LOG_LEVEL
    if raw.lower() not in LOG_LEVELS:
        raise ConfigError(
            {"LOG_LEVEL": f"LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {raw[:64]!r}"}
        )
    return raw.lower()


def _number(
    environ: Mapping[str, str], name: str, default: float, problems: dict[str, str], *, zero: bool
) -> float:
    raw = _get(environ, name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
        problems[name] = f"{name} must be a {'non-negative' if zero else 'positive'} number, got {raw[:64]!r}"
    return value


def _targets(environ: Mapping[str, str], problems: dict[str, str]) -> tuple[Target, ...]:
    raw = _get(environ, TARGETS_ENV)
    if raw is None:
        problems[TARGETS_ENV] = f"{TARGETS_ENV} is required (a JSON list of targets)"
        return ()
    if len(raw) > MAX_TARGETS_JSON:
        problems[TARGETS_ENV] = (
            f"{TARGETS_ENV} must be at most {MAX_TARGETS_JSON} characters (got {len(raw)})"
        )
        return ()
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        problems[TARGETS_ENV] = f"{TARGETS_ENV} is not valid JSON ({str(exc)[:120]})"
        return ()
    targets, found = parse_targets(data, TARGETS_ENV)
    if found:
        problems[TARGETS_ENV] = "; ".join(f"{path} {what}" for path, what in found[:10])
    return targets


def resolve_config(environ: Mapping[str, str]) -> HealthCheckConfig:
    """The configuration; raises ConfigError naming each variable that is wrong."""
    problems: dict[str, str] = {}
    try:
        log_level = resolve_log_level(environ)
    except ConfigError as exc:
        problems.update(exc.problems)
        log_level = DEFAULT_LOG_LEVEL
    targets = _targets(environ, problems)
    endpoint = _get(environ, "CONTROL_PLANE_ENDPOINT") or ""
    if (problem := url_problem(endpoint)) is not None:
        problems["CONTROL_PLANE_ENDPOINT"] = f"CONTROL_PLANE_ENDPOINT {problem}"
    attempts_raw = _get(environ, "REPORT_MAX_ATTEMPTS")
    attempts = DEFAULT_REPORT_MAX_ATTEMPTS
    if attempts_raw is not None:
        try:
            attempts = int(attempts_raw)
        except ValueError:
            attempts = 0
        if not 1 <= attempts <= 100:
            problems["REPORT_MAX_ATTEMPTS"] = f"REPORT_MAX_ATTEMPTS must be 1-100, got {attempts_raw[:64]!r}"
    backoff = _number(environ, "REPORT_BACKOFF_SECONDS", DEFAULT_REPORT_BACKOFF_SECONDS, problems, zero=True)
    timeout = _number(environ, "REPORT_TIMEOUT_SECONDS", DEFAULT_REPORT_TIMEOUT_SECONDS, problems, zero=False)
    if problems:
        raise ConfigError(problems)
    return HealthCheckConfig(
        targets=targets,
        endpoint=endpoint,
        log_level=log_level,
        job_id=_get(environ, "JOB_ID") or _get(environ, "HOSTNAME") or "",
        job_name=(_get(environ, "JOB_NAME") or "")[:253],
        report_max_attempts=attempts,
        report_backoff_seconds=backoff,
        report_timeout_seconds=timeout,
        traceparent=(_get(environ, TRACEPARENT_ENV) or ""),
    )
