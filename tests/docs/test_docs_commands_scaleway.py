"""OPERATIONS "Provisioning a Scaleway instance", run as written against the fake Scaleway
API (tests/support/fakes/scaleway_api.py): the two exports, then the play with the public
key read from `~/.ssh/id_ed25519.pub` of a HOME of the test's own.

Only what points the play at the fake is added, as extra variables from a file: the API URL,
no wait for SSH (nothing listens on the fake's documentation-range addresses) and short
polls. The secret reaches the export from the environment, never the command line.
tests/ansible/test_scaleway_provision.py checks the role itself in depth (it passes the key
as JSON, so it never saw that the docs' `-e key="$(cat ...)"` handed Ansible a key cut at its
first space: the key value needs its own quotes inside).
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from tests.docs.commands import ROOT, DocShell, shell_env
from tests.support.fakes.scaleway_api import FakeScaleway

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

PROJECT = "6c1d7f0e-3a2b-4c5d-8e9f-0a1b2c3d4e5f"


def test_provisioning_a_scaleway_instance(documented: DocShell, tmp_path: Path) -> None:
    secret = "scw-docs-" + secrets.token_hex(16)
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ops@docs-test", "-f",
         str(home / ".ssh" / "id_ed25519")],
        check=True,
        timeout=60,
    )  # fmt: skip
    public_key = (home / ".ssh" / "id_ed25519.pub").read_text(encoding="ascii").strip()
    fake = FakeScaleway(secret, polls_to_running=1).start()
    try:
        extra = tmp_path / "fake-scaleway.json"
        extra.write_text(
            json.dumps(
                {
                    "scaleway_instance_api_url": fake.url,
                    "scaleway_instance_wait_for_ssh": False,
                    "scaleway_instance_poll_interval_s": 0.2,
                    "scaleway_instance_wait_timeout_s": 60,
                }
            ),
            encoding="utf-8",
        )
        env = shell_env({"FAKE_SCW_SECRET": secret, "ANSIBLE_NOCOLOR": "1"}, home=home)
        env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"  # the venv, active
        ran = documented.run(
            [
                "export SCW_SECRET_KEY=...",
                "export SCW_DEFAULT_PROJECT_ID=...",
                "ansible-playbook playbooks/provision.yml -e \"scaleway_instance_ssh_public_key='"
                "$(cat ~/.ssh/id_ed25519.pub)'\"",
            ],
            env=env,
            cwd=ROOT,
            replace={
                "SCW_SECRET_KEY=...": 'SCW_SECRET_KEY="$FAKE_SCW_SECRET"',
                "SCW_DEFAULT_PROJECT_ID=...": f"SCW_DEFAULT_PROJECT_ID={PROJECT}",
                "playbooks/provision.yml": f"playbooks/provision.yml -e @{extra}",
            },
            timeout=500,
        )
        play = ran[-1]
        assert [r.returncode for r in ran] == [0, 0, 0], play.output[-5000:]
        assert "failed=0" in play.output, play.output[-3000:]
        assert secret not in play.output
        [server] = fake.servers.values()
        assert server["name"] == "fondation-worker-1"
        assert server["state"] == "running"
        assert server["project"] == PROJECT
        cloud_init = fake.user_data[server["id"]]["cloud-init"]
        assert public_key in cloud_init
        assert server["public_ip"]["address"]
    finally:
        fake.stop()
