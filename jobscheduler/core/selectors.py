"""Kubernetes label selectors: parsed once, matched against a job's labels.

Grammar (as kubectl accepts it): comma-separated requirements, each one of
``key=value``, ``key==value``, ``key!=value``, ``key``, ``!key``,
``key in (a,b)``, ``key notin (a,b)``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from jobscheduler.core.errors import InvalidArgument, brief
from jobscheduler.core.naming import label_key_problem, label_value_problem

# Matched against a stripped requirement (fullmatch): no leading or trailing \s*, whose
# overlap with the inner one (``\s*!?\s*``) made a long run of spaces quadratic.
_SET = re.compile(r"([^\s!=(),]+)\s+(in|notin)\s*\(([^()]*)\)")
_EQ = re.compile(r"([^\s!=(),]+)\s*(==|=|!=)\s*([^\s!=(),]*)")
_EXISTS = re.compile(r"(!?)\s*([^\s!=(),]+)")

Requirement = Callable[[Mapping[str, str]], bool]

#: A selector longer than this, or with more requirements, is refused before it is parsed.
MAX_SELECTOR_CHARS: Final = 4096
MAX_REQUIREMENTS: Final = 64


@dataclass(frozen=True, slots=True)
class Selector:
    text: str
    requirements: tuple[Requirement, ...]
    #: The requirements that need a key to have one of some values (``key=value``, ``key==value``,
    #: ``key in (...)``), as (key, values): an index can look these up instead of scanning.
    equalities: tuple[tuple[str, frozenset[str]], ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(req(labels) for req in self.requirements)


_DELIMITERS: Final = re.compile(r"[(),]")


def _split(text: str) -> list[str]:
    """Split on commas outside parentheses (linear: only the delimiters are visited)."""
    parts, depth, start = [], 0, 0
    for m in _DELIMITERS.finditer(text):
        ch = m.group()
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif depth == 0:
            parts.append(text[start : m.start()])
            start = m.end()
    parts.append(text[start:])
    return parts


def parse_selector(text: str, field: str = "label_selector") -> Selector:
    """Raise InvalidArgument naming ``field`` if ``text`` is not a valid selector."""
    requirements: list[Requirement] = []
    equalities: list[tuple[str, frozenset[str]]] = []
    if len(text) > MAX_SELECTOR_CHARS:
        raise InvalidArgument.field(
            field, f"must be at most {MAX_SELECTOR_CHARS} characters (got {len(text)})"
        )
    if not text.strip():
        return Selector(text, ())

    def bad(part: str, why: str) -> InvalidArgument:
        return InvalidArgument.field(field, f"invalid requirement {brief(part.strip())}: {why}")

    def check_key(part: str, key: str) -> None:
        if (problem := label_key_problem(key)) is not None:
            raise bad(part, f"key {problem}")

    def check_value(part: str, value: str) -> None:
        if (problem := label_value_problem(value)) is not None:
            raise bad(part, f"value {problem}")

    parts = _split(text)
    if len(parts) > MAX_REQUIREMENTS:
        raise InvalidArgument.field(field, f"at most {MAX_REQUIREMENTS} requirements (got {len(parts)})")
    for part in parts:
        stripped = part.strip()
        if not stripped:
            raise bad(part, "empty requirement")
        if m := _SET.fullmatch(stripped):
            key, op, raw = m.group(1), m.group(2), m.group(3)
            check_key(part, key)
            if not raw.strip():
                raise bad(part, "needs at least one value")
            values = frozenset(v.strip() for v in raw.split(","))
            for v in values:
                check_value(part, v)
            requirements.append(_in(key, values, negate=op == "notin"))
            if op == "in":
                equalities.append((key, values))
        elif m := _EQ.fullmatch(stripped):
            key, op, value = m.group(1), m.group(2), m.group(3)
            check_key(part, key)
            check_value(part, value)
            requirements.append(_in(key, frozenset({value}), negate=op == "!="))
            if op != "!=":
                equalities.append((key, frozenset({value})))
        elif m := _EXISTS.fullmatch(stripped):
            check_key(part, m.group(2))
            requirements.append(_exists(m.group(2), negate=m.group(1) == "!"))
        else:
            raise bad(part, "expected key=value, key!=value, key in (...), key notin (...), key or !key")
    return Selector(text, tuple(requirements), tuple(equalities))


def _in(key: str, values: frozenset[str], *, negate: bool) -> Requirement:
    def requirement(labels: Mapping[str, str]) -> bool:
        return (labels.get(key) in values) != negate

    return requirement


def _exists(key: str, *, negate: bool) -> Requirement:
    def requirement(labels: Mapping[str, str]) -> bool:
        return (key in labels) != negate

    return requirement
