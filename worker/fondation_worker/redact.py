"""Pure redaction of secrets in text and in log event dictionaries.

Applied once, at the log sink (see logging_setup.py), so no call site has to remember it.
Covers token *shapes* (GitHub, Anthropic, Authorization headers, credentials in URLs) and
the *literal values* of secrets the worker knows about (configured ones and per-job
GitHub tokens registered while their job runs).
"""

from __future__ import annotations

import base64
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any

MASK = "[REDACTED]"

# Literal secrets shorter than this are not masked on their own: masking "abc" everywhere
# would garble logs and reveal nothing useful. Real tokens are far longer.
MIN_LITERAL_LEN = 8

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # GitHub tokens: classic (ghp_), OAuth (gho_), app installation (ghs_), user-to-server
    # (ghu_), refresh (ghr_), fine-grained PATs (github_pat_).
    (re.compile(r"\bgh[pousr]_[A-Za-z0-9]{16,255}\b"), MASK),
    (re.compile(r"\bgithub_pat_[A-Za-z0-9_]{16,255}\b"), MASK),
    # Anthropic API keys and OAuth tokens (sk-ant-api03-..., sk-ant-oat01-...).
    (re.compile(r"\bsk-ant-[A-Za-z0-9_\-]{8,}"), MASK),
    # Credentials in URLs: scheme://user:password@host, x-access-token:TOKEN@github.com.
    (re.compile(r"(?i)\b(x-access-token|x-oauth-basic|oauth2):[^@\s/]+@"), r"\1:" + MASK + "@"),
    (re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/@\s:]*:[^/@\s]*@"), r"\1" + MASK + "@"),
    # Authorization / Proxy-Authorization headers, as "Name: value" or "name=value".
    (
        re.compile(
            r"(?i)\b((?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?)"
            r"(?:(bearer|basic|token|convex|digest)\s+)?[^\s,;\"'}]+"
        ),
        r"\1\2 " + MASK,
    ),
    # Bare bearer tokens in other places.
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=\-]{8,}"), r"\1 " + MASK),
    # JSON Web Tokens: base64url header and payload, both starting with '{"' (eyJ).
    (re.compile(r"\beyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]*"), MASK),
)

# Keys whose values are secrets whatever they look like.
_SECRET_KEYS = re.compile(
    r"^(.*[_-])?(token|secret|password|passwd|api[_-]?key|authorization|credentials?)$"
)
_CAMEL = re.compile(r"(?<=[a-z0-9])([A-Z])")


def is_secret_key(key: str) -> bool:
    """True for keys like ``token``, ``leaseToken``, ``github_token``, ``api-key``."""
    return _SECRET_KEYS.match(_CAMEL.sub(r"_\1", key).lower()) is not None


def redact_patterns(text: str) -> str:
    """Mask every known token shape in ``text``."""
    return _redact_patterns_counted(text)[0]


def _redact_patterns_counted(text: str) -> tuple[str, int]:
    hits = 0
    for pattern, replacement in _PATTERNS:
        text, n = pattern.subn(replacement, text)
        hits += n
    return text.replace(f"{MASK} {MASK}", MASK).replace(f"  {MASK}", f" {MASK}"), hits


def _variants(secret: str) -> set[str]:
    """The secret plus the encodings it commonly appears in (Basic auth base64)."""
    out = {secret}
    for user in ("x-access-token", "token", ""):
        raw = f"{user}:{secret}".encode()
        out.add(base64.b64encode(raw).decode("ascii"))
    out.add(base64.b64encode(secret.encode()).decode("ascii"))
    return {v for v in out if len(v) >= MIN_LITERAL_LEN}


class Redactor:
    """Masks token shapes and registered literal secrets. Thread-safe."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._fixed: set[str] = set()
        self._dynamic: dict[str, int] = {}
        self._literals: tuple[str, ...] = ()
        for secret in secrets:
            self.add_fixed(secret)

    def add_fixed(self, secret: str | None) -> None:
        """Register a secret for the life of the process (configured tokens)."""
        if not secret or len(secret) < MIN_LITERAL_LEN:
            return
        with self._lock:
            self._fixed.update(_variants(secret))
            self._rebuild()

    def register(self, secret: str | None) -> None:
        """Register a secret for a while (a job's GitHub token); pair with ``unregister``."""
        if not secret or len(secret) < MIN_LITERAL_LEN:
            return
        with self._lock:
            for variant in _variants(secret):
                self._dynamic[variant] = self._dynamic.get(variant, 0) + 1
            self._rebuild()

    def unregister(self, secret: str | None) -> None:
        if not secret or len(secret) < MIN_LITERAL_LEN:
            return
        with self._lock:
            for variant in _variants(secret):
                count = self._dynamic.get(variant, 0) - 1
                if count <= 0:
                    self._dynamic.pop(variant, None)
                else:
                    self._dynamic[variant] = count
            self._rebuild()

    def _rebuild(self) -> None:
        # Longest first, so a secret that contains another is masked whole.
        self._literals = tuple(sorted(self._fixed | set(self._dynamic), key=lambda s: (-len(s), s)))

    def redact(self, text: str) -> str:
        return self.redact_counted(text)[0]

    def redact_counted(self, text: str) -> tuple[str, int]:
        """``text`` with every secret masked, and how many secrets were masked.

        Used on generated documents before upload, where the count is recorded on the job.
        """
        hits = 0
        for literal in self._literals:
            n = text.count(literal)
            if n:
                text = text.replace(literal, MASK)
                hits += n
        text, shaped = _redact_patterns_counted(text)
        return text, hits + shaped

    def redact_value(self, value: Any, key: str | None = None) -> Any:
        """Redact strings anywhere inside dicts, lists and tuples; secret-named keys whole."""
        if key is not None and is_secret_key(key) and value not in (None, "", False):
            if isinstance(value, bool | int | float):
                return value
            return MASK
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, Mapping):
            return {k: self.redact_value(v, str(k)) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self.redact_value(v) for v in value)
        if isinstance(value, bytes | bytearray):
            return self.redact(bytes(value).decode("utf-8", "replace"))
        if isinstance(value, int | float | bool) or value is None:
            return value
        return self.redact(str(value))

    def __call__(self, logger: Any, method_name: str, event_dict: Any) -> Any:
        """structlog processor: redact every value of the event dict."""
        del logger, method_name
        return {k: self.redact_value(v, k) for k, v in event_dict.items()}
