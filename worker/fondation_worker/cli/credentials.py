"""``fondation-worker credentials issue | list | revoke``: per-worker credentials.

Operator commands (OPERATOR_TOKEN, like ``stuck`` and ``reclaim``): each worker replica gets
a credential of its own, bound to its worker id (convex/credentials.ts). ``issue`` draws the
secret here and sends Convex only its SHA-256; ``revoke --host H --yes`` stops every worker of
one host at once, the others never notice (docs/RUNBOOK.md, "Revoking a worker host").
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from ..errors import ConvexCodedError, WorkerError
from ..models import Credential
from ..worker_credential import credential_hash, new_credential, write_env_file
from .render import table
from .support import EXIT_CONFIG, convex_or_exit, settings_or_exit

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Per-worker credentials: issue, list and revoke them (operator, OPERATOR_TOKEN).",
)


def _when(ms: float | None) -> str:
    if ms is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(ms / 1000))


def _rows(credentials: list[Credential]) -> list[str]:
    rows = [["CREDENTIAL", "WORKER", "HOST", "FINGERPRINT", "ISSUED", "REVOKED"]]
    for c in credentials:
        rows.append(
            [
                c.credential_id,
                c.worker_id,
                c.host or "-",
                c.fingerprint,
                _when(c.created_at),
                _when(c.revoked_at),
            ]
        )
    return table(rows)


def _refused(exc: WorkerError) -> typer.Exit:
    typer.echo(f"fondation-worker: {exc}", err=True)
    return typer.Exit(EXIT_CONFIG if isinstance(exc, ConvexCodedError) else 1)


@app.command()
def issue(
    worker_id: Annotated[str, typer.Argument(help="The worker's WORKER_ID")],
    host: Annotated[
        str | None, typer.Option(help="The host it runs on (revoke a host at once)")
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            help="Write WORKER_TOKEN=<credential> to this new file (mode 0600) instead of stdout"
        ),
    ] = None,
) -> None:
    """Issue a credential for one worker (its previous one is revoked): WORKER_TOKEN=... once."""
    settings = settings_or_exit("credentials")
    credential = new_credential()
    if output is not None:
        # Written before Convex knows it: a file that cannot be written costs nothing.
        try:
            write_env_file(output, credential)
        except OSError as exc:
            typer.echo(f"fondation-worker: cannot write {output}: {exc.strerror}", err=True)
            raise typer.Exit(EXIT_CONFIG) from None
    with convex_or_exit(settings, "credentials") as convex:
        try:
            reply = convex.issue_credential(worker_id, credential_hash(credential), host)
        except WorkerError as exc:
            if output is not None:
                output.unlink(missing_ok=True)
            raise _refused(exc) from None
    replaced = f", {reply.replaced} previous one(s) revoked" if reply.replaced else ""
    typer.echo(
        f"credential {reply.credential.credential_id} issued for worker {worker_id} "
        f"(fingerprint {reply.credential.fingerprint}{replaced})",
        err=True,
    )
    if output is not None:
        typer.echo(f"written to {output} (mode 0600): the worker's env file", err=True)
        return
    sys.stdout.write(f"WORKER_TOKEN={credential}\n")


@app.command("list")
def list_(
    worker_id: Annotated[str | None, typer.Option(help="Only this worker's")] = None,
    host: Annotated[str | None, typer.Option(help="Only this host's")] = None,
    include_revoked: Annotated[bool, typer.Option("--all", help="Also the revoked ones")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list")] = False,
) -> None:
    """The active credentials (never a secret: the first 12 hex digits of its SHA-256)."""
    settings = settings_or_exit("credentials")
    with convex_or_exit(settings, "credentials") as convex:
        try:
            found = convex.list_credentials(
                worker_id=worker_id, host=host, include_revoked=include_revoked
            )
        except WorkerError as exc:
            raise _refused(exc) from None
    if as_json:
        typer.echo(json.dumps([c.model_dump(by_alias=True, mode="json") for c in found], indent=2))
        return
    if not found:
        typer.echo("no credentials" + ("" if include_revoked else " active"))
        return
    for line in _rows(found):
        typer.echo(line)


@app.command()
def revoke(
    worker_id: Annotated[str | None, typer.Option(help="Revoke this worker's")] = None,
    host: Annotated[str | None, typer.Option(help="Revoke every worker of this host")] = None,
    credential_id: Annotated[str | None, typer.Option(help="Revoke this credential")] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Revoke without asking")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the revoked ones as JSON")] = False,
) -> None:
    """Revoke a worker's, a host's or one credential: refused from its next call on; its
    in-flight job returns to the queue when its lease expires. Needs --yes."""
    chosen = [s for s in (worker_id, host, credential_id) if s]
    if len(chosen) != 1:
        typer.echo(
            "fondation-worker: name exactly one of --worker-id, --host and --credential-id",
            err=True,
        )
        raise typer.Exit(EXIT_CONFIG)
    settings = settings_or_exit("credentials")
    with convex_or_exit(settings, "credentials") as convex:
        if not yes:
            try:
                active = (
                    convex.list_credentials(worker_id=worker_id, host=host)
                    if credential_id is None
                    else [c for c in convex.list_credentials() if c.credential_id == credential_id]
                )
            except WorkerError as exc:
                raise _refused(exc) from None
            if not active:
                typer.echo("no active credential matches: nothing to revoke")
                return
            for line in _rows(active):
                typer.echo(line)
            typer.echo("re-run with --yes to revoke")
            raise typer.Exit(1)
        try:
            reply = convex.revoke_credentials(
                worker_id=worker_id, host=host, credential_id=credential_id
            )
        except WorkerError as exc:
            raise _refused(exc) from None
    if as_json:
        typer.echo(
            json.dumps([c.model_dump(by_alias=True, mode="json") for c in reply.revoked], indent=2)
        )
        return
    if not reply.revoked:
        typer.echo("no active credential matched: nothing revoked")
        return
    typer.echo(f"revoked {len(reply.revoked)} credential(s):")
    for line in _rows(reply.revoked):
        typer.echo(f"  {line}")
