"""Two jobs at once on one subscription login whose every use needs a refresh.

A loopback OAuth endpoint issues single-use refresh tokens and logins that expire within
the CLI's 5-minute refresh window, so every claude run refreshes (the fake claude does as
the real CLI: tests/support/fakes/claude, FAKE_CLAUDE_OAUTH_URL). With MAX_CONCURRENT_JOBS=2
the steps of two jobs overlap (a hold keeps the first steps running until both jobs have one
started, so the overlap does not depend on the machine's speed); before the refresh turn
(credentials.LoginBroker) two steps holding copies of one login spent the same refresh token
and one was logged out. Every job must complete, no refresh may be refused, and the worker
keeps the newest login.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.support import DevBackend, enqueue, read_claude_log, wait_status, wait_until
from tests.support.worker_process import FAKE_CLAUDE_PASSTHROUGH

pytestmark = pytest.mark.integration

LIFETIME_S = 120  # inside the CLI's 5-minute window: every run refreshes


class TokenEndpoint:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.valid = {"refresh-0"}
        self.spent: list[str] = []
        self.refused: list[str] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fresh = endpoint.refresh(str(body.get("refresh_token", "")))
                data = json.dumps(fresh or {"error": "invalid_grant"}).encode()
                self.send_response(200 if fresh else 400)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1/oauth/token"

    @staticmethod
    def login(refresh: str) -> dict[str, object]:
        return {
            "accessToken": "sk-ant-oat01-access-" + refresh,
            "refreshToken": refresh,
            "expiresAt": int((time.time() + LIFETIME_S) * 1000),
            "scopes": ["user:inference"],
        }

    def refresh(self, token: str) -> dict[str, object] | None:
        with self.lock:
            if token not in self.valid:
                self.refused.append(token)
                return None
            self.valid.remove(token)
            self.spent.append(token)
            new = f"refresh-{len(self.spent)}"
            self.valid.add(new)
            return self.login(new)


@pytest.fixture
def endpoint() -> Iterator[TokenEndpoint]:
    server = TokenEndpoint()
    yield server
    server.server.shutdown()


def test_concurrent_steps_share_one_login_without_logging_out(
    dev_backend: DevBackend,
    start_worker: Any,
    git_server: Any,
    tmp_path: Path,
    fake_claude_log: Path,
    endpoint: TokenEndpoint,
) -> None:
    creds = tmp_path / "claude-credentials"
    creds.mkdir()
    login = {"claudeAiOauth": TokenEndpoint.login("refresh-0")}
    (creds / ".credentials.json").write_text(json.dumps(login))
    # Every step waits past its refresh while the hold file exists.
    hold = tmp_path / "hold"
    hold.touch()
    worker = start_worker(
        dev_backend,
        CLAUDE_CREDENTIALS_SOURCE=str(creds),
        MAX_CONCURRENT_JOBS="2",
        FAKE_CLAUDE_OAUTH_URL=endpoint.url,
        FAKE_CLAUDE_HOLD=str(hold),
        CLAUDE_ENV_PASSTHROUGH=FAKE_CLAUDE_PASSTHROUGH + ",FAKE_CLAUDE_OAUTH_URL,FAKE_CLAUDE_HOLD",
    )
    urls = [git_server.add_repo("refresh", f"r{i}", {"README.md": "# r\n"}) for i in range(3)]
    jobs = [enqueue(dev_backend, url) for url in urls]

    def jobs_with_a_step_started() -> set[str]:
        log = read_claude_log(fake_claude_log)
        return {e["job"] for e in log if e["event"] == "start" and e["job"]}

    # The first job's step is held past its refresh; the second job's step could start only
    # once that refresh was shared. Both started: two steps of different jobs overlap.
    wait_until(lambda: len(jobs_with_a_step_started()) >= 2, timeout=120, interval=0.2)
    hold.unlink()
    ended = [wait_status(dev_backend, job, {"completed", "dead", "failed"}, 180) for job in jobs]

    assert [job["status"] for job in ended] == ["completed"] * 3, ended
    assert endpoint.refused == [], "a step spent a refresh token another step had spent"
    runs = [e for e in read_claude_log(fake_claude_log) if e["event"] == "refresh"]
    assert runs
    assert all(e["ok"] for e in runs)
    assert len(endpoint.spent) == len(runs)
    # The steps of two jobs did run at the same time.
    starts = {
        (e["job"], e["step"]): e["time"]
        for e in read_claude_log(fake_claude_log)
        if e["event"] == "start" and e["job"]
    }
    ends = {
        (e["job"], e["step"]): e["time"]
        for e in read_claude_log(fake_claude_log)
        if e["event"] == "end" and e["job"]
    }
    spans = [(starts[k], ends[k], k[0]) for k in starts if k in ends]
    assert any(a0 < b1 and b0 < a1 and ja != jb for a0, a1, ja in spans for b0, b1, jb in spans), (
        "no two steps of different jobs overlapped"
    )
    # The worker keeps the newest login for the next step.
    kept = json.loads(Path(worker.env["CLAUDE_CONFIG_DIR"], ".credentials.json").read_text())
    assert kept["claudeAiOauth"]["refreshToken"] == f"refresh-{len(endpoint.spent)}"
