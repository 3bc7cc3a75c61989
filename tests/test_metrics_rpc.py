"""RPC metrics of every gRPC type: each message of a bidi and a client stream counted
(go-grpc-prometheus's grpc_server_msg_received_total/msg_sent_total); the queue gauges do not
wait for a stopped loop."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
from conftest import ServiceThread
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from jobscheduler import metrics
from jobscheduler.api.interceptors import ObservabilityInterceptor
from jobscheduler.core.model import QueueStatus

T = 20


def test_a_bidi_stream_counts_each_message(service: ServiceThread) -> None:
    """Server reflection is a bidi stream: three requests in, three answers out."""
    labels = {
        "grpc_type": "bidi_stream",
        "grpc_service": "grpc.reflection.v1alpha.ServerReflection",
        "grpc_method": "ServerReflectionInfo",
    }

    def value(name: str, **more: str) -> float:
        return metrics.REGISTRY.get_sample_value(name, {**labels, **more}) or 0.0

    names = ("grpc_server_started_total", "grpc_server_msg_received_total", "grpc_server_msg_sent_total")
    before = [value(n) for n in names] + [value("grpc_server_handled_total", grpc_code="OK")]
    stub = reflection_pb2_grpc.ServerReflectionStub(service.channel)
    asks = [reflection_pb2.ServerReflectionRequest(list_services="") for _ in range(3)]
    answers = list(stub.ServerReflectionInfo(iter(asks), timeout=T))
    assert len(answers) == 3
    after = [value(n) for n in names] + [value("grpc_server_handled_total", grpc_code="OK")]
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 3, 3, 1]


def test_a_scrape_does_not_wait_for_a_stopped_loop() -> None:
    """After the service's loop has stopped (shutdown), the queue gauges report the last
    snapshot at once instead of waiting LOOP_WAIT_SECONDS for a loop that will never answer."""
    collector = metrics.QueueCollector()
    loop = asyncio.new_event_loop()
    try:
        collector.bind(lambda: [QueueStatus("q", 0, 0, {}, 0)], loop)
        started = time.monotonic()
        assert collector.snapshot() == ()
        assert time.monotonic() - started < collector.LOOP_WAIT_SECONDS / 2
    finally:
        loop.close()
    assert collector.snapshot() == ()


def test_a_client_stream_counts_each_message() -> None:
    """The service has no client-streaming method yet; one added is counted like the rest."""

    async def total(requests: Any, context: Any) -> bytes:
        return str(sum([len(r) async for r in requests])).encode()

    async def call() -> bytes:
        server = grpc.aio.server(interceptors=[ObservabilityInterceptor()])
        handler = grpc.stream_unary_rpc_method_handler(total)
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("test.Sums", {"Total": handler}),)
        )
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                answer: bytes = await channel.stream_unary("/test.Sums/Total")(
                    iter([b"a", b"bb", b"ccc"]), timeout=T
                )
                return answer
        finally:
            await server.stop(None)

    labels = {"grpc_type": "client_stream", "grpc_service": "test.Sums", "grpc_method": "Total"}

    def value(name: str, **more: str) -> float:
        return metrics.REGISTRY.get_sample_value(name, {**labels, **more}) or 0.0

    names = ("grpc_server_started_total", "grpc_server_msg_received_total", "grpc_server_msg_sent_total")
    before = [value(n) for n in names] + [value("grpc_server_handled_total", grpc_code="OK")]
    assert asyncio.run(call()) == b"6"
    after = [value(n) for n in names] + [value("grpc_server_handled_total", grpc_code="OK")]
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 3, 1, 1]
