"""Staging a read-only Claude login into the writable config dir (auth method a)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from fondation_worker.credentials import LoginBroker, stage_credentials


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


def _login(access: str) -> str:
    oauth = {"accessToken": access, "refreshToken": f"r-{access}", "scopes": ["x"]}
    return json.dumps({"claudeAiOauth": oauth})


def test_step_config_dir_holds_only_the_login_and_is_removed(tmp_path: Path) -> None:
    main = tmp_path / "main"
    main.mkdir()
    (main / ".credentials.json").write_text(_login("a" * 20))
    (main / "settings.json").write_text('{"permissions": {"allow": ["Bash"]}}')
    (main / "projects").mkdir()
    dest = tmp_path / "ws" / "claude-config-step"
    with LoginBroker().step(main, dest, needed_s=60) as config:
        assert sorted(p.name for p in config.iterdir()) == [".credentials.json"]
        assert stat.S_IMODE(os.stat(config / ".credentials.json").st_mode) == 0o600
        assert stat.S_IMODE(os.stat(config).st_mode) == 0o700
    assert not dest.exists()
    assert (main / ".credentials.json").read_text() == _login("a" * 20)


def test_step_config_dir_copies_a_refreshed_login_back(tmp_path: Path) -> None:
    main = tmp_path / "main"
    main.mkdir()
    (main / ".credentials.json").write_text(_login("a" * 20))
    with LoginBroker().step(main, tmp_path / "step", needed_s=60) as config:
        (config / ".credentials.json").write_text(_login("b" * 20))
    assert (main / ".credentials.json").read_text() == _login("b" * 20)
    # Garbage or a link left by the run is not copied back.
    with LoginBroker().step(main, tmp_path / "step", needed_s=60) as config:
        (config / ".credentials.json").write_text("not json")
    assert (main / ".credentials.json").read_text() == _login("b" * 20)
    with LoginBroker().step(main, tmp_path / "step", needed_s=60) as config:
        (config / ".credentials.json").unlink()
        (config / ".credentials.json").symlink_to(tmp_path / "elsewhere.json")
    assert (main / ".credentials.json").read_text() == _login("b" * 20)


def test_step_config_dir_without_a_login_is_empty(tmp_path: Path) -> None:
    with LoginBroker().step(None, tmp_path / "step", needed_s=60) as config:
        assert list(config.iterdir()) == []
    (tmp_path / "main").mkdir()
    (tmp_path / "main" / ".credentials.json").symlink_to("/etc/hostname")
    with LoginBroker().step(tmp_path / "main", tmp_path / "step", needed_s=60) as config:
        assert list(config.iterdir()) == []


def test_login_secrets_are_the_long_string_values(tmp_path: Path) -> None:
    from fondation_worker.credentials import login_secrets

    (tmp_path / ".credentials.json").write_text(_login("z" * 20))
    assert sorted(login_secrets(tmp_path)) == sorted(["z" * 20, "r-" + "z" * 20])
    assert login_secrets(tmp_path / "missing") == []
    assert login_secrets(None) == []
