"""Connection settings of the client commands: flags first, then the environment."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from typing import Final

DEFAULT_ADDR: Final = "localhost:50054"
ENV_ADDR: Final = "JOBSCHEDULER_ADDR"
ENV_TOKEN: Final = "JOBSCHEDULER_TOKEN"
ENV_TOKEN_FILE: Final = "JOBSCHEDULER_TOKEN_FILE"
ENV_CA_FILE: Final = "JOBSCHEDULER_CA_FILE"
ENV_CERT_FILE: Final = "JOBSCHEDULER_CERT_FILE"
ENV_KEY_FILE: Final = "JOBSCHEDULER_KEY_FILE"
#: Longest address accepted (a flag or an environment variable; bounded before use).
MAX_ADDR: Final = 512


class ConnectionProblem(ValueError):
    """Settings that cannot work together (a usage error, exit 2)."""


@dataclass(frozen=True, slots=True)
class Connection:
    addr: str
    tls: bool | None
    ca_file: str | None
    cert_file: str | None
    key_file: str | None
    token: str | None
    token_file: str | None
    rpc_timeout: float


def add_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("connection (flags win over the environment)")
    group.add_argument(
        "--addr",
        metavar="HOST:PORT",
        help=f"the server (${ENV_ADDR}, default {DEFAULT_ADDR})",
    )
    tls = group.add_mutually_exclusive_group()
    tls.add_argument(
        "--insecure",
        "--plaintext",
        dest="tls",
        action="store_const",
        const=False,
        default=None,
        help="plaintext, no TLS (the default for localhost and loopback addresses)",
    )
    tls.add_argument(
        "--tls", dest="tls", action="store_const", const=True, help="TLS even to a loopback address"
    )
    group.add_argument("--ca-file", metavar="PEM", help=f"CA bundle that signed the server (${ENV_CA_FILE})")
    group.add_argument(
        "--cert-file", metavar="PEM", help=f"client certificate for mTLS (${ENV_CERT_FILE}, with --key-file)"
    )
    group.add_argument("--key-file", metavar="PEM", help=f"its private key (${ENV_KEY_FILE})")
    group.add_argument("--token", metavar="TOKEN", help=f"bearer token (${ENV_TOKEN}; prefer a file)")
    group.add_argument(
        "--token-file",
        metavar="PATH",
        help=f"file holding the bearer token, re-read on change (${ENV_TOKEN_FILE})",
    )
    group.add_argument(
        "--request-timeout",
        metavar="SECONDS",
        type=float,
        default=30.0,
        help="deadline of each call, retries included (default 30; streams have none)",
    )


def _pick(flag: str | None, env: str) -> str | None:
    if flag:
        return flag
    value = os.environ.get(env, "")
    return value or None


def resolve(args: argparse.Namespace) -> Connection:
    addr = _pick(args.addr, ENV_ADDR) or DEFAULT_ADDR
    addr = addr.strip()
    if not addr or len(addr) > MAX_ADDR or any(not ch.isprintable() or ch.isspace() for ch in addr):
        raise ConnectionProblem(f"--addr/{ENV_ADDR}: not a HOST:PORT address ({addr[:80]!r})")
    token = args.token or None
    token_file = args.token_file or None
    if token is None and token_file is None:  # a flag of either kind wins over both variables
        token = _pick(None, ENV_TOKEN)
        token_file = None if token else _pick(None, ENV_TOKEN_FILE)
    if token and token_file:
        raise ConnectionProblem("--token and --token-file go alone: give one of them")
    ca_file = _pick(args.ca_file, ENV_CA_FILE)
    cert_file = _pick(args.cert_file, ENV_CERT_FILE)
    key_file = _pick(args.key_file, ENV_KEY_FILE)
    if (cert_file is None) != (key_file is None):
        raise ConnectionProblem(
            f"--cert-file/{ENV_CERT_FILE} and --key-file/{ENV_KEY_FILE} go together (mTLS)"
        )
    if args.tls is False and (ca_file or cert_file):
        raise ConnectionProblem("--insecure does not go with a CA file or a client certificate")
    if not 0 < args.request_timeout <= 3600:
        raise ConnectionProblem("--request-timeout: must be between 0 and 3600 seconds")
    return Connection(
        addr=addr,
        tls=args.tls,
        ca_file=ca_file,
        cert_file=cert_file,
        key_file=key_file,
        token=token,
        token_file=token_file,
        rpc_timeout=args.request_timeout,
    )
