"""What users see: machine paths become placeholders, tracebacks go (scrub.py)."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

from fondation_worker.classify import ClaudeRun, classify
from fondation_worker.scrub import PathScrubber, drop_tracebacks, install_dirs, machine_places

TEMP = Path("/srv/fondation/tmp-work")


def scrubber(tmp_path: Path) -> PathScrubber:
    return PathScrubber(
        machine_places(
            temp_dir=TEMP,
            config_dir=tmp_path / "claude-config",
            credentials_source=Path("/run/claude-credentials"),
            env={"HOME": "/home/worker"},
            claude_bin="/opt/claude/bin/claude",
        )
    )


def test_every_machine_directory_becomes_its_placeholder(tmp_path: Path) -> None:
    paths = scrubber(tmp_path).with_place(TEMP / "jobs" / "job-1-ab12", "<workspace>")
    text = (
        f"Read of {TEMP}/jobs/job-1-ab12/repo/../x refused; "
        f"TEMP_DIR {TEMP}/jobs; config {tmp_path}/claude-config/.steps/a-b/.credentials.json; "
        "login /run/claude-credentials/.credentials.json; home /home/worker/.claude; "
        f"rule Read(/{TEMP}/jobs/**); cli /opt/claude/bin/claude; python {sys.prefix}/bin/python"
    )
    out = paths.scrub(text)
    assert out == (
        "Read of <workspace>/repo/../x refused; TEMP_DIR <TEMP_DIR>/jobs; "
        "config <CLAUDE_CONFIG_DIR>/.steps/a-b/.credentials.json; "
        "login <CLAUDE_CREDENTIALS>/.credentials.json; home <HOME>/.claude; "
        "rule Read(/<TEMP_DIR>/jobs/**); cli <install>/claude; python <install>/bin/python"
    )


def test_invisible_characters_do_not_hide_a_path(tmp_path: Path) -> None:
    out = scrubber(tmp_path).scrub("see /srv/fon\u200bdation/tmp-\u2066work/jobs")
    assert out == "see <TEMP_DIR>/jobs"


def test_only_whole_path_names_are_replaced(tmp_path: Path) -> None:
    paths = scrubber(tmp_path)
    for text in (
        "/srv/fondation/tmp-workers/x",  # a longer name
        "/x/srv/fondation/tmp-work/y",  # inside another path
        "/usr/bin/env and /tmp/file",  # generic directories are never places
    ):
        assert paths.scrub(text) == text


def test_the_install_directories_are_places() -> None:
    assert Path(sys.prefix) in install_dirs()
    assert any((d / "fondation_worker").is_dir() for d in install_dirs())


PY_TRACE = """Traceback (most recent call last):
  File "/opt/venv/lib/python3.11/site-packages/fondation_worker/sandbox.py", line 262, in main
    os.execvp(command[0], command)
  File "<frozen os>", line 574, in execvp
PermissionError: [Errno 13] Permission denied"""

JS_TRACE = """TypeError: undefined is not an object
    at run (/$bunfs/root/claude:1234:56)
    at async main (/$bunfs/root/claude:99:1)
    at processTicksAndRejections (native)"""


def test_tracebacks_keep_only_the_exception_line() -> None:
    assert drop_tracebacks(PY_TRACE) == "PermissionError: [Errno 13] Permission denied"
    assert drop_tracebacks(JS_TRACE) == "TypeError: undefined is not an object"
    chained = PY_TRACE + (
        "\n\nDuring handling of the above exception, another exception occurred:\n\n" + PY_TRACE
    )
    assert "File " not in drop_tracebacks(chained)
    flat = " ".join(PY_TRACE.split())
    assert "site-packages" not in drop_tracebacks(flat)
    assert drop_tracebacks("error: unknown option '--bogus'") == "error: unknown option '--bogus'"


def test_a_crash_is_classified_without_its_traceback() -> None:
    verdict = classify(
        ClaudeRun(exit_code=1, stdout_tail="", stderr_tail=PY_TRACE), datetime.now(UTC)
    )
    assert verdict.kind == "transient"
    assert "site-packages" not in verdict.reason
    assert "Traceback" not in verdict.reason
    assert "PermissionError" in verdict.reason
