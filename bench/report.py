"""The performance report (`make bench`): runs the bench scripts, prints ONE table and writes
it to bench/results.md.

Each bench script stands alone (``python -m bench.<name>`` prints its own table); here each
runs with ``--json`` and its rows are collected. The scripts that wait on timers rather than
on the CPU (idle polling, idle pickup, crash recovery: seconds-scale figures set by poll and
lease timings) run side by side with the deploy bench, each on its own dev backend on a free
port; the CPU-sensitive ones (busy pickup, worker overhead) run afterwards, alone. A script
that fails gives rows marked failed, and the others still run.

Run: .venv/bin/python -m bench.report [--only a.py,b.py]
``--only`` runs just those scripts (a partial report: the table says so, and the last full
report is kept below it, labelled with its own date and commit).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from bench.common import ROOT, Row, fmt_value

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results.md"

# (script, arguments, timeout in seconds)
PARALLEL = [
    ("deploy.py", [], 1500),
    ("idle.py", [], 1200),
    ("pickup.py", ["--mode", "idle"], 900),
    ("crash.py", [], 900),
]
SEQUENTIAL = [
    ("scale.py", [], 3600),
    ("pickup.py", ["--mode", "busy"], 600),
    ("overhead.py", [], 600),
    ("cpu.py", [], 600),
    ("healthcheck.py", [], 300),
    ("image.py", ["--no-build"], 300),
]
FULL_TITLE = "# Performance report"
PREVIOUS_TITLE = "## Last full report"


def start(script: str, args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", f"bench.{Path(script).stem}", *args, "--json"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )


def collect(script: str, proc: subprocess.Popen[str], timeout: float) -> list[Row]:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate(timeout=30)
        return [Row(script, None, "", note=f"FAILED: no result within {timeout:.0f} s")]
    if proc.returncode != 0:
        return [Row(script, None, "", note=f"FAILED: exit {proc.returncode} (see its stderr)")]
    try:
        data = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return [Row(script, None, "", note="FAILED: no JSON result")]
    if script == "image.py":
        return image_rows(data)
    return [Row(**item) for item in data]


def image_rows(data: dict[str, object]) -> list[Row]:
    on_top = float(str(data["image_on_top_of_claude_mb"]))
    return [
        Row(
            "image size on top of the Claude binary",
            on_top,
            "MB",
            f"<= {float(str(data['target_on_top_mb'])):.0f} MB",
            bool(data["target_met"]),
            note=(
                f"image {data['image_size_mb']} MB, Claude binary {data['claude_binary_mb']} MB "
                f"({str(data['image'])[:24]}; existing image, not rebuilt)"
            ),
        )
    ]


def table(rows: list[Row]) -> str:
    lines = [
        "| figure | value | target | met | baseline | ratio | how measured |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        met = "" if r.met is None else ("met" if r.met else "**NOT met**")
        cells = [r.figure, fmt_value(r.value, r.unit), r.target, met, r.baseline, r.ratio, r.note]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(lines)


def only_scripts() -> set[str] | None:
    if "--only" not in sys.argv:
        return None
    return set(sys.argv[sys.argv.index("--only") + 1].split(","))


def last_full_report() -> str:
    """The last full report's text, from results.md (itself, or the section a partial run kept)."""
    if not RESULTS.exists():
        return ""
    text = RESULTS.read_text(encoding="utf-8")
    if text.startswith(FULL_TITLE + "\n"):
        return text[len(FULL_TITLE) :].strip()
    _, found, kept = text.partition(PREVIOUS_TITLE)
    return kept.partition("\n")[2].strip() if found else ""  # without the title's own line


def main() -> int:
    only = only_scripts()
    parallel = [p for p in PARALLEL if only is None or p[0] in only]
    sequential = [p for p in SEQUENTIAL if only is None or p[0] in only]
    started = time.monotonic()
    # One image for the whole run, even if a `make image` elsewhere moves the latest link.
    latest = ROOT / "build" / "images" / "fondation-worker-latest.tar.gz"
    if latest.exists():
        os.environ.setdefault("BENCH_IMAGE_ARCHIVE", str(latest.resolve()))
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = os.getloadavg()[0]
    rows: list[Row] = []
    running = [(script, start(script, args), timeout) for script, args, timeout in parallel]
    for script, proc, timeout in running:
        rows += collect(script, proc, timeout)
    for script, args, timeout in sequential:
        rows += collect(script, start(script, args), timeout)
    wall = time.monotonic() - started
    commit = subprocess.run(
        ["git", "rev-parse", "--short=12", "HEAD"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    ).stdout.strip()
    header = (
        f"# Performance report\n\n`make bench` on {when}, commit {commit or 'unknown'}"
        f"{' (with uncommitted changes)' if dirty else ''}, {os.cpu_count()} CPU(s), load "
        f"average {load:.1f} at the start; the report took {wall / 60:.1f} min (after the "
        "`make image` check).\n"
        "Figures come from this run only (no stored values); the scripts are in bench/ and "
        "each runs alone too. The deploy, idle, idle-pickup and crash benches run side by "
        "side (the last three mostly wait on timers), so the deploy times carry their small "
        f"load; busy pickup and overhead run alone afterwards. Image under test: "
        f"{Path(os.environ.get('BENCH_IMAGE_ARCHIVE', 'n/a')).name}.\n"
    )
    if only is not None:
        ran = ", ".join(name for name, _, _ in [*parallel, *sequential])
        previous = last_full_report()
        header = (
            f"# Performance report (partial)\n\n`bench/report.py --only` on {when}, commit "
            f"{commit or 'unknown'}{' (with uncommitted changes)' if dirty else ''}, "
            f"{os.cpu_count()} CPU(s), load average {load:.1f} at the start, "
            f"{os.getloadavg()[0]:.1f} at the end; took {wall / 60:.1f} min. Only {ran} ran "
            "(side by side as in the full report: crash.py with the timer-bound group, the "
            "others alone, in turn); figures from this run only.\n"
        )
        report = f"{header}\n{table(rows)}\n"
        if previous:
            report += (
                f"\n{PREVIOUS_TITLE} (kept for the benches not run above; its figures "
                f"predate this run)\n\n{previous}\n"
            )
    else:
        report = f"{header}\n{table(rows)}\n"
    RESULTS.write_text(report, encoding="utf-8")
    print(report)
    print(f"written to {RESULTS.relative_to(ROOT)}")
    failed = [r for r in rows if r.note.startswith("FAILED")]
    if "--json" in sys.argv:
        print(json.dumps([asdict(r) for r in rows]))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
