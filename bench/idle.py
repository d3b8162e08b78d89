"""Idle figures: Convex HTTP calls per hour of an idle worker, against fixed 5 s polling, and
the idle worker's resident memory.

Two real workers watch one empty dev backend side by side: ours with the production
defaults (subscribed to jobs:wakeup over the WebSocket, so it only polls every
SAFETY_POLL_MS, 6 minutes) and the baseline, polling at a fixed 5 s like the original queue
(POLL_INTERVAL_MS=5000 IDLE_POLL_MAX_MS=5000, WAKEUP=false). After a warm-up, the bench reads
each worker's Prometheus counter ``fondation_worker_convex_calls_total`` (every function)
once a second for the window and turns the increments into a rate:
(calls - 1) / (last call - first call), so the window's edges do not round the figure. The
window is long enough to hold at least two safety polls (the rate needs two calls).

The RSS is VmRSS of the idle worker process at the end, and of the worker process inside
the image (``docker run``, paused without Claude login) when the image is present.

Run: .venv/bin/python -m bench.idle [--json]   (IDLE_WINDOW_S, default 760; IDLE_WARMUP_S 70)
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import subprocess
import time
from pathlib import Path

from bench.common import (
    Row,
    Worker,
    archive_image_short_id,
    emit,
    image_archive,
    log,
    met_at_most,
    run,
    stack,
)
from tests.support.worker_unit import container_flags

TARGET_CALLS_PER_HOUR = 12.0
TARGET_RSS_MB = 60.0
MB = 1024.0  # VmRSS is in KiB; report MiB


def call_rate(times: list[float]) -> float | None:
    if len(times) < 2 or times[-1] <= times[0]:
        return None
    return (len(times) - 1) / (times[-1] - times[0]) * 3600.0


def watch(workers: list[Worker], seconds: float) -> dict[str, list[float]]:
    """Times at which each worker's call counter went up, sampled every 0.5 s."""
    last = {w.name: w.convex_calls() for w in workers}
    seen: dict[str, list[float]] = {w.name: [] for w in workers}
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.5)
        now = time.time()
        for w in workers:
            value = w.convex_calls()
            if value > last[w.name]:
                seen[w.name].append(now)
                last[w.name] = value
    return seen


def image_ref() -> str | None:
    """The image the deploy ships: the ID in build/images' latest archive name, if loaded."""
    short = archive_image_short_id(image_archive())
    refs = ([short] if short else []) + ["fondation-worker:latest"]
    for ref in refs:
        if run(["docker", "image", "inspect", ref], 60, capture_output=True).returncode == 0:
            return ref
    return None


def container_rss_mb(convex_url: str, token: str) -> tuple[float | None, str]:
    """VmRSS of ``fondation-worker run`` inside the image, idle (30 s after start), run with
    the deploy's hardening: the flags of the role's unit template (tests.support.worker_unit,
    as the chaos fleet), its work volume a tmpfs here."""
    ref = image_ref()
    if ref is None:
        return None, "no worker image loaded (make image)"
    name = f"bench-idle-rss-{secrets.token_hex(3)}"
    port = 18000 + secrets.randbelow(2000)
    unit = container_flags()
    uid, _, gid = unit.user.partition(":")
    work = f"{unit.volume_at('fondation-work-')}:rw,uid={uid},gid={gid},mode=0700"
    env = {
        **os.environ,
        "CONVEX_URL": convex_url,
        "WORKER_TOKEN": token,
        "HEALTH_BIND": f"127.0.0.1:{port}",
    }
    started = run(
        [
            "docker", "run", "-d", "--rm", "--name", name, "--network", "host",
            *unit.hardening_argv(), "--tmpfs", work,
            "-e", "CONVEX_URL", "-e", "WORKER_TOKEN", "-e", "HEALTH_BIND",
            "-e", "ALLOWED_REPO_HOSTS=github.com", ref,
        ],
        120,
        env=env,
        capture_output=True,
    )  # fmt: skip
    if started.returncode != 0:
        return None, f"docker run failed: {started.stderr.strip()[:200]}"
    try:
        time.sleep(30)
        pid = run(["docker", "inspect", "-f", "{{.State.Pid}}", name], 30, capture_output=True)
        root_pid = pid.stdout.strip()
        if not root_pid or root_pid == "0":
            return None, "the container exited: " + started.stdout.strip()[:12]
        children = Path(f"/proc/{root_pid}/task/{root_pid}/children").read_text().split()
        for child in children:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ")
            if b"fondation-worker" in cmdline:
                status = Path(f"/proc/{child}/status").read_text()
                found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
                if found:
                    return int(found.group(1)) / MB, f"image {ref[:19]}, worker process under tini"
        return None, "worker process not found in the container"
    except (OSError, ValueError) as exc:
        return None, f"cannot read the container's process: {exc}"
    finally:
        with contextlib.suppress(subprocess.TimeoutExpired):
            run(["docker", "rm", "-f", name], 60, capture_output=True)


def main() -> int:
    window = float(os.environ.get("IDLE_WINDOW_S", "760"))
    warmup = float(os.environ.get("IDLE_WARMUP_S", "70"))
    with stack("idle") as s:
        ours = s.start_worker("ours")
        base = s.start_worker(
            "baseline", POLL_INTERVAL_MS="5000", IDLE_POLL_MAX_MS="5000", WAKEUP="false"
        )
        log(f"warm-up {warmup:.0f} s, then a {window:.0f} s window")
        time.sleep(warmup)
        seen = watch([ours, base], window)
        rss_native = ours.rss_kb() / MB
        rss_image, image_note = container_rss_mb(s.backend.url, s.token.get_secret_value())
    ours_rate = call_rate(seen["ours"])
    base_rate = call_rate(seen["baseline"])
    ratio = f"{ours_rate / base_rate:.2f}x" if ours_rate and base_rate else ""
    rows = [
        Row(
            "idle Convex HTTP calls per hour per worker",
            ours_rate,
            "/h",
            f"<= {TARGET_CALLS_PER_HOUR:.0f}",
            met_at_most(ours_rate, TARGET_CALLS_PER_HOUR),
            baseline=f"{base_rate:.0f}/h (fixed 5 s polling)" if base_rate else "",
            ratio=ratio,
            note=(
                f"{len(seen['ours'])} and {len(seen['baseline'])} calls counted over "
                f"{window:.0f} s after a {warmup:.0f} s warm-up (Prometheus counters)"
            ),
        ),
        Row(
            "idle worker RSS (native process)",
            rss_native,
            "MiB",
            f"<= {TARGET_RSS_MB:.0f}",
            met_at_most(rss_native, TARGET_RSS_MB),
            note="VmRSS of `fondation-worker run` (venv Python) after the window",
        ),
        Row(
            "idle worker RSS (in the image)",
            rss_image,
            "MiB",
            f"<= {TARGET_RSS_MB:.0f}",
            met_at_most(rss_image, TARGET_RSS_MB),
            note=image_note,
        ),
    ]
    emit("idle", rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
