"""Noticing that mounted files changed (a Secret volume update swaps a symlink): cheap polls."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence

#: (device, inode, size, mtime) of a file, or why it could not be read.
FileState = tuple[int, int, int, int] | str


def file_state(path: str) -> FileState:
    try:
        st = os.stat(path)  # follows symlinks: a Secret's ..data swap changes the inode
    except OSError as exc:
        return f"error: {exc.strerror or exc}"
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class ChangePoll:
    """Tells, at most once per ``interval``, whether files changed since the states last accepted.

    Safe to call from any thread and never blocks: while one caller checks, others are told
    nothing changed. The caller ``accept``s the states it has dealt with; states it does not
    accept are reported again at the next check.
    """

    def __init__(
        self, paths: Sequence[str], interval: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._paths = tuple(paths)
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self.seen = self.states()
        self._next_check = clock() + interval

    def states(self) -> tuple[FileState, ...]:
        return tuple(file_state(p) for p in self._paths)

    def changed(self) -> tuple[FileState, ...] | None:
        """The files' states if a check is due and they differ from the accepted ones, else None."""
        if self._clock() < self._next_check:
            return None
        if not self._lock.acquire(blocking=False):
            return None  # another caller is checking right now
        try:
            now = self._clock()
            if now < self._next_check:
                return None
            self._next_check = now + self._interval
            states = self.states()
            return None if states == self.seen else states
        finally:
            self._lock.release()

    def accept(self, states: tuple[FileState, ...]) -> None:
        self.seen = states
