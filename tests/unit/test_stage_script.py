"""scripts/stage.sh, the stage timer of `make test`: make stops at the first failed stage, so
the failed stage itself prints the summary table (before, a failed run printed none)."""

from __future__ import annotations

import subprocess
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


def test_a_failed_parallel_stage_prints_the_summary_with_both_stages(tmp_path: Path) -> None:
    stage(tmp_path, "reset")
    failed = stage(tmp_path, "parallel", "molecule", "exit 0", "unit", "exit 1")
    assert failed.returncode == 1
    table = failed.stdout.split("make test summary", 1)[1]
    rows = {line.split()[0]: line.split()[2] for line in table.splitlines()[2:4]}
    assert rows == {"molecule": "0", "unit": "1"}


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


def test_a_lane_stops_where_a_stage_it_awaits_failed_and_the_summary_shows_it(
    tmp_path: Path,
) -> None:
    stage(tmp_path, "reset")
    run = f"bash {STAGE} run"
    failed = stage(
        tmp_path,
        "lanes",
        f"{run} build bash -c 'exit 4'",
        f"{run} lint true && bash {STAGE} await build && {run} deploy true",
    )
    assert failed.returncode == 1
    assert "stage build failed (exit 4)" in failed.stdout
    table = failed.stdout.split("make test summary", 1)[1]
    rows = {line.split()[0]: line.split()[2] for line in table.splitlines()[2:4]}
    assert rows == {"build": "4", "lint": "0"}
