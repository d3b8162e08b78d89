"""The healthcheck's fast path: what it parses, and that it loads none of the CLI's libraries."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fondation_worker.healthcheck import DEFAULT_TIMEOUT_S, parse_args, parse_bind

HEAVY = ("typer", "httpx", "pydantic", "pydantic_settings", "structlog", "prometheus_client")


@pytest.mark.parametrize(
    ("args", "timeout"),
    [
        ([], DEFAULT_TIMEOUT_S),
        (["--timeout", "1.5"], 1.5),
        (["--timeout=2"], 2.0),
        (["--timeout", "x"], None),
        (["--help"], None),
        (["--timeout"], None),
    ],
)
def test_arguments_the_fast_path_takes_and_those_it_leaves_to_the_cli(
    args: list[str], timeout: float | None
) -> None:
    assert parse_args(args) == timeout


def test_bind_parsing() -> None:
    assert parse_bind("127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert parse_bind("[::1]:9") == ("::1", 9)
    for bad in ("8080", "host:99999", "a:b:c"):
        with pytest.raises(ValueError):
            parse_bind(bad)


def test_the_console_script_answers_healthcheck_without_the_cli_libraries() -> None:
    code = (
        "import sys\n"
        "sys.argv = ['fondation-worker', 'healthcheck', '--timeout', '0.5']\n"
        "from fondation_worker.entry import main\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exc:\n"
        "    print('exit', exc.code)\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={"HEALTH_BIND": "127.0.0.1:1"},  # nothing listens there
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.stdout.splitlines() == ["unhealthy: ConnectionRefusedError", "exit 1", "[]"]
