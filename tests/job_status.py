"""The status the Job controller writes when a Job ends (the emulator has no controllers)."""

from __future__ import annotations

import time
from typing import Any


def now_rfc3339() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def ended_status(*, succeed: bool, reason: str = "BackoffLimitExceeded") -> dict[str, Any]:
    """``status`` of a Job whose one pod succeeded, or that failed for ``reason``, just now."""
    now = now_rfc3339()
    if succeed:
        return {
            "startTime": now,
            "completionTime": now,
            "succeeded": 1,
            "conditions": [
                {"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached"},
                {
                    "type": "Complete",
                    "status": "True",
                    "reason": "CompletionsReached",
                    "lastTransitionTime": now,
                },
            ],
        }
    return {
        "startTime": now,
        "failed": 1,
        "conditions": [
            {"type": "FailureTarget", "status": "True", "reason": reason},
            {
                "type": "Failed",
                "status": "True",
                "reason": reason,
                "message": "Job has reached the specified backoff limit"
                if reason == "BackoffLimitExceeded"
                else "",
                "lastTransitionTime": now,
            },
        ],
    }
