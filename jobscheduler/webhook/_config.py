"""The webhook program's configuration, from environment variables set by the webhook job's handler."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlsplit

METHODS: Final = ("GET", "POST", "PUT", "PATCH", "DELETE")
LOG_LEVELS: Final = ("trace", "debug", "info", "warn", "error")
DEFAULT_TIMEOUT_SECONDS: Final = 10.0
DEFAULT_MAX_ATTEMPTS: Final = 3
DEFAULT_RETRY_BACKOFF_SECONDS: Final = 1.0
#: Upper bound of one delay between attempts (the backoff doubles up to it).
MAX_BACKOFF_SECONDS: Final = 60.0

URL_ENV: Final = "WEBHOOK_URL"
METHOD_ENV: Final = "WEBHOOK_METHOD"
#: Plain headers: a JSON object of names to values.
HEADERS_ENV: Final = "WEBHOOK_HEADERS"
BODY_ENV: Final = "WEBHOOK_BODY"
TIMEOUT_ENV: Final = "WEBHOOK_TIMEOUT_SECONDS"
#: Comma-separated statuses; empty: any 2xx.
EXPECTED_STATUS_ENV: Final = "WEBHOOK_EXPECTED_STATUS"
MAX_ATTEMPTS_ENV: Final = "WEBHOOK_MAX_ATTEMPTS"
RETRY_BACKOFF_ENV: Final = "WEBHOOK_RETRY_BACKOFF_SECONDS"
#: Headers from secrets: WEBHOOK_SECRET_HEADER_<n>_NAME holds the header's name (plain),
#: WEBHOOK_SECRET_HEADER_<n> its value (from a secretKeyRef); n = 0, 1, ...
SECRET_HEADER_PREFIX: Final = "WEBHOOK_SECRET_HEADER_"
MAX_SECRET_HEADERS: Final = 16

_HEADER_NAME: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def secret_header_env(n: int) -> tuple[str, str]:
    """(variable holding the header's name, variable holding its value) of secret header ``n``."""
    return f"{SECRET_HEADER_PREFIX}{n}_NAME", f"{SECRET_HEADER_PREFIX}{n}"


class ConfigError(Exception):
    """Missing or invalid configuration: variable -> problem."""

    def __init__(self, problems: Mapping[str, str]) -> None:
        self.problems = dict(problems)
        super().__init__("; ".join(f"{k}: {v}" for k, v in self.problems.items()))


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    url: str
    method: str = "POST"
    headers: Mapping[str, str] = field(default_factory=dict)
    #: Header name -> value; the values are never logged and are redacted from the excerpt.
    secret_headers: Mapping[str, str] = field(default_factory=dict)
    body: str = ""
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    #: Empty: any 2xx.
    expected_status: frozenset[int] = frozenset()
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    retry_backoff_seconds: float = DEFAULT_RETRY_BACKOFF_SECONDS
    log_level: str = "info"
    job_id: str = ""

    def expected(self, status: int) -> bool:
        return status in self.expected_status if self.expected_status else 200 <= status < 300


def backoff_delay(initial: float, failed_attempts: int) -> float:
    """Delay after the ``failed_attempts``-th failure: initial, 2x, 4x, ... capped at MAX_BACKOFF_SECONDS."""
    return min(MAX_BACKOFF_SECONDS, initial * 2.0 ** min(failed_attempts - 1, 30))


def _header_value_ok(value: str) -> bool:
    """No CR, LF or NUL, and Latin-1 (what HTTP can send)."""
    return not any(ch in "\r\n\0" or ord(ch) > 0xFF for ch in value)


def _seconds(environ: Mapping[str, str], name: str, default: float, problems: dict[str, str]) -> float:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0 < value <= 3600):
        problems[name] = f"must be a positive number of seconds (at most 3600), got {raw[:40]!r}"
        return default
    return value


def _headers(environ: Mapping[str, str], problems: dict[str, str]) -> dict[str, str]:
    raw = environ.get(HEADERS_ENV, "").strip()
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and _HEADER_NAME.fullmatch(k) and isinstance(v, str) and _header_value_ok(v)
        for k, v in value.items()
    ):
        problems[HEADERS_ENV] = "must be a JSON object of header names to values (Latin-1, no CR, LF or NUL)"
        return {}
    return value


def _secret_headers(environ: Mapping[str, str], problems: dict[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for n in range(MAX_SECRET_HEADERS):
        name_env, value_env = secret_header_env(n)
        name = environ.get(name_env, "").strip()
        if not name:
            continue
        if not _HEADER_NAME.fullmatch(name):
            problems[name_env] = f"is not a valid header name: {name[:40]!r}"
        elif value_env not in environ:
            problems[value_env] = f"is not set (the value of header {name})"
        elif not _header_value_ok(environ[value_env]) or not environ[value_env].strip():
            # Never the value itself: it is a secret.
            problems[value_env] = f"header {name}: empty, not Latin-1, or has CR, LF or NUL"
        else:
            out[name] = environ[value_env].strip()
    return out


def resolve_config(environ: Mapping[str, str]) -> WebhookConfig:
    """The configuration from the environment; raises ConfigError listing every problem found."""
    problems: dict[str, str] = {}
    url = environ.get(URL_ENV, "").strip()
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError on a malformed port
        valid = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        valid = False
    if not valid or not url.isascii() or any(ch.isspace() or ch == "\0" for ch in url):
        problems[URL_ENV] = f"must be an http:// or https:// URL with a host, got {url[:80]!r}"
    method = (environ.get(METHOD_ENV, "").strip() or "POST").upper()
    if method not in METHODS:
        problems[METHOD_ENV] = f"must be one of {', '.join(METHODS)}, got {method[:20]!r}"
    expected: set[int] = set()
    for item in environ.get(EXPECTED_STATUS_ENV, "").split(","):
        if not item.strip():
            continue
        try:
            status = int(item.strip())
        except ValueError:
            status = 0
        if not 100 <= status <= 599:
            problems[EXPECTED_STATUS_ENV] = f"must be comma-separated statuses 100-599, got {item[:20]!r}"
        expected.add(status)
    raw_attempts = environ.get(MAX_ATTEMPTS_ENV, "").strip()
    attempts = DEFAULT_MAX_ATTEMPTS
    if raw_attempts:
        attempts = int(raw_attempts) if raw_attempts.isdigit() and len(raw_attempts) < 4 else 0
        if not 1 <= attempts <= 100:
            problems[MAX_ATTEMPTS_ENV] = f"must be an integer from 1 to 100, got {raw_attempts[:20]!r}"
    level = (environ.get("LOG_LEVEL", "").strip() or "info").lower()
    if level not in LOG_LEVELS:
        problems["LOG_LEVEL"] = f"must be one of {', '.join(LOG_LEVELS)}"
        level = "info"
    config = WebhookConfig(
        url=url,
        method=method,
        headers=_headers(environ, problems),
        secret_headers=_secret_headers(environ, problems),
        body=environ.get(BODY_ENV, ""),
        timeout_seconds=_seconds(environ, TIMEOUT_ENV, DEFAULT_TIMEOUT_SECONDS, problems),
        expected_status=frozenset(expected),
        max_attempts=attempts,
        retry_backoff_seconds=_seconds(environ, RETRY_BACKOFF_ENV, DEFAULT_RETRY_BACKOFF_SECONDS, problems),
        log_level=level,
        job_id=environ.get("JOB_ID", "").strip() or environ.get("HOSTNAME", "").strip(),
    )
    if problems:
        raise ConfigError(problems)
    return config
