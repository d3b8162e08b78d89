"""scripts/stage.sh, the stage timer of `make test`: make stops at the first failed stage, so
the failed stage itself prints the summary table (before, a failed run printed none)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

STAGE = Path(__file__).resolve().parents[2] / "scripts" / "stage.sh"


def stage(logs: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(STAGE), *args],
        env={"PATH": "/usr/bin:/bin", "STAGE_LOG_DIR": str(logs)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_a_passing_stage_prints_no_summary(tmp_path: Path) -> None:
    stage(tmp_path, "reset")
    done = stage(tmp_path, "run", "lint", "true")
    assert done.returncode == 0
    assert "make test summary" not in done.stdout


def test_a_failed_stage_keeps_its_exit_status_and_prints_the_summary(tmp_path: Path) -> None:
    stage(tmp_path, "reset")
    stage(tmp_path, "run", "lint", "true")
    failed = stage(tmp_path, "run", "image", "bash", "-c", "exit 3")
    assert failed.returncode == 3
    table = failed.stdout.split("make test summary", 1)[1]
    rows = [line.split()[0:3:2] for line in table.splitlines()[2:4]]
    assert rows == [["lint", "0"], ["image", "3"]]


def test_each_stage_reports_the_cpu_its_processes_used(tmp_path: Path) -> None:
    stage(tmp_path, "reset")
    stage(tmp_path, "run", "busy", "bash", "-c", "for i in $(seq 1 200000); do :; done")
    stage(tmp_path, "run", "idle", "sleep", "0.5")
    table = stage(tmp_path, "summary").stdout.split("make test summary", 1)[1]
    cpu = {line.split()[0]: float(line.split()[3]) for line in table.splitlines()[2:4]}
    assert cpu["busy"] > 0.1, table
    assert cpu["idle"] < 0.1, table


def test_the_first_failed_lane_stops_the_others_at_once(tmp_path: Path) -> None:
    stage(tmp_path, "reset")
    run = f"bash {STAGE} run"
    started = time.monotonic()
    failed = stage(
        tmp_path,
        "lanes",
        f"{run} molecule sleep 25 && {run} after true",
        f"{run} lint bash -c 'sleep 0.5; exit 1' && {run} deploy true",
    )
    assert failed.returncode == 1
    assert time.monotonic() - started < 15, "the other lane ran on"
    assert "lane 2 failed: stopping the other lanes" in failed.stdout
    table = failed.stdout.split("make test summary", 1)[1]
    assert [line.split()[0:3:2] for line in table.splitlines()[2:3]] == [["lint", "1"]]
    assert not (tmp_path / "after.done").exists()
    # What the failed lane never ran ends as failed, for anything that awaits it.
    assert (tmp_path / "deploy.done").read_text().strip() == "125"


def test_lanes_run_side_by_side_and_a_lane_waits_for_a_stage_of_another(tmp_path: Path) -> None:
    stage(tmp_path, "reset")
    run = f"bash {STAGE} run"
    marker = tmp_path / "built"
    done = stage(
        tmp_path,
        "lanes",
        f"{run} build bash -c 'sleep 1; touch {marker}' && {run} slow-suite true",
        f"{run} lint true && bash {STAGE} await build && {run} deploy test -e {marker}",
    )
    assert done.returncode == 0, done.stdout
    rows = {
        line.split()[0]: line.split()[2]
        for line in (tmp_path / "stages.tsv").read_text().splitlines()
    }
    assert rows == {"build": "0", "slow-suite": "0", "lint": "0", "deploy": "0"}
    assert "make test summary" not in done.stdout


def test_await_ends_with_the_awaited_stages_exit_status(tmp_path: Path) -> None:
    stage(tmp_path, "reset")
    stage(tmp_path, "run", "build", "bash", "-c", "exit 4")
    awaited = stage(tmp_path, "await", "build")
    assert awaited.returncode == 4
    assert "stage build failed (exit 4): what needs it does not run" in awaited.stdout
    stage(tmp_path, "run", "image", "true")
    assert stage(tmp_path, "await", "image").returncode == 0
