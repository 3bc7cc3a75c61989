"""Per-RPC context: the request id and the fields of the RPC's one log line."""

from __future__ import annotations

import contextvars
from typing import Any

_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
_fields: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "rpc_log_fields", default=None
)


def begin(request_id: str) -> dict[str, Any]:
    """Start an RPC's context; returns the dict its log line is built from."""
    _request_id.set(request_id)
    fields: dict[str, Any] = {}
    _fields.set(fields)
    return fields


def current_request_id() -> str:
    return _request_id.get()


def log_field(**values: Any) -> None:
    """Add fields (job_id, error, ...) to the current RPC's log line."""
    fields = _fields.get()
    if fields is not None:
        fields.update(values)
