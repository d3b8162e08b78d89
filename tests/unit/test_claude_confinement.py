"""The CLI layer of the confinement as the worker builds it: argv, --settings, environment.

What the real CLI does with them is measured in tests/hostile/test_escape.py.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from fondation_worker import claude_runner
from fondation_worker.claude_runner import claude_argv, claude_env, cli_settings, sandboxed
from fondation_worker.cli import checks
from fondation_worker.sandbox import landlock_abi
from tests.support import TEST_WORKER_TOKEN, make_settings


def test_nothing_is_pre_approved_but_writes_to_the_output_dir(tmp_path: Path) -> None:
    settings = make_settings(temp_dir=tmp_path / "tmp", claude_config_dir=tmp_path / "config")
    argv = claude_argv(settings, "prompt", base_env={"HOME": str(tmp_path / "home")})
    assert "--allowedTools" not in argv
    assert "--dangerously-skip-permissions" not in argv
    assert argv[argv.index("--permission-mode") + 1] == "default"
    assert argv[argv.index("--tools") + 1] == "Read,Grep,Glob,Write"
    assert "--strict-mcp-config" in argv
    parsed = json.loads(argv[argv.index("--settings") + 1])
    perms = parsed["permissions"]
    assert parsed["disableAllHooks"] is True
    assert perms["blockReadsOutsideWorkingDirectories"] is True
    assert perms["blockWritesOutsideWorkingDirectories"] is True
    assert perms["denyInsteadOfPrompting"] is True
    assert perms["allow"] == ["Edit(./.claude-tutorial-output/**)"]
    for tool in ("Bash", "WebFetch", "WebSearch", "NotebookEdit", "Task", "Agent"):
        assert tool in perms["deny"]
    for directory in (tmp_path / "config", tmp_path / "home"):
        assert f"Read(/{directory}/**)" in perms["deny"]
        assert f"Edit(/{directory}/**)" in perms["deny"]


def test_a_dir_holding_temp_dir_is_never_denied(tmp_path: Path) -> None:
    # HOME=/ or a HOME above TEMP_DIR would otherwise deny the clone itself.
    settings = make_settings(temp_dir=tmp_path / "tmp")
    for home in ("/", str(tmp_path)):
        deny = cli_settings(settings, {"HOME": home})["permissions"]["deny"]
        assert not [rule for rule in deny if rule.startswith("Read(")], (home, deny)


def test_child_env_has_no_worker_secret_and_its_own_home(tmp_path: Path) -> None:
    settings = make_settings(
        temp_dir=tmp_path / "tmp", claude_env_passthrough=["FAKE_X"], claude_config_dir=tmp_path
    )
    base = {
        "PATH": "/usr/bin",
        "HOME": "/home/worker",
        "WORKER_TOKEN": TEST_WORKER_TOKEN,
        "CONVEX_URL": "https://example.convex.cloud",
        "FONDATION_GIT_TOKEN": "ghp_x",
        "FAKE_X": "1",
    }
    step_dir = tmp_path / "ws" / "claude-config-chapters"
    env = claude_env(settings, base, config_dir=step_dir, step="chapters")
    assert env["HOME"] == env["CLAUDE_CONFIG_DIR"] == str(step_dir)
    assert env["FAKE_X"] == "1"
    for name in ("WORKER_TOKEN", "CONVEX_URL", "FONDATION_GIT_TOKEN", "GIT_ASKPASS"):
        assert name not in env
    assert TEST_WORKER_TOKEN not in json.dumps(env)


def test_sandbox_wraps_the_cli_only_when_asked(tmp_path: Path) -> None:
    argv = ["/bin/true", "-p", "x"]
    dirs = {"cwd": tmp_path / "repo", "config_dir": tmp_path / "c", "tmp_dir": tmp_path / "t"}
    off = make_settings(temp_dir=tmp_path, claude_sandbox="off")
    assert sandboxed(off, argv, {"PATH": "/bin"}, **dirs) == argv
    on = make_settings(temp_dir=tmp_path, claude_sandbox="landlock")
    wrapped = sandboxed(on, argv, {"PATH": "/bin"}, **dirs)
    assert wrapped[:3] == [sys.executable, "-m", "fondation_worker.sandbox"]
    split = wrapped.index("--")
    assert wrapped[split + 1 :] == argv  # resolved on PATH, already absolute
    rw = [wrapped[i + 1] for i, a in enumerate(wrapped[:split]) if a == "--rw"]
    assert rw == [str(dirs["cwd"]), str(dirs["config_dir"]), str(dirs["tmp_dir"])]


def test_landlock_is_the_default_and_off_must_be_explicit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert make_settings(temp_dir=tmp_path).claude_sandbox == "landlock"
    # A kernel without Landlock: the worker refuses to start, naming the way out.
    monkeypatch.setattr(checks, "landlock_abi", lambda: 0)
    monkeypatch.setattr(claude_runner, "landlock_abi", lambda: 0)
    settings = make_settings(temp_dir=tmp_path, claude_bin="/bin/true", git_bin="/bin/true")
    problems = checks.runtime_problems(settings)
    assert [p for p in problems if "Landlock" in p] == [
        "CLAUDE_SANDBOX=landlock (the default): this kernel has no Landlock (Linux >= 5.13 "
        "with landlock among its LSMs); set CLAUDE_SANDBOX=off to run the Claude CLI without it"
    ]
    assert claude_runner.defense_layers(settings)["landlock"].startswith("MISSING")
    off = make_settings(
        temp_dir=tmp_path, claude_bin="/bin/true", git_bin="/bin/true", claude_sandbox="off"
    )
    assert checks.runtime_problems(off) == []
    assert checks.check_layers(off).level == "warn"
    assert claude_runner.defense_layers(off) == {
        "cli": "on",
        "landlock": "off (CLAUDE_SANDBOX=off)",
        "documents": "on",
    }


@pytest.mark.skipif(landlock_abi() < 1, reason="this kernel has no Landlock")
def test_the_layers_name_the_landlock_abi(tmp_path: Path) -> None:
    settings = make_settings(temp_dir=tmp_path)
    layers = claude_runner.defense_layers(settings)
    assert layers["landlock"] == f"on (ABI {landlock_abi()})"
    line = checks.check_layers(settings).line()
    assert line == f"ok    layers: cli on; landlock on (ABI {landlock_abi()}); documents on"
