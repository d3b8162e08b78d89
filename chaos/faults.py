"""Faults on a seeded schedule, injected one at a time while the load runs.

| fault | what is done | the job it hits should |
|---|---|---|
| sigkill | SIGKILL a worker container, start it again 1 s later | come back by lease expiry |
| netcut | disconnect a worker for 1.5 leases | come back by lease expiry; no overlap (fence) |
| pause | the backend refuses or holds every call for 2.5 heartbeats | keep its lease |
| disk | a side process fills a worker's TEMP_DIR (tmpfs) below MIN_FREE_DISK_MB | be deferred |
| rolling | SIGTERM each worker in turn (docker stop), start it again | drain or be released |
| auth | expired Claude credentials in one worker's config dir, fixed later | be deferred |
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

import docker

from .cluster import CLAUDE_CONFIG, TEMP_DIR, Cluster, Worker
from .models import FAULT_KINDS, FaultEvent, FaultKind, RunConfig
from .observe import StatePoller

# The disk fault defers its job by the worker's DISK_RETRY_MS (5 min): put it first.
FIRST: FaultKind = "disk"


class PlannedFault:
    def __init__(self, at_s: float, kind: FaultKind, target: str) -> None:
        self.at_s = at_s
        self.kind = kind
        self.target = target

    def __repr__(self) -> str:
        return f"{self.kind}@{self.at_s:.0f}s->{self.target}"


def plan_faults(config: RunConfig, window_s: float) -> list[PlannedFault]:
    """Every fault kind at least once, more rounds when the window is long, in a seeded order
    and on seeded targets; the first fault starts 8 s into the load."""
    rng = random.Random(f"faults:{config.seed}")
    rounds = max(1, int(window_s // 200))
    kinds: list[FaultKind] = []
    for round_no in range(rounds):
        batch = [k for k in FAULT_KINDS if not (round_no == 0 and k == FIRST)]
        rng.shuffle(batch)
        kinds += ([FIRST] if round_no == 0 else []) + batch
    start, stop = 8.0, max(30.0, window_s * 0.9)
    step = (stop - start) / len(kinds)
    workers = [f"w{i}" for i in range(1, config.workers + 1)]
    plan: list[PlannedFault] = []
    for index, kind in enumerate(kinds):
        at = start + index * step + rng.uniform(0, step * 0.3)
        target = {"pause": "backend", "rolling": "all"}.get(kind) or rng.choice(workers)
        plan.append(PlannedFault(round(at, 1), kind, target))
    return plan


class FaultInjector:
    def __init__(self, cluster: Cluster, poller: StatePoller, plan: list[PlannedFault], t0: float):
        self.cluster = cluster
        self.poller = poller
        self.plan = plan
        self.t0 = t0
        self.events: list[FaultEvent] = []
        self.errors: list[str] = []
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="faults", daemon=True)
        c = cluster.config
        self.lease_s = c.lease_ms / 1000
        self.bound_s = c.recovery_bound_s

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        handlers: dict[FaultKind, Callable[[PlannedFault], FaultEvent]] = {
            "sigkill": self.sigkill,
            "netcut": self.netcut,
            "pause": self.pause,
            "disk": self.disk,
            "rolling": self.rolling,
            "auth": self.auth,
        }
        try:
            for fault in self.plan:
                while time.time() < self.t0 + fault.at_s:
                    time.sleep(0.1)
                try:
                    self.events.append(handlers[fault.kind](fault))
                except (docker.errors.APIError, RuntimeError, OSError) as exc:
                    self.errors.append(f"{fault!r}: {type(exc).__name__}: {exc}")
        finally:
            self.done.set()

    # --- helpers ------------------------------------------------------------------------

    def _held(self, worker: Worker) -> list[str]:
        self.poller.poll()
        return self.poller.held_by(self.cluster.worker_id(worker))

    def _busy_target(self, fault: PlannedFault) -> Worker:
        """The planned worker if it holds a job now, else a (seeded) busy one: a fault on an
        idle worker shows nothing. Waits up to 5 s for a busy worker."""
        rng = random.Random(f"target:{self.cluster.config.seed}:{fault.at_s}")
        deadline = time.time() + 5
        while True:
            planned = self.cluster.worker(fault.target)
            if self._held(planned):
                return planned
            busy = [w for w in self.cluster.workers if self._held(w)]
            if busy:
                return rng.choice(busy)
            if time.time() > deadline:
                return planned
            time.sleep(0.3)

    # --- the faults ---------------------------------------------------------------------

    def sigkill(self, fault: PlannedFault) -> FaultEvent:
        worker = self._busy_target(fault)
        affected = self._held(worker)
        start = time.time()
        self.cluster.kill(worker)
        time.sleep(1.0)
        self.cluster.start(worker)
        return FaultEvent(
            kind="sigkill",
            target=worker.name,
            start=start,
            end=time.time(),
            affected=affected,
            bound_s=self.bound_s,
            detail="docker kill -s KILL, start after 1 s",
        )

    def netcut(self, fault: PlannedFault) -> FaultEvent:
        worker = self._busy_target(fault)
        network = self.cluster.network
        assert network is not None
        affected = self._held(worker)
        start = time.time()
        network.disconnect(worker.container, force=True)
        hold = self.lease_s * 1.5 + 1
        time.sleep(hold)
        network.connect(worker.container)
        return FaultEvent(
            kind="netcut",
            target=worker.name,
            start=start,
            end=time.time(),
            affected=affected,
            bound_s=self.bound_s,
            detail=f"network disconnect for {hold:.1f} s (lease {self.lease_s:.0f} s)",
        )

    def pause(self, fault: PlannedFault) -> FaultEvent:
        mode = random.Random(f"pause:{self.cluster.config.seed}:{fault.at_s}").choice(
            ["reset", "hang"]
        )
        self.poller.poll()
        affected = self.poller.in_progress()
        hold = self.cluster.config.heartbeat_ms / 1000 * 2.5
        start = time.time()
        self.cluster.admin("pause", {"mode": mode})
        time.sleep(hold)
        self.cluster.admin("resume")
        return FaultEvent(
            kind="pause",
            target="backend",
            start=start,
            end=time.time(),
            affected=affected,
            bound_s=hold + self.bound_s,
            detail=f"/_dev/pause mode={mode} for {hold:.1f} s (heartbeat "
            f"{self.cluster.config.heartbeat_ms / 1000:.0f} s)",
        )

    def disk(self, fault: PlannedFault) -> FaultEvent:
        worker = self.cluster.worker(fault.target)
        keep = max(1, self.cluster.config.min_free_disk_mb // 2)
        fill = f"{TEMP_DIR}/chaos-fill"
        # A side process in the holder container (it shares the tmpfs volume) writes until
        # only ``keep`` MiB are left: below MIN_FREE_DISK_MB.
        code = (
            "import shutil\n"
            f"with open({fill!r}, 'wb') as f:\n"
            f"    while shutil.disk_usage({TEMP_DIR!r}).free > {keep} << 20:\n"
            "        f.write(b'\\0' * (1 << 20)); f.flush()\n"
            f"print(shutil.disk_usage({TEMP_DIR!r}).free >> 20)\n"
        )
        start = time.time()
        free = self.cluster.holder_python(worker, code).strip()
        seen: set[str] = set()
        hold_until = time.time() + 12
        while time.time() < hold_until:
            seen.update(self._held(worker))
            time.sleep(0.5)
        self.cluster.holder_python(worker, f"import os\nos.remove({fill!r})\n")
        return FaultEvent(
            kind="disk",
            target=worker.name,
            start=start,
            end=time.time(),
            affected=sorted(seen),
            bound_s=self.bound_s,
            holder_alive=True,
            detail=f"TEMP_DIR filled to {free} MiB free for 12 s "
            f"(MIN_FREE_DISK_MB {self.cluster.config.min_free_disk_mb})",
        )

    def rolling(self, fault: PlannedFault) -> FaultEvent:
        affected: list[str] = []
        spans: list[tuple[str, float, float]] = []
        start = time.time()
        stop_timeout = self.cluster.config.drain_ms // 1000 + 25
        for worker in self.cluster.workers:
            affected += self._held(worker)
            began = time.time()
            self.cluster.stop(worker, stop_timeout)
            self.cluster.start(worker)
            spans.append((worker.name, began, time.time()))
        return FaultEvent(
            spans=spans,
            kind="rolling",
            target="all",
            start=start,
            end=time.time(),
            affected=affected,
            bound_s=(time.time() - start) + self.bound_s,
            detail=f"docker stop (SIGTERM, drain {self.cluster.config.drain_ms / 1000:.0f} s) "
            "and start, one worker at a time",
        )

    def auth(self, fault: PlannedFault) -> FaultEvent:
        worker = self._busy_target(fault)
        target = f"{CLAUDE_CONFIG}/.credentials.json"
        expired = (
            "import json, time\n"
            f"open({target!r}, 'w').write(json.dumps({{'claudeAiOauth': "
            "{'accessToken': 'expired', 'expiresAt': int(time.time() * 1000) - 3600000}}))\n"
        )
        restore = (
            "import shutil\n"
            f"shutil.copyfile('/run/claude-credentials/.credentials.json', {target!r})\n"
        )
        start = time.time()
        self.cluster.worker_python(worker, expired)
        seen: set[str] = set()
        hold_until = time.time() + 10
        while time.time() < hold_until:
            seen.update(self._held(worker))
            time.sleep(0.5)
        self.cluster.worker_python(worker, restore)
        return FaultEvent(
            kind="auth",
            target=worker.name,
            start=start,
            end=time.time(),
            affected=sorted(seen),
            bound_s=self.bound_s,
            holder_alive=True,
            detail="expired Claude login in CLAUDE_CONFIG_DIR for 10 s, then the mounted one "
            "copied back",
        )
