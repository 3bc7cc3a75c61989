"""The ``jobscheduler`` command: serve, version, version-full, timer, report-sink."""

from __future__ import annotations

import argparse
import asyncio
import sys

from jobscheduler.version import version_info

EXIT_CONFIG = 2


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


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "timer":  # the timer program parses its own flags
        from jobscheduler.timer import main as timer_main

        return timer_main(args[1:])
    if args and args[0] == "report-sink":
        from jobscheduler.timer.sink import main as sink_main

        return sink_main(args[1:])
    parser = argparse.ArgumentParser(
        prog="jobscheduler",
        description="gRPC service that schedules Kubernetes batch/v1 Jobs from typed requests.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("serve", help="run the gRPC server (settings from the environment; see README)")
    sub.add_parser("version", help="print the version")
    sub.add_parser("version-full", help="print version, git commit, build date and Python version")
    sub.add_parser("timer", help="run the timer job program (what timer jobs run in their pods)")
    sub.add_parser("report-sink", help="receive and print timer reports (a stand-in control plane)")
    parsed = parser.parse_args(args)
    if parsed.command == "serve":
        return _serve()
    if parsed.command == "version":
        print(version_info().version)
        return 0
    if parsed.command == "version-full":
        print(version_info().full())
        return 0
    parser.print_help()
    return EXIT_CONFIG
