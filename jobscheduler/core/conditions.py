"""Compact condition lists for cached records: the words jobs share are stored once.

A finished Job has two or three conditions (``SuccessCriteriaMet`` and ``Complete``, or
``FailureTarget`` and ``Failed``) whose type, status, reason and message are the same as those
of thousands of other Jobs, and whose transition times are usually all one time (the record's
``finished_at``). :class:`Conditions` holds the words as one tuple shared by every job with
the same ones, and the times as one datetime when they are all equal: 48 bytes per job instead
of about 140 for a tuple of JobCondition objects. It reads as a sequence of JobCondition.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Final, overload

from jobscheduler.core.model import JobCondition

#: Distinct word lists kept; past this, conditions stay plain tuples (hostile or varied ones).
MAX_WORDS: Final = 4096

_Words = tuple[tuple[str, str, str, str], ...]
_WORDS: dict[_Words, _Words] = {}


class Conditions(Sequence[JobCondition]):
    """A read-only sequence of JobCondition: shared words, and the times (one if all equal)."""

    __slots__ = ("_times", "_words")

    def __init__(self, words: _Words, times: datetime | tuple[datetime | None, ...] | None) -> None:
        self._words = words
        self._times = times

    def _time(self, i: int) -> datetime | None:
        times = self._times
        return times[i] if isinstance(times, tuple) else times

    @overload
    def __getitem__(self, i: int) -> JobCondition: ...
    @overload
    def __getitem__(self, i: slice) -> tuple[JobCondition, ...]: ...
    def __getitem__(self, i: int | slice) -> JobCondition | tuple[JobCondition, ...]:
        if isinstance(i, slice):
            return tuple(self)[i]
        type_, status, reason, message = self._words[i]
        return JobCondition(type_, status, reason, message, self._time(i if i >= 0 else len(self) + i))

    def __iter__(self) -> Iterator[JobCondition]:
        for i, (type_, status, reason, message) in enumerate(self._words):
            yield JobCondition(type_, status, reason, message, self._time(i))

    def __len__(self) -> int:
        return len(self._words)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Conditions):  # (on every change the index classifies: no objects made)
            n = len(self._words)
            return self._words == other._words and all(self._time(i) == other._time(i) for i in range(n))
        if isinstance(other, Sequence):
            return tuple(self) == tuple(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return repr(tuple(self))


def compact_conditions(conditions: Iterable[JobCondition]) -> Sequence[JobCondition]:
    """``conditions`` as :class:`Conditions` over shared words (``()`` for none; a plain tuple
    once ``MAX_WORDS`` distinct word lists exist)."""
    listed = tuple(conditions)
    if not listed:
        return ()
    words = tuple((c.type, c.status, c.reason, c.message) for c in listed)
    shared = _WORDS.get(words)
    if shared is None:
        if len(_WORDS) >= MAX_WORDS:
            return listed
        shared = _WORDS[words] = words
    first = listed[0].last_transition_time
    same = all(c.last_transition_time == first for c in listed)
    return Conditions(shared, first if same else tuple(c.last_transition_time for c in listed))
