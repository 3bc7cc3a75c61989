"""Compact label maps for cached records: what jobs share is stored once.

A job's labels are mostly the same as many other jobs' (team, env, app, the service's own
managed-by and type labels) except for the labels holding the job's own id and name. A
:class:`LabelShape` holds the shared part once (the pairs, and which keys hold the job's id
or name); a job's :class:`Labels` is the shape plus the id and name strings its record
already holds. A cached record stores only the shape (``store_labels``; no per-job object)
and reads its labels through ``read_labels``: 0 bytes per job instead of a dict's 200-300.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Final

#: Distinct shapes kept; past this, labels stay plain dicts (hostile or very varied labels).
MAX_SHAPES: Final = 4096
#: Label values longer than this are not shared (almost surely one job's own).
_MAX_SHARED_VALUE: Final = 63


class LabelShape:
    __slots__ = ("common", "keys", "own")

    def __init__(self, keys: tuple[str, ...], common: dict[str, str], own: dict[str, bool]) -> None:
        #: Every key, in the original order.
        self.keys = keys
        self.common = common
        #: Keys whose value is the job's id (True) or its name (False).
        self.own = own

    def __repr__(self) -> str:
        own = {k: "<job id>" if v else "<job name>" for k, v in self.own.items()}
        return f"LabelShape({ {k: self.common.get(k) or own[k] for k in self.keys} })"


class Labels(Mapping[str, str]):
    """A read-only label map: a shared shape, the job's id and its name."""

    __slots__ = ("_job_id", "_name", "_shape")

    def __init__(self, shape: LabelShape, job_id: str, name: str) -> None:
        self._shape = shape
        self._job_id = job_id
        self._name = name

    def __getitem__(self, key: str) -> str:
        value = self.get(key)
        if value is None:  # (label values are strings: None is absent)
            raise KeyError(key)
        return value

    def get(self, key: str, default: str | None = None) -> str | None:  # type: ignore[override]
        shape = self._shape
        value = shape.common.get(key)
        if value is not None:
            return value
        own = shape.own.get(key)
        if own is None:
            return default
        return self._job_id if own else self._name

    def __contains__(self, key: object) -> bool:
        return key in self._shape.common or key in self._shape.own

    def __iter__(self) -> Iterator[str]:
        return iter(self._shape.keys)

    def __len__(self) -> int:
        return len(self._shape.keys)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Labels) and other._shape is self._shape:
            return all(self[k] == other[k] for k in self._shape.own)
        if isinstance(other, Mapping):
            return dict(self.items()) == dict(other.items())
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # (like a dict)

    def __repr__(self) -> str:
        return repr(dict(self.items()))


_SHAPES: dict[tuple[tuple[str, str | bool], ...], LabelShape] = {}


def compact_labels(labels: Mapping[str, str], job_id: str, name: str) -> Mapping[str, str]:
    """``labels`` as :class:`Labels` over a shared shape (a plain dict once ``MAX_SHAPES`` distinct
    shapes exist, or for a value too long to share)."""
    return read_labels(store_labels(labels, job_id, name), job_id, name)


def read_labels(stored: LabelShape | Mapping[str, str], job_id: str, name: str) -> Mapping[str, str]:
    """What ``store_labels`` stored, as the map it was made from."""
    return Labels(stored, job_id, name) if isinstance(stored, LabelShape) else stored


def store_labels(labels: Mapping[str, str], job_id: str, name: str) -> LabelShape | dict[str, str]:
    """What a cached record keeps of ``labels``: their shared shape (no per-job object at all:
    the record holds the id and name), or a plain dict (see compact_labels)."""
    if isinstance(labels, Labels) and labels._job_id == job_id and labels._name == name:
        return labels._shape
    signature: list[tuple[str, str | bool]] = []
    for key, value in labels.items():
        if value == job_id:
            signature.append((key, True))
        elif value == name:
            signature.append((key, False))
        elif len(value) > _MAX_SHARED_VALUE:
            return dict(labels)
        else:
            signature.append((key, value))
    frozen = tuple(signature)
    shape = _SHAPES.get(frozen)
    if shape is None:
        if len(_SHAPES) >= MAX_SHAPES:
            return dict(labels)
        common = {k: v for k, v in frozen if isinstance(v, str)}
        own = {k: v for k, v in frozen if isinstance(v, bool)}
        shape = _SHAPES[frozen] = LabelShape(tuple(k for k, _ in frozen), common, own)
    return shape
