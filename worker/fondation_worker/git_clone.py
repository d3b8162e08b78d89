"""Shallow clone of one branch over https only, with a timeout and a size cap.

A private repository's token reaches git only through ``GIT_ASKPASS``: a tiny script in the
job's workspace that prints the token from an environment variable of the git process. The
token is never in the URL, the argument list, ``.git/config`` or the logs. System and global
git configuration are ignored, every protocol but https is refused, no submodules, no hooks,
no symlinks checked out (a repository could otherwise point the analysis at host files).
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from .errors import ErrorKind, JobAborted, JobFailed
from .process import AbortSignal, ProcessRunner, ProcessSpec, read_tail
from .workspace import Workspace, directory_size

TOKEN_ENV = "FONDATION_GIT_TOKEN"  # noqa: S105 - the variable name, not a secret
USERNAME_ENV = "FONDATION_GIT_USERNAME"
DEFAULT_USERNAME = "x-access-token"

# printf is a builtin of /bin/sh, so the token is never in any process's argv.
ASKPASS_SCRIPT = f"""#!/bin/sh
case "$1" in
  [Uu]sername*) printf '%s\\n' "${{{USERNAME_ENV}:-{DEFAULT_USERNAME}}}" ;;
  *) printf '%s\\n' "${TOKEN_ENV}" ;;
esac
"""

GIT_CONFIG_ARGS: tuple[str, ...] = (
    "-c", "protocol.allow=never",
    "-c", "protocol.https.allow=always",
    "-c", "credential.helper=",
    "-c", "core.symlinks=false",
    "-c", "core.hooksPath=/dev/null",
    "-c", "core.fsmonitor=false",
    "-c", "submodule.recurse=false",
    "-c", "http.sslVerify=true",
    "-c", "transfer.credentialsInUrl=die",
    # Parallel checkout, one worker per CPU (git >= 2.32): most of a big clone's time.
    "-c", "checkout.workers=0",
)  # fmt: skip

PASSTHROUGH_ENV = (
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "NO_PROXY",
    "no_proxy",
)

_STDERR_TAIL = 8192


@dataclass(frozen=True)
class CloneOptions:
    git_bin: str
    timeout_s: float
    max_bytes: int
    ca_bundle: Path | None = None


def clone_argv(git_bin: str, url: str, branch: str | None, dest: Path) -> list[str]:
    """The exact argument list; ``--`` keeps URL and directory from being read as options."""
    argv = [git_bin, *GIT_CONFIG_ARGS, "clone", "--depth", "1", "--single-branch", "--no-tags"]
    if branch:
        argv += ["--branch", branch]
    argv += ["--", url, str(dest)]
    return argv


def write_askpass(workspace: Workspace) -> Path:
    path = workspace.root / "askpass.sh"
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_EXCL | os.O_NOFOLLOW, 0o700)
    with os.fdopen(fd, "w") as handle:
        handle.write(ASKPASS_SCRIPT)
    os.chmod(path, stat.S_IRWXU)
    return path


def clone_env(
    workspace: Workspace, options: CloneOptions, token: str | None, base_env: dict[str, str]
) -> dict[str, str]:
    env = {
        "PATH": base_env.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "HOME": str(workspace.home),
        "TMPDIR": str(workspace.tmp),
        "LANG": "C",
        "LC_ALL": "C",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_ALLOW_PROTOCOL": "https",
        "GIT_PROTOCOL_FROM_USER": "0",
        "GIT_LFS_SKIP_SMUDGE": "1",
        "GCM_INTERACTIVE": "never",
    }
    for name in PASSTHROUGH_ENV:
        if name in base_env:
            env[name] = base_env[name]
    if options.ca_bundle is not None:
        env["GIT_SSL_CAINFO"] = str(options.ca_bundle)
    if token:
        env["GIT_ASKPASS"] = str(write_askpass(workspace))
        env[TOKEN_ENV] = token
    return env


_BRANCH_MISSING = re.compile(
    r"remote branch .* not found|couldn't find remote ref|not found in upstream", re.I
)
_NOT_FOUND = re.compile(
    r"repository .* not found|repository not found|returned error: 404|"
    r"authentication failed|could not read (?:username|password)|terminal prompts disabled|"
    r"returned error: 40[13]|invalid username or (?:password|token)",
    re.I,
)
_DISK = re.compile(r"no space left on device|disk quota exceeded", re.I)


# git's progress line names the destination: the worker's filesystem layout, not news for
# the job's user.
_CLONING_INTO = re.compile(r"^\s*Cloning into .*$", re.M)


def classify_clone_failure(stderr: str, workspace: Path | None = None) -> tuple[ErrorKind, str]:
    """Map git's stderr to the contract's errorKind and a message safe to store.

    The message names no local path: the workspace shows as ``<workspace>``.
    """
    text = _CLONING_INTO.sub("", stderr)
    if workspace is not None:
        text = text.replace(str(workspace), "<workspace>")
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    last = " ".join(lines[-3:])[:300]
    if _BRANCH_MISSING.search(stderr):
        return "invalid_repository", f"branch not found: {last}"
    if _NOT_FOUND.search(stderr):
        return "repository_not_found", f"repository not found or access denied: {last}"
    if _DISK.search(stderr):
        return "disk", f"no space left while cloning: {last}"
    return "transient", f"git clone failed: {last or 'no message'}"


def clone(
    *,
    url: str,
    branch: str | None,
    token: str | None,
    workspace: Workspace,
    options: CloneOptions,
    runner: ProcessRunner,
    abort: AbortSignal,
    base_env: dict[str, str],
) -> Path:
    """Clone into ``workspace.repo``; raises ``JobFailed`` or ``JobAborted``."""
    dest = workspace.repo
    stderr_path = workspace.root / "git-clone.stderr"

    def watch_size() -> str | None:
        if dest.exists() and directory_size(dest, options.max_bytes) > options.max_bytes:
            return "size"
        return None

    spec = ProcessSpec(
        argv=clone_argv(options.git_bin, url, branch, dest),
        cwd=workspace.root,
        env=clone_env(workspace, options, token, base_env),
        timeout_s=options.timeout_s,
        stdout_path=None,
        stderr_path=stderr_path,
        max_output_bytes=4 * 1024 * 1024,
    )
    result = runner.run(spec, abort, watch_size)
    if result.aborted:
        raise JobAborted(result.aborted)
    if result.start_error:
        raise JobFailed("transient", f"cannot run git: {result.start_error}")
    max_mb = options.max_bytes // (1024 * 1024)
    if result.watch_reason == "size":
        raise JobFailed("invalid_repository", f"repository is larger than {max_mb} MiB")
    if result.timed_out:
        raise JobFailed("timeout", f"git clone took longer than {options.timeout_s:.0f} s")
    if result.returncode != 0:
        kind, message = classify_clone_failure(read_tail(stderr_path, _STDERR_TAIL), workspace.root)
        raise JobFailed(kind, message)
    if directory_size(dest, options.max_bytes) > options.max_bytes:
        raise JobFailed("invalid_repository", f"repository is larger than {max_mb} MiB")
    return dest
