"""Schedule a timer job and follow it to its end with jobscheduler.client.

    export JOBSCHEDULER_ADDR=127.0.0.1:50054 REPORT_URL=http://127.0.0.1:50053/
    python examples/schedule_and_follow.py

Exit status 0 when the job SUCCEEDED. Add ca_file=..., token_file=... to Client for TLS and tokens.
"""

from __future__ import annotations

import os
import sys

from jobscheduler.client import Client, JobPhase, JobSchedulerError, TimerJob


def main() -> int:
    address = os.environ.get("JOBSCHEDULER_ADDR", "127.0.0.1:50054")
    report_url = os.environ.get("REPORT_URL", "http://127.0.0.1:50053/")
    with Client(address) as client:
        try:
            job = client.schedule("example", TimerJob(1, "example", report_url), labels={"app": "example"})
            print(f"scheduled {job.job_id}", flush=True)
            for event in client.watch(job.job_id, timeout=60):
                print(f"{event.type}: {event.job.phase} {event.job.message}", flush=True)
            final = client.get(job.job_id)
        except JobSchedulerError as exc:
            print(f"error {type(exc).__name__}: {exc} (request id {exc.request_id})", file=sys.stderr)
            return 1
    return 0 if final.phase is JobPhase.SUCCEEDED else 1


if __name__ == "__main__":
    sys.exit(main())
