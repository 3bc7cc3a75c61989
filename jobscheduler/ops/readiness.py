"""Readiness shared between the asyncio server and the HTTP sidecar thread."""

from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ReadinessState:
    ready: bool
    reason: str


class Readiness:
    """Thread-safe: set from the event loop, read from the sidecar thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state = ReadinessState(False, "starting")

    def set(self, ready: bool, reason: str) -> None:
        with self._lock:
            self._state = ReadinessState(ready, reason)

    def get(self) -> ReadinessState:
        with self._lock:
            return self._state
