"""The documented commands that need nothing but this machine, run as written (RUN_BY in
tests/docs/commands.py gives them to these tests).

- README "Deploying for real" steps 0 and 2 (and their copies in OPERATIONS and RUNBOOK): the
  venv activated, the inventory copied and edited, the vault password file made, the vault
  encrypted, then edited as RUNBOOK's token rotation does, in a scratch copy of the
  repository with a HOME of its own. The operator's typing is a scripted $EDITOR
  (tests/support/fakes/operator_editor.py). The inventory then loads with its vault.
- The make targets `make test` does not run: `make help`, and `make pytest-fast` (collecting
  only: the pytest stage runs the tests themselves).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.docs.commands import ROOT, DocShell, shell_env
from tests.support.paths import FAKES

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

FIRST_DEPLOY = [
    "source .venv/bin/activate",
    "cp -r inventories/production.example inventories/production",
    "$EDITOR inventories/production/hosts.yml inventories/production/group_vars/workers/main.yml",
    "$EDITOR inventories/production/group_vars/workers/vault.yml",
    "mkdir -p ~/.config/fondation-worker",
    "(umask 077; openssl rand -base64 32 > ~/.config/fondation-worker/vault-pass)",
    "export ANSIBLE_VAULT_PASSWORD_FILE=~/.config/fondation-worker/vault-pass",
    "ansible-vault encrypt inventories/production/group_vars/workers/vault.yml",
    # RUNBOOK "Rotating a token": the vault edited in place, with the same password file.
    "ansible-vault edit inventories/production/group_vars/workers/vault.yml",
]


def edits(log: Path) -> dict[str, dict[str, str]]:
    """What the scripted editor set, per kind of file (the last edit of each)."""
    found: dict[str, dict[str, str]] = {}
    for line in log.read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        found[entry["kind"]] = entry["values"]
    return found


def test_the_first_deploy_prepares_the_inventory_and_its_vault(
    documented: DocShell, tmp_path: Path
) -> None:
    clone = tmp_path / "clone"
    shutil.copytree(ROOT / "inventories", clone / "inventories")
    (clone / ".venv").symlink_to(Path(sys.executable).parent.parent)
    home = tmp_path / "home"
    home.mkdir()
    log = tmp_path / "editor.jsonl"
    env = shell_env(
        {
            "EDITOR": f"{sys.executable} {FAKES / 'operator_editor.py'}",
            "OPERATOR_EDITOR_LOG": str(log),
        },
        home=home,
    )
    ran = documented.run(FIRST_DEPLOY, env=env, cwd=clone)
    for result in ran:
        assert result.returncode == 0, (
            f"`{result.command}` exited {result.returncode}:\n{result.output}"
        )

    inventory = clone / "inventories" / "production"
    vault = inventory / "group_vars" / "workers" / "vault.yml"
    password = home / ".config" / "fondation-worker" / "vault-pass"
    assert vault.read_text(encoding="utf-8").startswith("$ANSIBLE_VAULT;1.1;AES256\n")
    assert password.stat().st_mode & 0o777 == 0o600, "the umask 077 line made it private"
    assert re.fullmatch(r"[A-Za-z0-9+/]{43}=\n", password.read_text(encoding="ascii"))
    set_by = edits(log)
    assert set(set_by) == {"hosts", "main", "vault", "vault-edit"}, set_by

    # The inventory as every play on it loads it: the vault decrypted with the password file.
    shown = subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible-inventory"),
            "-i",
            str(inventory),
            "--host",
            set_by["hosts"]["host"],
        ],
        env={**env, "ANSIBLE_VAULT_PASSWORD_FILE": str(password)},
        cwd=clone,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    host = json.loads(shown.stdout)
    assert host["ansible_host"] == set_by["hosts"]["address"]
    assert host["fondation_worker_convex_url"] == set_by["main"]["convex_url"]
    rotated = set_by["vault-edit"]["vault_fondation_worker_token"]
    assert host["vault_fondation_worker_token"] == rotated, "ansible-vault edit kept its change"
    for name in ("vault_fondation_operator_token", "vault_claude_oauth_token"):
        assert host[name] == set_by["vault"][name]
    assert not any("CHANGE-ME" in str(value) for value in host.values())


def _help_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([a-z-]+):.*## ", text, re.MULTILINE))


def test_the_make_targets_outside_make_test(documented: DocShell, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = shell_env(home=home)
    [shown] = documented.run(["make help"], env=env, cwd=ROOT)
    assert shown.returncode == 0, shown.output
    listed = set(re.findall(r"^  make (\S+)", shown.output, re.MULTILINE))
    assert listed == _help_targets(), shown.output
    assert {"deploy", "test", "pytest-fast", "clean-local"} <= listed

    # The target and its marker expression, collecting only (PYTEST_ADDOPTS): the pytest
    # stage runs the tests themselves, and the in-process ones are what is left.
    [fast] = documented.run(
        ["make pytest-fast"],
        env={**env, "PYTEST_ADDOPTS": "--collect-only -q -p no:cacheprovider"},
        cwd=ROOT,
    )
    assert fast.returncode == 0, fast.output[-3000:]
    summary = re.search(r"(\d+)/(\d+) tests collected \((\d+) deselected\)", fast.output)
    assert summary, fast.output[-3000:]
    selected, total, deselected = (int(n) for n in summary.groups())
    assert selected + deselected == total
    assert selected > 300
    assert deselected > 100
    assert "tests/unit/test_config.py::test_defaults" in fast.output
    assert "tests/docs/test_docs_commands_local.py::" not in fast.output, "a slow test left in"

    # The dashboard regenerated from monitoring/dashboard.py is the committed JSON: running
    # the documented command on a clean tree changes nothing.
    dashboard = ROOT / "monitoring" / "dashboards" / "fondation-fleet.json"
    before = dashboard.read_bytes()
    [regenerated] = documented.run(["make dashboard"], env=env, cwd=ROOT)
    assert regenerated.returncode == 0, regenerated.output[-3000:]
    assert dashboard.read_bytes() == before, "make dashboard changed the committed dashboard"


def test_the_reader_shell_has_no_venv_on_its_path(tmp_path: Path) -> None:
    """Otherwise `source .venv/bin/activate` would prove nothing."""
    env = shell_env(home=tmp_path)
    assert str(Path(sys.executable).parent) not in env["PATH"].split(":")
    assert os.path.realpath(shutil.which("ansible-vault", path=env["PATH"]) or "") != (
        os.path.realpath(Path(sys.executable).parent / "ansible-vault")
    )
