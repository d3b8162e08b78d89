"""Users sign in with real JWTs: the dev backend verifies them as Convex does.

A local test issuer (its own RSA key pair, its JWKS served over loopback HTTP) signs
tokens; the dev backend runs with ``convex/auth.config.ts`` configured from the
``AUTH_*`` variables for that issuer, and ``OPERATOR_TOKEN`` set. The official Python
client (``set_auth``) and the JS client (``setAuth``) call as users: each user enqueues,
lists, cancels and reads only their own jobs and documents; an expired, wrongly signed,
wrong-audience or foreign-issuer token is refused; an anonymous caller is refused.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from convex.http_client import ConvexHttpClient
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from official_js import js_calls
from pydantic import SecretStr

from convex import ConvexError
from fondation_worker.convex_client import ConvexClient
from fondation_worker.errors import Unauthorized
from fondation_worker.models import Doc, Summary
from tests.support import (
    TEST_OPERATOR_TOKEN,
    TEST_WORKER_TOKEN,
    DevBackend,
    claim,
    free_port,
    start_dev_backend,
)

pytestmark = pytest.mark.integration

AUDIENCE = "fondation-web"
OPERATOR_TOKEN = TEST_OPERATOR_TOKEN
REPO = "https://github.com/acme/widgets"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass
class Issuer:
    url: str
    key: rsa.RSAPrivateKey
    kid: str

    def token(self, sub: str, **overrides: Any) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.url,
            "sub": sub,
            "aud": AUDIENCE,
            "iat": now,
            "exp": now + 600,
            **overrides,
        }
        return sign(claims, self.key, self.kid)


def sign(claims: dict[str, Any], key: rsa.RSAPrivateKey, kid: str) -> str:
    header = {"alg": "RS256", "typ": "JWT", "kid": kid}
    signed = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    signature = key.sign(signed.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
    return f"{signed}.{b64url(signature)}"


def public_jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, str]:
    numbers = key.public_key().public_numbers()
    as_bytes = lambda n: n.to_bytes((n.bit_length() + 7) // 8, "big")  # noqa: E731
    return {
        "kty": "RSA",
        "kid": kid,
        "alg": "RS256",
        "use": "sig",
        "n": b64url(as_bytes(numbers.n)),
        "e": b64url(as_bytes(numbers.e)),
    }


@pytest.fixture(scope="module")
def issuer() -> Iterator[Issuer]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwks = json.dumps({"keys": [public_jwk(key, "test-key-1")]}).encode()

    base: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/jwks.json":
                body = jwks
            elif self.path == "/.well-known/openid-configuration":
                body = json.dumps({"issuer": base[0], "jwks_uri": f"{base[0]}/jwks.json"}).encode()
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    base.append(f"http://127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Issuer(base[0], key, "test-key-1")
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def backend(issuer: Issuer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevBackend]:
    started = start_dev_backend(
        tmp_path_factory.mktemp("auth-backend"),
        "github.com",
        reclaim_ms=60_000,
        extra_env={
            "AUTH_ISSUER": issuer.url,
            "AUTH_APPLICATION_ID": AUDIENCE,
            "AUTH_JWKS_URL": f"{issuer.url}/jwks.json",
            "OPERATOR_TOKEN": OPERATOR_TOKEN,
        },
    )
    yield started
    started.stop()


def as_user(backend: DevBackend, token: str | None) -> ConvexHttpClient:
    client = ConvexHttpClient(backend.url)
    if token is not None:
        client.set_auth(token)
    return client


def complete_with_docs(backend: DevBackend, job_id: str) -> None:
    """The worker runs the job: claim, start, upload one doc, complete."""
    with ConvexClient(backend.url, SecretStr(TEST_WORKER_TOKEN), timeout_s=5) as worker:
        claimed = claim(worker, "w1", 60_000)
        assert claimed is not None
        assert claimed.job_id == job_id
        worker.start(job_id, claimed.lease_token)
        doc = Doc(slug="index", title="Index", kind="toc", order=0, content="# Index\n")
        worker.upload_docs(job_id, claimed.lease_token, "run-1", [doc])
        worker.complete(job_id, claimed.lease_token, "run-1", Summary(docs_count=1, duration_ms=5))
        # the worker token reads the job it held, with its lease token, and nothing else
        held = worker.get_job(job_id, claimed.lease_token)
        assert held is not None
        assert held.status == "completed"
        with pytest.raises(Unauthorized):
            worker.get_job(job_id)


def test_each_user_sees_enqueues_cancels_and_reads_only_their_own(
    backend: DevBackend, issuer: Issuer
) -> None:
    backend.reset()
    ada = as_user(backend, issuer.token("ada"))
    bob = as_user(backend, issuer.token("bob"))
    done = ada.mutation("jobs:enqueue", {"repoUrl": REPO, "userId": "someone-else"})
    complete_with_docs(backend, done["jobId"])
    queued = ada.mutation("jobs:enqueue", {"repoUrl": REPO, "dedupeKey": "k"})
    bobs = bob.mutation("jobs:enqueue", {"repoUrl": REPO, "dedupeKey": "k"})
    assert bobs["created"] is True  # dedupe keys are per user

    mine = ada.query("jobs:listByUser", {})
    assert {j["jobId"] for j in mine} == {done["jobId"], queued["jobId"]}
    assert {j["userId"] for j in mine} == {"ada"}  # the identity wins over a userId argument
    assert [j["jobId"] for j in bob.query("jobs:listByUser", {"userId": "ada"})] == [bobs["jobId"]]
    assert ada.query("jobs:get", {"jobId": done["jobId"]})["status"] == "completed"
    assert bob.query("jobs:get", {"jobId": done["jobId"]}) is None

    assert [d["slug"] for d in ada.query("docs:listByJob", {"jobId": done["jobId"]})] == ["index"]
    assert ada.query("docs:getDoc", {"jobId": done["jobId"], "slug": "index"})["content"] == (
        "# Index\n"
    )
    assert bob.query("docs:listByJob", {"jobId": done["jobId"]}) == []
    assert bob.query("docs:getDoc", {"jobId": done["jobId"], "slug": "index"}) is None

    with pytest.raises(ConvexError) as not_yours:
        bob.mutation("jobs:cancel", {"jobId": queued["jobId"]})
    assert not_yours.value.data["code"] == "NOT_FOUND"
    assert ada.mutation("jobs:cancel", {"jobId": queued["jobId"]}) == {"status": "canceled"}


def test_the_js_client_signs_in_with_set_auth(backend: DevBackend, issuer: Issuer) -> None:
    backend.reset()
    ada, bob = issuer.token("ada"), issuer.token("bob")
    enq, listed, others, canceled = js_calls(
        backend.url,
        [
            {"kind": "mutation", "path": "jobs:enqueue", "args": {"repoUrl": REPO}, "auth": ada},
            {"kind": "query", "path": "jobs:listByUser", "args": {}, "auth": ada},
            {"kind": "query", "path": "jobs:listByUser", "args": {}, "auth": bob},
            {"kind": "mutation", "path": "jobs:cancel", "args": {"jobId": "x"}, "auth": ada},
        ],
    )
    assert enq["ok"] is True
    assert [j["userId"] for j in listed["value"]] == ["ada"]
    assert others["value"] == []
    assert canceled["data"]["code"] == "NOT_FOUND"


@pytest.mark.parametrize(
    "bad",
    ["expired", "wrong_key", "wrong_audience", "foreign_issuer", "not_a_jwt", "no_signature"],
)
def test_bad_tokens_are_refused(backend: DevBackend, issuer: Issuer, bad: str) -> None:
    now = int(time.time())
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    good = issuer.token("ada")
    token = {
        "expired": issuer.token("ada", iat=now - 7200, exp=now - 3600),
        "wrong_key": sign(
            {"iss": issuer.url, "sub": "ada", "aud": AUDIENCE, "exp": now + 600},
            other_key,
            issuer.kid,
        ),
        "wrong_audience": issuer.token("ada", aud="another-app"),
        "foreign_issuer": issuer.token("ada", iss="https://evil.example"),
        "not_a_jwt": "hello",
        "no_signature": good.rsplit(".", 1)[0] + ".",
    }[bad]
    why = {
        "expired": "Token expired",
        "wrong_key": "signature does not match",
        "wrong_audience": "audience does not match",
        "foreign_issuer": "no auth provider for issuer",
        "not_a_jwt": "Could not decode token",
        "no_signature": "signature does not match",
    }[bad]
    with pytest.raises(Exception, match=f"401 InvalidAuthHeader: .*{why}") as refused:
        as_user(backend, token).mutation("jobs:enqueue", {"repoUrl": REPO})
    assert not isinstance(refused.value, ConvexError)
    [js] = js_calls(
        backend.url,
        [{"kind": "query", "path": "jobs:listByUser", "args": {}, "auth": token}],
    )
    assert js["ok"] is False
    assert "InvalidAuthHeader" in js["message"]
    assert why in js["message"]


def test_anonymous_callers_and_the_worker_token_are_refused(backend: DevBackend) -> None:
    anonymous = as_user(backend, None)
    for path, args in [
        ("jobs:listByUser", {}),
        ("jobs:get", {"jobId": "x"}),
        ("docs:listByJob", {"jobId": "x"}),
    ]:
        with pytest.raises(ConvexError) as refused:
            anonymous.query(path, args)
        assert refused.value.data["code"] == "UNAUTHORIZED"
    with pytest.raises(ConvexError) as refused:
        anonymous.mutation("jobs:enqueue", {"repoUrl": REPO})
    assert refused.value.data["code"] == "UNAUTHORIZED"
    # the worker token is no operator credential
    with pytest.raises(ConvexError) as worker:
        anonymous.query("operator:listStuck", {"token": TEST_WORKER_TOKEN})
    assert worker.value.data["code"] == "UNAUTHORIZED"
    assert anonymous.query("operator:listStuck", {"token": OPERATOR_TOKEN}) == []


def test_an_oidc_provider_is_found_through_discovery(
    issuer: Issuer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # No AUTH_JWKS_URL: auth.config.ts declares an OIDC provider; its keys come from
    # <issuer>/.well-known/openid-configuration.
    oidc = start_dev_backend(
        tmp_path_factory.mktemp("oidc-backend"),
        "github.com",
        reclaim_ms=60_000,
        extra_env={"AUTH_ISSUER": issuer.url, "AUTH_APPLICATION_ID": AUDIENCE},
    )
    try:
        ada = as_user(oidc, issuer.token("ada"))
        assert ada.mutation("jobs:enqueue", {"repoUrl": REPO})["created"] is True
        assert [j["userId"] for j in ada.query("jobs:listByUser", {})] == ["ada"]
        with pytest.raises(Exception, match=r"401 InvalidAuthHeader: .*audience"):
            as_user(oidc, issuer.token("ada", aud="x")).query("jobs:listByUser", {})
    finally:
        oidc.stop()
