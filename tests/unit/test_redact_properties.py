"""Property tests: a secret in disguise never survives the redactor, in text, in a log line,
or in anything collect.py derives from the model's output (names, slugs, titles, content).

The disguises (tests/support/leaks.py): invisible and bidirectional characters inside it,
its case changed, full-width letters, separators replaced or inserted, reversed, its hex,
its base64 at any alignment (padded or not, standard or URL alphabet, wrapped), any
fragment of 16+ characters, its two halves in two places; several of those at once. The
oracle that says "leaked" is written apart from the redactor (NFKC, brute force, base64
decoded). Derandomized with fixed example counts, so the run time is stable.
"""

from __future__ import annotations

import io
import json
import logging
import os
import tempfile
from pathlib import Path

import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fondation_worker.collect import OUTPUT_DIR_NAME, collect_docs
from fondation_worker.logging_setup import configure_logging, get_logger
from fondation_worker.redact import (
    MASK,
    Redactor,
    _fold_text,
    _folded,
    _folded_char,
    _skeleton,
    _skeleton_char,
    _stripped_char,
    stripped,
)
from tests.support.leaks import Disguise, disguises, file_name_for, filler, leaks, secrets_

# Example counts sized for every `make test`; SCRUB_EXAMPLES_SCALE=10 runs ten times more.
SCALE = int(os.environ.get("SCRUB_EXAMPLES_SCALE", "1"))


def profile(examples: int) -> settings:
    return settings(
        derandomize=True,
        deadline=None,
        database=None,
        max_examples=examples * SCALE,
        suppress_health_check=[HealthCheck.too_slow],
    )


secret_and_disguise = secrets_().flatmap(lambda s: st.tuples(st.just(s), disguises(s)))


def embed(pieces: tuple[str, ...], fillers: list[str]) -> str:
    out = fillers[0]
    for i, piece in enumerate(pieces):
        out += piece + fillers[(i + 1) % len(fillers)]
    return out


@profile(300)
@given(secret_and_disguise, st.lists(filler, min_size=1, max_size=3))
def test_a_secret_in_disguise_is_masked(case: tuple[str, Disguise], fillers: list[str]) -> None:
    secret, disguise = case
    redactor = Redactor([secret])
    text = embed(disguise.pieces, fillers)
    # The oracle sees the secret before redaction: the disguise is not a vacuous one.
    assert leaks(secret, text), f"oracle blind to {disguise.how}: {text!r}"
    out, count = redactor.redact_counted(text)
    assert leaks(secret, out) == [], f"{disguise.how}: {text!r} -> {out!r}"
    assert count >= 1
    assert MASK in out
    # Each piece alone (the halves of a secret in two documents) is masked too.
    for piece in disguise.pieces:
        alone = redactor.redact(fillers[0] + piece)
        assert leaks(secret, alone) == [], f"{disguise.how}: {piece!r} -> {alone!r}"


@profile(100)
@given(st.lists(filler, min_size=1, max_size=4).map("".join), secrets_())
def test_ordinary_text_is_left_alone(text: str, secret: str) -> None:
    assert Redactor([secret]).redact(text) == text


@profile(300)
@given(st.text(max_size=60))
def test_the_fast_views_are_the_mapped_views(text: str) -> None:
    """Matching searches views computed on the whole text; masking maps back through views
    computed character by character. They must be the same text."""
    fold = _fold_text(text)
    assert _folded(fold) == "".join(map(_folded_char, text))
    assert _skeleton(fold) == "".join(map(_skeleton_char, text))
    assert stripped(text) == "".join(map(_stripped_char, text))


@profile(80)
@given(secret_and_disguise, filler)
def test_no_log_field_carries_a_secret(case: tuple[str, Disguise], pad: str) -> None:
    """Every field of every line, names and values, nested or not, and exception texts."""
    secret, disguise = case
    redactor = Redactor([secret])
    stream = io.StringIO()
    configure_logging(redactor, log_format="json", stream=stream, level="debug")
    log = get_logger("props")
    first = disguise.pieces[0]
    with structlog.contextvars.bound_contextvars(job_id="j1", attempt=1):
        log.warning(
            "docs.redacted",
            slug=pad + first,
            nested={first: [pad, *disguise.pieces]},
            path=tuple(disguise.pieces),
        )
        try:
            raise RuntimeError("failed at " + " ".join(disguise.pieces))
        except RuntimeError:
            log.exception("job.internal_error")
    logging.getLogger("stdlib").warning("stdlib %s", first)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 3
    decoded = json.dumps(lines, ensure_ascii=False)
    assert leaks(secret, decoded) == [], f"{disguise.how}: {decoded}"


@profile(60)
@given(secret_and_disguise, filler, st.sampled_from(["chapters", "tutorials", ""]))
def test_nothing_derived_from_the_output_holds_a_secret(
    case: tuple[str, Disguise], pad: str, folder: str
) -> None:
    """File names (so slugs and titles), H1 titles and contents, across several documents,
    and what the collection reports (rejections, redactions per slug)."""
    secret, disguise = case
    redactor = Redactor([secret])
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / OUTPUT_DIR_NAME
        for i, piece in enumerate(disguise.pieces):
            name = file_name_for(piece)
            body = f"# {pad}{piece}\n\n{pad}\n{piece}\n" if i % 2 == 0 else f"{piece}\n"
            path = out / folder / f"{i:02d}-{name}.md"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(body, encoding="utf-8")
            # A file that is rejected is reported by its (scrubbed) name.
            (out / f"{name}.bin").parent.mkdir(parents=True, exist_ok=True)
            (out / f"{name}.bin").write_bytes(b"\0")
        link = file_name_for(disguise.pieces[0])[-60:].replace("/", "_")
        os.symlink("/etc/hostname", out / f"link-{link}.md")
        collected = collect_docs(out, scrub=redactor.redact_counted)
    assert collected.docs, "nothing collected"
    stored = json.dumps(
        {
            "docs": [d.model_dump() for d in collected.docs],
            "redactions": [r.model_dump() for r in collected.redactions],
            "rejected": [r.path for r in collected.rejected],
        },
        ensure_ascii=False,
    )
    assert leaks(secret, stored) == [], f"{disguise.how}: {stored}"
    assert sum(r.count for r in collected.redactions) >= len(disguise.pieces)
