"""The ``jobscheduler`` command: serve, version, version-full, timer, report-sink, and the client
commands (submit, get, list, watch, logs, cancel, queues, types, completion:
:mod:`jobscheduler.commands`)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import NoReturn

from jobscheduler import commands
from jobscheduler.version import version_info

EXIT_CONFIG = 2
EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line on stderr (exit 2), with where to read more."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see: {self.prog} --help)\n")


def _serve() -> int:
    from jobscheduler.app import StartupError, serve
    from jobscheduler.config import ConfigError, load_settings
    from jobscheduler.logs import configure_logging, get_logger

    try:
        settings = load_settings()
    except ConfigError as exc:
        configure_logging("info")
        get_logger("jobscheduler").error("startup failed", error=str(exc))
        print(f"jobscheduler: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(settings.log_level)
    try:
        asyncio.run(serve(settings))
    except StartupError as exc:
        get_logger("jobscheduler").error("startup failed", error=str(exc))
        print(f"jobscheduler: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="jobscheduler",
        description="gRPC service that schedules Kubernetes batch/v1 Jobs from typed requests, and its"
        " command line client. Client commands reach the server at $JOBSCHEDULER_ADDR"
        " (default localhost:50054).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("serve", help="run the gRPC server (settings from the environment; see README)")
    commands.add_parsers(sub)
    sub.add_parser("version", help="print the version")
    sub.add_parser("version-full", help="print version, git commit, build date and Python version")
    sub.add_parser("timer", help="run the timer job program (what timer jobs run in their pods)")
    sub.add_parser("webhook", help="run the webhook job program (what webhook jobs run in their pods)")
    sub.add_parser("healthcheck", help="run the health-check job program (what health-check jobs run)")
    sub.add_parser("report-sink", help="receive and print timer reports (a stand-in control plane)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "timer":  # the timer program parses its own flags
        from jobscheduler.timer import main as timer_main

        return timer_main(args[1:])
    if args and args[0] == "webhook":  # configured by its environment
        from jobscheduler.webhook import main as webhook_main

        return webhook_main(args[1:])
    if args and args[0] == "healthcheck":  # configured by its environment
        from jobscheduler.healthcheck import main as healthcheck_main

        return healthcheck_main(args[1:])
    if args and args[0] == "report-sink":
        from jobscheduler.timer.sink import main as sink_main

        return sink_main(args[1:])
    parser = build_parser()
    parsed = parser.parse_args(args)
    if parsed.command == "serve":
        return _serve()
    if parsed.command in commands.COMMANDS:
        return commands.run(parsed, parser)
    if parsed.command == "version":
        print(version_info().version)
        return 0
    if parsed.command == "version-full":
        print(version_info().full())
        return 0
    parser.print_help()
    return EXIT_CONFIG
