"""What a job's user sees names no place on the worker's machine and holds no traceback.

Errors (``lastError``) and generated documents are shown to whoever enqueued the job. The
CLI's refusal messages quote the paths it refused (the workspace, ``TEMP_DIR``), and the
model copies them into a document; a crash prints a traceback full of install paths. So
every such text goes through ``PathScrubber`` (each machine directory becomes a
placeholder such as ``<TEMP_DIR>``) and errors through ``drop_tracebacks`` first.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

from .redact import stripped_view

# Directories every Linux machine has: naming one reveals nothing about this worker, and
# replacing it would garble ordinary text ("/usr/bin/env"). Never used as a place.
_GENERIC = frozenset(
    "/" + name
    for name in (
        *("", "usr", "usr/local", "usr/bin", "usr/local/bin", "usr/lib", "bin", "sbin", "lib"),
        *("opt", "var", "var/tmp", "home", "root", "etc", "srv", "run", "tmp"),
    )
)
# Characters that continue a path name on either side of a match.
_PATH_CHAR = r"[\w.\-]"


def _forms(path: Path) -> set[str]:
    """The spellings of ``path`` a message may contain: as given, absolute, resolved."""
    forms = {str(path), str(path.absolute())}
    with contextlib.suppress(OSError, ValueError):
        forms.add(os.path.realpath(path))
    return {f.rstrip("/") or "/" for f in forms}


class PathScrubber:
    """Replaces each known machine directory (and anything below it) with its label."""

    def __init__(self, places: Iterable[tuple[Path | None, str]] = ()) -> None:
        self._places: dict[str, str] = {}
        self._pattern: re.Pattern[str] | None = None
        for path, label in places:
            self.add(path, label)

    def add(self, path: Path | None, label: str) -> None:
        if path is None:
            return
        for form in _forms(path):
            if form not in _GENERIC and len(form) > 1:
                self._places.setdefault(form, label)
        # Longest first, so a directory inside another is replaced whole.
        forms = sorted(self._places, key=len, reverse=True)
        alternatives = "|".join(re.escape(form) for form in forms)
        self._pattern = re.compile(rf"(?<!{_PATH_CHAR})(?:{alternatives})(?!{_PATH_CHAR})")

    def with_place(self, path: Path | None, label: str) -> PathScrubber:
        """A copy that also replaces ``path`` (a job's workspace), before the others."""
        copy = PathScrubber([(path, label)])
        for form, other in self._places.items():
            copy.add(Path(form), other)
        return copy

    def scrub(self, text: str) -> str:
        """``text`` with every known directory replaced by its label (invisible characters
        inside a path do not hide it)."""
        if self._pattern is None or not text:
            return text
        view = stripped_view(text)
        out: list[str] = []
        last = 0
        for match in self._pattern.finditer(view.text):
            first, stop = view.original(match.start(), match.end())
            out.append(text[last:first])
            out.append(self._places[match.group(0)])
            last = stop
        if not out:
            return text
        out.append(text[last:])
        return "".join(out)


def install_dirs() -> list[Path]:
    """Where the worker runs from: its Python environment and its package."""
    return [Path(sys.prefix), Path(__file__).resolve().parent.parent]


def machine_places(
    *,
    temp_dir: Path,
    config_dir: Path | None,
    credentials_source: Path | None,
    env: Mapping[str, str],
    claude_bin: str | None = None,
) -> list[tuple[Path | None, str]]:
    """The directories of this machine a user must not see, with their placeholders."""
    places: list[tuple[Path | None, str]] = [
        (temp_dir, "<TEMP_DIR>"),
        (config_dir, "<CLAUDE_CONFIG_DIR>"),
        (credentials_source, "<CLAUDE_CREDENTIALS>"),
    ]
    home = env.get("HOME")
    if home:
        places.append((Path(home), "<HOME>"))
    places += [(path, "<install>") for path in install_dirs()]
    if claude_bin and "/" in claude_bin:
        places.append((Path(claude_bin).parent, "<install>"))
    return places


# --- tracebacks --------------------------------------------------------------------------

_TRACE_LINE = re.compile(
    r"^\s*(?:Traceback \(most recent call last\):"
    r"|File \".*\", line \d+.*"
    r"|During handling of the above exception, another exception occurred:"
    r"|The above exception was the direct cause of the following exception:"
    r"|at .+(?::\d+(?::\d+)?\)?|\(native\)|\(<anonymous>\))"
    r"|[\^~ ]*\^[\^~ ]*"
    r")\s*$"
)
# A traceback already flattened onto one line: its frames are dropped the same way.
_FLAT_FRAMES = re.compile(
    r"Traceback \(most recent call last\):\s*|File \"[^\"]*\", line \d+(?:, in [^\s]+)?\s*"
)


def drop_tracebacks(text: str) -> str:
    """``text`` without Python or JavaScript stack frames; the exception's own line stays.

    A frame's source line (indented under ``File "...", line N``) goes with its frame.
    """
    kept: list[str] = []
    in_frame = False
    for line in text.splitlines():
        if _TRACE_LINE.match(line):
            in_frame = line.lstrip().startswith("File ")
            continue
        if in_frame and line.startswith("    "):
            in_frame = False
            continue  # the source line a Python frame quotes
        in_frame = False
        kept.append(line)
    return _FLAT_FRAMES.sub("", "\n".join(kept))
