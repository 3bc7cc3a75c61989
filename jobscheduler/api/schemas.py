"""JSON Schemas of job-type messages, for ListJobTypes (a built-in type whose handler declares none)."""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor

_SCALARS: dict[int, dict[str, Any]] = {
    FieldDescriptor.TYPE_STRING: {"type": "string"},
    FieldDescriptor.TYPE_BYTES: {"type": "string", "contentEncoding": "base64"},
    FieldDescriptor.TYPE_BOOL: {"type": "boolean"},
    FieldDescriptor.TYPE_DOUBLE: {"type": "number"},
    FieldDescriptor.TYPE_FLOAT: {"type": "number"},
}
#: Well-known types as their JSON mapping.
_WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Struct": {"type": "object"},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array"},
    "google.protobuf.Duration": {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]+)?s$"},
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
}


def message_schema(descriptor: Descriptor, _seen: frozenset[str] = frozenset()) -> dict[str, Any]:
    """A Draft 2020-12 JSON Schema of ``descriptor``'s proto3 JSON form (field names as declared;
    every field optional, unknown ones refused; a message within itself: any object)."""
    if descriptor.full_name in _WELL_KNOWN:
        return dict(_WELL_KNOWN[descriptor.full_name])
    if descriptor.full_name in _seen:
        return {"type": "object"}
    seen = _seen | {descriptor.full_name}
    properties: dict[str, Any] = {}
    for fd in descriptor.fields:
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            value = _field_schema(fd.message_type.fields_by_name["value"], seen)
            properties[fd.name] = {"type": "object", "additionalProperties": value}
        elif fd.is_repeated:
            properties[fd.name] = {"type": "array", "items": _field_schema(fd, seen)}
        else:
            properties[fd.name] = _field_schema(fd, seen)
    return {
        "type": "object",
        "title": descriptor.full_name,
        "properties": properties,
        "additionalProperties": False,
    }


def _field_schema(fd: FieldDescriptor, seen: frozenset[str]) -> dict[str, Any]:
    if fd.message_type is not None:
        return message_schema(fd.message_type, seen)
    if fd.enum_type is not None:
        return {"type": "string", "enum": [v.name for v in fd.enum_type.values]}
    if fd.type in _SCALARS:
        return dict(_SCALARS[fd.type])
    return {"type": "integer"}
