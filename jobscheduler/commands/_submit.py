"""``jobscheduler submit TYPE``: the request from the flags, then (``--wait``) following the job."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from jobscheduler import client
from jobscheduler.commands import _values as values
from jobscheduler.commands._custom import custom_spec
from jobscheduler.commands._params import BadValue, build_spec, fields_of, pairs
from jobscheduler.commands._time import ValueProblem, parse_seconds
from jobscheduler.commands._values import INT32_MAX

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


def plugin_types_for(c: client.Client, job_type: str | None) -> dict[str, client.JobTypeInfo] | None:
    """The server's plugin types when ``job_type`` is not built in (perhaps a plugin's), else None."""
    if job_type is None or job_type.strip().lower() in client.JOB_TYPES:
        return None
    return {t.name: t for t in c.types() if not t.builtin}


def _zeros(spec_class: Any) -> dict[str, Any]:
    """Unset values of the parameter class's fields (proto3 does not send them): the base of a
    partial job (overrides of a template's or the original job's parameters)."""
    blank = {"int": 0, "float": 0.0, "bool": False, "str": "", "map": {}}
    return {name: blank[kind] for name, kind in fields_of(spec_class).items()}


def job_spec(
    args: argparse.Namespace,
    job_type: str,
    plugin_types: Mapping[str, client.JobTypeInfo] | None,
    *,
    name: str,
    partial: bool,
    named: bool = False,
) -> Any:
    """The job of ``job_type`` from ``--param`` and the timer's flags; ``plugin_types``: the server's
    plugin types (``Client.types()``), for a type not built in. ``partial``: parameters that are not
    given stay unset (an override), else the required ones must be given; either way ``named``
    (or not ``partial``) defaults the timer's name to ``name``."""
    key = job_type.strip().lower()
    spec_class = client.JOB_TYPES.get(key)
    plugin = (plugin_types or {}).get(job_type.strip())
    if spec_class is None and plugin is None:
        known = ", ".join(sorted({*client.JOB_TYPES, *(plugin_types or {})}))
        raise BadValue("TYPE", f"{job_type[:80]!r} is not a job type (known: {known})")
    params = values.repeated("--param", args.param)
    if key == "timer":
        params = _timer_params(args) + params
    else:
        given = [
            f"--{a.replace('_', '-')}" for a in ("duration", *_TIMER_FLAGS) if getattr(args, a) is not None
        ]
        if given or args.env:
            raise BadValue(given[0] if given else "--env", f"is a timer flag; use --param for {key} jobs")
    if spec_class is None:
        assert plugin is not None
        return custom_spec(plugin, params)
    defaults = _zeros(spec_class) if partial else {}
    if named or not partial:
        defaults["timer_name"] = name
    return build_spec(key, spec_class, params, defaults)


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """The job's scheduling flags as keyword arguments of ``Client.schedule`` (and fields of
    :class:`client.JobRequest`); the flags a command does not have are left out."""
    out: dict[str, Any] = {
        "labels": pairs(values.repeated("--label", args.label), "--label"),
        "priority": values.priority(args.priority),
        "queue": args.queue.strip(),
        "max_retries": values.integer("--retries", args.retries, 0, 10) or 0,
        "retry_backoff_seconds": values.seconds("--retry-backoff", args.retry_backoff) or 0,
        "timeout_seconds": values.seconds("--timeout", args.timeout, allow_zero=False) or 0,
        "ttl_seconds_after_finished": values.seconds("--ttl", args.ttl),
    }
    if hasattr(args, "after"):
        out["start_after"] = values.time("--after", args.after)
        out["delay_seconds"] = values.seconds("--delay", args.delay) or 0
        out["depends_on"] = [d for d in values.repeated("--depends-on", args.depends_on) if d]
    if hasattr(args, "template"):
        out["template"] = args.template.strip()
        out["template_version"] = (
            values.integer("--template-version", args.template_version, 1, INT32_MAX) or 0
        )
        if out["template_version"] and not out["template"]:
            raise BadValue("--template-version", "goes with --template NAME")
    return out


def job_request(
    args: argparse.Namespace,
    plugin_types: Mapping[str, client.JobTypeInfo] | None,
    *,
    job_type: str | None,
    default_name: str,
    partial: bool,
    named: bool = False,
) -> client.JobRequest:
    """The job a schedule or template makes (or a rerun's overrides), from the job's flags:
    ``job_type`` None leaves the job type to the template or the original job."""
    kwargs = settings(args)
    name = args.name if args.name is not None else default_name
    if job_type is None:
        spec = None
    else:
        spec = job_spec(args, job_type, plugin_types, name=name, partial=partial, named=named)
    if "depends_on" in kwargs:
        kwargs["depends_on"] = tuple(kwargs["depends_on"])
    return client.JobRequest(name=name, job=spec, **kwargs)


def schedule_arguments(
    args: argparse.Namespace, plugin_types: Mapping[str, client.JobTypeInfo] | None = None
) -> tuple[str, Any, dict[str, Any]]:
    """(name, job spec, keyword arguments of ``Client.schedule``) from submit's flags; with
    --template, TYPE may be left out and the given parameters override the template's."""
    kwargs = settings(args)
    template = kwargs.get("template", "")
    if args.job_type is None and not template:
        raise BadValue("TYPE", "give a job type (jobscheduler types lists them), or --template NAME")
    job_type = args.job_type
    default = "" if template else job_type.strip().lower()
    name = args.name if args.name is not None else default
    spec = None
    if job_type is not None:
        spec = job_spec(args, job_type, plugin_types, name=name, partial=bool(template))
    kwargs["request_id"] = args.request_id or None
    return name, spec, kwargs
