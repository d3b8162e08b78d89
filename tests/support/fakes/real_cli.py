"""Helpers for the suites that run the REAL pinned ``claude`` binary against the scripted
Messages API (tests/support/fakes/anthropic_api.py).

``make pytest`` sets ``REAL_CLAUDE_BIN`` to the pinned binary (scripts/claude-cli.sh binary).
Without it these suites are skipped with that reason; with it they must pass, and a CLI
whose protocol no longer matches the double fails them with a message saying so.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REAL_CLAUDE_BIN = os.environ.get("REAL_CLAUDE_BIN", "")


def require_real_claude() -> str:
    """The binary's path; skips when REAL_CLAUDE_BIN is unset, fails when it is wrong."""
    if not REAL_CLAUDE_BIN:
        pytest.skip("REAL_CLAUDE_BIN is not set (make pytest sets it to the pinned CLI)")
    path = Path(REAL_CLAUDE_BIN)
    if not path.is_file() or not os.access(path, os.X_OK):
        pytest.fail(f"REAL_CLAUDE_BIN={REAL_CLAUDE_BIN} is not an executable file")
    return str(path)


# The CLI's own retries (up to 10, with backoff) would make each error case last minutes;
# the scripted API answers every error with x-should-retry: false, as Anthropic's API may.
NO_RETRY = {"x-should-retry": "false"}
