"""Leader election on a ``coordination.k8s.io/v1`` Lease, through the official client's
``kubernetes.aio.leaderelection`` (its election algorithm, its ``LeaseLock``).

What this module adds around the library, which on its own:

- returns from ``LeaderElection.run()`` once the lease is lost (``LeaseElector.run`` campaigns
  again, for as long as it runs);
- lets every error that is not an ``ApiException`` (the API server unreachable, a timeout) escape
  ``run()``, and if that happens while leading, leaves the leader's task running: here the lead
  task is always cancelled (and awaited) when ``run()`` ends, however it ends;
- sends the lock's requests without a deadline (the client's default is five minutes) and checks
  the renew deadline only between attempts, so one hung request would keep a leader leading past
  the point where another replica may take over: here each request is bounded by
  ``renew_deadline``, and the lead task is cancelled once ``renew_deadline`` has passed since the
  last successful write (a write *sent* at t means no other candidate can take over before
  t + ``lease_duration``);
- writes ``leaseDurationSeconds`` with ``int(str(lease_duration))``, which fails for a float:
  ``lease_duration`` is rounded up to whole seconds;
- creates the Lease with ``pretty=True``, which this client version rejects (it takes a string):
  the lock's ``create`` is the library's without that argument;
- logs every refused Lease write (a 409 when another candidate wrote first: routine during a
  take-over) as an ERROR with a traceback: here as a one-line warning.

Cancelling the lead task is repeated until it has ended (``cancel_and_wait``): on Python 3.11,
``asyncio.wait_for`` swallows a cancellation that arrives as its wait completes, and a lead task
cancelled once could go on (admitting beside the next leader). ``leading`` turns false the moment
the renew deadline passes or the campaign ends, before the lead task has stopped: the admission
loop's writes check it (``fenced``), so a lead task slow to stop writes nothing more. Writes sent
before that complete within the API request timeout, and the configuration requires
``lease_duration - renew_deadline`` to exceed it (config.lease_timing_problem): the old leader's
last write has landed before anyone else may take the Lease.

When ``run()`` is cancelled while leading, the lease is released once the lead task has ended
(the library has no release): the next candidate takes it at its next try. After a crash the
next leader takes over once ``lease_duration`` has passed without a renewal.

The lock's requests share the API client (configuration, credentials, connection pool) with
``KubeApi`` but not its write limit: a renewal must never queue behind a burst of job writes.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from kubernetes.aio import client as k8s_client
from kubernetes.aio.client.exceptions import ApiException
from kubernetes.aio.leaderelection.electionconfig import Config
from kubernetes.aio.leaderelection.leaderelection import LeaderElection
from kubernetes.aio.leaderelection.leaderelectionrecord import LeaderElectionRecord
from kubernetes.aio.leaderelection.resourcelock.leaselock import LeaseLock

from jobscheduler.backends.kubernetes._client import KubeApi
from jobscheduler.logs import get_logger

log = get_logger("jobscheduler.leader")
#: Where the library logs (through the stdlib), for the one lock method replaced here.
_library_log = logging.getLogger("kubernetes.aio.leaderelection.resourcelock.leaselock")


class _TimedLeaseLock(LeaseLock):
    """The library's LeaseLock, each request bounded in time, each successful write reported
    with the (event loop) time it was sent."""

    def __init__(
        self,
        name: str,
        namespace: str,
        identity: str,
        api: KubeApi,
        *,
        call_timeout: float,
        on_written: Callable[[float], None],
    ) -> None:
        super().__init__(name, namespace, identity, api.api_client)
        self._call_timeout = call_timeout
        self._on_written = on_written

    # asyncio.timeout, not asyncio.wait_for: on Python 3.11, wait_for swallows a cancellation that
    # arrives as the request completes, and the election task would go on after being cancelled.

    async def get(
        self, name: str, namespace: str
    ) -> tuple[bool, LeaderElectionRecord] | tuple[bool, Exception] | tuple[bool, None]:
        async with asyncio.timeout(self._call_timeout):
            return await super().get(name, namespace)

    async def create(self, name: str, namespace: str, election_record: LeaderElectionRecord) -> bool:
        """As LeaseLock.create, without its ``pretty=True``: the client validates its arguments and
        takes only a string there, so the library's own create always fails (pydantic
        ValidationError) and a missing Lease would never be created."""
        body = k8s_client.V1Lease(
            metadata=k8s_client.V1ObjectMeta(name=name),
            spec=self.update_lease(election_record),
        )
        sent = asyncio.get_running_loop().time()
        try:
            async with asyncio.timeout(self._call_timeout):
                await self.api_instance.create_namespaced_lease(namespace, body)
        except ApiException as exc:  # e.g. 409: another candidate created it first
            _library_log.warning(
                "failed to create lock %s/%s: %s %s", namespace, name, exc.status, exc.reason
            )
            return False
        self._on_written(sent)
        return True

    async def update(self, name: str, namespace: str, updated_record: LeaderElectionRecord) -> bool:
        """As LeaseLock.update, with a one-line warning instead of its ERROR with a traceback for
        an expected refusal (a 409 Conflict when another candidate wrote the Lease first)."""
        assert self.lease_reference is not None
        self.lease_reference.spec = self.update_lease(updated_record, self.lease_reference.spec)
        sent = asyncio.get_running_loop().time()
        try:
            async with asyncio.timeout(self._call_timeout):
                await self.api_instance.replace_namespaced_lease(
                    name=name, namespace=namespace, body=self.lease_reference
                )
        except ApiException as exc:
            _library_log.warning(
                "failed to update lock %s/%s: %s %s", namespace, name, exc.status, exc.reason
            )
            return False
        self._on_written(sent)
        return True


@dataclass
class _Term:
    """One campaign: the lead task the library started for it, and whether the campaign is over
    (a lead task that only starts after that returns at once)."""

    task: asyncio.Task[None] | None = None
    over: bool = False


async def cancel_and_wait(task: asyncio.Task[Any], *, interval: float = 0.1) -> None:
    """Cancel ``task`` and wait until it is done, cancelling it again every ``interval`` while it
    goes on: a cancellation swallowed somewhere (``asyncio.wait_for`` on Python 3.11 swallows one
    that arrives as its wait completes) must not leave a lead task or an election running on its
    own. Its outcome is retrieved and dropped.

    Cancelling the caller meanwhile does not abandon ``task``: it is still stopped first, then
    the caller's CancelledError is raised."""
    interrupted = False
    while not task.done():
        task.cancel()
        try:
            await asyncio.wait({task}, timeout=interval)
        except asyncio.CancelledError:
            interrupted = True
    if not task.cancelled():
        task.exception()  # retrieved: it was logged, or the election is over anyway
    if interrupted:
        raise asyncio.CancelledError


async def _nothing() -> None:
    """The library's onstopped_leading: the lead task is cancelled by ``LeaseElector.run``."""


class LeaseElector:
    """One candidate for a Lease: runs ``lead()`` only while it holds the Lease.

    ``lease_duration``: how long the others wait after the last renewal they saw before taking
    over (rounded up to whole seconds); ``renew_deadline``: how long the leader keeps trying to
    renew before it gives up (and cancels ``lead``); ``retry_period``: the pause between attempts.
    The library requires retry_period >= 1, renew_deadline > 1.2 * retry_period and
    lease_duration > renew_deadline (ValueError otherwise).

    ``on_change(leading)`` is called when leadership is gained (before ``lead`` starts) and lost
    (after ``lead`` has been cancelled and has finished).
    """

    def __init__(
        self,
        api: KubeApi,
        *,
        namespace: str,
        name: str,
        identity: str,
        lease_duration: float = 15,
        renew_deadline: float = 10,
        retry_period: float = 2,
        on_change: Callable[[bool], None] = lambda leading: None,
    ) -> None:
        if not lease_duration > renew_deadline:
            raise ValueError(
                f"lease_duration ({lease_duration}) must be greater than renew_deadline ({renew_deadline})"
            )
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_duration = math.ceil(lease_duration)  # the Lease holds whole seconds
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self._on_change = on_change
        self._leading = False
        self._ending = False  # the campaign is over: fenced while its lead task stops
        self._written_at = 0.0  # loop time the last successful write of the lock was sent
        self._lock = _TimedLeaseLock(
            name, namespace, identity, api, call_timeout=renew_deadline, on_written=self._written
        )
        self._config(_nothing)  # the library's checks of the timings, now rather than in run()

    @property
    def leading(self) -> bool:
        """Whether this candidate holds the Lease and may act on it: false from the moment the
        renew deadline has passed since the last successful renewal, or the campaign ends (the
        lead task may still be stopping then)."""
        if not self._leading or self._ending:
            return False
        return asyncio.get_running_loop().time() < self._written_at + self.renew_deadline

    async def run(self, lead: Callable[[], Awaitable[None]]) -> None:
        """Until cancelled: campaign for the Lease; while holding it, run ``lead()`` as a task;
        cancel that task as soon as the lease is lost (or renewal fails for renew_deadline, or any
        error escapes the library), then campaign again.

        ``lead`` is expected to run until cancelled: if it returns or raises while this candidate
        leads, it is started again after ``retry_period``. Only cancellation ends ``run``.
        """
        while True:
            await self._campaign(lead)
            await asyncio.sleep(self.retry_period)

    # --- one campaign ---------------------------------------------------------------------------

    def _config(self, onstarted_leading: Callable[[], Coroutine[Any, Any, None]]) -> Config:
        return Config(
            self._lock,
            self.lease_duration,
            self.renew_deadline,
            self.retry_period,
            onstarted_leading,
            _nothing,
        )

    async def _campaign(self, lead: Callable[[], Awaitable[None]]) -> None:
        """One ``LeaderElection.run()``: acquire, lead, lose (or fail); the lead task is over when
        this returns. Errors are logged; only cancellation propagates."""
        term = _Term()
        self._ending = False
        election = LeaderElection(self._config(functools.partial(self._lead, term, lead)))
        elected = asyncio.create_task(election.run(), name=f"lease {self.namespace}/{self.name}")
        why = "lease lost"
        try:
            while not elected.done():
                wait = self.retry_period
                if self._leading:
                    left = self._written_at + self.renew_deadline - asyncio.get_running_loop().time()
                    if left <= 0:
                        why = f"not renewed for {self.renew_deadline}s"
                        break
                    wait = min(wait, left)
                await asyncio.wait({elected}, timeout=wait)
            else:
                error = None if elected.cancelled() else elected.exception()
                if error is not None:
                    why = f"leader election failed: {error!r}"
                    log.warning("leader election failed", lease=self._lease_ref(), error=repr(error))
        except asyncio.CancelledError:
            why = "stopped"
            raise
        finally:
            term.over = True
            self._ending = True
            try:
                if term.task is not None:
                    await cancel_and_wait(term.task)
                await cancel_and_wait(elected)
                if term.task is not None:  # started by the library meanwhile
                    await cancel_and_wait(term.task)
            finally:
                if self._leading:
                    self._leading = False
                    log.info("leadership lost", lease=self._lease_ref(), identity=self.identity, reason=why)
                    self._notify(False)
                    if why == "stopped":
                        await self._release()

    async def _release(self) -> None:
        """Give the Lease up on a clean stop (as client-go's ReleaseOnCancel): the next candidate
        takes it at its next try instead of waiting for it to expire. Only once the lead task
        has ended; best effort, bounded in time (if it fails, the Lease simply expires)."""
        api = self._lock.api_instance
        try:
            async with asyncio.timeout(min(self.renew_deadline, 2.0)):
                lease = await api.read_namespaced_lease(self.name, self.namespace)
                if lease.spec is None or lease.spec.holder_identity != self.identity:
                    return
                lease.spec.holder_identity = None
                lease.spec.lease_duration_seconds = 1
                await api.replace_namespaced_lease(name=self.name, namespace=self.namespace, body=lease)
        except Exception as exc:  # the API unreachable, a conflict: the Lease expires instead
            log.warning("lease not released; it expires", lease=self._lease_ref(), error=repr(exc))
            return
        log.info("lease released", lease=self._lease_ref(), identity=self.identity)

    async def _lead(self, term: _Term, lead: Callable[[], Awaitable[None]]) -> None:
        """The library's onstarted_leading task, for as long as this campaign leads."""
        if term.over:
            return  # the campaign ended before this task first ran
        term.task = asyncio.current_task()
        self._leading = True
        log.info("leadership gained", lease=self._lease_ref(), identity=self.identity)
        self._notify(True)
        while True:
            try:
                await lead()
                if term.over:
                    return  # it swallowed its cancellation: the campaign is over, do not restart it
                log.warning("lead returned while leading; starting it again", lease=self._lease_ref())
            except Exception:
                log.exception("lead failed while leading; starting it again", lease=self._lease_ref())
            await asyncio.sleep(self.retry_period)

    def _written(self, sent: float) -> None:
        self._written_at = max(self._written_at, sent)

    def _notify(self, leading: bool) -> None:
        try:
            self._on_change(leading)
        except Exception:
            log.exception("on_change failed", lease=self._lease_ref(), leading=leading)

    def _lease_ref(self) -> str:
        return f"{self.namespace}/{self.name}"
