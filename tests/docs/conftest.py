"""The `documented` fixture: a DocShell (tests/docs/commands.py) for the test, which fails
the test when it passed without running every command RUN_BY gives it."""

from __future__ import annotations

from collections.abc import Generator, Iterator

import pytest

from tests.docs.commands import DocShell, runner_id

CALL = pytest.StashKey[pytest.TestReport]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call":
        item.stash[CALL] = report
    return report


@pytest.fixture
def documented(request: pytest.FixtureRequest) -> Iterator[DocShell]:
    shell = DocShell(runner_id(request.node.nodeid))
    yield shell
    report = request.node.stash.get(CALL, None)
    if report is not None and report.passed:
        missing = shell.missing()
        assert not missing, (
            f"RUN_BY (tests/docs/commands.py) says {shell.test} runs these, and it did not: "
            f"{sorted(missing)}"
        )
