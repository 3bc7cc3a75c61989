"""Serialised ``Job`` messages, built once per record version, and answers made of them.

Building a ``Job`` (:func:`convert.job_message`) costs ~50 us; a ListJobs page of 100 would
spend 5 ms on it. The cache keeps each recently sent record's encoding, keyed by job id and
valid while the index still holds that very record object (records are immutable and replaced
on every change, so a changed job is re-encoded the next time it is sent). It is bounded
(least recently used out): ``MAX_ENTRIES`` encodings of ~0.6 KB.

A running job's ``duration`` depends on the time it is sent: the cached encoding leaves it out
and ``duration`` is appended when sent (a field appended to a message's encoding sets it: the
protobuf encoding merges). A finished job's duration is fixed and cached with the rest.

The answers are the response messages' encodings (a length-delimited field per job), which the
server sends as they are when it passes bytes through, or parses back otherwise.
"""

from __future__ import annotations

import collections
from datetime import UTC, datetime, timedelta

from google.protobuf.duration_pb2 import Duration

from jobscheduler._generated import jobscheduler_pb2 as pb
from jobscheduler.api.convert import job_message
from jobscheduler.core.model import JobRecord

#: Encodings kept (a page holds at most 1000); at ~0.7 KB with the bookkeeping, about 3 MB.
MAX_ENTRIES = 4096


def _tag(
    message: type[pb.Job] | type[pb.ListJobsResponse] | type[pb.GetJobStatusResponse], name: str
) -> bytes:
    """The key of a length-delimited field (wire type 2) of ``message``."""
    return _varint(message.DESCRIPTOR.fields_by_name[name].number << 3 | 2)


def _varint(n: int) -> bytes:
    if n < 0x4000:  # (every Job and most answers: one or two bytes)
        return bytes((n,)) if n < 0x80 else bytes((n & 0x7F | 0x80, n >> 7))
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(tag: bytes, data: bytes) -> bytes:
    return tag + _varint(len(data)) + data


_DURATION = _tag(pb.Job, "duration")
_LIST_JOBS = _tag(pb.ListJobsResponse, "jobs")
_LIST_NEXT = _tag(pb.ListJobsResponse, "next_page_token")
_LIST_RESUME = _tag(pb.ListJobsResponse, "resume_token")
_GET_JOB = _tag(pb.GetJobStatusResponse, "job")


def _running(record: JobRecord) -> bool:
    return record.started_at is not None and record.finished_at is None


class JobBytes:
    """The cache (one per process: :data:`JOBS`); everything runs on the event loop."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        self._entries: collections.OrderedDict[str, tuple[JobRecord, bytes]] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def job(self, record: JobRecord, now: datetime) -> bytes:
        """``job_message(record, now)``, serialised."""
        entries = self._entries
        entry = entries.get(record.job_id)
        if entry is not None and entry[0] is record:
            entries.move_to_end(record.job_id)
            data = entry[1]
        else:
            message = job_message(record, now)
            if _running(record):
                message.ClearField("duration")
            data = message.SerializeToString()
            entries[record.job_id] = (record, data)
            if len(entries) > self.max_entries:
                entries.popitem(last=False)
        if _running(record):
            assert record.started_at is not None
            duration = Duration()
            duration.FromTimedelta(max(now - record.started_at, timedelta(0)))
            data += _field(_DURATION, duration.SerializeToString())
        return data

    def get_response(self, record: JobRecord, now: datetime | None = None) -> bytes:
        """A ``GetJobStatusResponse``, serialised."""
        return _field(_GET_JOB, self.job(record, now or datetime.now(UTC)))

    def list_response(
        self,
        records: list[JobRecord],
        next_page_token: str = "",
        resume_token: str = "",
        now: datetime | None = None,
    ) -> bytes:
        """A ``ListJobsResponse``, serialised."""
        at = now or datetime.now(UTC)
        parts = [_field(_LIST_JOBS, self.job(r, at)) for r in records]
        if next_page_token:
            parts.append(_field(_LIST_NEXT, next_page_token.encode()))
        if resume_token:
            parts.append(_field(_LIST_RESUME, resume_token.encode()))
        return b"".join(parts)


#: The process's cache.
JOBS = JobBytes()
