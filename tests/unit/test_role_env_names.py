"""The names the fondation_worker role sets in a replica's environment, listed once in its vars
(`_fondation_worker_env_names`, which preflight refuses in `fondation_worker_extra_env`), held
here to the templates that really set them: a new setting in worker.env.j2 or the unit that
the list missed would again let an extra env line shadow it silently."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROLE = Path(__file__).resolve().parents[2] / "roles" / "fondation_worker"


def names_the_templates_set() -> set[str]:
    env_file = (ROLE / "templates" / "worker.env.j2").read_text()
    unit = (ROLE / "templates" / "fondation-worker@.service.j2").read_text()
    names = set(re.findall(r"^([A-Za-z_][A-Za-z0-9_]*)=", env_file, re.MULTILINE))
    names |= set(re.findall(r"--env ([A-Za-z_][A-Za-z0-9_]*)=", unit))
    # The proxy variables come from a Jinja loop over a literal list of names.
    for listed in re.findall(r"\{% for name in \[([^\]]*)\] %\}", unit):
        names |= set(re.findall(r"'([A-Za-z_][A-Za-z0-9_]*)'", listed))
    return names


def test_the_role_lists_every_name_its_templates_set() -> None:
    listed = yaml.safe_load((ROLE / "vars" / "main.yml").read_text())["_fondation_worker_env_names"]
    assert len(listed) == len(set(listed)), "a name is listed twice"
    found = names_the_templates_set()
    assert {"CONVEX_URL", "CLAUDE_ENV_PASSTHROUGH", "WORKER_ID", "https_proxy"} <= found
    assert set(listed) == found
