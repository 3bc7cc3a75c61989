"""HTTP access to the Kubernetes API: the only module that imports ``kubernetes``.

Requests go through the official client's ``ApiClient`` (its configuration,
authentication, TLS and connection pool) via ``param_serialize`` and
``call_api``, with plain dict bodies and JSON answers: the generated models
cost about twice the CPU per call and 40x the memory per object, and the
service only ever needs a compact summary of each Job.
"""

from __future__ import annotations

import gc
import inspect
import json
import os
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
import yaml
from kubernetes.aio import client as k8s_client
from kubernetes.aio import config as k8s_config
from kubernetes.aio.config.config_exception import ConfigException

from jobscheduler import metrics, tracing
from jobscheduler.backends.kubernetes._errors import Call, error_from_connection, error_from_status
from jobscheduler.backends.kubernetes._throttle import WriteThrottle

_AUTH_SETTINGS = ["BearerToken"]
_ACCEPT = {"Accept": "application/json"}
#: Methods that wait for the write limit (KUBE_API_QPS/KUBE_API_BURST); reads, lists, watches never do.
_WRITES: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: Writes exempt from it: a TokenReview stores nothing, and it authenticates every RPC (reads
#: included), which must not queue behind a burst of job writes.
_UNTHROTTLED_RESOURCES: Final = frozenset({"tokenreviews.authentication.k8s.io"})
IN_CLUSTER_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"
#: Answers at least this large (list pages) are decoded with the cyclic GC paused (paused_gc).
_LARGE_BODY: Final = 256 * 1024
_gc_pauses = 0  # paused_gc blocks in progress (they may interleave across awaits)


@contextmanager
def paused_gc() -> Iterator[None]:
    """The cyclic garbage collector paused while allocating many objects that live on or are
    freed by reference counting: decoding a list page, summarising its items, and (see
    _informer.inform) a first list as a whole. Otherwise each page's ~150,000 JSON objects set
    off collections that walk the whole heap, the cached jobs included, again and again: with
    30,000 jobs about half of a restart's time. The collector runs as usual once the last
    pause ends (pauses interleaving across awaits: the last one to end resumes it)."""
    global _gc_pauses
    if _gc_pauses == 0 and not gc.isenabled():  # (someone else turned it off: leave it so)
        yield
        return
    _gc_pauses += 1
    gc.disable()
    try:
        yield
    finally:
        _gc_pauses -= 1
        if _gc_pauses == 0:
            gc.enable()


class KubeConfigError(Exception):
    """No usable Kubernetes configuration: a startup error, never a silent fallback."""


@dataclass(frozen=True, slots=True)
class ConfigSource:
    """Which configuration was chosen, and why (for the startup log line)."""

    kind: str  # "in-cluster" or "kubeconfig"
    why: str
    path: str | None = None  # the kubeconfig file

    def describe(self) -> str:
        return f"{self.kind} {self.path} ({self.why})" if self.path else f"{self.kind} ({self.why})"


def in_cluster_available() -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and os.path.exists(IN_CLUSTER_TOKEN)


def choose_config(*, in_cluster: bool, kubeconfig: str | None) -> ConfigSource:
    """In-cluster config when asked for and running in a pod; else the kubeconfig file.

    ``kubeconfig`` may be a KUBECONFIG-style path list; the first existing file is used.
    """
    if in_cluster and in_cluster_available():
        return ConfigSource("in-cluster", "IN_CLUSTER=true and running in a pod")
    candidates = [p for p in (kubeconfig or "").split(os.pathsep) if p]
    if not candidates:
        candidates = [os.path.expanduser("~/.kube/config")]
    for path in candidates:
        if os.path.isfile(path):
            why = "not running in a pod" if in_cluster else "IN_CLUSTER=false"
            return ConfigSource("kubeconfig", why, path)
    raise KubeConfigError(
        "no Kubernetes configuration: not running in a pod (IN_CLUSTER needs KUBERNETES_SERVICE_HOST and a"
        f" service account token) and no kubeconfig file at {', '.join(candidates)}; set KUBECONFIG"
    )


async def connect(
    source: ConfigSource, *, request_timeout: float, write_qps: float = 0.0, write_burst: int = 1
) -> KubeApi:
    """An API handle for the chosen configuration; KubeConfigError if it cannot be loaded.

    ``write_qps`` > 0 limits its writes to that many per second, in bursts up to ``write_burst``.
    """
    configuration = k8s_client.Configuration()
    try:
        if source.kind == "in-cluster":
            k8s_config.load_incluster_config(client_configuration=configuration)
        else:
            await k8s_config.load_kube_config(
                config_file=source.path, client_configuration=configuration, persist_config=False
            )
    except (ConfigException, yaml.YAMLError, OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise KubeConfigError(
            f"cannot load Kubernetes configuration from {source.describe()}: {exc}"
        ) from exc
    try:
        _clean_credentials(configuration)
        _keep_credentials_clean(configuration)
    except ValueError as exc:
        raise KubeConfigError(f"unusable credentials in {source.describe()}: {exc}") from None
    configuration.retries = None  # we map failures ourselves; the caller decides about retrying
    if not urllib.request.getproxies():
        # With trust_env, aiohttp looks up ~/.netrc and the proxy variables in a worker thread
        # on every request (two thread hops per call); with no proxy configured that is pure cost.
        configuration.client_session_kwargs = {"trust_env": False}
    throttle = WriteThrottle(write_qps, write_burst) if write_qps > 0 else None
    return KubeApi(k8s_client.ApiClient(configuration), timeout=request_timeout, throttle=throttle)


def _clean_credentials(configuration: Any) -> None:
    """Strip the whitespace around the configuration's credentials (``api_key``): a token file
    ending with a newline, which kubectl accepts, is read as is by the client's loaders, and
    aiohttp refuses the resulting Authorization header (forbidden control character). ValueError
    if a control character is left inside one (the message does not show the credential)."""
    api_key: dict[str, Any] = configuration.api_key
    for name, value in list(api_key.items()):
        if not isinstance(value, str):
            continue
        cleaned = value.strip()
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in cleaned):
            raise ValueError(f"the {name} credential (token) contains a control character")
        api_key[name] = cleaned


def _keep_credentials_clean(configuration: Any) -> None:
    """Clean the credentials again after each refresh (the in-cluster token file is re-read every
    minute, exec plugins run again): the client calls ``refresh_api_key_hook`` before each request."""
    refresh = configuration.refresh_api_key_hook

    async def refreshed(config: Any) -> None:
        if refresh is not None:
            result = refresh(config)
            if inspect.isawaitable(result):
                await result
        try:
            _clean_credentials(config)
        except ValueError as exc:  # a refreshed token file gone bad: this request cannot be sent
            raise aiohttp.ClientError(f"unusable Kubernetes credentials: {exc}") from None

    configuration.refresh_api_key_hook = refreshed


class KubeApi:
    """Async JSON requests against the API server, with errors mapped to jobscheduler's tree.

    With a ``throttle``, every write (POST, PUT, PATCH, DELETE) first waits for one of its
    tokens, in arrival order. A caller cancelled while waiting (e.g. grpc.aio cancels the
    handler when the RPC's deadline passes) sends nothing and takes no token.
    """

    def __init__(self, api_client: Any, *, timeout: float, throttle: WriteThrottle | None = None) -> None:
        self._client = api_client
        self._timeout = timeout
        self._throttle = throttle
        self.host: str = api_client.configuration.host

    @property
    def api_client(self) -> Any:
        """The official client's ``ApiClient`` (configuration, credentials, connection pool), for
        the library code that needs one (leader election's LeaseLock)."""
        return self._client

    @property
    def write_throttle(self) -> WriteThrottle | None:
        """The write limit, if any (for diagnostics and tests)."""
        return self._throttle

    async def request(
        self,
        method: str,
        path: str,
        call: Call,
        *,
        query: Sequence[tuple[str, str]] = (),
        body: Mapping[str, Any] | None = None,
        content_type: str = "application/json",
        decode: Callable[[bytes], dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """The answer's JSON object; ``decode`` (if given) decodes a successful answer instead."""
        if not tracing.enabled():  # (nothing built for tracing when it is off)
            return await self._request(method, path, call, query, body, content_type, decode)
        with tracing.child_span(_span_name(call), _span_attributes(method, call)):
            return await self._request(method, path, call, query, body, content_type, decode)

    async def _request(
        self,
        method: str,
        path: str,
        call: Call,
        query: Sequence[tuple[str, str]],
        body: Mapping[str, Any] | None,
        content_type: str,
        decode: Callable[[bytes], dict[str, Any]] | None,
    ) -> dict[str, Any]:
        headers = {**_ACCEPT, "Content-Type": content_type}
        if traceparent := tracing.current_traceparent():  # an API server that traces continues it
            headers["traceparent"] = traceparent
        url, headers = await self._serialize(method, path, query, headers, call)
        if self._throttle is not None and method in _WRITES and call.resource not in _UNTHROTTLED_RESOURCES:
            await self._wait_for_write(self._throttle)
        started = time.perf_counter()
        try:
            response = await self._client.call_api(
                method, url, header_params=headers, body=body, _request_timeout=self._timeout
            )
            raw = await response.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            metrics.KUBE_REQUEST_ERRORS.labels(call.verb, call.resource, "connection").inc()
            metrics.KUBE_REQUEST_SECONDS.labels(call.verb, call.resource, "connection").observe(
                time.perf_counter() - started
            )
            raise error_from_connection(exc, self.host, call) from None
        code: int = response.status
        tracing.set_attribute("http.response.status_code", code)
        metrics.KUBE_REQUEST_SECONDS.labels(call.verb, call.resource, str(code)).observe(
            time.perf_counter() - started
        )
        if decode is not None and 200 <= code < 300:
            return decode(raw)
        try:
            if len(raw) >= _LARGE_BODY:
                with paused_gc():
                    data = json.loads(raw)
            else:
                data = json.loads(raw) if raw else {}
        except ValueError:
            data = {}
        if not 200 <= code < 300:
            metrics.KUBE_REQUEST_ERRORS.labels(call.verb, call.resource, str(code)).inc()
            raise error_from_status(code, data if isinstance(data, dict) else None, call)
        if not isinstance(data, dict):
            data = {}
        return data

    async def _serialize(
        self, method: str, path: str, query: Sequence[tuple[str, str]], headers: dict[str, str], call: Call
    ) -> tuple[str, dict[str, str]]:
        """URL and headers (credentials included, refreshed if due: see _keep_credentials_clean)."""
        try:
            _, url, headers, _, _ = await self._client.param_serialize(
                method=method,
                resource_path=path,
                query_params=list(query) or None,
                header_params=headers,
                auth_settings=_AUTH_SETTINGS,
            )
        except aiohttp.ClientError as exc:
            metrics.KUBE_REQUEST_ERRORS.labels(call.verb, call.resource, "connection").inc()
            raise error_from_connection(exc, self.host, call) from None
        return url, headers

    @staticmethod
    async def _wait_for_write(throttle: WriteThrottle) -> None:
        if throttle.try_acquire():
            metrics.KUBE_WRITE_WAIT_SECONDS.observe(0.0)
            return
        metrics.KUBE_WRITES_WAITING.inc()
        started = time.perf_counter()
        try:
            await throttle.acquire()  # CancelledError: left the queue, nothing is sent
        finally:
            metrics.KUBE_WRITES_WAITING.dec()
        metrics.KUBE_WRITE_WAIT_SECONDS.observe(time.perf_counter() - started)

    async def stream(
        self, path: str, call: Call, *, query: Sequence[tuple[str, str]] = (), read_timeout: float
    ) -> AsyncIterator[bytes]:
        """The answer's lines as they arrive (watches, followed logs); errors mapped as for ``request``.

        ``read_timeout`` bounds the wait for each chunk, not the whole stream.
        """
        span = None
        if tracing.enabled():
            span = tracing.start_child_span(_span_name(call), _span_attributes("GET", call))
        if span is None:  # (tracing off, or a background watch)
            async for line in self._stream(path, call, query, read_timeout):
                yield line
            return
        error: BaseException | None = None
        try:
            async for line in self._stream(path, call, query, read_timeout, tracing.traceparent_of(span)):
                yield line
        except BaseException as exc:
            error = exc
            raise
        finally:
            tracing.end_span(span, error)

    async def _stream(
        self,
        path: str,
        call: Call,
        query: Sequence[tuple[str, str]],
        read_timeout: float,
        traceparent: str = "",
    ) -> AsyncIterator[bytes]:
        headers = {**_ACCEPT, "Content-Type": "application/json"}
        if traceparent:
            headers["traceparent"] = traceparent
        url, headers = await self._serialize("GET", path, query, headers, call)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self._timeout, sock_read=read_timeout)
        try:
            response = await self._client.call_api(
                "GET", url, header_params=headers, _request_timeout=timeout
            )
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            metrics.KUBE_REQUEST_ERRORS.labels(call.verb, call.resource, "connection").inc()
            raise error_from_connection(exc, self.host, call) from None
        raw_response = response.response
        try:
            code: int = response.status
            if not 200 <= code < 300:
                raw = await response.read()
                metrics.KUBE_REQUEST_ERRORS.labels(call.verb, call.resource, str(code)).inc()
                try:
                    data = json.loads(raw) if raw else {}
                except ValueError:
                    data = {}
                raise error_from_status(code, data if isinstance(data, dict) else None, call)
            try:
                async for line in raw_response.content:
                    yield line
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                metrics.KUBE_REQUEST_ERRORS.labels(call.verb, call.resource, "connection").inc()
                raise error_from_connection(exc, self.host, call) from None
        finally:
            raw_response.release()

    async def close(self) -> None:
        await self._client.close()


def _span_name(call: Call) -> str:
    return f"kubernetes {call.verb} {call.resource}"


def _span_attributes(method: str, call: Call) -> dict[str, str | int]:
    attributes: dict[str, str | int] = {
        "http.request.method": method,
        "k8s.namespace.name": call.namespace,
        "jobscheduler.kube.verb": call.verb,
        "jobscheduler.kube.resource": call.resource,
    }
    if call.name:
        attributes["jobscheduler.kube.name"] = call.name
    return attributes
