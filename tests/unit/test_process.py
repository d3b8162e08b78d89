from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

from fondation_worker.process import AbortSignal, ProcessSpec, SubprocessRunner, read_tail

PY = sys.executable


def spec(tmp_path: Path, code: str, timeout: float = 30.0, **kw: object) -> ProcessSpec:
    return ProcessSpec(
        argv=[PY, "-c", code],
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"]},
        timeout_s=timeout,
        stdout_path=tmp_path / "out",
        stderr_path=tmp_path / "err",
        **kw,  # type: ignore[arg-type]
    )


def alive(pid: int, within: float = 2.0) -> bool:
    """True if ``pid`` is still running after ``within`` seconds (zombies count as dead)."""
    deadline = time.monotonic() + within
    while _running(pid):
        if time.monotonic() > deadline:
            return True
        time.sleep(0.05)
    return False


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


GRANDCHILD = """
import subprocess, sys, time
child = subprocess.Popen(["sleep", "300"])
open(sys.argv[1] if len(sys.argv) > 1 else "pids", "w").write(str(child.pid))
print("started", flush=True)
time.sleep(300)
"""


def test_success_and_output(tmp_path: Path) -> None:
    result = SubprocessRunner().run(spec(tmp_path, "print('hello'); import sys; sys.exit(3)"))
    assert result.returncode == 3
    assert not result.killed_by_us
    assert read_tail(tmp_path / "out", 100).strip() == "hello"


def test_timeout_kills_the_whole_group(tmp_path: Path) -> None:
    runner = SubprocessRunner(term_grace_s=1.0)
    started = time.monotonic()
    result = runner.run(spec(tmp_path, GRANDCHILD, timeout=1.0))
    assert result.timed_out
    assert time.monotonic() - started < 10
    grandchild = int((tmp_path / "pids").read_text())
    assert not alive(grandchild)


def test_abort_kills_within_a_poll(tmp_path: Path) -> None:
    abort = AbortSignal()
    runner = SubprocessRunner(term_grace_s=1.0)
    box: dict[str, object] = {}
    thread = threading.Thread(
        target=lambda: box.update(r=runner.run(spec(tmp_path, GRANDCHILD), abort))
    )
    thread.start()
    while not (tmp_path / "pids").exists() or not (tmp_path / "pids").read_text():
        time.sleep(0.05)
    t0 = time.monotonic()
    abort.abort("cancel")
    thread.join(10)
    assert time.monotonic() - t0 < 3
    result = box["r"]
    assert result.aborted == "cancel"  # type: ignore[attr-defined]
    assert not alive(int((tmp_path / "pids").read_text()))


def test_fence_uses_sigkill_at_once(tmp_path: Path) -> None:
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "open('ready','w').write('1'); time.sleep(300)"
    )
    abort = AbortSignal()
    runner = SubprocessRunner(term_grace_s=30.0)
    box: dict[str, object] = {}
    thread = threading.Thread(target=lambda: box.update(r=runner.run(spec(tmp_path, code), abort)))
    thread.start()
    while not (tmp_path / "ready").exists():
        time.sleep(0.05)
    t0 = time.monotonic()
    abort.abort("fence")
    thread.join(10)
    assert time.monotonic() - t0 < 2  # no 30 s SIGTERM grace for a fence
    assert box["r"].returncode == -9  # type: ignore[attr-defined]


def test_output_cap(tmp_path: Path) -> None:
    code = "import sys\nwhile True: sys.stdout.write('y' * 65536)"
    result = SubprocessRunner().run(spec(tmp_path, code, max_output_bytes=1_000_000))
    assert result.output_exceeded


def test_watch_can_stop_the_process(tmp_path: Path) -> None:
    calls = []

    def watch() -> str | None:
        calls.append(1)
        return "size" if len(calls) >= 2 else None

    runner = SubprocessRunner(watch_every_s=0.1)
    result = runner.run(spec(tmp_path, "import time; time.sleep(60)"), None, watch)
    assert result.watch_reason == "size"


def test_start_error(tmp_path: Path) -> None:
    result = SubprocessRunner().run(
        ProcessSpec(argv=["/nonexistent/binary"], cwd=tmp_path, env={}, timeout_s=5)
    )
    assert result.start_error
    assert result.returncode is None


def test_already_aborted_does_not_start(tmp_path: Path) -> None:
    abort = AbortSignal()
    abort.abort("shutdown")
    result = SubprocessRunner().run(spec(tmp_path, "open('ran','w')"), abort)
    assert result.aborted == "shutdown"
    assert not (tmp_path / "ran").exists()


def test_abort_priority() -> None:
    abort = AbortSignal()
    assert abort.abort("shutdown")
    assert abort.abort("cancel")
    assert not abort.abort("timeout")
    assert abort.abort("fence")
    assert not abort.abort("cancel")
    assert abort.reason == "fence"
