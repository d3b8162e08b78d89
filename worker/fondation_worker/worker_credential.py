"""Per-worker credentials: how one is drawn and how Convex knows it (convex/credentials.ts).

A credential is ``fwc_`` and 43 base64url characters: 32 bytes from the operating system's
CSPRNG. Convex stores only its SHA-256 (hex); a worker presents the whole value as its
``WORKER_TOKEN``, and Convex hashes it to find the worker id it is bound to. Whoever issues
one (``fondation-worker credentials issue``, or the deploy on the worker host itself) sends
Convex the hash only, so the secret never travels anywhere but to the worker that uses it.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from pathlib import Path

PREFIX = "fwc_"
PATTERN = re.compile(r"^fwc_[A-Za-z0-9_-]{43}$")


def new_credential() -> str:
    """A fresh credential (256 random bits)."""
    return PREFIX + secrets.token_urlsafe(32)


def credential_hash(credential: str) -> str:
    """The SHA-256 (hex) Convex stores and matches."""
    return hashlib.sha256(credential.encode("ascii")).hexdigest()


def is_credential(value: str) -> bool:
    """True for the shape of a per-worker credential (not the shared worker token)."""
    return PATTERN.fullmatch(value) is not None


def write_env_file(path: Path, credential: str) -> None:
    """Write ``WORKER_TOKEN=<credential>`` to a new file readable by its owner only
    (``FileExistsError`` if it exists: a credential is never overwritten by accident)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(f"WORKER_TOKEN={credential}\n")
