from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from fondation_worker import cli
from fondation_worker.config import CREDENTIALS, RENAMED, credential_of, load_settings
from fondation_worker.errors import ConfigError
from tests.support import WORKER_BIN

GOOD = {
    "CONVEX_URL": "https://happy-otter-123.convex.cloud",
    "WORKER_TOKEN": "a-long-enough-worker-token",
}


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.upper() in {
            "CONVEX_URL",
            "WORKER_TOKEN",
            "POLL_INTERVAL_MS",
            "IDLE_POLL_MAX_MS",
            "LEASE_MS",
            "HEARTBEAT_MS",
            "WORKER_ID",
            "TEMP_DIR",
            "ALLOWED_REPO_HOSTS",
            "LOG_FORMAT",
            "HEALTH_BIND",
            "MAX_CONCURRENT_JOBS",
            "GIT_CA_BUNDLE",
            "CLAUDE_ENV_PASSTHROUGH",
            "JOB_TIMEOUT_MS",
            "STEP_TIMEOUT_MS",
            "DRAIN_TIMEOUT_MS",
            "CLAUDE_MODEL",
            "CLAUDE_BIN",
        }:
            monkeypatch.delenv(name)
    for name, value in GOOD.items():
        monkeypatch.setenv(name, value)
    return monkeypatch


def test_defaults(env: pytest.MonkeyPatch) -> None:
    s = load_settings()
    assert s.poll_interval_ms == 5000
    assert s.max_concurrent_jobs == 1
    assert s.temp_dir == Path("/tmp/fondation")
    assert s.lease_ms == 90_000
    assert s.heartbeat_ms == 20_000
    assert s.idle_poll_max_ms == 32_000
    assert s.drain_timeout_ms == 90_000  # inside a 120 s container stop timeout
    assert s.allowed_repo_hosts == ["github.com"]
    assert s.health_address == ("127.0.0.1", 8080)
    assert s.log_format == "json"
    assert s.claude_bin == "claude"
    assert s.worker_id.count("-") >= 1
    assert len(s.worker_id) > 7
    assert s.worker_token.get_secret_value() == GOOD["WORKER_TOKEN"]
    assert GOOD["WORKER_TOKEN"] not in repr(s)


def test_worker_ids_differ_between_processes(env: pytest.MonkeyPatch) -> None:
    assert load_settings().worker_id != load_settings().worker_id


def test_lists_from_commas(env: pytest.MonkeyPatch) -> None:
    env.setenv("ALLOWED_REPO_HOSTS", " GitHub.com, 127.0.0.1:8443 ,")
    env.setenv("CLAUDE_ENV_PASSTHROUGH", "FOO,BAR_BAZ")
    s = load_settings()
    assert s.allowed_repo_hosts == ["github.com", "127.0.0.1:8443"]
    assert s.claude_env_passthrough == ["FOO", "BAR_BAZ"]


def test_empty_optional_values_mean_unset(env: pytest.MonkeyPatch) -> None:
    env.setenv("CLAUDE_MODEL", "")
    env.setenv("GIT_CA_BUNDLE", "")
    s = load_settings()
    assert s.claude_model is None
    assert s.git_ca_bundle is None


def problems(env: pytest.MonkeyPatch, **values: str) -> list[str]:
    for name, value in values.items():
        env.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    return info.value.problems


def test_missing_required(env: pytest.MonkeyPatch) -> None:
    env.delenv("CONVEX_URL")
    env.delenv("WORKER_TOKEN")
    with pytest.raises(ConfigError) as info:
        load_settings("run")
    assert sorted(info.value.problems) == [
        "CONVEX_URL: is required but not set",
        "WORKER_TOKEN: is required by the worker commands (run, check) but not set: set it to "
        "the Convex deployment's WORKER_TOKEN",
    ]


@pytest.mark.parametrize("command", ["enqueue", "stuck", "reclaim", "requeue", "cancel"])
def test_an_operator_command_needs_only_the_operator_token(
    env: pytest.MonkeyPatch, command: str
) -> None:
    env.delenv("WORKER_TOKEN")
    env.setenv("OPERATOR_TOKEN", "a-long-enough-operator-token")
    settings = load_settings(command)
    assert settings.worker_token is None
    assert settings.token_for(command).get_secret_value() == "a-long-enough-operator-token"
    env.delenv("OPERATOR_TOKEN")
    env.setenv("WORKER_TOKEN", GOOD["WORKER_TOKEN"])  # never stands in for it
    with pytest.raises(ConfigError) as info:
        load_settings(command)
    assert len(info.value.problems) == 1
    assert info.value.problems[0].startswith("OPERATOR_TOKEN: is required by the operator ")
    assert "WORKER_TOKEN:" not in info.value.problems[0]


@pytest.mark.parametrize("command", ["run", "check"])
def test_a_worker_command_needs_the_worker_token_only(
    env: pytest.MonkeyPatch, command: str
) -> None:
    env.delenv("WORKER_TOKEN")
    env.setenv("OPERATOR_TOKEN", "a-long-enough-operator-token")  # never stands in for it
    with pytest.raises(ConfigError) as info:
        load_settings(command)
    assert [p.split(":")[0] for p in info.value.problems] == ["WORKER_TOKEN"]
    env.delenv("OPERATOR_TOKEN")
    env.setenv("WORKER_TOKEN", GOOD["WORKER_TOKEN"])
    assert load_settings(command).operator_token is None


def test_status_reads_with_either_token_the_operators_first(env: pytest.MonkeyPatch) -> None:
    assert load_settings("status").token_for("status").get_secret_value() == GOOD["WORKER_TOKEN"]
    env.setenv("OPERATOR_TOKEN", "a-long-enough-operator-token")
    settings = load_settings("status")
    assert settings.token_for("status").get_secret_value() == "a-long-enough-operator-token"
    env.delenv("WORKER_TOKEN")
    env.delenv("OPERATOR_TOKEN")
    with pytest.raises(ConfigError) as info:
        load_settings("status")
    assert info.value.problems == [
        "OPERATOR_TOKEN or WORKER_TOKEN: one is required by the queue counts command (status) "
        "but not set: the operator's token, or the worker's inside a replica"
    ]


def test_a_missing_token_is_reported_with_the_other_problems(env: pytest.MonkeyPatch) -> None:
    env.delenv("WORKER_TOKEN")
    env.setenv("LEASE_MS", "soon")
    with pytest.raises(ConfigError) as info:
        load_settings("stuck")
    assert [p.split(":")[0] for p in info.value.problems] == ["LEASE_MS", "OPERATOR_TOKEN"]
    # A token that is set but invalid is named once, as invalid, not also as missing.
    env.setenv("OPERATOR_TOKEN", "short")
    with pytest.raises(ConfigError) as info:
        load_settings("stuck")
    named = {p.split(":")[0]: p for p in info.value.problems}
    assert len(info.value.problems) == 2
    assert set(named) == {"LEASE_MS", "OPERATOR_TOKEN"}
    assert named["OPERATOR_TOKEN"] == "OPERATOR_TOKEN: must be at least 16 characters"


def test_each_problem_is_reported(env: pytest.MonkeyPatch) -> None:
    found = problems(
        env,
        POLL_INTERVAL_MS="abc",
        MAX_CONCURRENT_JOBS="0",
        LOG_FORMAT="xml",
        HEALTH_BIND="nonsense",
        ALLOWED_REPO_HOSTS="exa mple.com",
        TEMP_DIR="relative/path",
    )
    names = sorted(p.split(":", 1)[0] for p in found)
    assert names == sorted(
        [
            "POLL_INTERVAL_MS",
            "MAX_CONCURRENT_JOBS",
            "LOG_FORMAT",
            "HEALTH_BIND",
            "ALLOWED_REPO_HOSTS",
            "TEMP_DIR",
        ]
    )


def test_secret_values_are_never_echoed(env: pytest.MonkeyPatch) -> None:
    found = problems(env, WORKER_TOKEN="short secret")
    assert found == ["WORKER_TOKEN: must be at least 16 characters"]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"HEARTBEAT_MS": "50000"}, "HEARTBEAT_MS: 50000 must be less than half of LEASE_MS"),
        (
            {"POLL_INTERVAL_MS": "40000"},
            "IDLE_POLL_MAX_MS: 32000 must be at least POLL_INTERVAL_MS",
        ),
        ({"STEP_TIMEOUT_MS": "7200000"}, "STEP_TIMEOUT_MS: 7200000 must not exceed JOB_TIMEOUT_MS"),
    ],
)
def test_cross_field_checks(env: pytest.MonkeyPatch, values: dict[str, str], expected: str) -> None:
    found = problems(env, **values)
    assert len(found) == 1
    assert found[0].startswith(expected)


@pytest.mark.parametrize(
    "url",
    ["http://convex.example.com", "ftp://x", "https://user:pw@x.convex.cloud", "not a url"],
)
def test_convex_url_must_be_https_except_locally(env: pytest.MonkeyPatch, url: str) -> None:
    assert problems(env, CONVEX_URL=url)[0].startswith("CONVEX_URL:")


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:3210", "http://localhost:3210", "http://devbackend:3210"]
)
def test_local_http_convex_url_is_accepted(env: pytest.MonkeyPatch, url: str) -> None:
    env.setenv("CONVEX_URL", url)
    assert load_settings().convex_url == url


def test_ca_bundle_must_exist(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert problems(env, GIT_CA_BUNDLE=str(tmp_path / "none.pem"))[0].startswith("GIT_CA_BUNDLE:")


def test_passthrough_cannot_leak_the_worker_token(env: pytest.MonkeyPatch) -> None:
    assert "must never reach claude" in problems(env, CLAUDE_ENV_PASSTHROUGH="WORKER_TOKEN")[0]


def test_run_with_bad_env_exits_2_with_one_line_per_problem(tmp_path: Path) -> None:
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "CONVEX_URL": "ftp://nope",
        "WORKER_TOKEN": "tiny-secret",
        "POLL_INTERVAL_MS": "soon",
        "LEASE_MS": "-5",
    }
    proc = subprocess.run(
        [str(WORKER_BIN), "run"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 4, proc.stderr
    assert all(line.startswith("fondation-worker: config error: ") for line in lines)
    assert {line.split(": ")[2] for line in lines} == {
        "CONVEX_URL",
        "WORKER_TOKEN",
        "POLL_INTERVAL_MS",
        "LEASE_MS",
    }
    assert "tiny-secret" not in proc.stderr


def test_run_with_cross_field_problem_exits_2(tmp_path: Path) -> None:
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        **GOOD,
        "LEASE_MS": "10000",
        "HEARTBEAT_MS": "9000",
    }
    proc = subprocess.run(
        [str(WORKER_BIN), "run"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1
    assert "HEARTBEAT_MS" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_run_refuses_a_missing_claude_binary(tmp_path: Path) -> None:
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        **GOOD,
        "CLAUDE_BIN": "definitely-not-a-claude-binary",
        "TEMP_DIR": str(tmp_path / "t"),
    }
    proc = subprocess.run(
        [str(WORKER_BIN), "run"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 2
    assert "CLAUDE_BIN: 'definitely-not-a-claude-binary' not found" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_credentials_source_needs_a_config_dir(env: pytest.MonkeyPatch) -> None:
    env.delenv("CLAUDE_CONFIG_DIR", raising=False)
    found = problems(env, CLAUDE_CREDENTIALS_SOURCE="/run/claude-credentials")
    assert found == [
        "CLAUDE_CREDENTIALS_SOURCE: needs CLAUDE_CONFIG_DIR, the writable directory the login "
        "is copied into"
    ]


@pytest.mark.parametrize("new", RENAMED)
def test_an_old_unit_less_name_is_refused_with_its_new_name(
    env: pytest.MonkeyPatch, new: str
) -> None:
    old = new.removesuffix("_MS")  # built, so the rename script leaves this test alone
    env.setenv(old, "5000")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert caught.value.problems == [f"{old}: no longer read; set {new} (milliseconds) instead"]


# --- which token each command needs (config.CREDENTIALS) ------------------------------------

COMMAND_ARGS = {"enqueue": ["https://github.com/acme/widgets"], "requeue": ["j1"], "cancel": ["j1"]}


def test_every_command_that_reads_settings_declares_its_token() -> None:
    commands = set(getattr(typer.main.get_command(cli.app), "commands", {}))
    declared = [c for credential in CREDENTIALS for c in credential.commands]
    assert len(declared) == len(set(declared)), "a command in two CREDENTIALS entries"
    assert set(declared) == commands - {"healthcheck", "version"}


@pytest.mark.parametrize("command", [c for cred in CREDENTIALS for c in cred.commands])
def test_each_command_names_its_own_token_when_none_is_set(
    env: pytest.MonkeyPatch, command: str
) -> None:
    """Each command asks for its own entry: without any token it names exactly that one."""
    env.delenv("WORKER_TOKEN")
    env.delenv("OPERATOR_TOKEN", raising=False)
    result = CliRunner().invoke(cli.app, [command, *COMMAND_ARGS.get(command, [])])
    assert result.exit_code == 2, result.output
    assert result.stderr == f"fondation-worker: config error: {credential_of(command).missing()}\n"
