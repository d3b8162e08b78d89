"""The Landlock launcher (fondation_worker.sandbox) on this machine's kernel.

These run the launcher as the worker does (``python -m fondation_worker.sandbox ... --
command``) around small shell commands, and check what the kernel then allows.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fondation_worker.sandbox import (
    EXIT_SANDBOX_FAILED,
    handled_rights,
    landlock_abi,
    launcher_argv,
)

needs_landlock = pytest.mark.skipif(landlock_abi() < 1, reason="this kernel has no Landlock")


def sandboxed_sh(script: str, rw: Path, ro: Path | None = None) -> subprocess.CompletedProcess[str]:
    argv = launcher_argv(
        sys.executable,
        read_write=[rw],
        read_only=[ro] if ro else [],
        command=["/bin/sh", "-c", script],
    )
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)


def test_launcher_argv_is_an_argument_list() -> None:
    argv = launcher_argv(
        "/py", read_write=[Path("/a b")], read_only=[Path("/c")], command=["claude", "-p", "x"]
    )
    head = ["/py", "-m", "fondation_worker.sandbox"]
    assert argv == [*head, "--rw", "/a b", "--ro", "/c", "--", "claude", "-p", "x"]


def test_handled_rights_grow_with_the_abi() -> None:
    assert handled_rights(1) == (1 << 13) - 1
    assert handled_rights(3) & (1 << 14)
    assert not handled_rights(2) & (1 << 14)
    assert handled_rights(7) == (1 << 16) - 1


@needs_landlock
def test_writes_only_inside_the_granted_dirs(tmp_path: Path) -> None:
    inside, outside = tmp_path / "clone", tmp_path / "other"
    inside.mkdir()
    outside.mkdir()
    (outside / "secret").write_text("s3cret")
    proc = sandboxed_sh(
        f"echo ok > {inside}/a && cat {inside}/a; cat {outside}/secret; echo x > {outside}/b; "
        f"ls {tmp_path}",
        inside,
    )
    assert proc.stdout.strip() == "ok"
    assert proc.stderr.count("Permission denied") == 3, proc.stderr
    assert not (outside / "b").exists()


@needs_landlock
def test_read_only_grant(tmp_path: Path) -> None:
    inside, ro = tmp_path / "clone", tmp_path / "ro"
    inside.mkdir()
    ro.mkdir()
    (ro / "f").write_text("readable")
    proc = sandboxed_sh(f"cat {ro}/f; echo x > {ro}/g", inside, ro)
    assert proc.stdout.strip() == "readable"
    assert "Permission denied" in proc.stderr
    assert not (ro / "g").exists()


@needs_landlock
def test_other_processes_environ_and_signals_are_out_of_reach(tmp_path: Path) -> None:
    holder = subprocess.Popen(  # stands for the worker: its environment holds the token
        [sys.executable, "-c", "import time; time.sleep(60)"],
        env={"PATH": os.environ["PATH"], "WORKER_TOKEN": "canary-0123456789"},
    )
    try:
        proc = sandboxed_sh(
            f"cat /proc/{holder.pid}/environ; kill -STOP {holder.pid} && echo stopped",
            tmp_path,
        )
        assert "canary" not in proc.stdout
        assert "stopped" not in proc.stdout
        assert "Permission denied" in proc.stderr
        if landlock_abi() >= 6:  # signal scoping
            assert "not permitted" in proc.stderr
        assert "State:\tS" in Path(f"/proc/{holder.pid}/status").read_text()
    finally:
        holder.kill()
        holder.wait(10)


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    for args in (["--rw"], ["--bogus", "x", "--", "true"], ["--rw", str(tmp_path)]):
        proc = subprocess.run(
            [sys.executable, "-m", "fondation_worker.sandbox", *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert proc.returncode != 0
        assert "sandbox:" in proc.stderr
    assert EXIT_SANDBOX_FAILED == 126


@needs_landlock
def test_a_command_it_cannot_start_is_one_line_without_a_traceback(tmp_path: Path) -> None:
    """The worker stores the end of the CLI's stderr as the job's error: a launcher failure
    must not put a traceback (and the install paths it names) there."""
    for command in (str(tmp_path / "missing-claude"), "/etc/hostname"):
        proc = subprocess.run(
            launcher_argv(sys.executable, read_write=[tmp_path], read_only=[], command=[command]),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert proc.returncode == EXIT_SANDBOX_FAILED
        assert "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert proc.stderr.startswith("fondation-worker sandbox: cannot start ")
        assert sys.prefix not in proc.stderr


@needs_landlock
def test_a_hard_link_to_a_file_outside_cannot_be_made(tmp_path: Path) -> None:
    """What the hostile-output fake does unsandboxed (links_out): sandboxed, it cannot."""
    inside, outside = tmp_path / "clone", tmp_path / "outside"
    inside.mkdir()
    outside.mkdir()
    (outside / "hard.md").write_text("outside")
    proc = sandboxed_sh(f"ln {outside}/hard.md {inside}/07-hard.md && echo linked", inside)
    assert "linked" not in proc.stdout
    assert not (inside / "07-hard.md").exists()


@needs_landlock
def test_of_etc_only_what_the_cli_reads(tmp_path: Path) -> None:
    """/etc narrowed to the files the pinned CLI was measured to open (sandbox.ETC_READ_ONLY):
    name resolution and CA bundles yes, the user database and the rest of /etc no."""
    proc = sandboxed_sh(
        "cat /etc/hosts >/dev/null && echo hosts; ls /etc/ssl/certs >/dev/null && echo certs; "
        "cat /etc/passwd; cat /etc/hostname; ls /etc",
        tmp_path,
    )
    assert proc.stdout.split() == ["hosts", "certs"], proc.stdout
    assert proc.stderr.count("Permission denied") == 3, proc.stderr
