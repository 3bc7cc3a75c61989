"""Fixtures: the Kubernetes API emulator, a kubeconfig for it, the service in-process and as a subprocess."""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent))

from emulator import EmulatorThread

from jobscheduler._generated import jobscheduler_pb2_grpc as pb_grpc
from jobscheduler.api.server import Health
from jobscheduler.app import (
    assemble,
    build_backend,
    build_index,
    check_backend,
    listen,
)
from jobscheduler.config import Settings
from jobscheduler.ops.readiness import Readiness

ROOT = pathlib.Path(__file__).resolve().parent.parent
NAMESPACE = "default"


@pytest.fixture
def emulator() -> Iterator[EmulatorThread]:
    thread = EmulatorThread()
    try:
        yield thread
    finally:
        thread.stop()


def write_kubeconfig(path: pathlib.Path, server: str, namespace: str = NAMESPACE) -> pathlib.Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "emulator", "cluster": {"server": server}}],
        "users": [{"name": "tester", "user": {"token": "test-token"}}],
        "contexts": [
            {"name": "emulator", "context": {"cluster": "emulator", "user": "tester", "namespace": namespace}}
        ],
        "current-context": "emulator",
    }
    path.write_text(json.dumps(config))
    return path


@pytest.fixture
def kubeconfig(emulator: EmulatorThread, tmp_path: pathlib.Path) -> pathlib.Path:
    return write_kubeconfig(tmp_path / "kubeconfig", emulator.url)


class ServiceThread:
    """The service's gRPC server on 127.0.0.1:0 in this process, on its own event loop thread.

    The backend comes from the composition root (``app.build_backend``), as in ``serve``.
    """

    def __init__(self, *, sync_wait: float = 5.0, **settings: Any) -> None:
        self.sync_wait = sync_wait
        # Tests make RPCs in quick bursts; the ones about the rate limit set it themselves.
        settings.setdefault("rate_limit_rps", 0)
        self.settings = Settings(**settings)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="service", daemon=True)
        self._thread.start()
        self.port: int = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(15)
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
        self.stub = pb_grpc.JobSchedulerStub(self.channel)

    async def _start(self) -> int:
        s = self.settings
        self.backend = await build_backend(s)
        self.index = build_index(s)
        await self.backend.start(self.index)
        await self.index.wait_synced(within=self.sync_wait)
        self.health = Health()
        self.readiness = Readiness()
        parts = await assemble(s, self.backend, self.index, self.health)
        self.service, self.authenticator, self.server = parts.service, parts.authenticator, parts.server
        port = listen(self.server, s, "127.0.0.1:0")
        await self.server.start()
        await check_backend(self.backend, self.health, self.readiness, self.index)
        self.controllers = [asyncio.create_task(c.run()) for c in parts.controllers]
        return port

    def recheck(self) -> bool:
        ok: bool = asyncio.run_coroutine_threadsafe(
            check_backend(self.backend, self.health, self.readiness, self.index), self._loop
        ).result(15)
        return ok

    async def _stop(self) -> None:
        for task in self.controllers:
            task.cancel()
        if self.controllers:
            await asyncio.wait(self.controllers, timeout=3)  # the Lease is handed back
        await self.server.stop(1)
        await self.authenticator.close()
        await self.backend.close()

    def stop(self) -> None:
        self.channel.close()
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


#: Leases short enough for tests (the defaults are 20/8/2 seconds): a restarted service, a new
#: identity, takes admission over once the previous holder's lease has expired. Duration minus
#: renew deadline must exceed the API timeout (config.lease_timing_problem).
FAST_LEASE: dict[str, Any] = {
    "lease_duration_seconds": 4,
    "lease_renew_deadline_seconds": 2,
    "lease_retry_period_seconds": 1,
    "kube_api_timeout_seconds": 1.9,
}


def kubernetes_service(kubeconfig: pathlib.Path, *, sync_wait: float = 5.0, **settings: Any) -> ServiceThread:
    for key, value in FAST_LEASE.items():
        settings.setdefault(key, value)
    return ServiceThread(
        sync_wait=sync_wait, backend="kubernetes", in_cluster=False, kubeconfig=str(kubeconfig), **settings
    )


def local_service(data_dir: pathlib.Path, **settings: Any) -> ServiceThread:
    return ServiceThread(backend="local", data_dir=str(data_dir), **settings)


@pytest.fixture
def service(kubeconfig: pathlib.Path) -> Iterator[ServiceThread]:
    svc = kubernetes_service(kubeconfig)
    try:
        yield svc
    finally:
        svc.stop()


class ServeProcess:
    """``jobscheduler serve`` as a subprocess; ports are read from its "serving" log line."""

    def __init__(self, env: dict[str, str], *, wait: bool = True) -> None:
        self.env = {**os.environ, **env}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jobscheduler", "serve"],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        self.lines: list[dict[str, Any]] = []
        self._lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        self.grpc_port = 0
        self.health_port = 0
        if wait:
            try:
                line = self.wait_for("serving", timeout=20)
            except BaseException:
                self.proc.kill()
                self.proc.wait(5)
                raise
            self.grpc_port = int(line["grpc_port"])
            self.health_port = int(line["health_port"])

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            try:
                item = json.loads(raw)
            except ValueError:
                item = {"event": "<raw>", "text": raw}
            self.lines.append(item)
            self._lines.put(item)
        self._lines.put(None)

    def wait_for(self, event: str, timeout: float = 20) -> dict[str, Any]:
        while True:
            try:
                item = self._lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"no {event!r} log line within {timeout}s; got {self.lines}") from None
            if item is None:
                err = self.proc.stderr.read() if self.proc.stderr else ""
                raise AssertionError(
                    f"server exited ({self.proc.wait()}) before {event!r}: {self.lines} {err}"
                )
            if item.get("event") == event:
                return item

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise


def serve_env(kubeconfig: pathlib.Path, **extra: str) -> dict[str, str]:
    return {
        "IN_CLUSTER": "false",
        "KUBECONFIG": str(kubeconfig),
        "GRPC_PORT": "0",
        "HEALTH_PORT": "0",
        "GRPC_HOST": "127.0.0.1",
        "READINESS_INTERVAL_SECONDS": "0.5",
        **{key.upper(): str(value) for key, value in FAST_LEASE.items()},
        **extra,
    }
