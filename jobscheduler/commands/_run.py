"""Runs a parsed client command: one client, one answer, errors as one line and an exit code."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from jobscheduler import client
from jobscheduler.commands import _connect, _follow, _schedules
from jobscheduler.commands import _output as output
from jobscheduler.commands import _values as values
from jobscheduler.commands._errors import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_INVALID,
    EXIT_OK,
    EXIT_USAGE,
    describe,
    exit_code,
    fail,
)
from jobscheduler.commands._params import BadValue
from jobscheduler.commands._submit import plugin_types_for, schedule_arguments

#: UNAVAILABLE retries of each call (the client backs off 0.1, 0.2, 0.4 s: about 0.7 s in all).
CLIENT_RETRIES = 3


def _filters(args: argparse.Namespace) -> dict[str, Any]:
    filters: dict[str, Any] = {
        "type": args.job_type.strip(),
        "phases": values.phases(args.phase),
        "label_selector": args.selector.strip(),
        "queue": args.queue.strip(),
        "owner": args.owner.strip(),
        "name_prefix": args.name_prefix,
        "schedule": args.schedule.strip(),
        "rerun_of": args.rerun_of.strip(),
        "template": args.template.strip(),
    }
    return {k: v for k, v in filters.items() if v}


def _submit(c: client.Client, args: argparse.Namespace) -> int:
    name, spec, kwargs = schedule_arguments(args, plugin_types_for(c, args.job_type))
    job = c.schedule(name, spec, **kwargs)
    return _follow.submitted(c, job, args.output, follow=args.wait)


def _list(c: client.Client, args: argparse.Namespace) -> int:
    size = values.integer("--limit", args.limit, 1, 1000) or 50
    filters = _filters(args)
    more = False
    if args.all:
        jobs = list(c.list(page_size=size, **filters))
    else:
        page = c.list_page(page_size=size, **filters)
        jobs, more = list(page.jobs), bool(page.next_page_token)
    rows = [j.to_dict() for j in jobs]
    output.emit({"jobs": rows}, fmt=args.output or "table", rows=rows, kind="job")
    if more and args.output in (None, "wide"):
        print(f"(the newest {len(rows)}; --all lists every job)", file=sys.stderr)
    return EXIT_OK


def _queues(c: client.Client, args: argparse.Namespace) -> int:
    rows = [q.to_dict() for q in c.queues()]
    output.emit({"queues": rows}, fmt=args.output or "table", rows=rows, kind="queue", name_key="name")
    return EXIT_OK


def _types(c: client.Client, args: argparse.Namespace) -> int:
    rows = [t.to_dict() for t in c.types()]
    output.emit({"types": rows}, fmt=args.output or "table", rows=rows, kind="type", name_key="name")
    return EXIT_OK


def _logs(c: client.Client, args: argparse.Namespace) -> int:
    tail = values.integer("--tail", args.tail, 0, 1_000_000) or 0
    attempt = values.integer("--attempt", args.attempt, 1, 1000) or 0
    return _follow.logs(c, args, tail, attempt)


def _dispatch(c: client.Client, args: argparse.Namespace) -> int:
    command = args.command
    if command == "submit":
        return _submit(c, args)
    if command == "get":
        _follow.show_job(c.get(args.job_id), args.output)
        return EXIT_OK
    if command == "cancel":
        _follow.show_job(c.cancel(args.job_id, args.reason), args.output)
        return EXIT_OK
    if command in ("rerun", "schedules", "templates"):
        return _schedules.run(c, args)
    if command == "list":
        return _list(c, args)
    if command == "watch":
        filters = _filters(args)
        if args.job_id and filters:
            raise BadValue("ID", "watch takes a job id or filters, not both")
        return _follow.watch(c, args, filters)
    if command == "logs":
        return _logs(c, args)
    if command == "types":
        return _types(c, args)
    return _queues(c, args)


def _connect_client(args: argparse.Namespace) -> client.Client:
    conn = _connect.resolve(args)
    return client.Client(
        conn.addr,
        tls=conn.tls,
        ca_file=conn.ca_file,
        client_cert_file=conn.cert_file,
        client_key_file=conn.key_file,
        token=conn.token,
        token_file=conn.token_file,
        timeout=conn.rpc_timeout,
        # A person waits for the answer: an unreachable server is reported after about a second, not
        # after the client's default backoff; the streams resume on their own (_follow).
        retries=CLIENT_RETRIES,
    )


def run(args: argparse.Namespace) -> int:
    target = ""
    try:
        try:
            c = _connect_client(args)
        except OSError as exc:  # a CA, certificate, key or token file that cannot be read
            what = exc.filename or "a connection file"
            return fail(f"cannot read {what}: {exc.strerror or exc}", EXIT_USAGE)
        except (_connect.ConnectionProblem, ValueError) as exc:
            return fail(str(exc), EXIT_USAGE)
        target = c.target
        with c:
            return _dispatch(c, args)
    except BadValue as exc:
        return fail(f"invalid argument: {exc.field}: {exc.description}", EXIT_INVALID)
    except client.JobSchedulerError as exc:
        return fail(describe(exc, target), exit_code(exc))
    except KeyboardInterrupt:
        sys.stderr.write("\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (| head): stop quietly, and keep Python from complaining at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILED
