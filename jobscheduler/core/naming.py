"""Kubernetes name and label syntax, and job ids.

Pure checks that return a description of what is wrong (or None), so
callers can attach the request's field path.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import re
import secrets
import string
from typing import Final

from jobscheduler.core.errors import brief

_DNS1123_LABEL: Final = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1123_SUBDOMAIN: Final = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_NAME: Final = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_ENV_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_ENV_NAME_LENGTH: Final = 256
#: Invisible or direction-changing Unicode (zero-width characters, bidi marks, embeddings,
#: overrides and isolates, line and paragraph separators, BOM) and lone surrogates: text that
#: reads as something other than what it is in a log, a terminal or a URL.
_INVISIBLE: Final = r"\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\ud800-\udfff"
#: C0 controls (NUL included), DEL, C1 controls and the invisible characters above.
_CONTROL: Final = re.compile(rf"[\x00-\x1f\x7f-\x9f{_INVISIBLE}]")
#: The same, but tab, line feed and carriage return allowed (multi-line values).
_CONTROL_BUT_WHITESPACE: Final = re.compile(rf"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f{_INVISIBLE}]")

#: Environment variables no request may set, for any job type: they change how the job's
#: program (or the dynamic loader, interpreter or shell starting it) runs, where it finds
#: code, certificates or its home, or what the service and Kubernetes set themselves. On the
#: local backend the job runs as the server's user, so each of these is code execution there;
#: on Kubernetes they would run code in the job's container past ALLOWED_IMAGES. Compared
#: case-insensitively. Job types add their own (e.g. the timer's TIMER_NAME).
RESERVED_ENV_NAMES: Final = frozenset(
    {
        "PATH", "HOME", "TMPDIR", "TMP", "TEMP", "SHELL", "USER", "LOGNAME", "IFS", "ENV", "BASH_ENV",
        "CDPATH", "PS4", "SHELLOPTS", "BASHOPTS", "GLOBIGNORE", "BROWSER", "EDITOR", "VISUAL", "PAGER",
        "PERL5OPT", "PERL5LIB", "PERLLIB", "RUBYOPT", "RUBYLIB", "NODE_OPTIONS", "NODE_PATH",
        "GCONV_PATH", "LOCPATH", "NLSPATH", "HOSTALIASES", "RESOLV_HOST_CONF", "GLIBC_TUNABLES",
        "MALLOC_CHECK_", "VIRTUAL_ENV", "CONDA_PREFIX", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
        "JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS", "CLASSPATH", "PROMPT_COMMAND",
        "TRACEPARENT", "TRACESTATE",  # the job's trace context: set by the service (core.tracecontext)
    }
)  # fmt: skip
#: Name prefixes no request may use (same reasons; e.g. LD_PRELOAD, PYTHONPATH, SSL_CERT_FILE).
RESERVED_ENV_PREFIXES: Final = (
    "LD_", "DYLD_", "PYTHON", "JOBSCHEDULER_", "KUBERNETES_", "SSL_CERT_", "GRPC_", "GIT_", "BASH_FUNC_",
)  # fmt: skip

JOB_ID_PREFIX: Final = "job-"
_JOB_ID_ALPHABET: Final = string.digits + string.ascii_lowercase
_JOB_ID_SUFFIX_LENGTH: Final = 10


def derived_job_id(*parts: str) -> str:
    """A job id that is a function of ``parts``: ``job-`` + 10 base32 characters of their SHA-256.

    The same parts give the same Kubernetes name on any replica, so creating it is
    create-if-absent (request ids, retries)."""
    raw = hashlib.sha256("\0".join(parts).encode()).digest()
    return JOB_ID_PREFIX + base64.b32encode(raw).decode().lower()[:_JOB_ID_SUFFIX_LENGTH]


def new_job_id() -> str:
    """``job-`` + 10 random lowercase alphanumerics: a valid DNS-1123 label, the Kubernetes Job's name."""
    n = secrets.randbits(52)  # 36**10 > 2**51: every suffix value reachable, close to uniform
    digits = []
    for _ in range(_JOB_ID_SUFFIX_LENGTH):
        n, d = divmod(n, 36)
        digits.append(_JOB_ID_ALPHABET[d])
    return JOB_ID_PREFIX + "".join(digits)


def dns1123_label_problem(value: str) -> str | None:
    if not value:
        return "must not be empty"
    if len(value) > 63:
        return f"must be at most 63 characters (got {len(value)})"
    if not _DNS1123_LABEL.fullmatch(value):
        return (
            "must consist of lowercase letters, digits and '-', and start and end with a letter or digit"
            f" (got {brief(value)})"
        )
    return None


def label_value_problem(value: str) -> str | None:
    if len(value) > 63:
        return f"must be at most 63 characters (got {len(value)})"
    if value and not _LABEL_NAME.fullmatch(value):
        return (
            "must consist of letters, digits, '-', '_' and '.', and start and end with a letter or digit"
            f" (got {brief(value)})"
        )
    return None


def label_key_problem(key: str) -> str | None:
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _DNS1123_SUBDOMAIN.fullmatch(prefix)):
        return f"prefix must be a DNS subdomain of at most 253 characters (got {brief(prefix)})"
    if not name:
        return "name part must not be empty"
    if len(name) > 63:
        return f"name part must be at most 63 characters (got {len(name)})"
    if not _LABEL_NAME.fullmatch(name):
        return (
            "name part must consist of letters, digits, '-', '_' and '.', and start and end with"
            f" a letter or digit (got {brief(name)})"
        )
    return None


def env_name_problem(name: str) -> str | None:
    if len(name) > MAX_ENV_NAME_LENGTH:
        return f"name must be at most {MAX_ENV_NAME_LENGTH} characters (got {len(name)})"
    if not _ENV_NAME.fullmatch(name):
        return f"must be a valid environment variable name ([A-Za-z_][A-Za-z0-9_]*; got {brief(name)})"
    return None


def reserved_env_problem(name: str) -> str | None:
    """Why no request may set the environment variable ``name`` (see RESERVED_ENV_NAMES), or None."""
    upper = name.upper()
    if upper in RESERVED_ENV_NAMES:
        return "is reserved: it changes how the job's program runs or what the service sets itself"
    for prefix in RESERVED_ENV_PREFIXES:
        if upper.startswith(prefix):
            return f"is reserved: names starting with {prefix} change how the job's program runs"
    return None


def control_character_problem(value: str, *, multiline: bool = False) -> str | None:
    """A description if ``value`` holds NUL or another control character (with ``multiline``,
    tab, line feed and carriage return are allowed), else None. Strings that reach a process,
    an annotation or a URL must pass this."""
    match = (_CONTROL_BUT_WHITESPACE if multiline else _CONTROL).search(value)
    if match is None:
        return None
    return f"must not contain control characters (found {match.group()!r} at position {match.start()})"


#: Host names of cloud instance-metadata services (their addresses are link-local).
_METADATA_HOSTS: Final = frozenset({"metadata", "metadata.google.internal", "metadata.azure.internal"})


def metadata_host_problem(host: str) -> str | None:
    """Why a job may not send requests to ``host``, or None: link-local addresses (169.254.0.0/16,
    fe80::/10, where cloud instance metadata and its credentials are served) and metadata host
    names. A job's requests come from the cluster (or locally, from the service's own machine),
    not from the caller. (A DNS name resolving there is for an egress NetworkPolicy to stop.)"""
    name = host.strip("[]").lower().removesuffix(".")
    if name in _METADATA_HOSTS:
        return f"must not be a cloud metadata host (got {name!r})"
    try:
        address = ipaddress.ip_address(name.split("%", 1)[0])
    except ValueError:
        return None
    mapped = getattr(address, "ipv4_mapped", None)
    if address.is_link_local or (mapped is not None and mapped.is_link_local):
        return f"must not be a link-local address, where instance metadata is served (got {name})"
    return None


def secret_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a Secret's name (a DNS-1123 subdomain), or None."""
    if not name or len(name) > 253:
        return "must be a Secret's name (1-253 characters)"
    for part in name.split("."):
        if (problem := dns1123_label_problem(part)) is not None:
            return f"must be a Secret's name (a DNS-1123 subdomain): {problem}"
    return None


MAX_IMAGE_REFERENCE_LENGTH: Final = 512
# registry/repo[:tag][@digest]; deliberately simple, containerd rejects the rest.
_IMAGE_REF: Final = re.compile(
    r"[a-z0-9]([a-z0-9._-]*[a-z0-9])?(:[0-9]+)?"  # registry host or first path component
    r"(/[a-z0-9]([a-z0-9._-]*[a-z0-9])?)*"  # more path components
    r"(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"  # tag
    r"(@sha256:[0-9a-f]{64})?"  # digest
)


def image_reference_problem(image: str) -> str | None:
    """Why ``image`` is not a container image reference (``registry/repo[:tag][@digest]``), or None."""
    if len(image) > MAX_IMAGE_REFERENCE_LENGTH or not _IMAGE_REF.fullmatch(image):
        return f"is not a valid container image reference (got {brief(image)})"
    return None
