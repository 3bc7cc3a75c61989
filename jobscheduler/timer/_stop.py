"""A stop request that a signal handler can raise safely and that interrupts a wait immediately."""

from __future__ import annotations

import contextlib
import queue
import signal
import threading
from types import FrameType


class StopRequest:
    """Set by SIGTERM/SIGINT (or :meth:`request`); :meth:`wait` returns as soon as it is set.

    A :class:`queue.SimpleQueue` is used instead of a bare :class:`threading.Event` because its
    ``put`` is reentrant: the signal handler runs on the main thread, possibly while that thread is
    inside ``wait`` holding the queue's internals, and ``Event.set`` could deadlock there.
    """

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._signum: int | None = None

    @property
    def signum(self) -> int | None:
        """The signal that requested the stop (0 for :meth:`request`), None while not requested."""
        if self._signum is None:
            with contextlib.suppress(queue.Empty):
                self._signum = self._queue.get_nowait()
        return self._signum

    def request(self, signum: int = 0) -> None:
        self._queue.put(signum)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self._queue.put(signum)

    def install(self, *signums: signal.Signals) -> bool:
        """Route ``signums`` to this request; False (nothing installed) when not on the main thread."""
        if threading.current_thread() is not threading.main_thread():
            return False
        for signum in signums:
            signal.signal(signum, self._handle)
        return True

    def wait(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` seconds; True as soon as a stop is (or already was) requested."""
        if self.signum is not None:
            return True
        try:
            self._signum = self._queue.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return False
        return True
