"""Hostile repositories and hostile output, each run end to end: the dev backend, a real
worker process, the loopback HTTPS git server and the fake claude.

Every case ends in a clean success or a clear job error, leaves no marker file, reads
nothing outside the workspace (checked with inotify on the files a hostile repository or
output points at, and by the stored documents) and leaves the worker healthy: /healthz
answers 200, the next job completes and TEMP_DIR/jobs is empty.

Covered elsewhere, not repeated here: repository ``.claude/settings.json`` hooks and
``.mcp.json`` servers that would write marker files
(tests/worker/test_integration.py::test_repository_hooks_and_mcp_servers_are_disabled, and
test_real_claude.py with the real CLI); symlinks committed to a repository are checked out as
plain files (tests/worker/test_git_clone.py); a docs file over the upload cap and a symlink to
/etc/passwd in the output (tests/worker/test_job_runner_local.py).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from open_watch import OpenWatch

from tests.support import (
    SAMPLE_FILES,
    TEST_OPERATOR_TOKEN,
    DevBackend,
    WorkerProcess,
    enqueue,
    wait_status,
    wait_until,
)

pytestmark = pytest.mark.integration

ENDED = {"completed", "dead", "canceled"}
PASSTHROUGH = "FAKE_CLAUDE_MODE_FILE,FAKE_CLAUDE_LOG,FAKE_CLAUDE_OUTSIDE,FAKE_CLAUDE_SINK"
SECRET = "CANARY-secret-outside-the-workspace-7f3a"
HARD = "CANARY-hard-linked-outside-the-workspace-91c2"


@pytest.fixture(scope="module")
def outside(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Files outside every workspace that hostile input points at."""
    root = tmp_path_factory.mktemp("outside")
    (root / "secret.md").write_text(f"# Secret\n\n{SECRET}\n")
    (root / "hard.md").write_text(f"# Hard\n\n{HARD}\n")
    return root


@pytest.fixture(scope="module")
def repos(git_server: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    many = {f"src/d{i // 100:03d}/f{i:05d}.py": f"VALUE = {i}\n" for i in range(10_000)}
    odd = {
        os.fsdecode(b"caf\xe9.py"): "print('latin-1 name')\n",
        os.fsdecode(b"\xff\xfe/readme-\x80.md"): "# not UTF-8 at all\n",
        os.fsdecode(b"ok-\xc3\x28.txt"): "an invalid UTF-8 sequence\n",
        "ünïcödé/ok.md": "# valid UTF-8\n",
    }
    return {
        "public": git_server.add_repo("hostile", "public", SAMPLE_FILES),
        "many": git_server.add_repo("hostile", "many", {**SAMPLE_FILES, **many}),
        "odd": git_server.add_repo("hostile", "odd", {**SAMPLE_FILES, **odd}),
        "big_file": git_server.add_repo(
            "hostile", "big-file", {**SAMPLE_FILES, "blob.bin": os.urandom(3 * 1024 * 1024)}
        ),
        "big_repo": git_server.add_repo(
            "hostile",
            "big-repo",
            {**SAMPLE_FILES, **{f"data/{i:03d}.bin": os.urandom(64 * 1024) for i in range(60)}},
        ),
    }


@pytest.fixture
def mode_file(tmp_path: Path) -> Path:
    path = tmp_path / "claude-mode"
    path.write_text("success")
    return path


def worker_env(mode_file: Path, outside: Path, **extra: str) -> dict[str, str]:
    return {
        "FAKE_CLAUDE_MODE_FILE": str(mode_file),
        "FAKE_CLAUDE_OUTSIDE": str(outside),
        "CLAUDE_ENV_PASSTHROUGH": PASSTHROUGH,
        **extra,
    }


def stored_docs(backend: DevBackend, job_id: str) -> dict[str, str]:
    with backend.operator_client() as client:
        listed = client.call(
            "query", "docs:listByJob", {"token": TEST_OPERATOR_TOKEN, "jobId": job_id}
        )
        docs = {}
        for item in listed:
            doc = client.call(
                "query",
                "docs:getDoc",
                {"token": TEST_OPERATOR_TOKEN, "jobId": job_id, "slug": item["slug"]},
            )
            docs[doc["slug"]] = doc["content"]
    return docs


def assert_still_healthy(
    backend: DevBackend, worker: WorkerProcess, public_url: str, mode_file: Path
) -> None:
    assert worker.process.poll() is None, "the worker died"
    assert worker.get("/healthz").status_code == 200
    mode_file.write_text("success")
    job = wait_status(backend, enqueue(backend, public_url), ENDED, timeout=120)
    assert job["status"] == "completed", job
    assert worker.get("/healthz").status_code == 200
    # The workspace is removed in the background after the job's end (off its critical
    # path): a 10,000-file tree may take a moment on a busy machine.
    jobs_dir = Path(worker.env["TEMP_DIR"], "jobs")
    wait_until(lambda: list(jobs_dir.iterdir()) == [], 60)
    assert not [e for e in worker.read_logs() if e.get("event") == "non-json"]
    assert not [e for e in worker.read_logs() if e.get("level") in ("error", "critical")]


def assert_nothing_leaked(backend: DevBackend, job_id: str, worker: WorkerProcess) -> None:
    for content in stored_docs(backend, job_id).values():
        assert SECRET not in content
        assert HARD not in content
    logs = worker.log_path.read_text(errors="replace")
    assert SECRET not in logs
    assert HARD not in logs


@pytest.fixture
def watch(outside: Path) -> Iterator[OpenWatch]:
    watcher = OpenWatch([outside, outside / "secret.md", outside / "hard.md"])
    yield watcher
    watcher.close()


# --- hostile output ----------------------------------------------------------------------


def test_output_links_leading_outside_are_not_followed(
    dev_backend: DevBackend,
    start_worker: Any,
    repos: dict[str, str],
    mode_file: Path,
    outside: Path,
    watch: OpenWatch,
) -> None:
    mode_file.write_text("links_out")
    # The collector's own defence, so without Landlock: sandboxed, the CLI cannot even
    # create the hard link to a file outside (test_sandbox.py shows it refused).
    worker = start_worker(dev_backend, **worker_env(mode_file, outside, CLAUDE_SANDBOX="off"))
    job_id = enqueue(dev_backend, repos["public"])
    job = wait_status(dev_backend, job_id, ENDED, timeout=120)
    assert job["status"] == "completed", job
    docs = stored_docs(dev_backend, job_id)
    assert job["result"]["docsCount"] == len(docs) == 7  # the links added nothing
    assert not any(slug.startswith(("chapters-05", "chapters-06", "chapters-07")) for slug in docs)
    assert_nothing_leaked(dev_backend, job_id, worker)
    assert watch.poll() == []
    rejected = {e["path"]: e["reason"] for e in worker.events("docs.rejected")}
    assert rejected["chapters/05-secret.md"] == "symlink"
    assert rejected["chapters/06-relative.md"] == "symlink"
    assert rejected["chapters/outside"] == "symlink"
    assert rejected["tutorials-outside"] == "symlink"
    assert rejected["chapters/07-hard.md"] == "hard link"
    # Removing the workspace removed the links, not what they point at.
    assert (outside / "secret.md").read_text().endswith(f"{SECRET}\n")
    assert (outside / "hard.md").read_text().endswith(f"{HARD}\n")
    assert_still_healthy(dev_backend, worker, repos["public"], mode_file)


def test_output_dir_replaced_by_a_symlink_is_a_clear_error(
    dev_backend: DevBackend,
    start_worker: Any,
    repos: dict[str, str],
    mode_file: Path,
    outside: Path,
    watch: OpenWatch,
) -> None:
    mode_file.write_text("linked_output")
    worker = start_worker(dev_backend, **worker_env(mode_file, outside))
    job_id = enqueue(dev_backend, repos["public"])
    job = wait_status(dev_backend, job_id, ENDED, timeout=120)
    assert job["status"] == "dead", job
    assert job["lastErrorKind"] == "permanent"
    assert job["lastError"] == "the analysis produced no documents"
    assert stored_docs(dev_backend, job_id) == {}
    assert watch.poll() == []
    assert sorted(p.name for p in outside.iterdir()) == ["hard.md", "secret.md"]
    assert_still_healthy(dev_backend, worker, repos["public"], mode_file)


def test_non_utf8_names_in_the_repository_and_the_output(
    dev_backend: DevBackend,
    start_worker: Any,
    repos: dict[str, str],
    mode_file: Path,
    outside: Path,
) -> None:
    mode_file.write_text("odd_names")
    worker = start_worker(dev_backend, **worker_env(mode_file, outside))
    job_id = enqueue(dev_backend, repos["odd"])
    job = wait_status(dev_backend, job_id, ENDED, timeout=120)
    assert job["status"] == "completed", job
    with dev_backend.operator_client() as client:
        listed = client.call(
            "query", "docs:listByJob", {"token": TEST_OPERATOR_TOKEN, "jobId": job_id}
        )
    titles = {d["slug"]: d["title"] for d in listed}
    assert job["result"]["docsCount"] == len(titles)
    for slug, title in titles.items():
        assert slug.isascii(), slug
        assert slug.isprintable(), slug
        assert title.encode("utf-8", "strict")  # valid text, no lone surrogates
        assert "\ufffd" not in slug
    assert "Chapter 3: Café" in titles.values()
    assert "Chapter 5: Inside an odd directory" in titles.values()
    assert_still_healthy(dev_backend, worker, repos["public"], mode_file)


# --- hostile repositories ----------------------------------------------------------------


def test_ten_thousand_files(
    dev_backend: DevBackend,
    start_worker: Any,
    repos: dict[str, str],
    mode_file: Path,
    outside: Path,
) -> None:
    worker = start_worker(dev_backend, **worker_env(mode_file, outside))
    job_id = enqueue(dev_backend, repos["many"])
    job = wait_status(dev_backend, job_id, ENDED, timeout=240)
    assert job["status"] == "completed", job
    assert job["result"]["docsCount"] == 7
    assert_still_healthy(dev_backend, worker, repos["public"], mode_file)


@pytest.mark.parametrize("repo", ["big_file", "big_repo"])
def test_over_the_size_cap_is_refused(
    dev_backend: DevBackend,
    start_worker: Any,
    repos: dict[str, str],
    mode_file: Path,
    outside: Path,
    fake_claude_log: Path,
    repo: str,
) -> None:
    worker = start_worker(dev_backend, **worker_env(mode_file, outside, MAX_REPO_MB="2"))
    job_id = enqueue(dev_backend, repos[repo])
    job = wait_status(dev_backend, job_id, ENDED, timeout=120)
    assert job["status"] == "dead", job
    assert job["attempts"] == 1
    assert job["lastErrorKind"] == "invalid_repository"
    assert job["lastError"] == "repository is larger than 2 MiB"
    assert not fake_claude_log.exists() or job_id not in fake_claude_log.read_text()
    assert_still_healthy(dev_backend, worker, repos["public"], mode_file)


@contextlib.contextmanager
def tcp_trap() -> Iterator[tuple[int, list[str]]]:
    """A listener that records every connection (an ssh:// submodule would connect)."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)
    seen: list[str] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, peer = server.accept()
            except OSError:
                continue
            seen.append(f"{peer[0]}:{peer[1]}")
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1], seen
    finally:
        stop.set()
        thread.join(5)
        server.close()


def test_submodules_are_never_fetched(
    dev_backend: DevBackend,
    start_worker: Any,
    git_server: Any,
    mode_file: Path,
    outside: Path,
    tmp_path: Path,
) -> None:
    git_server.add_repo("hostile", "secret-target", {"SECRET.md": f"# {SECRET}\n"})
    target = git_server.repos / "hostile" / "secret-target.git"
    marker = tmp_path / "MARKER_EXT_SUBMODULE"
    commit = "0123456789abcdef0123456789abcdef01234567"
    with tcp_trap() as (ssh_port, connections):
        gitmodules = (
            f'[submodule "local"]\n\tpath = local\n\turl = file://{target}\n'
            f'[submodule "ssh"]\n\tpath = ssh\n\turl = ssh://git@127.0.0.1:{ssh_port}/x/y.git\n'
            f'[submodule "ext"]\n\tpath = ext\n\turl = ext::sh -c touch% {marker}\n'
            '[submodule "dash"]\n\tpath = dash\n\turl = --upload-pack=touch\n'
        )
        url = git_server.add_repo(
            "hostile",
            "submodules",
            {**SAMPLE_FILES, ".gitmodules": gitmodules},
            gitlinks={"local": commit, "ssh": commit, "ext": commit, "dash": commit},
        )
        watch = OpenWatch([target, target / "HEAD", target / "config"])
        try:
            worker = start_worker(dev_backend, **worker_env(mode_file, outside))
            job_id = enqueue(dev_backend, url)
            job = wait_status(dev_backend, job_id, ENDED, timeout=120)
            seen = watch.poll()
        finally:
            watch.close()
        assert job["status"] == "completed", job
        assert seen == []
        assert connections == []
        assert not marker.exists()
        assert_nothing_leaked(dev_backend, job_id, worker)
        public = git_server.add_repo("hostile", "after-submodules", SAMPLE_FILES)
        assert_still_healthy(dev_backend, worker, public, mode_file)
