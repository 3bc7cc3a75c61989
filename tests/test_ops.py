"""The ops server (/metrics) against the queue book: the book changes on the event loop while
scrapes run on the server's own threads."""

from __future__ import annotations

import asyncio
import sys
import threading
import urllib.request

from jobscheduler import metrics
from jobscheduler.core.admission import QueueBook, parse_queues
from jobscheduler.core.index import JobIndex
from jobscheduler.core.model import JobPhase, JobRecord, Priority, QueueStatus
from jobscheduler.ops.http import OpsHTTPServer
from jobscheduler.ops.readiness import Readiness

JOBS = 1000  # enough that one status() walk spans some of the loop's changes
SCRAPES = 25


def record(i: int, phase: JobPhase) -> JobRecord:
    return JobRecord.build(
        job_id=f"job-{i}",
        name=f"job-{i}",
        type="timer",
        namespace="default",
        phase=phase,
        queue=f"q{i % 7}",
        priority=Priority(list(Priority)[i % len(Priority)]),
    )


def test_metrics_scrapes_while_the_book_churns_on_the_loop() -> None:
    """The collector used to walk the book's dicts from the HTTP thread: under churn a scrape
    failed with 'dictionary changed size during iteration' (no answer at all). Now it reads a
    snapshot taken on the loop."""

    async def scenario() -> tuple[list[str], int, set[str]]:
        index = JobIndex()
        book = QueueBook(index, parse_queues("q0=2,q1=0"))
        for i in range(JOBS):
            index.apply(record(i, JobPhase.QUEUED))
        walked_on: set[str] = set()  # the threads the book's status was computed on

        def status() -> list[QueueStatus]:
            walked_on.add(threading.current_thread().name)
            return book.status()

        metrics.QUEUES.bind(status, asyncio.get_running_loop())
        ops = OpsHTTPServer("127.0.0.1", 0, Readiness())
        ops.start()
        errors: list[str] = []
        done = threading.Event()
        scraped = 0

        def scrape() -> None:
            nonlocal scraped
            try:
                for _ in range(SCRAPES):
                    url = f"http://127.0.0.1:{ops.port}/metrics"
                    try:
                        with urllib.request.urlopen(url, timeout=10) as response:
                            body = response.read().decode()
                            if response.status != 200 or "jobscheduler_queue_depth{" not in body:
                                errors.append(f"{response.status}: {body[:200]}")
                    except Exception as exc:  # the server dropped the connection, ...
                        errors.append(repr(exc))
                    scraped += 1
            finally:
                done.set()

        thread = threading.Thread(target=scrape, daemon=True)
        thread.start()
        i = 0
        try:
            while not done.is_set():  # churn: jobs come, change and go, without pause
                n = JOBS + i
                index.apply(record(n, JobPhase.QUEUED))
                index.apply(record(n, JobPhase.RUNNING))
                index.remove(f"job-{n - 50}" if i >= 50 else f"job-{i}")
                i += 1
                if i % 50 == 0:
                    await asyncio.sleep(0)  # the loop answers the collector between bursts
            await asyncio.to_thread(thread.join, 10)
        finally:
            ops.stop()
        return errors, scraped, walked_on

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # threads take turns often: a walk of the book is interrupted
    try:
        errors, scraped, walked_on = asyncio.run(scenario())
    finally:
        sys.setswitchinterval(interval)
    assert walked_on == {threading.main_thread().name}  # the loop's thread, never the server's
    assert scraped == SCRAPES
    assert errors == []
    # The loop has closed: a scrape now reports the last snapshot instead of failing.
    assert metrics.QUEUES.snapshot()
