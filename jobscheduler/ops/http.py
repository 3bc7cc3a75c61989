"""The health and metrics sidecar: an HTTP server on its own thread (HEALTH_PORT, default 8080).

``/healthz``: the process is alive. ``/readyz``: the gRPC server has started
and the backend is reachable. ``/metrics``: prometheus-client's own exposition (text, or
OpenMetrics when the Accept header asks; gzip when Accept-Encoding allows it; ``name[]``
restricts the families), also for HEAD.
"""

from __future__ import annotations

import gzip
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

from prometheus_client.exposition import choose_encoder, gzip_accepted

from jobscheduler.metrics import REGISTRY
from jobscheduler.ops.readiness import Readiness


class _Handler(BaseHTTPRequestHandler):
    server: OpsHTTPServer
    protocol_version = "HTTP/1.1"
    #: HEAD: the same status and headers as GET, no body.
    _head_only = False

    def do_HEAD(self) -> None:
        self._head_only = True
        try:
            self.do_GET()
        finally:
            self._head_only = False

    def do_GET(self) -> None:
        path, _, query = self.path.partition("?")
        if path == "/healthz":
            self._send(200, "application/json", json.dumps({"status": "ok"}).encode())
        elif path == "/readyz":
            state = self.server.readiness.get()
            body = json.dumps({"status": "ready" if state.ready else "not ready", "reason": state.reason})
            self._send(200 if state.ready else 503, "application/json", body.encode())
        elif path == "/metrics":
            self._metrics(query)
        else:
            self._send(404, "application/json", b'{"status": "not found"}')

    def _metrics(self, query: str) -> None:
        encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
        names = parse_qs(query[:4096]).get("name[]")
        registry = REGISTRY.restricted_registry(names[:100]) if names else REGISTRY
        body = encoder(registry)
        encoding = None
        if gzip_accepted(self.headers.get("Accept-Encoding", "")):
            body, encoding = gzip.compress(body), "gzip"
        self._send(200, content_type, body, encoding)

    def _send(self, code: int, content_type: str, body: bytes, encoding: str | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        if encoding is not None:
            self.send_header("Content-Encoding", encoding)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not self._head_only:
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
