"""playbooks/provision.yml (role scaleway_instance) against the fake Scaleway API.

Each test starts its own fake on loopback and runs ansible-playbook as a subprocess, exactly as
an operator would, with the secret key in SCW_SECRET_KEY. Nothing here reaches Scaleway.
"""

from __future__ import annotations

import copy
import json
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.support.fakes.scaleway_api import FakeScaleway

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

REPO_ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK = REPO_ROOT / "playbooks" / "provision.yml"
VENV_BIN = REPO_ROOT / ".venv" / "bin"
ANSIBLE_PLAYBOOK = (
    VENV_BIN / "ansible-playbook"
    if (VENV_BIN / "ansible-playbook").exists()
    else Path(sys.executable).parent / "ansible-playbook"
)

SECRET = "scw-secret-" + secrets.token_hex(16)
PROJECT = "8f3a1c52-0d4e-4c1b-9a57-2b6f0e9d7c31"
SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFondationWorkerTestKeyOnly0000000000000 ops@test"
NAME = "fondation-worker-1"
TAGS = ["fondation-worker"]
RECAP = re.compile(r"^(?P<host>\S+)\s+:\s+(?P<counts>(?:\w+=\d+\s*)+)$", re.MULTILINE)
WRITES = {"POST", "PATCH", "PUT", "DELETE"}


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def recap(self) -> dict[str, int]:
        matches = [m for m in RECAP.finditer(self.stdout) if m["host"] == "localhost"]
        assert matches, f"no PLAY RECAP for localhost in:\n{self.output[-3000:]}"
        return {k: int(v) for k, v in (p.split("=") for p in matches[-1]["counts"].split())}

    def error_lines(self) -> list[str]:
        return [line for line in self.output.splitlines() if line.startswith("[ERROR]")]


def provision(fake: FakeScaleway, *args: str, secret: str = SECRET, **overrides: Any) -> Run:
    """One ansible-playbook run of playbooks/provision.yml against the fake, as an operator."""
    extra = {
        "scaleway_instance_api_url": overrides.pop("api_url", None) or fake.url,
        "scaleway_instance_project_id": PROJECT,
        "scaleway_instance_name": NAME,
        "scaleway_instance_tags": TAGS,
        "scaleway_instance_ssh_public_key": SSH_KEY,
        # Nothing listens on the fake's documentation-range addresses.
        "scaleway_instance_wait_for_ssh": False,
        "scaleway_instance_poll_interval_s": 0.2,
        "scaleway_instance_wait_timeout_s": 30,
        **overrides,
    }
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(REPO_ROOT / "ansible.cfg"),
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_PIPELINING": "1",
        "SCW_SECRET_KEY": secret,
    }
    env.pop("SCW_DEFAULT_PROJECT_ID", None)
    proc = subprocess.run(
        [
            str(ANSIBLE_PLAYBOOK),
            "-i", "localhost,",
            "-c", "local",
            str(PLAYBOOK),
            "-e", json.dumps(extra),
            *args,
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )  # fmt: skip
    return Run(proc.returncode, proc.stdout, proc.stderr)


def writes(fake: FakeScaleway, since: int = 0) -> list[str]:
    return [f"{r.method} {r.path}" for r in fake.requests[since:] if r.method in WRITES]


def calls(fake: FakeScaleway, since: int = 0) -> list[str]:
    return [f"{r.method} {r.path}" for r in fake.requests[since:]]


def only(items: dict[str, dict[str, Any]]) -> dict[str, Any]:
    assert len(items) == 1, f"expected exactly one, got {len(items)}: {list(items.values())}"
    return next(iter(items.values()))


def assert_one_clear_line(run: Run, *expected: str) -> str:
    assert run.returncode != 0, f"the play should have failed:\n{run.output[-3000:]}"
    lines = [line for line in run.error_lines() if "Scaleway API:" in line]
    assert len(lines) == 1, f"want one Scaleway API error line, got {lines}:\n{run.output[-3000:]}"
    line = lines[0]
    assert run.error_lines() == [line], "nothing else may be reported as an error"
    for text in expected:
        assert text in line, f"{text!r} not in {line!r}"
    assert "Traceback" not in run.output
    assert SECRET not in run.output
    return line


# --- scenarios: each a fake of its own and one or more playbook runs ----------------------
# Scenarios are independent, so a module fixture starts the selected ones on two workers up
# front (ansible-playbook is mostly one busy CPU) and each test waits for the one it checks.


class ScenarioFailed(AssertionError):
    pass


@dataclass
class Step:
    run: Run
    writes: list[str]  # what the fake was asked to change during this run
    state: dict[str, Any]  # the fake's tables after this run
    calls: list[str]  # every request of this run, reads included, in order

    def server(self) -> dict[str, Any]:
        return only(self.state["servers"])


class Session:
    def __init__(self, **fake_options: Any) -> None:
        self.fake = FakeScaleway(SECRET, **fake_options).start()
        self.steps: dict[str, Step] = {}

    def step(
        self, name: str, *args: str, expect_ok: bool = True, **overrides: Any
    ) -> dict[str, Step]:
        before = len(self.fake.requests)
        run = provision(self.fake, *args, **overrides)
        tables = ("servers", "ips", "security_groups", "rules", "volumes", "user_data")
        state = {t: copy.deepcopy(getattr(self.fake, t)) for t in tables}
        self.steps[name] = Step(run, writes(self.fake, before), state, calls(self.fake, before))
        if expect_ok and run.returncode != 0:
            raise ScenarioFailed(f"step {name!r} failed ({run.returncode}):\n{run.output[-5000:]}")
        return self.steps

    def stop_the_server(self) -> None:  # as an operator's poweroff would leave it
        server = only(self.fake.servers)
        server["state"], server["allowed_actions"] = "stopped", ["poweron", "backup"]

    def open_the_security_group(self) -> None:  # as a hand edit in the console would
        group = only(self.fake.security_groups)
        group["inbound_default_policy"] = "accept"
        self.fake.add_rule(group["id"], protocol="TCP", direction="inbound", dest_port_from=8080)

    def close(self) -> None:
        self.fake.stop()


def lifecycle() -> dict[str, Step]:
    session = Session(polls_to_running=2)  # Scaleway takes a while: the role polls
    try:
        session.step("provision", "-v")
        session.step("rerun")
        session.step("destroy", "-v", scaleway_instance_state="absent")
        return session.step("destroy again", scaleway_instance_state="absent")
    finally:
        session.close()


DYNAMIC_SBS: dict[str, Any] = {
    "scaleway_instance_flexible_ip": False,
    "scaleway_instance_image": "debian_trixie",
}


def stopped_server() -> dict[str, Step]:
    session = Session()
    try:
        session.step("provision", **DYNAMIC_SBS)
        session.stop_the_server()
        session.open_the_security_group()
        session.step("rerun on a stopped server", **DYNAMIC_SBS)
        session.stop_the_server()
        return session.step("destroy a stopped server", scaleway_instance_state="absent")
    finally:
        session.close()


# The natural hardening: SSH from one address of each family, which Scaleway answers without
# its /32 or /128.
ONE_ADDRESS = {"scaleway_instance_ssh_allowed_ranges": ["198.51.100.7/32", "2001:db8::7/128"]}


def one_address() -> dict[str, Step]:
    session = Session()
    try:
        session.step("provision", **ONE_ADDRESS)
        return session.step("rerun", **ONE_ADDRESS)
    finally:
        session.close()


def volume_never_detaches() -> dict[str, Step]:
    session = Session(polls_to_detach=10_000)
    try:
        session.step("provision", **DYNAMIC_SBS)
        session.stop_the_server()
        return session.step(
            "destroy",
            expect_ok=False,
            scaleway_instance_state="absent",
            scaleway_instance_wait_timeout_s=1,
        )
    finally:
        session.close()


def single(
    *args: str, quota: str | None = None, down: bool = False, **overrides: Any
) -> Callable[[], dict[str, Step]]:
    """A scenario of one run that may fail."""

    def scenario() -> dict[str, Step]:
        session = Session(quota=quota)
        options = dict(overrides)
        try:
            if down:  # nothing listens at the API URL any more
                options["api_url"] = session.fake.url
                session.close()
            return session.step("run", *args, expect_ok=False, **options)
        finally:
            session.close()

    return scenario


WRONG_SECRET = "scw-wrong-" + secrets.token_hex(8)
SCENARIOS = {  # the longest first
    "lifecycle": lifecycle,
    "stopped server": stopped_server,
    "one address": one_address,
    "volume never detaches": volume_never_detaches,
    "check mode": single("--check"),
    "quota instance": single(quota="instance"),
    "quota standard": single(quota="standard"),
    "wrong token": single("-vvv", secret=WRONG_SECRET),
    "unknown zone": single(scaleway_instance_zone="zz-zzz-9"),
    "unreachable": single(down=True),
    "plain http": single(scaleway_instance_api_url="http://api.scaleway.example"),
    "no secret": single(secret=""),
    "old names": single(scaleway_instance_wait_timeout=30, scaleway_instance_poll_interval=1),
}


TestFunction = TypeVar("TestFunction", bound=Callable[..., None])


def uses(*names: str) -> Callable[[TestFunction], TestFunction]:
    """The scenarios a test checks, so the module fixture can start them ahead."""

    def mark(test: TestFunction) -> TestFunction:
        test.scenarios = names  # type: ignore[attr-defined]
        return test

    return mark


class Scenarios:
    def __init__(self, workers: int) -> None:
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="scenario")
        self.futures: dict[str, Future[dict[str, Step]]] = {}

    def start(self, name: str) -> None:
        if name not in self.futures:
            self.futures[name] = self.pool.submit(SCENARIOS[name])

    def __getitem__(self, name: str) -> dict[str, Step]:
        self.start(name)
        return self.futures[name].result(timeout=600)


@pytest.fixture(scope="module")
def scenarios(request: pytest.FixtureRequest) -> Iterator[Scenarios]:
    selected = {
        name
        for item in request.session.items
        if isinstance(item, pytest.Function) and item.module is sys.modules[__name__]
        for name in getattr(item.function, "scenarios", ())
    }
    runner = Scenarios(workers=max(2, min(4, os.cpu_count() or 2)))
    for name in SCENARIOS:
        if name in selected:
            runner.start(name)
    yield runner
    runner.pool.shutdown(wait=True, cancel_futures=True)


# --- the lifecycle: provision, re-run, destroy -------------------------------------------


@uses("lifecycle")
def test_provision_creates_a_running_server_with_ip_and_ssh_only_group(
    scenarios: Scenarios,
) -> None:
    step = scenarios["lifecycle"]["provision"]
    assert step.run.recap()["changed"] > 0
    assert step.run.recap()["failed"] == 0

    server = step.server()
    assert server["name"] == NAME
    assert server["tags"] == TAGS
    assert server["commercial_type"] == "DEV1-S"
    assert server["image"]["name"] == "Debian Bookworm"
    assert server["state"] == "running"
    assert server["project"] == PROJECT

    ip = only(step.state["ips"])
    assert ip["server"] == {"id": server["id"], "name": NAME}
    assert ip["project"] == PROJECT
    assert server["public_ip"]["address"] == ip["address"]
    assert not server["public_ip"]["dynamic"]
    assert ip["address"] in step.run.stdout  # handed over to the deploy group (add_host)

    group = only(step.state["security_groups"])
    assert server["security_group"]["id"] == group["id"]
    assert group["inbound_default_policy"] == "drop"
    assert group["outbound_default_policy"] == "accept"
    assert group["stateful"] is True
    inbound = [r for r in step.state["rules"][group["id"]] if r["direction"] == "inbound"]
    assert [
        (r["protocol"], r["action"], r["ip_range"], r["dest_port_from"], r["dest_port_to"])
        for r in inbound
    ] == [("TCP", "accept", "0.0.0.0/0", 22, None)]

    assert len(step.state["volumes"]) == 1
    cloud_init = step.state["user_data"][server["id"]]["cloud-init"]
    assert cloud_init.startswith("#cloud-config\n")
    assert SSH_KEY in cloud_init


@uses("lifecycle")
def test_the_secret_key_never_appears_in_the_output(scenarios: Scenarios) -> None:
    for name, step in scenarios["lifecycle"].items():
        assert SECRET not in step.run.output, name


@uses("lifecycle")
def test_a_rerun_changes_nothing(scenarios: Scenarios) -> None:
    steps = scenarios["lifecycle"]
    rerun = steps["rerun"]
    assert rerun.run.recap()["changed"] == 0, rerun.run.stdout[-3000:]
    assert rerun.writes == []
    assert rerun.server()["id"] == steps["provision"].server()["id"]


@uses("lifecycle")
def test_destroy_removes_the_server_its_ip_and_its_volumes(scenarios: Scenarios) -> None:
    steps = scenarios["lifecycle"]
    destroy = steps["destroy"]
    server_id = steps["provision"].server()["id"]
    assert destroy.run.recap()["changed"] > 0
    assert destroy.state["servers"] == {}
    assert destroy.state["ips"] == {}
    assert destroy.state["volumes"] == {}
    assert destroy.state["security_groups"] == {}  # no server uses it any more
    assert f"POST /instance/v1/zones/fr-par-1/servers/{server_id}/action" in destroy.writes

    again = steps["destroy again"]
    assert again.run.recap()["changed"] == 0
    assert again.writes == []


# --- the other paths ---------------------------------------------------------------------


@uses("check mode")
def test_check_mode_on_an_empty_project_reports_and_writes_nothing(scenarios: Scenarios) -> None:
    step = scenarios["check mode"]["run"]
    assert step.run.returncode == 0, step.run.output[-5000:]
    assert step.run.recap()["changed"] > 0  # it says what it would do...
    assert step.writes == []  # ...and does none of it
    assert re.search(r"would send\) POST /servers\] \**\nchanged: ", step.run.stdout)
    assert (step.state["servers"], step.state["security_groups"]) == ({}, {})


@uses("stopped server")
def test_dynamic_ip_and_block_volume(scenarios: Scenarios) -> None:
    step = scenarios["stopped server"]["provision"]
    server = step.server()
    assert step.state["ips"] == {}
    assert server["public_ip"]["dynamic"] is True
    assert step.state["volumes"][server["volumes"]["0"]["id"]]["volume_type"] == "sbs_volume"


@uses("stopped server")
def test_a_rerun_powers_a_stopped_server_on_and_closes_its_group_again(
    scenarios: Scenarios,
) -> None:
    steps = scenarios["stopped server"]
    server_id = steps["provision"].server()["id"]
    step = steps["rerun on a stopped server"]
    group = only(step.state["security_groups"])
    zone = "/instance/v1/zones/fr-par-1"
    assert step.writes == [
        f"PATCH {zone}/security_groups/{group['id']}",
        f"PUT {zone}/security_groups/{group['id']}/rules",
        f"POST {zone}/servers/{server_id}/action",
    ]
    assert step.run.recap()["changed"] == 3
    assert step.server()["state"] == "running"
    assert group["inbound_default_policy"] == "drop"
    inbound = [r for r in step.state["rules"][group["id"]] if r["direction"] == "inbound"]
    assert [(r["protocol"], r["dest_port_from"]) for r in inbound] == [("TCP", 22)]


@uses("stopped server")
def test_destroy_deletes_a_stopped_server_and_its_block_volume(scenarios: Scenarios) -> None:
    steps = scenarios["stopped server"]
    server = steps["provision"].server()
    step = steps["destroy a stopped server"]
    assert (step.state["servers"], step.state["volumes"], step.state["ips"]) == ({}, {}, {})
    assert f"DELETE /instance/v1/zones/fr-par-1/servers/{server['id']}" in step.writes
    volume_id = server["volumes"]["0"]["id"]
    volume = f"/block/v1/zones/fr-par-1/volumes/{volume_id}"
    assert f"DELETE {volume}" in step.writes
    # Block Storage refuses to delete a volume still in_use (the fake answers 412 too): the
    # role read it until the deleted server's reference was gone, and only then deleted it.
    reads = [i for i, call in enumerate(step.calls) if call == f"GET {volume}"]
    assert len(reads) >= 2, step.calls  # the fake keeps it in_use until the 2nd read
    assert step.calls.index(f"DELETE {volume}") > reads[-1]
    assert not any(call.startswith("DELETE /block/v1alpha1/") for call in step.calls)


@uses("volume never detaches")
def test_a_block_volume_that_never_detaches_fails_with_one_clear_line(
    scenarios: Scenarios,
) -> None:
    step = scenarios["volume never detaches"]["destroy"]
    assert step.run.returncode != 0
    lines = step.run.error_lines()
    assert len(lines) == 1, step.run.output[-3000:]
    assert "Scaleway block volume" in lines[0]
    assert "is still in_use after 1 s" in lines[0]
    assert SECRET not in step.run.output
    assert len(step.state["volumes"]) == 1  # not deleted while in use
    assert not any(w.startswith("DELETE /block/") for w in step.writes)


# --- SSH from single addresses: /32 and /128 ----------------------------------------------


@uses("one address")
def test_single_address_ranges_are_answered_without_their_prefix(scenarios: Scenarios) -> None:
    step = scenarios["one address"]["provision"]
    group = only(step.state["security_groups"])
    inbound = [r for r in step.state["rules"][group["id"]] if r["direction"] == "inbound"]
    assert sorted(r["ip_range"] for r in inbound) == ["198.51.100.7", "2001:db8::7"]


@uses("one address")
def test_a_rerun_with_single_address_ranges_changes_nothing(scenarios: Scenarios) -> None:
    rerun = scenarios["one address"]["rerun"]
    assert rerun.run.recap()["changed"] == 0, rerun.run.stdout[-3000:]
    assert rerun.writes == []


# --- errors: one clear line, nothing half-made, no secret --------------------------------


@uses("wrong token")
def test_a_wrong_token_fails_with_one_clear_line(scenarios: Scenarios) -> None:
    step = scenarios["wrong token"]["run"]
    line = assert_one_clear_line(
        step.run, "Scaleway API: denied_authentication: authentication is denied", "HTTP 401"
    )
    assert "SCW_SECRET_KEY" in line
    assert WRONG_SECRET not in step.run.output  # not even at -vvv
    assert step.writes == []


@uses("quota instance", "quota standard")
@pytest.mark.parametrize("style", ["instance", "standard"])
def test_a_quota_fails_with_one_clear_line(scenarios: Scenarios, style: str) -> None:
    step = scenarios[f"quota {style}"]["run"]
    assert_one_clear_line(step.run, "Scaleway API: quotas_exceeded:", "POST /servers", "HTTP 403")
    assert (step.state["servers"], step.state["ips"]) == ({}, {})


@uses("unknown zone")
def test_an_unknown_zone_fails_with_one_clear_line(scenarios: Scenarios) -> None:
    step = scenarios["unknown zone"]["run"]
    assert_one_clear_line(
        step.run, "Scaleway API: unknown_resource:", "HTTP 404", "is 'zz-zzz-9' a Scaleway zone"
    )
    assert step.writes == []


@uses("unreachable")
def test_an_unreachable_api_fails_with_one_clear_line(scenarios: Scenarios) -> None:
    step = scenarios["unreachable"]["run"]
    assert_one_clear_line(step.run, "Scaleway API: unreachable:", "scaleway_instance_api_url")


@uses("plain http")
def test_the_secret_is_never_sent_in_clear_text_off_loopback(scenarios: Scenarios) -> None:
    step = scenarios["plain http"]["run"]
    assert step.run.returncode != 0
    assert "scaleway_instance_api_url must be https" in step.run.output
    assert step.writes == []


@uses("no secret")
def test_no_secret_key_no_call(scenarios: Scenarios) -> None:
    step = scenarios["no secret"]["run"]
    assert step.run.returncode != 0
    assert "No Scaleway secret key: export SCW_SECRET_KEY" in step.run.output


@uses("old names")
def test_a_setting_under_its_old_unitless_name_is_refused_with_the_new_name(
    scenarios: Scenarios,
) -> None:
    """Ignored, the old name would leave the default in force without a word."""
    step = scenarios["old names"]["run"]
    assert step.run.returncode != 0
    for old, new in [
        ("scaleway_instance_wait_timeout", "scaleway_instance_wait_timeout_s"),
        ("scaleway_instance_poll_interval", "scaleway_instance_poll_interval_s"),
    ]:
        assert f"{old} (set {new}, in seconds, instead)" in step.run.output
    assert step.writes == []
