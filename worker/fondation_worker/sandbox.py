"""The process layer around the Claude CLI: a Landlock filesystem sandbox, then ``exec``.

Measured in the hardened container (uid 10001, ``--cap-drop ALL``, ``no-new-privileges``,
Docker's default seccomp profile, kernel 6.x): user and mount namespaces are refused
(``unshare``: EPERM), so is ``setuid`` to a per-slot uid, but Landlock (ABI 7 here) works:
it needs no privilege. So each ``claude`` run starts as

    python -m fondation_worker.sandbox --rw <clone> --rw <config> --rw <tmp> ... -- claude ...

which restricts itself with Landlock and then ``exec``s the CLI. The restriction is
inherited by everything the CLI starts and cannot be lifted. The CLI may then open for
writing only its clone, its own per-step config dir and its TMPDIR, and read only those
plus the system directories a program needs (/usr, /lib*, /bin, /sys, /dev, its own /proc
entry) and the few files of /etc the CLI reads: never TEMP_DIR's other workspaces, the
worker's config dir, the mounted login, /etc/passwd or another process's /proc entry
(``/proc/<worker>/environ``). From ABI 6 it cannot signal processes outside its domain
either.

Standard library only, and imported by the launcher before anything else, so the sandboxed
process loads as little as possible before it confines itself.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NoReturn

# x86_64 and aarch64 share these numbers (Linux >= 5.13).
_SYS_CREATE_RULESET = 444
_SYS_ADD_RULE = 445
_SYS_RESTRICT_SELF = 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38

# Filesystem access rights (uapi/linux/landlock.h).
EXECUTE = 1 << 0
WRITE_FILE = 1 << 1
READ_FILE = 1 << 2
READ_DIR = 1 << 3
REMOVE_DIR = 1 << 4
REMOVE_FILE = 1 << 5
MAKE_CHAR = 1 << 6
MAKE_DIR = 1 << 7
MAKE_REG = 1 << 8
MAKE_SOCK = 1 << 9
MAKE_FIFO = 1 << 10
MAKE_BLOCK = 1 << 11
MAKE_SYM = 1 << 12
REFER = 1 << 13  # ABI 2
TRUNCATE = 1 << 14  # ABI 3
IOCTL_DEV = 1 << 15  # ABI 5
SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0  # ABI 6
SCOPE_SIGNAL = 1 << 1  # ABI 6

_FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV
READ_ONLY = EXECUTE | READ_FILE | READ_DIR
DEVICES = READ_FILE | WRITE_FILE | READ_DIR | IOCTL_DEV
READ_WRITE = (
    READ_ONLY
    | WRITE_FILE
    | REMOVE_DIR
    | REMOVE_FILE
    | MAKE_DIR
    | MAKE_REG
    | MAKE_SYM
    | MAKE_FIFO
    | MAKE_SOCK
    | REFER
    | TRUNCATE
)

# What any dynamically linked program needs to start, read-only.
SYSTEM_READ_ONLY = ("/usr", "/lib", "/lib32", "/lib64", "/bin", "/sbin", "/sys")
# Of /etc, only what the pinned CLI (and the git it runs) was seen to open in a worker step
# (strace of the pinned CLI through the pipeline's steps, the API reached by a host name): the
# dynamic loader's cache, name resolution, the time zone, CA bundles (Debian's and the other
# usual places), git's system config, the CLI's managed (operator) settings, machine-id.
# Everything else there - /etc/passwd, an env file of a native deploy, SSH host keys - is
# out of reach.
ETC_READ_ONLY = (
    "/etc/ld.so.cache",
    "/etc/ld.so.preload",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/host.conf",
    "/etc/nsswitch.conf",
    "/etc/gai.conf",
    "/etc/localtime",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/pki",
    "/etc/openssl",
    "/etc/gitconfig",
    "/etc/claude-code",
    "/etc/machine-id",
)
# Not all of /proc: measured on this kernel, Landlock did not stop a sandboxed process from
# reading another process's /proc/<pid>/environ. Only the process's own entry (``/proc/self``
# is resolved when the rule is added, to the pid that then execs the CLI) and a few
# machine-wide files.
PROC_READ_ONLY = (
    "/proc/self",
    "/proc/cpuinfo",
    "/proc/meminfo",
    "/proc/stat",
    "/proc/loadavg",
    "/proc/uptime",
    "/proc/version",
    "/proc/filesystems",
    "/proc/sys",
)
SYSTEM_DEVICES = ("/dev",)

EXIT_SANDBOX_FAILED = 126


class _RulesetAttr(ctypes.Structure):
    _fields_ = (
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    )


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = (("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32))


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def landlock_abi() -> int:
    """The kernel's Landlock ABI version; 0 when Landlock is missing or disabled."""
    if not sys.platform.startswith("linux"):
        return 0
    libc = _libc()
    libc.syscall.restype = ctypes.c_long
    version = libc.syscall(
        _SYS_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(_CREATE_RULESET_VERSION)
    )
    return int(version) if version > 0 else 0


def handled_rights(abi: int) -> int:
    rights = (1 << 13) - 1  # ABI 1: EXECUTE .. MAKE_SYM
    if abi >= 2:
        rights |= REFER
    if abi >= 3:
        rights |= TRUNCATE
    if abi >= 5:
        rights |= IOCTL_DEV
    return rights


class SandboxError(OSError):
    pass


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise SandboxError(err, f"landlock {what}: {os.strerror(err)}")
    return result


def confine(rules: Iterable[tuple[Path, int]]) -> int:
    """Restrict this process (and its future children) to ``rules``; returns the ABI used.

    Each rule grants ``access`` beneath a path; paths that do not exist are skipped. Raises
    ``SandboxError`` when Landlock is unavailable: the caller must not run unconfined.
    """
    abi = landlock_abi()
    if abi < 1:
        raise SandboxError(0, "landlock is not available in this kernel")
    handled = handled_rights(abi)
    libc = _libc()
    libc.syscall.restype = ctypes.c_long
    attr = _RulesetAttr(handled, 0, SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if abi >= 6 else 0)
    ruleset = _check(
        libc.syscall(
            _SYS_CREATE_RULESET,
            ctypes.byref(attr),
            ctypes.c_size_t(ctypes.sizeof(attr)),
            ctypes.c_uint32(0),
        ),
        "create_ruleset",
    )
    try:
        for path, access in rules:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                allowed = access & handled
                if not os.path.isdir(path):
                    allowed &= _FILE_RIGHTS  # the kernel refuses directory rights on a file
                rule = _PathBeneathAttr(allowed, fd)
                _check(
                    libc.syscall(
                        _SYS_ADD_RULE,
                        ctypes.c_int(ruleset),
                        ctypes.c_int(_RULE_PATH_BENEATH),
                        ctypes.byref(rule),
                        ctypes.c_uint32(0),
                    ),
                    f"add_rule {path}",
                )
            finally:
                os.close(fd)
        # Required by restrict_self for an unprivileged process; exec can gain nothing anyway.
        _check(libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
        _check(
            libc.syscall(_SYS_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0)),
            "restrict_self",
        )
    finally:
        os.close(ruleset)
    return abi


def launcher_argv(
    python: str, *, read_write: Sequence[Path], read_only: Sequence[Path], command: Sequence[str]
) -> list[str]:
    """The argument list that runs ``command`` inside the sandbox."""
    argv = [python, "-m", "fondation_worker.sandbox"]
    for path in read_write:
        argv += ["--rw", str(path)]
    for path in read_only:
        argv += ["--ro", str(path)]
    return [*argv, "--", *command]


def _parse(args: Sequence[str]) -> tuple[list[tuple[Path, int]], list[str]]:
    rules: list[tuple[Path, int]] = [(Path(p), READ_ONLY) for p in SYSTEM_READ_ONLY]
    rules += [(Path(p), READ_ONLY) for p in ETC_READ_ONLY]
    rules += [(Path(p), READ_ONLY) for p in PROC_READ_ONLY]
    rules += [(Path(p), DEVICES) for p in SYSTEM_DEVICES]
    i = 0
    while i < len(args):
        flag = args[i]
        if flag == "--":
            return rules, list(args[i + 1 :])
        if flag not in ("--rw", "--ro") or i + 1 >= len(args):
            raise SystemExit(f"sandbox: unexpected argument {flag!r}")
        rules.append((Path(args[i + 1]), READ_WRITE if flag == "--rw" else READ_ONLY))
        i += 2
    raise SystemExit("sandbox: no command after --")


def _fail(message: str) -> NoReturn:
    """One line on stderr and exit: never a traceback (it would name install paths, and the
    worker stores what the CLI's stderr ends with as the job's error)."""
    sys.stderr.write(f"fondation-worker sandbox: {message}\n")
    sys.stderr.flush()
    os._exit(EXIT_SANDBOX_FAILED)


def main(args: Sequence[str]) -> None:
    try:
        rules, command = _parse(args)
    except SystemExit as exc:
        _fail(str(exc.code).removeprefix("sandbox: "))
    if not command:
        _fail("empty command")
    try:
        confine(rules)
    except SandboxError as exc:
        # Never fall back to running unconfined: the worker asked for the sandbox.
        _fail(exc.strerror or "cannot confine the process")
    except Exception as exc:  # any failure ends here, as one line
        _fail(f"cannot confine the process: {type(exc).__name__}")
    try:
        os.execvp(command[0], command)  # noqa: S606 - an argument list, no shell
    except OSError as exc:
        _fail(f"cannot start {os.path.basename(command[0])}: {exc.strerror}")


if __name__ == "__main__":
    main(sys.argv[1:])
