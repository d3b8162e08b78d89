"""Every play that targets the workers loads a production inventory whose vault is encrypted.

The inventory is made as README "Deploying for real" says: a copy of
inventories/production.example, its group_vars/workers/vault.yml encrypted with
`ansible-vault encrypt`, the password in a file named by ANSIBLE_VAULT_PASSWORD_FILE. Ansible
decrypts the vault as it reads the host's variables, before it connects; the one host here
points at a closed loopback port, so a play that got past its variables ends at the
connection (UNREACHABLE). Without the password the same run stops with "Attempting to
decrypt but no vault secrets found", the failure every play once had.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = REPO_ROOT / ".venv" / "bin"
BIN = VENV_BIN if (VENV_BIN / "ansible-playbook").exists() else Path(sys.executable).parent
NO_SECRETS = "Attempting to decrypt but no vault secrets found"
HOST = "worker-1.example.com"


# Plays that act on the workers' hosts from the controller only (a host being revoked may be
# compromised or gone): they talk to Convex, never to the host.
CONTROLLER_ONLY = frozenset({"runbook-credentials.yml"})


def workers_plays() -> list[str]:
    plays = []
    for path in sorted((REPO_ROOT / "playbooks").glob("*.yml")):
        if re.search(r"^\s+hosts: workers$", path.read_text(), re.MULTILINE):
            plays.append(path.name)
    return plays


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port  # nothing listens once the probe is closed


@pytest.fixture(scope="module")
def production(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(inventory, vault password file), made as the README's step 2 makes them."""
    root = tmp_path_factory.mktemp("vault")
    inventory = root / "production"
    shutil.copytree(REPO_ROOT / "inventories" / "production.example", inventory)
    # The example's one host and its settings, the address replaced (JSON is YAML).
    example = (inventory / "hosts.yml").read_text()
    assert f"{HOST}:" in example, example
    assert "ansible_user: debian" in example, example
    workers = {
        "hosts": {HOST: {"ansible_host": "127.0.0.1", "ansible_port": closed_port()}},
        "vars": {
            "ansible_user": "debian",
            "ansible_python_interpreter": "/usr/bin/python3",
            "ansible_ssh_common_args": "-o ConnectTimeout=5 -o BatchMode=yes",
        },
    }
    (inventory / "hosts.yml").write_text(
        json.dumps({"all": {"children": {"workers": workers}}}, indent=2)
    )
    password = root / "vault-pass"
    password.write_text("a-test-vault-password-" + os.urandom(8).hex() + "\n")
    password.chmod(0o600)
    # The secrets an operator puts in before encrypting (the placeholders would be refused).
    vault = inventory / "group_vars" / "workers" / "vault.yml"
    placeholders = dict(re.findall(r"^(vault_\w+): (\S+)$", vault.read_text(), re.MULTILINE))
    assert placeholders, vault.read_text()
    assert all("CHANGE-ME" in value for value in placeholders.values()), placeholders
    vault.write_text(
        json.dumps({key: f"test-{os.urandom(16).hex()}" for key in placeholders}, indent=2)
    )
    subprocess.run(
        [str(BIN / "ansible-vault"), "encrypt", str(vault)],
        env={**os.environ, "ANSIBLE_VAULT_PASSWORD_FILE": str(password)},
        check=True,
        capture_output=True,
        timeout=60,
    )
    assert vault.read_text().startswith("$ANSIBLE_VAULT;"), "ansible-vault did not encrypt"
    return inventory, password


def run_play(inventory: Path, play: str, password: Path | None) -> subprocess.CompletedProcess[str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("ANSIBLE_VAULT") and key != "ANSIBLE_CONFIG"
    }
    env["ANSIBLE_NOCOLOR"] = "1"
    if password is not None:
        env["ANSIBLE_VAULT_PASSWORD_FILE"] = str(password)
    # From the repository root, as the docs type it: Ansible reads ./ansible.cfg there.
    return subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", str(inventory), f"playbooks/{play}"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        stdin=subprocess.DEVNULL,
    )


def test_the_runbook_plays_are_all_found() -> None:
    plays = workers_plays()
    for play in ("deploy.yml", "rollback.yml", "status.yml", "runbook-stuck-jobs.yml"):
        assert play in plays, plays


@pytest.mark.parametrize("play", workers_plays())
def test_the_play_decrypts_the_vault_with_the_password_file(
    production: tuple[Path, Path], play: str
) -> None:
    inventory, password = production
    result = run_play(inventory, play, password)
    output = result.stdout + result.stderr
    assert NO_SECRETS not in output, output[-3000:]
    if play in CONTROLLER_ONLY:
        # Past the variables, at Convex (the example's deployment does not exist): these
        # plays never connect to the host.
        assert f"fatal: [{HOST} -> localhost]: FAILED!" in output, output[-3000:]
        return
    # Past the variables, at the host: the connection is what stopped it.
    assert f"fatal: [{HOST}]: UNREACHABLE!" in output, output[-3000:]


def test_without_the_password_the_play_stops_at_the_vault(production: tuple[Path, Path]) -> None:
    inventory, _ = production
    result = run_play(inventory, "status.yml", None)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert NO_SECRETS in output, output[-3000:]
