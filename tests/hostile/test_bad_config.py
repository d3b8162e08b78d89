"""Bad configuration for every setting: `fondation-worker run` and `check` print exactly one
line naming the variable on stderr and exit 2, without a traceback or the secret's value.

The settings come from the pydantic model itself, so a new setting is covered at once: ints,
floats, literals and paths get bad values derived from their type and bounds; any other
setting needs a hand-picked entry in HAND_PICKED, and the coverage test fails until it has
one. tests/unit/test_config.py checks the messages of load_settings in-process; this module
checks the real command line for every field.
"""

from __future__ import annotations

import os
import subprocess
import types
import typing
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import annotated_types
import pytest
from pydantic.fields import FieldInfo
from typer.testing import CliRunner

from fondation_worker.cli import app
from fondation_worker.cli.checks import runtime_problems
from fondation_worker.config import SECRET_FIELDS, Settings, load_settings
from tests.support import FAKE_CLAUDE, WORKER_BIN, free_port

NOT_A_DIR = "/etc/hostname"  # a file: nothing can be created below it, not even by root

# Values the type alone cannot produce: one list per setting of another type, plus extra
# ones that only fail when the worker starts (missing binary, unwritable directory).
HAND_PICKED: dict[str, list[str]] = {
    "convex_url": ["ftp://convex.example.com", "http://convex.example.com", "https://u:p@x.io"],
    "worker_token": ["too-short", "a token with spaces in it"],
    "operator_token": ["too-short", "a token with spaces in it"],
    "worker_id": ["bad id!", "-leading-dash"],
    "temp_dir": ["/", f"{NOT_A_DIR}/fondation"],
    "allowed_repo_hosts": ["exa mple.com", ",", "https://github.com"],
    "git_bin": ["--upload-pack=x", "no-such-git-binary-here"],
    "git_ca_bundle": ["/nonexistent/ca.pem"],
    "claude_bin": ["claude --dangerously-skip-permissions", "no-such-claude-binary-here"],
    "claude_cli_version": ["latest", "2.1", "2.1.0 beta"],
    "claude_model": ["bad model!"],
    "claude_config_dir": [f"{NOT_A_DIR}/claude"],
    "claude_env_passthrough": ["1BAD", "WORKER_TOKEN", "FONDATION_GIT_TOKEN"],
    "anthropic_api_key": ['"sk-ant-api03-quoted"', "sk-ant-api03-with space"],
    "claude_code_oauth_token": ["sk-ant-oat01-newline\n", "'sk-ant-oat01-quoted'"],
    "health_bind": ["nonsense", "127.0.0.1:99999", "example.com:8080"],
    "log_file": [f"{NOT_A_DIR}/worker.log"],
    "wakeup": ["maybe", "2"],
}


def _plain(annotation: Any) -> Any:
    """``X | None`` -> ``X``."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _bound(info: FieldInfo, kind: type, attribute: str) -> Any:
    for item in info.metadata:
        if isinstance(item, kind):
            return getattr(item, attribute)
    return None


def derived_bad_values(info: FieldInfo) -> list[str]:
    """Bad values that follow from the field's type and bounds: a value of the wrong type,
    then one just past a bound."""
    annotation = _plain(info.annotation)
    if annotation is int:
        ge, le = _bound(info, annotated_types.Ge, "ge"), _bound(info, annotated_types.Le, "le")
        return ["soon", str(ge - 1) if ge is not None else str(le + 1)]
    if annotation is float:
        gt = _bound(info, annotated_types.Gt, "gt")
        return ["plenty", *([str(gt)] if gt is not None else [])]
    if typing.get_origin(annotation) is Literal:
        return [str(typing.get_args(annotation)[0]) + "x"]
    if annotation is Path:
        return ["relative/path"]
    return []


def bad_values(name: str, info: FieldInfo) -> list[str]:
    return derived_bad_values(info) + HAND_PICKED.get(name, [])


@pytest.fixture(scope="module")
def good_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("config")
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(root),
        "CONVEX_URL": "http://127.0.0.1:9",
        "WORKER_TOKEN": "a-long-enough-worker-token",
        "TEMP_DIR": str(root / "tmp"),
        "CLAUDE_BIN": str(FAKE_CLAUDE),
        "CLAUDE_CONFIG_DIR": str(root / "claude"),
        "MIN_FREE_DISK_MB": "1",
        "HEALTH_BIND": f"127.0.0.1:{free_port()}",
    }


def test_every_setting_has_bad_values() -> None:
    missing = [n.upper() for n, i in Settings.model_fields.items() if not bad_values(n, i)]
    assert missing == [], f"add hand-picked bad values for {missing} to HAND_PICKED"
    assert set(HAND_PICKED) <= set(Settings.model_fields), "HAND_PICKED names a removed setting"


def test_the_good_environment_is_good(
    good_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Otherwise every case below could fail for the wrong variable."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    for name, value in good_env.items():
        monkeypatch.setenv(name, value)
    assert runtime_problems(load_settings()) == []


@dataclass(frozen=True)
class Outcome:
    returncode: int
    stdout: str
    stderr: str


def run_process(command: str, env: dict[str, str]) -> Outcome:
    """The installed ``fondation-worker`` console script, in a process of its own."""
    proc = subprocess.run(
        [str(WORKER_BIN), command],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return Outcome(proc.returncode, proc.stdout, proc.stderr)


def run_in_process(command: str, env: dict[str, str]) -> Outcome:
    """The same Typer app, invoked in this process with exactly ``env`` as settings."""
    unset: dict[str, str | None] = {name.upper(): None for name in Settings.model_fields}
    result = CliRunner().invoke(app, [command], env={**unset, **env}, catch_exceptions=False)
    return Outcome(result.exit_code, result.stdout, result.stderr)


def problem_with(command: str, variable: str, value: str, proc: Outcome) -> str | None:
    """Why this run is not one clear line naming ``variable`` with exit 2, or None."""
    where = f"{command} with {variable}={value!r}"
    lines = proc.stderr.splitlines()
    if proc.returncode != 2:
        return f"{where}: exit {proc.returncode}: {proc.stderr!r} {proc.stdout[-300:]!r}"
    if len(lines) != 1 or proc.stdout:
        return f"{where}: expected one line on stderr only: {proc.stderr!r} {proc.stdout!r}"
    if not lines[0].startswith(f"fondation-worker: config error: {variable}: "):
        return f"{where}: does not name the variable: {lines[0]!r}"
    if len(lines[0]) > 300 or "Traceback" in proc.stderr:
        return f"{where}: not one clear line: {lines[0]!r}"
    if variable.lower() in SECRET_FIELDS and value.strip("\"'\n") in proc.stderr:
        return f"{where}: the secret's value is echoed"
    return None


# One test per setting. Every bad value goes through `run` and `check` in this process (the
# same Typer app); the real console script, in processes of its own (about a second of
# start-up each), runs `run` with the first bad value and `check` with the last one (often
# one that only fails when the worker starts, such as a missing binary).
@pytest.mark.parametrize("field", list(Settings.model_fields))
def test_bad_values_are_one_clear_line_and_exit_2(good_env: dict[str, str], field: str) -> None:
    variable = field.upper()
    values = bad_values(field, Settings.model_fields[field])
    assert values, f"add hand-picked bad values for {variable} to HAND_PICKED"
    real = [("run", values[0]), ("check", values[-1])]
    with ThreadPoolExecutor(max_workers=2) as pool:
        outcomes = list(pool.map(lambda r: run_process(r[0], {**good_env, variable: r[1]}), real))
    runs = list(real)
    for value in values:
        for command in ("run", "check"):
            runs.append((command, value))
            outcomes.append(run_in_process(command, {**good_env, variable: value}))
    problems = [problem_with(c, variable, v, o) for (c, v), o in zip(runs, outcomes, strict=True)]
    assert [p for p in problems if p] == []
