"""The health and metrics sidecar: an HTTP server on its own thread (HEALTH_PORT, default 8080).

``/healthz``: the process is alive. ``/readyz``: the gRPC server has started
and the backend is reachable. ``/metrics``: Prometheus text format.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from jobscheduler.metrics import REGISTRY
from jobscheduler.ops.readiness import Readiness


class _Handler(BaseHTTPRequestHandler):
    server: OpsHTTPServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            self._send(200, "application/json", json.dumps({"status": "ok"}).encode())
        elif path == "/readyz":
            state = self.server.readiness.get()
            body = json.dumps({"status": "ready" if state.ready else "not ready", "reason": state.reason})
            self._send(200 if state.ready else 503, "application/json", body.encode())
        elif path == "/metrics":
            self._send(200, CONTENT_TYPE_LATEST, generate_latest(REGISTRY))
        else:
            self._send(404, "application/json", b'{"status": "not found"}')

    def _send(self, code: int, content_type: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # probes every few seconds: no access log
        pass


class OpsHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str, port: int, readiness: Readiness) -> None:
        super().__init__((host, port), _Handler)
        self.readiness = readiness
        self._thread = threading.Thread(target=self.serve_forever, name="ops-http", daemon=True)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(timeout=5)
