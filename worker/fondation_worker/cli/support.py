"""What every ``fondation-worker`` command shares: Settings or exit 2, a Convex client or
exit 2, and the config-error lines (one per problem on stderr, never a traceback).

Each command names itself: config.CREDENTIALS says which token it needs, so an operator
command runs without the worker's token and a missing token is named for that command."""

from __future__ import annotations

import sys

import typer

from ..assembly import connect
from ..config import Settings, load_settings
from ..convex_client import ConvexClient
from ..errors import ConfigError
from ..logging_setup import configure_logging
from ..redact import Redactor

EXIT_CONFIG = 2
# The job is not in a state the command acts on (``requeue`` of a job that is not dead): nothing
# was done, and nothing went wrong. Plays tell it from a failure by this code alone.
EXIT_NOTHING_TO_DO = 3
# ``enqueue --wait --timeout``: the job had not ended by then (it was canceled). A rollout's
# smoke job tells a stuck canary from a failed one by this code.
EXIT_TIMED_OUT = 4


def fail_config(problems: list[str]) -> typer.Exit:
    """Print one line per problem; the exit to raise (code 2)."""
    for problem in problems:
        typer.echo(f"fondation-worker: config error: {problem}", err=True)
    return typer.Exit(EXIT_CONFIG)


def settings_or_exit(command: str, *, quiet_logs: bool = True) -> Settings:
    """Settings for ``command`` from the environment, or exit 2 with the problems."""
    try:
        settings = load_settings(command)
    except ConfigError as exc:
        raise fail_config(exc.problems) from None
    if quiet_logs:
        # Operator commands print their own output; log lines only for warnings, on stderr.
        configure_logging(
            Redactor(settings.secret_values()),
            log_format="console",
            level="warning",
            stream=sys.stderr,
        )
    return settings


def convex_or_exit(settings: Settings, command: str) -> ConvexClient:
    """``assembly.connect`` with ``command``'s token, or exit 2 when it is not set."""
    try:
        return connect(settings, command=command)
    except ConfigError as exc:
        raise fail_config(exc.problems) from None
