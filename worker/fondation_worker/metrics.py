"""Prometheus metrics of one worker process, in their own registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

DURATION_BUCKETS = (10, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, float("inf"))


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.jobs_claimed = Counter(
            "fondation_worker_jobs_claimed", "Jobs claimed from the queue", registry=r
        )
        self.jobs_finished = Counter(
            "fondation_worker_jobs_finished",
            "Jobs this worker stopped working on, by outcome",
            ["outcome"],
            registry=r,
        )
        self.job_duration = Histogram(
            "fondation_worker_job_duration_seconds",
            "Wall time from claim to the job's last call, by outcome",
            ["outcome"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.convex_calls = Counter(
            "fondation_worker_convex_calls",
            "Convex function calls, by function and outcome",
            ["function", "outcome"],
            registry=r,
        )
        self.lease_renew_failures = Counter(
            "fondation_worker_lease_renew_failures", "Heartbeats that failed", registry=r
        )
        self.fenced = Counter(
            "fondation_worker_jobs_fenced",
            "Jobs given up because their lease could not be renewed",
            registry=r,
        )
        self.docs_dropped = Counter(
            "fondation_worker_docs_dropped_total",
            "Generated files left out of a job's documents, by reason",
            ["reason"],
            registry=r,
        )
        self.in_flight = Gauge("fondation_worker_jobs_in_flight", "Jobs running now", registry=r)
        self.claude_steps = Counter(
            "fondation_worker_claude_steps",
            "Claude CLI steps, by step and classification",
            ["step", "outcome"],
            registry=r,
        )
        self.doc_redactions = Counter(
            "fondation_worker_doc_redactions",
            "Secrets masked in generated documents before upload",
            registry=r,
        )
        self.ready = Gauge("fondation_worker_ready", "1 when /readyz says ready", registry=r)
        self.last_tick = Gauge(
            "fondation_worker_loop_last_tick_timestamp_seconds",
            "Wall time of the scheduler loop's last tick",
            registry=r,
        )

        # The wake path (wakeup.py): 1 while jobs:assignments is subscribed and current; 0 while
        # the worker falls back to HTTP polling.
        self.wakeup_subscribed = Gauge(
            "fondation_worker_wakeup_subscribed",
            "1 while the jobs:assignments subscription is live, 0 while polling instead",
            registry=r,
        )
        self.wakeup_connects = Counter(
            "fondation_worker_wakeup_connects",
            "WebSocket connections opened for the jobs:assignments subscription",
            registry=r,
        )
        self.wakeup_down_seconds = Counter(
            "fondation_worker_wakeup_down_seconds",
            "Seconds spent without the subscription, counted when it comes back",
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
