"""One source for every setting: the worker's Settings.

- docs/CONFIGURATION.md and the bounds block of the role's vars/main.yml are exactly what
  ``python -m scripts.reference`` writes from Settings.
- Every setting names the role variable that sets it in production, or says what does.
- Each such role variable is public (defaults/main.yml, meta/argument_specs.yml, at the
  worker's default) and the env template writes it under the setting's name; the env
  template writes nothing the worker does not read.
- Convex bounds the lease exactly as the worker does.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from scripts import reference

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "roles" / "fondation_worker"
ENV_TEMPLATE = ROLE / "templates" / "worker.env.j2"
POLICY = ROOT / "convex" / "lib" / "policy.ts"

ROWS = reference.settings()
# Role variables that are not written into the env file: the operator token goes to the
# runbook plays' CLI runs only, the prefix becomes WORKER_ID in the unit, the Claude
# credentials are the claude_credentials role's env file.
NOT_IN_ENV_FILE = {
    "fondation_worker_operator_token",
    "fondation_worker_id_prefix",
    "claude_credentials_api_key",
    "claude_credentials_oauth_token",
}


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _main_options() -> dict[str, Any]:
    specs = _yaml(ROLE / "meta" / "argument_specs.yml")["argument_specs"]
    options: dict[str, Any] = specs["main"]["options"]
    return options


def test_the_reference_and_the_role_bounds_are_generated_and_fresh() -> None:
    assert (ROOT / reference.DOC_PATH).read_text(encoding="utf-8") == reference.markdown(), (
        "docs/CONFIGURATION.md is stale: run `python -m scripts.reference`"
    )
    vars_text = (ROOT / reference.VARS_PATH).read_text(encoding="utf-8")
    assert reference.with_bounds_block(vars_text) == vars_text, (
        "the bounds in roles/fondation_worker/vars/main.yml are stale: run "
        "`python -m scripts.reference`"
    )
    assert reference.main(["--check", str(ROOT)]) == 0


def test_every_setting_says_what_sets_it_in_production() -> None:
    missing = [row.env for row in ROWS if not (row.role_variable or row.note)]
    assert missing == [], "give these Settings a role variable or a note (config.py _doc)"


def test_every_duration_and_size_carries_its_unit_in_its_name() -> None:
    for row in ROWS:
        if row.unit == "ms":
            assert row.env.endswith("_MS"), row.env
            assert row.role_variable.endswith("_ms"), row.role_variable
        if row.unit == "MiB":
            assert row.env.endswith("_MB"), row.env
            assert row.role_variable.endswith("_mb"), row.role_variable
        if row.env.endswith("_MS"):
            assert row.unit == "ms", row.env


@pytest.mark.parametrize(
    "row",
    [r for r in ROWS if r.role_variable.startswith("fondation_worker_")],
    ids=lambda r: r.role_variable,
)
def test_the_role_variable_is_public_at_the_workers_default(row: reference.Setting) -> None:
    defaults = _yaml(ROLE / "defaults" / "main.yml")
    options = _main_options()
    assert row.role_variable in defaults, f"{row.role_variable} missing from defaults/main.yml"
    assert row.role_variable in options, f"{row.role_variable} missing from argument_specs"
    spec = options[row.role_variable]
    assert row.env in str(spec.get("description", "")), (
        f"argument_specs: {row.role_variable}'s description must name {row.env}"
    )
    if row.role_variable in ("fondation_worker_convex_url", "fondation_worker_token"):
        return  # required: empty in the role, no default in the worker
    if row.field in ("operator_token", "worker_id"):
        return
    expected: Any = row.default
    if expected is None:
        expected = ""
    assert defaults[row.role_variable] == expected, (row.role_variable, defaults[row.role_variable])
    assert spec.get("default") == expected, (row.role_variable, spec.get("default"))
    # The bounds an operator reads in the spec are the worker's: written by hand there, so
    # checked here (`ansible-doc` and the role's own checks show this text).
    stated = re.search(r"\((-?[0-9]+) to (-?[0-9]+)[;)]", str(spec.get("description", "")))
    if row.ge is not None and row.le is not None:
        assert stated is not None, (
            f"argument_specs: {row.role_variable}'s description must state its bounds as "
            f"({row.ge} to {row.le})"
        )
    if stated is not None:
        assert (int(stated.group(1)), int(stated.group(2))) == (row.ge, row.le), (
            f"argument_specs: {row.role_variable} says {stated.group(0)}, the worker's bounds "
            f"are {row.ge} to {row.le}"
        )
    kinds = {"int": "int", "bool": "bool", "str": "str"}
    if row.kind in kinds and row.default is not None and not isinstance(row.default, list):
        assert spec.get("type") == kinds[row.kind], (row.role_variable, spec.get("type"))


def test_the_env_file_writes_each_role_variable_under_its_settings_name() -> None:
    template = ENV_TEMPLATE.read_text(encoding="utf-8")
    written = dict(re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", template, re.MULTILINE))
    fields = {row.env for row in ROWS}
    assert set(written) <= fields, f"not read by the worker: {set(written) - fields}"
    for row in ROWS:
        if not row.role_variable.startswith("fondation_worker_"):
            continue
        if row.role_variable in NOT_IN_ENV_FILE:
            continue
        assert row.env in written, f"worker.env.j2 does not write {row.env}"
        assert row.role_variable in written[row.env], (row.env, written[row.env])


def _ts_const(name: str) -> int:
    match = re.search(rf"^export const {name} = ([0-9_ *]+);", POLICY.read_text(), re.MULTILINE)
    assert match, f"{name} not found in {POLICY}"
    value = 1
    for factor in match.group(1).split("*"):
        value *= int(factor.strip())
    return value


def test_convex_bounds_the_lease_as_the_worker_does() -> None:
    lease = next(row for row in ROWS if row.field == "lease_ms")
    assert (_ts_const("MIN_LEASE_MS"), _ts_const("MAX_LEASE_MS")) == (lease.ge, lease.le)


PLAYBOOKS = sorted((ROOT / "playbooks").glob("*.yml"))


def _entry_points(role: str) -> set[str]:
    specs = _yaml(ROOT / "roles" / role / "meta" / "argument_specs.yml")["argument_specs"]
    return set(specs)


@pytest.mark.parametrize("play", PLAYBOOKS, ids=lambda p: p.name)
def test_plays_use_only_role_entry_points_and_public_names(play: Path) -> None:
    text = play.read_text(encoding="utf-8")
    roles = "|".join(p.name for p in (ROOT / "roles").iterdir() if p.is_dir())
    private = sorted(set(re.findall(rf"(?<![A-Za-z0-9_])_(?:{roles})_[a-z0-9_]+", text)))
    assert private == [], f"{play.name} uses role-private names: {private}"
    for role, tasks_from in re.findall(r"name: ([a-z_]+)\n\s+tasks_from: ([A-Za-z0-9_./]+)", text):
        entry = tasks_from.removesuffix(".yml")
        assert entry in _entry_points(role), (
            f"{play.name}: {role} {tasks_from} is a helper, not an entry point of the role"
            " (meta/argument_specs.yml)"
        )
    assert "10001" not in text, f"{play.name} hard-codes the image's uid"
    assert "/home/worker" not in text, f"{play.name} hard-codes the image's home"


def test_the_role_tasks_directory_holds_exactly_its_entry_points() -> None:
    """`ls tasks/` shows the entry points; every helper lives under tasks/lib/."""
    tasks = {p.stem for p in (ROLE / "tasks").glob("*.yml")}
    assert tasks == _entry_points("fondation_worker"), (
        "roles/fondation_worker/tasks/ holds a file that is not an entry point "
        "(meta/argument_specs.yml), or an entry point has no file: helpers go in tasks/lib/"
    )
