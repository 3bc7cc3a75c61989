"""The asyncio client: the same methods as :class:`Client`, as coroutines and async iterators."""

from __future__ import annotations

import asyncio
import builtins
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any, TypeVar, Unpack

import grpc

from jobscheduler._generated import jobscheduler_pb2 as pb
from jobscheduler._generated import jobscheduler_pb2_grpc as pb_grpc
from jobscheduler.client import _calls as calls
from jobscheduler.client import _convert as convert
from jobscheduler.client._async_schedules import AsyncScheduleMethods
from jobscheduler.client._calls import Call, JobOptions
from jobscheduler.client._credentials import CHANNEL_OPTIONS, StrPath, Token, channel_credentials
from jobscheduler.client._errors import Unauthenticated, from_rpc_error
from jobscheduler.client._retry import (
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT,
    HEALTHY_STREAM_SECONDS,
    Deadline,
    JobFilterArgs,
    backoff,
    resumable,
    retryable,
)
from jobscheduler.client._types import (
    Job,
    JobEvent,
    JobPage,
    JobSpec,
    JobTypeInfo,
    LogLine,
    QueueStatus,
)

_Resp = TypeVar("_Resp")
_T = TypeVar("_T")


class AsyncClient(AsyncScheduleMethods):
    """An asyncio jobscheduler client; see the package docstring. Its channel is opened on first use,
    on the running event loop; use as an async context manager or await :meth:`close`."""

    def __init__(
        self,
        target: str,
        *,
        tls: bool | None = None,
        ca_file: StrPath | None = None,
        client_cert_file: StrPath | None = None,
        client_key_file: StrPath | None = None,
        token: str | None = None,
        token_file: StrPath | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        """Connect to ``target``: the same arguments, and defaults, as :class:`Client`'s."""
        if retries < 0:
            raise ValueError("retries must be >= 0")
        Deadline(timeout)  # validates it
        creds = channel_credentials(
            target,
            tls=tls,
            ca_file=ca_file,
            client_cert_file=client_cert_file,
            client_key_file=client_key_file,
        )
        self._token = Token(token, token_file)
        self.target = target
        self.timeout = timeout
        self.retries = retries
        self._credentials = creds
        self._options = [*CHANNEL_OPTIONS, *options]
        # (made on first use, on the running loop: a grpc.aio channel belongs to one event loop)
        self._channel: grpc.aio.Channel | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stub_of_loop: pb_grpc.JobSchedulerAsyncStub | None = None

    @property
    def _stub(self) -> pb_grpc.JobSchedulerAsyncStub:
        """The stub on a channel of the running loop (a new channel if the loop changed, e.g.
        one ``asyncio.run`` after another)."""
        loop = asyncio.get_running_loop()
        if self._stub_of_loop is None or self._loop is not loop:
            if self._credentials is None:
                self._channel = grpc.aio.insecure_channel(self.target, options=self._options)
            else:
                self._channel = grpc.aio.secure_channel(self.target, self._credentials, options=self._options)
            self._loop = loop
            self._stub_of_loop = pb_grpc.JobSchedulerStub(self._channel)
        return self._stub_of_loop

    # --- lifecycle ------------------------------------------------------------------------------

    async def close(self) -> None:
        """Close the channel; open streams end with :class:`Cancelled`."""
        channel, self._channel, self._stub_of_loop = self._channel, None, None
        if channel is not None and self._loop is asyncio.get_running_loop():
            await channel.close(None)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # --- plumbing -------------------------------------------------------------------------------

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        try:
            return self._token.metadata()
        except (OSError, ValueError) as exc:
            raise Unauthenticated(f"cannot read the bearer token: {exc}") from None

    async def _unary(
        self,
        method: Callable[..., Awaitable[_Resp]],
        request: Any,
        timeout: float | None,
        *,
        retry: bool = True,
    ) -> _Resp:
        deadline = Deadline(self.timeout if timeout is None else timeout)
        attempt = 0
        while True:
            try:
                return await method(request, timeout=deadline.remaining(), metadata=self._metadata())
            except grpc.RpcError as exc:
                pause = backoff(attempt)
                if retry and retryable(exc) and attempt < self.retries and deadline.allows(pause):
                    attempt += 1
                    await asyncio.sleep(pause)
                    continue
                raise from_rpc_error(exc) from None

    async def _call(self, call: Call[_T], timeout: float | None) -> _T:
        answer = await self._unary(getattr(self._stub, call.rpc), call.request, timeout, retry=call.retry)
        return call.result(answer)

    # --- RPCs -----------------------------------------------------------------------------------

    async def schedule(
        self,
        name: str,
        job: JobSpec | None = None,
        *,
        timeout: float | None = None,
        **options: Unpack[JobOptions],
    ) -> Job:
        """As :meth:`Client.schedule`."""
        return await self._call(calls.schedule(name, job, **options), timeout)

    async def get(self, job_id: str, *, timeout: float | None = None) -> Job:
        """The job's current state; :class:`NotFound` if there is no such job (or not yours)."""
        response: pb.GetJobStatusResponse = await self._unary(
            self._stub.GetJobStatus, pb.GetJobStatusRequest(job_id=job_id), timeout
        )
        return convert.job(response.job)

    async def list_page(
        self,
        *,
        page_size: int = 0,
        page_token: str = "",
        timeout: float | None = None,
        **filters: Unpack[JobFilterArgs],
    ) -> JobPage:
        """One page of matching jobs, newest first (``page_size`` 1..1000, 0: the server's 50)."""
        request = pb.ListJobsRequest(
            filter=convert.job_filter(**filters), page_size=page_size, page_token=page_token
        )
        response: pb.ListJobsResponse = await self._unary(self._stub.ListJobs, request, timeout)
        return convert.page(response)

    async def list(
        self, *, page_size: int = 0, timeout: float | None = None, **filters: Unpack[JobFilterArgs]
    ) -> AsyncIterator[Job]:
        """Every matching job, newest first, fetching page after page as it is iterated
        (``timeout`` applies to each page)."""
        token = ""
        while True:
            page = await self.list_page(page_size=page_size, page_token=token, timeout=timeout, **filters)
            for job in page.jobs:
                yield job
            token = page.next_page_token
            if not token:
                return

    async def cancel(self, job_id: str, reason: str = "", *, timeout: float | None = None) -> Job:
        """Cancel the job (idempotent: a cancelled job stays cancelled); :class:`FailedPrecondition`
        if it already finished otherwise."""
        response: pb.CancelJobResponse = await self._unary(
            self._stub.CancelJob, pb.CancelJobRequest(job_id=job_id, reason=reason), timeout
        )
        return convert.job(response.job)

    async def queues(self, *, timeout: float | None = None) -> builtins.list[QueueStatus]:
        """Every admission queue: its limit, running, queued and waiting jobs."""
        response: pb.ListQueuesResponse = await self._unary(
            self._stub.ListQueues, pb.ListQueuesRequest(), timeout
        )
        return [convert.queue(q) for q in response.queues]

    async def types(self, *, timeout: float | None = None) -> builtins.list[JobTypeInfo]:
        """Every job type the service accepts: built-in ones first, then plugin types."""
        response: pb.ListJobTypesResponse = await self._unary(
            self._stub.ListJobTypes, pb.ListJobTypesRequest(), timeout
        )
        return [convert.job_type(t) for t in response.types]

    # --- streams --------------------------------------------------------------------------------

    async def watch(self, job_id: str, *, timeout: float | None = None) -> AsyncIterator[JobEvent]:
        """The job's current state (a CREATED event), then every change; ends after its terminal
        state. A dropped connection is reconnected (with backoff, up to ``retries`` times in a row):
        the state found then is reported once, as the change it amounts to, only if it differs
        from the last one reported. ``timeout``: the whole watch's deadline (None: none)."""
        deadline = Deadline(timeout)
        last: Job | None = None
        failures = 0
        while True:
            started = time.monotonic()
            call = self._stub.WatchJob(
                pb.WatchJobRequest(job_id=job_id), timeout=deadline.remaining(), metadata=self._metadata()
            )
            try:
                first = True
                async for message in call:
                    event = convert.event(message)
                    if first and last is not None:
                        first = False
                        if event.job == last:
                            continue
                        event = convert.after_reconnect(event)
                    first = False
                    failures = 0
                    last = event.job
                    yield event
                return
            except grpc.RpcError as exc:
                if time.monotonic() - started > HEALTHY_STREAM_SECONDS:
                    failures = 0
                pause = backoff(failures)
                if not (retryable(exc) and failures < self.retries and deadline.allows(pause)):
                    raise from_rpc_error(exc) from None
                failures += 1
                await asyncio.sleep(pause)
            finally:
                call.cancel()

    async def wait(self, job_id: str, *, timeout: float | None = None) -> Job:
        """Block until the job reaches a terminal phase and return it (``timeout``: None waits
        for ever); :class:`DeadlineExceeded` when ``timeout`` passes first."""
        last: Job | None = None
        async for event in self.watch(job_id, timeout=timeout):
            last = event.job
        if last is None or not last.phase.is_terminal:
            # (the watch ended without a terminal phase: the job was deleted)
            return await self.get(job_id)
        return last

    async def watch_all(
        self,
        *,
        resume_token: str = "",
        timeout: float | None = None,
        **filters: Unpack[JobFilterArgs],
    ) -> AsyncIterator[JobEvent]:
        """An event per change of every matching job, for as long as it is iterated.

        Without ``resume_token`` the watch starts now (the client first asks ListJobs for a
        token, so even the first connection can be resumed). A dropped connection, or a stream the
        server ended because it fell too far behind (the caller read too slowly), is reconnected
        after the last event's ``resume_token`` (with backoff, up to ``retries`` times in a row
        without an event): nothing is lost or repeated. A token older than the server's retained
        window, or from another server run, raises :class:`OutOfRange`: list the jobs again and
        watch anew (as does a stream that keeps falling behind once ``retries`` is spent:
        ``OutOfRange.fell_behind`` tells the two apart). ``timeout``: the whole watch's deadline
        (None: none)."""
        deadline = Deadline(timeout)
        token = resume_token
        if not token:
            token = (await self.list_page(page_size=1, timeout=deadline.remaining(), **filters)).resume_token
        job_filter = convert.job_filter(**filters)
        failures = 0
        while True:
            started = time.monotonic()
            call = self._stub.WatchJobs(
                pb.WatchJobsRequest(filter=job_filter, resume_token=token),
                timeout=deadline.remaining(),
                metadata=self._metadata(),
            )
            try:
                async for message in call:
                    event = convert.event(message)
                    token = event.resume_token or token
                    failures = 0
                    yield event
                return
            except grpc.RpcError as exc:
                if time.monotonic() - started > HEALTHY_STREAM_SECONDS:
                    failures = 0
                pause = backoff(failures)
                if not (resumable(exc) and token and failures < self.retries and deadline.allows(pause)):
                    raise from_rpc_error(exc) from None
                failures += 1
                await asyncio.sleep(pause)
            finally:
                call.cancel()

    async def logs(
        self,
        job_id: str,
        *,
        follow: bool = False,
        tail_lines: int = 0,
        attempt: int = 0,
        timeout: float | None = None,
    ) -> AsyncIterator[LogLine]:
        """The job's output line by line: the last ``tail_lines`` (0: all) of ``attempt`` (1-based;
        0: the latest); with ``follow``, new lines while the job runs. Retried after UNAVAILABLE
        only until the first line arrived. ``timeout``: the whole call's deadline (default: the
        client's timeout without ``follow``, none with it)."""
        deadline = Deadline(timeout if timeout is not None or follow else self.timeout)
        request = pb.GetJobLogsRequest(job_id=job_id, follow=follow, tail_lines=tail_lines, attempt=attempt)
        failures = 0
        received = False
        while True:
            call = self._stub.GetJobLogs(request, timeout=deadline.remaining(), metadata=self._metadata())
            try:
                async for message in call:
                    received = True
                    yield convert.log_line(message)
                return
            except grpc.RpcError as exc:
                pause = backoff(failures)
                if received or not (retryable(exc) and failures < self.retries and deadline.allows(pause)):
                    raise from_rpc_error(exc) from None
                failures += 1
                await asyncio.sleep(pause)
            finally:
                call.cancel()


__all__ = ["AsyncClient"]
