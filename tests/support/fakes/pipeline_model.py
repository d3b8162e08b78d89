"""A scripted model that does the worker's five analysis steps through real tool calls.

It recognises the step from the prompt the worker sent (its "## Step: ..." heading), reads
the README with the Read tool, writes the step's files with the Write tool, then answers
"ok". The probe (no step heading) gets "ok". A test can replace the reply of one step
(``override``) by an error or a slow answer.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from tests.support.fakes.anthropic_api import Reply, Request, Text, ToolUse, Turn

OUT = ".claude-tutorial-output"

STEP_HEADINGS = {
    "## Step: identify the core abstractions": "abstractions",
    "## Step: relationships between abstractions": "relationships",
    "## Step: order the chapters": "chapter_order",
    "## Step: write the chapters": "chapters",
    "## Step: write hands-on tutorials": "tutorials",
}

FILES: dict[str, dict[str, str]] = {
    "abstractions": {
        f"{OUT}/abstractions.yaml": (
            "- name: Job\n  description: A unit of work.\n  files: [pkg/job.py]\n"
        )
    },
    "relationships": {
        f"{OUT}/relationships.yaml": (
            "summary: main runs jobs\nrelationships:\n  - from: main\n    to: Job\n"
        )
    },
    "chapter_order": {f"{OUT}/chapter_order.yaml": "- Job\n- Main\n"},
    "chapters": {
        f"{OUT}/index.md": "# Tiny: a course\n\n1. Job\n2. Main\n",
        f"{OUT}/chapters/01-job.md": "# Chapter 1: Job\n\nA job is a unit of work.\n",
        f"{OUT}/chapters/02-main.md": "# Chapter 2: Main\n\n`main()` prints hi.\n",
    },
    "tutorials": {f"{OUT}/tutorials/01-first-run.md": "# Tutorial: first run\n\nRun main.\n"},
}


def step_of(request: Request) -> str | None:
    text = request.user_text()
    for heading, step in STEP_HEADINGS.items():
        if heading in text:
            return step
    return None


StepOverride = Callable[[Request], Reply]


class PipelineModel:
    """Callable script for ``FakeAnthropic``; thread-safe, settable while a worker runs."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._overrides: dict[str, StepOverride] = {}
        self.files = {step: dict(files) for step, files in FILES.items()}

    def override(self, step: str, reply: StepOverride | None) -> None:
        with self._lock:
            if reply is None:
                self._overrides.pop(step, None)
            else:
                self._overrides[step] = reply

    def __call__(self, request: Request) -> Reply:
        step = step_of(request)
        if step is None:
            return Turn([Text("ok")])
        with self._lock:
            override = self._overrides.get(step)
        if override is not None:
            return override(request)
        if request.turn_index == 0:
            return Turn([ToolUse("Read", {"file_path": "README.md"})])
        if request.turn_index == 1:
            writes = self.files[step]
            return Turn(
                [ToolUse("Write", {"file_path": p, "content": c}) for p, c in writes.items()]
            )
        return Turn([Text("ok")])
