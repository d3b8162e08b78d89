"""git clone against the loopback HTTPS server: argv, environment, tokens, failures."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from fondation_worker.errors import JobFailed
from fondation_worker.git_clone import (
    ASKPASS_SCRIPT,
    TOKEN_ENV,
    CloneOptions,
    classify_clone_failure,
    clone,
    clone_argv,
    clone_env,
)
from fondation_worker.process import AbortSignal, ProcessResult, ProcessSpec, SubprocessRunner
from fondation_worker.workspace import job_workspace
from tests.support import SAMPLE_FILES

TOKEN = "ghp_" + "T0kenForPrivateRepoTests0123456789ab"


class RecordingRunner(SubprocessRunner):
    def __init__(self) -> None:
        super().__init__()
        self.specs: list[ProcessSpec] = []

    def run(self, spec: ProcessSpec, abort: Any = None, watch: Any = None) -> ProcessResult:
        self.specs.append(spec)
        return super().run(spec, abort, watch)


@pytest.fixture(scope="module")
def repos(git_server: Any) -> dict[str, str]:
    big = {"blob.bin": os.urandom(3 * 1024 * 1024)}
    return {
        "public": git_server.add_repo(
            "acme", "public", SAMPLE_FILES, extra_branches={"feature/x": {"x.txt": "x"}}
        ),
        "private": git_server.add_repo("acme", "private", SAMPLE_FILES, token=TOKEN),
        "big": git_server.add_repo("acme", "big", big),
        "links": git_server.add_repo(
            "acme",
            "links",
            {"README.md": "# r\n"},
            symlinks={"passwd.md": "/etc/passwd", "etc": "/etc"},
        ),
    }


def options(git_server: Any, max_mb: int = 50) -> CloneOptions:
    return CloneOptions(
        git_bin="git", timeout_s=60, max_bytes=max_mb * 1024 * 1024, ca_bundle=git_server.cert
    )


def do_clone(
    tmp_path: Path,
    git_server: Any,
    url: str,
    *,
    branch: str | None = "main",
    token: str | None = None,
    max_mb: int = 50,
    runner: SubprocessRunner | None = None,
) -> Path:
    with job_workspace(tmp_path / "jobs", "job") as ws:
        dest = clone(
            url=url,
            branch=branch,
            token=token,
            workspace=ws,
            options=options(git_server, max_mb),
            runner=runner or SubprocessRunner(),
            abort=AbortSignal(),
            base_env=dict(os.environ),
        )
        kept = tmp_path / "kept"
        os.rename(dest, kept)
        return kept


def test_argv_is_exact_and_safe() -> None:
    argv = clone_argv("git", "https://github.com/a/b", "main", Path("/w/repo"))
    assert (
        argv[-9:]
        == [
            "clone",
            "--depth",
            "1",
            "--single-branch",
            "--no-tags",
            "--branch",
            "main",
            "--",
            "https://github.com/a/b",
            "/w/repo",
        ][-9:]
    )
    joined = " ".join(argv)
    for setting in (
        "protocol.allow=never",
        "protocol.https.allow=always",
        "credential.helper=",
        "core.symlinks=false",
        "core.hooksPath=/dev/null",
        "checkout.workers=0",  # parallel checkout
    ):
        assert f"-c {setting}" in joined
    assert argv.index("--") == len(argv) - 3
    assert "--branch" not in clone_argv("git", "https://github.com/a/b", None, Path("/w"))


def test_env_is_hardened(tmp_path: Path, git_server: Any) -> None:
    with job_workspace(tmp_path / "jobs", "job") as ws:
        env = clone_env(
            ws,
            options(git_server),
            TOKEN,
            {"PATH": "/usr/bin", "WORKER_TOKEN": "w", "HTTPS_PROXY": "http://proxy:3128"},
        )
        assert env["GIT_TERMINAL_PROMPT"] == "0"
        assert env["GIT_CONFIG_NOSYSTEM"] == "1"
        assert env["GIT_CONFIG_GLOBAL"] == "/dev/null"
        assert env["GIT_SSL_CAINFO"] == str(git_server.cert)
        assert env["HOME"] == str(ws.home)
        assert env["HTTPS_PROXY"] == "http://proxy:3128"
        assert "WORKER_TOKEN" not in env
        assert env[TOKEN_ENV] == TOKEN
        askpass = Path(env["GIT_ASKPASS"])
        assert askpass.read_text() == ASKPASS_SCRIPT
        assert TOKEN not in askpass.read_text()
        assert os.stat(askpass).st_mode & 0o777 == 0o700
        public = clone_env(ws, options(git_server), None, {"PATH": "/usr/bin"})
        assert "GIT_ASKPASS" not in public
        assert TOKEN_ENV not in public


def test_public_clone(tmp_path: Path, git_server: Any, repos: dict[str, str]) -> None:
    dest = do_clone(tmp_path, git_server, repos["public"])
    assert (dest / "main.py").exists()
    assert (dest / ".git" / "shallow").exists()  # --depth 1


def test_other_branch(tmp_path: Path, git_server: Any, repos: dict[str, str]) -> None:
    dest = do_clone(tmp_path, git_server, repos["public"], branch="feature/x")
    assert (dest / "x.txt").exists()


def test_default_branch_when_none_given(
    tmp_path: Path, git_server: Any, repos: dict[str, str]
) -> None:
    assert (do_clone(tmp_path, git_server, repos["public"], branch=None) / "main.py").exists()


def test_private_clone_keeps_the_token_out_of_argv_and_config(
    tmp_path: Path, git_server: Any, repos: dict[str, str]
) -> None:
    runner = RecordingRunner()
    before = len(git_server.requests)
    dest = do_clone(tmp_path, git_server, repos["private"], token=TOKEN, runner=runner)
    assert (dest / "main.py").exists()
    assert TOKEN not in " ".join(runner.specs[0].argv)
    for path in dest.joinpath(".git").rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path
    assert "x-access-token" in {r.user for r in git_server.requests[before:]}


def test_private_without_token_is_not_found(
    tmp_path: Path, git_server: Any, repos: dict[str, str]
) -> None:
    with pytest.raises(JobFailed) as info:
        do_clone(tmp_path, git_server, repos["private"])
    assert info.value.kind == "repository_not_found"


def test_private_with_wrong_token(tmp_path: Path, git_server: Any, repos: dict[str, str]) -> None:
    with pytest.raises(JobFailed) as info:
        do_clone(tmp_path, git_server, repos["private"], token="ghp_" + "w" * 36)
    assert info.value.kind == "repository_not_found"
    assert "ghp_" not in info.value.message


def test_missing_repository(tmp_path: Path, git_server: Any) -> None:
    with pytest.raises(JobFailed) as info:
        do_clone(tmp_path, git_server, git_server.url("acme", "nothing"))
    assert info.value.kind == "repository_not_found"


def test_missing_branch(tmp_path: Path, git_server: Any, repos: dict[str, str]) -> None:
    with pytest.raises(JobFailed) as info:
        do_clone(tmp_path, git_server, repos["public"], branch="no-such-branch")
    assert info.value.kind == "invalid_repository"


@pytest.mark.parametrize("case", ["missing", "unreachable"])
def test_clone_errors_name_no_local_path(tmp_path: Path, git_server: Any, case: str) -> None:
    # git's "Cloning into '<TEMP_DIR>/jobs/<id>/repo'..." would show the machine's layout.
    url = git_server.url("acme", "nothing") if case == "missing" else "https://127.0.0.1:9/a/b"
    with pytest.raises(JobFailed) as info:
        do_clone(tmp_path, git_server, url)
    assert str(tmp_path) not in info.value.message
    assert "Cloning into" not in info.value.message
    assert info.value.message.strip()


def test_classify_clone_failure_replaces_the_workspace() -> None:
    stderr = (
        "Cloning into '/srv/tmp/jobs/j1-ab/repo'...\n"
        "fatal: could not create work tree dir '/srv/tmp/jobs/j1-ab/repo': Permission denied\n"
    )
    kind, message = classify_clone_failure(stderr, Path("/srv/tmp/jobs/j1-ab"))
    assert kind == "transient"
    assert "/srv/tmp" not in message
    assert "<workspace>/repo" in message


def test_size_cap(tmp_path: Path, git_server: Any, repos: dict[str, str]) -> None:
    with pytest.raises(JobFailed) as info:
        do_clone(tmp_path, git_server, repos["big"], max_mb=1)
    assert info.value.kind == "invalid_repository"
    assert "larger than 1 MiB" in info.value.message


def test_untrusted_certificate_is_refused(
    tmp_path: Path, git_server: Any, repos: dict[str, str]
) -> None:
    with job_workspace(tmp_path / "jobs", "job") as ws, pytest.raises(JobFailed) as info:
        clone(
            url=repos["public"],
            branch="main",
            token=None,
            workspace=ws,
            options=CloneOptions(git_bin="git", timeout_s=60, max_bytes=10**8),
            runner=SubprocessRunner(),
            abort=AbortSignal(),
            base_env=dict(os.environ),
        )
    assert info.value.kind == "transient"


def test_unreachable_host_is_transient(tmp_path: Path, git_server: Any) -> None:
    with pytest.raises(JobFailed) as info:
        do_clone(tmp_path, git_server, "https://127.0.0.1:9/acme/x.git")
    assert info.value.kind == "transient"


def test_abort_during_clone(tmp_path: Path, git_server: Any, repos: dict[str, str]) -> None:
    abort = AbortSignal()
    abort.abort("cancel")
    from fondation_worker.errors import JobAborted

    with job_workspace(tmp_path / "jobs", "job") as ws, pytest.raises(JobAborted):
        clone(
            url=repos["public"],
            branch="main",
            token=None,
            workspace=ws,
            options=options(git_server),
            runner=SubprocessRunner(),
            abort=abort,
            base_env=dict(os.environ),
        )


def test_symlinks_in_the_repository_are_checked_out_as_plain_files(
    tmp_path: Path, git_server: Any, repos: dict[str, str]
) -> None:
    dest = do_clone(tmp_path, git_server, repos["links"])
    for name, target in (("passwd.md", "/etc/passwd"), ("etc", "/etc")):
        path = dest / name
        assert not path.is_symlink()
        assert path.is_file()
        assert path.read_text() == target
