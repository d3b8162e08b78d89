"""The fondation_worker role refuses bad settings before it touches a host, each with a line
that says what to fix, and never shows a token it refuses.

One ansible-playbook run of the role's preflight (tasks_from: lib/preflight) over an inventory of
local "hosts", one per case: each host carries one bad setting (the "good" host none), so
every refusal is checked in a single run of a few seconds. The results are read per host from
the ansible.posix.json callback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = REPO_ROOT / ".venv" / "bin"
BIN = VENV_BIN if (VENV_BIN / "ansible-playbook").exists() else Path(sys.executable).parent
TOKEN = "preflight-worker-token-0123456789"
SHORT_TOKEN = "tok-1234"  # under 16 characters: refused, and must not be shown


def bounds() -> dict[str, dict[str, Any]]:
    """The role's generated bounds (vars/main.yml), as the preflight reads them."""
    data = yaml.safe_load((REPO_ROOT / "roles/fondation_worker/vars/main.yml").read_text())
    found: dict[str, dict[str, Any]] = data["_fondation_worker_setting_bounds"]
    return found


POLL = bounds()["fondation_worker_poll_interval_ms"]

# host -> (its settings on top of the good ones, a part of the line it must fail with)
CASES: dict[str, tuple[dict[str, Any], str]] = {
    "bad-url": (
        {"fondation_worker_convex_url": "ftp://example.com/x"},
        "fondation_worker_convex_url must be the deployment URL",
    ),
    "short-token": (
        {"fondation_worker_credentials": "shared", "fondation_worker_token": SHORT_TOKEN},
        "fondation_worker_token is the deployment's WORKER_TOKEN (16 characters or more",
    ),
    "operator-is-worker": (
        {"fondation_worker_operator_token": TOKEN},
        "fondation_worker_operator_token must differ from fondation_worker_token",
    ),
    "no-replicas": ({"fondation_worker_replicas": 0}, "1 to 32 replicas"),
    "heartbeat-over-half-lease": (
        {"fondation_worker_heartbeat_ms": 60000, "fondation_worker_lease_ms": 90000},
        "a heartbeat under half the lease",
    ),
    "below-bound": (
        {"fondation_worker_poll_interval_ms": POLL["min"] - 1},
        f"fondation_worker_poll_interval_ms ({POLL['env']}) must be a whole number from "
        f"{POLL['min']} up to {POLL['max']}, got {POLL['min'] - 1}",
    ),
    "not-a-number": (
        {"fondation_worker_claude_max_turns": "lots"},
        "fondation_worker_claude_max_turns (CLAUDE_MAX_TURNS) must be a whole number",
    ),
    "old-name": (
        {"fondation_worker_health_timeout": 300},
        "fondation_worker_health_timeout is no longer read: set "
        "fondation_worker_health_timeout_s (seconds) instead",
    ),
    "bad-model": (
        {"fondation_worker_claude_model": "opus; rm -rf /"},
        "fondation_worker_claude_model must be a model name",
    ),
    "token-to-claude": (
        {"fondation_worker_claude_env_passthrough": ["worker_token"]},
        "variable names other than WORKER_TOKEN and FONDATION_GIT_TOKEN",
    ),
    "multiline-env": (
        {"fondation_worker_extra_env": {"GREETING": "hello\nEVIL=1"}},
        "fondation_worker_extra_env needs variable names as keys and one-line values",
    ),
    "shadowing-env": (
        {"fondation_worker_extra_env": {"idle_poll_max_ms": "2000", "WORKER_ID": "w", "X": "1"}},
        "fondation_worker_extra_env sets IDLE_POLL_MAX_MS, WORKER_ID, which the role sets itself",
    ),
    "bad-volume": (
        {"fondation_worker_extra_volumes": ["/srv/data"]},
        "fondation_worker_extra_volumes items look like /host/path:/container/path[:ro]",
    ),
    "no-archive": (
        {"fondation_worker_image_archive": "/nonexistent/fondation-worker.tar.gz"},
        "/nonexistent/fondation-worker.tar.gz does not exist on the controller: build it with "
        "`make image`",
    ),
}


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """host -> the result of its last task in the run (its failure, or the last check)."""
    root = tmp_path_factory.mktemp("preflight")
    archive = root / "fondation-worker-test.tar.gz"
    archive.write_bytes(b"")
    good = {
        "ansible_connection": "local",
        "ansible_python_interpreter": sys.executable,
        "fondation_worker_convex_url": "https://happy-animal-123.convex.cloud",
        "fondation_worker_token": TOKEN,
        "fondation_worker_operator_token": "preflight-operator-token-9876543210",
        "fondation_worker_image_archive": str(archive),
    }
    hosts = {"good": good} | {name: good | bad for name, (bad, _) in CASES.items()}
    inventory = root / "hosts.json"
    inventory.write_text(json.dumps({"all": {"hosts": hosts}}))
    play = root / "preflight.yml"
    play.write_text(
        "- hosts: all\n  gather_facts: false\n  tasks:\n"
        "    - ansible.builtin.include_role:\n"
        "        name: fondation_worker\n        tasks_from: lib/preflight\n"
    )
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(REPO_ROOT / "ansible.cfg"),
        "ANSIBLE_ROLES_PATH": str(REPO_ROOT / "roles"),
        "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
        "ANSIBLE_FORKS": str(len(hosts)),
    }
    done = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", str(inventory), str(play)],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.stdout.lstrip().startswith("{"), done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads(done.stdout)
    last: dict[str, dict[str, Any]] = {}
    for play_report in report["plays"]:
        for task in play_report["tasks"]:
            for host, result in task["hosts"].items():
                last[host] = result | {"task": task["task"]["name"]}
    last["_output"] = {"stdout": done.stdout, "stderr": done.stderr}
    return last


def test_good_settings_pass_every_check(results: dict[str, dict[str, Any]]) -> None:
    good = results["good"]
    assert not good.get("failed"), good
    assert good["task"].endswith("Refuse a missing image archive"), good  # the last check


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_bad_setting_is_refused_with_what_to_fix(
    results: dict[str, dict[str, Any]], case: str
) -> None:
    result = results[case]
    assert result.get("failed"), f"{case} passed the preflight: {result}"
    assert CASES[case][1] in result.get("msg", ""), result


def test_a_refused_token_is_never_shown(results: dict[str, dict[str, Any]]) -> None:
    output = results["_output"]
    for token in (SHORT_TOKEN, TOKEN):
        assert token not in output["stdout"]
        assert token not in output["stderr"]
