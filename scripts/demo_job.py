"""After `make deploy`: enqueue one job in the local dev backend, follow it, then print its
final state and the readiness of the worker on the local target.

With Claude credentials (CLAUDE_CODE_OAUTH_TOKEN or ANTHROPIC_API_KEY exported before
`make deploy`) and internet access the job completes. Without them the worker says so
honestly: not ready, "Claude is not logged in", and the job stays queued for a worker that
can run it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from pydantic import SecretStr

from fondation_worker.convex_client import ConvexClient

ROOT = Path(__file__).resolve().parent.parent
TERMINAL = {"completed", "dead", "canceled"}


def main() -> int:
    url = subprocess.run(
        [str(ROOT / "scripts" / "devbackend.sh"), "url"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.strip()
    # enqueue and jobs:get are operator calls: the dev backend's OPERATOR_TOKEN
    # (scripts/devbackend.sh), never the worker token.
    token = SecretStr(os.environ.get("OPERATOR_TOKEN", "local-operator-token-not-secret"))
    repo = os.environ.get("DEMO_REPO", "https://github.com/octocat/Hello-World")
    wait_s = float(os.environ.get("DEMO_WAIT_SECONDS", "60"))
    target = os.environ.get("FONDATION_LOCAL_TARGET", "fondation-local")

    with ConvexClient(url, token, timeout_s=10) as convex:
        reply = convex.enqueue(repo, dedupe_key=f"demo:{repo}")
        print(f"==> enqueued {repo} as job {reply.job_id} (dev backend {url})")
        deadline = time.monotonic() + wait_s
        while True:
            job = convex.get_job(reply.job_id)
            if job is None or job.status in TERMINAL or time.monotonic() > deadline:
                break
            time.sleep(3)
    print("==> job state")
    print(
        job.model_dump_json(indent=2, by_alias=True, exclude_none=True) if job else "job vanished"
    )
    ready = subprocess.run(
        [
            "docker",
            "exec",
            target,
            "curl",
            "-sS",
            "--max-time",
            "5",
            "http://127.0.0.1:8080/readyz",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    print(f"==> worker readiness on {target} (replica 1)")
    print(ready.stdout.strip() or ready.stderr.strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
