"""Kubernetes name and label syntax, and job ids.

Pure checks that return a description of what is wrong (or None), so
callers can attach the request's field path.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import string
from typing import Final

_DNS1123_LABEL: Final = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1123_SUBDOMAIN: Final = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_NAME: Final = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_ENV_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

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
            f" (got {value!r})"
        )
    return None


def label_value_problem(value: str) -> str | None:
    if len(value) > 63:
        return f"must be at most 63 characters (got {len(value)})"
    if value and not _LABEL_NAME.fullmatch(value):
        return (
            "must consist of letters, digits, '-', '_' and '.', and start and end with a letter or digit"
            f" (got {value!r})"
        )
    return None


def label_key_problem(key: str) -> str | None:
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _DNS1123_SUBDOMAIN.fullmatch(prefix)):
        return f"prefix must be a DNS subdomain of at most 253 characters (got {prefix!r})"
    if not name:
        return "name part must not be empty"
    if len(name) > 63:
        return f"name part must be at most 63 characters (got {len(name)})"
    if not _LABEL_NAME.fullmatch(name):
        return (
            "name part must consist of letters, digits, '-', '_' and '.', and start and end with"
            f" a letter or digit (got {name!r})"
        )
    return None


def env_name_problem(name: str) -> str | None:
    if not _ENV_NAME.fullmatch(name):
        return f"must be a valid environment variable name ([A-Za-z_][A-Za-z0-9_]*; got {name!r})"
    return None
