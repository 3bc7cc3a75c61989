"""The monitoring component (k8s/monitoring/): a ServiceMonitor that scrapes the Service's metrics
port, alert rules whose PromQL parses (promql-parser, the Rust parser Prometheus-compatible
tools use) and a Grafana dashboard; every series the rules and the dashboard name is one the
service exports (read from the live registry), with labels it has."""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from jobscheduler import metrics

ROOT = Path(__file__).resolve().parent.parent
COMPONENT = ROOT / "k8s" / "monitoring"
OVERLAY = ROOT / "k8s" / "with-monitoring"
BASE = ROOT / "k8s" / "base"
#: Series Prometheus makes itself for every target (not exported by the service).
PROMETHEUS_SERIES = frozenset({"up"})
#: Labels Prometheus adds to every scraped series (the ServiceMonitor's target labels).
TARGET_LABELS = frozenset(
    {"__name__", "job", "namespace", "pod", "instance", "service", "endpoint", "container"}
)
#: Grafana's variables, as a query sees them once Grafana has substituted them.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "${namespace}": "ns", "$namespace": "ns"}

Doc = dict[str, Any]


def component() -> list[Doc]:
    kustomization = yaml.safe_load((COMPONENT / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Component"
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1alpha1"
    docs: list[Doc] = []
    for resource in kustomization["resources"]:
        docs.extend(d for d in yaml.safe_load_all((COMPONENT / resource).read_text()) if d)
    return docs


def one(kind: str) -> Doc:
    found = [d for d in component() if d["kind"] == kind]
    assert len(found) == 1, kind
    return found[0]


def dashboard() -> Doc:
    kustomization = yaml.safe_load((COMPONENT / "kustomization.yaml").read_text())
    (generator,) = kustomization["configMapGenerator"]
    assert generator["options"]["labels"]["grafana_dashboard"] == "1"
    (file,) = generator["files"]
    board: Doc = json.loads((COMPONENT / file).read_text())
    return board


@functools.cache
def exported() -> dict[str, frozenset[str] | None]:
    """Every series name the service's registry exposes, with its label names where the metric
    declares them (None: a custom collector's family, labels not checked)."""
    labels: dict[str, frozenset[str]] = {}
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            labels[value._name] = frozenset(value._labelnames)
    names: dict[str, frozenset[str] | None] = {}
    for family in metrics.REGISTRY.collect():
        declared = labels.get(family.name)
        suffixes = {
            "counter": ("_total", "_created"),
            "histogram": ("_bucket", "_count", "_sum", "_created"),
            "summary": ("", "_count", "_sum", "_created"),
            "info": ("_info",),
        }.get(family.type, ("",))
        for suffix in suffixes:
            extra = {"le"} if suffix == "_bucket" else set()
            names[family.name + suffix] = None if declared is None else declared | extra
        for sample in family.samples:  # e.g. process_* and python_* collectors
            if sample.name not in names:
                names[sample.name] = frozenset(sample.labels) if declared is None else declared
    return names


def selectors(expr: str) -> list[tuple[str, frozenset[str]]]:
    """The (metric name, label names matched) of every vector selector in ``expr``."""
    found: list[tuple[str, frozenset[str]]] = []

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            matchers = list(node.matchers.matchers)
            name = node.name or next((m.value for m in matchers if m.name == "__name__"), "")
            assert name, f"a selector without a metric name in {expr!r}"
            found.append((name, frozenset(m.name for m in matchers)))

    promql_parser.walk(promql_parser.parse(expr), visit)
    return found


def check_names(expr: str, where: str) -> None:
    series = exported()
    for name, labels in selectors(expr):
        if name in PROMETHEUS_SERIES:
            continue
        assert name in series, f"{where}: {name} is not a series the service exports"
        known = series[name]
        if known is not None:
            unknown = labels - known - TARGET_LABELS
            assert not unknown, f"{where}: {name} has no label(s) {sorted(unknown)}"


def test_the_name_check_is_strict() -> None:
    assert selectors('sum(rate(a_total{x="1"}[5m])) / on() b') == [
        ("a_total", frozenset({"x"})),
        ("b", frozenset()),
    ]
    check_names('rate(grpc_server_handled_total{grpc_code="NotFound"}[5m])', "ok")
    with pytest.raises(AssertionError, match="not a series"):
        check_names("rate(grpc_server_handled[5m])", "typo")  # the family, not its series
    with pytest.raises(AssertionError, match="no label"):
        check_names('rate(grpc_server_handled_total{grpc_status="OK"}[5m])', "label typo")
    with pytest.raises(ValueError):
        promql_parser.parse("sum(rate(x[5m])")


def test_service_monitor_scrapes_the_metrics_port_of_the_server_service() -> None:
    monitor = one("ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    service = yaml.safe_load((BASE / "service.yaml").read_text())
    selected = monitor["spec"]["selector"]["matchLabels"]
    assert selected.items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    port = next(p for p in service["spec"]["ports"] if p["name"] == endpoint["port"])
    assert port["port"] == 8080 and endpoint["path"] == "/metrics"


def test_alert_rules_parse_and_name_only_exported_series() -> None:
    rule = one("PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    alerts = {}
    for group in rule["spec"]["groups"]:
        for item in group["rules"]:
            name = item["alert"]
            assert name not in alerts, f"{name} twice"
            alerts[name] = item
            check_names(item["expr"], name)
            if "for" in item:
                promql_parser.parse_duration(item["for"])
            assert item["labels"]["severity"] in ("critical", "warning", "info"), name
            assert item["annotations"]["summary"] and item["annotations"]["description"], name
    used = {n for item in alerts.values() for n, _ in selectors(item["expr"])}
    # What the issue asks the rules to cover: error ratio, latency, queue backlog and age, no
    # Lease holder, watch cache staleness, job failure ratio.
    assert {
        "grpc_server_handled_total",
        "grpc_server_handling_seconds_bucket",
        "jobscheduler_queue_depth",
        "jobscheduler_queue_oldest_age_seconds",
        "jobscheduler_leader",
        "jobscheduler_watch_idle_seconds",
        "jobscheduler_jobs_finished_total",
    } <= used


def test_dashboard_queries_parse_and_name_only_exported_series() -> None:
    board = dashboard()
    assert board["uid"] and board["title"]
    panels = [p for top in board["panels"] for p in (top, *top.get("panels", ()))]
    exprs = [(panel["title"], target["expr"]) for panel in panels for target in panel.get("targets", ())]
    assert len(exprs) >= 20
    for title, expr in exprs:
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, f"{title}: an unknown Grafana variable in {expr!r}"
        check_names(expr, title)
    for panel in panels:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            match = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["query"]["query"])
            assert match, variable["name"]
            check_names(match.group(1), f"variable {variable['name']}")


def test_component_has_no_latest_image_and_standard_labels() -> None:
    for doc in component():
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "jobscheduler"
        assert labels["app.kubernetes.io/component"] == "monitoring"
    assert ":latest" not in "".join(p.read_text() for p in COMPONENT.rglob("*") if p.is_file())


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
def test_the_overlay_renders_the_base_and_the_monitoring_objects() -> None:
    out = subprocess.run(
        ["kubectl", "kustomize", str(OVERLAY)], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    docs = {f"{d['kind']}/{d['metadata']['name']}": d for d in yaml.safe_load_all(out) if d}
    for key in (
        "ServiceMonitor/jobscheduler",
        "PrometheusRule/jobscheduler",
        "ConfigMap/jobscheduler-dashboard",
    ):
        assert docs[key]["metadata"]["namespace"] == "jobscheduler", key
    assert "Deployment/jobscheduler" in docs
    board = json.loads(docs["ConfigMap/jobscheduler-dashboard"]["data"]["jobscheduler.json"])
    assert board == dashboard()
