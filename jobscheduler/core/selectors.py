"""Kubernetes label selectors: parsed once, matched against a job's labels.

Grammar (as kubectl accepts it): comma-separated requirements, each one of
``key=value``, ``key==value``, ``key!=value``, ``key``, ``!key``,
``key in (a,b)``, ``key notin (a,b)``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from jobscheduler.core.errors import InvalidArgument
from jobscheduler.core.naming import label_key_problem, label_value_problem

_SET = re.compile(r"^\s*([^\s!=(),]+)\s+(in|notin)\s*\(([^()]*)\)\s*$")
_EQ = re.compile(r"^\s*([^\s!=(),]+)\s*(==|=|!=)\s*([^\s!=(),]*)\s*$")
_EXISTS = re.compile(r"^\s*(!?)\s*([^\s!=(),]+)\s*$")

Requirement = Callable[[Mapping[str, str]], bool]


@dataclass(frozen=True, slots=True)
class Selector:
    text: str
    requirements: tuple[Requirement, ...]

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(req(labels) for req in self.requirements)


def _split(text: str) -> list[str]:
    """Split on commas outside parentheses."""
    parts, depth, current = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return parts


def parse_selector(text: str, field: str = "label_selector") -> Selector:
    """Raise InvalidArgument naming ``field`` if ``text`` is not a valid selector."""
    requirements: list[Requirement] = []
    if not text.strip():
        return Selector(text, ())

    def bad(part: str, why: str) -> InvalidArgument:
        return InvalidArgument.field(field, f"invalid requirement {part.strip()!r}: {why}")

    def check_key(part: str, key: str) -> None:
        if (problem := label_key_problem(key)) is not None:
            raise bad(part, f"key {problem}")

    def check_value(part: str, value: str) -> None:
        if (problem := label_value_problem(value)) is not None:
            raise bad(part, f"value {problem}")

    for part in _split(text):
        if not part.strip():
            raise bad(part, "empty requirement")
        if m := _SET.match(part):
            key, op, raw = m.group(1), m.group(2), m.group(3)
            check_key(part, key)
            if not raw.strip():
                raise bad(part, "needs at least one value")
            values = frozenset(v.strip() for v in raw.split(","))
            for v in values:
                check_value(part, v)
            requirements.append(_in(key, values, negate=op == "notin"))
        elif m := _EQ.match(part):
            key, op, value = m.group(1), m.group(2), m.group(3)
            check_key(part, key)
            check_value(part, value)
            requirements.append(_in(key, frozenset({value}), negate=op == "!="))
        elif m := _EXISTS.match(part):
            check_key(part, m.group(2))
            requirements.append(_exists(m.group(2), negate=m.group(1) == "!"))
        else:
            raise bad(part, "expected key=value, key!=value, key in (...), key notin (...), key or !key")
    return Selector(text, tuple(requirements))


def _in(key: str, values: frozenset[str], *, negate: bool) -> Requirement:
    def requirement(labels: Mapping[str, str]) -> bool:
        return (labels.get(key) in values) != negate

    return requirement


def _exists(key: str, *, negate: bool) -> Requirement:
    def requirement(labels: Mapping[str, str]) -> bool:
        return (key in labels) != negate

    return requirement
