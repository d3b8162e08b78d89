"""Against the real Claude Code binary, when one is available (REAL_CLAUDE_BIN or `claude`
on PATH); skipped otherwise. No credentials and no network are needed: these runs stop at
"Not logged in", and a repository's hooks and MCP servers would start before any API call
(docs/SECURITY.md), which is exactly what must not happen.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from fondation_worker.classify import ClaudeRun, classify
from fondation_worker.claude_runner import claude_argv, claude_env
from fondation_worker.clock import SystemClock
from tests.support import TEST_WORKER_TOKEN, WORKER_BIN, make_settings

REAL = os.environ.get("REAL_CLAUDE_BIN") or shutil.which("claude")
pytestmark = [
    pytest.mark.real_cli,
    pytest.mark.skipif(
        not REAL or not Path(REAL).exists(), reason="no real claude binary (set REAL_CLAUDE_BIN)"
    ),
]


def hook_repo(root: Path, markers: Path) -> Path:
    repo = root / "repo"
    (repo / ".claude").mkdir(parents=True)
    hook = {"type": "command", "command": f"touch {markers}/hook-$$"}
    (repo / ".claude" / "settings.json").write_text(
        json.dumps(
            {
                "hooks": {
                    "SessionStart": [{"hooks": [hook]}],
                    "UserPromptSubmit": [{"hooks": [hook]}],
                }
            }
        )
    )
    (repo / ".mcp.json").write_text(
        json.dumps(
            {
                "mcpServers": {
                    "evil": {"command": "/bin/sh", "args": ["-c", f"touch {markers}/mcp; sleep 3"]}
                }
            }
        )
    )
    (repo / "main.py").write_text("print('hi')\n")
    return repo


def run_claude(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        start_new_session=True,
    )


def test_worker_flags_stop_repository_hooks_and_mcp_servers(tmp_path: Path) -> None:
    assert REAL is not None
    markers = tmp_path / "markers"
    markers.mkdir()
    repo = hook_repo(tmp_path, markers)
    settings = make_settings(
        claude_bin=REAL, claude_config_dir=tmp_path / "config", temp_dir=tmp_path / "t"
    )
    env = claude_env(settings, {"PATH": os.environ["PATH"], "HOME": str(tmp_path)})

    # Control: without the worker's flags the real CLI runs the hooks and the MCP server,
    # so this test can see them when they happen.
    control = run_claude([REAL, "-p", "hi", "--output-format", "json"], env, repo)
    assert control.returncode != 0
    # The MCP server is a child the CLI may leave starting when it exits: wait for its mark.
    deadline = time.monotonic() + 15
    while {p.name.split("-")[0] for p in markers.iterdir()} != {"hook", "mcp"}:
        assert time.monotonic() < deadline, sorted(p.name for p in markers.iterdir())
        time.sleep(0.1)
    for path in markers.iterdir():
        path.unlink()

    # The worker's exact argument list and environment.
    proc = run_claude(claude_argv(settings, "Summarize this repository."), env, repo)
    time.sleep(2)
    assert list(markers.iterdir()) == [], "a repository hook or MCP server ran"
    verdict = classify(ClaudeRun(proc.returncode, proc.stdout, proc.stderr), SystemClock().now())
    assert verdict.kind == "auth"  # not logged in: the flags themselves were accepted
    assert "error: unknown option" not in proc.stderr


@pytest.mark.integration
def test_check_with_the_real_cli_and_no_credentials(dev_backend: object, tmp_path: Path) -> None:
    assert REAL is not None
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "CONVEX_URL": dev_backend.url,  # type: ignore[attr-defined]
        "WORKER_TOKEN": TEST_WORKER_TOKEN,
        "TEMP_DIR": str(tmp_path / "t"),
        "CLAUDE_BIN": REAL,
        "CLAUDE_CONFIG_DIR": str(tmp_path / "empty-claude-config"),
        "MIN_FREE_DISK_MB": "1",
    }
    proc = subprocess.run(
        [str(WORKER_BIN), "check"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAIL  claude: Claude is not logged in" in proc.stdout
    assert "ok    convex: reachable, token accepted" in proc.stdout
