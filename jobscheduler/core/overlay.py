"""One request laid over another: a job template under a ScheduleJob request, a finished job's
stored request under RerunJob's overrides.

The override's fields that are set replace the base's; proto3 gives its scalars no presence,
so a field at its zero value ("", 0, false, an empty list or map, an unset message) counts as
not set, and the base's stays. Labels merge key by key. Job parameters merge key by key,
recursively through maps and messages, when both name the same job type member (lists
replace whole); a different member replaces the base's parameters whole.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Final

from jobscheduler.core.errors import FieldViolation, InvalidArgument
from jobscheduler.core.model import ScheduleRequest


def _unset_values() -> dict[str, Any]:
    out: dict[str, Any] = {"name": "", "job_field": None}
    for f in dataclasses.fields(ScheduleRequest):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


#: Each field's unset value (the dataclass default; ``name`` and the job member have none).
_UNSET: Final[Mapping[str, Any]] = _unset_values()
#: A request that sets nothing.
NOTHING: Final = ScheduleRequest(name="", job_field=None, params={})
#: Fields laid over by their own rule, not replaced whole.
_MERGED: Final = frozenset({"labels", "job_field", "params"})


def is_unset(value: Any) -> bool:
    """A job parameter's value that proto3 cannot tell from unset: None, "", 0, false, [], {}."""
    if value is None or isinstance(value, bool):
        return value is not True
    if isinstance(value, int | float):
        return value == 0
    if isinstance(value, str | Mapping | list | tuple):
        return len(value) == 0
    return False


def merge_params(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override``'s set keys over ``base``: maps merge recursively, anything else replaces."""
    out = dict(base)
    for key, value in override.items():
        if is_unset(value):
            out.setdefault(key, value)
            continue
        current = out.get(key)
        if isinstance(value, Mapping) and isinstance(current, Mapping):
            out[key] = merge_params(current, value)
        else:
            out[key] = value
    return out


def overlay(base: ScheduleRequest, override: ScheduleRequest) -> ScheduleRequest:
    """``override`` laid over ``base`` (see the module's rules)."""
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(ScheduleRequest):
        if f.name in _MERGED:
            continue
        value = getattr(override, f.name)
        fields[f.name] = getattr(base, f.name) if value == _UNSET[f.name] else value
    fields["labels"] = {**base.labels, **override.labels}
    if override.job_field is None:
        fields["job_field"], fields["params"] = base.job_field, base.params
    elif override.job_field == base.job_field:
        fields["job_field"], fields["params"] = base.job_field, merge_params(base.params, override.params)
    else:
        fields["job_field"], fields["params"] = override.job_field, override.params
    return ScheduleRequest(**fields)


def refuse_set(request: ScheduleRequest, names: tuple[str, ...], where: str, why: str) -> None:
    """INVALID_ARGUMENT naming ``<where>.<name>`` for each of ``names`` that ``request`` sets."""
    violations = [FieldViolation(f"{where}.{n}", why) for n in names if getattr(request, n) != _UNSET[n]]
    if violations:
        raise InvalidArgument(violations)


def nested(exc: InvalidArgument, where: str, *, keep: tuple[str, ...] = ()) -> InvalidArgument:
    """``exc`` about a request that is field ``where`` of another: its fields as ``<where>.<field>``
    (``where`` alone stays; the fields in ``keep`` are the outer request's own)."""
    return InvalidArgument(
        v if v.field == where or v.field in keep else FieldViolation(f"{where}.{v.field}", v.description)
        for v in exc.violations
    )
