"""The host state host_baseline promises, checked on each Molecule platform."""

from __future__ import annotations

from typing import Any

import pytest


def test_systemd_is_pid1_and_the_system_is_up(host: Any) -> None:
    assert host.process.get(pid=1).comm == "systemd"
    state = host.run("systemctl is-system-running").stdout.strip()
    assert state in {"running", "degraded"}, host.run("systemctl --failed --no-pager").stdout


@pytest.mark.parametrize("package", ["ca-certificates", "curl", "logrotate"])
def test_base_packages_are_installed(host: Any, package: str) -> None:
    assert host.package(package).is_installed


def test_journal_is_capped(host: Any) -> None:
    dropin = host.file("/etc/systemd/journald.conf.d/50-fondation.conf")
    assert dropin.exists
    assert dropin.user == "root"
    assert dropin.mode == 0o644
    assert "SystemMaxUse=" in dropin.content_string
    assert host.service("systemd-journald").is_running
