"""The fleet dashboard (monitoring/dashboard.py -> monitoring/dashboards/fondation-fleet.json)
and the alert rules read only metrics that exist. The worker's names are checked here against
its real registry; the Convex endpoint's (fondation_queue_*) in tests/convex/monitoring.test.ts
against its real output."""

from __future__ import annotations

import importlib.util
import re
import sys
from types import ModuleType

import yaml

from tests.monitoring.names import (
    DASHBOARD,
    METRIC,
    MONITORING,
    RECORDED,
    RULES,
    dashboard_queries,
    load_dashboard,
    worker_sample_names,
)


def dashboard_module() -> ModuleType:
    path = MONITORING / "dashboard.py"
    spec = importlib.util.spec_from_file_location("fondation_dashboard", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_the_committed_json_is_the_generators_output() -> None:
    assert DASHBOARD.read_text() == dashboard_module().render(), (
        "monitoring/dashboards/fondation-fleet.json is stale: run `make dashboard`"
    )


def test_it_shows_what_an_operator_asks_first() -> None:
    titles = {title for title, _ in dashboard_queries(load_dashboard())}
    for wanted in (
        "Queue depth",
        "Ready age",
        "Pickup: claims per minute",
        "Job duration (workers)",
        "Outcomes per minute (workers)",
        "Wake subscription",
        "Replicas ready",
    ):
        assert wanted in titles


def test_every_panel_queries_a_metric_that_exists() -> None:
    worker = worker_sample_names()
    dashboard = load_dashboard()
    panels = [p for p in dashboard["panels"] if p.get("type") != "row"]
    empty = [p["title"] for p in panels if not p.get("targets")]
    assert not empty, empty
    for title, expr in dashboard_queries(dashboard):
        names = METRIC.findall(expr)
        assert names, f"{title}: {expr} names no fondation metric"
        for name in names:
            if name.startswith("fondation_worker_"):
                assert name in worker, f"{title}: {name} is not served by the worker"
            else:
                assert name.startswith("fondation_queue_"), f"{title}: {name}"


def test_every_rule_reads_metrics_that_exist() -> None:
    worker = worker_sample_names()
    groups = yaml.safe_load(RULES.read_text())["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    recorded = {rule["record"] for rule in rules if "record" in rule}
    alerts = [rule for rule in rules if "alert" in rule]
    assert len(alerts) >= 9
    for rule in rules:
        for name in METRIC.findall(rule["expr"]):
            if name.startswith("fondation_worker_"):
                assert name in worker, f"{rule}: {name} is not served by the worker"
            else:
                assert name.startswith("fondation_queue_"), name
        for name in RECORDED.findall(rule["expr"]):
            assert name in recorded, name
    # Every alert says where to look, and the section is there.
    runbook = (MONITORING.parent / "docs" / "RUNBOOK.md").read_text()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", line[3:].strip().lower()).replace(" ", "-")
        for line in runbook.splitlines()
        if line.startswith("## ")
    }
    for alert in alerts:
        link = alert["annotations"]["runbook"]
        assert link.startswith("docs/RUNBOOK.md#"), alert["alert"]
        assert link.split("#", 1)[1] in anchors, link
