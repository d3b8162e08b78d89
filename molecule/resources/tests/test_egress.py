"""The workers' egress allow-list (roles/egress_proxy), proven from inside the worker
container: the names derived from the deployment pass through the proxy (the git fixture,
the dev backend, the scenario's stand-in for Claude's API), any other name is refused by
the proxy, and a direct connection that bypasses it is dropped.

The stand-ins (prepare.yml): the git fixture on 10.213.0.1:8443 (ALLOWED_REPO_HOSTS), also
named anthropic.fondation.test (ANTHROPIC_BASE_URL, allowed) and other.fondation.test (not
allowed) in the host's /etc/hosts, where the proxy resolves names: the last two reach the
same server, so only the name tells them apart.
"""

from __future__ import annotations

import json
import os
import shlex
from typing import Any
from urllib.parse import urlsplit

import pytest

CONTAINER = "fondation-worker-1"
PROXY = ("10.215.0.1", 8888)
GIT_FIXTURE = ("10.213.0.1", 8443)
SAMPLE_REPO = f"https://{GIT_FIXTURE[0]}:{GIT_FIXTURE[1]}/fondation/sample.git"

# Runs inside the worker container (its own Python, standard library only): one probe per
# line of input, one JSON answer per probe. "connect": CONNECT through the proxy, the status
# code it answers; "direct": a TCP connection that bypasses the proxy, "open" or the error.
PROBE = r"""
import json, socket, sys
proxy = (sys.argv[1], int(sys.argv[2]))
for line in sys.stdin:
    kind, host, port = line.split()
    try:
        if kind == "connect":
            with socket.create_connection(proxy, timeout=5) as s:
                s.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
                status = s.recv(256).split(b"\r\n", 1)[0].decode()
            print(json.dumps({"probe": line.strip(), "status": int(status.split()[1])}))
        else:
            with socket.create_connection((host, int(port)), timeout=3):
                print(json.dumps({"probe": line.strip(), "result": "open"}))
    except OSError as exc:
        print(json.dumps({"probe": line.strip(), "result": type(exc).__name__}))
"""


def probe(host: Any, *lines: str) -> list[dict[str, Any]]:
    stdin = "\n".join(lines) + "\n"
    result = host.run(
        f"printf %s {shlex.quote(stdin)} | docker exec -i {CONTAINER} "
        f"python -c {shlex.quote(PROBE)} {PROXY[0]} {PROXY[1]}"
    )
    assert result.rc == 0, result.stdout + result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def convex_target() -> tuple[str, int]:
    url = os.environ.get("FONDATION_TEST_CONVEX_URL") or "http://127.0.0.1:3210"
    parts = urlsplit(url)
    return parts.hostname or "", parts.port or 80


def test_the_worker_runs_on_the_egress_network_with_the_proxy(host: Any) -> None:
    data = json.loads(host.run(f"docker container inspect {CONTAINER}").stdout)[0]
    assert list(data["NetworkSettings"]["Networks"]) == ["fondation-egress"]
    env = dict(e.split("=", 1) for e in data["Config"]["Env"])
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"):
        assert env[name] == f"http://{PROXY[0]}:{PROXY[1]}"
    assert env["NO_PROXY"] == "localhost,127.0.0.1"
    assert host.service("tinyproxy").is_running
    allow = host.file("/etc/tinyproxy/fondation-allow.list").content_string
    convex_host, _ = convex_target()
    for name in ("github.com", GIT_FIXTURE[0], "anthropic.fondation.test", convex_host):
        assert f"^{name.replace('.', chr(92) + '.')}$" in allow, allow


def test_allowed_names_pass_through_the_proxy(host: Any) -> None:
    convex_host, convex_port = convex_target()
    answers = probe(
        host,
        f"connect {GIT_FIXTURE[0]} {GIT_FIXTURE[1]}",
        f"connect anthropic.fondation.test {GIT_FIXTURE[1]}",
        f"connect {convex_host} {convex_port}",
    )
    assert [a.get("status") for a in answers] == [200, 200, 200], answers


def test_any_other_name_is_refused(host: Any) -> None:
    answers = probe(
        host,
        f"connect other.fondation.test {GIT_FIXTURE[1]}",  # same server as an allowed name
        "connect example.com 443",
        "connect localhost 8080",
        f"connect {PROXY[0]} 22",
    )
    assert [a.get("status") for a in answers] == [403, 403, 403, 403], answers


def test_a_direct_connection_is_refused(host: Any) -> None:
    convex_host, convex_port = convex_target()
    answers = probe(
        host,
        f"direct {GIT_FIXTURE[0]} {GIT_FIXTURE[1]}",  # the host's own address: INPUT
        f"direct {convex_host} {convex_port}",  # beyond the host: DOCKER-USER
        f"direct {PROXY[0]} 22",  # the host's other services on the gateway
    )
    assert all(a.get("result") not in (None, "open") for a in answers), answers
    # The proxy's own port is the one open door.
    assert probe(host, f"direct {PROXY[0]} {PROXY[1]}")[0]["result"] == "open"


def test_git_and_the_convex_client_work_through_the_proxy(host: Any) -> None:
    # The worker's own clients, as the worker runs them: git (curl honours HTTPS_PROXY) ...
    cloned = host.run(
        f"docker exec -e GIT_SSL_CAINFO=/run/fondation-test/ca.pem {CONTAINER} "
        f"git ls-remote {SAMPLE_REPO}"
    )
    assert cloned.rc == 0, cloned.stderr
    assert "refs/heads/main" in cloned.stdout
    # ... and without the proxy the same clone cannot get out.
    # (The image has no `timeout`: Python bounds the attempt, whose packets are dropped.)
    bounded = (
        "import subprocess, sys; "
        f"sys.exit(subprocess.run(['git', 'ls-remote', '{SAMPLE_REPO}'], timeout=20).returncode)"
    )
    direct = host.run(
        f"docker exec -e GIT_SSL_CAINFO=/run/fondation-test/ca.pem -e HTTPS_PROXY= "
        f"-e https_proxy= {CONTAINER} python -c {shlex.quote(bounded)}"
    )
    assert direct.rc != 0, direct.stdout
    assert "refs/heads/main" not in direct.stdout
    if not os.environ.get("FONDATION_TEST_CONVEX_URL"):
        pytest.skip("no dev backend (FONDATION_TEST_CONVEX_URL): the Convex client check needs one")
    # httpx with the environment's proxy (trust_env, as convex_client.py) reaches Convex.
    check = host.run(f"docker exec {CONTAINER} fondation-worker check --claude-timeout 10")
    assert "ok    convex: reachable" in check.stdout, check.stdout + check.stderr
