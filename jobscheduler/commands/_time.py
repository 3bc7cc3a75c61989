"""Durations and times on the command line: ``30s``/``5m``/``1h30m`` in, kubectl-style ages out."""

from __future__ import annotations

import datetime as dt
import re
from typing import Final

_UNITS: Final = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_PART: Final = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
#: Longest duration or time string looked at (they are flag values; bound before parsing).
MAX_TEXT: Final = 64


class ValueProblem(ValueError):
    """A flag value that cannot be used; the message says what is wrong (no field name)."""


def parse_duration(text: str) -> float:
    """Seconds of ``90``, ``30s``, ``5m``, ``1h30m``, ``1.5h``, ``2d``, ``500ms``."""
    value = text.strip()
    if not value or len(value) > MAX_TEXT:
        raise ValueProblem(f"is not a duration like 30s, 5m or 1h30m (got {text[:MAX_TEXT]!r})")
    if re.fullmatch(r"\d+(?:\.\d+)?", value):
        return float(value)
    pos, total = 0, 0.0
    for m in _PART.finditer(value):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(value):
        raise ValueProblem(f"is not a duration like 30s, 5m or 1h30m (got {text!r})")
    return total


def parse_seconds(text: str) -> int:
    """A duration in whole seconds (rounded up: ``500ms`` is 1)."""
    seconds = parse_duration(text)
    whole = int(seconds)
    return whole + 1 if seconds > whole else whole


def parse_time(text: str) -> dt.datetime:
    """An RFC 3339 time (``2026-05-01T12:00:00Z``, ``...+02:00``); one without an offset is UTC."""
    value = text.strip()
    if not value or len(value) > MAX_TEXT:
        raise ValueProblem(f"is not an RFC 3339 time like 2026-05-01T12:00:00Z (got {text[:MAX_TEXT]!r})")
    try:
        parsed = dt.datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        raise ValueProblem(f"is not an RFC 3339 time like 2026-05-01T12:00:00Z (got {text!r})") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed


def human_duration(seconds: float) -> str:
    """kubectl's ages and durations (k8s.io/apimachinery duration.HumanDuration): ``45s``, ``3m12s``,
    ``15m``, ``5h2m``, ``20h``, ``3d4h``, ``40d``, ``2y30d``."""
    if seconds < -1:
        return "<invalid>"
    s = max(int(seconds), 0)
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        rest = s % 60
        return f"{minutes}m{rest}s" if rest else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h{rest}m" if rest else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    days = hours // 24
    if hours < 24 * 8:
        rest = hours % 24
        return f"{days}d{rest}h" if rest else f"{days}d"
    if days < 365 * 2:
        return f"{days}d"
    years = days // 365
    if days < 365 * 8:
        rest = days % 365
        return f"{years}y{rest}d" if rest else f"{years}y"
    return f"{years}y"


def parse_rfc3339(value: object) -> dt.datetime | None:
    """A time as protobuf JSON writes it (``2026-05-01T12:00:00.123Z``), or None."""
    if not isinstance(value, str) or not value or len(value) > MAX_TEXT:
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def age(value: object, now: dt.datetime | None = None) -> str:
    """How long ago a protobuf JSON time was, kubectl style; ``<none>`` when unset."""
    when = parse_rfc3339(value)
    if when is None:
        return "<none>"
    now = now or dt.datetime.now(dt.UTC)
    return human_duration((now - when).total_seconds())


def seconds_text(value: object) -> str:
    """A duration in seconds (the client's ``to_dict``; or protobuf JSON's ``"3.5s"``) in kubectl
    style; ``<none>`` when unset."""
    if isinstance(value, bool):
        return "<none>"
    if isinstance(value, int | float):
        return human_duration(float(value))
    if isinstance(value, str) and value.endswith("s") and len(value) <= MAX_TEXT:
        try:
            return human_duration(float(value[:-1]))
        except ValueError:
            return "<none>"
    return "<none>"
