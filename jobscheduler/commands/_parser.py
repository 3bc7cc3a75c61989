"""The client commands' flags (argparse): submit, get, list, watch, logs, cancel, queues, types,
completion (rerun, schedules and templates: ``_parser_schedules``)."""

from __future__ import annotations

import argparse
from typing import Any, Final

from jobscheduler.commands import _connect

#: Output formats of -o (the first one is the default, chosen by leaving -o out).
FORMATS: Final = ("table", "wide", "json", "yaml", "name")
COMMANDS: Final = (
    "submit",
    "get",
    "list",
    "watch",
    "logs",
    "cancel",
    "rerun",
    "schedules",
    "templates",
    "queues",
    "types",
    "completion",
)
PHASES: Final = ("pending", "running", "succeeded", "failed", "cancelled", "queued", "scheduled", "waiting")
PRIORITIES: Final = ("low", "normal", "high", "critical")


def _common(parser: argparse.ArgumentParser, *, output: bool = True, wide: bool = True) -> None:
    if output:
        choices = FORMATS[1:] if wide else tuple(f for f in FORMATS[1:] if f != "wide")
        parser.add_argument(
            "-o",
            "--output",
            choices=choices,
            metavar="|".join(choices),
            help="output format (default: an aligned table)",
        )
    _connect.add_flags(parser)


def _filters(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("filters (all given ones must match)")
    group.add_argument(
        "--phase",
        action="append",
        default=[],
        metavar="PHASE",
        help=f"any of these phases (repeat, or comma-separated): {', '.join(PHASES)}",
    )
    group.add_argument("--type", dest="job_type", metavar="TYPE", default="", help="job type, e.g. timer")
    group.add_argument(
        "-l", "--selector", metavar="SELECTOR", default="", help="label selector: team=build,tier!=test"
    )
    group.add_argument("--queue", default="", help="admission queue")
    group.add_argument("--owner", default="", help="owner (other owners than yourself need the admin role)")
    group.add_argument("--name-prefix", default="", metavar="PREFIX", help="jobs whose name starts with this")
    group.add_argument("--schedule", default="", metavar="NAME", help="jobs made by this schedule")
    group.add_argument("--rerun-of", default="", metavar="JOB_ID", help="reruns of this job")
    group.add_argument("--template", default="", metavar="NAME", help="jobs made from this job template")


def job_flags(p: argparse.ArgumentParser, *, job_type: str, when: bool, template: bool = True) -> None:
    """The flags of the job a command makes: TYPE (``job_type``: "required", "optional" or "none"),
    its parameters, the timer's convenience flags and the scheduling settings (``when``: also
    --after, --delay and --depends-on; ``template``: --template and --template-version)."""
    if job_type != "none":
        nargs = "?" if job_type == "optional" else None
        p.add_argument("job_type", metavar="TYPE", nargs=nargs, help="job type: timer, or a plugin type")
    p.add_argument(
        "-p", "--param", action="append", default=[], metavar="KEY=VALUE", help="a job parameter (repeat)"
    )
    p.add_argument("--name", help="job name (default: the job type)")
    timer = p.add_argument_group("timer parameters (the same as --param)")
    timer.add_argument("--duration", metavar="DURATION", help="duration_seconds, e.g. 90, 30s, 5m")
    timer.add_argument("--timer-name", help="timer_name (default: the job name)")
    timer.add_argument("--endpoint", metavar="URL", help="control_plane_endpoint: where the timer reports")
    timer.add_argument("--image", help="image: container image override")
    timer.add_argument("--log-level", help="log_level of the timer program")
    timer.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="env entry (repeat)")
    sched = p.add_argument_group("scheduling")
    sched.add_argument("--queue", default="", help="admission queue (default: default)")
    sched.add_argument("--priority", metavar="|".join(PRIORITIES), help="admission priority (default normal)")
    if when:
        after = sched.add_mutually_exclusive_group()
        after.add_argument("--after", metavar="RFC3339", help="start no earlier than this time")
        after.add_argument("--delay", metavar="DURATION", help="start this long from now, e.g. 30s, 5m")
        sched.add_argument(
            "--depends-on", action="append", default=[], metavar="JOB_ID", help="must succeed first (repeat)"
        )
    sched.add_argument("--retries", metavar="N", help="run a failed job again up to N times (max 10)")
    sched.add_argument("--retry-backoff", metavar="DURATION", help="wait before the first retry, doubling")
    sched.add_argument("--timeout", metavar="DURATION", help="fail the job after running this long")
    sched.add_argument("--ttl", metavar="DURATION", help="keep the finished job this long (0: until deleted)")
    sched.add_argument("--label", action="append", default=[], metavar="KEY=VALUE", help="job label (repeat)")
    if template:
        sched.add_argument("--template", metavar="NAME", default="", help="start from this job template")
        sched.add_argument("--template-version", metavar="N", help="the template's version (default: latest)")


def request_id_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--request-id", help="idempotency key: the same id returns the same job (default: new)")


def wait_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-w", "--wait", action="store_true", help="block until the job ends; exit 0 only if it SUCCEEDED"
    )


def _submit(sub: Any) -> None:
    p = sub.add_parser(
        "submit",
        help="schedule a job (--wait: block until it ends)",
        description="Schedule a job of TYPE (or from --template NAME, TYPE then optional). Its parameters"
        " as --param KEY=VALUE (maps: --param env.NAME=VALUE), or with the convenience flags of the"
        " timer. Exit 0 with --wait only when it SUCCEEDED.",
    )
    job_flags(p, job_type="optional", when=True)
    request_id_flag(p)
    wait_flag(p)
    _common(p)


def add_parsers(sub: Any) -> None:
    """Add the client commands to the ``jobscheduler`` program's subparsers."""
    _submit(sub)

    p = sub.add_parser("get", help="show one job", description="Show one job (-o json|yaml for every field).")
    p.add_argument("job_id", metavar="ID")
    _common(p)

    p = sub.add_parser("list", help="list jobs, newest first", description="List jobs, newest first.")
    _filters(p)
    p.add_argument("--all", action="store_true", help="every page (default: the first --limit jobs)")
    p.add_argument("--limit", metavar="N", default="50", help="jobs per page, 1..1000 (default 50)")
    _common(p)

    p = sub.add_parser(
        "watch",
        help="follow one job, or every matching job",
        description="Print one job's state and every change until it ends; or the matching jobs and"
        " every change of them until interrupted. A dropped connection resumes where it left off.",
    )
    p.add_argument("job_id", metavar="ID", nargs="?")
    p.add_argument(
        "--watch-only", action="store_true", help="without ID: only changes, not the matching jobs first"
    )
    _filters(p)
    _common(p)

    p = sub.add_parser("logs", help="print a job's output (-f: follow it)", description="A job's output.")
    p.add_argument("job_id", metavar="ID")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines while it runs")
    p.add_argument("--tail", metavar="N", help="only the last N lines")
    p.add_argument("--attempt", metavar="N", help="1-based attempt (pod); default the latest")
    p.add_argument("--prefix", action="store_true", help="prefix each line with its pod name")
    _common(p, output=False)

    p = sub.add_parser("cancel", help="cancel a job", description="Stop a job's pods; it stays as CANCELLED.")
    p.add_argument("job_id", metavar="ID")
    p.add_argument("--reason", default="", help="recorded on the job")
    _common(p)

    from jobscheduler.commands._parser_schedules import add_schedule_parsers  # (it uses job_flags)

    add_schedule_parsers(sub, _common)

    p = sub.add_parser("queues", help="list the admission queues", description="Every admission queue.")
    _common(p)

    p = sub.add_parser(
        "types",
        help="list the job types the service accepts",
        description="Every job type: built in or from a plugin package (name, version), what it does;"
        " -o wide adds its parameters, -o json|yaml their JSON Schema.",
    )
    _common(p)

    p = sub.add_parser(
        "completion",
        help="print a shell completion script",
        description='Print a completion script; in ~/.bashrc: eval "$(jobscheduler completion bash)",'
        ' in ~/.zshrc: eval "$(jobscheduler completion zsh)".',
    )
    p.add_argument("shell", choices=("bash", "zsh"))
