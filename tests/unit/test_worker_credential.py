"""Per-worker credentials on the worker side: the shape drawn, the hash Convex stores (the
same function as convex/lib/auth.ts's credentialHash), the 0600 env file, and the CLI's
refusals that need no Convex (the Convex side: tests/convex/worker_credentials.test.ts; end
to end: tests/worker/test_worker_credentials.py)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fondation_worker import cli
from fondation_worker.worker_credential import (
    credential_hash,
    is_credential,
    new_credential,
    write_env_file,
)


def test_a_credential_is_fwc_and_256_random_bits() -> None:
    drawn = {new_credential() for _ in range(200)}
    assert len(drawn) == 200
    for credential in drawn:
        assert is_credential(credential)
        assert len(credential) == 4 + 43
    assert not is_credential("local-dev-token-not-secret")
    assert not is_credential(next(iter(drawn)) + "x")


def test_the_hash_is_sha256_hex_of_the_whole_value() -> None:
    credential = new_credential()
    assert credential_hash(credential) == hashlib.sha256(credential.encode()).hexdigest()
    # the vector the Convex side is tested with (tests/convex/sha256.test.ts: "abc")
    assert credential_hash("abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


def test_the_env_file_is_0600_and_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "w.env"
    credential = new_credential()
    write_env_file(path, credential)
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.read_text() == f"WORKER_TOKEN={credential}\n"
    with pytest.raises(FileExistsError):
        write_env_file(path, new_credential())
    assert path.read_text() == f"WORKER_TOKEN={credential}\n"


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--worker-id", "w1", "--host", "h"],
        ["--host", "h", "--credential-id", "c"],
    ],
)
def test_revoke_names_exactly_one_selector(args: list[str]) -> None:
    result = CliRunner().invoke(cli.app, ["credentials", "revoke", "--yes", *args])
    assert result.exit_code == 2
    assert "exactly one of --worker-id, --host and --credential-id" in result.output
