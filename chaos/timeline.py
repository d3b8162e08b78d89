"""The timeline picture: one lane per worker, one bar per job execution (the consecutive
claude steps of one claim), coloured by how it ended; faults drawn over the lanes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.patches import Patch, Rectangle

from .cluster import Lifecycle
from .models import Execution, FaultEvent

COLOURS = {
    "ok": "#4caf50",  # the claim ran all its steps
    "failed": "#ff9800",  # a step failed (transient, poison, auth, disk)
    "cut": "#e53935",  # killed: fence, cancel, shutdown, container death
}
FAULT_COLOURS = {
    "sigkill": "#b71c1c",
    "netcut": "#6a1b9a",
    "pause": "#1565c0",
    "disk": "#795548",
    "rolling": "#00838f",
    "auth": "#ef6c00",
}
GAP_S = 3.0


@dataclass
class Bar:
    worker: str
    job: str
    start: float
    end: float
    state: str


def bars(executions: list[Execution]) -> list[Bar]:
    """Merge each worker's consecutive steps of the same job into one bar."""
    result: list[Bar] = []
    by_worker: dict[str, list[Execution]] = {}
    for execution in executions:
        by_worker.setdefault(execution.worker, []).append(execution)
    for worker, runs in by_worker.items():
        runs.sort(key=lambda e: e.start)
        current: Bar | None = None
        for run in runs:
            state = _state(run)
            if (
                current
                and current.job == run.job
                and run.start - current.end < GAP_S
                and (current.state == "ok")
            ):
                current.end = max(current.end, run.end)
                current.state = state
                continue
            current = Bar(worker, run.job, run.start, run.end, state)
            result.append(current)
    return result


def _state(run: Execution) -> str:
    if run.outcome == "ok":
        return "ok"
    if run.outcome in ("transient", "auth", "write_error"):
        return "failed"
    return "cut"


def draw(
    path: Path,
    executions: list[Execution],
    events: list[FaultEvent],
    lifecycle: list[Lifecycle],
    workers: list[str],
    t0: float,
    title: str,
) -> None:
    lanes = {name: index for index, name in enumerate(workers)}
    all_bars = bars(executions)
    end = max([b.end for b in all_bars] + [e.end for e in events] + [t0 + 60]) - t0
    fig, ax = plt.subplots(figsize=(max(12.0, min(28.0, end / 20)), 1.6 + 0.9 * len(workers)))
    for bar in all_bars:
        if bar.worker not in lanes:
            continue
        ax.barh(
            lanes[bar.worker],
            max(bar.end - bar.start, 0.05),
            left=bar.start - t0,
            height=0.6,
            color=COLOURS[bar.state],
            edgecolor="white",
            linewidth=0.3,
        )
    for event in events:
        colour = FAULT_COLOURS[event.kind]
        spans = event.spans or [
            (lane, event.start, event.end)
            for lane in (lanes if event.target in ("all", "backend") else [event.target])
        ]
        for lane, began, ended in spans:
            if lane not in lanes:
                continue
            ax.add_patch(
                Rectangle(
                    (began - t0, lanes[lane] - 0.45),
                    max(ended - began, 0.3),
                    0.9,
                    facecolor=colour,
                    alpha=0.18,
                    edgecolor=colour,
                    hatch="//",
                )
            )
        ax.axvline(event.start - t0, color=colour, linewidth=1)
        ax.text(
            event.start - t0,
            len(workers) - 0.4,
            event.kind,
            color=colour,
            rotation=60,
            fontsize=8,
            va="bottom",
        )
    for change in lifecycle:
        if change.worker in lanes and change.what == "crashed":
            ax.plot(change.t - t0, lanes[change.worker], marker="x", color="black", markersize=8)
    ax.set_yticks(list(lanes.values()), [f"worker {w}" for w in lanes])
    ax.set_ylim(-0.7, len(workers) + 0.6)
    ax.set_xlim(0, end + 2)
    ax.set_xlabel("seconds since the load started")
    ax.set_title(title, fontsize=10)
    legend = [Patch(color=c, label=f"execution: {s}") for s, c in COLOURS.items()]
    legend += [Patch(color=c, alpha=0.4, label=f"fault: {k}") for k, c in FAULT_COLOURS.items()]
    ax.legend(handles=legend, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=5, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
