"""scripts/claude-cli-bump.sh's own logic, on a copy of the scripts with a fake npm registry
(a local tarball), a stand-in image build and a stand-in test run: the lock takes the new
version and sha256 only when the checks pass, and is left byte for byte as it was when they
fail or the registry's integrity does not match."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.support.paths import REPO_ROOT

OLD = "1.0.0"
NEW = "1.0.7"
LOCK = """# pinned
CLAUDE_CLI_PACKAGE=@anthropic-ai/claude-code-linux-x64
CLAUDE_CLI_VERSION=1.0.0
CLAUDE_CLI_SHA256=0000000000000000000000000000000000000000000000000000000000000000
"""


def fake_tarball(version: str) -> bytes:
    """The same bytes on every call: gzip's header carries a time (mtime 0 here), and two
    calls a second apart made two tarballs with different sha256s (a flaky failure)."""
    script = f"#!/bin/sh\necho '{version} (Claude Code)'\n".encode()
    out = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w") as tar,
    ):
        info = tarfile.TarInfo("package/claude")
        info.size = len(script)
        info.mode = 0o755
        tar.addfile(info, io.BytesIO(script))
    return out.getvalue()


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "scripts").mkdir(parents=True)
    (root / "worker").mkdir()
    for name in ("claude-cli-bump.sh", "claude-cli.sh"):
        shutil.copy2(REPO_ROOT / "scripts" / name, root / "scripts" / name)
    (root / "worker" / "claude-cli.lock").write_text(LOCK)
    return root


def fake_npm(bin_dir: Path, tarball: Path, integrity: str) -> None:
    """`npm view <pkg> version`, `npm view <pkg>@v dist.integrity`, `npm pack <pkg>@v`."""
    bin_dir.mkdir(exist_ok=True)
    npm = bin_dir / "npm"
    npm.write_text(
        "#!/bin/sh\n"
        'case "$*" in\n'
        f'  *"view"*"dist.integrity"*) echo "{integrity}" ;;\n'
        f'  *"view"*"version"*) echo "{NEW}" ;;\n'
        f'  *"pack"*) cp "{tarball}" ./claude-code-linux-x64-{NEW}.tgz ;;\n'
        "  *) exit 9 ;;\n"
        "esac\n"
    )
    npm.chmod(0o755)


def run(tree: Path, tmp_path: Path, *, tests_pass: bool, integrity: str | None = None) -> int:
    data = fake_tarball(NEW)
    tarball = tmp_path / "pkg.tgz"
    tarball.write_bytes(data)
    good = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
    fake_npm(tmp_path / "bin", tarball, integrity or good)
    env = {
        **os.environ,
        "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}",
        "BUILD_IMAGE": "true",
        "PYTEST": "true" if tests_pass else "false",
    }
    env.pop("VERSION", None)
    done = subprocess.run(
        [str(tree / "scripts" / "claude-cli-bump.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.returncode


def test_the_latest_version_is_pinned_when_the_checks_pass(tree: Path, tmp_path: Path) -> None:
    assert run(tree, tmp_path, tests_pass=True) == 0
    lock = (tree / "worker" / "claude-cli.lock").read_text()
    sha = hashlib.sha256(fake_tarball(NEW)).hexdigest()
    assert f"CLAUDE_CLI_VERSION={NEW}\n" in lock
    assert f"CLAUDE_CLI_SHA256={sha}\n" in lock
    assert lock.startswith("# pinned\nCLAUDE_CLI_PACKAGE=")


def test_the_lock_is_left_as_it_was_when_the_checks_fail(tree: Path, tmp_path: Path) -> None:
    assert run(tree, tmp_path, tests_pass=False) != 0
    assert (tree / "worker" / "claude-cli.lock").read_text() == LOCK


def test_a_tarball_that_does_not_match_the_registry_is_refused(tree: Path, tmp_path: Path) -> None:
    assert run(tree, tmp_path, tests_pass=True, integrity="sha512-AAAA") != 0
    assert (tree / "worker" / "claude-cli.lock").read_text() == LOCK


def test_a_malformed_or_current_version_changes_nothing(tree: Path) -> None:
    script = str(tree / "scripts" / "claude-cli-bump.sh")
    env = {**os.environ, "BUILD_IMAGE": "false", "PYTEST": "false"}
    bad = subprocess.run([script, "latest; rm -rf /"], env=env, capture_output=True, timeout=30)
    assert bad.returncode == 2
    same = subprocess.run([script, OLD], env=env, capture_output=True, timeout=30, check=False)
    assert same.returncode == 0
    assert (tree / "worker" / "claude-cli.lock").read_text() == LOCK
