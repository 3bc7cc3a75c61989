"""Health-check targets: their rules, shared by the job handler (request fields) and the program
(the ``HEALTHCHECK_TARGETS`` variable), so whatever the handler renders the program accepts.

A target is plain data, as the request's ``HealthCheckTarget`` message decodes::

    {"name": "api", "http": {"url": "https://api:8443/healthz", "expected_status": [200]},
     "timeout_seconds": 5, "retries": 2}

with exactly one of ``http`` (``url``, ``expected_status``), ``tcp`` (``host``, ``port``) and
``grpc`` (``target`` as host:port, ``service``, ``tls``). Every value is hostile: sizes are
bounded before anything is iterated, and each problem names its field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from jobscheduler.core.errors import brief
from jobscheduler.core.naming import control_character_problem
from jobscheduler.core.urls import host_problem, split_host_port, url_problem

MAX_TARGETS: Final = 32
MAX_NAME_LENGTH: Final = 63
MAX_SERVICE_LENGTH: Final = 256
MAX_EXPECTED_STATUSES: Final = 16
DEFAULT_TIMEOUT_SECONDS: Final = 5
MAX_TIMEOUT_SECONDS: Final = 60
DEFAULT_RETRIES: Final = 2
MAX_RETRIES: Final = 10
#: Delay before a target's second attempt, doubling for each further one, at most PROBE_MAX_BACKOFF.
PROBE_BACKOFF_SECONDS: Final = 0.5
PROBE_MAX_BACKOFF_SECONDS: Final = 8.0
KINDS: Final = ("http", "tcp", "grpc")

_SERVICE: Final = re.compile(r"[A-Za-z0-9_.\-/]*")
#: (field path, what is wrong)
Problem = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    kind: str
    timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS
    retries: int = DEFAULT_RETRIES
    #: http: the URL and the statuses that count as healthy (empty: any 2xx).
    url: str = ""
    expected_status: tuple[int, ...] = ()
    #: tcp: host and port; grpc: host and port parsed from ``target`` (host:port).
    host: str = ""
    port: int = 0
    target: str = ""
    service: str = ""
    tls: bool = False

    @property
    def attempts(self) -> int:
        return 1 + self.retries

    def plain(self) -> dict[str, Any]:
        """The target as the plain data :func:`parse_targets` reads (defaults made explicit)."""
        probe: dict[str, Any]
        if self.kind == "http":
            probe = {"url": self.url, "expected_status": list(self.expected_status)}
        elif self.kind == "tcp":
            probe = {"host": self.host, "port": self.port}
        else:
            probe = {"target": self.target, "service": self.service, "tls": self.tls}
        return {
            "name": self.name,
            self.kind: probe,
            "timeout_seconds": self.timeout_seconds,
            "retries": self.retries,
        }


def probe_backoff(failed_attempts: int) -> float:
    """Delay after a target's ``failed_attempts``-th failed attempt."""
    return min(PROBE_MAX_BACKOFF_SECONDS, PROBE_BACKOFF_SECONDS * 2.0 ** (failed_attempts - 1))


def worst_case_seconds(target: Target) -> float:
    """How long probing ``target`` can take: every attempt timing out, plus the delays between."""
    return target.attempts * target.timeout_seconds + sum(probe_backoff(n) for n in range(1, target.attempts))


def _int(value: Any, default: int, limit: int, path: str, problems: list[Problem]) -> int:
    """A bounded count: 0 or absent is ``default``, negative or beyond ``limit`` a problem."""
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool):
        problems.append((path, "must be an integer"))
        return default
    if value < 0 or value > limit:
        problems.append((path, f"must be 0 (the default, {default}) to {limit} (got {value})"))
        return default
    return value or default


def _str(value: Any, path: str, problems: list[Problem]) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        problems.append((path, "must be a string"))
        return ""
    return value


def _http(probe: Mapping[str, Any], path: str, problems: list[Problem]) -> dict[str, Any]:
    url = _str(probe.get("url"), f"{path}.url", problems)
    if (problem := url_problem(url)) is not None:
        problems.append((f"{path}.url", problem))
    raw = probe.get("expected_status")
    statuses: list[int] = []
    if raw is None:
        pass
    elif not isinstance(raw, Sequence) or isinstance(raw, str | bytes):
        problems.append((f"{path}.expected_status", "must be a list of HTTP status codes"))
    elif len(raw) > MAX_EXPECTED_STATUSES:
        problems.append(
            (f"{path}.expected_status", f"at most {MAX_EXPECTED_STATUSES} statuses (got {len(raw)})")
        )
    else:
        for j, status in enumerate(raw):
            if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
                problems.append(
                    (f"{path}.expected_status[{j}]", f"must be an HTTP status 100-599 (got {brief(status)})")
                )
            elif status not in statuses:
                statuses.append(status)
    return {"url": url, "expected_status": tuple(statuses)}


def _tcp(probe: Mapping[str, Any], path: str, problems: list[Problem]) -> dict[str, Any]:
    host = _str(probe.get("host"), f"{path}.host", problems)
    if (problem := host_problem(host)) is not None:
        problems.append((f"{path}.host", problem))
    port = probe.get("port")
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        problems.append((f"{path}.port", f"must be a port 1-65535 (got {brief(port)})"))
        port = 0
    return {"host": host, "port": port}


def _grpc(probe: Mapping[str, Any], path: str, problems: list[Problem]) -> dict[str, Any]:
    target = _str(probe.get("target"), f"{path}.target", problems)
    host, port = "", 0
    if (problem := control_character_problem(target)) is not None:
        problems.append((f"{path}.target", problem))
    elif isinstance(parsed := split_host_port(target), str):
        problems.append((f"{path}.target", parsed))
    else:
        host, port = parsed
    service = _str(probe.get("service"), f"{path}.service", problems)
    if len(service) > MAX_SERVICE_LENGTH:
        problems.append(
            (f"{path}.service", f"must be at most {MAX_SERVICE_LENGTH} characters (got {len(service)})")
        )
    elif not _SERVICE.fullmatch(service):
        problems.append(
            (f"{path}.service", f"must be a gRPC service name of [A-Za-z0-9_./-] (got {brief(service)})")
        )
    tls = probe.get("tls", False)
    if tls is None:
        tls = False
    if not isinstance(tls, bool):
        problems.append((f"{path}.tls", "must be true or false"))
        tls = False
    return {"target": target, "host": host, "port": port, "service": service, "tls": tls}


_PROBES: Final = {"http": _http, "tcp": _tcp, "grpc": _grpc}


def _target(raw: Any, path: str, problems: list[Problem]) -> Target | None:
    if not isinstance(raw, Mapping):
        problems.append((path, "must be a target (name, one of http, tcp or grpc, timeout_seconds, retries)"))
        return None
    before = len(problems)
    name = _str(raw.get("name"), f"{path}.name", problems)
    if not name.strip():
        problems.append((f"{path}.name", "must not be empty"))
    elif len(name) > MAX_NAME_LENGTH:
        problems.append((f"{path}.name", f"must be at most {MAX_NAME_LENGTH} characters (got {len(name)})"))
    elif not name.isprintable():
        problems.append((f"{path}.name", "must not contain control characters"))
    kinds = [kind for kind in KINDS if raw.get(kind) is not None]
    fields: dict[str, Any] = {}
    if len(kinds) != 1:
        problems.append(
            (path, f"exactly one of http, tcp or grpc must be set (got {', '.join(kinds) or 'none'})")
        )
    elif not isinstance(probe := raw[kinds[0]], Mapping):
        problems.append((f"{path}.{kinds[0]}", "must be a probe message"))
    else:
        fields = _PROBES[kinds[0]](probe, f"{path}.{kinds[0]}", problems)
    timeout = _int(
        raw.get("timeout_seconds"),
        DEFAULT_TIMEOUT_SECONDS,
        MAX_TIMEOUT_SECONDS,
        f"{path}.timeout_seconds",
        problems,
    )
    retries = _int(raw.get("retries"), DEFAULT_RETRIES, MAX_RETRIES, f"{path}.retries", problems)
    if len(problems) > before:
        return None
    return Target(name=name, kind=kinds[0], timeout_seconds=timeout, retries=retries, **fields)


def parse_targets(raw: Any, path: str) -> tuple[tuple[Target, ...], list[Problem]]:
    """The targets of ``raw`` (a list of plain-data targets) and every problem found, each named
    by its path under ``path`` (``healthcheck_job.targets[0].http.url``)."""
    if not isinstance(raw, Sequence) or isinstance(raw, str | bytes):
        return (), [(path, "must be a list of targets")]
    if not raw:
        return (), [(path, "at least one target is required")]
    if len(raw) > MAX_TARGETS:
        return (), [(path, f"at most {MAX_TARGETS} targets (got {len(raw)})")]
    problems: list[Problem] = []
    targets: list[Target] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(raw):
        target = _target(item, f"{path}[{i}]", problems)
        if target is None:
            continue
        if target.name in seen:
            problems.append(
                (f"{path}[{i}].name", f"duplicates {path}[{seen[target.name]}].name {brief(target.name)}")
            )
            continue
        seen[target.name] = i
        targets.append(target)
    return (tuple(targets) if not problems else ()), problems
