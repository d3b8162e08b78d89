from __future__ import annotations

import os
from pathlib import Path

import pytest

from fondation_worker.collect import (
    MAX_BATCH_BYTES,
    OUTPUT_DIR_NAME,
    batch_docs,
    collect_docs,
    first_h1,
)
from fondation_worker.models import Doc


@pytest.fixture
def out(tmp_path: Path) -> Path:
    directory = tmp_path / "repo" / OUTPUT_DIR_NAME
    (directory / "chapters").mkdir(parents=True)
    (directory / "tutorials").mkdir()
    return directory


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def test_collects_kinds_titles_and_order(out: Path) -> None:
    write(out / "index.md", "# My Project\n\nintro\n")
    write(out / "abstractions.yaml", "- name: A\n")
    write(out / "chapters" / "02-job.md", "Intro line\n\n# Chapter 2: Job\n")
    write(out / "chapters" / "01-scheduler.md", "```\n# not a title\n```\n# Chapter 1: Sched\n")
    write(out / "tutorials" / "01-first.md", "# Tutorial 1: First\n")
    write(out / "notes.md", "no heading at all\n")
    collected = collect_docs(out)
    assert not collected.rejected
    by_slug = {d.slug: d for d in collected.docs}
    assert by_slug["index"].kind == "toc"
    assert by_slug["index"].title == "My Project"
    assert by_slug["index"].order == 0
    assert by_slug["abstractions"].kind == "yaml"
    assert by_slug["chapters-01-scheduler"].kind == "chapter"
    assert by_slug["chapters-01-scheduler"].title == "Chapter 1: Sched"
    assert by_slug["chapters-01-scheduler"].order == 1
    assert by_slug["chapters-02-job"].order == 2
    assert by_slug["tutorials-01-first"].kind == "tutorial"
    assert by_slug["notes"].kind == "other"
    assert by_slug["notes"].title == "Notes"


def test_symlink_to_a_file_outside_is_rejected(out: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.md"
    write(secret, "# secret\nTOKEN\n")
    os.symlink(secret, out / "chapters" / "03-leak.md")
    os.symlink("/etc/passwd", out / "passwd.md")
    write(out / "chapters" / "01-ok.md", "# ok\n")
    collected = collect_docs(out)
    assert [d.slug for d in collected.docs] == ["chapters-01-ok"]
    reasons = {r.path: r.reason for r in collected.rejected}
    assert reasons == {"chapters/03-leak.md": "symlink", "passwd.md": "symlink"}
    assert all("TOKEN" not in d.content for d in collected.docs)


def test_symlink_inside_is_rejected_too(out: Path) -> None:
    write(out / "a.md", "# A\n")
    os.symlink(out / "a.md", out / "b.md")
    collected = collect_docs(out)
    assert [d.slug for d in collected.docs] == ["a"]
    assert collected.rejected[0].reason == "symlink"


def test_symlinked_directory_is_not_followed(out: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    write(outside / "x.md", "# outside\n")
    os.symlink(outside, out / "linked")
    collected = collect_docs(out)
    assert collected.docs == []
    assert [(r.path, r.reason) for r in collected.rejected] == [("linked", "symlink")]


def test_output_dir_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "elsewhere"
    write(real / "x.md", "# x\n")
    link = tmp_path / OUTPUT_DIR_NAME
    os.symlink(real, link)
    collected = collect_docs(link)
    assert collected.docs == []
    assert collected.rejected[0].reason == "output directory is a symlink"


def test_binary_and_non_utf8_files_are_rejected(out: Path) -> None:
    (out / "bin.md").write_bytes(b"# title\x00\x01\x02")
    (out / "latin1.md").write_bytes("# café\n".encode("latin-1"))
    write(out / "good.md", "# Good ✓\n")
    collected = collect_docs(out)
    assert [d.slug for d in collected.docs] == ["good"]
    assert collected.docs[0].title == "Good ✓"
    reasons = {r.path: r.reason for r in collected.rejected}
    assert reasons == {"bin.md": "binary (NUL bytes)", "latin1.md": "not UTF-8"}


def test_huge_file_is_rejected(out: Path) -> None:
    write(out / "huge.md", "# huge\n" + "x" * 2_000_000)
    write(out / "small.md", "# small\n")
    collected = collect_docs(out, max_file_bytes=1_000_000)
    assert [d.slug for d in collected.docs] == ["small"]
    assert collected.rejected[0].reason.startswith("too large")


def test_other_files_and_fifos_are_rejected(out: Path) -> None:
    (out / "image.png").write_bytes(b"\x89PNG")
    os.mkfifo(out / "pipe.md")
    write(out / "empty.md", "   \n")
    collected = collect_docs(out)
    assert collected.docs == []
    reasons = {r.path: r.reason for r in collected.rejected}
    assert reasons == {
        "empty.md": "empty",
        "image.png": "not a markdown or YAML file",
        "pipe.md": "not a regular file",
    }


def test_count_and_total_limits(out: Path) -> None:
    for i in range(5):
        write(out / f"{i:02d}.md", f"# {i}\n" + "y" * 100)
    collected = collect_docs(out, max_docs=3)
    assert len(collected.docs) == 3
    assert len(collected.rejected) == 2
    collected = collect_docs(out, max_total_bytes=400)
    assert len(collected.docs) == 2


def test_missing_output_dir_gives_nothing(tmp_path: Path) -> None:
    collected = collect_docs(tmp_path / "nope")
    assert collected.docs == []
    assert collected.rejected == []


def test_slugs_are_unique_and_safe(out: Path) -> None:
    write(out / "Chapters" / "A B.md", "# one\n")
    write(out / "chapters-a-b.md", "# two\n")
    write(out / "weird ✓ name!.md", "# three\x1b[31m red\n")
    collected = collect_docs(out)
    slugs = [d.slug for d in collected.docs]
    assert len(set(slugs)) == 3
    assert all(s.replace("-", "").isalnum() and s.isascii() for s in slugs)
    titles = {d.title for d in collected.docs}
    assert "three[31m red" in titles  # control characters dropped


def test_first_h1() -> None:
    assert first_h1("text\n## two\n# One #\n") == "One"
    assert first_h1("#NoSpace\n") is None


def doc(n: int, size: int) -> Doc:
    return Doc(slug=f"d{n}", title="t", kind="other", order=n, content="x" * size)


def test_batches_respect_size_and_count() -> None:
    docs = [doc(i, 200_000) for i in range(7)]
    batches = batch_docs(docs)
    assert [len(b) for b in batches] == [2, 2, 2, 1]
    assert all(sum(d.size for d in b) <= MAX_BATCH_BYTES for b in batches)
    many = batch_docs([doc(i, 10) for i in range(60)], max_batch_docs=25)
    assert [len(b) for b in many] == [25, 25, 10]
    assert [d.slug for b in many for d in b] == [f"d{i}" for i in range(60)]


def test_hard_link_to_a_file_outside_is_rejected(out: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.md"
    secret.write_text("# Secret\n\nhost data\n")
    os.link(secret, out / "chapters" / "01-hard.md")
    write(out / "chapters" / "02-fine.md", "# Fine\n")
    collected = collect_docs(out)
    assert [d.slug for d in collected.docs] == ["chapters-02-fine"]
    assert [(r.path, r.reason) for r in collected.rejected] == [
        ("chapters/01-hard.md", "hard link")
    ]


def test_names_that_are_not_utf8_give_valid_titles(out: Path) -> None:
    odd = out / "chapters" / os.fsdecode(b"03-caf\xe9-notes.md")
    write(odd, "no heading\n")
    write(out / "chapters" / os.fsdecode(b"04-\xff.md"), "# A real title\n")
    collected = collect_docs(out)
    assert not collected.rejected
    by_order = {d.order: d for d in collected.docs}
    assert by_order[3].title == "Caf\ufffd notes"
    assert by_order[4].title == "A real title"
    for doc in collected.docs:
        assert doc.size > 0  # encodes as UTF-8
        assert doc.slug.isascii()


def test_every_drop_has_a_code_and_the_summary_counts_them(out: Path, tmp_path: Path) -> None:
    outside = tmp_path / "secret.md"
    write(outside, "# secret\n")
    (out / "link.md").symlink_to(outside)
    (out / "image.png").write_bytes(b"\x89PNG")
    (out / "bin.md").write_bytes(b"# b\x00")
    write(out / "huge.md", "# huge\n" + "x" * 2_000)
    for i in range(4):
        write(out / "chapters" / f"{i:02d}.md", f"# {i}\n")
    collected = collect_docs(out, max_file_bytes=1_000, max_docs=3)
    codes = {r.path: r.code for r in collected.rejected}
    assert codes == {
        "bin.md": "unreadable",
        "chapters/03.md": "over_doc_cap",
        "huge.md": "too_large",
        "image.png": "not_a_doc",
        "link.md": "symlink",
    }
    dropped = collected.dropped()
    assert dropped.count == 5
    assert [(r.reason, r.count) for r in dropped.reasons] == [
        ("not_a_doc", 1),
        ("over_doc_cap", 1),
        ("symlink", 1),
        ("too_large", 1),
        ("unreadable", 1),
    ]
    over_total = collect_docs(out, max_total_bytes=10)
    assert {r.code for r in over_total.rejected} >= {"over_total_size"}
