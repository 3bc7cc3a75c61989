"""``jobscheduler report-sink``: a tiny control-plane stand-in for trying timer jobs locally.

It accepts the timer's JSON reports (POST to any path), answers 204, and
prints each report as one JSON line on stdout. Not for production: it keeps
nothing and authenticates nobody.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MAX_BODY = 64 * 1024


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._answer(413)
            return
        raw = self.rfile.read(length)
        try:
            report: Any = json.loads(raw)
        except ValueError:
            self._answer(400)
            return
        line: dict[str, Any] = {"event": "report", "path": self.path, "report": report}
        traceparent = self.headers.get("traceparent")
        if traceparent:
            line["traceparent"] = traceparent[:128]
        print(json.dumps(line), flush=True)
        self._answer(204)

    def _answer(self, code: int) -> None:
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="jobscheduler report-sink",
        description="Receive timer job reports (POST, JSON) and print them; for local trials.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=50053)
    args = parser.parse_args(list(argv))
    try:
        server = ThreadingHTTPServer((args.host, args.port), _Handler)
    except OSError as exc:
        print(f"jobscheduler report-sink: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2
    url = f"http://{args.host}:{server.server_address[1]}/"
    print(json.dumps({"event": "listening", "url": url}), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
