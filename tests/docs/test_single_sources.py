"""Values written once, read everywhere else: a copy that drifts fails here.

- The Claude CLI version: worker/claude-cli.lock is the only file that names it. The image
  build, scripts/claude-cli.sh and the tests read the lock; the image carries it in its
  ``org.fondation.claude-cli.version`` label and ``CLAUDE_CLI_VERSION`` (checked in
  tests/image), which the status play and ``/healthz`` report.
"""

from __future__ import annotations

import subprocess

from tests.support import REPO_ROOT

LOCK = REPO_ROOT / "worker" / "claude-cli.lock"


def _lock() -> dict[str, str]:
    lines = LOCK.read_text(encoding="utf-8").splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def _tracked_text_files() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True, timeout=60
    ).stdout.decode()
    return [name for name in listed.split("\0") if name]


def test_the_claude_cli_version_is_written_only_in_its_lock() -> None:
    version = _lock()["CLAUDE_CLI_VERSION"]
    assert version.count(".") == 2, version
    named_in = []
    for name in _tracked_text_files():
        path = REPO_ROOT / name
        if name == "worker/claude-cli.lock" or not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        if version in text:
            named_in.append(name)
    assert named_in == [], (
        f"the Claude CLI version {version} is written outside worker/claude-cli.lock: "
        f"{named_in}; read the lock (or name it) instead"
    )
