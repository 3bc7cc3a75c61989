"""Proxies on 127.0.0.1 for the client tests: a TCP proxy whose connections can be cut, and a gRPC
proxy that forwards every call but can drop the first ScheduleJob response (as UNAVAILABLE)."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc


class TcpProxy:
    """Forwards 127.0.0.1:<port> to the upstream port. ``cut()`` closes every connection and
    refuses new ones until ``resume()``."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._refusing = False
        self._closed = False
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                if self._refusing or self._closed:
                    conn.close()
                    continue
                try:
                    upstream = socket.create_connection(self.upstream, timeout=5)
                except OSError:
                    conn.close()
                    continue
                upstream.settimeout(None)
                self._sockets += [conn, upstream]
                self.connections += 1
            threading.Thread(target=self._pump, args=(conn, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, conn), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for s in (source, sink):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        with self._lock:
            self._refusing = True
            for s in self._sockets:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
            self._sockets.clear()

    def resume(self) -> None:
        with self._lock:
            self._refusing = False

    def close(self) -> None:
        self._closed = True
        self.cut()
        self._listener.close()


_UNARY = ("ScheduleJob", "GetJobStatus", "ListJobs", "CancelJob", "ListQueues")


class _Forward(grpc.GenericRpcHandler):
    def __init__(self, proxy: GrpcProxy) -> None:
        self.proxy = proxy

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method: str = details.method  # type: ignore[attr-defined]
        name = method.rsplit("/", 1)[-1]
        upstream = self.proxy.upstream
        if name in _UNARY:

            def unary(request: bytes, context: grpc.ServicerContext) -> bytes:
                metadata = [(k, v) for k, v in context.invocation_metadata() if k != "x-request-id"]
                response: bytes = upstream.unary_unary(method)(request, timeout=10, metadata=metadata)
                self.proxy.calls.append(name)
                if self.proxy.drop(name):
                    context.abort(grpc.StatusCode.UNAVAILABLE, "the proxy dropped the response")
                return response

            return grpc.unary_unary_rpc_method_handler(unary)

        def stream(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
            metadata = list(context.invocation_metadata())
            yield from upstream.unary_stream(method)(request, metadata=metadata)

        return grpc.unary_stream_rpc_method_handler(stream)


class GrpcProxy:
    """A gRPC server on 127.0.0.1 passing every call through to the upstream port, as bytes.
    ``drop(name)`` decides, after the upstream answered, whether the caller gets UNAVAILABLE
    instead of the answer; ``calls`` lists the forwarded unary calls."""

    def __init__(self, upstream_port: int, drop: Callable[[str], bool]) -> None:
        self.upstream = grpc.insecure_channel(f"127.0.0.1:{upstream_port}")
        self.drop = drop
        self.calls: list[str] = []
        self.server = grpc.server(futures.ThreadPoolExecutor(4), handlers=[_Forward(self)])
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def close(self) -> None:
        self.server.stop(None)
        self.upstream.close()


def first_only(name: str) -> Callable[[str], bool]:
    """A ``drop`` that drops the first response of ``name`` and no other."""
    seen: dict[str, Any] = {"n": 0}

    def drop(called: str) -> bool:
        if called != name:
            return False
        seen["n"] += 1
        return bool(seen["n"] == 1)

    return drop
