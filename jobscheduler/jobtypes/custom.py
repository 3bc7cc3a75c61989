"""Plugin job types: what an installed package adds, submitted as ``custom_job { type, params }``.

A package declares an entry point in group ``jobscheduler.job_types`` naming an object (or a
class, called without arguments) that implements :class:`JobTypePlugin`. The service loads
each one at start (:func:`jobscheduler.jobtypes.load_plugins`) and wraps it in a
:class:`PluginHandler`, so a plugin type is a JobHandler like any built-in: ``custom_job.type``
picks it (the registry's dispatch key), ``custom_job.params`` (a google.protobuf.Struct, plain
JSON data by then) is bounded, validated against the plugin's JSON Schema (Draft 2020-12,
every violation a field path under ``custom_job.params``), then given to the plugin's ``parse``.
See README "Adding a job type" and examples/weather-plugin.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final, Protocol, runtime_checkable

import jsonschema

from jobscheduler.core.errors import FieldViolation, InvalidArgument, brief, clip
from jobscheduler.core.manifests import RenderContext
from jobscheduler.core.naming import dns1123_label_problem
from jobscheduler.core.registry import JobHandler

ENTRY_POINT_GROUP: Final = "jobscheduler.job_types"
REQUEST_FIELD: Final = "custom_job"
PARAMS_FIELD: Final = f"{REQUEST_FIELD}.params"
#: custom_job.params as compact JSON, in bytes (UTF-8), and its nesting (objects and lists).
MAX_PARAMS_BYTES: Final = 64 * 1024
MAX_PARAMS_DEPTH: Final = 16
#: Schema violations reported at most (the first ones, by path).
MAX_SCHEMA_VIOLATIONS: Final = 20
MAX_DESCRIPTION_CHARS: Final = 1024


class PluginError(Exception):
    """A plugin that cannot be loaded or used (the service refuses to start)."""


@runtime_checkable
class JobTypePlugin(Protocol):
    """What an entry point in ``jobscheduler.job_types`` provides.

    ``name``: the job type (``custom_job.type``, Job.type; a DNS-1123 label, it names the
    container). ``description``: one or two sentences for ListJobTypes. ``parameters_schema``:
    a JSON Schema (Draft 2020-12) for ``custom_job.params``, checked by the service before
    ``parse``. ``parse``: the plugin's own checks of schema-valid params, raising
    InvalidArgument with field paths under ``custom_job.params.``; it returns the validated
    value ``render`` gets. ``render``: the batch/v1 Job manifest, usually
    ``jobscheduler.core.manifests.job_manifest(ctx, image=..., command=..., env=...)``.
    Optional: ``version`` (default: the package's), ``default_images()`` (images the operator
    configured for the plugin, trusted outside ALLOWED_IMAGES).
    """

    name: str
    description: str
    parameters_schema: Mapping[str, Any]

    def parse(self, params: dict[str, Any]) -> Any: ...

    def render(self, params: Any, ctx: RenderContext) -> dict[str, Any]: ...


class PluginHandler(JobHandler[Any]):
    """A loaded plugin as the handler of its type (request field ``custom_job``)."""

    request_field = REQUEST_FIELD
    dispatch_key = "type"

    def __init__(self, plugin: Any, *, package: str, version: str) -> None:
        where = f"job type plugin from {package or 'an unknown package'}"
        if not isinstance(plugin, JobTypePlugin):
            missing = [
                n
                for n in ("name", "description", "parameters_schema", "parse", "render")
                if not hasattr(plugin, n)
            ]
            raise PluginError(
                f"{where} does not implement the plugin protocol (missing: {', '.join(missing)})"
            )
        name = plugin.name
        if not isinstance(name, str) or (problem := dns1123_label_problem(name)) is not None:
            raise PluginError(
                f"{where}: name {name!r} is not a valid job type name ({problem or 'not a string'})"
            )
        schema = plugin.parameters_schema
        if not isinstance(schema, Mapping):
            raise PluginError(f"{where}: {name}.parameters_schema must be a JSON Schema object")
        try:
            json.dumps(schema, allow_nan=False)  # ListJobTypes sends it as JSON text
        except (TypeError, ValueError) as exc:
            raise PluginError(f"{where}: {name}.parameters_schema is not JSON data ({exc})") from None
        try:
            jsonschema.Draft202012Validator.check_schema(schema)
        except jsonschema.SchemaError as exc:
            raise PluginError(
                f"{where}: {name}.parameters_schema is not a valid JSON Schema: {exc.message}"
            ) from None
        if (ref := _external_ref(schema)) is not None:
            raise PluginError(
                f"{where}: {name}.parameters_schema refers outside itself ($ref {ref!r}): nothing is fetched"
            )
        self.plugin = plugin
        self.job_type = name
        self.description = clip(str(plugin.description), MAX_DESCRIPTION_CHARS)
        self.package = package or "unknown"
        self.version = str(getattr(plugin, "version", "") or version)
        self._schema = dict(schema)
        # Only formats whose checks cost little: some checkers (iri, regex) take seconds or
        # recurse without bound on a 60 KB string.
        self._validator = _Validator(self._schema, format_checker=_CHEAP_FORMATS)

    def parameters_schema(self) -> dict[str, Any]:
        return self._schema

    def default_images(self) -> tuple[str, ...]:
        images = getattr(self.plugin, "default_images", None)
        return tuple(str(i) for i in images()) if callable(images) else ()

    def parse(self, params: Mapping[str, Any]) -> Any:
        raw = params.get("params")
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise InvalidArgument.field(PARAMS_FIELD, "must be an object")
        if (problem := params_problem(raw)) is not None:
            raise InvalidArgument.field(PARAMS_FIELD, problem)
        violations = schema_violations(self._validator, raw)
        if violations:
            raise InvalidArgument(violations)
        return self.plugin.parse(raw)

    def render(self, params: Any, ctx: RenderContext) -> dict[str, Any]:
        manifest: dict[str, Any] = self.plugin.render(params, ctx)
        return manifest


def _unique_items(
    validator: jsonschema.protocols.Validator, unique: Any, instance: Any, schema: Mapping[str, Any]
) -> Iterator[jsonschema.ValidationError]:
    """``uniqueItems`` in linear time (jsonschema's compares every pair of unhashable items: 3,000
    distinct objects, 38 KB of params, took 10 s). Items are compared as canonical JSON, which is
    JSON Schema's equality here: params come from a Struct (whole numbers already ints) or the
    stored request, and true is not 1."""
    if not unique or not validator.is_type(instance, "array"):
        return
    seen: set[str] = set()
    for item in instance:
        key = json.dumps(item, sort_keys=True, separators=(",", ":"))
        if key in seen:
            yield jsonschema.ValidationError(f"has non-unique elements ({clip(key, 64)} is repeated)")
            return
        seen.add(key)


#: Draft 2020-12 with a linear ``uniqueItems``.
_Validator: Final = jsonschema.validators.extend(  # type: ignore[no-untyped-call]
    jsonschema.Draft202012Validator, {"uniqueItems": _unique_items}
)


def params_problem(value: Any) -> str | None:
    """Why plain JSON data is too deep (over MAX_PARAMS_DEPTH) or too big (over MAX_PARAMS_BYTES
    as compact JSON), or None; the depth is checked first, without recursion."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children: Sequence[Any] | None = None
        if isinstance(item, dict):
            children = list(item.values())
        elif isinstance(item, list):
            children = item
        if children is None:
            continue
        if depth > MAX_PARAMS_DEPTH:
            return f"must be nested at most {MAX_PARAMS_DEPTH} levels deep"
        stack.extend((child, depth + 1) for child in children)
    try:
        size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
    except (TypeError, ValueError):
        return "must be JSON data"
    if size > MAX_PARAMS_BYTES:
        return f"must be at most {MAX_PARAMS_BYTES} bytes as JSON (got {size})"
    return None


def schema_violations(
    validator: jsonschema.protocols.Validator, params: dict[str, Any]
) -> list[FieldViolation]:
    """The first MAX_SCHEMA_VIOLATIONS schema errors as field paths under ``custom_job.params``
    (a missing required property: its own path)."""
    out: dict[tuple[str, str], None] = {}
    try:
        errors = list(itertools.islice(validator.iter_errors(params), MAX_SCHEMA_VIOLATIONS))
    except Exception as exc:  # RecursionError, an unresolvable reference: the params' fault or
        # the schema's, never an internal error of the service
        return [
            FieldViolation(PARAMS_FIELD, f"could not be checked against the type's schema ({brief(exc)})")
        ]
    for error in errors:
        path = field_path(PARAMS_FIELD, error.absolute_path)
        required = error.validator_value
        if error.validator == "required" and isinstance(error.instance, dict) and isinstance(required, list):
            for name in required:
                if isinstance(name, str) and name not in error.instance:
                    out[(field_path(path, [name]), "is required")] = None
        else:
            out[(path, clip(error.message, 200))] = None
    return [FieldViolation(f, d) for f, d in sorted(out)]


def field_path(base: str, parts: Sequence[Any] | Any) -> str:
    """``base.name`` for identifier-like keys, ``base[key]`` for others and list indexes."""
    path = base
    for part in parts:
        if isinstance(part, str) and part.isidentifier():
            path += f".{part}"
        else:
            path += f"[{clip(str(part), 64)}]"
    return path


#: The formats checked (FormatChecker's full set includes checks that take seconds).
_CHEAP_FORMATS: Final = jsonschema.FormatChecker(
    formats=("date", "time", "date-time", "email", "ipv4", "ipv6", "uuid")
)


def _external_ref(schema: Any, depth: int = 0) -> str | None:
    """The first ``$ref`` that is not a reference within the schema itself (``#...``), or None."""
    if depth > 64:
        return "(nested too deeply)"
    if isinstance(schema, Mapping):
        ref = schema.get("$ref")
        if isinstance(ref, str) and not ref.startswith("#"):
            return ref
        values: Any = schema.values()
    elif isinstance(schema, list):
        values = schema
    else:
        return None
    for value in values:
        if (found := _external_ref(value, depth + 1)) is not None:
            return found
    return None
