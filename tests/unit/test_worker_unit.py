"""tests.support.worker_unit: the chaos fleet's containers are built from the role's unit
template, so the production hardening flags are written in one place."""

from __future__ import annotations

import pytest

from tests.support.worker_unit import container_flags, exec_start_argv, parse_docker_run


def test_the_unit_s_hardening_flags_are_read_from_the_template() -> None:
    flags = container_flags("3")
    assert flags.user == "10001:10001"
    assert flags.read_only is True
    assert flags.cap_drop == ["ALL"]
    assert flags.security_opt == ["no-new-privileges"]
    assert flags.pids_limit == 1024
    assert flags.mem_limit is None
    assert flags.tmpfs["/tmp"] == "rw,exec,nosuid,nodev"
    assert flags.tmpfs["/home/worker/.claude"].startswith("rw,noexec,nosuid,nodev,uid=10001")
    assert flags.volumes["fondation-work-3"] == {"bind": "/tmp/fondation", "mode": "rw"}
    assert flags.environment["LOG_FILE"] == "/var/log/fondation-worker/worker-3.log"
    assert flags.labels == {"org.fondation.replica": "3"}
    assert flags.log_config == {"type": "json-file", "config": {"max-size": "10m", "max-file": "3"}}
    assert flags.image == "${FONDATION_WORKER_IMAGE}"
    # One credential per replica, behind the egress proxy (both on by default).
    assert flags.env_files[-1] == "/etc/fondation-worker/replica-3.credential"
    assert flags.network == "fondation-egress"
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        assert flags.environment[name] == "http://172.30.253.1:8888"
    assert flags.environment["NO_PROXY"] == "localhost,127.0.0.1"


def test_without_egress_or_per_worker_credentials_the_unit_has_neither() -> None:
    flags = container_flags(
        "2", fondation_worker_egress=False, fondation_worker_credentials="shared"
    )
    assert flags.network is None
    assert "HTTPS_PROXY" not in flags.environment
    assert not any(f.endswith(".credential") for f in flags.env_files)


def test_role_variables_set_the_host_side_as_an_inventory_would() -> None:
    flags = container_flags(
        "w1",
        fondation_worker_id_prefix="chaos",
        fondation_worker_credentials_dir="/creds",
        fondation_worker_memory_limit="2g",
        fondation_worker_pids_limit=256,
        fondation_worker_extra_volumes=["/bin/fake:/usr/local/bin/claude:ro"],
    )
    assert flags.environment["WORKER_ID"] == "chaos-w1"
    assert flags.volumes["/creds"] == {"bind": "/run/claude-credentials", "mode": "ro"}
    assert flags.volumes["/bin/fake"] == {"bind": "/usr/local/bin/claude", "mode": "ro"}
    assert flags.hardening()["mem_limit"] == "2g"
    assert flags.hardening()["pids_limit"] == 256


def test_an_unknown_flag_in_the_unit_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    import tests.support.worker_unit as worker_unit

    argv = [*exec_start_argv("1")]
    argv.insert(2, "--privileged")
    monkeypatch.setattr(worker_unit, "exec_start_argv", lambda *_a, **_k: argv)
    with pytest.raises(ValueError, match="--privileged"):
        worker_unit.container_flags("1")


def test_the_hardening_as_docker_cli_flags_is_the_unit_s() -> None:
    """bench/idle.py runs `docker run` with these: read back, they confine as the unit does."""
    flags = container_flags("1", fondation_worker_memory_limit="2g")
    argv = flags.hardening_argv()
    assert argv[:3] == ["--user", "10001:10001", "--read-only"]
    assert "--privileged" not in argv
    again = parse_docker_run(["/usr/bin/docker", "run", *argv, "image"])
    assert again.hardening() == flags.hardening()
    assert flags.volume_at("fondation-work-") == "/tmp/fondation"
