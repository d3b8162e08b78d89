"""Staging a read-only Claude login into the writable config dir (auth method a)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from fondation_worker.credentials import stage_credentials


def _readonly_login(tmp_path: Path) -> Path:
    source = tmp_path / "mounted"
    source.mkdir()
    (source / ".credentials.json").write_text('{"claudeAiOauth": {"accessToken": "x"}}')
    (source / ".claude.json").write_text('{"userID": "u"}')
    (source / "projects").mkdir()  # transcripts: never copied
    (source / "huge.json").write_bytes(b"0" * 2_000_000)
    outside = tmp_path / "outside-secret"
    outside.write_text("not for the worker")
    (source / "link.json").symlink_to(outside)
    for path in source.iterdir():
        if not path.is_symlink():
            path.chmod(0o500 if path.is_dir() else 0o400)
    source.chmod(0o500)
    return source


def test_copies_the_login_files_privately_and_skips_the_rest(tmp_path: Path) -> None:
    source = _readonly_login(tmp_path)
    config_dir = tmp_path / "config"

    staged = stage_credentials(source, config_dir)

    assert staged.has_login
    assert set(staged.copied) == {".credentials.json", ".claude.json"}
    assert set(staged.skipped) == {"projects", "huge.json", "link.json"}
    assert sorted(p.name for p in config_dir.iterdir()) == [".claude.json", ".credentials.json"]
    copied = config_dir / ".credentials.json"
    assert copied.read_text() == (source / ".credentials.json").read_text()
    assert stat.S_IMODE(copied.stat().st_mode) == 0o600
    # The copy is writable, so the CLI can refresh its token there.
    copied.write_text("{}")
    assert (source / ".credentials.json").read_text() != "{}"


def test_a_second_start_overwrites_the_stale_copy(tmp_path: Path) -> None:
    source = _readonly_login(tmp_path)
    config_dir = tmp_path / "config"
    stage_credentials(source, config_dir)
    (config_dir / ".credentials.json").write_text("stale")

    stage_credentials(source, config_dir)

    assert (config_dir / ".credentials.json").read_text().startswith('{"claudeAiOauth"')
    assert not any(p.name.endswith(".staging") for p in config_dir.iterdir())


def test_missing_or_empty_source_stages_nothing(tmp_path: Path) -> None:
    assert stage_credentials(tmp_path / "absent", tmp_path / "config").copied == ()
    empty = tmp_path / "empty"
    empty.mkdir()
    staged = stage_credentials(empty, tmp_path / "config")
    assert staged.copied == ()
    assert not staged.has_login
    assert os.access(tmp_path / "config", os.W_OK)
