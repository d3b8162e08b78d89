"""The cost of ``fondation-worker healthcheck``, which Docker runs every 15 s in every container.

Against a live worker's /healthz (the local stack), each command runs HEALTH_RUNS times in
turn: ``python -c pass`` with the same interpreter (the floor: a bare start), the console
script ``fondation-worker healthcheck`` (its fast path), and, for reference, the same command
through the full CLI (``python -c 'from fondation_worker.cli import app; app()'``, what the
console script did before). Wall-clock medians; ratio to the floor.

Run: .venv/bin/python -m bench.healthcheck [--json]   (HEALTH_RUNS, default 20)
Target (issue 14): at most 5 times ``python -c pass``.
"""

from __future__ import annotations

import os
import sys
import time

from bench.common import Row, emit, log, percentile, run, small_repo, stack
from tests.support import WORKER_BIN

TARGET_RATIO = 5.0


def timed(cmd: list[str], env: dict[str, str], expect: int) -> float:
    t0 = time.monotonic()
    done = run(cmd, 30, env=env, capture_output=True)
    elapsed = time.monotonic() - t0
    if done.returncode != expect:
        raise RuntimeError(f"{cmd}: exit {done.returncode}: {done.stdout}{done.stderr}")
    return elapsed


def main() -> int:
    runs = int(os.environ.get("HEALTH_RUNS", "20"))
    python = sys.executable
    commands = {
        "floor": ([python, "-c", "pass"], 0),
        "fast": ([str(WORKER_BIN), "healthcheck"], 0),
        "full": ([python, "-c", "from fondation_worker.cli import app; app()", "healthcheck"], 0),
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    with stack("healthcheck") as s:
        s.add_repo("small", small_repo())
        worker = s.start_worker("health")
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HEALTH_BIND": f"127.0.0.1:{worker.health_port}",
        }
        for _ in range(runs):
            for name, (cmd, expect) in commands.items():
                times[name].append(timed(cmd, env, expect))
    med = {name: percentile(values, 50) or 0.0 for name, values in times.items()}
    ratio = med["fast"] / med["floor"]
    log(f"medians: {', '.join(f'{k} {v * 1000:.0f} ms' for k, v in med.items())}")
    rows = [
        Row(
            "healthcheck command cost",
            med["fast"] * 1000,
            "ms",
            f"<= {TARGET_RATIO:.0f}x `python -c pass`",
            ratio <= TARGET_RATIO,
            baseline=f"`python -c pass` {med['floor'] * 1000:.0f} ms",
            ratio=f"{ratio:.1f}x",
            note=(
                f"median of {runs} runs each against a live worker's /healthz; through the full "
                f"CLI (before): {med['full'] * 1000:.0f} ms ({med['full'] / med['floor']:.1f}x)"
            ),
        )
    ]
    emit("healthcheck cost", rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
