"""LeaseElector against the API emulator over real HTTP: one leader at a time, take-over when the
leader stops, the lead task cancelled when the API fails (and leadership back afterwards).

Short timings: lease_duration=3, renew_deadline=2, retry_period=1 (seconds).
"""

from __future__ import annotations

import asyncio
import contextlib
import pathlib
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

import pytest
from emulator import EmulatorThread

from jobscheduler.backends.kubernetes import KubeApi, LeaseElector, choose_config, connect

LEASE = "jobscheduler-test"
TIMINGS: dict[str, float] = {"lease_duration": 3, "renew_deadline": 2, "retry_period": 1}


def run(scenario: Coroutine[Any, Any, None], within: float = 60) -> None:
    async def bounded() -> None:
        async with asyncio.timeout(within):  # not wait_for: on 3.11 it can swallow the cancellation
            await scenario

    asyncio.run(bounded())


async def wait_until(condition: Callable[[], bool], within: float, what: str) -> float:
    """Seconds it took for ``condition`` to hold; AssertionError after ``within``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > within:
            raise AssertionError(f"not within {within}s: {what}")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


@contextlib.asynccontextmanager
async def kube_api(kubeconfig: pathlib.Path) -> AsyncIterator[KubeApi]:
    api = await connect(choose_config(in_cluster=False, kubeconfig=str(kubeconfig)), request_timeout=5)
    try:
        yield api
    finally:
        await api.close()


class Candidate:
    """An elector with a ``lead`` that runs until cancelled, and what happened to both."""

    def __init__(self, api: KubeApi, identity: str, **timings: float) -> None:
        self.identity = identity
        self.changes: list[bool] = []
        self.leads = 0  # how many times lead() started
        self.cancelled = 0  # how many times it was cancelled
        self.running = False
        self.elector = LeaseElector(
            api,
            namespace="default",
            name=LEASE,
            identity=identity,
            on_change=self.changes.append,
            **(timings or TIMINGS),
        )
        self.task: asyncio.Task[None] | None = None

    async def lead(self) -> None:
        self.leads += 1
        self.running = True
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.running = False

    def start(self, lead: Callable[[], Awaitable[None]] | None = None) -> None:
        self.task = asyncio.create_task(self.elector.run(lead or self.lead))

    async def stop(self) -> None:
        """Cancel run(): it must end, cancelled, at once."""
        assert self.task is not None
        self.task.cancel()
        done, _ = await asyncio.wait({self.task}, timeout=5)
        assert done, "run() went on after being cancelled"
        assert self.task.cancelled()


def holder(emulator: EmulatorThread) -> Awaitable[str | None]:
    return asyncio.to_thread(emulator.lease_holder, LEASE)


def test_one_elector_acquires_the_lease_and_leads(emulator: EmulatorThread, kubeconfig: pathlib.Path) -> None:
    async def scenario() -> None:
        async with kube_api(kubeconfig) as api:
            a = Candidate(api, "replica-a", lease_duration=3.5, renew_deadline=2, retry_period=1)
            assert not a.elector.leading
            a.start()
            await wait_until(lambda: a.running, 5, "a leads")
            assert a.elector.leading and a.changes == [True] and a.leads == 1
            lease = await asyncio.to_thread(emulator.lease, LEASE)
            assert lease is not None
            assert lease["spec"]["holderIdentity"] == "replica-a"
            assert lease["spec"]["leaseDurationSeconds"] == 4  # 3.5 rounded up: the Lease holds whole seconds
            first = lease["metadata"]["resourceVersion"]

            await asyncio.sleep(2.5)  # renewed meanwhile (every retry_period), still leading
            renewed = await asyncio.to_thread(emulator.lease, LEASE)
            assert renewed is not None and int(renewed["metadata"]["resourceVersion"]) > int(first)
            assert renewed["spec"]["acquireTime"] == lease["spec"]["acquireTime"]
            assert a.running and a.leads == 1 and a.changes == [True]

            await a.stop()  # cancelling run cancels the lead task too
            assert not a.running and a.cancelled == 1
            assert not a.elector.leading and a.changes == [True, False]
            assert await holder(emulator) is None  # released: the next candidate need not wait it out

    run(scenario())


def test_timings_the_library_refuses(emulator: EmulatorThread, kubeconfig: pathlib.Path) -> None:
    async def scenario() -> None:
        async with kube_api(kubeconfig) as api:
            bad = [
                {"lease_duration": 2, "renew_deadline": 2, "retry_period": 1},
                {"lease_duration": 3, "renew_deadline": 1.1, "retry_period": 1},
                {"lease_duration": 3, "renew_deadline": 2, "retry_period": 0.5},
            ]
            for timings in bad:
                with pytest.raises(ValueError):
                    LeaseElector(api, namespace="default", name=LEASE, identity="x", **timings)

    run(scenario())


def test_one_leader_at_a_time_and_the_other_takes_over(
    emulator: EmulatorThread, kubeconfig: pathlib.Path
) -> None:
    async def scenario() -> None:
        async with kube_api(kubeconfig) as api_a, kube_api(kubeconfig) as api_b:
            a, b = Candidate(api_a, "replica-a"), Candidate(api_b, "replica-b")
            a.start()
            await wait_until(lambda: a.running, 5, "a leads")
            b.start()

            both = 0
            deadline = time.monotonic() + 4
            while time.monotonic() < deadline:
                assert a.elector.leading != b.elector.leading, "exactly one leads"
                both += a.running and b.running
                await asyncio.sleep(0.05)
            assert both == 0
            assert a.elector.leading and b.leads == 0 and b.changes == []
            assert await holder(emulator) == "replica-a"

            stopped = time.monotonic()
            await a.stop()
            await wait_until(lambda: b.running, 10, "b takes over")
            took = time.monotonic() - stopped
            # b saw a's last renewal at most a retry period before a stopped, waits lease_duration
            # after it, and tries once per retry_period.
            assert took <= TIMINGS["lease_duration"] + TIMINGS["retry_period"] + 1.5, took
            assert not a.running and a.changes == [True, False]
            assert b.changes == [True]
            assert await holder(emulator) == "replica-b"
            await b.stop()

    run(scenario())


def test_lead_is_cancelled_when_the_api_fails_and_resumes_after(
    emulator: EmulatorThread, kubeconfig: pathlib.Path
) -> None:
    async def scenario() -> None:
        async with kube_api(kubeconfig) as api:
            a = Candidate(api, "replica-a")
            a.start()
            await wait_until(lambda: a.running, 5, "a leads")

            await asyncio.to_thread(
                emulator.inject, "*", "/leases", 500, "etcd unavailable", reason="InternalError"
            )
            failing = time.monotonic()
            await wait_until(lambda: not a.running, 6, "lead cancelled")
            # the last renewal at most a retry period before the faults, then renew_deadline of failures
            assert time.monotonic() - failing <= TIMINGS["retry_period"] + TIMINGS["renew_deadline"] + 1.5
            assert a.cancelled == 1 and not a.elector.leading and a.changes == [True, False]
            await asyncio.sleep(1.5)
            assert not a.running and a.leads == 1  # no lead while the API fails
            assert a.task is not None and not a.task.done()  # still campaigning

            await asyncio.to_thread(emulator.clear_faults)
            await wait_until(lambda: a.running, 5, "a leads again")  # still the holder: at once
            assert a.leads == 2 and a.changes == [True, False, True]
            await a.stop()

    run(scenario())


def test_lead_is_cancelled_when_renewals_hang(emulator: EmulatorThread, kubeconfig: pathlib.Path) -> None:
    """Renewals whose answers never come in time (the library alone would wait for them): the lead
    task stops once renew_deadline has passed since the last renewal this replica saw succeed."""

    async def scenario() -> None:
        async with kube_api(kubeconfig) as api:
            a = Candidate(api, "replica-a")
            a.start()
            await wait_until(lambda: a.running, 5, "a leads")

            await asyncio.to_thread(emulator.delay, "*", "/leases", 4.0)
            hanging = time.monotonic()
            await wait_until(lambda: not a.running, 6, "lead cancelled")
            assert time.monotonic() - hanging <= TIMINGS["retry_period"] + TIMINGS["renew_deadline"] + 1.0
            assert a.changes == [True, False]

            await asyncio.to_thread(emulator.clear_faults)
            await wait_until(lambda: a.running, 8, "a leads again")
            assert a.changes == [True, False, True]
            await a.stop()

    run(scenario())


def test_an_unreachable_api_server_does_not_end_run(tmp_path: pathlib.Path) -> None:
    """Connection errors are not ApiExceptions: they escape the library; run() campaigns on."""
    from conftest import write_kubeconfig

    async def scenario() -> None:
        # a port nothing listens on: bind one, note it, close it
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", f"http://127.0.0.1:{port}")
        async with kube_api(kubeconfig) as api:
            a = Candidate(api, "replica-a")
            a.start()
            await asyncio.sleep(2.5)
            assert a.task is not None and not a.task.done()
            assert not a.elector.leading and a.leads == 0
            await a.stop()

    run(scenario())


def test_a_failing_lead_is_started_again_while_leading(
    emulator: EmulatorThread, kubeconfig: pathlib.Path
) -> None:
    async def scenario() -> None:
        async with kube_api(kubeconfig) as api:
            a = Candidate(api, "replica-a")
            calls = 0

            async def flaky() -> None:
                nonlocal calls
                calls += 1
                if calls == 1:
                    raise RuntimeError("first attempt fails")
                await a.lead()

            a.start(flaky)
            await wait_until(lambda: a.running, 5, "lead started again")
            assert calls == 2 and a.changes == [True]  # the same term: leadership was not given up
            await a.stop()

    run(scenario())


def test_a_stopped_leader_releases_the_lease_so_the_next_need_not_wait_for_it(
    emulator: EmulatorThread, kubeconfig: pathlib.Path
) -> None:
    long = {"lease_duration": 30, "renew_deadline": 20, "retry_period": 1}

    async def scenario() -> None:
        async with kube_api(kubeconfig) as api_a, kube_api(kubeconfig) as api_b:
            a, b = Candidate(api_a, "replica-a", **long), Candidate(api_b, "replica-b", **long)
            a.start()
            await wait_until(lambda: a.running, 5, "a leads")
            b.start()
            await asyncio.sleep(1.5)
            assert not b.running
            stopped = time.monotonic()
            await a.stop()
            assert await holder(emulator) is None  # released: no holder
            await wait_until(lambda: b.running, 5, "b takes the released lease")
            assert time.monotonic() - stopped < long["retry_period"] + 2  # not the 30 s of an expiry
            assert await holder(emulator) == "replica-b"
            await b.stop()

    run(scenario())


# --- a lead task that swallows its cancellation (asyncio.wait_for on Python 3.11) --------------


def test_cancel_and_wait_stops_a_task_whose_wait_for_swallows_the_cancel() -> None:
    """Python 3.11's asyncio.wait_for returns normally when the cancellation arrives as its wait
    completes: one cancel() leaves the task running; cancel_and_wait repeats it until it ends."""
    from jobscheduler.backends.kubernetes._leader import cancel_and_wait

    async def scenario() -> None:
        wake = asyncio.Event()
        rounds = 0

        async def admission_like_loop() -> None:
            nonlocal rounds
            while True:
                await asyncio.wait_for(wake.wait(), 10)  # the construct under test
                wake.clear()
                rounds += 1

        task = asyncio.create_task(admission_like_loop())
        await asyncio.sleep(0)  # the loop waits
        wake.set()  # its wait completes ...
        task.cancel()  # ... at the very moment it is cancelled
        await asyncio.sleep(0.05)
        if sys.version_info < (3, 12):  # 3.12's wait_for is asyncio.timeout, which does not swallow it
            assert not task.done() and rounds == 1, "one cancel() is enough here: the race is gone"
        wake.set()
        task.cancel()  # the race once more: cancel_and_wait must still stop it
        await cancel_and_wait(task, interval=0.05)
        assert task.done()

    run(scenario(), within=10)


def test_cancel_and_wait_cancelled_itself_still_stops_the_task_first() -> None:
    from jobscheduler.backends.kubernetes._leader import cancel_and_wait

    async def scenario() -> None:
        swallowed = 0
        stopped = asyncio.Event()

        async def stubborn() -> None:
            nonlocal swallowed
            try:
                while True:
                    try:
                        await asyncio.sleep(1)
                    except asyncio.CancelledError:
                        swallowed += 1
                        if swallowed >= 5:
                            raise
            finally:
                stopped.set()

        task = asyncio.create_task(stubborn())
        await asyncio.sleep(0)
        stopper = asyncio.create_task(cancel_and_wait(task, interval=0.02))
        await asyncio.sleep(0.03)
        stopper.cancel()  # e.g. serve's shutdown cancels the elector while it stops its lead task
        with pytest.raises(asyncio.CancelledError):
            await stopper
        assert task.done() and stopped.is_set() and swallowed == 5

    run(scenario(), within=10)


class Stubborn(Candidate):
    """A lead that swallows its first ``swallow`` cancellations and goes on "admitting" (as an
    admission loop whose asyncio.wait_for completed as it was cancelled), noting at each round
    whether the elector still said it was leading."""

    def __init__(self, api: KubeApi, identity: str, swallow: int) -> None:
        super().__init__(api, identity)
        self.swallow = swallow
        self.swallowed = 0
        self.leading_after_cancel: list[bool] = []

    async def lead(self) -> None:
        self.leads += 1
        self.running = True
        try:
            while True:
                try:
                    await asyncio.sleep(0.02)
                except asyncio.CancelledError:
                    self.cancelled += 1
                    if self.swallowed >= self.swallow:
                        raise
                    self.swallowed += 1
                    self.leading_after_cancel.append(self.elector.leading)
        finally:
            self.running = False


def test_a_lead_task_that_swallows_cancellations_is_stopped_when_the_lease_is_lost(
    emulator: EmulatorThread, kubeconfig: pathlib.Path
) -> None:
    """The library cancels the lead task once and the campaign used to cancel it once more and
    then wait for it forever: a lead that swallowed both went on beside the next leader. Now it
    is cancelled until it ends, and ``leading`` (the admission writes' fence) is already false
    while it is being stopped."""
    from jobscheduler.backends.kubernetes import KubernetesBackend
    from jobscheduler.core.errors import FailedPrecondition
    from jobscheduler.core.fence import FencedBackend

    async def scenario() -> None:
        async with kube_api(kubeconfig) as api:
            a = Stubborn(api, "replica-a", swallow=3)
            fenced = FencedBackend(KubernetesBackend(api, "default"), lambda: a.elector.leading)
            try:
                a.start()
                await wait_until(lambda: a.running, 5, "a leads")
                assert a.elector.leading

                await asyncio.to_thread(
                    emulator.inject, "*", "/leases", 500, "etcd unavailable", reason="InternalError"
                )
                await wait_until(lambda: a.swallowed >= 1, 8, "the lead task is cancelled")
                assert not a.elector.leading  # fenced at once, while the lead task still runs
                await asyncio.to_thread(emulator.trim_log)
                with pytest.raises(FailedPrecondition, match="no longer leads"):
                    await fenced.admit("job-any", at=datetime.now(UTC))
                assert fenced.refused == 1
                sent = await asyncio.to_thread(emulator.requests)
                assert not [path for _, path in sent if "/jobs" in path]  # nothing was sent

                await wait_until(lambda: not a.running, 3, "the stubborn lead task ends")
                assert a.swallowed == 3 and a.cancelled == 4
                assert a.leading_after_cancel == [False, False, False]
                assert a.changes == [True, False]
                assert a.task is not None and not a.task.done()  # campaigning again
                await asyncio.to_thread(emulator.clear_faults)
                await a.stop()
            finally:
                a.swallow = 0  # whatever happened, the next cancellation ends it (and the test)

    run(scenario())
