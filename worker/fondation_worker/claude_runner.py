"""Runs one ``claude -p`` step with the repository's own settings, hooks and MCP disabled.

Flags checked against ``claude --help`` of Claude Code 2.1.332 and claude-cli.md:
``--setting-sources user`` (no project/local settings from the clone), ``--settings
'{"disableAllHooks": true}'`` (no hooks at all), ``--strict-mcp-config`` without
``--mcp-config`` (no MCP servers), ``--tools`` (only these built-in tools exist),
``--allowedTools`` (and they need no permission prompt), ``--disallowedTools`` (belt and
braces), ``--permission-mode acceptEdits``, ``--no-session-persistence``.
Secrets reach the CLI only through its environment; the environment is built from an
allow-list, so WORKER_TOKEN and GitHub tokens never reach it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .classify import Classification, ClaudeRun, classify
from .clock import Clock
from .config import Settings
from .errors import AbortReason
from .process import AbortSignal, ProcessRunner, ProcessSpec, read_tail

TOOLS = "Read,Grep,Glob,Write"
DISALLOWED_TOOLS = "Bash,WebFetch,WebSearch,NotebookEdit"
HOOKS_OFF_SETTINGS = json.dumps({"disableAllHooks": True})
MAX_OUTPUT_BYTES = 16 * 1024 * 1024
RESULT_TAIL_BYTES = 4 * 1024 * 1024
STDERR_TAIL_BYTES = 16 * 1024
PROBE_TIMEOUT_S = 60.0

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


def claude_argv(settings: Settings, prompt: str, *, max_turns: int | None = None) -> list[str]:
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
        "--allowedTools",
        TOOLS,
        "--disallowedTools",
        DISALLOWED_TOOLS,
        "--setting-sources",
        "user",
        "--settings",
        HOOKS_OFF_SETTINGS,
        "--strict-mcp-config",
        "--permission-mode",
        "acceptEdits",
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
) -> dict[str, str]:
    env: dict[str, str] = {
        "PATH": base_env.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "HOME": base_env.get("HOME", "/"),
    }
    for name in settings.claude_passthrough_names():
        if name in base_env:
            env[name] = base_env[name]
    if settings.anthropic_api_key is not None:
        env["ANTHROPIC_API_KEY"] = settings.anthropic_api_key.get_secret_value()
    if settings.claude_code_oauth_token is not None:
        env["CLAUDE_CODE_OAUTH_TOKEN"] = settings.claude_code_oauth_token.get_secret_value()
    if settings.claude_config_dir is not None:
        env["CLAUDE_CONFIG_DIR"] = str(settings.claude_config_dir)
    if tmp_dir is not None:
        env["TMPDIR"] = str(tmp_dir)
    env.update(CHILD_ENV_FIXED)
    env["FONDATION_WORKER_ID"] = settings.worker_id
    if job_id:
        env["FONDATION_JOB_ID"] = job_id
    if step:
        env["FONDATION_STEP"] = step
    for forbidden in ("WORKER_TOKEN", "FONDATION_GIT_TOKEN", "GIT_ASKPASS"):
        env.pop(forbidden, None)
    return env


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
        spec = ProcessSpec(
            argv=claude_argv(self._settings, prompt, max_turns=max_turns),
            cwd=cwd,
            env=claude_env(
                self._settings, self._base_env, tmp_dir=tmp_dir, job_id=job_id, step=step
            ),
            timeout_s=timeout_s,
            stdout_path=stdout_path,
            stderr_path=stderr_path,
            max_output_bytes=MAX_OUTPUT_BYTES,
        )
        outcome = self._processes.run(spec, abort)
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
