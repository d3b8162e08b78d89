"""scripts/host-address.sh, the one source of "the address containers reach this host on"
(the dev backend and the demo stand-ins listen there): the bridge network's IPAM gateway on
Docker CE; on Debian's docker.io 20.10, which reports none, the bridge interface's own
address; and a clear failure, never loopback, when neither tells.

The engines are doubles here: a fake `docker` and a fake `ip` on PATH answering exactly the
calls the script makes, with what those engines print. The last test asks the real engine
and proves a container on its default bridge connects to the address printed.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "host-address.sh"
INSPECT = [
    "network",
    "inspect",
    "bridge",
    "--format",
    "{{range .IPAM.Config}}{{.Gateway}} {{end}}"
    '|{{index .Options "com.docker.network.bridge.name"}}',
]
# `ip -4 -o addr show dev docker0` on the machine docker.io 20.10 runs on.
IP_DOCKER0 = (
    "5: docker0    inet 172.17.0.1/16 brd 172.17.255.255 scope global docker0\\"
    "       valid_lft forever preferred_lft forever\n"
)


def fake(bin_dir: Path, name: str, expected: list[str], stdout: str, rc: int = 0) -> Path:
    """An executable that prints ``stdout`` for exactly ``expected`` argv, logs every call,
    and fails loudly on any other argv."""
    calls = bin_dir / f"{name}.calls"
    expect = bin_dir / f"{name}.expect"
    answer = bin_dir / f"{name}.out"
    expect.write_text("\0".join(expected))
    answer.write_text(stdout)
    path = bin_dir / name
    path.write_text(
        f"#!{sys.executable}\n"
        "import sys\n"
        f"open({str(calls)!r}, 'a').write(' '.join(sys.argv[1:]) + '\\n')\n"
        f"if sys.argv[1:] != open({str(expect)!r}).read().split('\\0'):\n"
        "    sys.exit('unexpected call: ' + repr(sys.argv[1:]))\n"
        f"sys.stdout.write(open({str(answer)!r}).read())\n"
        f"sys.exit({rc})\n"
    )
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return calls


def path_with(bin_dir: Path, *tools: str) -> str:
    """A PATH of ``bin_dir`` (the fakes) plus links to the few real tools the script uses."""
    for tool in ("bash", "awk", "timeout", *tools):
        real = shutil.which(tool)
        assert real, tool
        if not (bin_dir / tool).exists():
            (bin_dir / tool).symlink_to(real)
    return str(bin_dir)


def run(bin_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT)],
        env={"PATH": path_with(bin_dir), **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
    path = tmp_path / "bin"
    path.mkdir()
    return path


def test_docker_ce_the_bridge_gateway(bin_dir: Path) -> None:
    fake(bin_dir, "docker", INSPECT, "172.18.0.1 |docker0\n")
    ip_calls = fake(bin_dir, "ip", ["never"], "")
    done = run(bin_dir)
    assert (done.returncode, done.stdout) == (0, "172.18.0.1\n"), done.stderr
    assert not ip_calls.exists()


def test_an_ipv6_gateway_first_is_passed_over(bin_dir: Path) -> None:
    fake(bin_dir, "docker", INSPECT, "fd00:dead::1 172.18.0.1 |docker0\n")
    done = run(bin_dir)
    assert (done.returncode, done.stdout) == (0, "172.18.0.1\n"), done.stderr


def test_debian_docker_io_without_a_gateway_reads_docker0(bin_dir: Path) -> None:
    # What docker.io 20.10 prints: IPAM config [{"Subnet": "172.17.0.0/16"}], no gateway.
    fake(bin_dir, "docker", INSPECT, " |docker0\n")
    ip_calls = fake(bin_dir, "ip", ["-4", "-o", "addr", "show", "dev", "docker0"], IP_DOCKER0)
    done = run(bin_dir)
    assert (done.returncode, done.stdout) == (0, "172.17.0.1\n"), done.stderr
    assert ip_calls.read_text() == "-4 -o addr show dev docker0\n"


def test_the_bridge_interface_is_the_one_the_network_names(bin_dir: Path) -> None:
    fake(bin_dir, "docker", INSPECT, " |br-fondation\n")
    fake(
        bin_dir,
        "ip",
        ["-4", "-o", "addr", "show", "dev", "br-fondation"],
        "7: br-fondation    inet 10.99.0.1/24 scope global br-fondation\n",
    )
    done = run(bin_dir)
    assert (done.returncode, done.stdout) == (0, "10.99.0.1\n"), done.stderr


def test_neither_tells_it_fails_with_its_reason_and_prints_no_address(bin_dir: Path) -> None:
    fake(bin_dir, "docker", INSPECT, " |docker0\n")
    fake(bin_dir, "ip", ["-4", "-o", "addr", "show", "dev", "docker0"], "", rc=1)
    done = run(bin_dir)
    assert done.returncode == 1
    assert done.stdout == ""  # above all, no 127.0.0.1
    assert "cannot tell the address containers reach this host on" in done.stderr
    assert "docker0 has no IPv4 address" in done.stderr
    assert "FONDATION_HOST_ADDRESS" in done.stderr


def test_an_engine_that_does_not_answer_is_named(bin_dir: Path) -> None:
    fake(
        bin_dir,
        "docker",
        INSPECT,
        "Cannot connect to the Docker daemon at unix:///var/run/docker.sock.\n",
        rc=1,
    )
    done = run(bin_dir)
    assert (done.returncode, done.stdout) == (1, "")
    assert "`docker network inspect bridge` failed" in done.stderr
    assert "Cannot connect to the Docker daemon" in done.stderr


def test_no_docker_command(bin_dir: Path) -> None:
    done = run(bin_dir)
    assert (done.returncode, done.stdout) == (1, "")
    assert "no docker command" in done.stderr


def test_the_override_wins_and_is_checked(bin_dir: Path) -> None:
    docker_calls = fake(bin_dir, "docker", ["never"], "")
    done = run(bin_dir, FONDATION_HOST_ADDRESS="192.168.5.4")
    assert (done.returncode, done.stdout) == (0, "192.168.5.4\n"), done.stderr
    assert not docker_calls.exists()
    for bad in ("192.168.5.400", "localhost", "fd00::1", "1.2.3"):
        refused = run(bin_dir, FONDATION_HOST_ADDRESS=bad)
        assert (refused.returncode, refused.stdout) == (1, ""), bad
        assert "is not an IPv4 address" in refused.stderr


@pytest.mark.parametrize(
    ("script", "state_var", "state_file"),
    [
        ("devbackend.sh", "DEV_BACKEND_STATE", "url"),
        ("demo-standins.sh", "DEMO_STANDINS_STATE", "standins.json"),
    ],
)
def test_the_services_refuse_to_start_on_loopback_instead(
    bin_dir: Path, tmp_path: Path, script: str, state_var: str, state_file: str
) -> None:
    """The bug of issue 26: demo-standins.sh fell back to 127.0.0.1 on docker.io 20.10 and
    the worker container could not clone. Now both services use host-address.sh and start
    nowhere when it cannot tell."""
    fake(bin_dir, "docker", INSPECT, " |docker0\n")
    fake(bin_dir, "ip", ["-4", "-o", "addr", "show", "dev", "docker0"], "")
    state = tmp_path / "state"
    env = {
        "PATH": path_with(bin_dir, "cat", "mkdir", "rm", "dirname", "kill", "sleep", "seq"),
        state_var: str(state),
        "PYTHON": "/nonexistent/python",
    }
    started = subprocess.run(
        ["bash", str(ROOT / "scripts" / script), "start"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert started.returncode == 1, started.stdout + started.stderr
    assert started.stdout == ""
    assert "host-address: cannot tell the address containers reach this host on" in started.stderr
    assert not (state / "pid").exists()
    assert not (state / state_file).exists()
    # Stopping needs no address: `make clean-local` works with the engine gone.
    stopped = subprocess.run(
        ["bash", str(ROOT / "scripts" / script), "stop"],
        env={**env, "PATH": path_with(bin_dir, "cat", "mkdir", "rm", "dirname")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert stopped.returncode == 0, stopped.stderr


@pytest.mark.docker
def test_a_container_on_the_default_bridge_connects_to_the_address() -> None:
    """The real engine (docker.io 20.10 here, Docker CE elsewhere): listen on the address the
    script prints and connect to it from a throwaway container on the default bridge."""
    done = subprocess.run(
        [str(SCRIPT)],
        env={**os.environ, "FONDATION_HOST_ADDRESS": ""},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    address = done.stdout.strip()
    with socket.socket() as server:
        server.bind((address, 0))
        server.listen(1)
        server.settimeout(60)
        port = server.getsockname()[1]
        accepted: list[bytes] = []

        def accept() -> None:
            connection, _ = server.accept()
            with connection:
                accepted.append(connection.recv(64))

        thread = threading.Thread(target=accept)
        thread.start()
        probe = subprocess.run(
            [
                *("docker", "run", "--rm", "--network", "bridge", "debian:bookworm"),
                *("bash", "-c", f"echo hello-from-a-container >/dev/tcp/{address}/{port}"),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        thread.join(timeout=60)
    assert probe.returncode == 0, probe.stderr
    assert accepted == [b"hello-from-a-container\n"]
