"""The worker process against the dev backend (devbackend/server.ts running convex/),
the fake claude and the loopback HTTPS git server.

Short timings: HEARTBEAT_MS=500, reclaim cron every 1000 ms; LEASE_MS=3000 (SHORT_LEASE) in
the tests about lease expiry, 30000 elsewhere.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from tests.support import (
    CLAIM_CALLS,
    FAKE_CLAUDE,
    SAMPLE_FILES,
    SHORT_LEASE,
    TEST_OPERATOR_TOKEN,
    TEST_WORKER_TOKEN,
    WORKER_BIN,
    DevBackend,
    enqueue,
    get_job,
    read_claude_log,
    wait_status,
    wait_until,
)

pytestmark = pytest.mark.integration

PRIVATE_TOKEN = "ghp_" + "IntegrationPrivateToken0123456789abcd"


@pytest.fixture(scope="module")
def repos(git_server: Any) -> dict[str, str]:
    hooks = {
        "hooks": {
            "SessionStart": [
                {"hooks": [{"type": "command", "command": "touch /tmp/MARKER_HOOK_fw"}]}
            ],
        }
    }
    mcp = {
        "mcpServers": {"evil": {"command": "/bin/sh", "args": ["-c", "touch /tmp/MARKER_MCP_fw"]}}
    }
    return {
        "public": git_server.add_repo("it", "public", SAMPLE_FILES),
        "private": git_server.add_repo("it", "private", SAMPLE_FILES, token=PRIVATE_TOKEN),
        "hooks": git_server.add_repo(
            "it",
            "hooks",
            {
                **SAMPLE_FILES,
                ".claude/settings.json": json.dumps(hooks),
                ".mcp.json": json.dumps(mcp),
            },
        ),
    }


def claude_events(log: Path, event: str, job: str | None = None) -> list[dict[str, Any]]:
    return [
        e for e in read_claude_log(log) if e["event"] == event and (job is None or e["job"] == job)
    ]


def pid_gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return True
    return state in ("Z", "X")


def kill_leftover(log: Path) -> None:
    for entry in claude_events(log, "hang"):
        for pid in (entry["pid"], entry["child_pid"]):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


# --- happy path --------------------------------------------------------------------------


def test_happy_path(
    dev_backend: DevBackend, start_worker: Any, repos: dict[str, str], fake_claude_log: Path
) -> None:
    worker = start_worker(dev_backend)
    job_id = enqueue(dev_backend, repos["public"], branch="main")
    job = wait_status(dev_backend, job_id, {"completed", "dead", "failed"}, timeout=60)
    assert job["status"] == "completed", job
    assert job["attempts"] == 1
    assert job["result"]["docsCount"] == 7
    assert job["result"]["costUsd"] == pytest.approx(0.0123 * 5)
    with dev_backend.operator_client() as client:
        docs = client.call(
            "query", "docs:listByJob", {"token": TEST_OPERATOR_TOKEN, "jobId": job_id}
        )
        chapter = client.call(
            "query",
            "docs:getDoc",
            {"token": TEST_OPERATOR_TOKEN, "jobId": job_id, "slug": "chapters-02-job"},
        )
    assert {d["kind"] for d in docs} == {"toc", "yaml", "chapter", "tutorial"}
    assert chapter["title"] == "Chapter 2: Job"
    assert "Ünïcödé" in chapter["content"]
    # Every step ran in the clone, for this job, on this worker.
    starts = claude_events(fake_claude_log, "start", job_id)
    assert [s["step"] for s in starts] == [
        "abstractions",
        "relationships",
        "chapter_order",
        "chapters",
        "tutorials",
    ]
    assert {s["worker"] for s in starts} == {worker.env["WORKER_ID"]}
    # Every log line of the job carries its id and attempt.
    job_lines = [e for e in worker.read_logs() if e.get("job_id") == job_id]
    assert {"job.claimed", "job.started", "step.started", "job.completed"} <= {
        e["event"] for e in job_lines
    }
    assert all(e.get("attempt") == 1 for e in job_lines)
    worker.wait_event("job.completed")
    assert worker.metric("fondation_worker_jobs_claimed_total") == 1
    assert worker.metric('fondation_worker_jobs_finished_total{outcome="completed"}') == 1
    assert worker.get("/readyz").json()["ready"] is True
    # Progress went through the steps via heartbeats.
    assert any(e["event"] == "step.started" and e["index"] == 5 for e in job_lines)


# --- crash and reclaim -------------------------------------------------------------------


def test_kill_9_mid_job_is_reclaimed_and_completed_once(
    dev_backend: DevBackend, start_worker: Any, repos: dict[str, str], fake_claude_log: Path
) -> None:
    first = start_worker(dev_backend, "first", FAKE_CLAUDE_MODE="hang@chapters", **SHORT_LEASE)
    job_id = enqueue(dev_backend, repos["public"])
    wait_until(lambda: claude_events(fake_claude_log, "hang", job_id), 30)
    # Progress (step i of N) reaches Convex with the next heartbeat.
    wait_until(
        lambda: (get_job(dev_backend, job_id).get("progress") or {}).get("currentStep") == 4, 5
    )
    assert get_job(dev_backend, job_id)["status"] == "running"
    killed_at = time.time() * 1000
    first.kill9()
    kill_leftover(fake_claude_log)  # on a host, the orphaned CLI would finish on its own
    second = start_worker(dev_backend, "second", **SHORT_LEASE)
    job = wait_status(dev_backend, job_id, {"completed", "dead"}, timeout=60)
    assert job["status"] == "completed"
    assert job["attempts"] == 2
    assert job["lockedBy"] is None or job["lockedBy"] == second.env["WORKER_ID"]
    second.wait_event("job.completed")
    # Reclaimed only after the lease ran out, and completed exactly once.
    assert len([e for e in second.events("job.completed") if e.get("job_id") == job_id]) == 1
    with dev_backend.client() as client:
        metrics = client.queue_metrics()
    assert metrics["counts"]["completed"] == 1
    assert metrics["lastHour"]["completed"] == 1
    ends = claude_events(fake_claude_log, "end", job_id)
    by_second = [e["step"] for e in ends if e["worker"] == second.env["WORKER_ID"]]
    by_first = [e["step"] for e in ends if e["worker"] == first.env["WORKER_ID"]]
    assert by_second == ["abstractions", "relationships", "chapter_order", "chapters", "tutorials"]
    assert by_first == ["abstractions", "relationships", "chapter_order"]  # then it died
    reclaimed = second.wait_event("job.claimed", where=lambda e: e["job_id"] == job_id)
    # Not before the first worker's lease ran out (its last heartbeat was at most one
    # heartbeat period before the kill).
    reclaimed_at = reclaimed["lease_until"] - int(second.env["LEASE_MS"])
    lease_ms, heartbeat_ms = int(first.env["LEASE_MS"]), int(first.env["HEARTBEAT_MS"])
    assert reclaimed_at >= killed_at - heartbeat_ms + lease_ms - 50


def test_a_restart_under_the_same_worker_id_gives_the_job_back_at_once(
    dev_backend: DevBackend, start_worker: Any, repos: dict[str, str], fake_claude_log: Path
) -> None:
    # A long lease: without the give-back at start the job would wait 60 s for it.
    timings = {"WORKER_ID": "host-a-1", "LEASE_MS": "60000", "HEARTBEAT_MS": "5000"}
    first = start_worker(dev_backend, "first", FAKE_CLAUDE_MODE="hang@chapters", **timings)
    job_id = enqueue(dev_backend, repos["public"])
    wait_until(lambda: claude_events(fake_claude_log, "hang", job_id), 30)
    first.kill9()
    killed = time.monotonic()
    kill_leftover(fake_claude_log)  # a container's restart takes its processes with it
    second = start_worker(dev_backend, "second", **timings)
    claimed = second.wait_event("job.claimed", where=lambda e: e["job_id"] == job_id)
    assert time.monotonic() - killed < 15
    assert claimed["attempt"] == 2  # the crashed attempt stays consumed
    recovered = second.wait_event("worker.recovered_jobs")
    assert recovered["pending"] == 1
    job = wait_status(dev_backend, job_id, {"completed", "dead"}, timeout=60)
    assert job["status"] == "completed"


def test_a_frozen_workers_claude_run_dies_with_its_lease(
    dev_backend: DevBackend, start_worker: Any, repos: dict[str, str], fake_claude_log: Path
) -> None:
    worker = start_worker(dev_backend, FAKE_CLAUDE_MODE="hang@chapters", **SHORT_LEASE)
    job_id = enqueue(dev_backend, repos["public"])
    wait_until(lambda: claude_events(fake_claude_log, "hang", job_id), 30)
    hang = claude_events(fake_claude_log, "hang", job_id)[0]
    worker.signal(signal.SIGSTOP)  # frozen: no heartbeat, no fencing, no kill from the worker
    try:
        time.sleep(0.3)  # a renewal in flight when it froze has landed by now
        lease_until = get_job(dev_backend, job_id)["leaseUntil"] / 1000  # Convex's lease end
        assert not pid_gone(hang["pid"])  # still running when the worker froze
        wait_until(lambda: pid_gone(hang["pid"]) and pid_gone(hang["child_pid"]), 15, 0.02)
        gone = time.time()
        # The watchdog, outside the worker, stopped the step before the lease ended (so before
        # anyone else could claim the job), not merely within 5 s of it.
        assert gone <= lease_until + 0.1, f"Claude ran {gone - lease_until:.2f} s past its lease"
        assert get_job(dev_backend, job_id)["status"] == "running"  # nobody else took it
    finally:
        worker.signal(signal.SIGCONT)


def test_backend_unreachable_mid_job_fences_before_the_lease_ends(
    own_dev_backend: Any, start_worker: Any, repos: dict[str, str], fake_claude_log: Path
) -> None:
    backend = own_dev_backend()
    worker = start_worker(
        backend, FAKE_CLAUDE_MODE="hang@chapters", DRAIN_TIMEOUT_MS="1000", **SHORT_LEASE
    )
    job_id = enqueue(backend, repos["public"])
    wait_until(lambda: claude_events(fake_claude_log, "hang", job_id), 30)
    hang = claude_events(fake_claude_log, "hang", job_id)[0]
    lease_s = int(worker.env["LEASE_MS"]) / 1000
    # The last successful heartbeat was sent before this moment: the lease ends before
    # cut + LEASE_MS on Convex's clock.
    cut = time.monotonic()
    backend.pause("hang")  # connections held without a reply: calls time out
    wait_until(lambda: pid_gone(hang["pid"]) and pid_gone(hang["child_pid"]), lease_s + 2, 0.02)
    gone_after = time.monotonic() - cut
    assert gone_after < lease_s, f"claude still ran {gone_after:.2f} s after the cut"
    fenced = worker.wait_event("lease.fenced", timeout=5)
    assert fenced["job_id"] == job_id
    backend.resume()
    # The worker touched the job no more: the lease expired and the job went back to the
    # queue (the same worker, healthy again, may take it as a new attempt).
    wait_until(lambda: get_job(backend, job_id)["attempts"] == 2, 15)
    job = get_job(backend, job_id)
    assert job["lastErrorKind"] == "lease_expired"
    assert worker.events("job.fenced")
    after = [
        e
        for e in worker.read_logs()
        if e.get("job_id") == job_id
        and e["event"].startswith(("job.completed", "job.failed", "job.released", "job.canceled"))
    ]
    assert after == []
    worker.stop()


def test_backend_connection_resets_also_fence(
    own_dev_backend: Any, start_worker: Any, repos: dict[str, str], fake_claude_log: Path
) -> None:
    backend = own_dev_backend()
    worker = start_worker(backend, FAKE_CLAUDE_MODE="hang@chapters", **SHORT_LEASE)
    job_id = enqueue(backend, repos["public"])
    wait_until(lambda: claude_events(fake_claude_log, "hang", job_id), 30)
    hang = claude_events(fake_claude_log, "hang", job_id)[0]
    cut = time.monotonic()
    backend.pause("reset")
    wait_until(lambda: pid_gone(hang["pid"]), 6, 0.02)
    assert time.monotonic() - cut < int(worker.env["LEASE_MS"]) / 1000
    worker.wait_event("lease.fenced", timeout=5)
    backend.resume()


# --- shutdown ----------------------------------------------------------------------------


def test_sigterm_lets_the_running_job_finish(
    dev_backend: DevBackend, start_worker: Any, repos: dict[str, str], fake_claude_log: Path
) -> None:
    worker = start_worker(dev_backend, FAKE_CLAUDE_DELAY="0.6")
    job_id = enqueue(dev_backend, repos["public"])
    wait_until(lambda: claude_events(fake_claude_log, "start", job_id), 30)
    worker.signal(signal.SIGTERM)
    assert worker.wait(60) == 0
    assert get_job(dev_backend, job_id)["status"] == "completed"
    worker.wait_event("worker.draining")
    assert not worker.events("worker.releasing_jobs")


def test_sigterm_drain_timeout_releases_the_job(
    dev_backend: DevBackend, start_worker: Any, repos: dict[str, str], fake_claude_log: Path
) -> None:
    worker = start_worker(dev_backend, FAKE_CLAUDE_MODE="hang@chapters", DRAIN_TIMEOUT_MS="1500")
    job_id = enqueue(dev_backend, repos["public"])
    wait_until(lambda: claude_events(fake_claude_log, "hang", job_id), 30)
    hang = claude_events(fake_claude_log, "hang", job_id)[0]
    t0 = time.monotonic()
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    assert 1.4 <= time.monotonic() - t0 < 15
    job = get_job(dev_backend, job_id)
    assert job["status"] == "pending"
    assert job["attempts"] == 0  # released: the attempt is given back
    assert pid_gone(hang["pid"])
    assert pid_gone(hang["child_pid"])
    assert claude_events(fake_claude_log, "term", job_id)  # SIGTERM first, then the group
    assert list(Path(worker.env["TEMP_DIR"], "jobs").iterdir()) == []


def test_second_signal_releases_at_once(
    dev_backend: DevBackend, start_worker: Any, repos: dict[str, str], fake_claude_log: Path
) -> None:
    worker = start_worker(dev_backend, FAKE_CLAUDE_MODE="hang@chapters", DRAIN_TIMEOUT_MS="60000")
    job_id = enqueue(dev_backend, repos["public"])
    wait_until(lambda: claude_events(fake_claude_log, "hang", job_id), 30)
    worker.signal(signal.SIGTERM)
    worker.wait_event("worker.draining")
    assert worker.get("/readyz").json()["ready"] is False
    t0 = time.monotonic()
    worker.signal(signal.SIGINT)
    assert worker.wait(30) == 0
    assert time.monotonic() - t0 < 10
    assert get_job(dev_backend, job_id)["status"] == "pending"


# --- cancel ------------------------------------------------------------------------------


def test_cancel_of_a_running_job(
    dev_backend: DevBackend, start_worker: Any, repos: dict[str, str], fake_claude_log: Path
) -> None:
    worker = start_worker(dev_backend, FAKE_CLAUDE_MODE="hang@chapters")
    job_id = enqueue(dev_backend, repos["public"])
    wait_until(lambda: claude_events(fake_claude_log, "hang", job_id), 30)
    hang = claude_events(fake_claude_log, "hang", job_id)[0]
    t0 = time.monotonic()
    with dev_backend.operator_client() as client:
        assert client.cancel(job_id).status == "running"
    job = wait_status(dev_backend, job_id, {"canceled"}, timeout=10)
    heartbeat_s = int(worker.env["HEARTBEAT_MS"]) / 1000
    wait_until(lambda: pid_gone(hang["pid"]), 5, 0.02)
    # Stopped within one heartbeat (plus the SIGTERM grace the fake does not need).
    assert time.monotonic() - t0 < heartbeat_s + 3
    assert job["status"] == "canceled"
    worker.wait_event("job.canceled")


# --- disk, auth, poison --------------------------------------------------------------------


def test_disk_below_minimum(
    dev_backend: DevBackend, start_worker: Any, repos: dict[str, str]
) -> None:
    # A worker short of disk claims nothing: the job stays untouched for a worker with room.
    worker = start_worker(dev_backend, MIN_FREE_DISK_MB=str(10**9))
    job_id = enqueue(dev_backend, repos["public"])
    wait_until(lambda: worker.get("/readyz").status_code == 503, 30)
    wait_until(lambda: worker.get("/readyz").json()["checks"]["disk"] is False, 30)
    assert "not enough free disk" in " ".join(worker.get("/readyz").json()["reasons"])
    time.sleep(1.5)
    job = get_job(dev_backend, job_id)
    assert job["status"] == "pending"
    assert (job["attempts"], job["deferrals"]) == (0, 0)
    assert worker.metric("fondation_worker_jobs_claimed_total") == 0
    jobs_dir = Path(worker.env["TEMP_DIR"], "jobs")
    assert not jobs_dir.exists() or list(jobs_dir.iterdir()) == []


def test_auth_failure(
    dev_backend: DevBackend,
    start_worker: Any,
    repos: dict[str, str],
    tmp_path: Path,
    fake_claude_log: Path,
) -> None:
    mode_file = tmp_path / "mode"
    mode_file.write_text("success")
    worker = start_worker(dev_backend, FAKE_CLAUDE_MODE_FILE=str(mode_file), AUTH_RECHECK_MS="1500")
    # The start-up probe passes; the login then expires while the worker runs.
    wait_until(lambda: worker.get("/readyz").status_code == 200, 30)
    mode_file.write_text("auth_error")
    job_id = enqueue(dev_backend, repos["public"])
    wait_until(lambda: get_job(dev_backend, job_id).get("lastErrorKind") == "auth", 30)
    job = get_job(dev_backend, job_id)
    assert job["status"] == "pending"
    assert job["attempts"] == 0  # no attempt consumed
    assert "Not logged in" in job["lastError"]
    ready = worker.get("/readyz")
    assert ready.status_code == 503
    body = ready.json()
    assert body["checks"]["claude"] is False
    assert any("Claude authentication failed" in r for r in body["reasons"])
    paused = worker.wait_event("worker.paused")
    assert paused["reason"] == "auth"
    # The operator fixes the login: the periodic re-check passes and the job runs.
    mode_file.write_text("success")
    job = wait_status(dev_backend, job_id, {"completed"}, timeout=30)
    assert job["attempts"] == 1
    wait_until(lambda: worker.get("/readyz").status_code == 200, 10)


def test_without_claude_auth_at_start_jobs_wait_for_a_ready_worker(
    dev_backend: DevBackend,
    start_worker: Any,
    repos: dict[str, str],
    tmp_path: Path,
) -> None:
    mode_file = tmp_path / "mode"
    mode_file.write_text("auth_error")
    worker = start_worker(dev_backend, FAKE_CLAUDE_MODE_FILE=str(mode_file), AUTH_RECHECK_MS="1500")
    job_id = enqueue(dev_backend, repos["public"])
    still = worker.wait_event("worker.still_paused")
    assert still["reason"] == "auth"
    ready = worker.get("/readyz")
    assert ready.status_code == 503
    assert any("Not logged in" in r for r in ready.json()["reasons"])
    time.sleep(2)  # more than one re-check: the job is left alone, no deferral burnt
    job = get_job(dev_backend, job_id)
    assert job["status"] == "pending"
    assert job["attempts"] == 0
    assert job["deferrals"] == 0
    mode_file.write_text("success")
    job = wait_status(dev_backend, job_id, {"completed"}, timeout=30)
    assert job["attempts"] == 1
    wait_until(lambda: worker.get("/readyz").status_code == 200, 10)


def test_poison_job_ends_dead_after_max_attempts(
    dev_backend: DevBackend, start_worker: Any, repos: dict[str, str]
) -> None:
    start_worker(dev_backend, FAKE_CLAUDE_MODE="crash")
    job_id = enqueue(dev_backend, repos["public"], max_attempts=2)
    job = wait_status(dev_backend, job_id, {"dead", "completed"}, timeout=60)
    assert job["status"] == "dead"
    assert job["attempts"] == 2
    assert job["lastErrorKind"] == "transient"
    assert "RuntimeError: boom" in job["lastError"]


# --- secrets -----------------------------------------------------------------------------


def _scan_for(token: str, stop: threading.Event, found: list[str], temp_dir: Path) -> None:
    needle = token.encode()
    while not stop.is_set():
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                if needle in (proc / "cmdline").read_bytes():
                    found.append(f"cmdline of {proc.name}")
        for config in temp_dir.glob("jobs/*/repo/.git/config"):
            with contextlib.suppress(OSError):
                if needle in config.read_bytes():
                    found.append(str(config))
        time.sleep(0.01)


def test_private_repository_token_never_leaks(
    dev_backend: DevBackend,
    start_worker: Any,
    repos: dict[str, str],
    git_server: Any,
    fake_claude_log: Path,
) -> None:
    worker = start_worker(dev_backend, FAKE_CLAUDE_DELAY="0.3")
    temp_dir = Path(worker.env["TEMP_DIR"])
    stop, found = threading.Event(), []
    configs_seen: list[str] = []
    scanner = threading.Thread(target=_scan_for, args=(PRIVATE_TOKEN, stop, found, temp_dir))
    scanner.start()
    try:
        before = len(git_server.requests)
        job_id = enqueue(dev_backend, repos["private"], github_token=SecretStr(PRIVATE_TOKEN))
        wait_until(lambda: claude_events(fake_claude_log, "start", job_id), 30)
        configs_seen = [p.read_text() for p in temp_dir.glob("jobs/*/repo/.git/config")]
        job = wait_status(dev_backend, job_id, {"completed", "dead"}, timeout=60)
    finally:
        stop.set()
        scanner.join()
    assert job["status"] == "completed", job
    assert any(r.user == "x-access-token" and r.authorized for r in git_server.requests[before:])
    assert found == []
    assert configs_seen
    assert all("ghp_" not in c and "@" not in c for c in configs_seen)
    worker.stop()
    logs = worker.log_path.read_text()
    assert PRIVATE_TOKEN not in logs
    assert PRIVATE_TOKEN not in fake_claude_log.read_text()
    assert PRIVATE_TOKEN not in dev_backend.log_tail()
    assert TEST_WORKER_TOKEN not in logs


def test_repository_hooks_and_mcp_servers_are_disabled(
    dev_backend: DevBackend, start_worker: Any, repos: dict[str, str], fake_claude_log: Path
) -> None:
    """What this proves: the worker passes --setting-sources user, disableAllHooks and
    --strict-mcp-config to every step, and the fake CLI, which emulates the real one's
    documented behaviour (hooks and MCP run unless those flags stop them), ran none. The
    real CLI is checked in test_real_claude.py when its binary is available."""
    for marker in ("/tmp/MARKER_HOOK_fw", "/tmp/MARKER_MCP_fw"):
        Path(marker).unlink(missing_ok=True)
    start_worker(dev_backend)
    job_id = enqueue(dev_backend, repos["hooks"])
    assert wait_status(dev_backend, job_id, {"completed", "dead"}, 60)["status"] == "completed"
    starts = claude_events(fake_claude_log, "start", job_id)
    assert len(starts) == 5
    for start in starts:
        argv = start["argv"]
        assert argv[argv.index("--setting-sources") + 1] == "user"
        settings = json.loads(argv[argv.index("--settings") + 1])
        assert settings["disableAllHooks"] is True
        assert settings["permissions"]["blockReadsOutsideWorkingDirectories"] is True
        assert "--strict-mcp-config" in argv
        assert "--mcp-config" not in argv
        assert argv[argv.index("--tools") + 1] == "Read,Grep,Glob,Write"
    assert not claude_events(fake_claude_log, "hook")
    assert not claude_events(fake_claude_log, "mcp")
    assert not Path("/tmp/MARKER_HOOK_fw").exists()
    assert not Path("/tmp/MARKER_MCP_fw").exists()


# --- CLI -----------------------------------------------------------------------------------


def cli(
    args: list[str], env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(WORKER_BIN), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def cli_env(backend: DevBackend, tmp_path: Path, git_server: Any, **extra: str) -> dict[str, str]:
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "CONVEX_URL": backend.url,
        "WORKER_TOKEN": TEST_WORKER_TOKEN,
        "OPERATOR_TOKEN": TEST_OPERATOR_TOKEN,  # enqueue and the other operator commands
        "TEMP_DIR": str(tmp_path / "cli-tmp"),
        "ALLOWED_REPO_HOSTS": f"github.com,{git_server.host}",
        "CLAUDE_BIN": str(FAKE_CLAUDE),
        "CLAUDE_ENV_PASSTHROUGH": "FAKE_CLAUDE_MODE",
        "MIN_FREE_DISK_MB": "1",
        **extra,
    }


def test_check_says_claude_is_not_logged_in(
    dev_backend: DevBackend, tmp_path: Path, git_server: Any
) -> None:
    proc = cli(["check"], cli_env(dev_backend, tmp_path, git_server, FAKE_CLAUDE_MODE="auth_error"))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert any(line.startswith("ok    convex: reachable, token accepted") for line in lines)
    assert any(line.startswith("ok    disk:") for line in lines)
    assert any(line.startswith("ok    git: git version") for line in lines)
    assert any(line.startswith("FAIL  claude: Claude is not logged in") for line in lines)
    assert "Traceback" not in proc.stdout + proc.stderr


def test_check_only_runs_and_decides_on_the_checks_asked_for(
    dev_backend: DevBackend, tmp_path: Path, git_server: Any
) -> None:
    """What the runbook plays rely on: `--only` picks the checks, the exit code is theirs."""
    env = cli_env(dev_backend, tmp_path, git_server, FAKE_CLAUDE_MODE="auth_error")
    proc = cli(["check", "--only", "claude"], env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    names = [line.split()[1] for line in proc.stdout.splitlines()]
    assert names == ["config:", "claude:"], proc.stdout
    proc = cli(["check", "--only", "convex", "--only", "git"], env)
    assert proc.returncode == 0, proc.stdout + proc.stderr  # Claude's failure is not asked about
    names = [line.split()[1] for line in proc.stdout.splitlines()]
    assert names == ["config:", "convex:", "git:"], proc.stdout


def test_check_passes_when_everything_is_fine(
    dev_backend: DevBackend, tmp_path: Path, git_server: Any
) -> None:
    proc = cli(["check"], cli_env(dev_backend, tmp_path, git_server))
    assert proc.returncode == 0, proc.stdout
    assert "FAIL" not in proc.stdout


def test_check_reports_a_wrong_token_and_an_unreachable_convex(
    dev_backend: DevBackend, tmp_path: Path, git_server: Any
) -> None:
    env = cli_env(dev_backend, tmp_path, git_server, WORKER_TOKEN="a-wrong-but-long-token")
    proc = cli(["check"], env)
    assert proc.returncode == 1
    assert "FAIL  convex: reachable, but the worker token was refused" in proc.stdout
    env = cli_env(dev_backend, tmp_path, git_server, CONVEX_URL="http://127.0.0.1:9")
    proc = cli(["check"], env)
    assert proc.returncode == 1
    assert "FAIL  convex: not reachable" in proc.stdout


def test_enqueue_wait_follows_progress_and_status_prints_metrics(
    dev_backend: DevBackend,
    start_worker: Any,
    repos: dict[str, str],
    tmp_path: Path,
    git_server: Any,
) -> None:
    start_worker(dev_backend, FAKE_CLAUDE_DELAY="0.4")
    env = cli_env(dev_backend, tmp_path, git_server)
    proc = cli(["enqueue", repos["public"], "--branch", "main", "--wait", "--poll", "0.2"], env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "queued" in proc.stdout
    assert "step 2 of 5" in proc.stdout or "step 3 of 5" in proc.stdout
    assert "completed: 7 documents" in proc.stdout
    proc = cli(["status", "--json"], env)
    assert proc.returncode == 0
    assert json.loads(proc.stdout)["counts"]["completed"] == 1
    proc = cli(["status"], env)
    assert proc.returncode == 0
    completed = [line.split() for line in proc.stdout.splitlines() if line.startswith("completed")]
    assert completed[0] == ["completed", "1"], proc.stdout  # the queue now
    assert completed[1] == ["completed", "1", "1"], proc.stdout  # the last hour and day


def test_enqueue_refuses_a_bad_url_and_exits_with_the_job_outcome(
    dev_backend: DevBackend, start_worker: Any, tmp_path: Path, git_server: Any
) -> None:
    env = cli_env(dev_backend, tmp_path, git_server)
    proc = cli(["enqueue", "http://github.com/a/b"], env)
    assert proc.returncode == 2
    assert "INVALID_ARGUMENT" in proc.stderr or "https" in proc.stderr
    start_worker(dev_backend)
    proc = cli(["enqueue", git_server.url("it", "missing"), "--wait", "--poll", "0.2"], env)
    assert proc.returncode == 1
    assert "dead (repository_not_found" in proc.stdout


def test_healthcheck_command(dev_backend: DevBackend, start_worker: Any) -> None:
    worker = start_worker(dev_backend)
    ok = subprocess.run(
        [str(WORKER_BIN), "healthcheck"],
        env={"PATH": os.environ["PATH"], "HEALTH_BIND": worker.env["HEALTH_BIND"]},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert ok.returncode == 0, ok.stdout
    worker.stop()
    down = subprocess.run(
        [str(WORKER_BIN), "healthcheck"],
        env={"PATH": os.environ["PATH"], "HEALTH_BIND": worker.env["HEALTH_BIND"]},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert down.returncode == 1


def test_idle_worker_is_cheap_and_healthy(dev_backend: DevBackend, start_worker: Any) -> None:
    # The polling path (the wake subscription off: subscribed, it polls every 6 minutes).
    worker = start_worker(
        dev_backend, WAKEUP="false", POLL_INTERVAL_MS="100", IDLE_POLL_MAX_MS="400"
    )
    t0 = time.monotonic()
    # It keeps polling while idle (waited for, however slow the machine)...
    wait_until(lambda: worker.metric(CLAIM_CALLS) >= 6, 30)
    calls = worker.metric(CLAIM_CALLS)
    elapsed = time.monotonic() - t0
    # ...but backs off: 100, 200, 400, 400, ... ms (jitter only shortens, by at most half),
    # so at most 3 + elapsed / 0.2 calls, where a fixed 100 ms poll would make elapsed / 0.1.
    # A slow machine only lowers the count, so the bound holds at any load.
    assert calls <= 3 + elapsed / 0.2, (calls, elapsed)
    assert worker.get("/healthz").status_code == 200
    assert worker.get("/readyz").status_code == 200
    assert httpx.get(f"http://127.0.0.1:{worker.health_port}/metrics").status_code == 200


def test_a_read_only_mounted_login_is_copied_into_the_config_dir(
    dev_backend: DevBackend, start_worker: Any, tmp_path: Path
) -> None:
    source = tmp_path / "mounted-login"
    source.mkdir()
    (source / ".credentials.json").write_text(
        '{"claudeAiOauth": {"accessToken": "sk-ant-oat01-' + "z" * 30 + '"}}'
    )
    source.chmod(0o500)
    worker = start_worker(dev_backend, CLAUDE_CREDENTIALS_SOURCE=str(source))
    staged = worker.wait_event("claude.credentials_staged")
    assert staged["login"] is True
    assert staged["copied"] == [".credentials.json"]
    copy = Path(worker.env["CLAUDE_CONFIG_DIR"]) / ".credentials.json"
    assert copy.read_text() == (source / ".credentials.json").read_text()
    assert "sk-ant-oat01" not in worker.log_path.read_text()
