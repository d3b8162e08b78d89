"""What the deploy promises on a worker host, checked on each Molecule platform.

Reads like a checklist: the engine, the replica's unit and container, its files, its health
port, its log rotation and, with the dev backend running on the controller, a real job.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import time
import warnings
from typing import Any

import pytest

from tests.support.testinfra import image_env

REPLICA = 1
CONTAINER = f"fondation-worker-{REPLICA}"
UNIT = f"fondation-worker@{REPLICA}"
HEALTH_PORT = 8080  # fondation_worker_health_port: replica 1 on 8080
LOG_FILE = f"/var/log/fondation-worker/worker-{REPLICA}.log"
LOGROTATE = "/etc/logrotate.d/fondation-worker"
# The git fixture from prepare.yml: the only non-loopback listener the tests tolerate,
# besides the egress proxy on the workers' network gateway (.config/molecule/config.yml).
GIT_FIXTURE_PORT = 8443
EGRESS_GATEWAY = "10.215.0.1"
EGRESS_PORT = 8888
EGRESS_FIREWALL_UNIT = "fondation-egress-firewall"
SAMPLE_REPO = f"https://10.213.0.1:{GIT_FIXTURE_PORT}/fondation/sample.git"


def journal(host: Any, unit: str = UNIT, lines: int = 40) -> str:
    out = host.run(f"journalctl --no-pager -n {lines} -u {unit}").stdout
    logs = host.run(f"docker logs --tail {lines} {CONTAINER} 2>&1").stdout
    return f"\n--- journal of {unit} ---\n{out}\n--- docker logs {CONTAINER} ---\n{logs}"


def inspect(host: Any, name: str = CONTAINER) -> dict[str, Any]:
    result = host.run(f"docker container inspect {name}")
    assert result.rc == 0, result.stderr + journal(host)
    data: dict[str, Any] = json.loads(result.stdout)[0]
    return data


# runc's own words when its `runc init` child dies before its first handshake byte (runc's
# initWaiter): the container never started, so nothing of ours ran. Seen once under nested
# Docker (Debian 13's runc 1.1.15 inside the test host) and not reproduced in 180 tries.
RUNC_INIT_DIED = "waiting for init preliminary setup"


def run_throwaway(host: Any, command: str) -> Any:
    """Run a `docker run` command; retry once, loudly, only if runc failed to start it.

    That named infrastructure failure (exit 125 with runc's message, before the image's
    entrypoint ran) is not the product's behaviour; any other outcome is returned as is,
    and every assertion stays on the caller's side.
    """
    result = host.run(command)
    output = result.stdout + result.stderr
    if result.rc == 125 and RUNC_INIT_DIED in output:
        diagnostics = host.run(
            "journalctl --no-pager -n 30 -u docker -u containerd; dmesg 2>/dev/null | tail -n 20"
        ).stdout
        warnings.warn(
            f"nested runc could not start the container (infrastructure, not the worker); "
            f"retrying once. runc said: {output.strip()[-400:]}\n{diagnostics}",
            stacklevel=2,
        )
        result = host.run(command)
    return result


# --- the engine ------------------------------------------------------------------------


def test_docker_is_enabled_and_running(host: Any) -> None:
    docker = host.service("docker")
    assert docker.is_enabled
    assert docker.is_running


def test_daemon_json_rotates_container_logs(host: Any) -> None:
    daemon = json.loads(host.file("/etc/docker/daemon.json").content_string)
    assert daemon["log-driver"] == "json-file"
    assert daemon["log-opts"]["max-size"]
    assert int(daemon["log-opts"]["max-file"]) >= 1


# --- the replica -------------------------------------------------------------------------


def test_replica_unit_is_enabled_and_active(host: Any) -> None:
    service = host.service(UNIT)
    assert service.is_enabled, journal(host)
    assert service.is_running, journal(host)


def test_container_runs_the_deployed_image(host: Any) -> None:
    data = inspect(host)
    assert data["State"]["Running"], journal(host)
    assert data["Image"] == image_env(host)


def test_container_runs_as_the_worker_uid(host: Any) -> None:
    data = inspect(host)
    assert data["Config"]["User"] == "10001:10001"
    status = host.file(f"/proc/{data['State']['Pid']}/status").content_string
    assert re.search(r"^Uid:\s+10001\s", status, re.MULTILINE), status


def test_container_is_locked_down(host: Any) -> None:
    data = inspect(host)
    config = data["HostConfig"]
    assert config["ReadonlyRootfs"] is True
    assert config["CapDrop"] == ["ALL"]
    assert not config["CapAdd"]
    assert "no-new-privileges" in config["SecurityOpt"]
    assert not config["Privileged"]
    # systemd owns restarts: no docker restart policy.
    assert config["RestartPolicy"]["Name"] in ("", "no")
    status = host.file(f"/proc/{data['State']['Pid']}/status").content_string
    assert re.search(r"^CapEff:\s+0+$", status, re.MULTILINE), status


def test_credentials_are_mounted_read_only(host: Any) -> None:
    mounts = {m["Destination"]: m for m in inspect(host)["Mounts"]}
    creds = mounts["/run/claude-credentials"]
    assert creds["Source"] == "/srv/claude-creds"
    assert creds["RW"] is False
    assert mounts["/tmp/fondation"]["Type"] == "volume"


def test_credentials_directory_belongs_to_the_worker(host: Any) -> None:
    creds = host.file("/srv/claude-creds")
    assert creds.is_directory
    assert (creds.uid, creds.gid) == (10001, 10001)
    assert creds.mode == 0o700


@pytest.mark.parametrize(
    "path",
    [
        "/etc/fondation-worker/worker.env",
        "/etc/fondation-worker/claude.env",
        f"/etc/fondation-worker/replica-{REPLICA}.credential",
    ],
)
def test_env_files_are_private_to_root(host: Any, path: str) -> None:
    env = host.file(path)
    assert env.is_file
    assert env.user == "root"
    assert env.group == "root"
    assert env.mode == 0o600


def test_the_operator_token_is_not_on_the_host(host: Any) -> None:
    # The scenario's inventory sets fondation_worker_operator_token; the deploy never writes it.
    operator_token = (
        os.environ.get("FONDATION_TEST_OPERATOR_TOKEN") or "local-operator-token-not-secret"
    )
    found = host.run(
        f"grep -rlF -e {shlex.quote(operator_token)} -e OPERATOR_TOKEN /etc/fondation-worker "
        "/etc/systemd/system || true"
    )
    assert found.stdout.strip() == ""


def test_each_replica_has_a_credential_of_its_own(host: Any) -> None:
    # Per-worker credentials (the default): the shared token is not in the env file; the
    # replica's credential is its own file, and Convex knows it as this replica's.
    assert "WORKER_TOKEN=" not in host.file("/etc/fondation-worker/worker.env").content_string
    line = host.run(f"cat /etc/fondation-worker/replica-{REPLICA}.credential").stdout
    assert re.fullmatch(r"WORKER_TOKEN=fwc_[A-Za-z0-9_-]{43}\n", line), "not a credential"
    if os.environ.get("FONDATION_TEST_CONVEX_URL"):
        worker_id = inspect(host)["Config"]["Env"]
        worker_id = next(e for e in worker_id if e.startswith("WORKER_ID=")).split("=", 1)[1]
        check = host.run(f"docker exec {CONTAINER} fondation-worker check --claude-timeout 10")
        assert f"credential of worker {worker_id}" in check.stdout, check.stdout + check.stderr


def test_no_backup_of_a_previous_env_file_is_left_behind(host: Any) -> None:
    leftovers = host.run("ls /etc/fondation-worker /etc/systemd/system | grep '~$' || true")
    assert leftovers.stdout.strip() == ""


# --- health and network exposure -----------------------------------------------------------


def test_healthz_answers_on_loopback(host: Any) -> None:
    code = host.run(
        f"curl -s -o /dev/null -w '%{{http_code}}' --max-time 5 http://127.0.0.1:{HEALTH_PORT}/healthz"
    ).stdout
    assert code == "200", journal(host)
    assert host.socket(f"tcp://127.0.0.1:{HEALTH_PORT}").is_listening


def test_claude_runs_are_confined_by_landlock(host: Any) -> None:
    """The default: every claude run of the real image under Landlock (CLAUDE_SANDBOX)."""
    deadline = time.monotonic() + 60
    layers: dict[str, str] = {}
    while time.monotonic() < deadline and not layers:
        body = host.run(f"curl -s --max-time 5 http://127.0.0.1:{HEALTH_PORT}/readyz").stdout
        try:
            layers = json.loads(body).get("layers", {})
        except ValueError:
            time.sleep(1)
    assert layers.get("landlock", "").startswith("on (ABI "), f"{layers}{journal(host)}"
    assert layers["cli"] == layers["documents"] == "on"
    # The container's environment as Docker starts it (image ENV, then the env files): the
    # image has no printenv, and nothing of the other variables is kept or shown.
    env = json.loads(
        host.check_output(f"docker inspect --format '{{{{json .Config.Env}}}}' {CONTAINER}")
    )
    setting = [item.split("=", 1)[1] for item in env if item.startswith("CLAUDE_SANDBOX=")]
    assert setting == ["landlock"]


def test_docker_healthcheck_reports_healthy(host: Any) -> None:
    # The image's HEALTHCHECK (15 s interval) runs `fondation-worker healthcheck` inside.
    deadline = time.monotonic() + 60
    status = ""
    while time.monotonic() < deadline:
        status = inspect(host)["State"].get("Health", {}).get("Status", "")
        if status == "healthy":
            break
        time.sleep(2)
    assert status == "healthy", journal(host)


def test_nothing_listens_on_a_public_address(host: Any) -> None:
    listeners = host.run("ss -Hltn").stdout.splitlines()
    exposed = []
    for line in listeners:
        local = line.split()[3]
        address, _, port = local.rpartition(":")
        address = address.strip("[]")
        if address.startswith("127.") or address == "::1":
            continue
        if int(port) == GIT_FIXTURE_PORT:  # the test fixture, not the deploy
            continue
        if (address, int(port)) == (EGRESS_GATEWAY, EGRESS_PORT):  # the workers' proxy
            continue
        exposed.append(local)
    assert exposed == [], "\n".join(listeners)


FIREWALL_UNIT = "fondation-docker-firewall"


def neighbour_get(host: Any, address: str, port: int) -> str:
    """GET /healthz on address:port from a neighbour: a throwaway container on the outer
    engine, beside this test host, that routes address through the host, as a machine on
    the VPS's segment could. Returns the status line, or "unreachable"."""
    name = getattr(host.backend, "host", None) or host.backend.get_hostname()
    outer = json.loads(
        subprocess.run(
            ["docker", "container", "inspect", name],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    )[0]
    network, settings = next(iter(outer["NetworkSettings"]["Networks"].items()))
    probe = (
        f"ip route add {address}/32 via {settings['IPAddress']} || exit 3; "
        f"timeout 5 bash -c 'exec 3<>/dev/tcp/{address}/{port} && "
        'printf "GET /healthz HTTP/1.0\\r\\n\\r\\n" >&3 && head -n 1 <&3\' '
        "|| echo unreachable"
    )
    result = subprocess.run(
        [
            *("docker", "run", "--rm", "--network", network, "--cap-drop", "ALL"),
            *("--cap-add", "NET_ADMIN", "--entrypoint", "bash", outer["Config"]["Image"]),
            *("-c", probe),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_a_neighbour_cannot_reach_the_health_port_through_the_bridge(host: Any) -> None:
    # Debian's Docker accepts forwarded packets for a port published on 127.0.0.1 only; a
    # DOCKER-USER rule closes that: the docker_engine role's for docker0, the egress_proxy
    # role's for the workers' own network, where the replicas run. Without the rule the same
    # probe gets through, which shows the probe would have caught the exposure.
    address = next(iter(inspect(host)["NetworkSettings"]["Networks"].values()))["IPAddress"]
    assert host.service(FIREWALL_UNIT).is_enabled
    assert host.service(EGRESS_FIREWALL_UNIT).is_enabled
    rules = host.run("iptables -S DOCKER-USER").stdout
    assert "fondation: unpublished container ports" in rules
    assert "fondation: workers egress only through the proxy" in rules
    assert neighbour_get(host, address, 8080) == "unreachable"
    assert host.run(f"systemctl stop {EGRESS_FIREWALL_UNIT}").rc == 0
    try:
        assert neighbour_get(host, address, 8080).startswith("HTTP/1.")
    finally:
        assert host.run(f"systemctl start {EGRESS_FIREWALL_UNIT}").rc == 0
    assert neighbour_get(host, address, 8080) == "unreachable"
    # The host itself still reaches the published port.
    code = host.run(
        f"curl -s -o /dev/null -w '%{{http_code}}' --max-time 5 http://127.0.0.1:{HEALTH_PORT}/healthz"
    ).stdout
    assert code == "200", journal(host)


# --- logs --------------------------------------------------------------------------------


def test_logrotate_config_is_valid(host: Any) -> None:
    result = host.run(f"logrotate -d {LOGROTATE}")
    assert result.rc == 0, result.stdout + result.stderr
    config = host.file(LOGROTATE).content_string
    for directive in ("daily", "compress", "maxsize", "create 0640 fondation-worker"):
        assert directive in config


def test_forced_rotation_keeps_the_worker_writing(host: Any) -> None:
    assert host.file(LOG_FILE).exists, journal(host)
    # The worker creates its file as logrotate's `create` does: owner and group only.
    live = host.file(LOG_FILE)
    assert (live.uid, live.mode) == (10001, 0o640)
    state = "/tmp/logrotate-test.state"
    result = host.run(f"logrotate -f -s {state} {LOGROTATE}")
    assert result.rc == 0, result.stdout + result.stderr
    assert host.file(f"{LOG_FILE}.1").exists, host.run("ls -la /var/log/fondation-worker").stdout
    new = host.file(LOG_FILE)
    assert (new.uid, new.gid, new.mode) == (10001, 10001, 0o640)
    # Every health request is logged at debug level (the scenario's LOG_LEVEL).
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        host.run(f"curl -s -o /dev/null --max-time 3 http://127.0.0.1:{HEALTH_PORT}/healthz")
        if host.file(LOG_FILE).size > 0:
            break
        time.sleep(1)
    assert host.file(LOG_FILE).size > 0, "the worker did not reopen its log file" + journal(host)


# --- a real job (needs the dev backend on the controller) -----------------------------------


def test_worker_completes_a_job_from_the_dev_backend(host: Any) -> None:
    if not os.environ.get("FONDATION_TEST_CONVEX_URL"):
        pytest.skip(
            "FONDATION_TEST_CONVEX_URL is not set: start the dev backend with "
            f"ALLOWED_REPO_HOSTS=github.com,10.213.0.1:{GIT_FIXTURE_PORT} "
            "scripts/devbackend.sh start and export its URL to run this end-to-end check"
        )
    # The CLI in a throwaway container of the same image, with the worker's settings and the
    # dev backend's operator token (enqueue and the job reads are operator calls): it
    # enqueues the fixture repository and follows the job until it ends.
    operator_token = (
        os.environ.get("FONDATION_TEST_OPERATOR_TOKEN") or "local-operator-token-not-secret"
    )
    result = run_throwaway(
        host,
        f"OPERATOR_TOKEN={shlex.quote(operator_token)} "
        "timeout 300 docker run --rm --read-only --cap-drop ALL --user 10001:10001 "
        "--env-file /etc/fondation-worker/worker.env "
        f"--env-file /etc/fondation-worker/replica-{REPLICA}.credential "
        "--env OPERATOR_TOKEN --env GIT_CA_BUNDLE= "
        f"{image_env(host)} enqueue {SAMPLE_REPO} --wait --poll 1",
    )
    output = result.stdout + result.stderr
    assert "refused" not in output, (
        "the dev backend refused the fixture repository: start it with "
        f"ALLOWED_REPO_HOSTS including 10.213.0.1:{GIT_FIXTURE_PORT}\n{output}"
    )
    assert result.rc == 0, output + journal(host, lines=80)
    assert "completed" in output, output
