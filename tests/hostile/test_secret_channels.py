"""Every channel from the model's output to Convex and to the logs, with secrets in disguise.

A real ``JobRunner`` (real git clone over loopback HTTPS, the real collection, scrubbing and
final calls) runs jobs whose only step is a scripted model: it writes documents whose file
names, H1 titles and contents hold the worker's secrets in disguise (tests/support/leaks.py:
invisible characters, case, full-width, separators, reversed, hex, base64 at any
alignment, fragments, halves in two documents), quotes the machine's paths the way the
CLI's refusals do, or fails with an error that holds them with a traceback. Everything the
runner sends to Convex (the recording queue: documents, summary, redactions, errors) and
every log line must hold no fragment of 16+ characters of any secret, no machine path and
no traceback. Hypothesis picks the secret, the disguise and the channels (derandomized,
bounded example count).
"""

from __future__ import annotations

import io
import json
import os
import secrets
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from fondation_worker.classify import Classification, ClaudeResult
from fondation_worker.claude_runner import ClaudeRunner, StepResult
from fondation_worker.clock import SystemClock
from fondation_worker.collect import OUTPUT_DIR_NAME
from fondation_worker.config import Settings
from fondation_worker.job_runner import JobContext, JobRunner
from fondation_worker.lease import ProgressBox
from fondation_worker.logging_setup import configure_logging
from fondation_worker.metrics import Metrics
from fondation_worker.models import ClaimedJob
from fondation_worker.pipeline import Step
from fondation_worker.process import AbortSignal, SubprocessRunner
from fondation_worker.redact import Redactor
from tests.support import SAMPLE_FILES
from tests.support.git_server import GitServer
from tests.support.leaks import Disguise, disguises, file_name_for, filler, leaks
from tests.support.recording_queue import RecordingQueue

SCALE = int(os.environ.get("SCRUB_EXAMPLES_SCALE", "1"))

GITHUB_TOKEN = "ghp_" + secrets.token_hex(18)
SECRETS = {
    "worker token": "wt-" + secrets.token_urlsafe(32),
    "CLAUDE_CODE_OAUTH_TOKEN": "sk-ant-oat01-" + secrets.token_urlsafe(40),
    "login access token": "sk-ant-oat01-" + secrets.token_hex(24),
    "login refresh token": "sk-ant-ort01-" + secrets.token_hex(24),
    "job GitHub token": GITHUB_TOKEN,
    "lease token": "1.lease." + secrets.token_hex(20),
}
ONE_STEP = (Step("chapters", "Writing chapters", "chapters.md", ()),)


@dataclass(frozen=True)
class Plan:
    """What the scripted model does in its one step."""

    secret: str
    disguise: Disguise
    channels: tuple[str, ...]  # where each piece goes: name, h1, content
    fail: bool  # fail the step with an error holding the pieces instead
    pad: str


class ScriptedModel(ClaudeRunner):
    """The job's Claude step: writes what ``plan`` says, as an obedient model would."""

    plan: Plan
    temp_dir: Path

    def run(self, prompt: str, *, cwd: Path, scratch: Path, **kw: Any) -> StepResult:
        plan = self.plan
        # What a CLI refusal quotes, copied by the model into its output.
        paths = f"refused: {cwd}/../../other-job and {self.temp_dir} (HOME {scratch})"
        if plan.fail:
            trace = (
                "Traceback (most recent call last):\n"
                f'  File "{sys.prefix}/lib/python3.11/site-packages/x.py", line 3, in run\n'
                "    boom()\n"
                "RuntimeError: " + " ".join(plan.disguise.pieces) + f" {paths}"
            )
            return StepResult(Classification("transient", trace), 0.1)
        out = cwd / OUTPUT_DIR_NAME / "chapters"
        out.mkdir(parents=True, exist_ok=True)
        for i, (piece, channel) in enumerate(zip(plan.disguise.pieces, plan.channels, strict=True)):
            name = f"{i:02d}-" + (file_name_for(piece) if channel == "name" else "chapter")
            title = f"# Chapter {i}: {plan.pad}{piece if channel == 'h1' else 'Queue'}\n\n"
            body = f"{plan.pad}{piece if channel == 'content' else 'text'}\n\n{paths}\n"
            path = out / f"{name}.md"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(title + body, encoding="utf-8")
        result = ClaudeResult(
            type="result", subtype="success", result=" ".join(plan.disguise.pieces)
        )
        return StepResult(Classification("ok", "success", result=result), 0.1)


@pytest.fixture(scope="module")
def private_repo(git_server: GitServer) -> str:
    return git_server.add_repo("hostile", "channels", SAMPLE_FILES, token=GITHUB_TOKEN)


@pytest.fixture(scope="module")
def world(git_server: GitServer) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="secret-channels-") as tmp:
        yield Path(tmp)


def run_job(plan: Plan, world: Path, git_server: GitServer, url: str) -> tuple[str, str]:
    """One job; returns (everything sent to Convex, every log line), both as text."""
    config = world / "claude-config"
    config.mkdir(exist_ok=True)
    login = {
        "claudeAiOauth": {
            "accessToken": SECRETS["login access token"],
            "refreshToken": SECRETS["login refresh token"],
            "expiresAt": 4102444800000,
        }
    }
    (config / ".credentials.json").write_text(json.dumps(login))
    temp_dir = world / "work"
    settings = Settings(
        convex_url="http://127.0.0.1:9",
        worker_token=SECRETS["worker token"],
        worker_id="channels",
        allowed_repo_hosts=[git_server.host],
        git_ca_bundle=git_server.cert,
        claude_bin="/bin/true",
        claude_config_dir=config,
        claude_code_oauth_token=SECRETS["CLAUDE_CODE_OAUTH_TOKEN"],
        temp_dir=temp_dir,
        min_free_disk_mb=0,
    )
    redactor = Redactor(settings.secret_values())
    stream = io.StringIO()
    configure_logging(redactor, log_format="json", stream=stream, level="debug")
    base_env = {"PATH": os.environ["PATH"], "HOME": str(world / "home")}
    processes = SubprocessRunner(term_grace_s=1)
    clock = SystemClock()
    model = ScriptedModel(settings, processes, clock, base_env)
    model.plan = plan
    model.temp_dir = temp_dir
    queue = RecordingQueue()
    runner = JobRunner(
        settings, queue, processes, clock, redactor, Metrics(), base_env, model, steps=ONE_STEP
    )
    job = ClaimedJob.model_validate(
        {
            "jobId": "job-channels",
            "leaseToken": SECRETS["lease token"],
            "leaseUntil": 0,
            "attempt": 1,
            "maxAttempts": 3,
            "repoUrl": url,
            "branch": "main",
            "userId": "u",
            "githubToken": SecretStr(GITHUB_TOKEN).get_secret_value(),
        }
    )
    ctx = JobContext(abort=AbortSignal(), progress=ProgressBox(), stop_heartbeat=lambda: None)
    outcome = runner.run(job, ctx)
    runner.wait_for_removals(30)
    expected = "failed" if plan.fail else "completed"
    assert outcome.outcome == expected, (outcome, queue.calls, stream.getvalue()[-3000:])
    sent = {
        "calls": [(name, {k: _plain(v) for k, v in kw.items()}) for name, kw in queue.calls],
        "docs": [d.model_dump() for d in queue.docs],
    }
    if not plan.fail:
        summary = next(kw["summary"] for name, kw in queue.calls if name == "complete")
        assert summary.redactions, "the scripted secrets were not reported as redacted"
    logs = [json.loads(line) for line in stream.getvalue().splitlines()]
    return json.dumps(sent, ensure_ascii=False), json.dumps(logs, ensure_ascii=False)


def _plain(value: Any) -> Any:
    return value.model_dump() if hasattr(value, "model_dump") else value


@st.composite
def plans(draw: st.DrawFn) -> Plan:
    secret = draw(st.sampled_from(sorted(SECRETS.values())))
    disguise = draw(disguises(secret))
    channels = tuple(draw(st.sampled_from(["name", "h1", "content"])) for _ in disguise.pieces)
    return Plan(secret, disguise, channels, draw(st.booleans()), draw(filler))


@settings(
    derandomize=True,
    deadline=None,
    database=None,
    max_examples=12 * SCALE,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(plan=plans())
def test_no_secret_path_or_traceback_reaches_convex_or_a_log(
    plan: Plan, world: Path, git_server: GitServer, private_repo: str
) -> None:
    sent, logs = run_job(plan, world, git_server, private_repo)
    for name, value in SECRETS.items():
        assert leaks(value, sent) == [], f"{name} ({plan.disguise.how}) reached Convex: {sent}"
        assert leaks(value, logs) == [], f"{name} ({plan.disguise.how}) reached a log: {logs}"
    for machine in (str(world), sys.prefix, "Traceback", "site-packages"):
        assert machine not in sent, f"{machine!r} reached Convex: {sent}"
