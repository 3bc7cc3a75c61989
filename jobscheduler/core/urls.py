"""http(s) URLs and hosts that a job may be given: bounded, no control characters or whitespace,
ASCII, a DNS name or an IP address as host (no zone), a port in 1-65535, no credentials, and
never a cloud metadata host. One set of rules for every job type that sends requests (the
timer's endpoint, webhooks, health-check targets), used by the handlers and their programs."""

from __future__ import annotations

import ipaddress
import re
import socket
import urllib.parse
from typing import Final

from jobscheduler.core.errors import brief
from jobscheduler.core.naming import control_character_problem, metadata_host_problem

MAX_URL_LENGTH: Final = 2048
MAX_HOST_LENGTH: Final = 253
_DNS_LABEL: Final = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
#: What a host may be made of before it is parsed (IPv6 zones and anything else refused).
_HOST_CHARACTERS: Final = re.compile(r"[A-Za-z0-9.:-]+")


def host_problem(host: str) -> str | None:
    """Why ``host`` is neither a DNS name nor an IP address, or None."""
    if not host:
        return "must name a host"
    if len(host) > MAX_HOST_LENGTH:
        return f"host must be at most {MAX_HOST_LENGTH} characters (got {len(host)})"
    if not _HOST_CHARACTERS.fullmatch(host):
        # ip_address() takes an IPv6 zone (%...) of any characters: NUL and spaces too.
        return f"host must be a DNS name or an IP address, without a zone (got {brief(host)})"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return metadata_host_problem(host)
    if _legacy_ipv4(host):
        # 0xa9fea9fe, 0251.0376.0251.0376, 2852039166: the C resolver reads these as addresses
        # (169.254.169.254 here), so they would get past the checks on addresses.
        return f"host must be a DNS name or an IP address in dotted-decimal form (got {brief(host)})"
    labels = host.removesuffix(".").split(".")
    if all(_DNS_LABEL.fullmatch(label) for label in labels) and not labels[-1].isdigit():
        return metadata_host_problem(host)
    return f"host must be a DNS name or an IP address (got {brief(host)})"


def url_problem(url: str) -> str | None:
    """Why ``url`` is not an acceptable http(s) URL (bounded, no control characters or whitespace,
    ASCII, a DNS name or IP as host but no metadata host, a port in 1-65535, no credentials), or None."""
    if not url:
        return "must not be empty"
    if len(url) > MAX_URL_LENGTH:
        return f"must be at most {MAX_URL_LENGTH} characters (got {len(url)})"
    if (problem := control_character_problem(url)) is not None:
        return problem
    if any(ch.isspace() for ch in url):
        return f"must be an http(s) URL without whitespace (got {brief(url)})"
    if not url.isascii():
        return "must be ASCII (percent-encode the path and query, give the host in punycode)"
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"is not a valid URL ({exc})"
    if parts.scheme not in ("http", "https"):
        return f"must be an http:// or https:// URL (got {brief(url)})"
    if "@" in parts.netloc:
        return "must not carry credentials (user:password@): they would show in the Job's spec"
    if (problem := host_problem(parts.hostname or "")) is not None:
        return problem
    if port == 0:
        return "port must be 1-65535"
    return None


def split_host_port(target: str) -> tuple[str, int] | str:
    """``host:port`` (``[v6]:port`` for IPv6) as (host, port), or what is wrong with it."""
    if len(target) > MAX_HOST_LENGTH + 8:
        return f"must be at most {MAX_HOST_LENGTH + 8} characters (got {len(target)})"
    host, colon, port_text = target.rpartition(":")
    if not colon or not port_text.isascii() or not port_text.isdigit() or len(port_text) > 5:
        return f"must be host:port (got {brief(target)})"
    port = int(port_text)
    if not 1 <= port <= 65535:
        return f"port must be 1-65535 (got {port})"
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            if ipaddress.ip_address(host).version == 6:
                return host, port
        except ValueError:
            pass
        return f"only an IPv6 address goes in brackets (got {brief(target)})"
    if ":" in host:
        return f"an IPv6 address must be in brackets, [addr]:port (got {brief(target)})"
    if (problem := host_problem(host)) is not None:
        return problem
    return host, port


def _legacy_ipv4(host: str) -> bool:
    """Whether the C library's inet_aton takes ``host`` as an IPv4 address (hex, octal or fewer
    than four parts) that ``ipaddress`` does not."""
    try:
        socket.inet_aton(host.removesuffix("."))
    except (OSError, ValueError):
        return False
    return True
