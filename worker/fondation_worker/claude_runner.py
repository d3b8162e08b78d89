"""Runs one ``claude -p`` step confined to its clone, with the repository's own settings off.

Flags checked against ``claude --help`` of the Claude Code CLI pinned in worker/claude-cli.lock:
``--setting-sources user`` (no project/local settings from the clone), ``--strict-mcp-config``
without ``--mcp-config`` (no MCP servers), ``--tools`` (only these built-in tools exist),
``--disallowedTools`` (belt and braces), ``--permission-mode default`` with
``denyInsteadOfPrompting`` (anything not allowed below is refused, never asked),
``--no-session-persistence``. The ``--settings`` JSON (``cli_settings``) turns hooks off,
blocks reads and writes outside the working directory (the CLI resolves symlinks first),
pre-approves writes only under the output directory and denies the worker's own credential
directories by absolute path. Nothing is pre-approved with ``--allowedTools``: measured with
the pinned CLI, it approves a tool for every path, the credentials file included.

Each step gets a fresh config dir of its own (``HOME`` too) holding only the login file, so
the CLI never sees the operator's user settings, other steps' transcripts or the worker's
HOME. Secrets reach the CLI only through its environment, built from an allow-list, so
WORKER_TOKEN, the Convex URL and GitHub tokens never reach it.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .classify import Classification, ClaudeRun, classify
from .clock import Clock
from .collect import OUTPUT_DIR_NAME
from .config import Settings
from .credentials import LoginAborted, LoginBroker
from .errors import AbortReason
from .process import AbortSignal, ProcessRunner, ProcessSpec, read_tail
from .sandbox import landlock_abi, launcher_argv
from .workspace import PROBE_DIR_PREFIX, remove_tree

TOOLS = "Read,Grep,Glob,Write"
# Not offered by --tools anyway; named again in case a CLI release adds them back by default.
DISALLOWED_TOOLS = "Bash,WebFetch,WebSearch,NotebookEdit,Task,Agent"
# Rules in --settings: "./x" is relative to the working dir, "//x" an absolute path.
# An Edit rule covers every file-writing tool (Write included).
OUTPUT_WRITE_RULE = f"Edit(./{OUTPUT_DIR_NAME}/**)"
MAX_OUTPUT_BYTES = 16 * 1024 * 1024
RESULT_TAIL_BYTES = 4 * 1024 * 1024
STDERR_TAIL_BYTES = 16 * 1024
PROBE_TIMEOUT_S = 60.0

# Under CLAUDE_CONFIG_DIR: the per-run config dirs (each removed when its run ends).
STEP_CONFIGS = ".steps"

# Never in the child's environment, whatever CLAUDE_ENV_PASSTHROUGH says.
FORBIDDEN_ENV = ("WORKER_TOKEN", "CONVEX_URL", "FONDATION_GIT_TOKEN", "GIT_ASKPASS")

CHILD_ENV_FIXED = {
    "DISABLE_AUTOUPDATER": "1",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "DISABLE_TELEMETRY": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "CI": "1",
}


@dataclass(frozen=True)
class StepResult:
    classification: Classification
    duration_s: float
    aborted: AbortReason | None = None

    @property
    def cost_usd(self) -> float:
        result = self.classification.result
        return float(result.total_cost_usd or 0.0) if result is not None else 0.0


def protected_dirs(settings: Settings, base_env: Mapping[str, str] | None = None) -> list[Path]:
    """Directories holding the worker's own credentials and state, denied to the CLI's tools.

    They are outside the working directory, so the block-outside settings refuse them
    already; explicit deny rules keep them refused if a later CLI changes that default.
    """
    dirs = [settings.claude_config_dir, settings.claude_credentials_source]
    home = (base_env or {}).get("HOME")
    if home:
        dirs.append(Path(home))
    # A directory that holds TEMP_DIR would hold the clone too: denying it would deny all.
    temp = settings.temp_dir.absolute()
    return [d for d in dirs if d is not None and not temp.is_relative_to(d.absolute())]


def cli_settings(settings: Settings, base_env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The ``--settings`` JSON: hooks off, confinement to the clone, writes to the output dir."""
    deny = ["Bash", "WebFetch", "WebSearch", "NotebookEdit", "Task", "Agent"]
    for directory in protected_dirs(settings, base_env):
        absolute = "/" + str(directory.absolute()).rstrip("/")
        deny += [f"Read({absolute}/**)", f"Edit({absolute}/**)"]
    return {
        "disableAllHooks": True,
        "enableAllProjectMcpServers": False,
        "permissions": {
            "defaultMode": "default",
            "disableBypassPermissionsMode": "disable",
            "blockReadsOutsideWorkingDirectories": True,
            "blockWritesOutsideWorkingDirectories": True,
            "denyInsteadOfPrompting": True,
            "allow": [OUTPUT_WRITE_RULE],
            "deny": deny,
        },
    }


def claude_argv(
    settings: Settings,
    prompt: str,
    *,
    max_turns: int | None = None,
    base_env: Mapping[str, str] | None = None,
) -> list[str]:
    """The exact argument list of one step (the prompt is not secret; tokens never are here)."""
    argv = [
        settings.claude_bin,
        "-p",
        prompt,
        "--output-format",
        "json",
        "--max-turns",
        str(max_turns or settings.claude_max_turns),
    ]
    if settings.claude_model:
        argv += ["--model", settings.claude_model]
    if settings.claude_max_budget_usd is not None:
        argv += ["--max-budget-usd", f"{settings.claude_max_budget_usd:g}"]
    argv += [
        "--tools",
        TOOLS,
        "--disallowedTools",
        DISALLOWED_TOOLS,
        "--setting-sources",
        "user",
        "--settings",
        json.dumps(cli_settings(settings, base_env), separators=(",", ":")),
        "--strict-mcp-config",
        "--permission-mode",
        "default",
        "--no-session-persistence",
    ]
    return argv


def claude_env(
    settings: Settings,
    base_env: Mapping[str, str],
    *,
    tmp_dir: Path | None = None,
    job_id: str | None = None,
    step: str | None = None,
    config_dir: Path | None = None,
) -> dict[str, str]:
    """The child's whole environment, built from an allow-list.

    ``config_dir`` is the run's own config dir; it is HOME too, so nothing the CLI looks up
    under ``~`` reaches the worker's home.
    """
    env: dict[str, str] = {
        "PATH": base_env.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "HOME": str(config_dir) if config_dir is not None else base_env.get("HOME", "/"),
    }
    for name in settings.claude_passthrough_names():
        if name in base_env:
            env[name] = base_env[name]
    if settings.anthropic_api_key is not None:
        env["ANTHROPIC_API_KEY"] = settings.anthropic_api_key.get_secret_value()
    if settings.claude_code_oauth_token is not None:
        env["CLAUDE_CODE_OAUTH_TOKEN"] = settings.claude_code_oauth_token.get_secret_value()
    if config_dir is not None:
        env["CLAUDE_CONFIG_DIR"] = str(config_dir)
    elif settings.claude_config_dir is not None:
        env["CLAUDE_CONFIG_DIR"] = str(settings.claude_config_dir)
    if tmp_dir is not None:
        env["TMPDIR"] = str(tmp_dir)
    env.update(CHILD_ENV_FIXED)
    env["FONDATION_WORKER_ID"] = settings.worker_id
    if job_id:
        env["FONDATION_JOB_ID"] = job_id
    if step:
        env["FONDATION_STEP"] = step
    for forbidden in FORBIDDEN_ENV:
        env.pop(forbidden, None)
    return env


def defense_layers(settings: Settings) -> dict[str, str]:
    """Which layers stand between a hostile repository and the worker's secrets, as /readyz,
    ``fondation-worker check`` and the status play report them (docs/SECURITY.md)."""
    if settings.claude_sandbox == "landlock":
        abi = landlock_abi()
        landlock = f"on (ABI {abi})" if abi >= 1 else "MISSING (the worker refuses to start)"
    else:
        landlock = "off (CLAUDE_SANDBOX=off)"
    return {
        # Tools, permissions, hooks and MCP off: claude_argv and cli_settings, always.
        "cli": "on",
        "landlock": landlock,
        # Secrets and machine paths scrubbed from every document before upload: always.
        "documents": "on",
    }


def login_source_dir(settings: Settings, base_env: Mapping[str, str]) -> Path | None:
    """Where the worker keeps the CLI's login: CLAUDE_CONFIG_DIR, else the CLI's default."""
    if settings.claude_config_dir is not None:
        return settings.claude_config_dir
    home = base_env.get("HOME")
    return Path(home) / ".claude" if home else None


def sandboxed(
    settings: Settings,
    argv: list[str],
    env: Mapping[str, str],
    *,
    cwd: Path,
    config_dir: Path,
    tmp_dir: Path,
) -> list[str]:
    """``argv`` wrapped in the Landlock launcher when CLAUDE_SANDBOX=landlock.

    Writable: the clone, the run's config dir and TMPDIR. Readable besides the system
    directories: the CLI's own install directory and a CA bundle named in its environment.
    """
    if settings.claude_sandbox == "off":
        return argv
    binary = shutil.which(argv[0], path=env.get("PATH")) or argv[0]
    read_only = [Path(os.path.realpath(binary)).parent]
    for name in ("SSL_CERT_FILE", "NODE_EXTRA_CA_CERTS", "SSL_CERT_DIR"):
        if env.get(name):
            read_only.append(Path(env[name]))
    return launcher_argv(
        sys.executable,
        read_write=[cwd, config_dir, tmp_dir],
        read_only=read_only,
        command=[binary, *argv[1:]],
    )


class ClaudeRunner:
    def __init__(
        self,
        settings: Settings,
        processes: ProcessRunner,
        clock: Clock,
        base_env: Mapping[str, str],
    ) -> None:
        self._settings = settings
        self._processes = processes
        self._clock = clock
        self._base_env = dict(base_env)
        # Concurrent steps share one subscription login: one refresher at a time.
        self._login = LoginBroker()

    def run(
        self,
        prompt: str,
        *,
        cwd: Path,
        scratch: Path,
        abort: AbortSignal,
        timeout_s: float,
        job_id: str | None = None,
        step: str | None = None,
        max_turns: int | None = None,
    ) -> StepResult:
        """Run one step; ``scratch`` (outside the clone) receives stdout/stderr files."""
        name = step or "probe"
        stdout_path = scratch / f"claude-{name}.stdout"
        stderr_path = scratch / f"claude-{name}.stderr"
        tmp_dir = scratch / "tmp"
        tmp_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        source = login_source_dir(self._settings, self._base_env)
        try:
            with self._login.step(
                source,
                self.step_config_path(scratch, name),
                needed_s=timeout_s,
                abort=lambda: abort.reason is not None,
            ) as config_dir:
                env = claude_env(
                    self._settings,
                    self._base_env,
                    tmp_dir=tmp_dir,
                    job_id=job_id,
                    step=step,
                    config_dir=config_dir,
                )
                argv = claude_argv(
                    self._settings, prompt, max_turns=max_turns, base_env=self._base_env
                )
                spec = ProcessSpec(
                    argv=sandboxed(
                        self._settings, argv, env, cwd=cwd, config_dir=config_dir, tmp_dir=tmp_dir
                    ),
                    cwd=cwd,
                    env=env,
                    timeout_s=timeout_s,
                    stdout_path=stdout_path,
                    stderr_path=stderr_path,
                    max_output_bytes=MAX_OUTPUT_BYTES,
                )
                outcome = self._processes.run(spec, abort)
        except LoginAborted:
            # Stopped while another step refreshed the login: it never started.
            return StepResult(
                Classification("transient", "stopped before it started"), 0.0, abort.reason
            )
        if outcome.start_error:
            return StepResult(
                # The worker checks CLAUDE_BIN at startup; a start failure now is the
                # machine's (fork, memory), not the job's.
                Classification("transient", f"cannot start claude: {outcome.start_error}"),
                outcome.duration_s,
            )
        run = ClaudeRun(
            exit_code=outcome.returncode,
            stdout_tail=read_tail(stdout_path, RESULT_TAIL_BYTES),
            stderr_tail=read_tail(stderr_path, STDERR_TAIL_BYTES),
            timed_out=outcome.timed_out,
            output_too_large=outcome.output_exceeded,
        )
        return StepResult(classify(run, self._clock.now()), outcome.duration_s, outcome.aborted)

    def step_config_path(self, scratch: Path, name: str) -> Path:
        """Where a run's own config dir lives: beside the worker's config dir when there is
        one (the container's tmpfs, so a login copy never lands on the workspace volume),
        else in the job's scratch dir. Unique per job (``scratch``) and step."""
        if self._settings.claude_config_dir is not None:
            return self._settings.claude_config_dir / STEP_CONFIGS / f"{scratch.name}-{name}"
        return scratch / f"claude-config-{name}"

    def probe_in(self, temp_dir: Path, timeout_s: float = PROBE_TIMEOUT_S) -> Classification:
        """``probe`` in a fresh ``TEMP_DIR/probe-*`` scratch directory, removed afterwards
        (one a crash leaves is removed by the next start's sweep)."""
        root = temp_dir / f"{PROBE_DIR_PREFIX}{uuid.uuid4().hex}"
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            return self.probe(root, timeout_s)
        finally:
            remove_tree(root)

    def probe(self, scratch: Path, timeout_s: float = PROBE_TIMEOUT_S) -> Classification:
        """A tiny real call: the only reliable way to know the CLI can reach the API."""
        from .pipeline import PROBE_PROMPT_FILE, load_prompt

        workdir = scratch / "probe-cwd"
        workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        result = self.run(
            load_prompt(PROBE_PROMPT_FILE),
            cwd=workdir,
            scratch=scratch,
            abort=AbortSignal(),
            timeout_s=timeout_s,
            step="probe",
            max_turns=1,
        )
        return result.classification
