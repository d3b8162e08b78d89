"""Preflight: what ``run`` refuses to start without, and the checks of ``fondation-worker check``.

``runtime_problems`` is the part of the configuration only the host can tell (programs on
PATH, writable directories, Landlock); ``run`` and ``check`` both refuse to go on when it
reports anything. ``check_all`` then proves the rest with real calls: Convex accepts the
worker token, the disk has room, git is recent enough, and a tiny real Claude call works.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Literal

from ..assembly import stage_login
from ..classify import Classification
from ..claude_runner import ClaudeRunner, defense_layers
from ..clock import SystemClock
from ..config import Settings
from ..convex_client import ConvexClient
from ..errors import OperatorActionNeeded, WorkerError
from ..process import SubprocessRunner
from ..sandbox import landlock_abi
from ..workspace import disk_status

MIN_GIT = (2, 32)  # GIT_CONFIG_GLOBAL
GIT_VERSION_TIMEOUT_S = 20


def which(program: str) -> str | None:
    """The executable ``program`` names (a path, or a name looked up on PATH), or None."""
    if "/" in program:
        return program if os.access(program, os.X_OK) and Path(program).is_file() else None
    return shutil.which(program)


def ensure_writable_dir(path: Path) -> str | None:
    """Create ``path`` if needed and prove it writable; the problem, or None."""
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        return f"cannot create {path}: {exc.strerror}"
    probe = path / f".write-test-{uuid.uuid4().hex}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        return f"{path} is not writable: {exc.strerror}"
    return None


def runtime_problems(settings: Settings) -> list[str]:
    """One line per problem of the host that would stop the worker (empty: none)."""
    problems: list[str] = []
    if which(settings.claude_bin) is None:
        problems.append(f"CLAUDE_BIN: {settings.claude_bin!r} not found or not executable")
    if which(settings.git_bin) is None:
        problems.append(f"GIT_BIN: {settings.git_bin!r} not found or not executable")
    problem = ensure_writable_dir(settings.temp_dir)
    if problem:
        problems.append(f"TEMP_DIR: {problem}")
    if settings.claude_config_dir is not None:
        problem = ensure_writable_dir(settings.claude_config_dir)
        if problem:
            problems.append(
                f"CLAUDE_CONFIG_DIR: {problem} (the Claude CLI writes there during every run)"
            )
    if settings.log_file is not None:
        problem = ensure_writable_dir(settings.log_file.parent)
        if problem:
            problems.append(f"LOG_FILE: {problem}")
    if settings.claude_sandbox == "landlock" and landlock_abi() < 1:
        # Never run the CLI unconfined unless the operator said so.
        problems.append(
            "CLAUDE_SANDBOX=landlock (the default): this kernel has no Landlock (Linux >= 5.13 "
            "with landlock among its LSMs); set CLAUDE_SANDBOX=off to run the Claude CLI "
            "without it"
        )
    return problems


def git_version(text: str) -> tuple[int, int] | None:
    """(major, minor) of ``git --version`` output, or None."""
    parts = text.replace("git version", "").strip().split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return None


def claude_verdict(result: Classification) -> tuple[bool, str]:
    """A probe's result as the operator reads it: passed, and what to do when not."""
    if result.ok:
        return True, "a tiny real call succeeded"
    text = result.reason
    if result.kind == "auth":
        lowered = text.lower()
        if "not logged in" in lowered or "/login" in lowered:
            return False, (
                "Claude is not logged in. Set CLAUDE_CODE_OAUTH_TOKEN (from `claude setup-token`) "
                "or ANTHROPIC_API_KEY, or log in with CLAUDE_CONFIG_DIR pointing at the "
                f"credentials ({text})"
            )
        return False, f"Claude authentication failed: {text}"
    if result.kind == "usage_limit":
        return False, f"Claude usage limit reached: {text}"
    return False, f"Claude call failed ({result.kind}): {text}"


@dataclass(frozen=True)
class CheckResult:
    level: Literal["ok", "FAIL", "warn"]
    name: str
    message: str

    @property
    def failed(self) -> bool:
        return self.level == "FAIL"

    def line(self) -> str:
        return f"{self.level:<5} {self.name}: {self.message}"


def _ok(name: str, message: str) -> CheckResult:
    return CheckResult("ok", name, message)


def _fail(name: str, message: str) -> CheckResult:
    return CheckResult("FAIL", name, message)


def check_convex(convex: ConvexClient, worker_id: str | None = None) -> CheckResult:
    try:
        queue = convex.queue_metrics()
    except OperatorActionNeeded:
        return _fail("convex", "reachable, but the worker token was refused (UNAUTHORIZED)")
    except WorkerError as exc:
        return _fail("convex", f"not reachable: {exc}")
    counts = queue.get("counts", {})
    whose = "token accepted"
    if worker_id is not None:
        # A per-worker credential is bound to one worker id: Convex refuses every claim
        # made under another WORKER_ID, so say so here rather than as a silent idle worker.
        try:
            identity = convex.whoami()
        except WorkerError as exc:
            return _fail("convex", f"reachable, but credentials:whoami failed: {exc}")
        if identity.kind == "shared":
            whose = "token accepted (the shared WORKER_TOKEN: issue this worker a credential)"
        elif identity.worker_id != worker_id:
            return _fail(
                "convex",
                f"reachable, but the credential belongs to worker {identity.worker_id}, "
                f"not WORKER_ID {worker_id}: Convex refuses its claims",
            )
        else:
            whose = f"token accepted (credential of worker {worker_id})"
    return _ok("convex", f"reachable, {whose} (queue counts: {counts})")


def check_disk(settings: Settings) -> CheckResult:
    problem = ensure_writable_dir(settings.temp_dir)
    if problem:
        return _fail("disk", problem)
    disk = disk_status(settings.temp_dir, settings.min_free_disk_mb)
    message = f"{settings.temp_dir}: {disk.describe()}"
    return CheckResult("ok" if disk.ok else "FAIL", "disk", message)


def check_git(settings: Settings) -> CheckResult:
    git = which(settings.git_bin)
    if git is None:
        return _fail("git", f"{settings.git_bin!r} not found")
    try:
        out = subprocess.run(  # noqa: S603 - argument list
            [git, "--version"],
            capture_output=True,
            text=True,
            timeout=GIT_VERSION_TIMEOUT_S,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        return _fail("git", f"cannot run {git}: {exc}")
    version = git_version(out)
    if version is None or version < MIN_GIT:
        return _fail("git", f"{out or 'unknown version'}; need git >= 2.32")
    return _ok("git", out)


def check_claude(settings: Settings, timeout_s: float) -> Iterator[CheckResult]:
    """The Claude CLI is there, the mounted login (if any) copies, and a tiny call works."""
    if which(settings.claude_bin) is None:
        yield _fail("claude", f"{settings.claude_bin!r} not found on PATH")
        return
    if settings.claude_config_dir is not None:
        problem = ensure_writable_dir(settings.claude_config_dir)
        if problem:
            yield _fail("claude", f"CLAUDE_CONFIG_DIR: {problem}")
    try:
        staged = stage_login(settings)
    except OSError as exc:
        yield _fail("credentials", f"cannot copy the mounted login: {exc}")
    else:
        if staged is not None:
            what = "a login" if staged.has_login else "no .credentials.json"
            yield _ok("credentials", f"{staged.source}: {what}, copied {list(staged.copied)}")
    runner = ClaudeRunner(settings, SubprocessRunner(), SystemClock(), dict(os.environ))
    good, message = claude_verdict(runner.probe_in(settings.temp_dir, timeout_s))
    yield CheckResult("ok" if good else "FAIL", "claude", message)


class Check(StrEnum):
    """What ``fondation-worker check --only`` can pick (the configuration is always checked)."""

    CONVEX = "convex"
    DISK = "disk"
    GIT = "git"
    LAYERS = "layers"
    CLAUDE = "claude"


CHECKS: tuple[Check, ...] = tuple(Check)


def check_layers(settings: Settings) -> CheckResult:
    """The defence layers in force; a warning when the operator turned Landlock off."""
    layers = defense_layers(settings)
    text = "; ".join(f"{name} {state}" for name, state in layers.items())
    return CheckResult("ok" if layers["landlock"].startswith("on") else "warn", "layers", text)


def check_all(
    settings: Settings,
    connect: Callable[[], ConvexClient],
    claude_timeout_s: float,
    only: Collection[Check] = CHECKS,
) -> Iterator[CheckResult]:
    """The checks of ``fondation-worker check`` (every one, or those in ``only``), in order,
    each as soon as it is known."""
    yield _ok("config", f"valid (worker {settings.worker_id}, Convex {settings.convex_url})")
    if Check.CONVEX in only:
        with connect() as convex:
            convex_result = check_convex(convex, settings.worker_id)
        yield convex_result
    if Check.DISK in only:
        yield check_disk(settings)
    if Check.GIT in only:
        yield check_git(settings)
    if Check.LAYERS in only:
        yield check_layers(settings)
    if Check.CLAUDE in only:
        yield from check_claude(settings, claude_timeout_s)
