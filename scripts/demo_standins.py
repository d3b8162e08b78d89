"""The outer-boundary stand-ins `make deploy`'s demo job uses when the machine has neither
Claude credentials nor GitHub: an HTTPS git server holding one small sample repository and
the scripted Messages API (tests/support/fakes) the real pinned ``claude`` CLI in the worker
image talks to. Development stand-ins only: no production inventory ever points at them.

Run by scripts/demo-standins.sh (``serve``) as a module from the repository root
(``python -m scripts.demo_standins``, so tests.support imports), in the background. It
listens on ``--host`` (the Docker bridge gateway, so the worker container inside the local
target reaches it) and writes ``--state``/standins.json once both answer:
the repository URL, the git host, the CA certificate and the Messages API's base URL.
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
from pathlib import Path

from tests.support.fakes.anthropic_api import FakeAnthropic
from tests.support.fakes.pipeline_model import PipelineModel
from tests.support.git_server import GitServer

# What the demo course is generated from: small, so the job takes seconds, but a real
# repository the worker clones over HTTPS like any other.
SAMPLE_REPOSITORY = {
    "README.md": (
        "# Hello queue\n\nA tiny job queue: `Job` is a unit of work and `main()` runs one.\n"
    ),
    "main.py": "from pkg.job import Job\n\n\ndef main():\n    Job().run()\n",
    "pkg/job.py": "class Job:\n    def run(self):\n        print('hi')\n",
}


def serve(host: str, git_port: int, api_port: int, state: Path) -> None:
    state.mkdir(parents=True, exist_ok=True)
    git = GitServer(root=state / "git", port=git_port, bind_host=host)
    repo_url = git.add_repo("fondation-demo", "hello-queue", SAMPLE_REPOSITORY)
    git.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with FakeAnthropic(PipelineModel(), host=host, port=api_port) as api:
        info = {
            "repo_url": repo_url,
            "git_host": git.host,
            "ca_file": str(git.cert),
            "anthropic_base_url": api.url,
        }
        (state / "standins.json").write_text(json.dumps(info, indent=2) + "\n")
        print(json.dumps(info), flush=True)
        stop.wait()
    git.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["serve"])
    parser.add_argument("--host", required=True)
    parser.add_argument("--git-port", type=int, required=True)
    parser.add_argument("--api-port", type=int, required=True)
    parser.add_argument("--state", type=Path, required=True)
    args = parser.parse_args()
    serve(args.host, args.git_port, args.api_port, args.state)


if __name__ == "__main__":
    main()
