"""Following jobs: ``submit --wait``, ``watch [ID]`` and ``logs [-f]``."""

from __future__ import annotations

import argparse
import functools
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, Final

from jobscheduler import client
from jobscheduler.commands import _output as output
from jobscheduler.commands._errors import EXIT_FAILED, EXIT_OK, one_line
from jobscheduler.commands._live import StatusLine
from jobscheduler.commands._time import human_duration

#: Failures that get no retry (core.retries.PERMANENT_FAILURE_REASONS, as the server reports them).
NO_RETRY_REASONS: Final = frozenset({"PodFailurePolicy", "DependencyFailed", "DependencyNotFound"})
RETRY_OF_LABEL: Final = "jobscheduler.io/retry-of"
#: The longest a retry can be due after its job failed (core.retries.MAX_RETRY_DELAY_SECONDS), plus slack.
RETRY_WAIT_SECONDS: Final = 3600 + 60
#: How often in a row ``watch`` resumes after the client gave up reconnecting (each time after the
#: client's own backoff), before it reports the server unavailable.
WATCH_RESUMES: Final = 10
#: ``logs -f``: how often to ask again while a started job's output is not available yet.
LOGS_POLL_SECONDS: Final = 1.0


def _human(fmt: str | None) -> bool:
    return fmt in (None, "table", "wide")


def phase_line(job: client.Job, since: float) -> str:
    elapsed = human_duration(time.monotonic() - since)
    text = f"{job.job_id}  {job.phase.value:<9}  attempts {job.attempts}  {elapsed}"
    if job.phase.is_terminal and (job.reason or job.message):
        text += f"  {job.reason}: {job.message}" if job.reason else f"  {job.message}"
    return one_line(text, limit=240)


def _next_retry(c: client.Client, job: client.Job) -> client.Job | None:
    """The retry the service schedules for a failed ``job``, once it exists; None if it gets none."""
    if job.phase is not client.JobPhase.FAILED or job.reason in NO_RETRY_REASONS:
        return None
    if job.retry_number >= job.max_retries:
        return None
    number = job.retry_number + 1
    selector = f"{RETRY_OF_LABEL}={job.retry_of or job.job_id}"
    token = c.list_page(page_size=1, label_selector=selector).resume_token
    for found in c.list(label_selector=selector):
        if found.retry_number == number:
            return found
    try:
        for event in c.watch_all(resume_token=token, timeout=RETRY_WAIT_SECONDS, label_selector=selector):
            if event.job.retry_number == number:
                return event.job
    except client.DeadlineExceeded:
        return None
    return None


def show_job(job: client.Job, fmt: str | None) -> None:
    data = job.to_dict()
    output.emit(data, fmt=fmt or "table", rows=[data], kind="job")


def submitted(c: client.Client, job: client.Job, fmt: str | None, *, follow: bool) -> int:
    """Report a job just made (submit, rerun, schedules trigger); with ``follow`` (--wait), follow it
    until it ends: exit 0 only if it SUCCEEDED."""
    if fmt == "name":
        print(job.job_id, flush=True)
    elif _human(fmt):
        origin = f", rerun of {job.rerun_of}" if job.rerun_of else ""
        origin += f", schedule {job.schedule!r}" if job.schedule else ""
        origin += f", template {job.template}@{job.template_version}" if job.template else ""
        print(f"{job.job_id} submitted ({job.type} {job.name!r}, {job.phase.value}{origin})", flush=True)
    final = wait(c, job, fmt) if follow else job
    if fmt in ("json", "yaml"):
        show_job(final, fmt)
    if follow and final.phase is not client.JobPhase.SUCCEEDED:
        return EXIT_FAILED
    return EXIT_OK


def wait(c: client.Client, job: client.Job, fmt: str | None) -> client.Job:
    """Follow ``job`` (and the retries the service makes of it) until it ends; the last job."""
    since = time.monotonic()
    human = _human(fmt)
    current = job
    line = StatusLine(job.job_id, enabled=sys.stderr.isatty() and human)
    line.update(job.phase.value, job.attempts)
    with line:
        last_phase: client.JobPhase | None = None
        while True:
            for event in _resuming(functools.partial(c.watch, current.job_id)):
                current = event.job
                line.update(current.phase.value, current.attempts)
                if human and current.phase != last_phase:
                    line.print(phase_line(current, since))
                last_phase = current.phase
            if not current.phase.is_terminal:  # the watch ended without an end: deleted
                current = c.get(current.job_id)
            retry = _next_retry(c, current)
            if retry is None:
                return current
            if human:
                line.print(
                    f"{retry.job_id}  retry {retry.retry_number} of {retry.max_retries} of {current.job_id}"
                )
            line.job_id, current = retry.job_id, retry
            last_phase = None  # a new job: its first phase is news, even if its last one was FAILED


def watch(c: client.Client, args: argparse.Namespace, filters: dict[str, Any]) -> int:
    """``watch ID`` (until the job ends) or ``watch [filters]`` (until interrupted). On a terminal
    the live line shows the job of the last event."""
    fmt = args.output
    state: dict[str, Any] = {}
    with StatusLine(args.job_id or "watching", enabled=sys.stderr.isatty() and _human(fmt)) as line:

        def show(event: client.JobEvent) -> None:
            line.job_id = event.job.job_id
            line.update(event.job.phase.value, event.job.attempts)
            if line.enabled:
                line.print("\n".join(_render(event, fmt, state)))
            else:
                data = event.to_dict()
                output.emit_stream_item(
                    data, fmt=fmt or "table", kind="event", name_key="job.job_id", state=state
                )

        if args.job_id:
            for event in _resuming(functools.partial(c.watch, args.job_id)):
                show(event)
            return 0
        return _watch_all(c, args, filters, show)


def _watch_all(
    c: client.Client,
    args: argparse.Namespace,
    filters: dict[str, Any],
    show: Callable[[client.JobEvent], None],
) -> int:
    token = _current(c, args.watch_only, filters, show)
    resumes = 0
    while True:
        try:
            # (watch_all itself resumes a dropped stream, or one the server ended for falling
            # behind, from the last event's token, within its retries)
            for event in c.watch_all(resume_token=token, **filters):
                token = event.resume_token or token
                resumes = 0
                show(event)
            return 0
        except client.Unavailable:
            resumes += 1
            if not token or resumes > WATCH_RESUMES:
                raise
            print("jobscheduler: connection lost; resuming the watch", file=sys.stderr)
            time.sleep(min(resumes, 5))
        except client.OutOfRange as exc:
            resumes += 1
            if resumes > WATCH_RESUMES:
                raise
            if token and exc.fell_behind:  # it kept falling behind until the client's retries ran out
                print(
                    "jobscheduler: the watch keeps falling behind; resuming after the last event",
                    file=sys.stderr,
                )
                continue
            # The server no longer has the events after our token (it restarted, or the token left
            # its retained window): what kubectl does on 410 Gone, list again and watch from there.
            print("jobscheduler: the watch's resume token expired; listing the jobs again", file=sys.stderr)
            token = _current(c, args.watch_only, filters, show)


def _resuming(watch: Callable[[], Iterator[client.JobEvent]]) -> Iterator[client.JobEvent]:
    """``watch()``'s events; when the client gives up reconnecting, watched again (up to
    WATCH_RESUMES times in a row): WatchJob starts with the current state, and an event that
    repeats the last one is left out."""
    last: client.Job | None = None
    resumes = 0
    while True:
        try:
            for event in watch():
                if last is not None and event.job == last:
                    continue
                last, resumes = event.job, 0
                yield event
            return
        except client.Unavailable:
            resumes += 1
            if resumes > WATCH_RESUMES:
                raise
            print("jobscheduler: connection lost; watching again", file=sys.stderr)
            time.sleep(min(resumes, 5))


def _current(
    c: client.Client, watch_only: bool, filters: dict[str, Any], show: Callable[[client.JobEvent], None]
) -> str:
    """Print the matching jobs as they are now (unless ``watch_only``), as WatchJob begins with the
    current state: CREATED events carrying the list's resume token. Returns that token."""
    token, page_token = "", ""
    while True:
        page = c.list_page(page_size=1 if watch_only else 500, page_token=page_token, **filters)
        token = token or page.resume_token
        if watch_only:
            return token
        for job in page.jobs:
            show(client.JobEvent(client.EventType.CREATED, job, token))
        page_token = page.next_page_token
        if not page_token:
            return token


def _render(event: client.JobEvent, fmt: str | None, state: dict[str, Any]) -> list[str]:
    widths: list[int] = state.setdefault("widths", output.stream_widths("event"))
    lines = output.table(
        [event.to_dict()],
        output.columns_for("event", fmt == "wide"),
        colour=output.colour_wanted(sys.stdout),
        header=not state.get("header_done"),
        widths=widths,
    )
    state["header_done"] = True
    return lines


def _safe(text: str) -> str:
    """A log line for a terminal: no escape sequences or other control characters (job output is
    not trusted to drive the terminal)."""
    return "".join(ch if ch == "\t" or ch.isprintable() else "\ufffd" for ch in text)


def logs(c: client.Client, args: argparse.Namespace, tail: int, attempt: int) -> int:
    """Print the job's output. With ``-f``, a job that has no output yet (FAILED_PRECONDITION: no
    pod or process started yet, or its container is still being created) is waited for, as
    ``kubectl logs -f`` waits for a container; without ``-f`` that is an error (exit 7)."""
    clean = sys.stdout.isatty()
    waiting = False
    while True:
        printed = False
        try:
            for item in c.logs(args.job_id, follow=args.follow, tail_lines=tail, attempt=attempt):
                printed = True
                text = item.line.rstrip("\n")
                if args.prefix:
                    text = f"[{item.pod_name or item.attempt}] {text}"
                sys.stdout.write((_safe(text) if clean else text) + "\n")
                sys.stdout.flush()
            return 0
        except client.FailedPrecondition:
            if not args.follow or printed:
                raise
            if waiting:  # started, but no output yet (a container being created): ask again soon
                if c.get(args.job_id).phase.is_terminal:
                    raise
                time.sleep(LOGS_POLL_SECONDS)
            else:
                print(f"jobscheduler: waiting for {args.job_id} to start", file=sys.stderr, flush=True)
                _until_started(c, args.job_id)
                waiting = True


def _until_started(c: client.Client, job_id: str) -> None:
    """Return once the job has started an attempt, or has ended."""
    for event in _resuming(functools.partial(c.watch, job_id)):
        job = event.job
        if job.attempts or job.phase is client.JobPhase.RUNNING or job.phase.is_terminal:
            return
