from __future__ import annotations

import base64
import io
import json
import logging
import stat
from pathlib import Path

import pytest
import structlog

from fondation_worker.logging_setup import configure_logging, get_logger
from fondation_worker.redact import MASK, Redactor, is_secret_key, redact_patterns

GHP = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
SHAPES = [
    GHP,
    "gho_" + "Z" * 36,
    "ghs_" + "9" * 36,
    "ghu_" + "x" * 36,
    "ghr_" + "y" * 36,
    "github_pat_" + "11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOP",
    "sk-ant-api03-" + "Q" * 40,
    "sk-ant-oat01-abcDEF_123-xyz" + "w" * 20,
]


@pytest.mark.parametrize("secret", SHAPES)
def test_token_shapes(secret: str) -> None:
    out = redact_patterns(f"token={secret} trailing")
    assert secret not in out
    assert MASK in out
    assert out.endswith("trailing")


@pytest.mark.parametrize(
    "text",
    [
        f"https://x-access-token:{GHP}@github.com/acme/private.git",
        "https://user:hunter2hunter2@example.com/acme/repo.git",
        "fatal: unable to access 'https://oauth2:abcdefgh12345@gitlab.example/x/y.git/'",
    ],
)
def test_credentials_in_urls(text: str) -> None:
    out = redact_patterns(text)
    assert "hunter2" not in out
    assert GHP not in out
    assert "abcdefgh12345" not in out
    assert "@" in out  # the host stays readable


@pytest.mark.parametrize(
    "text",
    [
        "Authorization: Bearer abcdefghijklmnop123",
        "authorization: token abcdefghijklmnop123",
        'headers={"Authorization": "Convex abcdefghijklmnop123"}',
        "Proxy-Authorization: Basic dXNlcjpwYXNzd29yZA==",
        "curl -H 'authorization=abcdefghijklmnop123'",
        "sent Bearer abcdefghijklmnop123 upstream",
    ],
)
def test_authorization_headers(text: str) -> None:
    out = redact_patterns(text)
    assert "abcdefghijklmnop123" not in out
    assert "dXNlcjpwYXNzd29yZA==" not in out


def test_literal_secrets_and_their_basic_auth_encoding() -> None:
    secret = "plain-looking-worker-secret-42"
    redactor = Redactor([secret])
    basic = base64.b64encode(f"x-access-token:{secret}".encode()).decode()
    out = redactor.redact(f"a {secret} b {basic} c")
    assert secret not in out
    assert basic not in out


def test_dynamic_secrets_come_and_go() -> None:
    redactor = Redactor()
    job_token = "usertoken-without-known-shape-123"
    assert redactor.redact(job_token) == job_token
    redactor.register(job_token)
    redactor.register(job_token)
    redactor.unregister(job_token)
    assert redactor.redact(job_token) == MASK  # still registered once
    redactor.unregister(job_token)
    assert redactor.redact(job_token) == job_token


def test_short_literals_are_not_masked_everywhere() -> None:
    redactor = Redactor(["abc"])
    assert redactor.redact("abcabc") == "abcabc"


@pytest.mark.parametrize(
    "key",
    [
        "token",
        "leaseToken",
        "github_token",
        "WORKER_TOKEN",
        "api-key",
        "apiKey",
        "password",
        "Authorization",
    ],
)
def test_secret_keys(key: str) -> None:
    assert is_secret_key(key)


@pytest.mark.parametrize("key", ["tokens", "input_tokens", "event", "job_id", "max_tokens"])
def test_not_secret_keys(key: str) -> None:
    assert not is_secret_key(key)


def test_nested_values() -> None:
    redactor = Redactor(["literal-secret-value"])
    value = redactor.redact_value(
        {"args": {"token": "x" * 20, "list": ["literal-secret-value", GHP]}, "count": 3}
    )
    assert value == {"args": {"token": MASK, "list": [MASK, MASK]}, "count": 3}


def test_every_log_line_is_redacted_at_the_sink() -> None:
    secret = "configured-worker-token-value"
    redactor = Redactor([secret])
    stream = io.StringIO()
    configure_logging(redactor, log_format="json", stream=stream, level="debug")
    log = get_logger("test")
    with structlog.contextvars.bound_contextvars(job_id="j1", attempt=2):
        log.info("event.one", detail=f"url https://x-access-token:{GHP}@github.com/a/b", n=1)
        log.warning("event.two", token="whatever-value-here", nested={"k": secret})
        try:
            raise RuntimeError(f"boom {secret}")
        except RuntimeError:
            log.exception("event.three")
    logging.getLogger("httpx").warning("HTTP Request: Authorization: Bearer %s", secret)
    logging.getLogger("other").info("stdlib says %s", GHP)
    text = stream.getvalue()
    assert secret not in text
    assert GHP not in text
    assert "whatever-value-here" not in text
    lines = [json.loads(line) for line in text.splitlines()]
    assert [line["event"] for line in lines[:3]] == ["event.one", "event.two", "event.three"]
    assert all(line["job_id"] == "j1" and line["attempt"] == 2 for line in lines[:3])
    assert len(lines) == 5
    assert "boom" in lines[2]["exception"]


def test_log_file_is_reopened_after_rotation(tmp_path: Path) -> None:
    log_file = tmp_path / "logs" / "worker.log"
    configure_logging(Redactor(["file-secret-value"]), log_file=log_file, stream=io.StringIO())
    log = get_logger("rotation")
    log.info("before.rotation", secret="file-secret-value")
    log_file.rename(tmp_path / "logs" / "worker.log.1")  # what logrotate does
    log.info("after.rotation")
    rotated = (tmp_path / "logs" / "worker.log.1").read_text()
    assert "before.rotation" in rotated
    assert "file-secret-value" not in rotated
    assert json.loads(log_file.read_text())["event"] == "after.rotation"


def test_log_file_is_private_to_owner_and_group(tmp_path: Path) -> None:
    # logrotate's `create 0640` must match what the worker itself creates (issue 17), and a
    # file an older release left readable by others is tightened when it is opened.
    logs = tmp_path / "logs"
    logs.mkdir()
    old = logs / "old.log"
    old.write_text("")
    old.chmod(0o666)
    configure_logging(Redactor([]), log_file=old, stream=io.StringIO())
    get_logger("mode").info("written")
    assert stat.S_IMODE(old.stat().st_mode) == 0o640
    log_file = logs / "worker.log"
    configure_logging(Redactor([]), log_file=log_file, stream=io.StringIO())
    get_logger("mode").info("created")
    assert stat.S_IMODE(log_file.stat().st_mode) == 0o640
    log_file.rename(logs / "worker.log.1")  # moved away without logrotate's `create`
    get_logger("mode").info("reopened")
    assert json.loads(log_file.read_text())["event"] == "reopened"
    assert stat.S_IMODE(log_file.stat().st_mode) == 0o640


def test_redact_counted_counts_literals_and_shapes() -> None:
    worker_token = "wt-" + "0123456789abcdef" * 2
    redactor = Redactor([worker_token])
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.c2lnbmF0dXJl"
    text = (
        f"token {worker_token} twice {worker_token}\n"
        f"key sk-ant-oat01-{'a' * 30}\njwt {jwt}\nAuthorization: Bearer abcdefghij\n"
    )
    out, hits = redactor.redact_counted(text)
    assert hits == 5
    assert worker_token not in out
    assert "sk-ant-" not in out
    assert "eyJ" not in out
    assert "abcdefghij" not in out


def test_redact_counted_leaves_ordinary_text_alone() -> None:
    text = "# Chapter 1\n\nThe scheduler polls every 5 s. See `eyJ` in JWT docs.\n"
    assert Redactor(["some-configured-secret"]).redact_counted(text) == (text, 0)
