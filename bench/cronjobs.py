"""What reading schedules back from CronJobs costs (Kubernetes backend), as ratios in the same run.

Run by hand (never by the test suite)::

    .venv/bin/python bench/cronjobs.py [--rounds 5] [--schedules 2000]

1. A CronJob read into a Schedule (core.schedules.cronjob.schedule_from_cronjob: the spec, the
   stored request parsed and checked), against decoding the same CronJob's JSON (what the API
   client does for every listed item anyway). Aim: <= 3x.
2. The same read through the store's cache (a CronJob unchanged since it was last read, by uid and
   resourceVersion). Aim: <= 0.2x the JSON decode.
3. The longest stretch the event loop is held during ``CronJobStore.list()`` of ``--schedules``
   CronJobs (pages of the informer's page size from a stand-in API that answers at once and, like
   the real client, decodes each page on the loop), against the longest stretch while the same
   pages are only listed (list_pages, nothing read from them). Aim: <= 1.5x.

Prints medians over ``--rounds`` rounds and PASS/MISS per aim.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from test_cronjob_manifest import NS, TIMER, TIMER_JOB, a_schedule, stored

from jobscheduler.backends.kubernetes._cronjobs import CRONJOBS, CronJobStore
from jobscheduler.backends.kubernetes._informer import LIST_PAGE, Informer, list_pages
from jobscheduler.core.schedules.cronjob import cronjob_manifest, schedule_from_cronjob


def cronjobs(n: int) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        cronjob = stored(cronjob_manifest(a_schedule(TIMER, name=f"s-{i}"), TIMER_JOB, namespace=NS))
        cronjob["metadata"] |= {"uid": f"uid-{i}", "resourceVersion": str(1000 + i)}
        out.append(cronjob)
    return out


def per_item(fn: Callable[[Any], object], items: Sequence[Any]) -> float:
    started = time.perf_counter()
    for item in items:
        fn(item)
    return (time.perf_counter() - started) / len(items)


class PagingApi:
    """Answers list requests with pages of the given CronJobs, decoded from JSON as the client does."""

    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.pages = [
            json.dumps({"metadata": {}, "items": items[i : i + LIST_PAGE]})
            for i in range(0, len(items), LIST_PAGE)
        ]
        for i, page in enumerate(self.pages[:-1]):
            decoded = json.loads(page)
            decoded["metadata"]["continue"] = str(i + 1)
            self.pages[i] = json.dumps(decoded)

    async def request(
        self, method: str, path: str, call: Any, *, query: Sequence[tuple[str, str]] = (), **_: Any
    ) -> dict[str, Any]:
        token = dict(query).get("continue", "0")
        page: dict[str, Any] = json.loads(self.pages[int(token)])
        return page


class OnlyPaging:
    """The baseline of (3): the same pages, listed and dropped."""

    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.api = PagingApi(items)

    async def run(self) -> None:
        async for _ in list_pages(self.api, Informer(CRONJOBS, "/cronjobs"), NS):  # type: ignore[arg-type]
            pass


async def longest_slice(work: Callable[[], Any]) -> float:
    """The longest time the loop was held while ``work()`` ran (a ticker's largest gap)."""
    gaps: list[float] = []
    done = False

    async def ticker() -> None:
        last = time.perf_counter()
        while not done:
            await asyncio.sleep(0)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    await work()
    done = True
    await task
    return max(gaps)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--schedules", type=int, default=2000)
    args = parser.parse_args(argv)
    items = cronjobs(args.schedules)
    raw = [json.dumps(c) for c in items]
    results: dict[str, list[float]] = {"read": [], "cached": [], "slice": []}
    for _ in range(args.rounds):
        decode = per_item(json.loads, raw)
        results["read"].append(per_item(schedule_from_cronjob, items) / decode)
        store = CronJobStore(PagingApi(items), NS)  # type: ignore[arg-type]
        for item in items:
            store._schedule(item)
        results["cached"].append(per_item(store._schedule, items) / decode)
        fresh = CronJobStore(PagingApi(items), NS)  # type: ignore[arg-type]
        held = asyncio.run(longest_slice(fresh.list))
        results["slice"].append(held / asyncio.run(longest_slice(OnlyPaging(items).run)))
        assert len(asyncio.run(fresh.list())) == args.schedules
    aims = {"read": 3.0, "cached": 0.2, "slice": 1.5}
    labels = {
        "read": "CronJob -> Schedule / JSON decode of the CronJob",
        "cached": "cached read / JSON decode of the CronJob",
        "slice": f"longest loop slice in list() of {args.schedules} / in paging them ({LIST_PAGE} a page)",
    }
    for key, ratios in results.items():
        median = statistics.median(ratios)
        verdict = "PASS" if median <= aims[key] else "MISS"
        print(f"{labels[key]}: {median:.2f}x (aim <= {aims[key]}x) {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
