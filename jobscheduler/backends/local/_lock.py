"""One service per DATA_DIR: an exclusive lock on ``DATA_DIR/lock``, taken before anything in the
directory is touched (a second service would otherwise kill the first one's running jobs as leftovers)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import pathlib

LOCK_FILE = "lock"


class DataDirInUse(OSError):
    """Another process holds DATA_DIR's lock."""


class DataDirLock:
    """Held from ``acquire`` until ``release`` (or this process ends: the kernel drops it then).

    The descriptor is close-on-exec, so the jobs' processes never hold it."""

    def __init__(self, data_dir: pathlib.Path) -> None:
        self.path = data_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            raise DataDirInUse(
                f"{self.path.parent} is in use by another jobscheduler process"
                f" (pid {holder if holder is not None else 'unknown'} holds {self.path});"
                " stop it or give this one another DATA_DIR"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)  # drops the lock; the file stays (unlinking it would race a new holder)
            self._fd = None


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
