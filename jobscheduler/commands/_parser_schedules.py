"""The flags of ``rerun``, ``schedules ...`` and ``templates ...``."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any, Final

from jobscheduler.commands._parser import job_flags, request_id_flag, wait_flag

POLICIES: Final = ("allow", "forbid", "replace")
SCHEDULE_COMMANDS: Final = ("create", "get", "list", "update", "suspend", "resume", "delete", "trigger")
TEMPLATE_COMMANDS: Final = ("create", "get", "list", "update", "delete")

Common = Callable[..., None]


class _Intermixed(argparse.ArgumentParser):
    """Positionals anywhere between the flags: ``create NAME --cron ... TYPE --param ...`` (plain
    argparse gives an optional TYPE its default as soon as it has seen NAME alone, and then refuses
    TYPE as an unrecognized argument)."""

    _parsing = False

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> tuple[Any, list[str]]:
        if self._parsing:  # (parse_known_intermixed_args calls this method itself, twice)
            return super().parse_known_args(args, namespace)
        self._parsing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._parsing = False


def _actions(top: argparse.ArgumentParser) -> Any:
    """The ACTION subcommands of ``top``: parsers of its own class (its error format), intermixed."""
    parser_class = type("Intermixed", (_Intermixed, type(top)), {})
    return top.add_subparsers(dest="action", metavar="ACTION", required=True, parser_class=parser_class)


def _settings(p: argparse.ArgumentParser, *, create: bool) -> None:
    group = p.add_argument_group("schedule")
    group.add_argument(
        "--cron", required=create, help="five fields (minute hour day month weekday) or @hourly, @daily, ..."
    )
    group.add_argument("--time-zone", metavar="ZONE", help="IANA time zone, e.g. Europe/Berlin (default UTC)")
    group.add_argument(
        "--concurrency-policy",
        metavar="|".join(POLICIES),
        help="while one of its jobs is unfinished: start another (allow, the default), skip (forbid)"
        " or cancel it first (replace)",
    )
    deadline = group.add_mutually_exclusive_group()
    deadline.add_argument(
        "--starting-deadline", metavar="DURATION", help="skip (and count as missed) a run late by more"
    )
    if not create:
        deadline.add_argument(
            "--no-starting-deadline", action="store_true", help="remove the starting deadline"
        )
    group.add_argument("--successful-history", metavar="N", help="finished jobs kept (default 3)")
    group.add_argument("--failed-history", metavar="N", help="failed jobs kept (default 1)")
    group.add_argument("--description", help="what the schedule is for")
    if create:
        group.add_argument("--suspend", action="store_true", help="create it suspended (no runs)")


def _schedules(sub: Any, common: Common) -> None:
    top = sub.add_parser(
        "schedules",
        help="recurring schedules: create, get, list, update, suspend, resume, delete, trigger",
        description="Schedules run a job on a cron expression, in a time zone (Kubernetes: a CronJob).",
    )
    cmds = _actions(top)

    for action, text, description in (
        (
            "create",
            "create a schedule",
            "Create schedule NAME that makes a job of TYPE (or from --template) whenever --cron is due."
            " The job's flags are submit's; its name defaults to the schedule's.",
        ),
        (
            "update",
            "change a schedule",
            "Change the given settings; the others keep their values. TYPE (or --template) with the"
            " job's flags replaces the job the schedule makes, as a whole.",
        ),
    ):
        p = cmds.add_parser(action, help=text, description=description)
        p.add_argument("schedule", metavar="NAME")
        job_flags(p, job_type="optional", when=False)
        _settings(p, create=action == "create")
        common(p)

    for action, text in (
        ("get", "show a schedule and its status"),
        ("suspend", "stop its runs (trigger still makes one)"),
        ("resume", "resume its runs"),
        ("trigger", "one run now: the job it made"),
    ):
        p = cmds.add_parser(action, help=text, description=text[0].upper() + text[1:] + ".")
        p.add_argument("schedule", metavar="NAME")
        if action == "trigger":
            wait_flag(p)
        common(p)

    p = cmds.add_parser("delete", help="delete a schedule", description="Delete a schedule; its jobs run on.")
    p.add_argument("schedule", metavar="NAME")
    p.add_argument("--cancel-jobs", action="store_true", help="also cancel its unfinished jobs")
    common(p)

    p = cmds.add_parser("list", help="list schedules, by name", description="Your schedules, by name.")
    p.add_argument(
        "--name-prefix", default="", metavar="PREFIX", help="schedules whose name starts with this"
    )
    p.add_argument("--owner", default="", help="another owner's (needs the admin role)")
    common(p)


def _templates(sub: Any, common: Common) -> None:
    top = sub.add_parser(
        "templates",
        help="job templates: create, get, list, update, delete",
        description="Named, versioned job requests that submit --template and schedules start from.",
    )
    cmds = _actions(top)
    for action, text in (
        ("create", "create version 1 of template NAME: a job of TYPE with the job's flags (submit's)"),
        ("update", "store the next version: TYPE and the job's flags replace the request, if given"),
    ):
        p = cmds.add_parser(action, help=text.split(":")[0], description=text[0].upper() + text[1:] + ".")
        p.add_argument("template_name", metavar="NAME")
        job_flags(p, job_type="optional" if action == "update" else "required", when=False, template=False)
        p.add_argument("--description", help="what the template is for")
        common(p)

    p = cmds.add_parser(
        "get", help="show a template", description="A version of a template (default latest)."
    )
    p.add_argument("template_name", metavar="NAME")
    p.add_argument("--version", metavar="N", help="the version (default: the latest)")
    common(p)

    p = cmds.add_parser("delete", help="delete a template", description="Delete every version of a template.")
    p.add_argument("template_name", metavar="NAME")
    common(p)

    p = cmds.add_parser("list", help="list templates, by name", description="The latest version of each.")
    p.add_argument(
        "--name-prefix", default="", metavar="PREFIX", help="templates whose name starts with this"
    )
    common(p)


def add_schedule_parsers(sub: Any, common: Common) -> None:
    """Add ``rerun``, ``schedules`` and ``templates`` to the program's subparsers."""
    p = sub.add_parser(
        "rerun",
        help="run a finished job again",
        description="A new job from a finished (or cancelled) job's request; the job's flags given"
        " override it (--param: parameters of its type). Its rerun_of names the original.",
    )
    p.add_argument("job_id", metavar="ID")
    job_flags(p, job_type="none", when=False, template=False)
    request_id_flag(p)
    wait_flag(p)
    common(p)
    _schedules(sub, common)
    _templates(sub, common)
