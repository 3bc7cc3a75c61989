"""The local backend's process start (backends/local/_supervisor.py): off the event loop, awaited
by a pidfd (or a thread), and never leaving a process running when its starter is cancelled."""

from __future__ import annotations

import asyncio
import os
import pathlib
import time

import pytest

from jobscheduler.backends.local import _supervisor
from jobscheduler.backends.local._supervisor import Launch, Supervisor

pytestmark = pytest.mark.timeout(60)


def launch(tmp_path: pathlib.Path, script: str) -> Launch:
    return Launch(argv=("sh", "-c", script), env={"PATH": os.environ["PATH"]}, workdir=tmp_path)


async def eventually(check: object, what: str, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


@pytest.mark.asyncio
@pytest.mark.parametrize("pidfd", [True, False])
async def test_a_child_is_awaited_with_its_exit_code_and_output(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, pidfd: bool
) -> None:
    if not pidfd:  # where there is no pidfd (not Linux): a thread waits for it
        monkeypatch.delattr(os, "pidfd_open", raising=False)
    supervisor = Supervisor(kill_grace_seconds=1)
    child = await supervisor.spawn(launch(tmp_path, "echo out; echo err >&2; exit 3"), tmp_path / "a.log")
    assert child.pid > 0 and child.returncode in (None, 3)
    waits = [asyncio.ensure_future(child.wait()) for _ in range(2)]
    waits[0].cancel()  # one waiter's cancel is not the other's
    assert await waits[1] == 3 and child.returncode == 3
    assert (tmp_path / "a.log").read_text().split() == ["out", "err"]


@pytest.mark.asyncio
async def test_a_command_that_cannot_start_raises_as_before(tmp_path: pathlib.Path) -> None:
    supervisor = Supervisor(kill_grace_seconds=1)
    bad = Launch(argv=(str(tmp_path / "missing"),), env={}, workdir=tmp_path)
    with pytest.raises(FileNotFoundError):
        await supervisor.spawn(bad, tmp_path / "b.log")


async def cancel_a_start_under_way(
    supervisor: Supervisor, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[asyncio.Event, list[int]]:
    """A spawn cancelled while its process is being started (in its thread, held until the
    returned event is set); the list gets the process's pid once it has started anyway."""
    real_popen = _supervisor.subprocess.Popen
    release = asyncio.Event()
    loop = asyncio.get_running_loop()
    started: list[int] = []

    def slow_popen(*args: object, **kwargs: object) -> object:
        asyncio.run_coroutine_threadsafe(release.wait(), loop).result(timeout=10)
        popen = real_popen(*args, **kwargs)  # type: ignore[call-overload]
        started.append(popen.pid)
        return popen

    monkeypatch.setattr(_supervisor.subprocess, "Popen", slow_popen)
    runner = asyncio.ensure_future(supervisor.spawn(launch(tmp_path, "exec sleep 30"), tmp_path / "c.log"))
    await asyncio.sleep(0)
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner
    return release, started


@pytest.mark.asyncio
async def test_a_cancelled_start_leaves_no_process_running(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    release, started = await cancel_a_start_under_way(Supervisor(kill_grace_seconds=1), tmp_path, monkeypatch)
    release.set()
    await eventually(lambda: started, "the process to start anyway")

    def gone() -> bool:
        try:
            os.kill(started[0], 0)
        except ProcessLookupError:
            return True  # killed, and reaped
        return False

    await eventually(gone, "the unwanted process to be killed and reaped")


@pytest.mark.asyncio
async def test_close_waits_for_a_start_under_way_and_nothing_outlives_it(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As LocalBackend.close(): the runner is cancelled while its process is being started; once
    the supervisor is closed, that process is already killed and reaped (the loop may end next)."""
    supervisor = Supervisor(kill_grace_seconds=1)
    release, started = await cancel_a_start_under_way(supervisor, tmp_path, monkeypatch)
    closing = asyncio.ensure_future(supervisor.close())
    await asyncio.sleep(0.05)
    assert not closing.done()  # it waits for the start under way
    release.set()
    await closing
    assert started
    with pytest.raises(ProcessLookupError):
        os.kill(started[0], 0)  # killed and reaped before close() returned
