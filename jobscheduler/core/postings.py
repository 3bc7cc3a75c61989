"""The live index's lists of job ids, newest first: all of them, and one per value a filter asks for.

Every job id is in the list of all jobs and in one list per *term* it has: its phase, type,
queue, owner, schedule, template, the job it reruns, and each label ``key=value`` (except the
service's own per-job or constant labels, ``UNINDEXED_LABELS``). Each list is kept sorted by
the records' order key (creation time, then id), ascending, as a plain list of the id strings
the records already hold (8 bytes per entry).

A ListJobs page then walks, of the filter's alternatives (:func:`filter_terms`), the one with
the fewest entries (the union of its terms' lists, merged newest first), instead of every
job: a filter that matches few jobs reads few, one whose value no job has reads none (a
selector on the job-id label reads at most the jobs of those ids; the name prefix and the other
unindexed labels are not looked up: a filter with nothing else scans). The
caller still applies the whole filter to every record walked: the lists only choose which
records are looked at, so a page is exactly what the plain predicate over all jobs gives.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime

from jobscheduler.core.manifests import JOB_ID_LABEL, JOB_NAME_LABEL, JOB_TYPE_LABEL, MANAGED_BY_LABEL
from jobscheduler.core.model import JobFilter, JobRecord
from jobscheduler.core.selectors import Selector

#: A value a filter can ask for: ("phase", JobPhase), ("type", str), ..., ("label", key, value).
Term = tuple[object, ...]
OrderKey = tuple[datetime, str]

#: Labels not indexed: every job of the service has one with its own id or name (a list per
#: job), the same value on all (managed-by) or the type again (the type field is indexed).
UNINDEXED_LABELS = frozenset({JOB_ID_LABEL, JOB_NAME_LABEL, MANAGED_BY_LABEL, JOB_TYPE_LABEL})
#: Record fields indexed when set (an unset filter field matches everything: "" is not looked up).
_OPTIONAL_FIELDS = ("owner", "schedule", "template", "rerun_of")


def record_terms(r: JobRecord) -> set[Term]:
    terms: set[Term] = {("phase", r.phase), ("type", r.type), ("queue", r.queue)}
    for name in _OPTIONAL_FIELDS:
        if value := getattr(r, name):
            terms.add((name, value))
    for key, value in r.labels.items():
        if key not in UNINDEXED_LABELS or (key == JOB_ID_LABEL and value != r.job_id):
            terms.add(("label", key, value))  # (a job-id label not the job's own: by hand)
    return terms


def filter_terms(f: JobFilter, selector: Selector) -> list[list[Term]]:
    """The filter's alternatives: every record it matches has at least one term of each."""
    out: list[list[Term]] = []
    if f.phases:
        out.append([("phase", p) for p in f.phases])
    if f.type:
        out.append([("type", f.type)])
    if f.queue:
        out.append([("queue", f.queue)])
    for name in _OPTIONAL_FIELDS:
        if value := getattr(f, name):
            out.append([(name, value)])
    for key, values in selector.equalities:
        if key == JOB_ID_LABEL:  # the jobs of those ids, and any labelled so by hand
            out.append([t for v in values for t in (("id", v), ("label", key, v))])
        elif key not in UNINDEXED_LABELS:
            out.append([("label", key, v) for v in values])
    return out


class Postings:
    """The sorted id lists; ``key(job_id)`` is the order key of the job's current record."""

    def __init__(self, key: Callable[[str], OrderKey], known: Callable[[str], bool]) -> None:
        self._key = key
        #: Whether a job id is in the index (an ("id", job id) term's list is that id or nothing).
        self._known = known
        #: Every job id.
        self.all: list[str] = []
        self._lists: dict[Term, list[str]] = {}

    def size(self, term: Term) -> int:
        if term[0] == "id":
            return 1 if self._ids(term) else 0
        ids = self._lists.get(term)
        return len(ids) if ids is not None else 0

    def add(self, job_id: str, terms: Iterable[Term], key: OrderKey) -> None:
        """Add ``job_id`` (whose order key is ``key``) to the lists of ``terms``; None: to all's."""
        for term in terms:
            self._insert(self._lists.setdefault(term, []), job_id, key)

    def discard(self, job_id: str, terms: Iterable[Term], key: OrderKey) -> None:
        """Remove ``job_id`` from the lists of ``terms``; ``key`` is the order key it was added with."""
        for term in terms:
            ids = self._lists.get(term)
            if ids is not None:
                self._delete(ids, job_id, key)
                if not ids:
                    del self._lists[term]

    def add_to_all(self, job_id: str, key: OrderKey) -> None:
        self._insert(self.all, job_id, key)

    def discard_from_all(self, job_id: str, key: OrderKey) -> None:
        self._delete(self.all, job_id, key)

    def rebuild(self, ordered: Iterable[tuple[str, set[Term]]]) -> None:
        """From scratch, from (job id, terms) in ascending order: one pass, no insertions."""
        self.all = []
        self._lists = {}
        for job_id, terms in ordered:
            self.all.append(job_id)
            for term in terms:
                self._lists.setdefault(term, []).append(job_id)

    def walk(self, terms: list[Term] | None, below: OrderKey | None) -> Iterator[str]:
        """Job ids newest first from just below ``below``: all of them (``terms`` None) or those in
        the union of the terms' lists."""
        if terms is None:
            return self._descending(self.all, below)
        lists = [ids for t in terms if (ids := self._ids(t) if t[0] == "id" else self._lists.get(t))]
        if len(lists) == 1:
            return self._descending(lists[0], below)
        merged = heapq.merge(*(self._descending(ids, below) for ids in lists), key=self._key, reverse=True)
        return (job_id for job_id, _ in itertools.groupby(merged))  # (one job can be in two lists)

    def _ids(self, term: Term) -> list[str]:
        job_id = term[1]
        return [job_id] if isinstance(job_id, str) and self._known(job_id) else []

    def _descending(self, ids: list[str], below: OrderKey | None) -> Iterator[str]:
        i = bisect.bisect_left(ids, below, key=self._key) if below is not None else len(ids)
        while i > 0:
            i -= 1
            yield ids[i]

    def _insert(self, ids: list[str], job_id: str, key: OrderKey) -> None:
        if not ids or self._key(ids[-1]) < key:
            ids.append(job_id)  # the common case: a new job is the newest
        else:
            ids.insert(bisect.bisect_left(ids, key, key=self._key), job_id)

    def _delete(self, ids: list[str], job_id: str, key: OrderKey) -> None:
        i = bisect.bisect_left(ids, key, key=self._key)
        if i < len(ids) and ids[i] == job_id:
            del ids[i]
