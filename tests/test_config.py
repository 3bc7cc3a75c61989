"""Settings checks that need no server: Kubernetes quantities, requests within limits, the Lease
timings against the API timeout, and where the ops port listens by default."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobscheduler.config import ConfigError, Settings, lease_timing_problem, load_settings, parse_quantity

#: Every environment variable these tests set or that changes a default they check.
_VARS = (
    "DEFAULT_CPU_REQUEST",
    "DEFAULT_CPU_LIMIT",
    "DEFAULT_MEMORY_REQUEST",
    "DEFAULT_MEMORY_LIMIT",
    "HEALTH_HOST",
    "IN_CLUSTER",
    "KUBERNETES_SERVICE_HOST",
    "LEASE_DURATION_SECONDS",
    "LEASE_RENEW_DEADLINE_SECONDS",
    "LEASE_RETRY_PERIOD_SECONDS",
    "KUBE_API_TIMEOUT_SECONDS",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in _VARS:
        monkeypatch.delenv(var, raising=False)


# --- quantities -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "amount"),
    [
        ("2", Decimal(2)),
        ("500m", Decimal("0.5")),
        ("0.25", Decimal("0.25")),
        ("1500m", Decimal("1.5")),
        ("1k", Decimal(1000)),
        ("64Mi", Decimal(64 * 2**20)),
        ("1Ki", Decimal(1024)),
        ("1.5Gi", Decimal(3 * 2**29)),
        ("128M", Decimal(128_000_000)),
        ("2G", Decimal(2_000_000_000)),
        ("1Ti", Decimal(2**40)),
    ],
)
def test_parse_quantity(text: str, amount: Decimal) -> None:
    assert parse_quantity(text) == amount


@pytest.mark.parametrize("text", ["", "lots", "1e3", "-1", "+1", "1 Mi", "1mi", "1MB", "Mi", ".5", "1" * 65])
def test_parse_quantity_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="Kubernetes quantity"):
        parse_quantity(text)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(min_value=0, max_value=10**6),
    st.sampled_from(["", "m", "k", "M", "G", "Ki", "Mi", "Gi"]),
    st.sampled_from(["", "m", "k", "M", "G", "Ki", "Mi", "Gi"]),
)
def test_quantity_order_follows_the_amounts(n: int, a: str, b: str) -> None:
    scale = {"": 1, "m": Decimal("0.001"), "k": 10**3, "M": 10**6, "G": 10**9}
    scale |= {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    assert parse_quantity(f"{n}{a}") == n * Decimal(scale[a])
    assert (parse_quantity(f"{n}{a}") <= parse_quantity(f"{n}{b}")) == (scale[a] <= scale[b] or n == 0)


# --- requests within limits ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "names"),
    [
        (
            {"DEFAULT_CPU_REQUEST": "2", "DEFAULT_CPU_LIMIT": "500m"},
            ("DEFAULT_CPU_REQUEST", "DEFAULT_CPU_LIMIT"),
        ),
        (
            {"DEFAULT_MEMORY_REQUEST": "1Gi", "DEFAULT_MEMORY_LIMIT": "128Mi"},
            ("DEFAULT_MEMORY_REQUEST", "DEFAULT_MEMORY_LIMIT"),
        ),
        ({"DEFAULT_MEMORY_REQUEST": "200M"}, ("DEFAULT_MEMORY_REQUEST", "DEFAULT_MEMORY_LIMIT")),  # > 128Mi
    ],
)
def test_a_request_above_its_limit_is_a_config_error_naming_both(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], names: tuple[str, str]
) -> None:
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert all(name in message for name in names), message
    assert "\n" not in message and "Value error" not in message


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"DEFAULT_CPU_REQUEST": "500m", "DEFAULT_CPU_LIMIT": "0.5"},  # equal is fine
        {"DEFAULT_CPU_REQUEST": "1", "DEFAULT_CPU_LIMIT": "2"},
        {"DEFAULT_MEMORY_REQUEST": "100M", "DEFAULT_MEMORY_LIMIT": "128Mi"},  # 100e6 < 134217728
    ],
)
def test_requests_within_limits_load(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    load_settings()


# --- Lease timings against the API timeout ------------------------------------------------------


def test_default_lease_timings_leave_room_for_the_api_timeout() -> None:
    defaults = Settings()
    assert lease_timing_problem(defaults) is None
    assert (
        defaults.lease_duration_seconds - defaults.lease_renew_deadline_seconds
        > defaults.kube_api_timeout_seconds
    )


@pytest.mark.parametrize(
    ("duration", "renew", "timeout", "ok"),
    [(15, 10, 10, False), (15, 10, 5, False), (15, 10, 4.9, True), (20, 8, 10, True), (4, 2, 1.9, True)],
)
def test_lease_timing_rule(duration: float, renew: float, timeout: float, ok: bool) -> None:
    s = Settings(
        lease_duration_seconds=duration,
        lease_renew_deadline_seconds=renew,
        lease_retry_period_seconds=1,
        kube_api_timeout_seconds=timeout,
    )
    problem = lease_timing_problem(s)
    assert (problem is None) == ok
    if problem is not None:
        for var in ("LEASE_DURATION_SECONDS", "LEASE_RENEW_DEADLINE_SECONDS", "KUBE_API_TIMEOUT_SECONDS"):
            assert var in problem


# --- where the ops port listens -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "host"),
    [
        ({}, "127.0.0.1"),  # a laptop: loopback
        ({"IN_CLUSTER": "false"}, "127.0.0.1"),
        ({"IN_CLUSTER": "true"}, "0.0.0.0"),  # the deployment sets it: kubelet probes, Prometheus
        ({"KUBERNETES_SERVICE_HOST": "10.96.0.1"}, "0.0.0.0"),  # any pod
        ({"KUBERNETES_SERVICE_HOST": "10.96.0.1", "HEALTH_HOST": "127.0.0.1"}, "127.0.0.1"),
        ({"HEALTH_HOST": "0.0.0.0"}, "0.0.0.0"),
        ({"HEALTH_HOST": "::1"}, "::1"),
    ],
)
def test_health_listen_host(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], host: str) -> None:
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    assert load_settings().health_listen_host == host
