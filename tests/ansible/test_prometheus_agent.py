"""The optional prometheus_agent role's configuration: rendered by Ansible from the role's
own templates and variables, for bearer, basic and no auth, then checked by promtool (as the
role's `validate` does) and read back. The credential never lands in the configuration."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

REPO_ROOT = Path(__file__).resolve().parents[2]
ROLE = REPO_ROOT / "roles" / "prometheus_agent"
VENV_BIN = REPO_ROOT / ".venv" / "bin"
BIN = VENV_BIN if (VENV_BIN / "ansible-playbook").exists() else Path(sys.executable).parent
SECRET = "remote-write-secret-0123456789"

CASES: dict[str, dict[str, Any]] = {
    "bearer": {"prometheus_agent_remote_write_bearer_token": SECRET},
    "basic": {
        "prometheus_agent_remote_write_username": "fleet",
        "prometheus_agent_remote_write_password": SECRET,
    },
    "none": {},
}


COMMON = {
    "prometheus_agent_remote_write_url": "https://prom.example.com/api/v1/write",
    "fondation_worker_health_port": 8090,
    "fondation_worker_replicas": 3,
}


def render(tmp_path: Path) -> dict[str, Path]:
    playbook = [
        {
            "name": "Render the agent's files",
            "hosts": "localhost",
            "connection": "local",
            "gather_facts": False,
            "vars_files": [str(ROLE / "defaults/main.yml"), str(ROLE / "vars/main.yml")],
            "vars": {"ansible_python_interpreter": sys.executable},
            "tasks": [
                {
                    "name": f"Render {case}",
                    "ansible.builtin.template": {
                        "src": str(ROLE / "templates/prometheus.yml.j2"),
                        "dest": str(tmp_path / f"{case}.yml"),
                        "mode": "0600",
                    },
                    # Task vars: above vars_files, as an inventory's are above role defaults.
                    "vars": {**COMMON, **extra},
                }
                for case, extra in CASES.items()
            ],
        }
    ]
    path = tmp_path / "render.yml"
    path.write_text(yaml.safe_dump(playbook))
    subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", "localhost,", str(path)],
        check=True,
        capture_output=True,
        timeout=240,
        cwd=REPO_ROOT,
    )
    return {case: tmp_path / f"{case}.yml" for case in CASES}


def test_the_rendered_agent_configuration_is_valid_and_keeps_the_secret_out(
    tmp_path: Path,
) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: scripts/monitoring.sh ensure"
    for case, path in render(tmp_path).items():
        text = path.read_text()
        assert SECRET not in text, case
        subprocess.run(
            [promtool, "check", "config", "--syntax-only", str(path)], check=True, timeout=60
        )
        config = yaml.safe_load(text)
        (job,) = config["scrape_configs"]
        assert job["job_name"] == "fondation-worker"
        assert job["static_configs"][0]["targets"] == [
            "127.0.0.1:8090",
            "127.0.0.1:8091",
            "127.0.0.1:8092",
        ]
        (remote,) = config["remote_write"]
        assert remote["url"] == "https://prom.example.com/api/v1/write"
        assert config["global"]["external_labels"] == {"host": "localhost"}
        if case == "bearer":
            assert (
                remote["authorization"]["credentials_file"] == "/etc/prometheus/remote-write.secret"
            )
        elif case == "basic":
            assert remote["basic_auth"]["username"] == "fleet"
            assert remote["basic_auth"]["password_file"] == "/etc/prometheus/remote-write.secret"
        else:
            assert "authorization" not in remote
            assert "basic_auth" not in remote
