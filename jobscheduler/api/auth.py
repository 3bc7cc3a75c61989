"""Credentials of a gRPC call: the ``authorization: Bearer`` metadata and a verified client certificate."""

from __future__ import annotations

import contextlib
import ipaddress
from typing import Any

import grpc

from jobscheduler.api.tls import peer_identity
from jobscheduler.core.auth import Credentials

AUTHORIZATION_HEADER = "authorization"


def bearer_token(metadata: Any) -> str | None:
    """The token of ``authorization: Bearer <token>`` (scheme case-insensitive), or None."""
    for key, value in metadata or ():
        if key == AUTHORIZATION_HEADER:
            text = value.decode() if isinstance(value, bytes) else str(value)
            scheme, _, token = text.strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            return None
    return None


def credentials(context: grpc.aio.ServicerContext[Any, Any]) -> Credentials:
    return Credentials(
        bearer_token=bearer_token(context.invocation_metadata()),
        peer_identity=peer_identity(context),
    )


def peer_address(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """The caller's address without its port (``ipv4:10.0.0.7``, ``ipv6:[fd00::]/64``, ``unix:...``):
    what failed authentications are counted by. An IPv6 caller counts by its /64, which one
    host usually has whole: otherwise each of its addresses would get a budget of its own."""
    peer = context.peer() or "unknown"
    if peer.startswith(("ipv4:", "ipv6:")):
        host, sep, port = peer.rpartition(":")
        if sep and port.isdigit() and host not in ("ipv4", "ipv6"):
            if host.startswith("ipv6:["):
                with contextlib.suppress(ValueError):
                    net = ipaddress.IPv6Network(f"{host[6:].rstrip(']').split('%')[0]}/64", strict=False)
                    return f"ipv6:[{net.network_address}]/64"
            return host
    return peer
