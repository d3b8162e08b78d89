"""The fleet under test: a Docker network, the dev backend, the TLS git fixture, and N worker
containers from the real image run with the production unit's flags (read from the role's
unit template by tests.support.worker_unit, so they cannot drift apart).

Every Docker object is named ``fondation-chaos-<run>-...``. The dev backend and the git
fixture listen on the network's gateway address, so both this host and the containers reach
them. Each worker's TEMP_DIR is a small tmpfs volume kept mounted by a holder container (so
it survives worker restarts, as production's named volume does, and a side process can fill
it). A supervisor restarts crashed workers, as systemd's ``Restart=always`` does.

The workers run the fake claude inside the Landlock sandbox (the default), so it shares no
directory with the harness: it records its runs through a sink on the gateway
(tests/support/fake_sink.py), which also answers which execution of a job is the first and
kills a worker's container when a ``poison_kill`` job asks for it.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
from docker.models.containers import Container
from docker.models.networks import Network
from docker.types import IPAMConfig, IPAMPool

from tests.support import CHAOS_CLAUDE, DevBackend, free_port, start_dev_backend
from tests.support.fake_sink import FakeSink
from tests.support.git_server import GitServer
from tests.support.worker_unit import container_flags

from .models import RunConfig

# The production unit's container, as the role renders it by default: where the worker's
# uid, TEMP_DIR volume and Claude config tmpfs are.
UNIT = container_flags(fondation_worker_egress=False)
WORKER_UID = int(UNIT.user.partition(":")[0])
TEMP_DIR = UNIT.volume_at("fondation-work-")
CLAUDE_CONFIG = next(path for path in UNIT.tmpfs if path.endswith("/.claude"))
# A whole run's `docker logs` are kept for the report: more than production's rotation size.
CONTAINER_LOG_MAX_SIZE = "50m"
SUBNETS = [f"10.231.{n}.0/24" for n in range(10, 250, 7)]

# Fixture repositories: name -> the kind the fake claude reads from CHAOS_KIND.
REPOS: dict[str, str] = {
    "normal": "normal",
    "transient": "transient",
    "poison": "poison",
    "poison-kill": "poison_kill",
    "slow": "slow",
}
PRIVATE_REPOS = ("private-1", "private-2", "private-3")


@dataclass
class Secrets:
    """The token values the secrets check looks for (names -> values)."""

    values: dict[str, str] = field(default_factory=dict)

    def add(self, name: str, value: str) -> str:
        self.values[name] = value
        return value


@dataclass
class Worker:
    name: str
    container: Container
    holder: Container
    volume: str
    log_dir: Path
    held_down: bool = False  # a fault owns it: the supervisor leaves it alone
    restarts: int = 0


@dataclass
class Lifecycle:
    """Worker container deaths and restarts (ground truth for executions without an end)."""

    t: float
    worker: str
    what: str  # "killed", "stopped", "crashed", "started"


class Cluster:
    def __init__(self, config: RunConfig, run_dir: Path, run_id: str) -> None:
        self.config = config
        self.run_dir = run_dir
        self.run_id = run_id
        self.prefix = f"fondation-chaos-{run_id}"
        self.docker = docker.from_env(timeout=120)
        self.secrets = Secrets()
        self.worker_token = self.secrets.add("WORKER_TOKEN", "chaos-wt-" + secrets.token_hex(24))
        # The load's enqueue and cancel are operator calls: the operator token, never on a
        # worker container (the secrets check looks for it there too).
        self.operator_token = self.secrets.add(
            "OPERATOR_TOKEN", "chaos-op-" + secrets.token_hex(24)
        )
        self.claude_token = self.secrets.add(
            "CLAUDE_OAUTH", "sk-ant-oat01-chaos-" + secrets.token_hex(20)
        )
        self.workers: list[Worker] = []
        self.lifecycle: list[Lifecycle] = []
        self.network: Network | None = None
        self.gateway = ""
        self.backend: DevBackend | None = None
        self.backend_url = ""
        self.git: GitServer | None = None
        self.repo_urls: dict[str, str] = {}
        self.repo_tokens: dict[str, str] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._supervisor: threading.Thread | None = None
        self.shared = run_dir / "shared"
        self.creds = run_dir / "creds"
        self.sink: FakeSink | None = None

    # --- bring up -----------------------------------------------------------------------

    def up(self) -> None:
        self._network()
        self.sink = FakeSink(self.shared / "log", host=self.gateway, on_crash=self._crash).start()
        self._git()
        self._backend()
        self._files()
        for index in range(1, self.config.workers + 1):
            self.workers.append(self._worker(index))
        for worker in self.workers:
            self.wait_started(worker, since=0, timeout=90)
        self._supervisor = threading.Thread(target=self._supervise, name="supervisor", daemon=True)
        self._supervisor.start()

    def _network(self) -> None:
        for subnet in SUBNETS:
            gateway = subnet.replace(".0/24", ".1")
            try:
                self.network = self.docker.networks.create(
                    f"{self.prefix}-net",
                    driver="bridge",
                    ipam=IPAMConfig(pool_configs=[IPAMPool(subnet=subnet, gateway=gateway)]),
                    labels={"org.fondation.chaos": self.run_id},
                )
            except docker.errors.APIError as exc:
                if "overlap" in str(exc).lower() or "conflict" in str(exc).lower():
                    continue
                raise
            self.gateway = gateway
            return
        raise RuntimeError("no free subnet for the chaos network")

    def _git(self) -> None:
        git = GitServer(self.run_dir / "git", bind_host=self.gateway)
        git.start()  # first: the repository URLs carry its port
        files = {"README.md": "# Chaos fixture\n", "main.py": "print('hi')\n"}
        for name, kind in REPOS.items():
            self.repo_urls[name] = git.add_repo("chaos", name, {**files, "CHAOS_KIND": kind})
        for name in PRIVATE_REPOS:
            token = self.secrets.add(f"GITHUB_TOKEN_{name}", "ghp_chaos" + secrets.token_hex(18))
            self.repo_tokens[name] = token
            self.repo_urls[name] = git.add_repo(
                "chaos-private", name, {**files, "CHAOS_KIND": "normal"}, token=token
            )
        self.git = git

    def _backend(self) -> None:
        assert self.git is not None
        self.backend = start_dev_backend(
            self.run_dir,
            self.git.host,
            reclaim_ms=self.config.reclaim_ms,
            port=free_port(self.gateway),
            host=self.gateway,
            worker_token=self.worker_token,
            operator_token=self.operator_token,
            log_path=self.run_dir / "devbackend.log",
            timeout_s=90,
        )
        self.backend_url = self.backend.url

    def _files(self) -> None:
        for directory in (self.shared, self.shared / "log", self.creds):
            directory.mkdir(parents=True, exist_ok=True)
            os.chown(directory, WORKER_UID, WORKER_UID)
        login = {
            "claudeAiOauth": {
                "accessToken": self.claude_token,
                "expiresAt": int((time.time() + 86_400) * 1000),
                "scopes": ["user:inference"],
            }
        }
        path = self.creds / ".credentials.json"
        path.write_text(json.dumps(login))
        os.chown(path, WORKER_UID, WORKER_UID)
        path.chmod(0o600)

    def worker_env(self, name: str) -> dict[str, str]:
        """What production's worker.env carries (the unit adds WORKER_ID and LOG_FILE)."""
        c = self.config
        assert self.git is not None
        return {
            "CONVEX_URL": self.backend_url,
            "WORKER_TOKEN": self.worker_token,
            "LOG_LEVEL": "info",
            "POLL_INTERVAL_MS": str(c.poll_ms),
            "IDLE_POLL_MAX_MS": str(c.idle_poll_max_ms),
            "LEASE_MS": str(c.lease_ms),
            "HEARTBEAT_MS": str(c.heartbeat_ms),
            "CONVEX_TIMEOUT_MS": "2000",
            "DRAIN_TIMEOUT_MS": str(c.drain_ms),
            "AUTH_RECHECK_MS": str(c.auth_recheck_ms),
            "JOB_TIMEOUT_MS": "120000",
            "STEP_TIMEOUT_MS": "60000",
            "CLONE_TIMEOUT_MS": "60000",
            "MIN_FREE_DISK_MB": str(c.min_free_disk_mb),
            "MAX_REPO_MB": "20",
            "ALLOWED_REPO_HOSTS": self.git.host,
            "GIT_CA_BUNDLE": "/run/chaos/git-ca.pem",
            "CLAUDE_ENV_PASSTHROUGH": "CHAOS_SINK,CHAOS_SEED,CHAOS_STEP_MIN_MS,CHAOS_STEP_MAX_MS,"
            "CHAOS_SLOW_STEP_MS",
            "CHAOS_SINK": self.sink.address if self.sink else "",
            "CHAOS_SEED": str(c.seed),
            "CHAOS_STEP_MIN_MS": str(c.step_min_ms),
            "CHAOS_STEP_MAX_MS": str(c.step_max_ms),
            "CHAOS_SLOW_STEP_MS": str(c.slow_step_ms),
        }

    def _worker(self, index: int) -> Worker:
        name = f"w{index}"
        volume = f"{self.prefix}-work-{name}"
        self.docker.volumes.create(
            volume,
            driver="local",
            driver_opts={
                "type": "tmpfs",
                "device": "tmpfs",
                "o": f"size={self.config.temp_dir_mb}m,uid={WORKER_UID},gid={WORKER_UID},mode=0700",
            },
            labels={"org.fondation.chaos": self.run_id},
        )
        labels = {"org.fondation.chaos": self.run_id}
        log_dir = self.run_dir / "logs" / name
        log_dir.mkdir(parents=True, exist_ok=True)
        os.chown(log_dir, WORKER_UID, WORKER_UID)
        assert self.network is not None
        assert self.git is not None
        # The production unit's docker run for replica `name`, its host paths set through the
        # role's own variables, as an inventory would.
        unit = container_flags(
            name,
            # The fleet's own test network, without the egress proxy (nothing to proxy to).
            fondation_worker_egress=False,
            fondation_worker_id_prefix="chaos",
            fondation_worker_credentials_dir=str(self.creds),
            fondation_worker_log_dir=str(log_dir),
            fondation_worker_container_log_max_size=CONTAINER_LOG_MAX_SIZE,
            fondation_worker_extra_volumes=[
                f"{CHAOS_CLAUDE}:/usr/local/bin/claude:ro",
                f"{self.git.cert}:/run/chaos/git-ca.pem:ro",
            ],
        )
        # Production's named work volume is this run's tmpfs volume.
        volumes = {
            (volume if source == f"fondation-work-{name}" else source): bind
            for source, bind in unit.volumes.items()
        }
        hardening = unit.hardening()
        # The holder keeps the tmpfs volume mounted across worker restarts, and is where the
        # side processes (disk filler, TEMP_DIR scans) run: confined as a worker is.
        holder = self.docker.containers.run(
            self.config.image,
            name=f"{self.prefix}-hold-{name}",
            entrypoint=["/opt/venv/bin/python", "-c", "import time\nwhile True: time.sleep(60)"],
            detach=True,
            user=unit.user,
            read_only=unit.read_only,
            cap_drop=unit.cap_drop,
            security_opt=unit.security_opt,
            network_mode="none",
            volumes={volume: {"bind": TEMP_DIR, "mode": "rw"}},
            labels=labels,
        )
        # Networking differs (a test network instead of a published loopback port) and the
        # chaos supervisor restarts containers instead of systemd; the rest is the unit's.
        container = self.docker.containers.run(
            self.config.image,
            name=f"{self.prefix}-{name}",
            detach=True,
            **hardening,
            volumes=volumes,
            network=self.network.name,
            environment={**unit.environment, **self.worker_env(name)},
            log_config=unit.log_config,
            labels={**labels, **unit.labels},
            stop_signal="SIGTERM",
        )
        self._event(name, "started")
        return Worker(name, container, holder, volume, log_dir)

    # --- lifecycle ----------------------------------------------------------------------

    def _event(self, worker: str, what: str) -> None:
        with self._lock:
            self.lifecycle.append(Lifecycle(time.time(), worker, what))

    def worker(self, name: str) -> Worker:
        return next(w for w in self.workers if w.name == name)

    def worker_id(self, worker: Worker) -> str:
        return f"chaos-{worker.name}"

    def status(self, worker: Worker) -> str:
        with contextlib.suppress(docker.errors.APIError):
            worker.container.reload()
        return str(worker.container.status)

    def wait_started(self, worker: Worker, since: float, timeout: float = 60) -> None:
        """Until the worker logged ``worker.started`` after ``since`` (epoch seconds)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            raw: bytes = (
                worker.container.logs(since=int(since)) if since > 0 else worker.container.logs()
            )
            logs = raw.decode(errors="replace")
            if '"worker.started"' in logs:
                return
            if self.status(worker) == "exited" and not worker.held_down and since == 0:
                raise RuntimeError(f"{worker.name} exited at start:\n{logs[-3000:]}")
            time.sleep(0.3)
        raise RuntimeError(f"{worker.name} did not start within {timeout} s")

    def _crash(self, worker_id: str) -> None:
        """A poison_kill job's fake claude asks for its worker to die: SIGKILL the
        container, as if the worker process were killed (the supervisor sees a crash)."""
        with contextlib.suppress(StopIteration, docker.errors.APIError):
            self.worker(worker_id.removeprefix("chaos-")).container.kill(signal="SIGKILL")

    def kill(self, worker: Worker) -> None:
        worker.held_down = True
        worker.container.kill(signal="SIGKILL")
        self._event(worker.name, "killed")

    def stop(self, worker: Worker, timeout_s: int) -> None:
        """SIGTERM, then SIGKILL after ``timeout_s`` (docker stop), as a deploy does."""
        worker.held_down = True
        worker.container.stop(timeout=timeout_s)
        self._event(worker.name, "stopped")

    def start(self, worker: Worker, wait: bool = True) -> None:
        since = time.time()
        worker.container.start()
        worker.restarts += 1
        self._event(worker.name, "started")
        worker.held_down = False
        if wait:
            self.wait_started(worker, since - 1)

    def _supervise(self) -> None:
        """Restart crashed workers after 1 s, like systemd's Restart=always."""
        while not self._stop.wait(0.5):
            for worker in self.workers:
                if worker.held_down:
                    continue
                if self.status(worker) in ("exited", "dead"):
                    self._event(worker.name, "crashed")
                    time.sleep(1)
                    if not worker.held_down and not self._stop.is_set():
                        with contextlib.suppress(docker.errors.APIError):
                            self.start(worker, wait=False)

    # --- side processes -----------------------------------------------------------------

    def holder_python(self, worker: Worker, code: str) -> str:
        """Run Python in the worker's holder (it shares the TEMP_DIR volume)."""
        result = worker.holder.exec_run(["/opt/venv/bin/python", "-c", code], user=str(WORKER_UID))
        output: bytes = result.output
        if result.exit_code != 0:
            raise RuntimeError(f"holder of {worker.name}: {output.decode(errors='replace')[-500:]}")
        return output.decode(errors="replace")

    def worker_python(self, worker: Worker, code: str) -> str:
        result = worker.container.exec_run(["/opt/venv/bin/python", "-c", code])
        output: bytes = result.output
        if result.exit_code != 0:
            raise RuntimeError(f"{worker.name}: {output.decode(errors='replace')[-500:]}")
        return output.decode(errors="replace")

    def admin(self, path: str, body: dict[str, Any] | None = None) -> Any:
        assert self.backend is not None
        return self.backend.admin(path, body)

    def dump(self, table: str) -> list[dict[str, Any]]:
        assert self.backend is not None
        return self.backend.dump(table, limit=100000)

    # --- tear down ----------------------------------------------------------------------

    def stop_supervisor(self) -> None:
        self._stop.set()
        if self._supervisor is not None:
            self._supervisor.join(timeout=10)

    def stop_workers(self) -> None:
        for worker in self.workers:
            worker.held_down = True
            with contextlib.suppress(docker.errors.APIError):
                worker.container.stop(timeout=self.config.drain_ms // 1000 + 15)
            self._event(worker.name, "stopped")

    def save_logs(self) -> dict[str, Path]:
        saved: dict[str, Path] = {}
        for worker in self.workers:
            path = self.run_dir / "logs" / f"{worker.name}.docker.log"
            with contextlib.suppress(docker.errors.APIError):
                path.write_bytes(worker.container.logs(stdout=True, stderr=True))
                saved[worker.name] = path
        return saved

    def down(self) -> None:
        self.stop_supervisor()
        for worker in self.workers:
            for container in (worker.container, worker.holder):
                with contextlib.suppress(docker.errors.APIError):
                    container.remove(force=True)
            with contextlib.suppress(docker.errors.APIError):
                self.docker.volumes.get(worker.volume).remove(force=True)
        if self.network is not None:
            with contextlib.suppress(docker.errors.APIError):
                self.network.remove()
        if self.backend is not None:
            self.backend.stop()
        if self.git is not None:
            self.git.stop()
        if self.sink is not None:
            self.sink.stop()
