"""Prometheus metrics of one worker process, in their own registry.

Every name here is read by the alert rules (monitoring/rules/) and the fleet dashboard
(monitoring/dashboard.py); tests/monitoring holds both to this list.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

DURATION_BUCKETS = (10, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, float("inf"))

# Why a worker claims nothing (Scheduler.paused): each is a sample of fondation_worker_paused.
PAUSE_REASONS = ("auth", "usage_limit", "disk")


class _ReadAtScrape(Collector):
    """Figures read when Prometheus scrapes: the pause and the free disk, never stale."""

    def __init__(
        self,
        paused: Callable[[], str | None] | None,
        disk: Callable[[], tuple[int, int]] | None,
    ) -> None:
        self._paused = paused
        self._disk = disk

    def collect(self) -> Iterable[GaugeMetricFamily]:
        if self._paused is not None:
            family = GaugeMetricFamily(
                "fondation_worker_paused",
                "1 for the reason the worker claims nothing now (auth: Claude login failed, "
                "operator action needed; usage_limit: until the reset; disk: below "
                "MIN_FREE_DISK_MB), else 0",
                labels=["reason"],
            )
            reason = self._paused()
            for name in PAUSE_REASONS:
                family.add_metric([name], 1.0 if reason == name else 0.0)
            yield family
        if self._disk is not None:
            try:
                free, minimum = self._disk()
            except OSError:
                return  # TEMP_DIR unreadable: no sample rather than a wrong one
            yield GaugeMetricFamily(
                "fondation_worker_disk_free_bytes",
                "Free bytes on the filesystem of TEMP_DIR (where jobs clone and run)",
                value=float(free),
            )
            yield GaugeMetricFamily(
                "fondation_worker_disk_min_free_bytes",
                "MIN_FREE_DISK_MB in bytes: below it the worker is not ready",
                value=float(minimum),
            )


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

    def watch(
        self,
        *,
        paused: Callable[[], str | None] | None = None,
        disk: Callable[[], tuple[int, int]] | None = None,
    ) -> None:
        """Read the pause reason and (free, minimum) disk bytes at every scrape."""
        self.registry.register(_ReadAtScrape(paused, disk))

    def render(self) -> bytes:
        return generate_latest(self.registry)
