"""After `make deploy` (scripts/local-deploy.sh): queue one job in the local dev backend and
follow it the way an operator would (`fondation-worker enqueue --wait`, its live progress
line), then print the readiness of the worker on the local target.

The repository is DEMO_REPO (local-deploy.sh sets it to the stand-in git server's sample
unless you exported one). The job completes, through the real claude CLI, against Anthropic's
API when Claude credentials were exported, else against the scripted Messages API stand-in.
A job still running after DEMO_WAIT_SECONDS is left queued; the same command, printed then,
picks it up again (its dedupe key returns the job still queued instead of a new one).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# scripts/devbackend.sh's local operator token (enqueue is an operator call, never the
# worker token's), public on purpose: it only guards that stand-in.
LOCAL_OPERATOR_TOKEN = "local-operator-token-not-secret"  # noqa: S105


def worker_cli() -> str:
    """The fondation-worker of this venv (make puts .venv/bin on PATH; direct runs too)."""
    beside = Path(sys.executable).parent / "fondation-worker"
    if beside.exists():
        return str(beside)
    return shutil.which("fondation-worker") or "fondation-worker"


def main() -> int:
    url = subprocess.run(
        [str(ROOT / "scripts" / "devbackend.sh"), "url"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.strip()
    repo = os.environ.get("DEMO_REPO", "https://github.com/octocat/Hello-World")
    wait_s = float(os.environ.get("DEMO_WAIT_SECONDS", "60"))
    target = os.environ.get("FONDATION_LOCAL_TARGET", "fondation-local")

    # Only what the CLI needs to reach the dev backend: other worker settings exported in
    # this shell must not leak into the demo. OPERATOR_TOKEN is the one devbackend.sh used;
    # an operator command needs no worker token (config.CREDENTIALS).
    kept = ("PATH", "HOME", "LANG", "TERM")
    env = {name: os.environ[name] for name in kept if name in os.environ}
    env["CONVEX_URL"] = url
    env["OPERATOR_TOKEN"] = os.environ.get("OPERATOR_TOKEN", LOCAL_OPERATOR_TOKEN)
    command = [worker_cli(), "enqueue", repo, "--dedupe-key", f"demo:{repo}", "--wait"]
    shown = " ".join(shlex.quote(part) for part in ["fondation-worker", *command[1:]])
    print(f"==> {shown}   (dev backend {url})", flush=True)
    try:
        # stdout stays the terminal: the CLI redraws one progress line in place there.
        code = subprocess.run(command, env=env, timeout=wait_s, check=False).returncode
    except subprocess.TimeoutExpired:
        token = "$OPERATOR_TOKEN" if "OPERATOR_TOKEN" in os.environ else LOCAL_OPERATOR_TOKEN
        print(
            f"\n==> still not finished after {wait_s:.0f} s; the job stays queued. Follow it "
            f"again with:\n    CONVEX_URL={url} OPERATOR_TOKEN={token} {shown}",
            flush=True,
        )
        code = 0

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
    # enqueue --wait: 0 completed, 1 the job ended failed or Convex refused the call,
    # 2 a refused repository or setting, 3 canceled (someone meant it).
    return code if code in (1, 2) else 0


if __name__ == "__main__":
    sys.exit(main())
