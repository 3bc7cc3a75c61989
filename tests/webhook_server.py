"""An HTTP server on 127.0.0.1 for the webhook job's tests: records requests, answers with the
statuses it is given (the last one repeated), or holds requests (a slow endpoint)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Server:
    url: str
    statuses: list[int] = field(default_factory=list)
    body: bytes = b""
    requests: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    #: Set: answer; clear: hold every request until the server stops (a slow endpoint).
    answer: threading.Event = field(default_factory=threading.Event)
    arrived: threading.Event = field(default_factory=threading.Event)
    #: True: the answer's body comes a byte every 0.1 s until the server stops (it never times out).
    drip: bool = False
    stopped: threading.Event = field(default_factory=threading.Event)


@contextlib.contextmanager
def serve() -> Iterator[Server]:
    """An HTTP server on 127.0.0.1 recording each request and answering as told."""
    srv = Server(url="")

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            srv.requests.append((self.command, dict(self.headers), self.rfile.read(length)))
            srv.arrived.set()
            if not srv.answer.wait(30):
                return
            status = srv.statuses.pop(0) if len(srv.statuses) > 1 else (srv.statuses or [200])[0]
            self.send_response(status)
            self.send_header("Content-Length", str(10**6 if srv.drip else len(srv.body)))
            self.end_headers()
            self.wfile.write(srv.body)
            while srv.drip and not srv.stopped.wait(0.1):
                self.wfile.write(b"x")
                self.wfile.flush()

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    srv.url = f"http://127.0.0.1:{httpd.server_address[1]}/hook"
    srv.answer.set()
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.stopped.set()
        srv.answer.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
