"""The mixed load: a seeded plan of jobs and the thread that enqueues (and cancels) them.

Every job carries a dedupe key, so an enqueue retried after a backend outage cannot create
a second job; ``duplicate`` jobs are enqueued again with the same key on purpose.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from pydantic import SecretStr

from fondation_worker.convex_client import ConvexClient
from fondation_worker.errors import ConvexUnavailable

from .cluster import PRIVATE_REPOS, Cluster
from .models import EnqueuedJob, EnqueueReplyRecord, JobKind, PlannedJob

# Share of each kind in the mix; every kind appears at least once.
MIX: dict[JobKind, float] = {
    "normal": 0.38,
    "transient": 0.14,
    "private": 0.14,
    "duplicate": 0.10,
    "poison": 0.06,
    "poison_kill": 0.02,
    "cancel_pending": 0.08,
    "cancel_running": 0.08,
}
T = TypeVar("T")

REPO_OF: dict[JobKind, str] = {
    "normal": "normal",
    "transient": "transient",
    "poison": "poison",
    "poison_kill": "poison-kill",
    "cancel_pending": "slow",
    "cancel_running": "slow",
    "duplicate": "normal",
}


def plan_jobs(count: int, window_s: float, seed: int, run_id: str) -> list[PlannedJob]:
    """``count`` jobs with seeded kinds and enqueue times spread over ``window_s``."""
    rng = random.Random(f"load:{seed}")
    kinds: list[JobKind] = []
    for kind, share in MIX.items():
        kinds += [kind] * max(1, round(count * share))
    while len(kinds) > count:
        kinds.remove("normal")
    kinds += ["normal"] * (count - len(kinds))
    rng.shuffle(kinds)
    offsets = sorted(rng.uniform(0, window_s) for _ in kinds)
    jobs: list[PlannedJob] = []
    for index, (kind, at) in enumerate(zip(kinds, offsets, strict=True)):
        repo = PRIVATE_REPOS[index % len(PRIVATE_REPOS)] if kind == "private" else REPO_OF[kind]
        jobs.append(
            PlannedJob(
                index=index,
                kind=kind,
                at_s=round(at, 3),
                repo=repo,
                dedupe_key=f"chaos-{run_id}-{index}",
                duplicates=2 if kind == "duplicate" else 0,
                max_attempts={"poison": 3, "poison_kill": 2}.get(kind, 10),
            )
        )
    return jobs


class LoadDriver:
    """Enqueues the plan on time; cancels the cancel kinds (running ones once running)."""

    def __init__(
        self,
        cluster: Cluster,
        plan: list[PlannedJob],
        status_of: Callable[[str], str | None],
        t0: float,
        cancel_wait_s: float,
    ) -> None:
        self.cluster = cluster
        self.plan = plan
        self.status_of = status_of
        self.t0 = t0
        self.cancel_wait_s = cancel_wait_s
        self.jobs: list[EnqueuedJob] = []
        self.errors: list[str] = []
        self._pending_cancels: list[EnqueuedJob] = []
        self._thread = threading.Thread(target=self._run, name="load", daemon=True)
        self._lock = threading.Lock()
        self.done = threading.Event()

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def _client(self) -> ConvexClient:
        # enqueue and cancel with a token are operator functions: the operator token.
        return ConvexClient(
            self.cluster.backend_url, SecretStr(self.cluster.operator_token), timeout_s=5
        )

    def _retry(self, what: Callable[[], T]) -> T:
        """Calls fail while the backend is paused: try again (safe: dedupe keys)."""
        deadline = time.monotonic() + 120
        while True:
            try:
                return what()
            except ConvexUnavailable as exc:
                if time.monotonic() > deadline:
                    raise
                self.errors.append(f"{type(exc).__name__}: retried")
                time.sleep(0.5)

    def _run(self) -> None:
        try:
            with self._client() as client:
                for planned in self.plan:
                    while time.time() < self.t0 + planned.at_s:
                        self._cancel_due(client)
                        time.sleep(0.05)
                    self._enqueue(client, planned)
                # Cancels wait for their job to run, however long the queue is.
                deadline = time.monotonic() + self.cancel_wait_s
                while self._pending_cancels and time.monotonic() < deadline:
                    self._cancel_due(client)
                    time.sleep(0.1)
        except Exception as exc:  # reported, and the run fails on the missing jobs
            self.errors.append(f"load stopped: {type(exc).__name__}: {exc}")
        finally:
            for job in self._pending_cancels:
                self.errors.append(f"cancel of {job.job_id} never sent: it never ran")
            self.done.set()

    def _enqueue(self, client: ConvexClient, planned: PlannedJob) -> None:
        url = self.cluster.repo_urls[planned.repo]
        token = self.cluster.repo_tokens.get(planned.repo)

        def once() -> EnqueueReplyRecord:
            reply = client.enqueue(
                url,
                github_token=SecretStr(token) if token else None,
                max_attempts=planned.max_attempts,
                dedupe_key=planned.dedupe_key,
            )
            return EnqueueReplyRecord(job_id=reply.job_id, created=reply.created, t=time.time())

        first = self._retry(once)
        job = EnqueuedJob(plan=planned, job_id=first.job_id, enqueued_t=first.t)
        for _ in range(planned.duplicates):
            job.duplicate_replies.append(self._retry(once))
        with self._lock:
            self.jobs.append(job)
        if planned.kind == "cancel_pending":
            self._cancel(client, job)
        elif planned.kind == "cancel_running":
            self._pending_cancels.append(job)

    def _cancel_due(self, client: ConvexClient) -> None:
        for job in list(self._pending_cancels):
            status = self.status_of(job.job_id)
            if status in ("running", "completed", "dead", "canceled"):
                self._pending_cancels.remove(job)
                self._cancel(client, job)

    def _cancel(self, client: ConvexClient, job: EnqueuedJob) -> None:
        reply = self._retry(lambda: client.cancel(job.job_id))
        job.cancel_t = time.time()
        job.cancel_reply = reply.status

    def snapshot(self) -> list[EnqueuedJob]:
        with self._lock:
            return list(self.jobs)
