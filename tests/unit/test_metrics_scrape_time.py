"""The figures the worker reads at scrape time: its pause reason and its free disk."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from fondation_worker.metrics import PAUSE_REASONS, Metrics
from fondation_worker.workspace import disk_bytes


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.render().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_the_pause_reason_is_read_at_each_scrape() -> None:
    reason: list[str | None] = [None]
    metrics = Metrics()
    metrics.watch(paused=lambda: reason[0])
    assert {
        labels[0][1]: v
        for (name, labels), v in samples(metrics).items()
        if name == "fondation_worker_paused"
    } == dict.fromkeys(PAUSE_REASONS, 0.0)
    reason[0] = "auth"
    got = samples(metrics)
    assert got[("fondation_worker_paused", (("reason", "auth"),))] == 1.0
    assert got[("fondation_worker_paused", (("reason", "disk"),))] == 0.0


def test_free_disk_and_its_minimum_in_bytes(tmp_path: Path) -> None:
    metrics = Metrics()
    metrics.watch(disk=lambda: disk_bytes(tmp_path / "not-yet", 512))
    got = samples(metrics)
    assert got[("fondation_worker_disk_min_free_bytes", ())] == 512 * 1024 * 1024
    assert got[("fondation_worker_disk_free_bytes", ())] > 0


def test_an_unreadable_disk_leaves_the_sample_out() -> None:
    def broken() -> tuple[int, int]:
        raise OSError("gone")

    metrics = Metrics()
    metrics.watch(disk=broken)
    assert not any(name.startswith("fondation_worker_disk") for name, _ in samples(metrics))
