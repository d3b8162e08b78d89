"""Image figures: total size, size on top of the Claude binary, cold and warm build time.

Run: .venv/bin/python -m bench.image  (prints a table; `--json` for bench/report.py).
`--no-build` measures the existing image (the one build/images' latest archive holds, else
fondation-worker:<version>) without building: what `make bench` does.
Target (issue 5): at most 120 MB on top of the Claude binary.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import docker

ROOT = Path(__file__).resolve().parent.parent
IMAGE = os.environ.get("FONDATION_IMAGE", "fondation-worker")
TARGET_MB_ON_TOP = 120.0
MB = 1_000_000  # docker reports sizes in decimal megabytes


def build(cold: bool) -> float:
    env = dict(os.environ, BUILD_NO_CACHE="1" if cold else "0")
    start = time.monotonic()
    subprocess.run(
        ["bash", str(ROOT / "scripts" / "build-image.sh")],
        check=True,
        env=env,
        cwd=ROOT,
        timeout=3600,
        stdout=subprocess.DEVNULL,
    )
    return time.monotonic() - start


def claude_binary_bytes(client: docker.DockerClient, ref: str) -> int:
    # Read the size from inside the image rather than trusting a constant.
    out = client.containers.run(
        ref,
        [
            "/opt/venv/bin/python",
            "-c",
            "import os; print(os.path.getsize('/usr/local/bin/claude'))",
        ],
        entrypoint=[],
        remove=True,
        network_disabled=True,
    )
    return int(out.decode().strip())


def existing_ref(client: docker.DockerClient, version: str) -> str:
    """The image the latest archive holds (what a deploy ships) when loaded, else the tag."""
    pinned = os.environ.get("BENCH_IMAGE_ARCHIVE")  # bench/report.py pins one for the run
    archive = Path(pinned) if pinned else ROOT / "build" / "images" / f"{IMAGE}-latest.tar.gz"
    match = re.search(r"-([0-9a-f]{12,64})\.tar\.gz$", archive.resolve().name)
    if match:
        try:
            client.images.get(match.group(1))
            return match.group(1)
        except docker.errors.ImageNotFound:
            pass
    return f"{IMAGE}:{version}"


def main() -> int:
    no_build = "--no-build" in sys.argv
    cold_s = None if no_build else build(cold=True)
    warm_s = None if no_build else build(cold=False)
    client = docker.from_env()
    version = subprocess.run(
        [sys.executable, "-c", "import fondation_worker; print(fondation_worker.__version__)"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()
    ref = existing_ref(client, version) if no_build else f"{IMAGE}:{version}"
    size = int(client.images.get(ref).attrs["Size"])
    claude = claude_binary_bytes(client, ref)
    on_top_mb = (size - claude) / MB
    figures = {
        "image_size_mb": round(size / MB, 1),
        "claude_binary_mb": round(claude / MB, 1),
        "image_on_top_of_claude_mb": round(on_top_mb, 1),
        "target_on_top_mb": TARGET_MB_ON_TOP,
        "target_met": on_top_mb <= TARGET_MB_ON_TOP,
        "build_cold_s": None if cold_s is None else round(cold_s, 1),
        "build_warm_s": None if warm_s is None else round(warm_s, 1),
        "image": ref,
    }
    if "--json" in sys.argv:
        print(json.dumps(figures))
        return 0
    print(f"{'figure':<34} {'value':>10}  target")
    print(f"{'image size':<34} {figures['image_size_mb']:>8} MB")
    print(f"{'Claude binary':<34} {figures['claude_binary_mb']:>8} MB")
    met = "met" if figures["target_met"] else "NOT met"
    print(
        f"{'image on top of the Claude binary':<34} {figures['image_on_top_of_claude_mb']:>8} MB"
        f"  <= {TARGET_MB_ON_TOP:.0f} MB ({met})"
    )
    if not no_build:
        print(f"{'build, cold (no cache)':<34} {figures['build_cold_s']:>9} s")
        print(f"{'build, warm (no change)':<34} {figures['build_warm_s']:>9} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
