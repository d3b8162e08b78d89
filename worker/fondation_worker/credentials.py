"""Stage a read-only mounted Claude login into the writable per-container config dir.

The Claude CLI writes to its config dir at start and during runs, so a read-only mount of
the operator's login hangs it. Production mounts the host credentials directory read-only
at ``CLAUDE_CREDENTIALS_SOURCE``; at start the worker copies its top-level files into
``CLAUDE_CONFIG_DIR`` (a tmpfs in the container). The copy is never written back, so a
replica refreshing its token cannot corrupt the operator's copy.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .workspace import remove_tree

# Larger files are not credentials (transcripts, caches) and are not worth copying.
_MAX_FILE_BYTES = 1_048_576


@dataclass(frozen=True)
class StagedCredentials:
    source: Path
    copied: tuple[str, ...]
    skipped: tuple[str, ...]

    @property
    def has_login(self) -> bool:
        return ".credentials.json" in self.copied


def stage_credentials(source: Path, config_dir: Path) -> StagedCredentials:
    """Copy regular top-level files from ``source`` into ``config_dir`` (mode 0600).

    Symlinks, directories and oversized files are skipped: a credentials directory holds
    only small JSON files, and following a link could copy something the operator never
    meant to expose. A missing or empty source stages nothing.
    """
    copied: list[str] = []
    skipped: list[str] = []
    if not source.is_dir():
        return StagedCredentials(source, (), ())
    config_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    for entry in sorted(source.iterdir(), key=lambda path: path.name):
        if entry.is_symlink() or not entry.is_file() or entry.stat().st_size > _MAX_FILE_BYTES:
            skipped.append(entry.name)
            continue
        target = config_dir / entry.name
        tmp = target.with_name(f".{entry.name}.staging")
        with entry.open("rb") as src:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as dst:
                shutil.copyfileobj(src, dst)
        os.replace(tmp, target)
        copied.append(entry.name)
    return StagedCredentials(source, tuple(copied), tuple(skipped))


LOGIN_FILE = ".credentials.json"


def _read_login(path: Path) -> bytes | None:
    """The login file's bytes when it is a small regular file (never through a link)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        st = os.fstat(handle.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_size > _MAX_FILE_BYTES:
            return None
        return handle.read(_MAX_FILE_BYTES + 1)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.staging")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


def _is_json_object(data: bytes) -> bool:
    try:
        return isinstance(json.loads(data), dict)
    except ValueError:
        return False


@contextlib.contextmanager
def step_config_dir(source_dir: Path | None, dest: Path) -> Iterator[Path]:
    """A fresh config dir for one CLI run holding only the login file, removed afterwards.

    The CLI needs a writable config dir, but the worker's own one also holds the operator's
    user settings and whatever earlier runs left there. Each run gets ``dest`` instead, with
    a copy of ``.credentials.json`` (a subscription login) when the worker has one. If the
    CLI refreshed the login during the run (a new single-use refresh token), the new file is
    copied back, so the next run does not start from a revoked token.
    """
    remove_tree(dest)
    dest.mkdir(mode=0o700, parents=True)
    staged: bytes | None = None
    if source_dir is not None:
        staged = _read_login(source_dir / LOGIN_FILE)
        if staged is not None:
            _write_atomic(dest / LOGIN_FILE, staged)
    try:
        yield dest
    finally:
        try:
            after = _read_login(dest / LOGIN_FILE)
            if (
                source_dir is not None
                and staged is not None
                and after is not None
                and after != staged
                and _is_json_object(after)
            ):
                _write_atomic(source_dir / LOGIN_FILE, after)
        finally:
            remove_tree(dest)


# Shorter strings in a login file are ids, flags or dates, not credentials.
_MIN_LOGIN_SECRET = 16


def login_secrets(config_dir: Path | None) -> list[str]:
    """The string values of the CLI's login file (access and refresh tokens), for redaction.

    Read at use time: the CLI rewrites the file when it refreshes the access token.
    """
    if config_dir is None:
        return []
    data = _read_login(config_dir / LOGIN_FILE)
    if data is None:
        return []
    try:
        parsed = json.loads(data)
    except ValueError:
        return []
    found: list[str] = []
    stack: list[object] = [parsed]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
        elif isinstance(value, str) and len(value) >= _MIN_LOGIN_SECRET:
            found.append(value)
    return found
