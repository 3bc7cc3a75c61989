"""The webhook job: one HTTP(S) request, retried inside the job until an expected status.

Its container runs ``jobscheduler webhook`` (see :mod:`jobscheduler.webhook`) from the
service's own image (TIMER_IMAGE) unless the request names an allowed ``image``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from jobscheduler.core.errors import FieldViolation, InvalidArgument, brief
from jobscheduler.core.manifests import RenderContext, job_manifest
from jobscheduler.core.naming import control_character_problem, image_reference_problem, secret_name_problem
from jobscheduler.core.registry import JobHandler
from jobscheduler.core.urls import url_problem
from jobscheduler.webhook import ATTEMPT_MARGIN_SECONDS, EXIT_CONFIG_ERROR, EXIT_UNEXPECTED_STATUS
from jobscheduler.webhook import _config as program

METHODS: Final = program.METHODS
MAX_URL_LENGTH: Final = 2048
MAX_HEADERS: Final = 32
MAX_HEADER_NAME_LENGTH: Final = 128
MAX_HEADER_VALUE_LENGTH: Final = 4096
#: Names plus values of ``headers``, in bytes (UTF-8).
MAX_HEADERS_TOTAL_BYTES: Final = 16 * 1024
MAX_SECRET_HEADERS: Final = program.MAX_SECRET_HEADERS
MAX_BODY_BYTES: Final = 64 * 1024
DEFAULT_TIMEOUT_SECONDS: Final = 10
MAX_TIMEOUT_SECONDS: Final = 300
MAX_EXPECTED_STATUSES: Final = 32
DEFAULT_MAX_ATTEMPTS: Final = 3
MAX_ATTEMPTS: Final = 10
DEFAULT_RETRY_BACKOFF_SECONDS: Final = 1
MAX_RETRY_BACKOFF_SECONDS: Final = 60
#: Set by the client library or meaningful only hop by hop: a request may not set them.
_HOP_BY_HOP: Final = ("connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade")
RESERVED_HEADERS: Final = frozenset(("host", "content-length", "transfer-encoding", "expect", *_HOP_BY_HOP))
COMMAND: Final = ("jobscheduler", "webhook")

_HEADER_NAME: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_SECRET_KEY: Final = re.compile(r"[-._a-zA-Z0-9]+")


@dataclass(frozen=True, slots=True)
class WebhookParams:
    url: str
    method: str = "POST"
    headers: Mapping[str, str] = field(default_factory=dict)
    #: Header name -> (Secret name, key).
    headers_from_secrets: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    body: str = ""
    timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS
    expected_status: tuple[int, ...] = ()
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    retry_backoff_seconds: int = DEFAULT_RETRY_BACKOFF_SECONDS
    image: str = ""


def deadline_seconds(params: WebhookParams) -> int:
    """Every attempt's timeout (and the program's margin) plus every backoff between them."""
    backoffs = sum(
        program.backoff_delay(params.retry_backoff_seconds, n) for n in range(1, params.max_attempts)
    )
    per_attempt = params.timeout_seconds + ATTEMPT_MARGIN_SECONDS
    return int(params.max_attempts * per_attempt + backoffs + 0.999)


class WebhookHandler(JobHandler[WebhookParams]):
    job_type = "webhook"
    request_field = "webhook_job"
    description = (
        "Sends one HTTP(S) request (headers may come from Secrets), retried with backoff until the"
        " response status is an expected one; logs the status and a redacted excerpt of the body."
    )

    def __init__(self, default_image: str) -> None:
        self.default_image = default_image

    def default_images(self) -> tuple[str, ...]:
        return (self.default_image,)

    def image_override(self, params: WebhookParams) -> tuple[str, str] | None:
        if params.image and params.image != self.default_image:
            return (f"{self.request_field}.image", params.image)
        return None

    def parameters_schema(self) -> dict[str, Any]:
        header_map = {
            "type": "object",
            "maxProperties": MAX_HEADERS,
            "additionalProperties": {"type": "string"},
        }
        secret_ref = {
            "type": "object",
            "properties": {"name": {"type": "string"}, "key": {"type": "string"}},
            "required": ["name", "key"],
        }
        return {
            "type": "object",
            "properties": {
                "url": {"type": "string", "format": "uri", "maxLength": MAX_URL_LENGTH},
                "method": {"enum": list(METHODS), "default": "POST"},
                "headers": header_map,
                "headers_from_secrets": {
                    "type": "object",
                    "maxProperties": MAX_SECRET_HEADERS,
                    "additionalProperties": secret_ref,
                },
                "body": {"type": "string", "description": f"at most {MAX_BODY_BYTES} bytes (UTF-8)"},
                "timeout_seconds": {"type": "integer", "minimum": 1, "maximum": MAX_TIMEOUT_SECONDS},
                "expected_status": {
                    "type": "array",
                    "maxItems": MAX_EXPECTED_STATUSES,
                    "items": {"type": "integer", "minimum": 100, "maximum": 599},
                },
                "max_attempts": {"type": "integer", "minimum": 1, "maximum": MAX_ATTEMPTS},
                "retry_backoff_seconds": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": MAX_RETRY_BACKOFF_SECONDS,
                },
                "image": {"type": "string"},
            },
            "required": ["url"],
            "additionalProperties": False,
        }

    def parse(self, params: Mapping[str, Any]) -> WebhookParams:
        f = self.request_field
        violations: list[FieldViolation] = []

        def bad(name: str, description: str) -> None:
            violations.append(FieldViolation(f"{f}.{name}", description))

        url = params.get("url", "")
        if not isinstance(url, str):
            bad("url", "must be a string")
            url = ""
        elif (problem := _url_problem(url)) is not None:
            bad("url", problem)

        method = params.get("method", "") or "POST"
        if not isinstance(method, str) or method.upper() not in METHODS:
            bad("method", f"must be one of {', '.join(METHODS)} (got {brief(str(method))})")
            method = "POST"
        method = method.upper()

        headers = _headers(f"{f}.headers", params.get("headers"), violations)
        secrets = _secret_headers(f"{f}.headers_from_secrets", params.get("headers_from_secrets"), violations)
        lowered = {name.lower() for name in headers}
        for name in secrets:
            if name.lower() in lowered:
                bad(f"headers_from_secrets[{name}]", "is also in headers (header names are case-insensitive)")

        body = params.get("body", "")
        if not isinstance(body, str):
            bad("body", "must be a string")
            body = ""
        elif len(body) > MAX_BODY_BYTES or len(body.encode(errors="replace")) > MAX_BODY_BYTES:
            bad("body", f"must be at most {MAX_BODY_BYTES} bytes (UTF-8)")
        elif "\0" in body:
            bad("body", "must not contain NUL characters")

        timeout = _bounded(params, "timeout_seconds", DEFAULT_TIMEOUT_SECONDS, MAX_TIMEOUT_SECONDS, bad)
        attempts = _bounded(params, "max_attempts", DEFAULT_MAX_ATTEMPTS, MAX_ATTEMPTS, bad)
        backoff = _bounded(
            params, "retry_backoff_seconds", DEFAULT_RETRY_BACKOFF_SECONDS, MAX_RETRY_BACKOFF_SECONDS, bad
        )
        expected = _expected_status(params.get("expected_status"), bad)

        image = params.get("image", "") or ""
        if not isinstance(image, str):
            bad("image", "must be a string")
            image = ""
        elif image and (problem := image_reference_problem(image)) is not None:
            bad("image", problem)

        if violations:
            raise InvalidArgument(violations)
        return WebhookParams(
            url=url,
            method=method,
            headers=headers,
            headers_from_secrets=secrets,
            body=body,
            timeout_seconds=timeout,
            expected_status=expected,
            max_attempts=attempts,
            retry_backoff_seconds=backoff,
            image=image,
        )

    def render(self, params: WebhookParams, ctx: RenderContext) -> dict[str, Any]:
        env = {
            program.URL_ENV: params.url,
            program.METHOD_ENV: params.method,
            program.TIMEOUT_ENV: str(params.timeout_seconds),
            program.MAX_ATTEMPTS_ENV: str(params.max_attempts),
            program.RETRY_BACKOFF_ENV: str(params.retry_backoff_seconds),
            program.EXPECTED_STATUS_ENV: ",".join(str(s) for s in params.expected_status),
            "JOB_ID": ctx.job_id,
        }
        if params.headers:
            env[program.HEADERS_ENV] = json.dumps(dict(params.headers), separators=(",", ":"))
        if params.body:
            env[program.BODY_ENV] = params.body
        secret_env: dict[str, tuple[str, str]] = {}
        for n, name in enumerate(sorted(params.headers_from_secrets)):
            name_env, value_env = program.secret_header_env(n)
            env[name_env] = name
            secret_env[value_env] = params.headers_from_secrets[name]
        return job_manifest(
            ctx,
            image=params.image or self.default_image,
            command=COMMAND,
            env=env,
            secret_env=secret_env,
            active_deadline_seconds=deadline_seconds(params) + ctx.defaults.deadline_grace_seconds,
            # The program retries (max_attempts); a new pod would send the (maybe not idempotent)
            # request that many times again. An evicted pod is still replaced (DisruptionTarget).
            backoff_limit=0,
            permanent_exit_codes=(EXIT_CONFIG_ERROR, EXIT_UNEXPECTED_STATUS),
        )


def _url_problem(url: str) -> str | None:
    if (problem := url_problem(url)) is not None:
        return problem.replace(
            "carry credentials (user:password@)", "carry credentials (send them as headers_from_secrets)"
        )
    return None


def _header_name_problem(name: str) -> str | None:
    if len(name) > MAX_HEADER_NAME_LENGTH:
        return f"name must be at most {MAX_HEADER_NAME_LENGTH} characters"
    if not _HEADER_NAME.fullmatch(name):
        return "is not a valid header name (letters, digits and !#$%&'*+-.^_`|~)"
    if name.lower() in RESERVED_HEADERS:
        return "is set by the HTTP client itself and cannot be given"
    return None


def _headers(path: str, raw: Any, violations: list[FieldViolation]) -> dict[str, str]:
    raw = raw or {}
    if not isinstance(raw, Mapping):
        violations.append(FieldViolation(path, "must be a map of header names to values"))
        return {}
    if len(raw) > MAX_HEADERS:
        violations.append(FieldViolation(path, f"at most {MAX_HEADERS} headers (got {len(raw)})"))
        return {}
    total = sum(
        len(str(k).encode(errors="replace")) + len(str(v).encode(errors="replace")) for k, v in raw.items()
    )
    if total > MAX_HEADERS_TOTAL_BYTES:
        violations.append(
            FieldViolation(path, f"names and values must be at most {MAX_HEADERS_TOTAL_BYTES} bytes")
        )
        return {}
    out: dict[str, str] = {}
    seen: set[str] = set()
    for name, value in raw.items():
        name = str(name)
        where = f"{path}[{name}]"
        if (problem := _header_name_problem(name)) is not None:
            violations.append(FieldViolation(where, problem))
        elif name.lower() in seen:
            violations.append(FieldViolation(where, "is given twice (header names are case-insensitive)"))
        elif not isinstance(value, str):
            violations.append(FieldViolation(where, "value must be a string"))
        elif len(value) > MAX_HEADER_VALUE_LENGTH:
            violations.append(
                FieldViolation(where, f"value must be at most {MAX_HEADER_VALUE_LENGTH} characters")
            )
        elif (problem := control_character_problem(value.replace("\t", " "))) is not None:
            violations.append(FieldViolation(where, f"value {problem}"))
        elif any(ord(ch) > 0xFF for ch in value):
            violations.append(FieldViolation(where, "value must be Latin-1 text (as HTTP sends it)"))
        else:
            out[name] = value
        seen.add(name.lower())
    return out


def _secret_headers(path: str, raw: Any, violations: list[FieldViolation]) -> dict[str, tuple[str, str]]:
    raw = raw or {}
    if not isinstance(raw, Mapping):
        violations.append(FieldViolation(path, "must be a map of header names to secret key references"))
        return {}
    if len(raw) > MAX_SECRET_HEADERS:
        violations.append(FieldViolation(path, f"at most {MAX_SECRET_HEADERS} headers (got {len(raw)})"))
        return {}
    out: dict[str, tuple[str, str]] = {}
    seen: set[str] = set()
    for name, ref in raw.items():
        name = str(name)
        where = f"{path}[{name}]"
        if (problem := _header_name_problem(name)) is not None:
            violations.append(FieldViolation(where, problem))
            continue
        if name.lower() in seen:
            violations.append(FieldViolation(where, "is given twice (header names are case-insensitive)"))
            continue
        seen.add(name.lower())
        if not isinstance(ref, Mapping):
            violations.append(FieldViolation(where, "must be a secret key reference (name, key)"))
            continue
        secret, key = ref.get("name", ""), ref.get("key", "")
        if not isinstance(secret, str) or secret_name_problem(secret) is not None:
            violations.append(
                FieldViolation(
                    f"{where}.name", f"must be a Secret's name (DNS-1123 subdomain; got {brief(str(secret))})"
                )
            )
        elif (
            not isinstance(key, str) or len(key) > 253 or not _SECRET_KEY.fullmatch(key) or key in (".", "..")
        ):
            violations.append(
                FieldViolation(
                    f"{where}.key", f"must be a Secret's key (letters, digits, -._; got {brief(str(key))})"
                )
            )
        else:
            out[name] = (secret, key)
    return out


def _bounded(params: Mapping[str, Any], name: str, default: int, maximum: int, bad: Any) -> int:
    """A positive integer up to ``maximum``; 0 or absent: ``default``."""
    value = params.get(name, 0)
    if value is None or value == 0:
        return default
    if not isinstance(value, int) or isinstance(value, bool):
        bad(name, "must be an integer")
        return default
    if not 1 <= value <= maximum:
        bad(name, f"must be from 1 to {maximum} (got {_show(value)})")
        return default
    return value


def _expected_status(raw: Any, bad: Any) -> tuple[int, ...]:
    raw = raw if raw is not None else []
    if not isinstance(raw, list | tuple):
        bad("expected_status", "must be a list of HTTP statuses")
        return ()
    if len(raw) > MAX_EXPECTED_STATUSES:
        bad("expected_status", f"at most {MAX_EXPECTED_STATUSES} statuses (got {len(raw)})")
        return ()
    out: set[int] = set()
    for i, status in enumerate(raw):
        if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
            bad(f"expected_status[{i}]", f"must be an HTTP status from 100 to 599 (got {_show(status)})")
        else:
            out.add(status)
    return tuple(sorted(out))


def _show(value: Any) -> str:
    """A bounded rendering of a hostile value (str() of a huge int raises, or is huge)."""
    if isinstance(value, int) and not -(10**12) < value < 10**12:
        return "a number out of range"
    return brief(str(value))
