"""The emulator's Leases, replace (PUT) and resourceVersion preconditions, over real HTTP,
as kube-apiserver answers them (the leader election tests rely on these)."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import aiohttp
from emulator import EmulatorThread, leases_path

MERGE_PATCH = "application/merge-patch+json"
LEASES = leases_path("default")
JOBS = "/apis/batch/v1/namespaces/default/jobs"


def lease_body(name: str, holder: str, **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name, **meta},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15},
    }


def test_lease_create_get_replace(emulator: EmulatorThread) -> None:
    assert emulator.lease("leader") is None

    code, created = emulator.answer("POST", LEASES, lease_body("leader", "a"))
    assert code == 201, created
    meta = created["metadata"]
    assert meta["namespace"] == "default"
    assert meta["uid"] and meta["creationTimestamp"] and meta["resourceVersion"].isdigit()
    assert emulator.lease("leader") == created
    assert emulator.lease_holder("leader") == "a"
    assert [lease["metadata"]["name"] for lease in emulator.leases()] == ["leader"]

    # Replace with the current resourceVersion: the body becomes the object.
    replacement = lease_body("leader", "b", resourceVersion=meta["resourceVersion"])
    code, replaced = emulator.answer("PUT", f"{LEASES}/leader", replacement)
    assert code == 200, replaced
    assert replaced["spec"] == {"holderIdentity": "b", "leaseDurationSeconds": 15}
    assert replaced["metadata"]["uid"] == meta["uid"]
    assert replaced["metadata"]["creationTimestamp"] == meta["creationTimestamp"]
    assert int(replaced["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])
    assert emulator.lease("leader") == replaced

    # Without a resourceVersion the replace is unconditional; fields left out are gone.
    unconditional = {"metadata": {"name": "leader"}, "spec": {"holderIdentity": "c"}}
    code, replaced = emulator.answer("PUT", f"{LEASES}/leader", unconditional)
    assert code == 200, replaced
    assert replaced["spec"] == {"holderIdentity": "c"}
    assert replaced["apiVersion"] == "coordination.k8s.io/v1" and replaced["kind"] == "Lease"
    assert emulator.lease_holder("leader") == "c"


def test_lease_errors_are_kube_statuses(emulator: EmulatorThread) -> None:
    code, status = emulator.answer("GET", f"{LEASES}/nothing")
    assert code == 404
    assert status["kind"] == "Status" and status["reason"] == "NotFound"
    assert status["message"] == 'leases.coordination.k8s.io "nothing" not found'
    assert status["details"] == {"name": "nothing", "group": "coordination.k8s.io", "kind": "leases"}

    code, status = emulator.answer("PUT", f"{LEASES}/nothing", lease_body("nothing", "a"))
    assert (code, status["reason"]) == (404, "NotFound")

    assert emulator.answer("POST", LEASES, lease_body("leader", "a"))[0] == 201
    code, status = emulator.answer("POST", LEASES, lease_body("leader", "b"))
    assert (code, status["reason"]) == (409, "AlreadyExists")
    assert status["message"] == 'leases.coordination.k8s.io "leader" already exists'
    assert emulator.lease_holder("leader") == "a"

    code, status = emulator.answer("PUT", f"{LEASES}/leader", lease_body("other", "b"))
    assert (code, status["reason"]) == (400, "BadRequest")
    assert emulator.lease_holder("leader") == "a"


def test_stale_replace_is_a_conflict(emulator: EmulatorThread) -> None:
    _, created = emulator.answer("POST", LEASES, lease_body("leader", "a"))
    stale = created["metadata"]["resourceVersion"]
    code, _ = emulator.answer("PUT", f"{LEASES}/leader", lease_body("leader", "b", resourceVersion=stale))
    assert code == 200

    code, status = emulator.answer(
        "PUT", f"{LEASES}/leader", lease_body("leader", "c", resourceVersion=stale)
    )
    assert code == 409
    assert status["reason"] == "Conflict"
    assert status["message"] == (
        'Operation cannot be fulfilled on leases.coordination.k8s.io "leader": the object has been'
        " modified; please apply your changes to the latest version and try again"
    )
    assert emulator.lease_holder("leader") == "b"


def test_merge_patch_with_a_resource_version_is_conditional(emulator: EmulatorThread) -> None:
    _, created = emulator.answer("POST", LEASES, lease_body("leader", "a"))
    first = created["metadata"]["resourceVersion"]
    path = f"{LEASES}/leader"

    code, patched = emulator.answer(
        "PATCH", path, {"metadata": {"resourceVersion": first}, "spec": {"holderIdentity": "b"}}, MERGE_PATCH
    )
    assert code == 200, patched
    assert patched["spec"] == {"holderIdentity": "b", "leaseDurationSeconds": 15}
    current = patched["metadata"]["resourceVersion"]
    assert int(current) > int(first)

    code, status = emulator.answer(
        "PATCH", path, {"metadata": {"resourceVersion": first}, "spec": {"holderIdentity": "c"}}, MERGE_PATCH
    )
    assert (code, status["reason"]) == (409, "Conflict")
    assert emulator.lease_holder("leader") == "b"
    assert emulator.lease("leader") == patched

    # Without one it is unconditional, as before.
    code, patched = emulator.answer("PATCH", path, {"spec": {"holderIdentity": "d"}}, MERGE_PATCH)
    assert code == 200 and emulator.lease_holder("leader") == "d"

    code, status = emulator.answer("PATCH", f"{LEASES}/nothing", {"spec": {}}, MERGE_PATCH)
    assert (code, status["reason"]) == (404, "NotFound")


def test_the_precondition_holds_for_every_resource(emulator: EmulatorThread) -> None:
    """Jobs too: the backend's compare-and-swap writes on held jobs rely on it."""
    _, job = emulator.answer("POST", JOBS, {"metadata": {"name": "j"}, "spec": {"suspend": True}})
    rv = job["metadata"]["resourceVersion"]
    emulator.patch_job("j", {"metadata": {"labels": {"x": "1"}}})  # someone else's change
    code, status = emulator.answer(
        "PATCH", f"{JOBS}/j", {"metadata": {"resourceVersion": rv}, "spec": {"suspend": False}}, MERGE_PATCH
    )
    assert (code, status["reason"]) == (409, "Conflict")
    assert status["message"].startswith('Operation cannot be fulfilled on jobs.batch "j"')
    assert emulator.job("j")["spec"]["suspend"] is True


def test_concurrent_conditional_replaces_exactly_one_wins(emulator: EmulatorThread) -> None:
    """Two candidates replace from the same resourceVersion at once: one 200, one 409."""
    _, created = emulator.answer("POST", LEASES, lease_body("leader", "nobody"))
    rv = created["metadata"]["resourceVersion"]

    async def race() -> list[int]:
        async with aiohttp.ClientSession(emulator.url) as session:

            async def replace(holder: str) -> int:
                body = json.dumps(lease_body("leader", holder, resourceVersion=rv))
                headers = {"Content-Type": "application/json"}
                async with session.put(f"{LEASES}/leader", data=body, headers=headers) as resp:
                    return resp.status

            return list(await asyncio.gather(*(replace(f"c{i}") for i in range(8))))

    codes = asyncio.run(asyncio.wait_for(race(), 20))
    assert sorted(codes) == [200] + [409] * 7
    assert emulator.lease_holder("leader") != "nobody"


def test_replace_is_a_modified_watch_event(emulator: EmulatorThread) -> None:
    _, created = emulator.answer("POST", LEASES, lease_body("leader", "a"))
    rv = created["metadata"]["resourceVersion"]
    events: list[dict[str, Any]] = []
    opened = threading.Event()

    async def watch() -> None:
        async with (
            aiohttp.ClientSession(emulator.url) as session,
            session.get(LEASES, params={"watch": "true", "resourceVersion": rv}) as resp,
        ):
            opened.set()
            async for line in resp.content:
                if line.strip():
                    events.append(json.loads(line))
                    return

    def run_watch() -> None:
        asyncio.run(asyncio.wait_for(watch(), 10))

    watcher = threading.Thread(target=run_watch)
    watcher.start()
    assert opened.wait(10)
    code, replaced = emulator.answer("PUT", f"{LEASES}/leader", lease_body("leader", "b"))
    assert code == 200
    watcher.join(15)
    assert [(e["type"], e["object"]["spec"]["holderIdentity"]) for e in events] == [("MODIFIED", "b")]
    assert events[0]["object"]["metadata"]["resourceVersion"] == replaced["metadata"]["resourceVersion"]
