"""scripts/first-deploy-check.sh, the `deploy` stage of `make test` (a newcomer's `make
deploy`, twice, then `make clean-local`): it passes only when every step did what README
promises, and fails, naming the step, on each way the path can go wrong.

The machine is a double here: a fake `make` prints what `make deploy` prints and starts or
stops two sleeping "daemons" as the dev backend and the stand-ins would, a fake `docker`
and `ss` report the target and the listening ports, and a small HTTP server answers the dev
backend's queries. The real path runs in the `deploy` stage itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "first-deploy-check.sh"
JOB = "0000000000000000000000010000jobs"


def deploy_output(changed: int = 36, job_line: str = f"job {JOB} completed: 7 documents") -> str:
    return (
        "PLAY RECAP *********************************************************************\n"
        f"fondation-local            : ok=88   changed={changed}   unreachable=0    failed=0"
        "    skipped=12   rescued=0    ignored=0\n"
        f"==> fondation-worker enqueue https://172.17.0.1:3211/x.git --wait\n{job_line}\n"
    )


# The fake `make`: `deploy` prints the next canned output and starts the two daemons (each a
# `sleep` in a session of its own, its pid in build/<name>/pid) and the target; `clean-local`
# stops them, unless the case says what it leaves behind.
FAKE_MAKE = """\
import json, os, pathlib, signal, subprocess, sys
here = pathlib.Path(sys.argv[0]).resolve().parent.parent
case = json.loads((here / "case.json").read_text())
root = pathlib.Path.cwd()
target = here / "target"
with open(here / "make.calls", "a") as calls:
    calls.write(" ".join(sys.argv[1:]) + "\\n")
if sys.argv[-1] == "deploy":
    count = len((here / "make.calls").read_text().split("deploy\\n")) - 1
    out = case["deploys"][min(count, len(case["deploys"])) - 1]
    target.mkdir(exist_ok=True)
    for name in ("devbackend", "demo-standins"):
        pid_file = root / "build" / name / "pid"
        pid_file.parent.mkdir(parents=True, exist_ok=True)
        if not pid_file.exists():
            # A leader and a child in a session of their own, as tsx and its node are.
            daemon = subprocess.Popen(
                ["bash", "-c", "sleep 300 & exec sleep 300"], start_new_session=True
            )
            pid_file.write_text(f"{daemon.pid}\\n")
            with open(here / "daemons", "a") as daemons:
                daemons.write(f"{daemon.pid}\\n")
    sys.stdout.write(out["stdout"])
    sys.exit(out.get("rc", 0))
if sys.argv[-1] == "clean-local":
    leave = case.get("clean_leaves", [])
    if "container" not in leave and target.exists():
        target.rmdir()
    for name in ("devbackend", "demo-standins"):
        pid_file = root / "build" / name / "pid"
        if pid_file.exists():
            pid = int(pid_file.read_text())
            if "process" in leave:
                continue
            if "child" in leave:  # the leader only: its child lives on in the group
                os.kill(pid, signal.SIGTERM)
            else:
                os.killpg(pid, signal.SIGTERM)
            pid_file.unlink()
    sys.exit(0)
sys.exit("unexpected make call: " + " ".join(sys.argv[1:]))
"""

# The fake `docker`: the target and its volume exist while the fake target does.
FAKE_DOCKER = """\
import pathlib, sys
here = pathlib.Path(sys.argv[0]).resolve().parent.parent
if sys.argv[1:3] in (["container", "inspect"], ["volume", "inspect"]):
    sys.exit(0 if (here / "target").exists() else 1)
sys.exit("unexpected docker call: " + " ".join(sys.argv[1:]))
"""

# The fake `ss -Hltn`: listeners from ss.out, the demo's ports while the target runs.
FAKE_SS = """\
import json, pathlib, sys
here = pathlib.Path(sys.argv[0]).resolve().parent.parent
case = json.loads((here / "case.json").read_text())
lines = list(case.get("listening", []))
if (here / "target").exists():
    lines.append("LISTEN 0 511 172.17.0.1:3210 0.0.0.0:*")
print("\\n".join(lines))
"""


# The on-the-host docs tests as the clone holds them: a stand-in module that passes when the
# stage names the target, or fails or skips as the case says (FAKE_DOCS_TESTS[case]).
ON_THE_HOST = Path("tests") / "docs" / "test_docs_commands_on_the_host.py"
FAKE_DOCS_TESTS = {
    "pass": """\
import os


def test_the_target_is_named() -> None:
    assert os.environ["FONDATION_DOCS_TARGET"] == "fondation-local"
""",
    "fail": """\
def test_a_documented_command() -> None:
    assert False, "docker exec fondation-worker-1 fondation-worker check: exit 1"
""",
    "skip": """\
import pytest


@pytest.mark.skip(reason="no target")
def test_a_documented_command() -> None:
    pass
""",
}


class Backend(BaseHTTPRequestHandler):
    """What the dev backend answers: jobs:get and docs:listByJob for JOB."""

    jobs: ClassVar[dict[str, Any]] = {}
    docs: ClassVar[int] = 7

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if body["path"] == "jobs:get":
            value: Any = self.jobs.get(body["args"]["jobId"])
        else:
            value = [{"slug": f"doc-{i}"} for i in range(self.docs)]
        reply = json.dumps({"status": "success", "value": value}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def backend() -> Iterator[tuple[str, type[Backend]]]:
    handler = type("CaseBackend", (Backend,), {"jobs": {JOB: {"status": "completed"}}, "docs": 7})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()


@pytest.fixture
def clone(tmp_path: Path, backend: tuple[str, type[Backend]]) -> Path:
    """A clone-like root: the script, a devbackend.sh that only answers `url`, a venv python,
    and the fakes in bin/ ahead of the real tools."""
    root = tmp_path / "clone"
    (root / "scripts").mkdir(parents=True)
    shutil.copy(SCRIPT, root / "scripts" / SCRIPT.name)
    (root / "scripts" / "devbackend.sh").write_text(f"#!/bin/sh\necho {backend[0]}\n")
    (root / "scripts" / "devbackend.sh").chmod(0o755)
    (root / ".venv" / "bin").mkdir(parents=True)
    (root / ".venv" / "bin" / "python").symlink_to(sys.executable)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, source in (("make", FAKE_MAKE), ("docker", FAKE_DOCKER), ("ss", FAKE_SS)):
        (bin_dir / name).write_text(f"#!{sys.executable}\n{source}")
        (bin_dir / name).chmod(0o755)
    return root


def run(clone: Path, case: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    (clone.parent / "case.json").write_text(json.dumps(case))
    docs_tests = clone / ON_THE_HOST
    docs_tests.parent.mkdir(parents=True, exist_ok=True)
    docs_tests.write_text(FAKE_DOCS_TESTS[case.get("docs", "pass")])
    try:
        return subprocess.run(
            ["bash", str(clone / "scripts" / SCRIPT.name)],
            cwd=clone,
            env={
                "PATH": f"{clone.parent / 'bin'}:{os.environ['PATH']}",
                "STAGE_LOG_DIR": str(clone.parent / "logs"),
                "HOME": str(clone.parent),
            },
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:  # whatever the case left running
        daemons = clone.parent / "daemons"
        for pid in daemons.read_text().split() if daemons.exists() else []:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(pid), signal.SIGKILL)


def make_calls(clone: Path) -> list[str]:
    calls = clone.parent / "make.calls"
    return calls.read_text().splitlines() if calls.exists() else []


def failure(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 1, done.stdout + done.stderr
    return done.stderr.split("FAILED: ", 1)[1]


TWO_DEPLOYS = {"deploys": [{"stdout": deploy_output(36)}, {"stdout": deploy_output(0)}]}


def test_the_newcomers_path_passes(clone: Path) -> None:
    done = run(clone, TWO_DEPLOYS)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "passed: two deploys" in done.stdout
    assert make_calls(clone) == [
        "--no-print-directory deploy",
        "--no-print-directory deploy",
        "--no-print-directory clean-local",
    ]
    # Each make's whole output is kept for the reader of a failure.
    assert (clone.parent / "logs" / "deploy" / "first.log").read_text() == deploy_output(36)
    # The documented host commands ran on the target between the two deploys.
    assert "the documented commands on fondation-local: 1 passed" in done.stdout
    docs_log = (clone.parent / "logs" / "deploy" / "docs-on-the-host.log").read_text()
    assert "1 passed" in docs_log


def test_a_documented_host_command_that_fails_fails_the_stage(clone: Path) -> None:
    done = run(clone, {**TWO_DEPLOYS, "docs": "fail"})
    assert failure(done).startswith("the documented host commands failed (exit 1)")
    assert "fondation-worker check: exit 1" in done.stderr
    # No second deploy; the failure cleaned up.
    assert make_calls(clone) == [
        "--no-print-directory deploy",
        "--no-print-directory clean-local",
    ]


def test_documented_host_commands_that_skip_fail_the_stage(clone: Path) -> None:
    done = run(clone, {**TWO_DEPLOYS, "docs": "skip"})
    assert failure(done).startswith("the documented host commands did not all run: ")
    assert "skipped" in done.stderr


def test_a_demo_already_running_is_not_a_clean_start(clone: Path) -> None:
    done = run(clone, {**TWO_DEPLOYS, "listening": ["LISTEN 0 511 127.0.0.1:3211 0.0.0.0:*"]})
    assert failure(done).startswith("not a clean start")
    assert "listening 127.0.0.1:3211" in done.stderr
    assert make_calls(clone) == []  # nothing was started, nothing cleaned


def test_a_demo_job_that_did_not_complete_fails_and_cleans_up(clone: Path) -> None:
    dead = deploy_output(36, f"job {JOB} dead (transient: git clone failed: Failed to connect)")
    done = run(clone, {"deploys": [{"stdout": dead}]})
    assert failure(done).startswith("first: the demo job did not complete")
    assert "git clone failed" in done.stderr
    assert make_calls(clone)[-1] == "--no-print-directory clean-local"


def test_a_failed_make_deploy_fails_with_its_last_lines(clone: Path) -> None:
    done = run(clone, {"deploys": [{"stdout": "fatal: the play failed\n", "rc": 2}]})
    assert failure(done).startswith("first: make deploy exited 2")
    assert "fatal: the play failed" in done.stderr


def test_the_documents_must_be_in_the_dev_backend(
    clone: Path, backend: tuple[str, type[Backend]]
) -> None:
    backend[1].docs = 3
    done = run(clone, TWO_DEPLOYS)
    assert "the demo printed 7 documents, the dev backend lists 3" in failure(done)


def test_the_job_must_be_completed_in_the_dev_backend(
    clone: Path, backend: tuple[str, type[Backend]]
) -> None:
    backend[1].jobs = {JOB: {"status": "running"}}
    done = run(clone, TWO_DEPLOYS)
    assert f"the dev backend has job {JOB}" in failure(done)


def test_a_second_deploy_that_changes_something_fails(clone: Path) -> None:
    done = run(clone, {"deploys": [{"stdout": deploy_output(36)}, {"stdout": deploy_output(2)}]})
    assert "the second make deploy changed 2 things" in failure(done)


@pytest.mark.parametrize(
    ("left", "named"),
    [
        ("container", "container fondation-local"),
        ("process", "process "),
        ("child", "left processes of the daemon group"),
    ],
)
def test_whatever_clean_local_leaves_behind_is_named(clone: Path, left: str, named: str) -> None:
    done = run(clone, {**TWO_DEPLOYS, "clean_leaves": [left]})
    assert named in failure(done)
