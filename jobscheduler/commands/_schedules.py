"""``rerun``, ``schedules ...`` and ``templates ...``: the requests from the flags, the answers as
tables or ``-o json|yaml|name``."""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from typing import Any

from jobscheduler import client
from jobscheduler.commands import _follow
from jobscheduler.commands import _output as output
from jobscheduler.commands import _values as values
from jobscheduler.commands._errors import EXIT_OK
from jobscheduler.commands._params import BadValue
from jobscheduler.commands._parser_schedules import POLICIES
from jobscheduler.commands._submit import job_request, plugin_types_for

#: Flags of the job (besides TYPE) that only mean something with a job to lay them on.
_JOB_FLAGS = (
    "param",
    "name",
    "duration",
    "timer_name",
    "endpoint",
    "image",
    "log_level",
    "env",
    "queue",
    "priority",
    "retries",
    "retry_backoff",
    "timeout",
    "ttl",
    "label",
    "template_version",
)
#: Finished jobs a schedule keeps: at most this many of each (Kubernetes has no bound; ours is
#: only a sanity check before sending).
MAX_HISTORY = 1000


def _job_flags_given(args: argparse.Namespace) -> list[str]:
    return [f"--{f.replace('_', '-')}" for f in _JOB_FLAGS if getattr(args, f, None) not in (None, "", [])]


def _rows(items: Iterable[client.Schedule | client.JobTemplate]) -> list[dict[str, Any]]:
    rows = []
    for item in items:
        row = item.to_dict()
        row["job_type"] = item.job.job_type
        rows.append(row)
    return rows


def _emit(
    items: list[client.Schedule] | list[client.JobTemplate], fmt: str | None, kind: str, many: bool
) -> int:
    rows = _rows(items)
    value = {f"{kind}s": rows} if many else rows[0]
    output.emit(value, fmt=fmt or "table", rows=rows, kind=kind, name_key="name")
    return EXIT_OK


# --- rerun ----------------------------------------------------------------------------------------


def _rerun(c: client.Client, args: argparse.Namespace) -> int:
    overrides = None
    given = _job_flags_given(args)
    if given:
        needs_type = any(f in given for f in ("--param", "--duration", "--timer-name", "--endpoint"))
        needs_type = needs_type or any(f in given for f in ("--image", "--log-level", "--env"))
        # (the parameters are the original job's type's: ask for it only when they are given)
        job_type = c.get(args.job_id).type if needs_type else None
        plugins = plugin_types_for(c, job_type)
        overrides = job_request(args, plugins, job_type=job_type, default_name="", partial=True)
    job = c.rerun(args.job_id, overrides, request_id=args.request_id or None)
    return _follow.submitted(c, job, args.output, follow=args.wait)


# --- schedules ------------------------------------------------------------------------------------


def _settings(args: argparse.Namespace, *, create: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if not create and args.cron is not None:
        out["cron"] = args.cron
    if args.time_zone is not None:
        out["time_zone"] = args.time_zone.strip()
    if args.concurrency_policy is not None:
        policy = args.concurrency_policy.strip().lower()
        if policy not in POLICIES:
            wanted = ", ".join(POLICIES)
            raise BadValue("--concurrency-policy", f"must be one of {wanted} (got {policy[:80]!r})")
        out["concurrency_policy"] = policy.upper()
    if args.starting_deadline is not None:
        out["starting_deadline_seconds"] = values.seconds("--starting-deadline", args.starting_deadline)
    if not create and args.no_starting_deadline:
        out["starting_deadline_seconds"] = None
    for flag, key in (("successful_history", "successful"), ("failed_history", "failed")):
        limit = values.integer(f"--{flag.replace('_', '-')}", getattr(args, flag), 0, MAX_HISTORY)
        if limit is not None:
            out[f"{key}_jobs_history_limit"] = limit
    if args.description is not None:
        out["description"] = args.description
    if create and args.suspend:
        out["suspend"] = True
    return out


def _schedule_job(c: client.Client, args: argparse.Namespace, *, required: bool) -> client.JobRequest | None:
    """The job a schedule makes, from TYPE (or --template) and the job's flags; None when neither
    TYPE nor --template is given and ``required`` is not set."""
    template = args.template.strip()
    if args.job_type is None and not template:
        given = _job_flags_given(args)
        if required or given:
            what = f"{given[0]} goes with a job: give" if given else "give"
            raise BadValue(
                "TYPE", f"{what} the job's TYPE (jobscheduler types lists them), or --template NAME"
            )
        return None
    plugins = plugin_types_for(c, args.job_type)
    default_name = "" if template else args.schedule
    return job_request(
        args, plugins, job_type=args.job_type, default_name=default_name, partial=bool(template)
    )


def _schedules(c: client.Client, args: argparse.Namespace) -> int:
    action, name, fmt = args.action, getattr(args, "schedule", ""), args.output
    if action == "list":
        found = list(c.list_schedules(name_prefix=args.name_prefix, owner=args.owner.strip()))
        return _emit(found, fmt, "schedule", many=True)
    if action == "create":
        options = _settings(args, create=True)
        job = _schedule_job(c, args, required=True)
        assert job is not None
        return _emit([c.create_schedule(name, args.cron, job, **options)], fmt, "schedule", False)
    if action == "update":
        changes = _settings(args, create=False)
        job = _schedule_job(c, args, required=False)
        if job is not None:
            changes["job"] = job
        if not changes:
            raise BadValue("NAME", "nothing to change: give a setting (--cron, --suspend, TYPE, ...)")
        return _emit([c.update_schedule(name, **changes)], fmt, "schedule", False)
    if action in ("suspend", "resume"):
        return _emit([c.update_schedule(name, suspend=action == "suspend")], fmt, "schedule", False)
    if action == "trigger":
        return _follow.submitted(c, c.trigger_schedule(name), fmt, follow=args.wait)
    if action == "delete":
        deleted = c.delete_schedule(name, cancel_jobs=args.cancel_jobs)
        if fmt in ("json", "yaml", "name"):
            rows = [deleted.schedule.to_dict()]
            output.emit(deleted.to_dict(), fmt=fmt, rows=rows, kind="schedule", name_key="name")
        else:
            cancelled = ", ".join(deleted.cancelled_job_ids)
            print(f"schedule/{name} deleted" + (f" (cancelled {cancelled})" if cancelled else ""))
        return EXIT_OK
    return _emit([c.get_schedule(name)], fmt, "schedule", False)


# --- templates ------------------------------------------------------------------------------------


def _templates(c: client.Client, args: argparse.Namespace) -> int:
    action, name, fmt = args.action, getattr(args, "template_name", ""), args.output
    if action == "list":
        return _emit(list(c.list_templates(name_prefix=args.name_prefix)), fmt, "template", many=True)
    if action == "get":
        version = values.integer("--version", args.version, 1, values.INT32_MAX) or 0
        return _emit([c.get_template(name, version=version)], fmt, "template", False)
    if action == "delete":
        versions = c.delete_template(name)
        if fmt in ("json", "yaml"):
            output.emit({"name": name, "versions": versions}, fmt=fmt, rows=[], kind="template")
        elif fmt == "name":
            print(name)
        else:
            print(f"template/{name} deleted ({versions} version{'' if versions == 1 else 's'})")
        return EXIT_OK
    job = None
    if args.job_type is not None:
        plugins = plugin_types_for(c, args.job_type)
        # (parameters may be left to the jobs made from it; the timer's name is the template's)
        job = job_request(args, plugins, job_type=args.job_type, default_name=name, partial=True, named=True)
    elif _job_flags_given(args):
        given = _job_flags_given(args)[0]
        raise BadValue("TYPE", f"{given} goes with a job: give its TYPE (the request is replaced as a whole)")
    if action == "create":
        assert job is not None  # (TYPE is required by the parser)
        made = c.create_template(name, job, description=args.description or "")
        return _emit([made], fmt, "template", False)
    return _emit([c.update_template(name, job, description=args.description)], fmt, "template", False)


def run(c: client.Client, args: argparse.Namespace) -> int:
    if args.command == "rerun":
        return _rerun(c, args)
    if args.command == "schedules":
        return _schedules(c, args)
    return _templates(c, args)
