"""Pure redaction of secrets in text and in log event dictionaries.

Applied at the log sink (see logging_setup.py), so no call site has to remember it, and to
everything the worker derives from the model's output before it is stored (collect.py:
file names, slugs, titles and contents). Covers token *shapes* (GitHub, Anthropic,
Authorization headers, credentials in URLs, JWTs) and the *literal values* of secrets the
worker knows about (configured ones, and per-job tokens registered while their job runs).

A known secret is found in disguise, the way secret scanners match normalised forms:

- invisible and bidirectional characters (zero-width spaces, joiners, direction marks and
  isolates, soft hyphens, variation selectors: Unicode's default-ignorable code points) are
  ignored, compatibility forms are folded (full-width letters) and case is folded;
- separators do not hide it: one view of the text drops white space and maps every other
  character to ``-`` (what slugs do to ``_``; base64 wrapped over lines), another ignores
  everything but letters and digits (titles, a secret spaced out);
- its reverse, its hex, and its base64 at each of the three byte alignments (so base64 of
  any text that contains the secret, padded or wrapped, standard or URL alphabet);
- any fragment of ``MIN_FRAGMENT`` (16) or more characters of any of those forms, so halves
  of a secret spread over two documents are both masked.

Each match is mapped back to the original text and the whole span becomes ``[REDACTED]``.
"""

from __future__ import annotations

import base64
import functools
import re
import threading
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

MASK = "[REDACTED]"

# Literal secrets shorter than this are not masked on their own: masking "abc" everywhere
# would garble logs and reveal nothing useful. Real tokens are far longer.
MIN_LITERAL_LEN = 8
# Any run of this many characters of a known secret (or of one of its encodings) is masked.
MIN_FRAGMENT = 16
# Matching looks up text at every ANCHOR-th position; any common run of MIN_FRAGMENT
# characters contains such an aligned anchor as long as MIN_FRAGMENT >= 2 * ANCHOR - 1.
_ANCHOR = 8

# Each shape with the lower-case texts one of which it cannot match without (a quick test
# that spares the regular expression most texts).
_PATTERNS: tuple[tuple[re.Pattern[str], tuple[str, ...]], ...] = (
    # GitHub tokens: classic (ghp_), OAuth (gho_), app installation (ghs_), user-to-server
    # (ghu_), refresh (ghr_), fine-grained PATs (github_pat_); also with "_" turned into "-"
    # as a slug writes it.
    (re.compile(r"\bgh[pousr][_-][A-Za-z0-9]{16,255}\b"), ("gh",)),
    (re.compile(r"\bgithub[_-]pat[_-][A-Za-z0-9_]{16,255}\b"), ("github",)),
    # Anthropic API keys and OAuth tokens (sk-ant-api03-..., sk-ant-oat01-...).
    (re.compile(r"\bsk-ant-[A-Za-z0-9_\-]{8,}"), ("sk-ant-",)),
    # Credentials in URLs: scheme://user:password@host, x-access-token:TOKEN@github.com.
    (
        re.compile(r"(?i)\b(?:x-access-token|x-oauth-basic|oauth2):(?P<s>[^@\s/]+)@"),
        ("x-access-token:", "x-oauth-basic:", "oauth2:"),
    ),
    (re.compile(r"(?i)\b[a-z][a-z0-9+.\-]*://(?P<s>[^/@\s:]*:[^/@\s]*)@"), ("://",)),
    # Authorization / Proxy-Authorization headers, as "Name: value" or "name=value".
    (
        re.compile(
            r"(?i)\b(?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?"
            r"(?:(?:bearer|basic|token|convex|digest)\s+)?(?P<s>[^\s,;\"'}]+)"
        ),
        ("authorization",),
    ),
    # Bare bearer tokens in other places.
    (re.compile(r"(?i)\bbearer\s+(?P<s>[A-Za-z0-9._~+/=\-]{8,})"), ("bearer",)),
    # JSON Web Tokens: base64url header and payload, both starting with '{"' (eyJ).
    (
        re.compile(r"\beyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]*"),
        ("eyj",),
    ),
)

# Keys whose values are secrets whatever they look like.
_SECRET_KEYS = re.compile(
    r"^(.*[_-])?(token|secret|password|passwd|api[_-]?key|authorization|credentials?)$"
)
_CAMEL = re.compile(r"(?<=[a-z0-9])([A-Z])")

# Unicode's Default_Ignorable_Code_Point ranges (DerivedCoreProperties.txt): rendered as
# nothing, so they can sit inside a secret unseen. Format characters (category Cf: the
# bidirectional controls, U+FEFF, tag characters) are ignored too.
_IGNORABLE_RANGES = (
    (0x00AD, 0x00AD),
    (0x034F, 0x034F),
    (0x061C, 0x061C),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x206F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
)


_PLANES = (*range(0x20000), *range(0xE0000, 0xE1000))


@functools.cache
def _ignorable_codes() -> frozenset[int]:
    codes = {code for low, high in _IGNORABLE_RANGES for code in range(low, high + 1)}
    codes.update(code for code in _PLANES if unicodedata.category(chr(code)) == "Cf")
    return frozenset(codes)


def is_ignorable(char: str) -> bool:
    """True for characters that render as nothing (zero-width, bidi controls, ...)."""
    return ord(char) in _ignorable_codes()


def is_secret_key(key: str) -> bool:
    """True for keys like ``token``, ``leaseToken``, ``github_token``, ``api-key``."""
    return _SECRET_KEYS.match(_CAMEL.sub(r"_\1", key).lower()) is not None


# --- normalised views of a text ----------------------------------------------------------
#
# Each view exists twice: computed on the whole text at C speed (used to search), and
# character by character with a map back to the original (computed only when something was
# found, to know which original characters to mask). Both give the same text: a test holds
# them to it.


@functools.cache
def _removed_codes() -> frozenset[int]:
    """Invisible characters and combining marks."""
    combining = (code for code in _PLANES if unicodedata.combining(chr(code)))
    return _ignorable_codes().union(combining)


@functools.lru_cache(maxsize=8192)
def _fold(char: str) -> str:
    """One character as matching sees it: its compatibility decomposition without
    combining marks or invisible characters, case-folded (full-width "G" -> "g")."""
    if char.isascii():
        return char.lower()
    removed = _removed_codes()
    decomposed = unicodedata.normalize("NFKD", char)
    return "".join(c for c in decomposed if ord(c) not in removed).casefold()


@functools.lru_cache(maxsize=8192)
def _folded_char(char: str) -> str:
    """The "folded" view: letters and digits folded, white space dropped (base64 wrapped
    over lines), any other character a ``-``."""
    return "".join(c if c.isalnum() else "-" for c in _fold(char) if not c.isspace())


@functools.lru_cache(maxsize=8192)
def _skeleton_char(char: str) -> str:
    """The "skeleton" view: letters and digits folded, everything else dropped."""
    return "".join(c for c in _fold(char) if c.isalnum())


@functools.lru_cache(maxsize=8192)
def _stripped_char(char: str) -> str:
    """The "stripped" view: the text without its invisible characters (for token shapes)."""
    return "" if is_ignorable(char) else char


_NON_ASCII = re.compile(r"[^\x00-\x7f]+")
_WHITE = re.compile(r"\s+")
_NOT_ALNUM = re.compile(r"[\W_]")
_NOT_ALNUM_RUN = re.compile(r"[\W_]+")


def _fold_text(text: str) -> str:
    # ASCII letters lowered at C speed (bytes.lower changes no other byte), the rest by run.
    lowered = text.encode("utf-8", "surrogatepass").lower().decode("utf-8", "surrogatepass")
    if lowered.isascii():
        return lowered
    return _NON_ASCII.sub(lambda m: "".join(map(_fold, m.group())), lowered)


def _folded(fold: str) -> str:
    return _NOT_ALNUM.sub("-", _WHITE.sub("", fold))


def _skeleton(fold: str) -> str:
    return _NOT_ALNUM_RUN.sub("", fold)


def folded(text: str) -> str:
    """The folded view of ``text`` (see _folded_char)."""
    return _folded(_fold_text(text))


def skeleton(text: str) -> str:
    """The skeleton view of ``text`` (see _skeleton_char)."""
    return _skeleton(_fold_text(text))


def stripped(text: str) -> str:
    if text.isascii():
        return text
    return _NON_ASCII.sub(lambda m: "".join(map(_stripped_char, m.group())), text)


@dataclass(frozen=True)
class _View:
    """A normalised text and, for each of its characters, the index of the original one
    it came from."""

    text: str
    owners: list[int]

    def original(self, start: int, end: int) -> tuple[int, int]:
        return self.owners[start], self.owners[end - 1] + 1


def _build_view(text: str, per_char: Callable[[str], str]) -> _View:
    pieces: list[str] = []
    owners: list[int] = []
    for index, char in enumerate(text):
        piece = per_char(char)
        if piece:
            pieces.append(piece)
            owners.extend([index] * len(piece))
    return _View("".join(pieces), owners)


def folded_view(text: str) -> _View:
    return _build_view(text, _folded_char)


def skeleton_view(text: str) -> _View:
    return _build_view(text, _skeleton_char)


def stripped_view(text: str) -> _View:
    return _build_view(text, _stripped_char)


def _find(
    text: str,
    fast: Callable[[str], str],
    per_char: Callable[[str], str],
    search: Callable[[str], list[tuple[int, int]]],
) -> list[tuple[int, int]]:
    """Spans of ``text`` whose view ``search`` matched (the slow map only on a match)."""
    view_text = fast(text)
    found = search(view_text)
    if not found:
        return []
    view = _build_view(text, per_char)
    if view.text != view_text:  # never expected; the mapped view is the one to trust
        found = search(view.text)
    return [view.original(start, end) for start, end in found]


# --- the forms a secret is looked for in ------------------------------------------------


def base64_cores(data: bytes) -> set[str]:
    """The part of base64 that ``data`` fixes at each of the three byte alignments: any
    base64 of a text that contains ``data`` contains one of these."""
    out: set[str] = set()
    for shift in range(3):
        padded = b"\0" * shift + data
        encoded = base64.b64encode(padded).decode("ascii")
        start = 4 if shift else 0  # the first group mixes in the bytes before
        end = 4 * (len(padded) // 3)  # a last partial group depends on the bytes after
        if end > start:
            out.add(encoded[start:end])
    # The whole encoding of the secret alone, padding and all.
    out.add(base64.b64encode(data).decode("ascii"))
    return out


def secret_forms(secret: str) -> set[str]:
    """The secret, reversed, hex, and its base64 at every alignment (and as Basic auth)."""
    raw = secret.encode()
    forms = {secret, secret[::-1], raw.hex()}
    forms |= base64_cores(raw)
    for user in ("x-access-token", "token", ""):
        forms.add(base64.b64encode(f"{user}:{secret}".encode()).decode("ascii"))
    return forms


class _Needles:
    """Normalised forms of the known secrets in one view, indexed for fragment search."""

    def __init__(self, forms: Iterable[str], *, whole_min: int | None) -> None:
        self.long = sorted({f for f in forms if len(f) >= MIN_FRAGMENT})
        # Forms too short for fragments are matched whole (None: not at all in this view).
        self.short = (
            sorted({f for f in forms if whole_min <= len(f) < MIN_FRAGMENT})
            if whole_min is not None
            else []
        )
        self.grams: dict[str, list[tuple[int, int]]] = {}
        for number, form in enumerate(self.long):
            for offset in range(len(form) - _ANCHOR + 1):
                self.grams.setdefault(form[offset : offset + _ANCHOR], []).append((number, offset))

        self.gram_keys = frozenset(self.grams)

    def __bool__(self) -> bool:
        return bool(self.long or self.short)

    def spans(self, view: str) -> list[tuple[int, int]]:
        """Every run of ``view`` that is a fragment of MIN_FRAGMENT+ characters of a long
        form, or a whole short form."""
        found: list[tuple[int, int]] = []
        grams = self.grams
        size = len(view)
        # Per (form, diagonal): how far that alignment was already extended.
        done: dict[tuple[int, int], int] = {}
        anchors = {view[q : q + _ANCHOR] for q in range(0, size - _ANCHOR + 1, _ANCHOR)}
        if not anchors.isdisjoint(self.gram_keys):
            for q in range(0, size - _ANCHOR + 1, _ANCHOR):
                hits = grams.get(view[q : q + _ANCHOR])
                if not hits:
                    continue
                for number, offset in hits:
                    diagonal = (number, q - offset)
                    if done.get(diagonal, -1) >= q + _ANCHOR:
                        continue
                    form = self.long[number]
                    start, k = q, offset
                    while start > 0 and k > 0 and view[start - 1] == form[k - 1]:
                        start -= 1
                        k -= 1
                    end, k = q + _ANCHOR, offset + _ANCHOR
                    while end < size and k < len(form) and view[end] == form[k]:
                        end += 1
                        k += 1
                    done[diagonal] = end
                    if end - start >= MIN_FRAGMENT:
                        found.append((start, end))
        for form in self.short:
            at = view.find(form)
            while at >= 0:
                found.append((at, at + len(form)))
                at = view.find(form, at + 1)
        return found


@dataclass(frozen=True)
class _Index:
    folded: _Needles
    skeleton: _Needles

    @classmethod
    def build(cls, secrets: Iterable[str]) -> _Index:
        forms = [form for secret in secrets for form in secret_forms(secret)]
        return cls(
            # Short forms are matched whole in the folded view only: with every separator
            # dropped, a short word-like secret would match ordinary text.
            _Needles((folded(f) for f in forms), whole_min=MIN_LITERAL_LEN),
            _Needles((skeleton(f) for f in forms), whole_min=None),
        )


_EMPTY_INDEX = _Index.build(())


def _shape_search(text: str) -> list[tuple[int, int]]:
    lowered = text.lower()
    spans: list[tuple[int, int]] = []
    for pattern, needs in _PATTERNS:
        if not any(need in lowered for need in needs):
            continue
        for match in pattern.finditer(text):
            group = "s" if "s" in pattern.groupindex else 0
            start, end = match.span(group)
            if end > start:
                spans.append((start, end))
    return spans


def _shape_spans(text: str) -> list[tuple[int, int]]:
    return _find(text, stripped, _stripped_char, _shape_search)


def _mask(text: str, spans: list[tuple[int, int]]) -> tuple[str, int]:
    """``text`` with the union of ``spans`` masked; how many masks were put in."""
    if not spans:
        return text, 0
    merged: list[list[int]] = []
    for start, end in sorted(spans):
        if merged and start < merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    out: list[str] = []
    last = 0
    for start, end in merged:
        out.append(text[last:start])
        out.append(MASK)
        last = end
    out.append(text[last:])
    return "".join(out), len(merged)


def redact_patterns(text: str) -> str:
    """Mask every known token shape in ``text``."""
    return _mask(text, _shape_spans(text))[0]


class Redactor:
    """Masks token shapes and registered literal secrets (in disguise too). Thread-safe."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._fixed: set[str] = set()
        self._dynamic: dict[str, int] = {}
        self._index = _EMPTY_INDEX
        for secret in secrets:
            self.add_fixed(secret)

    def add_fixed(self, secret: str | None) -> None:
        """Register a secret for the life of the process (configured tokens)."""
        if not secret or len(secret) < MIN_LITERAL_LEN:
            return
        with self._lock:
            self._fixed.add(secret)
            self._rebuild()

    def register(self, secret: str | None) -> None:
        """Register a secret for a while (a job's GitHub token); pair with ``unregister``."""
        if not secret or len(secret) < MIN_LITERAL_LEN:
            return
        with self._lock:
            self._dynamic[secret] = self._dynamic.get(secret, 0) + 1
            if self._dynamic[secret] == 1:
                self._rebuild()

    def unregister(self, secret: str | None) -> None:
        if not secret or len(secret) < MIN_LITERAL_LEN:
            return
        with self._lock:
            count = self._dynamic.get(secret, 0) - 1
            if count <= 0:
                if self._dynamic.pop(secret, None) is not None:
                    self._rebuild()
            else:
                self._dynamic[secret] = count

    def _rebuild(self) -> None:
        self._index = _Index.build(self._fixed | set(self._dynamic))

    def redact(self, text: str) -> str:
        return self.redact_counted(text)[0]

    def redact_counted(self, text: str) -> tuple[str, int]:
        """``text`` with every secret masked, and how many masks were put in.

        Used on generated documents before upload, where the count is recorded on the job.
        """
        if not text:
            return text, 0
        index = self._index
        spans = _shape_spans(text)
        if index.folded or index.skeleton:
            fold = _fold_text(text)  # shared by both views
            spans += _find(text, lambda _: _folded(fold), _folded_char, index.folded.spans)
            spans += _find(text, lambda _: _skeleton(fold), _skeleton_char, index.skeleton.spans)
        return _mask(text, spans)

    def redact_value(self, value: Any, key: str | None = None) -> Any:
        """Redact strings anywhere inside dicts, lists and tuples (keys too); values of
        secret-named keys whole."""
        if key is not None and is_secret_key(key) and value not in (None, "", False):
            if isinstance(value, bool | int | float):
                return value
            return MASK
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, Mapping):
            return {self.redact(str(k)): self.redact_value(v, str(k)) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self.redact_value(v) for v in value)
        if isinstance(value, bytes | bytearray):
            return self.redact(bytes(value).decode("utf-8", "replace"))
        if isinstance(value, int | float | bool) or value is None:
            return value
        return self.redact(str(value))

    def __call__(self, logger: Any, method_name: str, event_dict: Any) -> Any:
        """structlog processor: redact every field of the event dict, names and values."""
        del logger, method_name
        return {self.redact(str(k)): self.redact_value(v, k) for k, v in event_dict.items()}
