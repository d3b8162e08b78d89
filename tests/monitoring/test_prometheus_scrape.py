"""A real Prometheus (Debian's ``prometheus`` server) scrapes a native worker replica and the
Convex endpoint of the dev backend, evaluates the project's own rules (a copy with short
``for``), and FondationWorkerDown goes from inactive to firing when the worker is stopped.

Everything on loopback, on free ports; Prometheus is a child process of the test. The
binary comes from ``scripts/monitoring.sh ensure`` (make monitoring installs it when root on
Debian); without it this suite fails, it never skips.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.monitoring.names import RULES
from tests.support.devbackend import DevBackend
from tests.support.git_server import GitServer
from tests.support.paths import REPO_ROOT, TEST_SCRAPE_TOKEN
from tests.support.waiting import free_port, wait_until
from tests.support.worker_process import WorkerProcess

pytestmark = pytest.mark.integration

SCRAPE_INTERVAL = "1s"
# The test's copy of the rules: every `for` this short, so a state change shows in seconds.
SHORT_FOR = "3s"


def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        script = REPO_ROOT / "scripts" / "monitoring.sh"
        subprocess.run([str(script), "ensure"], check=True, timeout=1200)
        found = shutil.which("prometheus")
    assert found, "no prometheus binary: scripts/monitoring.sh ensure did not provide one"
    return found


def short_rules(directory: Path) -> Path:
    data = yaml.safe_load(RULES.read_text())
    for group in data["groups"]:
        group["interval"] = SCRAPE_INTERVAL
        for rule in group["rules"]:
            if "alert" in rule and "for" in rule:
                rule["for"] = SHORT_FOR
    path = directory / "rules.yml"
    path.write_text(yaml.safe_dump(data))
    return path


@contextlib.contextmanager
def prometheus(directory: Path, worker_port: int, backend: DevBackend) -> Iterator[str]:
    token_file = directory / "scrape-token"
    token_file.write_text(TEST_SCRAPE_TOKEN)
    token_file.chmod(0o600)
    config = {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        "rule_files": [str(short_rules(directory))],
        "scrape_configs": [
            {
                "job_name": "fondation-worker",
                "static_configs": [{"targets": [f"127.0.0.1:{worker_port}"]}],
            },
            {
                # A deployment: scheme https, the .convex.site host, metrics_path /metrics.
                "job_name": "fondation-queue",
                "metrics_path": "/http/metrics",
                "authorization": {"type": "Bearer", "credentials_file": str(token_file)},
                "static_configs": [{"targets": [f"127.0.0.1:{backend.port}"]}],
            },
        ],
    }
    config_path = directory / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config))
    port = free_port()
    log = (directory / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            prometheus_binary(),
            f"--config.file={config_path}",
            f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _get(f"{url}/-/ready") == 200 or process.poll() is not None, 30, 0.2)
        assert process.poll() is None, (directory / "prometheus.log").read_text()[-3000:]
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        log.close()


def _get(url: str) -> int:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.HTTPError:
        return 0


def api(url: str, path: str, **params: str) -> Any:
    reply = httpx.get(f"{url}/api/v1/{path}", params=params, timeout=5)
    reply.raise_for_status()
    body = reply.json()
    assert body["status"] == "success", body
    return body["data"]


def targets_up(url: str) -> dict[str, str]:
    return {t["labels"]["job"]: t["health"] for t in api(url, "targets")["activeTargets"]}


def alert_state(url: str, name: str) -> str:
    for group in api(url, "rules", type="alert")["groups"]:
        for rule in group["rules"]:
            if rule["name"] == name:
                return str(rule["state"])
    raise AssertionError(f"{name} is not loaded")


def query(url: str, expr: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = api(url, "query", query=expr)["result"]
    return result


def test_a_stopped_worker_fires_its_alert(
    tmp_path: Path,
    dev_backend: DevBackend,
    git_server: GitServer,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    worker = start_worker(dev_backend, "prom-1")
    wait_until(worker.healthy, 30, 0.2)

    with prometheus(tmp_path, worker.health_port, dev_backend) as url:
        # Both scraped: the replica's /metrics and Convex's GET /metrics with the scrape token.
        wait_until(
            lambda: targets_up(url) == {"fondation-worker": "up", "fondation-queue": "up"}, 30, 0.5
        )
        wait_until(lambda: query(url, "fondation_queue_jobs") != [], 15, 0.5)
        statuses = {r["metric"]["status"] for r in query(url, "fondation_queue_jobs")}
        assert {"pending", "running", "completed", "dead"} <= statuses
        assert query(url, "fondation_worker_loop_last_tick_timestamp_seconds") != []
        assert alert_state(url, "FondationWorkerDown") == "inactive"

        worker.stop()
        wait_until(lambda: alert_state(url, "FondationWorkerDown") == "firing", 30, 0.5)
        firing = [
            a
            for a in api(url, "alerts")["alerts"]
            if a["labels"]["alertname"] == "FondationWorkerDown"
        ]
        assert len(firing) == 1
        assert firing[0]["state"] == "firing"
        assert firing[0]["labels"]["instance"] == f"127.0.0.1:{worker.health_port}"
        assert firing[0]["annotations"]["runbook"] == "docs/RUNBOOK.md#worker-down"
        # The queue endpoint stayed up the whole time: its alert never left inactive.
        assert alert_state(url, "FondationQueueEndpointDown") == "inactive"
