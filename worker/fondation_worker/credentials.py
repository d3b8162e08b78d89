"""Stage a read-only mounted Claude login into the writable per-container config dir.

The Claude CLI writes to its config dir at start and during runs, so a read-only mount of
the operator's login hangs it. Production mounts the host credentials directory read-only
at ``CLAUDE_CREDENTIALS_SOURCE``; at start the worker copies its top-level files into
``CLAUDE_CONFIG_DIR`` (a tmpfs in the container). The copy is never written back, so a
replica refreshing its token cannot corrupt the operator's copy.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

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
