"""The blocking client."""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import Any, TypeVar, Unpack

import grpc

from jobscheduler._generated import jobscheduler_pb2 as pb
from jobscheduler._generated import jobscheduler_pb2_grpc as pb_grpc
from jobscheduler.client import _calls as calls
from jobscheduler.client import _convert as convert
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
from jobscheduler.client._sync_schedules import ScheduleMethods
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


class Client(ScheduleMethods):
    """A blocking jobscheduler client; see the package docstring. Use as a context manager or
    call :meth:`close`. Safe to share between threads."""

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
        """Connect to ``target`` (``host:port``; also ``unix:/path``, ``dns:///host:port``).

        - plaintext: the default for loopback targets (127.0.0.1, ::1, localhost, unix:); ``tls=False``
          forces it.
        - TLS: the default for any other target, against the system's CA bundle; ``ca_file`` trusts a
          private CA instead.
        - mTLS: ``client_cert_file`` and ``client_key_file`` (PEM) as well.
        - ``token`` (a literal) or ``token_file`` (read again whenever the file changes, e.g. a
          projected ServiceAccount token) is sent as ``authorization: Bearer``.
        - ``timeout``: the deadline of every call that has one (seconds, retries included);
          ``retries``: how often a call that is safe to repeat is retried after UNAVAILABLE.
        """
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
        opts = [*CHANNEL_OPTIONS, *options]
        if creds is None:
            self._channel = grpc.insecure_channel(target, options=opts)
        else:
            self._channel = grpc.secure_channel(target, creds, options=opts)
        self._stub = pb_grpc.JobSchedulerStub(self._channel)

    # --- lifecycle ------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the channel; open streams end with :class:`Cancelled`."""
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- plumbing -------------------------------------------------------------------------------

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        try:
            return self._token.metadata()
        except (OSError, ValueError) as exc:
            raise Unauthenticated(f"cannot read the bearer token: {exc}") from None

    def _unary(
        self,
        method: Callable[..., _Resp],
        request: Any,
        timeout: float | None,
        *,
        retry: bool = True,
    ) -> _Resp:
        deadline = Deadline(self.timeout if timeout is None else timeout)
        attempt = 0
        while True:
            try:
                return method(request, timeout=deadline.remaining(), metadata=self._metadata())
            except grpc.RpcError as exc:
                pause = backoff(attempt)
                if retry and retryable(exc) and attempt < self.retries and deadline.allows(pause):
                    attempt += 1
                    time.sleep(pause)
                    continue
                raise from_rpc_error(exc) from None

    def _call(self, call: Call[_T], timeout: float | None) -> _T:
        answer = self._unary(getattr(self._stub, call.rpc), call.request, timeout, retry=call.retry)
        return call.result(answer)

    # --- RPCs -----------------------------------------------------------------------------------

    def schedule(
        self,
        name: str,
        job: JobSpec | None = None,
        *,
        timeout: float | None = None,
        **options: Unpack[JobOptions],
    ) -> Job:
        """Schedule a job of ``job``'s type named ``name``; the created (or, for a ``request_id``
        seen before, the existing) job. Without ``request_id`` one is generated, so the retries
        after UNAVAILABLE never create a second job. ``options`` are ScheduleJobRequest's fields
        (:class:`JobOptions`); ``timeout`` is this call's deadline. With ``template`` (and
        ``template_version``, 0: the latest) the job starts from that job template: ``job`` and
        the other options override what they set (``job`` None: the template's)."""
        return self._call(calls.schedule(name, job, **options), timeout)

    def get(self, job_id: str, *, timeout: float | None = None) -> Job:
        """The job's current state; :class:`NotFound` if there is no such job (or not yours)."""
        response: pb.GetJobStatusResponse = self._unary(
            self._stub.GetJobStatus, pb.GetJobStatusRequest(job_id=job_id), timeout
        )
        return convert.job(response.job)

    def list_page(
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
        response: pb.ListJobsResponse = self._unary(self._stub.ListJobs, request, timeout)
        return convert.page(response)

    def list(
        self, *, page_size: int = 0, timeout: float | None = None, **filters: Unpack[JobFilterArgs]
    ) -> Iterator[Job]:
        """Every matching job, newest first, fetching page after page as it is iterated
        (``timeout`` applies to each page)."""
        token = ""
        while True:
            page = self.list_page(page_size=page_size, page_token=token, timeout=timeout, **filters)
            yield from page.jobs
            token = page.next_page_token
            if not token:
                return

    def cancel(self, job_id: str, reason: str = "", *, timeout: float | None = None) -> Job:
        """Cancel the job (idempotent: a cancelled job stays cancelled); :class:`FailedPrecondition`
        if it already finished otherwise."""
        response: pb.CancelJobResponse = self._unary(
            self._stub.CancelJob, pb.CancelJobRequest(job_id=job_id, reason=reason), timeout
        )
        return convert.job(response.job)

    def queues(self, *, timeout: float | None = None) -> builtins.list[QueueStatus]:
        """Every admission queue: its limit, running, queued and waiting jobs."""
        response: pb.ListQueuesResponse = self._unary(self._stub.ListQueues, pb.ListQueuesRequest(), timeout)
        return [convert.queue(q) for q in response.queues]

    def types(self, *, timeout: float | None = None) -> builtins.list[JobTypeInfo]:
        """Every job type the service accepts: built-in ones first, then plugin types."""
        response: pb.ListJobTypesResponse = self._unary(
            self._stub.ListJobTypes, pb.ListJobTypesRequest(), timeout
        )
        return [convert.job_type(t) for t in response.types]

    # --- streams --------------------------------------------------------------------------------

    def watch(self, job_id: str, *, timeout: float | None = None) -> Iterator[JobEvent]:
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
                for message in call:
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
                time.sleep(pause)
            finally:
                call.cancel()  # type: ignore[no-untyped-call]

    def wait(self, job_id: str, *, timeout: float | None = None) -> Job:
        """Block until the job reaches a terminal phase and return it (``timeout``: None waits
        for ever); :class:`DeadlineExceeded` when ``timeout`` passes first."""
        last: Job | None = None
        for event in self.watch(job_id, timeout=timeout):
            last = event.job
        if last is None or not last.phase.is_terminal:
            # (the watch ended without a terminal phase: the job was deleted)
            return self.get(job_id)
        return last

    def watch_all(
        self,
        *,
        resume_token: str = "",
        timeout: float | None = None,
        **filters: Unpack[JobFilterArgs],
    ) -> Iterator[JobEvent]:
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
            token = self.list_page(page_size=1, timeout=deadline.remaining(), **filters).resume_token
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
                for message in call:
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
                time.sleep(pause)
            finally:
                call.cancel()  # type: ignore[no-untyped-call]

    def logs(
        self,
        job_id: str,
        *,
        follow: bool = False,
        tail_lines: int = 0,
        attempt: int = 0,
        timeout: float | None = None,
    ) -> Iterator[LogLine]:
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
                for message in call:
                    received = True
                    yield convert.log_line(message)
                return
            except grpc.RpcError as exc:
                pause = backoff(failures)
                if received or not (retryable(exc) and failures < self.retries and deadline.allows(pause)):
                    raise from_rpc_error(exc) from None
                failures += 1
                time.sleep(pause)
            finally:
                call.cancel()  # type: ignore[no-untyped-call]


__all__ = ["Client"]
