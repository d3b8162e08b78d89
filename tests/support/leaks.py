"""Secrets in disguise, and an independent check that none of them got through.

``disguises`` is a Hypothesis strategy: a secret embedded the ways an obedient model (or a
hostile repository) could smuggle it past a literal match, each as one or more pieces to
put in documents, file names, errors or log fields. ``leaks`` is the oracle the property
tests assert with: written apart from the worker's redactor (Unicode NFKC instead of its
per-character folding, brute force instead of its index, base64 *decoded* instead of
encoded forms), it reports every run of ``FRAGMENT`` or more characters of a secret, its
reverse or its hex (case-insensitively, invisible characters and separators ignored), and
every ``FRAGMENT_BYTES`` bytes of a secret found by decoding base64 in the text.
"""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
from dataclasses import dataclass

from hypothesis import strategies as st

FRAGMENT = 16
FRAGMENT_BYTES = 12  # 16 base64 characters

# Characters that render as nothing: zero-width space, non-joiner and joiner, word joiner,
# BOM, soft hyphen, the bidirectional marks, embeddings, overrides and isolates, the Arabic
# letter mark, a variation selector, the combining grapheme joiner, Mongolian vowel
# separator, a tag letter.
INVISIBLE = (
    "\u200b\u200c\u200d\u2060\ufeff\u00ad\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
    "\u2066\u2067\u2068\u2069\u061c\ufe0f\u034f\u180e\U000e0041"
)
_INVISIBLE = frozenset(INVISIBLE)

HEX = "0123456789abcdef"
BASE62 = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _strip(text: str) -> str:
    return "".join(
        c for c in text if c not in _INVISIBLE and unicodedata.category(c) not in ("Cf",)
    )


def oracle_folded(text: str) -> str:
    norm = unicodedata.normalize("NFKC", _strip(text)).casefold()
    return "".join(c if c.isalnum() else "-" for c in norm if not c.isspace())


def oracle_skeleton(text: str) -> str:
    norm = unicodedata.normalize("NFKC", _strip(text)).casefold()
    return "".join(c for c in norm if c.isalnum())


def _windows(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(len(text) - size + 1)]


_B64_RUN = re.compile(r"[A-Za-z0-9+/_\-]{" + str(4 * FRAGMENT_BYTES // 3) + ",}")


def _decoded_base64(text: str) -> list[bytes]:
    """Every decoding of every base64-looking run of ``text`` (white space and invisible
    characters removed first), at each of the four character offsets."""
    flat = "".join(c for c in _strip(text) if not c.isspace())
    out: list[bytes] = []
    for run in _B64_RUN.findall(flat):
        run = run.replace("-", "+").replace("_", "/")
        for offset in range(4):
            chunk = run[offset:]
            chunk = chunk[: len(chunk) - len(chunk) % 4]
            try:
                out.append(base64.b64decode(chunk))
            except (binascii.Error, ValueError):
                continue
    return out


def leaks(secret: str, output: str) -> list[str]:
    """How ``secret`` shows in ``output`` (empty: it does not)."""
    found: list[str] = []
    views = (("folded", oracle_folded), ("skeleton", oracle_skeleton))
    for name, view in views:
        seen = view(output)
        for form_name, form in (
            ("secret", secret),
            ("reversed", secret[::-1]),
            ("hex", secret.encode().hex()),
        ):
            normal = view(form)
            if len(normal) < FRAGMENT:
                continue
            for window in _windows(normal, FRAGMENT):
                if window in seen:
                    found.append(f"{form_name} fragment {window!r} ({name} view)")
                    break
    raw = secret.encode()
    pieces = _windows(raw.decode("latin-1"), FRAGMENT_BYTES)
    for decoded in _decoded_base64(output):
        text = decoded.decode("latin-1")
        for piece in pieces:
            if piece in text:
                found.append(f"{FRAGMENT_BYTES} bytes of it in base64")
                break
    return found


# --- strategies -------------------------------------------------------------------------


def _plausible(secret: str) -> bool:
    # "[REDACTED]" itself reads as "redacted" in the views; a token has 16+ letters and
    # digits (what is left of it when its separators change).
    return "redacted" not in secret.lower() and sum(c.isalnum() for c in secret) >= FRAGMENT


def secrets_() -> st.SearchStrategy[str]:
    """Secrets shaped like the ones a worker holds."""
    return st.one_of(
        st.text(HEX, min_size=32, max_size=64),
        st.text(BASE62, min_size=36, max_size=36).map(lambda b: "ghp_" + b),
        st.text(BASE62 + "-_", min_size=40, max_size=80).map(lambda b: "sk-ant-oat01-" + b),
        st.text(BASE62 + "-_.~", min_size=16, max_size=64),
        st.lists(st.text(HEX, min_size=4, max_size=12), min_size=4, max_size=5).map("-".join),
    ).filter(_plausible)


@dataclass(frozen=True)
class Disguise:
    how: str
    pieces: tuple[str, ...]


FULLWIDTH = {c: chr(0xFF01 + ord(c) - 0x21) for c in BASE62}
SEPARATORS = ("-", "_", " ", ".", "\n", "·", "/")


@st.composite
def _invisible(draw: st.DrawFn, text: str) -> str:
    chars = list(text)
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(chars)))
        chars.insert(at, draw(st.sampled_from(INVISIBLE)))
    return "".join(chars)


@st.composite
def _case(draw: st.DrawFn, text: str) -> str:
    flags = draw(st.lists(st.booleans(), min_size=len(text), max_size=len(text)))
    return "".join(c.upper() if f else c.lower() for c, f in zip(text, flags, strict=True))


@st.composite
def _fullwidth(draw: st.DrawFn, text: str) -> str:
    flags = draw(st.lists(st.booleans(), min_size=len(text), max_size=len(text)))
    return "".join(FULLWIDTH.get(c, c) if f else c for c, f in zip(text, flags, strict=True))


@st.composite
def _separators(draw: st.DrawFn, text: str) -> str:
    """Every non-alphanumeric character replaced, as slugs and titles do."""
    sep = draw(st.sampled_from(SEPARATORS))
    return "".join(sep if c.isascii() and not c.isalnum() else c for c in text)


@st.composite
def _spaced(draw: st.DrawFn, text: str) -> str:
    every = draw(st.integers(2, 10))
    sep = draw(st.sampled_from(SEPARATORS))
    return sep.join(text[i : i + every] for i in range(0, len(text), every))


@st.composite
def _base64(draw: st.DrawFn, secret: str) -> str:
    before = draw(st.binary(max_size=5))
    after = draw(st.binary(max_size=5))
    data = before + secret.encode() + after
    url = draw(st.booleans())
    encoded = (base64.urlsafe_b64encode if url else base64.b64encode)(data).decode()
    if draw(st.booleans()):
        encoded = encoded.rstrip("=")
    width = draw(st.one_of(st.none(), st.integers(20, 76)))
    if width:
        encoded = "\n".join(encoded[i : i + width] for i in range(0, len(encoded), width))
    return encoded


@st.composite
def _alnum_fragment(draw: st.DrawFn, secret: str) -> str:
    """A part of ``secret`` holding at least FRAGMENT letters and digits (so it is still a
    fragment after its separators are changed)."""
    places = [i for i, c in enumerate(secret) if c.isalnum()]
    if len(places) < FRAGMENT:
        return secret
    first = draw(st.integers(0, len(places) - FRAGMENT))
    last = draw(st.integers(first + FRAGMENT - 1, len(places) - 1))
    start = draw(st.integers(places[first - 1] + 1 if first else 0, places[first]))
    end = draw(
        st.integers(places[last] + 1, places[last + 1] if last + 1 < len(places) else len(secret))
    )
    return secret[start:end]


@st.composite
def disguises(draw: st.DrawFn, secret: str) -> Disguise:
    """``secret`` in one disguise: the pieces to embed (two for a secret split in halves)."""
    base = draw(
        st.sampled_from(["plain", "reversed", "fragment", "chunk", "halves", "base64", "hex"])
    )
    changes = ["invisible", "case", "fullwidth", "separators", "spaced"]
    if base == "plain":
        pieces = [secret]
    elif base == "reversed":
        pieces = [secret[::-1]]
    elif base == "fragment":
        pieces = [draw(_alnum_fragment(secret))]
    elif base == "chunk":
        # Any 16+ characters: its separators are part of what is matched, so kept.
        start = draw(st.integers(0, len(secret) - FRAGMENT))
        end = draw(st.integers(start + FRAGMENT, len(secret)))
        pieces = [secret[start:end]]
        changes = ["invisible", "case", "fullwidth"]
    elif base == "halves":
        places = [i for i, c in enumerate(secret) if c.isalnum()]
        if len(places) < 2 * FRAGMENT:
            pieces = [secret]
        else:
            at = draw(st.integers(FRAGMENT, len(places) - FRAGMENT))
            cut = places[at]
            pieces = [secret[:cut], secret[cut:]]
    elif base == "base64":
        pieces = [draw(_base64(secret))]
        changes = ["invisible"]
    else:
        text = secret.encode().hex()
        pieces = [text.upper() if draw(st.booleans()) else text]
    how = [base]
    for name in draw(st.lists(st.sampled_from(changes), max_size=3, unique=True)):
        how.append(name)
        change = {
            "invisible": _invisible,
            "case": _case,
            "fullwidth": _fullwidth,
            "separators": _separators,
            "spaced": _spaced,
        }[name]
        pieces = [draw(change(piece)) for piece in pieces]
    return Disguise("+".join(how), tuple(pieces))


def file_name_for(piece: str) -> str:
    """A relative path from ``piece``: '/' and NUL cannot be in a name, and each name must
    fit 255 bytes (a long piece is spread over directory names)."""
    name = piece.replace("/", "_").replace("\0", "_")
    parts = []
    while len(name.encode()) > 200:
        parts.append(name[:50])
        name = name[50:]
    return "/".join([*parts, name])


# Text around a secret: words, punctuation, markdown, some non-ASCII.
filler = st.text(
    alphabet=st.sampled_from(list("abcdefghij klmnop .,:;#*`()[]{}<>\n\t-_=/ éüß✓—中")),
    max_size=40,
)
