"""Collect the generated docs from ``<clone>/.claude-tutorial-output/`` and batch them.

The output directory is written by a process that read untrusted repository content, so
every file is checked: no symlinks (files or directories), no hard links, nothing resolving
outside the directory, regular files only, UTF-8 text without NUL bytes, bounded size and
count. Rejected files are reported, not uploaded. File names that are not UTF-8 are shown
with U+FFFD in titles and reports.

Scrubbed before anything is derived: each file's name and content go through ``scrub``
(secrets masked, machine paths replaced: job_runner.py) first, and the slug, title, kind
and order are derived from the scrubbed forms only, then scrubbed once more. What a
rejection reports is the scrubbed name.
"""

from __future__ import annotations

import dataclasses
import os
import re
import stat
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePath, PurePosixPath

from .contract import DocKind
from .contract import DropReason as DropCode
from .models import Doc, Dropped, DropReason, Redaction

# A text in, the text to keep and how many secrets were masked in it out.
Scrub = Callable[[str], tuple[str, int]]


def no_scrub(text: str) -> tuple[str, int]:
    return text, 0


OUTPUT_DIR_NAME = ".claude-tutorial-output"
DOC_SUFFIXES = frozenset({".md", ".markdown", ".yaml", ".yml"})

MAX_FILE_BYTES = 512 * 1024
MAX_DOCS = 200
MAX_TOTAL_BYTES = 16 * 1024 * 1024
MAX_BATCH_BYTES = 512 * 1024
MAX_BATCH_DOCS = 25
MAX_TITLE_CHARS = 200
MAX_SLUG_CHARS = 120

_H1 = re.compile(r"^#[ \t]+(.+?)[ \t#]*$")
_ORDER_PREFIX = re.compile(r"^(\d{1,4})(?=[-_. ]|$)")
_SLUG_BAD = re.compile(r"[^a-z0-9]+")


@dataclass(frozen=True)
class Rejection:
    path: str
    reason: str  # the detail for the worker log
    code: DropCode  # why, as recorded on the job (the contract's drop reasons)


@dataclass
class Collected:
    docs: list[Doc] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    # Secrets masked per document (name, content, title and slug together).
    redactions: list[Redaction] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(d.size for d in self.docs)

    def dropped(self) -> Dropped:
        """The rejections as recorded on the job: a count per reason."""
        by_code = Counter(r.code for r in self.rejected)
        return Dropped(
            count=len(self.rejected),
            reasons=[DropReason(reason=code, count=n) for code, n in sorted(by_code.items())],
        )


def first_h1(text: str) -> str | None:
    """The text of the first ATX level-1 heading outside fenced code blocks."""
    fenced = False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith(("```", "~~~")):
            fenced = not fenced
            continue
        if fenced:
            continue
        match = _H1.match(line)
        if match:
            return match.group(1).strip()
    return None


def kind_for(relative: PurePath) -> DocKind:
    parts = [p.lower() for p in relative.parts]
    suffix = relative.suffix.lower()
    if suffix in (".yaml", ".yml"):
        return "yaml"
    if any(p in ("chapters", "chapter") for p in parts[:-1]):
        return "chapter"
    if any(p in ("tutorials", "tutorial") for p in parts[:-1]):
        return "tutorial"
    stem = relative.stem.lower()
    if stem in ("index", "toc", "readme", "table-of-contents", "summary") and len(parts) == 1:
        return "toc"
    if stem.startswith("chapter"):
        return "chapter"
    if stem.startswith("tutorial"):
        return "tutorial"
    return "other"


def slugify(raw: str) -> str:
    slug = _SLUG_BAD.sub("-", raw.lower()).strip("-")
    return (slug or "doc")[:MAX_SLUG_CHARS]


def slug_for(relative: PurePath) -> str:
    return slugify("/".join([*relative.parts[:-1], relative.stem]))


def printable_name(name: str) -> str:
    """A file name as valid text: bytes that are not UTF-8 become U+FFFD.

    Names that are not UTF-8 reach Python as lone surrogates, which no JSON encoder or
    UTF-8 encoder accepts.
    """
    return os.fsencode(name).decode("utf-8", "replace")


def title_for(relative: PurePath, content: str, kind: DocKind) -> str:
    title = first_h1(content) if kind != "yaml" else None
    name = printable_name(relative.name)
    if not title:
        stem = _ORDER_PREFIX.sub("", printable_name(relative.stem)).strip("-_. ")
        title = stem.replace("-", " ").replace("_", " ").strip().capitalize() or name
    title = " ".join(title.split())
    title = "".join(c for c in title if c >= " " and c != "\x7f")
    return title[:MAX_TITLE_CHARS] or name[:MAX_TITLE_CHARS]


def _order_prefix(relative: PurePath) -> int | None:
    match = _ORDER_PREFIX.match(relative.stem)
    return int(match.group(1)) if match else None


def _read_checked(root_real: Path, path: Path, max_file_bytes: int) -> str | Rejection:
    """Read one candidate file safely: its text, or why not (path left empty)."""
    try:
        st = os.lstat(path)
    except OSError as exc:
        return Rejection("", f"cannot stat: {exc.strerror}", "unreadable")
    if stat.S_ISLNK(st.st_mode):
        return Rejection("", "symlink", "symlink")
    if not stat.S_ISREG(st.st_mode):
        return Rejection("", "not a regular file", "unreadable")
    if st.st_nlink > 1:
        # Another name for a file that may live outside the output dir (a hard link).
        return Rejection("", "hard link", "outside_output")
    real = Path(os.path.realpath(path))
    if not real.is_relative_to(root_real):
        return Rejection("", "resolves outside the output directory", "outside_output")
    if st.st_size > max_file_bytes:
        return Rejection("", f"too large ({st.st_size} bytes > {max_file_bytes})", "too_large")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        return Rejection("", f"cannot open: {exc.strerror}", "unreadable")
    with os.fdopen(fd, "rb") as handle:
        fst = os.fstat(handle.fileno())
        if not stat.S_ISREG(fst.st_mode) or (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino):
            return Rejection("", "changed while reading", "unreadable")
        data = handle.read(max_file_bytes + 1)
    if len(data) > max_file_bytes:
        return Rejection("", f"too large (> {max_file_bytes} bytes)", "too_large")
    if b"\x00" in data:
        return Rejection("", "binary (NUL bytes)", "unreadable")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return Rejection("", "not UTF-8", "unreadable")
    if not text.strip():
        return Rejection("", "empty", "unreadable")
    return text


def collect_docs(
    output_dir: Path,
    *,
    scrub: Scrub = no_scrub,
    max_file_bytes: int = MAX_FILE_BYTES,
    max_docs: int = MAX_DOCS,
    max_total_bytes: int = MAX_TOTAL_BYTES,
) -> Collected:
    """Every acceptable doc under ``output_dir``, sorted by kind order then path, each
    derived from its ``scrub``-bed name and content."""
    collected = Collected()

    def name(path: Path) -> tuple[str, int]:
        return scrub(printable_name(path.relative_to(output_dir).as_posix()))

    if output_dir.is_symlink():
        collected.rejected.append(
            Rejection(OUTPUT_DIR_NAME, "output directory is a symlink", "symlink")
        )
        return collected
    if not output_dir.is_dir():
        return collected
    root_real = Path(os.path.realpath(output_dir))

    candidates: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(output_dir, followlinks=False):
        here = Path(dirpath)
        for entry in list(dirnames):
            if (here / entry).is_symlink():
                collected.rejected.append(Rejection(name(here / entry)[0], "symlink", "symlink"))
                dirnames.remove(entry)
        dirnames.sort()
        for entry in sorted(filenames):
            candidates.append(here / entry)

    total = 0
    used_slugs: set[str] = set()
    per_kind_index: dict[str, int] = {}
    for path in sorted(candidates, key=lambda p: p.relative_to(output_dir).as_posix()):
        rel_text, in_name = name(path)
        if path.suffix.lower() not in DOC_SUFFIXES and not path.is_symlink():
            collected.rejected.append(
                Rejection(rel_text, "not a markdown or YAML file", "not_a_doc")
            )
            continue
        raw = _read_checked(root_real, path, max_file_bytes)
        if isinstance(raw, Rejection):
            collected.rejected.append(dataclasses.replace(raw, path=rel_text))
            continue
        if len(collected.docs) >= max_docs:
            collected.rejected.append(
                Rejection(rel_text, f"more than {max_docs} docs", "over_doc_cap")
            )
            continue
        content, in_content = scrub(raw)
        # Everything below comes from the scrubbed name and content only.
        relative = PurePosixPath(rel_text)
        kind = kind_for(relative)
        title, in_title = scrub(title_for(relative, content, kind))
        slug, in_slug = scrub(slug_for(relative))
        slug = slugify(slug)
        base, n = slug, 2
        while slug in used_slugs:
            slug = f"{base}-{n}"
            n += 1
        doc_index = per_kind_index.get(kind, 0) + 1
        per_kind_index[kind] = doc_index
        prefix = _order_prefix(relative)
        order = 0 if kind == "toc" else (prefix if prefix is not None else doc_index)
        doc = Doc(slug=slug, title=title, kind=kind, order=order, content=content)
        if total + doc.size > max_total_bytes:
            collected.rejected.append(
                Rejection(rel_text, "total output size limit reached", "over_total_size")
            )
            continue
        used_slugs.add(slug)
        total += doc.size
        collected.docs.append(doc)
        hits = in_name + in_content + in_title + in_slug
        if hits:
            collected.redactions.append(Redaction(slug=slug, count=hits))
    return collected


def batch_docs(
    docs: list[Doc], *, max_batch_bytes: int = MAX_BATCH_BYTES, max_batch_docs: int = MAX_BATCH_DOCS
) -> list[list[Doc]]:
    """Split docs into upload batches within Convex's argument limits, keeping order."""
    batches: list[list[Doc]] = []
    current: list[Doc] = []
    size = 0
    for doc in docs:
        if current and (size + doc.size > max_batch_bytes or len(current) >= max_batch_docs):
            batches.append(current)
            current, size = [], 0
        current.append(doc)
        size += doc.size
    if current:
        batches.append(current)
    return batches
