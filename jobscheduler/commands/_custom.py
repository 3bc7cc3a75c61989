"""``jobscheduler submit TYPE`` for a plugin type: ``--param`` values typed by its JSON Schema."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from jobscheduler import client
from jobscheduler.commands._params import MAX_PARAMS, BadValue, split_pair

FIELD = "custom_job.params"
_BOOLEANS = {
    "true": True,
    "1": True,
    "yes": True,
    "on": True,
    "false": False,
    "0": False,
    "no": False,
    "off": False,
}


def custom_spec(info: client.JobTypeInfo, params: Sequence[str]) -> client.CustomJob:
    """The plugin type's job from ``--param KEY=VALUE`` flags: each value as its property's schema
    type says (integer, number, boolean; an array or object as JSON; else the text). The service
    checks the rest against the schema, naming ``custom_job.params.KEY``."""
    if len(params) > MAX_PARAMS:
        raise BadValue(FIELD, f"at most {MAX_PARAMS} --param flags are accepted (got {len(params)})")
    properties = info.parameters_schema.get("properties")
    if not isinstance(properties, Mapping):
        properties = {}
    values: dict[str, Any] = {}
    for item in params:
        key, raw = split_pair(item, "--param")
        prop = properties.get(key)
        kinds = prop.get("type") if isinstance(prop, Mapping) else None
        values[key] = _typed(f"{FIELD}.{key}", kinds if isinstance(kinds, str | list) else None, raw)
    return client.CustomJob(info.name, values)


def _typed(field: str, kinds: str | list[Any] | None, raw: str) -> Any:
    wanted = [kinds] if isinstance(kinds, str) else list(kinds or [])
    if "string" in wanted or not wanted:
        return raw
    text = raw.strip()
    if "integer" in wanted:
        try:
            return int(text, 10)
        except ValueError:
            if wanted == ["integer"]:
                raise BadValue(field, f"must be an integer (got {raw[:80]!r})") from None
    if "number" in wanted:
        try:
            return float(text)
        except ValueError:
            if wanted == ["number"]:
                raise BadValue(field, f"must be a number (got {raw[:80]!r})") from None
    if "boolean" in wanted and text.lower() in _BOOLEANS:
        return _BOOLEANS[text.lower()]
    if "array" in wanted or "object" in wanted:
        try:
            return json.loads(text)
        except (ValueError, RecursionError):
            raise BadValue(
                field, f"must be JSON ({' or '.join(map(str, wanted))}; got {raw[:80]!r})"
            ) from None
    if "null" in wanted and text == "null":
        return None
    raise BadValue(field, f"must be {' or '.join(map(str, wanted))} (got {raw[:80]!r})")
