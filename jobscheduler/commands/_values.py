"""Flag values checked before anything is sent: each problem names its flag (exit 4)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Final

from jobscheduler.commands._params import BadValue
from jobscheduler.commands._parser import PHASES, PRIORITIES
from jobscheduler.commands._time import ValueProblem, parse_seconds, parse_time

INT32_MAX: Final = 2**31 - 1
#: A repeated flag is looked at this many times at most.
MAX_REPEATS: Final = 256


def seconds(flag: str, text: str | None, *, allow_zero: bool = True) -> int | None:
    if text is None:
        return None
    try:
        value = parse_seconds(text)
    except ValueProblem as exc:
        raise BadValue(flag, str(exc)) from None
    if value > INT32_MAX or (value == 0 and not allow_zero):
        raise BadValue(flag, f"must be between {0 if allow_zero else 1}s and {INT32_MAX}s (got {text!r})")
    return value


def integer(flag: str, text: str | None, low: int, high: int) -> int | None:
    if text is None:
        return None
    try:
        value = int(text.strip()[:32], 10)
    except ValueError:
        raise BadValue(flag, f"must be an integer (got {text[:80]!r})") from None
    if not low <= value <= high:
        raise BadValue(flag, f"must be between {low} and {high} (got {value})")
    return value


def time(flag: str, text: str | None) -> dt.datetime | None:
    if text is None:
        return None
    try:
        return parse_time(text)
    except ValueProblem as exc:
        raise BadValue(flag, str(exc)) from None


def priority(text: str | None) -> str | None:
    if text is None:
        return None
    value = text.strip().lower()
    if value not in PRIORITIES:
        raise BadValue("--priority", f"must be one of {', '.join(PRIORITIES)} (got {text[:80]!r})")
    return value.upper()


def phases(items: Sequence[str]) -> list[str]:
    """``--phase running --phase queued,waiting`` -> ``["RUNNING", "QUEUED", "WAITING"]``."""
    out: list[str] = []
    for item in items[:MAX_REPEATS]:
        for part in item.split(",")[:MAX_REPEATS]:
            name = part.strip().lower().removeprefix("job_phase_")
            if not name:
                continue
            if name not in PHASES:
                raise BadValue("--phase", f"must be one of {', '.join(PHASES)} (got {part[:80]!r})")
            if name.upper() not in out:
                out.append(name.upper())
    return out


def repeated(flag: str, items: Sequence[str]) -> list[str]:
    if len(items) > MAX_REPEATS:
        raise BadValue(flag, f"at most {MAX_REPEATS} are accepted")
    return [item.strip() for item in items]
