"""The live status line of ``submit --wait`` and ``watch ID``: phase, attempt, elapsed time.

Drawn with rich on stderr, and only when stderr is a terminal (never in a pipe or a log file);
NO_COLOR turns its colours off.
"""

from __future__ import annotations

import os
import sys
import time
from types import TracebackType
from typing import Any

from jobscheduler.commands._time import human_duration


class StatusLine:
    """A context manager; ``update(job)`` changes what the line shows, ``print(text)`` prints a line
    above it. Off (``print`` goes straight to stdout) when stderr is not a terminal."""

    def __init__(self, job_id: str, *, enabled: bool | None = None) -> None:
        self.job_id = job_id
        self.phase = "-"
        self.attempts = 0
        self.started = time.monotonic()
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._live: Any = None

    def __rich__(self) -> Any:
        from rich.text import Text

        elapsed = human_duration(time.monotonic() - self.started)
        line = Text()
        line.append(self.job_id, style="bold")
        line.append(f"  {self.phase}", style=_STYLES.get(self.phase, ""))
        line.append(f"  attempt {self.attempts}  elapsed {elapsed}", style="dim")
        return line

    def __enter__(self) -> StatusLine:
        if self.enabled:
            from rich.console import Console
            from rich.live import Live

            console = Console(stderr=True, no_color=bool(os.environ.get("NO_COLOR")))
            self._live = Live(self, console=console, refresh_per_second=4, transient=True)
            self._live.__enter__()
        return self

    def update(self, phase: str, attempts: int) -> None:
        self.phase, self.attempts = phase, attempts
        if self._live is not None:
            self._live.refresh()

    def print(self, text: str) -> None:
        """A line of output (stdout), above the status line while it shows."""
        if self._live is not None:
            self._live.stop()  # stdout and the line on stderr share the terminal: clear it first
            sys.stdout.write(text + "\n")
            sys.stdout.flush()
            self._live.start()
        else:
            sys.stdout.write(text + "\n")
            sys.stdout.flush()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._live is not None:
            self._live.__exit__(kind, exc, tb)
            self._live = None


_STYLES = {"SUCCEEDED": "green", "FAILED": "red", "CANCELLED": "yellow", "RUNNING": "cyan"}
