"""Concurrent steps and one subscription login (credentials.LoginBroker).

Refresh tokens are single-use. ``TokenServer`` is the OAuth endpoint's rule: a refresh
spends the token and issues a new one; spending a spent token fails (the step is logged
out). ``cli_run`` does with its config dir what the pinned CLI does: it refreshes when the
access token expires within 5 minutes (the pinned CLI: ``Date.now()+300000>=expiresAt``) and
writes the new login into its config dir. Steps run in threads, as jobs do with
MAX_CONCURRENT_JOBS > 1.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fondation_worker.credentials import LOGIN_FILE, LoginAborted, LoginBroker

CLI_REFRESH_WINDOW_S = 300
HOURS_8 = 8 * 3600


@dataclass
class TokenServer:
    valid: set[str] = field(default_factory=lambda: {"refresh-0"})
    spent: list[str] = field(default_factory=list)
    lifetime_s: float = HOURS_8
    lock: threading.Lock = field(default_factory=threading.Lock)

    def login(self, refresh: str, expires_in_s: float) -> dict[str, object]:
        return {
            "claudeAiOauth": {
                "accessToken": "access-" + refresh,
                "refreshToken": refresh,
                "expiresAt": int((time.time() + expires_in_s) * 1000),
                "scopes": ["user:inference"],
            }
        }

    def refresh(self, token: str) -> dict[str, object] | None:
        with self.lock:
            if token not in self.valid:
                return None  # invalid_grant: already spent
            self.valid.remove(token)
            self.spent.append(token)
            new = f"refresh-{len(self.spent)}"
            self.valid.add(new)
            return self.login(new, self.lifetime_s)


def cli_run(config_dir: Path, server: TokenServer, work_s: float) -> str:
    """One CLI run: refresh if due, then work. ``ok`` or ``logged out``."""
    path = config_dir / LOGIN_FILE
    oauth = json.loads(path.read_text())["claudeAiOauth"]
    if time.time() * 1000 + CLI_REFRESH_WINDOW_S * 1000 >= oauth["expiresAt"]:
        new = server.refresh(oauth["refreshToken"])
        if new is None:
            return "logged out"
        path.write_text(json.dumps(new))
    time.sleep(work_s)
    return "ok"


def run_steps(
    tmp_path: Path,
    server: TokenServer,
    brokers: list[LoginBroker],
    *,
    steps: int,
    needed_s: float = 60,
    work_s: float = 0.3,
) -> list[str]:
    """``steps`` runs at once; step i uses ``brokers[i % len(brokers)]``."""
    source = tmp_path / "claude-config"
    results: list[str] = [""] * steps
    start = threading.Barrier(steps)

    def one(i: int) -> None:
        start.wait()
        broker = brokers[i % len(brokers)]
        with broker.step(source, tmp_path / f"step-{i}", needed_s=needed_s) as config_dir:
            results[i] = cli_run(config_dir, server, work_s)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(steps)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def write_login(tmp_path: Path, server: TokenServer, expires_in_s: float) -> Path:
    source = tmp_path / "claude-config"
    source.mkdir(exist_ok=True)
    (source / LOGIN_FILE).write_text(json.dumps(server.login("refresh-0", expires_in_s)))
    return source


def test_without_coordination_concurrent_refreshes_log_steps_out(tmp_path: Path) -> None:
    """The hazard, reproduced: steps that each copy the login on their own (no shared
    broker) refresh the same single-use token; all but one are logged out."""
    server = TokenServer()
    write_login(tmp_path, server, expires_in_s=120)
    results = run_steps(tmp_path, server, [LoginBroker() for _ in range(4)], steps=4)
    assert results.count("ok") == 1
    assert results.count("logged out") == 3


def test_one_refresher_at_a_time_and_the_others_take_the_new_login(tmp_path: Path) -> None:
    server = TokenServer()
    source = write_login(tmp_path, server, expires_in_s=120)
    broker = LoginBroker(watch_s=0.02)
    results = run_steps(tmp_path, server, [broker], steps=6)
    assert results == ["ok"] * 6
    assert server.spent == ["refresh-0"]  # one refresh for all six steps
    kept = json.loads((source / LOGIN_FILE).read_text())["claudeAiOauth"]
    assert kept["refreshToken"] == "refresh-1"  # the new login was written back
    assert broker.turns == 1
    assert broker.shared == 5


def test_every_step_refreshing_stays_logged_in(tmp_path: Path) -> None:
    """Logins that always need a refresh (each lives 2 minutes): every step refreshes, one
    after the other, none is logged out, and the worker keeps the newest login."""
    server = TokenServer(lifetime_s=120)
    source = write_login(tmp_path, server, expires_in_s=120)
    broker = LoginBroker(watch_s=0.02)
    results = run_steps(tmp_path, server, [broker], steps=5, work_s=0.05)
    assert results == ["ok"] * 5
    assert server.spent == [f"refresh-{i}" for i in range(5)]
    kept = json.loads((source / LOGIN_FILE).read_text())["claudeAiOauth"]
    assert kept["refreshToken"] == "refresh-5"


def test_a_step_that_cannot_need_a_refresh_does_not_wait(tmp_path: Path) -> None:
    """While one step holds the refresh turn, a step whose copy outlives it runs at once."""
    server = TokenServer()
    source = write_login(tmp_path, server, expires_in_s=20 * 60)
    broker = LoginBroker()
    inside = threading.Event()
    release = threading.Event()

    def long_step() -> None:
        # May last 15 minutes: its copy (20 minutes left) could need a refresh.
        with broker.step(source, tmp_path / "long", needed_s=15 * 60):
            inside.set()
            release.wait(30)

    holder = threading.Thread(target=long_step)
    holder.start()
    try:
        assert inside.wait(10)
        assert broker.turns == 1
        began = time.monotonic()
        with broker.step(source, tmp_path / "short", needed_s=60) as config_dir:
            assert cli_run(config_dir, server, 0) == "ok"
        assert time.monotonic() - began < 5
        assert server.spent == []
    finally:
        release.set()
        holder.join(30)


def test_a_step_stopped_while_waiting_for_the_turn_never_starts(tmp_path: Path) -> None:
    server = TokenServer()
    source = write_login(tmp_path, server, expires_in_s=60)
    broker = LoginBroker()
    inside = threading.Event()
    release = threading.Event()

    def refresher() -> None:
        with broker.step(source, tmp_path / "first", needed_s=60):
            inside.set()
            release.wait(30)

    holder = threading.Thread(target=refresher)
    holder.start()
    try:
        assert inside.wait(10)
        stop = threading.Event()
        threading.Timer(0.3, stop.set).start()
        with (
            pytest.raises(LoginAborted),
            broker.step(source, tmp_path / "second", needed_s=60, abort=stop.is_set),
        ):
            pytest.fail("the second step started while the first held the refresh turn")
        assert not (tmp_path / "second").exists()
    finally:
        release.set()
        holder.join(30)


def test_an_older_login_never_overwrites_a_newer_one(tmp_path: Path) -> None:
    server = TokenServer()
    source = write_login(tmp_path, server, expires_in_s=HOURS_8)
    broker = LoginBroker()
    with broker.step(source, tmp_path / "step", needed_s=60) as config_dir:
        # Meanwhile the worker's login was refreshed by another step: 9 hours left.
        (source / LOGIN_FILE).write_text(json.dumps(server.login("refresh-9", 9 * 3600)))
        # This run rewrote its copy with a login that expires sooner.
        (config_dir / LOGIN_FILE).write_text(json.dumps(server.login("refresh-8", 3600)))
    kept = json.loads((source / LOGIN_FILE).read_text())["claudeAiOauth"]
    assert kept["refreshToken"] == "refresh-9"


def test_without_a_login_file_each_step_gets_an_empty_config_dir(tmp_path: Path) -> None:
    source = tmp_path / "claude-config"
    source.mkdir()
    broker = LoginBroker()
    with broker.step(source, tmp_path / "step", needed_s=60) as config_dir:
        assert list(config_dir.iterdir()) == []
    assert not (tmp_path / "step").exists()
