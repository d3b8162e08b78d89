"""The names the fondation_worker role sets in a replica's environment, listed once in its vars
(`_fondation_worker_env_names`, which preflight refuses in `fondation_worker_extra_env`), held
here to the templates that really set them: a new setting in worker.env.j2 or the unit that
the list missed would again let an extra env line shadow it silently."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROLE = Path(__file__).resolve().parents[2] / "roles" / "fondation_worker"


NAME = r"[A-Za-z_][A-Za-z0-9_]*"


def names_the_templates_set() -> tuple[set[str], set[str]]:
    """(names always set, names set only with egress on)."""
    env_files = [
        ROLE / "templates" / "worker.env.j2",
        ROLE.parent / "claude_credentials" / "templates" / "claude.env.j2",
    ]
    unit = (ROLE / "templates" / "fondation-worker@.service.j2").read_text()
    egress_part = re.search(r"\{% if fondation_worker_egress .*?%\}(.*?)\{% endif %\}", unit, re.S)
    assert egress_part, "the unit's egress block moved: update this test"
    always = {name for f in env_files for name in re.findall(rf"^({NAME})=", f.read_text(), re.M)}
    always |= set(re.findall(rf"--env ({NAME})=", unit.replace(egress_part.group(0), "")))
    egress = set(re.findall(rf"--env ({NAME})=", egress_part.group(1)))
    # The proxy variables come from a Jinja loop over a literal list of names.
    for listed in re.findall(r"\{% for name in \[([^\]]*)\] %\}", egress_part.group(1)):
        egress |= set(re.findall(rf"'({NAME})'", listed))
    return always, egress


def test_the_role_lists_every_name_its_templates_set() -> None:
    role_vars = yaml.safe_load((ROLE / "vars" / "main.yml").read_text())
    always = role_vars["_fondation_worker_env_names_always"]
    egress = role_vars["_fondation_worker_env_names_egress"]
    assert len(always + egress) == len(set(always + egress)), "a name is listed twice"
    found_always, found_egress = names_the_templates_set()
    assert {
        "CONVEX_URL",
        "CLAUDE_ENV_PASSTHROUGH",
        "WORKER_ID",
        "ANTHROPIC_API_KEY",
    } <= found_always
    assert {"https_proxy", "NO_PROXY"} <= found_egress
    assert (set(always), set(egress)) == (found_always, found_egress)
