"""One job end to end without Convex: real git (loopback HTTPS), the fake claude, a
recording queue. Checks the final call for each way a job can end."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fondation_worker.claude_runner import ClaudeRunner, claude_argv
from fondation_worker.clock import SystemClock
from fondation_worker.config import Settings
from fondation_worker.errors import ConvexLeaseLost
from fondation_worker.job_runner import JobContext, JobOutcome, JobRunner
from fondation_worker.lease import ProgressBox
from fondation_worker.metrics import Metrics
from fondation_worker.models import ClaimedJob, Summary
from fondation_worker.pipeline import STEPS
from fondation_worker.process import AbortSignal, SubprocessRunner
from fondation_worker.redact import Redactor
from tests.support import FAKE_CLAUDE, SAMPLE_FILES, read_claude_log, wait_until
from tests.support.fake_sink import FakeSink
from tests.support.recording_queue import RecordingQueue

TOKEN = "ghp_" + "PrivateRepoTokenForRunnerTests01234a"
WORKER_TOKEN = "test-worker-token-0123456789abcdef"


@pytest.fixture(scope="module")
def repos(git_server: Any) -> dict[str, str]:
    hooks = {
        "hooks": {
            "SessionStart": [{"hooks": [{"type": "command", "command": "touch MARKER_HOOK"}]}],
            "UserPromptSubmit": [{"hooks": [{"type": "command", "command": "touch MARKER_HOOK"}]}],
        }
    }
    mcp = {"mcpServers": {"evil": {"command": "/bin/sh", "args": ["-c", "touch MARKER_MCP"]}}}
    return {
        "public": git_server.add_repo("runner", "public", SAMPLE_FILES),
        "private": git_server.add_repo("runner", "private", SAMPLE_FILES, token=TOKEN),
        "hooks": git_server.add_repo(
            "runner",
            "hooks",
            {
                **SAMPLE_FILES,
                ".claude/settings.json": json.dumps(hooks),
                ".mcp.json": json.dumps(mcp),
                ".claude-tutorial-output/chapters/99-planted.md": "# Planted by the repo\n",
            },
        ),
    }


Env = dict[str, str]


@pytest.fixture
def run_job(
    tmp_path: Path, git_server: Any, fake_claude_log: Path, fake_claude_sink: FakeSink
) -> Callable[..., tuple[JobOutcome, RecordingQueue, Settings]]:
    def run(
        url: str,
        *,
        mode: str = "success",
        token: str | None = None,
        abort_after: tuple[float, str] | None = None,
        queue: RecordingQueue | None = None,
        keep_runner: list[JobRunner] | None = None,
        **overrides: Any,
    ) -> tuple[JobOutcome, RecordingQueue, Settings]:
        values: dict[str, Any] = {
            "convex_url": "http://127.0.0.1:9",
            "worker_token": WORKER_TOKEN,
            "worker_id": "runner-test",
            "allowed_repo_hosts": [git_server.host],
            "git_ca_bundle": git_server.cert,
            "claude_bin": str(FAKE_CLAUDE),
            "claude_config_dir": tmp_path / "claude-config",
            "claude_env_passthrough": [
                "FAKE_CLAUDE_MODE",
                "FAKE_CLAUDE_LOG",
                "FAKE_CLAUDE_DELAY",
                "FAKE_CLAUDE_SINK",
            ],
            "temp_dir": tmp_path / "work",
            "min_free_disk_mb": 0,
            "step_timeout_ms": 30_000,
        }
        values.update(overrides)
        settings = Settings(**values)
        base_env = {
            "PATH": os.environ["PATH"],
            "HOME": str(tmp_path),
            "FAKE_CLAUDE_MODE": mode,
            "FAKE_CLAUDE_LOG": str(fake_claude_log),
            "FAKE_CLAUDE_SINK": fake_claude_sink.address,
            "WORKER_TOKEN": WORKER_TOKEN,  # present in the worker's env, must not reach claude
        }
        queue = queue or RecordingQueue()
        redactor = Redactor(settings.secret_values())
        processes = SubprocessRunner(term_grace_s=1)
        clock = SystemClock()
        runner = JobRunner(
            settings,
            queue,
            processes,
            clock,
            redactor,
            Metrics(),
            base_env,
            ClaudeRunner(settings, processes, clock, base_env),
        )
        job = ClaimedJob.model_validate(
            {
                "jobId": "job-1",
                "leaseToken": "1.lease.token",
                "leaseUntil": 0,
                "attempt": 1,
                "maxAttempts": 3,
                "repoUrl": url,
                "branch": "main",
                "userId": "u",
                **({"githubToken": token} if token else {}),
            }
        )
        abort = AbortSignal()
        ctx = JobContext(abort=abort, progress=ProgressBox(), stop_heartbeat=lambda: None)
        if abort_after is not None:
            delay, reason = abort_after

            def later() -> None:
                wait_until(
                    lambda: any(e["event"] == "hang" for e in read_claude_log(fake_claude_log)), 30
                )
                time.sleep(delay)
                abort.abort(reason)  # type: ignore[arg-type]

            threading.Thread(target=later, daemon=True).start()
        outcome = runner.run(job, ctx)
        if keep_runner is not None:  # the test looks at the background removal itself
            keep_runner.append(runner)
            return outcome, queue, settings
        jobs_dir = tmp_path / "work" / "jobs"
        # Always removed, in the background once the final call is made.
        wait_until(lambda: not jobs_dir.exists() or list(jobs_dir.iterdir()) == [], 10)
        return outcome, queue, settings

    return run


def test_success_uploads_docs_and_completes(
    run_job: Any, repos: dict[str, str], fake_claude_log: Path
) -> None:
    outcome, queue, settings = run_job(repos["public"])
    assert outcome.outcome == "completed"
    # Running from its claim (no start call), and the only batch rides with complete.
    assert queue.names() == ["complete"]
    slugs = {d.slug: d for d in queue.docs}
    assert set(slugs) == {
        "abstractions",
        "relationships",
        "chapter-order",
        "index",
        "chapters-01-scheduler",
        "chapters-02-job",
        "tutorials-01-first-run",
    }
    assert slugs["chapters-02-job"].title == "Chapter 2: Job"
    assert slugs["index"].kind == "toc"
    summary: Summary = queue.calls[-1][1]["summary"]
    assert summary.docs_count == 7
    assert summary.dropped is None  # nothing left out: no record
    assert summary.cost_usd == pytest.approx(0.0123 * len(STEPS))
    starts = [e for e in read_claude_log(fake_claude_log) if e["event"] == "start"]
    assert [e["step"] for e in starts] == [s.name for s in STEPS]
    for entry in starts:
        assert entry["argv"] == claude_argv(settings, entry["argv"][1])[1:]
        assert entry["cwd"].endswith("/repo")
        assert "WORKER_TOKEN" not in entry["env"]
        assert "CLAUDE_CONFIG_DIR" in entry["env"]
        assert "DISABLE_AUTOUPDATER" in entry["env"]


def test_exit_waits_for_the_background_workspace_removal(
    run_job: Any, repos: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The final call does not wait for the removal; a worker that exits right after (a
    # drain) must, or it leaves a .trash- directory behind (seen once in test_integration).
    import fondation_worker.workspace as workspace_module

    real_remove = workspace_module.remove_tree

    def slow_remove(path: Path) -> None:
        time.sleep(1.0)
        real_remove(path)

    monkeypatch.setattr(workspace_module, "remove_tree", slow_remove)
    runners: list[JobRunner] = []
    outcome, _, settings = run_job(repos["public"], keep_runner=runners)
    assert outcome.outcome == "completed"
    jobs_dir = settings.temp_dir / "jobs"
    assert [p.name[:7] for p in jobs_dir.iterdir()] == [".trash-"]  # still being removed
    assert runners[0].wait_for_removals(10.0)
    assert list(jobs_dir.iterdir()) == []


def test_private_repository_token_stays_out_of_claude(
    run_job: Any, repos: dict[str, str], fake_claude_log: Path
) -> None:
    outcome, _queue, _ = run_job(repos["private"], token=TOKEN)
    assert outcome.outcome == "completed"
    log = fake_claude_log.read_text()
    assert TOKEN not in log
    assert "FONDATION_GIT_TOKEN" not in log
    assert "GIT_ASKPASS" not in log


def test_repository_hooks_and_mcp_servers_never_run(
    run_job: Any, repos: dict[str, str], fake_claude_log: Path, tmp_path: Path
) -> None:
    outcome, queue, _ = run_job(repos["hooks"])
    assert outcome.outcome == "completed"
    events = {e["event"] for e in read_claude_log(fake_claude_log)}
    assert "hook" not in events
    assert "mcp" not in events
    assert not list(tmp_path.rglob("MARKER_*"))
    # What the repository planted in the output directory is not uploaded.
    assert "chapters-99-planted" not in {d.slug for d in queue.docs}


@pytest.mark.parametrize(
    ("mode", "kind", "status"),
    [
        ("auth_error", "auth", "deferred"),
        ("usage_limit", "usage_limit", "deferred"),
        ("overloaded", "transient", "failed"),
        ("crash", "transient", "failed"),
        ("max_turns", "permanent", "dead"),
        ("flags_error", "permanent", "dead"),
        ("huge_output", "permanent", "dead"),
        ("no_output", "transient", "failed"),
    ],
)
def test_claude_failures_are_reported_with_their_kind(
    run_job: Any, repos: dict[str, str], mode: str, kind: str, status: str
) -> None:
    outcome, queue, _ = run_job(repos["public"], mode=mode)
    assert queue.names() == ["retry_or_fail"]
    call = queue.calls[-1][1]
    assert call["kind"] == kind
    assert outcome.outcome == status
    if kind == "usage_limit":
        assert 60 * 60_000 < call["retry_after_ms"] <= 2 * 60 * 60_000 + 60_000
    if kind == "auth":
        assert "Not logged in" in call["error"]
        assert call["retry_after_ms"] == 300_000


def test_oversized_and_symlinked_docs_are_dropped(run_job: Any, repos: dict[str, str]) -> None:
    outcome, queue, _ = run_job(repos["public"], mode="huge_doc")
    assert outcome.outcome == "completed"
    assert "chapters-03-huge" not in {d.slug for d in queue.docs}
    # the drop is recorded on the job, not only in the worker log
    dropped = queue.calls[-1][1]["summary"].dropped
    assert dropped is not None
    assert (dropped.count, [(r.reason, r.count) for r in dropped.reasons]) == (
        1,
        [("too_large", 1)],
    )
    outcome, queue, _ = run_job(repos["public"], mode="symlink_doc")
    assert outcome.outcome == "completed"
    assert all("root:" not in d.content for d in queue.docs)
    dropped = queue.calls[-1][1]["summary"].dropped
    assert dropped is not None
    assert {r.reason for r in dropped.reasons} == {"symlink"}


def test_step_timeout(run_job: Any, repos: dict[str, str]) -> None:
    _outcome, queue, _ = run_job(repos["public"], mode="hang@relationships", step_timeout_ms=1500)
    assert queue.calls[-1][0] == "retry_or_fail"
    assert queue.calls[-1][1]["kind"] == "timeout"


@pytest.mark.parametrize(
    ("reason", "final"),
    [("cancel", "acknowledge_cancel"), ("shutdown", "release"), ("timeout", "retry_or_fail")],
)
def test_abort_kills_claude_and_makes_the_right_final_call(
    run_job: Any, repos: dict[str, str], fake_claude_log: Path, reason: str, final: str
) -> None:
    t0 = time.monotonic()
    _outcome, queue, _ = run_job(repos["public"], mode="hang@chapters", abort_after=(0.2, reason))
    assert time.monotonic() - t0 < 20
    assert queue.names()[-1] == final
    if reason == "timeout":
        assert queue.calls[-1][1]["kind"] == "timeout"
    hang = next(e for e in read_claude_log(fake_claude_log) if e["event"] == "hang")
    for pid in (hang["pid"], hang["child_pid"]):
        assert (
            not Path(f"/proc/{pid}").exists()
            or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
        )


def test_fence_makes_no_call_at_all(run_job: Any, repos: dict[str, str]) -> None:
    outcome, queue, _ = run_job(repos["public"], mode="hang@chapters", abort_after=(0.2, "fence"))
    assert outcome.outcome == "fenced"
    assert queue.names() == []


def test_lease_lost_during_upload_stops_everything(run_job: Any, repos: dict[str, str]) -> None:
    queue = RecordingQueue()
    queue.fail_upload = ConvexLeaseLost("jobs:complete: lease lost")  # its last batch
    outcome, queue, _ = run_job(repos["public"], queue=queue)
    assert outcome.outcome == "fenced"
    assert queue.names() == []


def test_disk_preflight(run_job: Any, repos: dict[str, str]) -> None:
    outcome, queue, _ = run_job(repos["public"], min_free_disk_mb=10**9)
    assert queue.names() == ["retry_or_fail"]
    assert queue.calls[0][1]["kind"] == "disk"
    assert "not enough free disk" in queue.calls[0][1]["error"]
    assert outcome.outcome == "deferred"


def test_invalid_repository_is_refused_before_git(run_job: Any, git_server: Any) -> None:
    _outcome, queue, _ = run_job("https://evil.example/a/b")
    assert queue.names() == ["retry_or_fail"]
    assert queue.calls[0][1]["kind"] == "invalid_repository"


def test_missing_repository(run_job: Any, git_server: Any) -> None:
    outcome, queue, _ = run_job(git_server.url("runner", "missing"))
    assert queue.calls[-1][1]["kind"] == "repository_not_found"
    assert outcome.outcome == "dead"
