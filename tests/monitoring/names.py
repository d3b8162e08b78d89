"""The metric names the monitoring files read, and the ones the worker really serves."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from fondation_worker.metrics import Metrics
from tests.support.paths import REPO_ROOT

MONITORING = REPO_ROOT / "monitoring"
RULES = MONITORING / "rules" / "fondation.rules.yml"
DASHBOARD = MONITORING / "dashboards" / "fondation-fleet.json"
# A metric name in PromQL: fondation_worker_* or fondation_queue_* (recording rules are
# fondation:<...> and are checked apart).
METRIC = re.compile(r"\bfondation_[a-z0-9_]+\b")
RECORDED = re.compile(r"\bfondation:[a-z0-9_:]+\b")


def worker_sample_names() -> set[str]:
    """Every sample name a worker's /metrics can carry (labels aside)."""
    metrics = Metrics()
    metrics.watch(paused=lambda: None, disk=lambda: (1, 1))
    # Labelled families show a sample only once a label set exists: touch one of each.
    metrics.jobs_finished.labels(outcome="completed").inc()
    metrics.job_duration.labels(outcome="completed").observe(1)
    metrics.convex_calls.labels(function="jobs:claimOne", outcome="ok").inc()
    metrics.docs_dropped.labels(reason="too_large").inc()
    metrics.claude_steps.labels(step="outline", outcome="ok").inc()
    text = metrics.render().decode()
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples}


def dashboard_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, expr) for every target of every panel."""
    return [
        (str(panel.get("title")), str(t["expr"]))
        for panel in dashboard["panels"]
        if panel.get("type") != "row"
        for t in panel.get("targets", [])
    ]


def load_dashboard(path: Path = DASHBOARD) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data
