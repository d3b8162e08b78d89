"""``fondation-worker``: run, check, enqueue, status, stuck, reclaim, requeue, cancel,
healthcheck.

A thin layer of typer commands: the worker is built by assembly.py, the checks live in
checks.py, the operator commands in cli_operator.py. Configuration problems print one line
each to stderr and exit 2, never a traceback.
"""

from __future__ import annotations

from typing import Annotated

import typer

from . import __version__, cli_operator
from .assembly import StartupError, build_worker
from .checks import check_all, runtime_problems
from .claude_runner import PROBE_TIMEOUT_S
from .cli_support import EXIT_CONFIG, convex_or_exit, fail_config, settings_or_exit
from .logging_setup import configure_logging
from .redact import Redactor

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Runs Fondation's Claude analysis jobs from a Convex queue.",
)

__all__ = ["EXIT_CONFIG", "app"]


@app.command()
def run() -> None:
    """Claim and run jobs until SIGTERM/SIGINT (a second signal releases jobs at once)."""
    settings = settings_or_exit("run", quiet_logs=False)
    problems = runtime_problems(settings)
    if problems:
        raise fail_config(problems)
    redactor = Redactor(settings.secret_values())
    configure_logging(
        redactor,
        log_format=settings.log_format,
        log_file=settings.log_file,
        level=settings.log_level,
    )
    try:
        worker = build_worker(settings, redactor)
    except StartupError as exc:
        typer.echo(f"fondation-worker: {exc.message}", err=True)
        raise typer.Exit(exc.exit_code) from None
    raise typer.Exit(worker.run())


@app.command()
def check(
    claude_timeout: Annotated[
        float, typer.Option(help="Seconds for the Claude call")
    ] = PROBE_TIMEOUT_S,
) -> None:
    """Check config, Convex, Claude auth (a tiny real call), disk and git; non-zero on failure."""
    settings = settings_or_exit("check")
    problems = runtime_problems(settings)
    if problems:
        # The same configuration would stop `run`: say so the same way.
        raise fail_config(problems)
    failed = False
    for result in check_all(settings, lambda: convex_or_exit(settings, "check"), claude_timeout):
        failed = failed or result.failed
        typer.echo(result.line())
    raise typer.Exit(1 if failed else 0)


# Registered here so `--help` lists the commands in the order above and below.
for command in cli_operator.COMMANDS:
    app.command()(command)


@app.command()
def healthcheck(
    timeout: Annotated[float, typer.Option(help="Seconds")] = 3.0,
) -> None:
    """GET /healthz on HEALTH_BIND; exit 0 when healthy (for Docker HEALTHCHECK)."""
    # The console script answers this before loading the CLI (entry.py); same code here.
    from .healthcheck import healthcheck as check

    raise typer.Exit(check(timeout))


@app.command()
def version() -> None:
    """Print the worker's version."""
    typer.echo(__version__)
