"""A minimal, fast stand-in for the Kubernetes API: stores posted Jobs and answers 201.

Run as ``python bench/standin.py`` (prints its port). It speaks just enough
HTTP/1.1 (keep-alive, Content-Length) for the client's create and list calls,
so that a benchmark measures the caller's cost, not the emulator's.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import sys
import uuid


class Standin(asyncio.Protocol):
    jobs: dict[str, bytes] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buffer[:head_end].decode("latin-1")
            lines = head.split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            total = head_end + 4 + length
            if len(self.buffer) < total:
                return
            body = self.buffer[head_end + 4 : total]
            self.buffer = self.buffer[total:]
            self.respond(method, path, body)

    def respond(self, method: str, path: str, body: bytes) -> None:
        if "watch=true" in path:
            return  # a watch with nothing to report: keep the connection open, say nothing
        if method == "POST":
            obj = json.loads(body)
            meta = obj.setdefault("metadata", {})
            meta["uid"] = str(uuid.uuid4())
            now = datetime.datetime.now(datetime.UTC)
            meta["creationTimestamp"] = now.strftime("%Y-%m-%dT%H:%M:%SZ")
            meta["resourceVersion"] = "1"
            out = json.dumps(obj).encode()
            self.jobs[meta.get("name", "")] = out
            status = "201 Created"
        else:
            out = b'{"apiVersion":"batch/v1","kind":"JobList","metadata":{"resourceVersion":"1"},"items":[]}'
            status = "200 OK"
        head = f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(out)}\r\n\r\n"
        self.transport.write(head.encode() + out)  # type: ignore[attr-defined]


async def main() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Standin, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
