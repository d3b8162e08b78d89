"""Run calls through the official JS client (official_js_client.mjs) from Python tests."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
JS_CLIENT = Path(__file__).resolve().parent / "official_js_client.mjs"


def js_calls(url: str, calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run ``calls`` through the official JS client; one result per call."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is needed for the official JS client")
    done = subprocess.run(
        [node, str(JS_CLIENT)],
        input=json.dumps({"url": url, "calls": calls}),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    results = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    assert len(results) == len(calls), done.stdout
    return results
