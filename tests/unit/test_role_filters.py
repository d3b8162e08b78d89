"""The fondation_worker role's filters (plugins/filter/fondation_worker_role.py): what the
status play reports, how a play runs the worker CLI, and the verdict lines of
``fondation-worker check``, checked as data and strings, as Kamal tests its commands. Until
these moved out of Jinja, only the Molecule runbooks scenario saw them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from plugins.filter import fondation_worker_role as filters
from tests.support import REPO_ROOT

IMAGE = "sha256:" + "0123456789ab" + "c" * 52
OTHER = "sha256:" + "fedcba987654" + "d" * 52
ROLE = REPO_ROOT / "roles" / "fondation_worker"


def probe(status: int, body: dict[str, Any] | None = None, msg: str = "") -> dict[str, Any]:
    """A registered ``ansible.builtin.uri`` result (``status`` -1 when nothing answered)."""
    result: dict[str, Any] = {"status": status, "msg": msg or "OK (unknown bytes)"}
    if body is not None:
        result["json"] = body
    return result


# What /readyz names as the defence layers in force (health.py, claude_runner.defense_layers).
LAYERS = {"cli": "on", "landlock": "on (ABI 4)", "documents": "on"}


def healthz(**extra: Any) -> dict[str, Any]:
    return {"status": "ok", "version": "0.1.0", "claude_cli_version": "2.9.9", **extra}


# --- the worker CLI's argv ---------------------------------------------------------------


def test_the_cli_runs_inside_the_first_running_replica() -> None:
    run = filters.cli([2, 3], IMAGE, operator_token=True, uid=10001, gid=10001, env_file="/e")
    assert run == {
        "argv": [
            "docker",
            "exec",
            "-e",
            "OPERATOR_TOKEN",
            "fondation-worker-2",
            "fondation-worker",
        ],
        "where": "inside fondation-worker-2",
    }
    plain = filters.cli([1], IMAGE, operator_token=False, uid=1, gid=1, env_file="/e")
    assert plain["argv"] == ["docker", "exec", "fondation-worker-1", "fondation-worker"]


def test_without_a_running_replica_the_cli_runs_in_a_confined_throwaway_container() -> None:
    run = filters.cli(
        [],
        IMAGE,
        operator_token=True,
        uid=10001,
        gid=10002,
        env_file="/etc/fondation-worker/worker.env",
        extra_volumes=["/opt/ca.pem:/run/ca.pem:ro"],
    )
    assert " ".join(run["argv"]) == (
        "docker run -e OPERATOR_TOKEN --rm --read-only --cap-drop=ALL "
        "--security-opt=no-new-privileges --user=10001:10002 "
        "--env-file=/etc/fondation-worker/worker.env --volume=/opt/ca.pem:/run/ca.pem:ro "
        f"{IMAGE} fondation-worker"
    )
    assert run["where"] == "in a throwaway container of 0123456789ab (no replica runs)"


def test_the_operator_token_never_reaches_argv_by_value() -> None:
    for running in ([], [1]):
        argv = filters.cli(running, IMAGE, operator_token=True, uid=1, gid=1, env_file="/e")["argv"]
        assert argv[argv.index("-e") + 1] == "OPERATOR_TOKEN"  # by name: docker reads the env


def test_no_replica_and_no_image_is_refused() -> None:
    with pytest.raises(ValueError, match="deploy the worker first"):
        filters.cli([], "", operator_token=False, uid=1, gid=1, env_file="/e")


# --- status rows ---------------------------------------------------------------------------


def test_a_healthy_ready_replica() -> None:
    [row] = filters.status_rows(
        [1],
        [["1", "loaded", "active", "running"]],
        [["1", "running", IMAGE, "0.1.0", "2.9.9"]],
        [probe(200, healthz(current_job="job-a"))],
        [probe(200, {"ready": True, "starting": False, "reasons": [], "current_job": "job-a"})],
        IMAGE,
    )
    assert row == {
        "replica": 1,
        "unit": "active/running",
        "container": "running",
        "image": "0123456789ab",
        "current_image": True,
        "healthy": True,
        "health": "ok",
        "ready": True,
        "starting": False,
        "reasons": [],
        "current_job": "job-a",
        "version": "0.1.0",
        "claude_cli": "2.9.9",
        "layers": {},
    }


def test_a_replica_running_its_start_up_checks_is_starting_not_failed() -> None:
    reasons = ["claude: checking Claude authentication at start"]
    [row] = filters.status_rows(
        [1],
        [["1", "loaded", "active", "running"]],
        [["1", "running", IMAGE, "0.1.0", "2.9.9"]],
        [probe(200, healthz(current_job=None))],
        [probe(503, {"ready": False, "starting": True, "reasons": reasons})],
        IMAGE,
    )
    assert (row["healthy"], row["ready"], row["starting"]) == (True, False, True)
    assert row["reasons"] == reasons
    assert row["current_job"] is None  # the worker said: no job
    report = filters.status_report([row], "host-a", IMAGE)
    assert report[1].endswith(
        "health ok, starting: claude: checking Claude authentication at start, job none, "
        "version 0.1.0, Claude CLI 2.9.9, layers unknown (not reported)."
    )


def test_a_replica_that_does_not_answer_falls_back_on_the_image_labels() -> None:
    refused = "Status code was -1 and not [200, 503]: Request failed: <urlopen error [Errno 111]>"
    [row] = filters.status_rows(
        [2],
        [["2", "loaded", "activating", "auto-restart"]],
        [["2", "exited", OTHER, "0.0.9", "2.8.0"]],
        [probe(-1, msg=refused)],
        [probe(-1, msg=refused)],
        IMAGE,
    )
    assert row["unit"] == "activating/auto-restart"
    assert (row["healthy"], row["ready"], row["starting"]) == (False, False, False)
    assert row["health"] == refused
    assert row["reasons"] == [refused]
    assert row["current_job"] == "unknown"
    assert (row["version"], row["claude_cli"]) == ("0.0.9", "2.8.0")
    assert (row["image"], row["current_image"]) == ("fedcba987654", False)
    line = filters.status_report([row], "host-a", IMAGE)[1]
    assert "(image fedcba987654, NOT the one image.env names)" in line
    assert f"NOT ready: {refused}" in line


def test_an_older_worker_that_does_not_report_its_job_or_cli() -> None:
    [row] = filters.status_rows(
        [1],
        [["1", "loaded", "active", "running"]],
        [["1", "running", IMAGE, "0.0.8", ""]],  # no claude-cli label on old images
        [probe(503, {"status": "stale"})],
        [probe(503, {"ready": False, "reasons": ["loop: stale"]})],
        IMAGE,
    )
    assert row["health"] == "stale"
    assert row["current_job"] == "unknown (not reported)"
    assert (row["version"], row["claude_cli"]) == ("0.0.8", "unknown")


def test_a_replica_systemd_knows_without_a_container_and_a_container_without_unit() -> None:
    rows = filters.status_rows(
        [1, 3],
        [["1", "loaded", "inactive", "dead"]],
        [["3", "running", IMAGE, "0.1.0", "2.9.9"]],
        [probe(-1, msg="refused"), probe(200, healthz())],
        [probe(-1, msg="refused"), probe(200, {"ready": True, "reasons": []})],
        IMAGE,
    )
    assert [(r["replica"], r["unit"], r["container"]) for r in rows] == [
        (1, "inactive/dead", "absent"),
        (3, "inactive/dead", "running"),
    ]
    assert rows[0]["image"] == ""
    assert rows[1]["current_job"] == "unknown (not reported)"


def test_the_image_is_its_short_id_never_a_control_character() -> None:
    # Jinja once turned the backreference into U+0001 (issue 19).
    assert filters.short_id(IMAGE) == "0123456789ab"
    assert re.fullmatch(r"[0-9a-f]{12}", filters.short_id(OTHER))
    assert filters.short_id("fondation-worker:latest") == "fondation-worker:latest"
    assert filters.short_id("") == ""


def test_one_probe_of_each_kind_per_replica() -> None:
    with pytest.raises(ValueError, match="one /healthz and one /readyz"):
        filters.status_rows([1, 2], [], [], [probe(200)], [probe(200)], IMAGE)


def test_the_status_report() -> None:
    rows = filters.status_rows(
        [1, 2],
        [["1", "loaded", "active", "running"], ["2", "loaded", "active", "running"]],
        [["1", "running", IMAGE, "0.1.0", "2.9.9"], ["2", "running", IMAGE, "0.1.0", "2.9.9"]],
        [probe(200, healthz(current_job="j1")), probe(200, healthz(current_job=None))],
        [
            probe(200, {"ready": True, "reasons": [], "layers": LAYERS}),
            probe(503, {"reasons": ["disk: full"]}),
        ],
        IMAGE,
    )
    assert rows[0]["layers"] == LAYERS
    assert filters.status_report(rows, "host-a", IMAGE) == [
        "host-a: 2 replica(s) found (2 healthy, 1 ready); image.env points at 0123456789ab.",
        "[1] unit active/running, container running (image 0123456789ab), health ok, ready, "
        "job j1, version 0.1.0, Claude CLI 2.9.9, layers cli on, landlock on (ABI 4), "
        "documents on.",
        "[2] unit active/running, container running (image 0123456789ab), health ok, "
        "NOT ready: disk: full, job none, version 0.1.0, Claude CLI 2.9.9, "
        "layers unknown (not reported).",
    ]
    assert filters.status_report([], "host-b", "") == [
        "host-b: 0 replica(s) found (0 healthy, 0 ready); image.env points at nothing."
    ]


# --- fondation-worker check's verdict lines ---------------------------------------------------


def check_result(replica: int, rc: int, stdout: str, stderr: str = "") -> dict[str, Any]:
    """A registered ``command`` result of a loop over replicas (loop_var as the role names it)."""
    return {
        "rc": rc,
        "stdout": stdout,
        "stderr": stderr,
        "ansible_loop_var": "_fondation_worker_replica",
        "_fondation_worker_replica": replica,
    }


def test_the_claude_line_of_each_replica() -> None:
    results = [
        check_result(1, 0, "ok    config: valid\nok    claude: a tiny real call succeeded\n"),
        check_result(2, 1, "ok    config: valid\nFAIL  claude: Claude is not logged in. Set ...\n"),
        check_result(3, 1, "", "Error response from daemon: container is not running"),
        {"skipped": True, "ansible_loop_var": "r", "r": 4},
    ]
    assert filters.check_lines(results, "claude") == {
        1: "ok    claude: a tiny real call succeeded",
        2: "FAIL  claude: Claude is not logged in. Set ...",
        3: "no claude line in the output of fondation-worker check "
        "(Error response from daemon: container is not running)",
        4: "not checked (skipped)",
    }


# --- the filters and the role agree ---------------------------------------------------------


def _role_text() -> str:
    paths = [*ROLE.rglob("*.yml"), *(REPO_ROOT / "playbooks").glob("*.yml")]
    return "\n".join(Path(p).read_text(encoding="utf-8") for p in paths)


def test_every_filter_is_used_by_the_role_and_every_one_used_exists() -> None:
    defined = set(filters.FilterModule().filters())
    used = set(re.findall(r"\|\s*(fondation_worker_[a-z_]+)", _role_text()))
    assert used == defined


def test_ansible_is_pointed_at_the_filters() -> None:
    cfg = (REPO_ROOT / "ansible.cfg").read_text(encoding="utf-8")
    assert re.search(r"(?m)^filter_plugins = plugins/filter$", cfg)
    molecule = (REPO_ROOT / ".config" / "molecule" / "config.yml").read_text(encoding="utf-8")
    assert "filter_plugins: ${MOLECULE_PROJECT_DIRECTORY}/plugins/filter" in molecule
