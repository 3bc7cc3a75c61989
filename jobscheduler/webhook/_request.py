"""One webhook request over HTTP(S), and the redacted excerpt of its answer."""

from __future__ import annotations

import http.client
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Collection
from dataclasses import dataclass
from typing import Final

from jobscheduler.timer._report import NO_REDIRECTS  # a redirect is an answer, never followed
from jobscheduler.webhook._config import WebhookConfig

#: What the job's output shows of a response body, at most (characters, after redaction).
EXCERPT_CHARS: Final = 1024
#: What is read of a response body (the excerpt is redacted over this, then cut).
READ_BYTES: Final = 16 * 1024
REDACTED: Final = "[REDACTED]"
USER_AGENT: Final = "jobscheduler-webhook"

# key=value, key: value, "key": "value": a key at a word's start (linear: no quadratic
# backtracking over a long body), redacted when it names a credential.
_PAIR: Final = re.compile(r"""(?<![\w.-])(["']?)([\w.-]{1,128})\1[ \t]{0,8}[:=][ \t]{0,8}""")
_VALUE: Final = re.compile(r""""[^"]*"|'[^']*'|[^\s,;&}\]<>"']+""")
_CREDENTIAL: Final = re.compile(
    r"token|passw(?:or)?d|pwd|secret|api[_-]?key|auth|credential|session|cookie|private[_-]?key",
    re.IGNORECASE,
)
_BEARER: Final = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")


@dataclass(frozen=True, slots=True)
class Outcome:
    """One attempt: the status (None: no response), an error when it could not connect, the excerpt."""

    status: int | None
    error: str | None = None
    excerpt: str = ""


def redact(text: str, secrets: Collection[str]) -> str:
    """``text`` with each secret value, credential-looking key/value pair and bearer token redacted."""
    for secret in sorted(_forms(secrets), key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    text = _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    out: list[str] = []
    pos = 0
    while (pair := _PAIR.search(text, pos)) is not None:
        out.append(text[pos : pair.end()])
        pos = pair.end()
        if _CREDENTIAL.search(pair.group(2)) and (value := _VALUE.match(text, pos)) is not None:
            out.append(REDACTED)
            pos = value.end()
    out.append(text[pos:])
    return "".join(out)


def excerpt(raw: bytes, secrets: Collection[str], *, cut: bool = False) -> str:
    """The bounded, redacted excerpt of a response body (redacted before it is cut). ``cut``: the
    body went on past ``raw``, so it may end with the start of a secret, which no whole form
    matches: such an end is redacted too."""
    text = redact(raw.decode("utf-8", errors="replace"), secrets)
    if cut:
        text = _redact_cut_end(text, _forms(secrets))
    return text if len(text) <= EXCERPT_CHARS else text[:EXCERPT_CHARS] + "..."


def _forms(secrets: Collection[str]) -> set[str]:
    """Each secret as given, percent-encoded and JSON-escaped: the forms an endpoint most likely
    echoes it in."""
    return {f for s in secrets if s for f in (s, urllib.parse.quote(s, safe=""), json.dumps(s)[1:-1])}


def _redact_cut_end(text: str, forms: Collection[str]) -> str:
    """``text`` with an end that is the start (4 characters or more) of one of ``forms`` redacted."""
    for form in sorted(forms, key=len, reverse=True):
        head = form[:4]
        if len(head) < 4:
            continue
        i = text.find(head, max(0, len(text) - len(form)))
        while i != -1:
            if form.startswith(text[i:]):
                return text[:i] + REDACTED
            i = text.find(head, i + 1)
    return text


def _content_type(body: str) -> str:
    try:
        json.loads(body)
    except ValueError:
        return "text/plain; charset=utf-8"
    return "application/json"


def attempt(config: WebhookConfig) -> Outcome:
    """Send the request once; a response of any status is an Outcome with that status."""
    headers = {"User-Agent": USER_AGENT, **config.headers, **config.secret_headers}
    data = config.body.encode() if config.body else None
    if data is not None and not any(k.lower() == "content-type" for k in headers):
        headers["Content-Type"] = _content_type(config.body)
    request = urllib.request.Request(config.url, data=data, method=config.method, headers=headers)
    secrets = list(config.secret_headers.values())
    try:
        with NO_REDIRECTS.open(request, timeout=config.timeout_seconds) as response:
            status: int = response.status
            raw: bytes = response.read(READ_BYTES)
    except urllib.error.HTTPError as exc:
        try:
            raw = exc.read(READ_BYTES)
        except (OSError, http.client.HTTPException):
            raw = b""
        exc.close()
        return Outcome(exc.code, None, excerpt(raw, secrets, cut=len(raw) >= READ_BYTES))
    except urllib.error.URLError as exc:
        return Outcome(None, redact(f"{type(exc.reason).__name__}: {exc.reason}", secrets))
    except (OSError, http.client.HTTPException, ValueError) as exc:  # timeouts, resets, bad answers
        return Outcome(None, redact(f"{type(exc).__name__}: {exc}", secrets))
    return Outcome(status, None, excerpt(raw, secrets, cut=len(raw) >= READ_BYTES))
