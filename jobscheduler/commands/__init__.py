"""The client commands of the ``jobscheduler`` program (submit, get, list, watch, logs, cancel,
rerun, schedules, templates, queues, types, completion), built on :mod:`jobscheduler.client` only."""

from __future__ import annotations

import argparse
import sys

from jobscheduler.commands._parser import COMMANDS, add_parsers

__all__ = ["COMMANDS", "add_parsers", "run"]


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Run the parsed client command; the process's exit code. (The modules that talk to a server are
    imported only here, so ``serve`` and ``timer`` do not load the client.)"""
    if args.command == "completion":
        from jobscheduler.commands._completion import script

        sys.stdout.write(script(parser, args.shell))
        return 0
    from jobscheduler.commands._run import run as _run

    return _run(args)
