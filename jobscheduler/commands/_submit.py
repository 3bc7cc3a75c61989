"""``jobscheduler submit TYPE``: the request from the flags, then (``--wait``) following the job."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from jobscheduler import client
from jobscheduler.commands import _values as values
from jobscheduler.commands._custom import custom_spec
from jobscheduler.commands._params import BadValue, build_spec, pairs
from jobscheduler.commands._time import ValueProblem, parse_seconds

#: The timer's convenience flags: flag attribute -> parameter.
_TIMER_FLAGS = {
    "timer_name": "timer_name",
    "endpoint": "control_plane_endpoint",
    "image": "image",
    "log_level": "log_level",
}


def _timer_params(args: argparse.Namespace) -> list[str]:
    """The timer's convenience flags as ``--param`` items (given ``--param`` flags come after them,
    so they win)."""
    items: list[str] = []
    if args.duration is not None:
        try:
            items.append(f"duration_seconds={parse_seconds(args.duration)}")
        except ValueProblem as exc:
            raise BadValue("--duration", str(exc)) from None
    for attr, param in _TIMER_FLAGS.items():
        value = getattr(args, attr)
        if value is not None:
            items.append(f"{param}={value}")
    for key, value in pairs(args.env, "--env").items():
        items.append(f"env.{key}={value}")
    return items


def schedule_arguments(
    args: argparse.Namespace, plugin_types: Mapping[str, client.JobTypeInfo] | None = None
) -> tuple[str, Any, dict[str, Any]]:
    """(name, job spec, keyword arguments of ``Client.schedule``) from submit's flags;
    ``plugin_types``: the server's plugin types (``Client.types()``), for a TYPE not built in."""
    job_type = args.job_type.strip().lower()
    spec_class = client.JOB_TYPES.get(job_type)
    plugin = (plugin_types or {}).get(args.job_type.strip())
    if spec_class is None and plugin is None:
        known = ", ".join(sorted({*client.JOB_TYPES, *(plugin_types or {})}))
        raise BadValue("TYPE", f"{args.job_type[:80]!r} is not a job type (known: {known})")
    params = values.repeated("--param", args.param)
    if job_type == "timer":
        params = _timer_params(args) + params
    else:
        given = [
            f"--{a.replace('_', '-')}" for a in ("duration", *_TIMER_FLAGS) if getattr(args, a) is not None
        ]
        if given or args.env:
            raise BadValue(
                given[0] if given else "--env", f"is a timer flag; use --param for {job_type} jobs"
            )
    name = args.name if args.name is not None else job_type
    if spec_class is not None:
        spec: Any = build_spec(job_type, spec_class, params, {"timer_name": name})
    else:
        assert plugin is not None
        spec = custom_spec(plugin, params)
    retries = values.integer("--retries", args.retries, 0, 10)
    kwargs: dict[str, Any] = {
        "labels": pairs(values.repeated("--label", args.label), "--label"),
        "priority": values.priority(args.priority),
        "queue": args.queue.strip(),
        "start_after": values.time("--after", args.after),
        "delay_seconds": values.seconds("--delay", args.delay) or 0,
        "depends_on": [d for d in values.repeated("--depends-on", args.depends_on) if d],
        "max_retries": retries or 0,
        "retry_backoff_seconds": values.seconds("--retry-backoff", args.retry_backoff) or 0,
        "timeout_seconds": values.seconds("--timeout", args.timeout, allow_zero=False) or 0,
        "ttl_seconds_after_finished": values.seconds("--ttl", args.ttl),
        "request_id": args.request_id or None,
    }
    return name, spec, kwargs
