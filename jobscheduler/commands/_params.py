"""``submit``'s job parameters: ``--param key=value`` (maps as ``--param env.NAME=value``) and the
convenience flags, checked against the job type's parameter class before anything is sent."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

#: Bounds on what is looked at, before any work (flag values are hostile too).
MAX_PARAMS: Final = 256
MAX_KEY: Final = 256
MAX_VALUE: Final = 64 * 1024


class BadValue(ValueError):
    """A flag value that cannot be used: ``field`` names it (``timer_job.duration_seconds``)."""

    def __init__(self, field: str, description: str) -> None:
        super().__init__(f"{field}: {description}")
        self.field = field
        self.description = description


def split_pair(text: str, what: str) -> tuple[str, str]:
    """``key=value`` -> (key, value); the value may contain ``=``."""
    if len(text) > MAX_KEY + MAX_VALUE:
        raise BadValue(what, f"is longer than {MAX_KEY + MAX_VALUE} characters")
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise BadValue(what, f"must be KEY=VALUE (got {text[:80]!r})")
    return key.strip(), value


def pairs(items: Iterable[str], what: str) -> dict[str, str]:
    """``--label k=v`` style flags as a dict (a repeated key: the last one wins)."""
    out: dict[str, str] = {}
    for count, item in enumerate(items, 1):
        if count > MAX_PARAMS:
            raise BadValue(what, f"at most {MAX_PARAMS} are accepted")
        key, value = split_pair(item, what)
        out[key] = value
    return out


def _kind(hint: Any) -> str:
    """``int``, ``str``, ``bool``, ``float`` or ``map`` for a parameter class field's type."""
    origin = typing.get_origin(hint) or hint
    if isinstance(origin, type) and issubclass(origin, Mapping):
        return "map"
    names: dict[Any, str] = {bool: "bool", int: "int", float: "float"}
    return names.get(hint, "str")


def fields_of(spec: type[Any]) -> dict[str, str]:
    """The parameters of a job type's class: name -> kind (see :func:`_kind`)."""
    hints = typing.get_type_hints(spec)
    return {f.name: _kind(hints.get(f.name, str)) for f in dataclasses.fields(spec)}


def _convert(field: str, kind: str, raw: str) -> Any:
    if kind == "int":
        try:
            return int(raw.strip(), 10)
        except ValueError:
            raise BadValue(field, f"must be an integer (got {raw[:80]!r})") from None
    if kind == "float":
        try:
            return float(raw.strip())
        except ValueError:
            raise BadValue(field, f"must be a number (got {raw[:80]!r})") from None
    if kind == "bool":
        lowered = raw.strip().lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        raise BadValue(field, f"must be true or false (got {raw[:80]!r})")
    return raw


def build_spec(
    job_type: str,
    spec: type[Any],
    params: Sequence[str],
    defaults: Mapping[str, Any] = {},
) -> Any:
    """The job type's parameter object from ``--param`` flags (and ``defaults`` for what they leave
    out): unknown names, malformed values and missing required parameters name the field."""
    prefix = f"{job_type}_job"
    kinds = fields_of(spec)
    values: dict[str, Any] = {}
    if len(params) > MAX_PARAMS:
        raise BadValue(prefix, f"at most {MAX_PARAMS} --param flags are accepted (got {len(params)})")
    for item in params:
        key, raw = split_pair(item, "--param")
        name, dot, sub = key.partition(".")
        kind = kinds.get(name)
        if kind is None:
            known = ", ".join(sorted(kinds))
            raise BadValue(f"{prefix}.{name}", f"is not a parameter of {job_type} jobs (they have: {known})")
        if kind == "map":
            if not dot or not sub:
                raise BadValue(f"{prefix}.{name}", f"is a map: give entries as --param {name}.KEY=VALUE")
            values.setdefault(name, {})[sub] = raw
            continue
        if dot:
            raise BadValue(f"{prefix}.{key}", f"{name} is not a map")
        values[name] = _convert(f"{prefix}.{name}", kind, raw)
    for name, value in defaults.items():
        if name in kinds and name not in values and value is not None:
            values[name] = value
    missing = [
        f.name
        for f in dataclasses.fields(spec)
        if f.name not in values
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise BadValue(f"{prefix}.{missing[0]}", f"is required (--param {missing[0]}=...)")
    return spec(**values)
