"""Timer configuration: environment variables, each overridable by a command-line flag."""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, NoReturn
from urllib.parse import urlsplit

from jobscheduler.core.tracecontext import TRACEPARENT_ENV

#: LOG_LEVEL values the timer accepts (case-insensitive).
LOG_LEVELS: Final[tuple[str, ...]] = ("trace", "debug", "info", "warn", "error")

DEFAULT_LOG_LEVEL: Final = "info"
DEFAULT_REPORT_MAX_ATTEMPTS: Final = 5
#: A job's env may set REPORT_MAX_ATTEMPTS: bounded, so one job cannot become a flood of reports.
MAX_REPORT_ATTEMPTS: Final = 20
DEFAULT_REPORT_BACKOFF_SECONDS: Final = 0.5
DEFAULT_REPORT_TIMEOUT_SECONDS: Final = 5.0


@dataclass(frozen=True, slots=True)
class _Setting:
    """One configuration value: its environment variable and the flag that overrides it."""

    env: str
    flag: str
    help: str

    @property
    def dest(self) -> str:
        return self.flag.removeprefix("--").replace("-", "_")

    @property
    def label(self) -> str:
        return f"{self.env} ({self.flag})"


TIMER_NAME: Final = _Setting("TIMER_NAME", "--timer-name", "name of the timer (required)")
DURATION_SECONDS: Final = _Setting(
    "DURATION_SECONDS", "--duration-seconds", "how long to wait, in seconds (required, > 0)"
)
CONTROL_PLANE_ENDPOINT: Final = _Setting(
    "CONTROL_PLANE_ENDPOINT", "--control-plane-endpoint", "http(s) URL the status report is POSTed to"
)
LOG_LEVEL: Final = _Setting("LOG_LEVEL", "--log-level", f"one of {', '.join(LOG_LEVELS)} (default info)")
JOB_ID: Final = _Setting("JOB_ID", "--job-id", "job id put in the report (default: $HOSTNAME)")
REPORT_MAX_ATTEMPTS: Final = _Setting(
    "REPORT_MAX_ATTEMPTS", "--report-max-attempts", "attempts to deliver the completion report (default 5)"
)
REPORT_BACKOFF_SECONDS: Final = _Setting(
    "REPORT_BACKOFF_SECONDS",
    "--report-backoff-seconds",
    "initial delay between report attempts, doubling up to 8 s (default 0.5)",
)
REPORT_TIMEOUT_SECONDS: Final = _Setting(
    "REPORT_TIMEOUT_SECONDS", "--report-timeout-seconds", "timeout of one report attempt (default 5)"
)

SETTINGS: Final[tuple[_Setting, ...]] = (
    TIMER_NAME,
    DURATION_SECONDS,
    CONTROL_PLANE_ENDPOINT,
    LOG_LEVEL,
    JOB_ID,
    REPORT_MAX_ATTEMPTS,
    REPORT_BACKOFF_SECONDS,
    REPORT_TIMEOUT_SECONDS,
)


@dataclass(frozen=True, slots=True)
class TimerConfig:
    timer_name: str
    duration_seconds: float
    endpoint: str
    log_level: str
    job_id: str
    report_max_attempts: int
    report_backoff_seconds: float
    report_timeout_seconds: float
    #: The job's trace context (TRACEPARENT, set by the service); "" if none or malformed.
    traceparent: str = ""


class ConfigError(Exception):
    """Invalid or missing configuration; ``problems`` maps each variable to what is wrong with it."""

    def __init__(self, problems: dict[str, str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems.values()))


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise ConfigError({"argv": f"invalid command line: {message}"})


def build_parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(
        prog="jobscheduler timer",
        description=(
            "Wait for a duration, then POST a JSON status report to the control plane. "
            "Every option defaults to the environment variable named in its help."
        ),
    )
    for setting in SETTINGS:
        parser.add_argument(
            setting.flag, dest=setting.dest, default=None, help=f"{setting.help} [{setting.env}]"
        )
    return parser


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Parse the command line; raises ConfigError on a bad one (``--help`` exits through SystemExit)."""
    return build_parser().parse_args(list(argv))


def _raw(setting: _Setting, args: argparse.Namespace, environ: Mapping[str, str]) -> str | None:
    """The flag's value if given, else the environment variable's; an empty/blank value counts as unset."""
    value: str | None = getattr(args, setting.dest)
    if value is None:
        value = environ.get(setting.env)
    if value is None or not value.strip():
        return None
    return value.strip()


def resolve_log_level(args: argparse.Namespace, environ: Mapping[str, str]) -> str:
    """The configured log level, lower-cased; raises ConfigError when it is not one of LOG_LEVELS."""
    raw = _raw(LOG_LEVEL, args, environ)
    if raw is None:
        return DEFAULT_LOG_LEVEL
    level = raw.lower()
    if level not in LOG_LEVELS:
        raise ConfigError(
            {LOG_LEVEL.env: f"{LOG_LEVEL.label} must be one of {', '.join(LOG_LEVELS)}, got {raw!r}"}
        )
    return level


def _number(
    setting: _Setting,
    args: argparse.Namespace,
    environ: Mapping[str, str],
    problems: dict[str, str],
    *,
    default: float | None,
    allow_zero: bool = False,
) -> float:
    raw = _raw(setting, args, environ)
    if raw is None:
        if default is None:
            problems[setting.env] = f"{setting.label} is required (a positive number of seconds)"
            return math.nan
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    ok = math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        kind = "a non-negative" if allow_zero else "a positive"
        problems[setting.env] = f"{setting.label} must be {kind} number of seconds, got {raw!r}"
    return value


def _endpoint(args: argparse.Namespace, environ: Mapping[str, str], problems: dict[str, str]) -> str:
    setting = CONTROL_PLANE_ENDPOINT
    raw = _raw(setting, args, environ)
    if raw is None:
        problems[setting.env] = f"{setting.label} is required (an http:// or https:// URL)"
        return ""
    try:
        parts = urlsplit(raw)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname)
        _ = parts.port  # raises ValueError on a malformed port
    except ValueError:
        valid = False
    if not valid:
        problems[setting.env] = f"{setting.label} must be an http:// or https:// URL with a host, got {raw!r}"
    return raw


def _attempts(args: argparse.Namespace, environ: Mapping[str, str], problems: dict[str, str]) -> int:
    setting = REPORT_MAX_ATTEMPTS
    raw = _raw(setting, args, environ)
    if raw is None:
        return DEFAULT_REPORT_MAX_ATTEMPTS
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_REPORT_ATTEMPTS:
        problems[setting.env] = (
            f"{setting.label} must be an integer from 1 to {MAX_REPORT_ATTEMPTS}, got {raw!r}"
        )
    return value


def resolve_config(args: argparse.Namespace, environ: Mapping[str, str]) -> TimerConfig:
    """Build the configuration from parsed flags and the environment.

    Raises ConfigError listing every problem found.
    """
    problems: dict[str, str] = {}
    try:
        log_level = resolve_log_level(args, environ)
    except ConfigError as exc:
        problems.update(exc.problems)
        log_level = DEFAULT_LOG_LEVEL

    timer_name = _raw(TIMER_NAME, args, environ)
    if timer_name is None:
        problems[TIMER_NAME.env] = f"{TIMER_NAME.label} is required and must not be empty"
    duration = _number(DURATION_SECONDS, args, environ, problems, default=None)
    endpoint = _endpoint(args, environ, problems)
    attempts = _attempts(args, environ, problems)
    backoff = _number(
        REPORT_BACKOFF_SECONDS,
        args,
        environ,
        problems,
        default=DEFAULT_REPORT_BACKOFF_SECONDS,
        allow_zero=True,
    )
    timeout = _number(REPORT_TIMEOUT_SECONDS, args, environ, problems, default=DEFAULT_REPORT_TIMEOUT_SECONDS)
    job_id = _raw(JOB_ID, args, environ) or environ.get("HOSTNAME", "").strip()

    if problems:
        raise ConfigError(problems)
    assert timer_name is not None
    return TimerConfig(
        timer_name=timer_name,
        duration_seconds=duration,
        endpoint=endpoint,
        log_level=log_level,
        job_id=job_id,
        report_max_attempts=attempts,
        report_backoff_seconds=backoff,
        report_timeout_seconds=timeout,
        traceparent=environ.get(TRACEPARENT_ENV, "").strip(),
    )
