"""The ``fondation-worker`` console script: the healthcheck without loading the CLI.

``fondation-worker healthcheck`` runs every 15 s in every container; importing the CLI
(typer, httpx, pydantic, structlog, prometheus-client) costs about 40 times a bare Python
start, so that one command is answered from the standard library. Everything else, and
any healthcheck arguments other than ``--timeout``, goes to the full CLI.
"""

from __future__ import annotations

import sys


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["healthcheck"]:
        from .healthcheck import healthcheck, parse_args

        timeout = parse_args(args[1:])
        if timeout is not None:
            raise SystemExit(healthcheck(timeout))
    from .cli import app

    app()
