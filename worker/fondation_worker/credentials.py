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
import threading
import time
from collections.abc import Callable, Iterator
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


def login_expiry_ms(data: bytes | None) -> float | None:
    """``expiresAt`` (epoch milliseconds) of a subscription login file, when it has one."""
    if data is None:
        return None
    try:
        parsed = json.loads(data)
    except ValueError:
        return None
    if not isinstance(parsed, dict):
        return None
    for value in (parsed, *parsed.values()):
        if isinstance(value, dict) and isinstance(value.get("expiresAt"), int | float):
            return float(value["expiresAt"])
    return None


def _keep(after: bytes | None, staged: bytes | None, current: bytes | None) -> bool:
    """Whether a run's login file ``after`` replaces the worker's ``current`` one: the run
    changed it (the CLI refreshed), it is a JSON object, and it does not expire sooner than
    ``current`` (an older refresh never overwrites a newer one)."""
    if after is None or after in (staged, current) or not _is_json_object(after):
        return False
    new, old = login_expiry_ms(after), login_expiry_ms(current)
    return new is None or old is None or new >= old


class LoginAborted(Exception):
    """The step was stopped while it waited for another step's login refresh."""


# The CLI refreshes a subscription login's access token when it is used less than 5 minutes
# before it expires (the pinned CLI: ``Date.now()+300000>=expiresAt``). A step whose copy expires
# less than this margin after the step could end might refresh it.
REFRESH_MARGIN_S = 10 * 60
_WATCH_S = 0.2


class LoginBroker:
    """Gives each CLI run its own config dir with a copy of one subscription login, with one
    refresher at a time.

    Refresh tokens are single-use: two concurrent steps refreshing the same copy spend the
    same token, and the second is logged out. So a step is admitted with a plain copy only
    when the copy's access token outlives the step (it cannot need a refresh); a step that
    might refresh takes the *refresh turn*, and steps arriving meanwhile that might refresh
    too wait. As soon as the refresher's copy changes (the CLI wrote a new login), it is
    written back to the worker's config dir and the turn ends: the waiting steps take the
    new login. Logins without ``expiresAt`` (and API keys or tokens in the environment,
    with no login file at all) are copied as before.
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.time,
        *,
        margin_s: float = REFRESH_MARGIN_S,
        watch_s: float = _WATCH_S,
    ) -> None:
        self._clock = clock
        self._margin_s = margin_s
        self._watch_s = watch_s
        self._cond = threading.Condition()
        # Which step holds the refresh turn (a token of its own), if any.
        self._turn: object | None = None
        # Outcome counts, for tests and logs: plain copies, refresh turns, logins written back.
        self.shared = 0
        self.turns = 0
        self.written_back = 0

    def _admit(
        self, source: Path, needed_s: float, abort: Callable[[], bool], turn: object
    ) -> tuple[bytes | None, bool]:
        """The login to stage and whether this step (``turn``) holds the refresh turn."""
        with self._cond:
            while True:
                staged = _read_login(source / LOGIN_FILE)
                expiry = login_expiry_ms(staged)
                left_s = None if expiry is None else expiry / 1000 - self._clock()
                if staged is None or left_s is None or left_s >= needed_s + self._margin_s:
                    self.shared += 1
                    return staged, False
                if self._turn is None:
                    self._turn = turn
                    self.turns += 1
                    return staged, True
                if abort():
                    raise LoginAborted
                self._cond.wait(timeout=0.5)

    def _write_back(self, source: Path, staged: bytes | None, after: bytes | None) -> None:
        """Keep a run's refreshed login as the worker's; call with the condition's lock."""
        if _keep(after, staged, _read_login(source / LOGIN_FILE)):
            assert after is not None
            _write_atomic(source / LOGIN_FILE, after)
            self.written_back += 1

    def _end_turn(self, turn: object) -> None:
        with self._cond:
            if self._turn is turn:  # not a turn another step took since
                self._turn = None
                self._cond.notify_all()

    @contextlib.contextmanager
    def step(
        self,
        source_dir: Path | None,
        dest: Path,
        *,
        needed_s: float,
        abort: Callable[[], bool] = lambda: False,
    ) -> Iterator[Path]:
        """A fresh config dir for one CLI run holding only the login file, removed afterwards.

        The CLI needs a writable config dir, but the worker's own one also holds the
        operator's user settings and whatever earlier runs left there. Each run gets
        ``dest`` instead, with a copy of ``.credentials.json`` (a subscription login) when
        the worker has one. ``needed_s`` is how long the run may last (its timeout). If the
        CLI refreshed the login during the run, the new file is copied back, so the next run
        does not start from a revoked token. Raises ``LoginAborted`` when ``abort`` turns
        true while waiting for the refresh turn.
        """
        token = object()
        staged, turn = (None, False)
        if source_dir is not None:
            staged, turn = self._admit(source_dir, needed_s, abort, token)
        stop = threading.Event()
        watcher: threading.Thread | None = None
        try:
            remove_tree(dest)
            dest.mkdir(mode=0o700, parents=True)
            if staged is not None:
                _write_atomic(dest / LOGIN_FILE, staged)
            if turn and source_dir is not None:
                watcher = threading.Thread(
                    target=self._watch, args=(source_dir, dest, staged, stop, token), daemon=True
                )
                watcher.start()
            yield dest
        finally:
            stop.set()
            if watcher is not None:
                watcher.join(timeout=10)
            try:
                if source_dir is not None:
                    with self._cond:
                        self._write_back(source_dir, staged, _read_login(dest / LOGIN_FILE))
            finally:
                if turn:
                    self._end_turn(token)
                remove_tree(dest)

    def _watch(
        self, source: Path, dest: Path, staged: bytes | None, stop: threading.Event, turn: object
    ) -> None:
        """While the refresher runs: as soon as its copy holds a new login, share it."""
        while not stop.wait(self._watch_s):
            current = _read_login(dest / LOGIN_FILE)
            if current is not None and current != staged and _is_json_object(current):
                with self._cond:
                    self._write_back(source, staged, current)
                self._end_turn(turn)
                return


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
