"""The ``fondation-worker`` command line, one package (as in rq):

- ``app``: the typer application and the worker's own commands (run, check, healthcheck,
  version);
- ``operator``: the operator commands (enqueue, status, stuck, reclaim, requeue, cancel);
- ``support``: what every command shares (Settings or exit 2, a Convex client or exit 2);
- ``checks``: what ``run`` refuses to start without, and the checks of ``check``;
- ``render``: what the operator commands print (pure functions of Convex's replies).

The console script (``fondation_worker.entry``) answers ``healthcheck`` without importing
this package.
"""

from __future__ import annotations

from .app import EXIT_CONFIG, app

__all__ = ["EXIT_CONFIG", "app"]
