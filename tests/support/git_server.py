"""A loopback HTTPS git server for tests: ``git http-backend`` behind http.server over TLS.

One implementation for every test: pytest starts ``GitServer`` in-process; Molecule's hosts
run this file as a script (``main``), so the CGI handling is written once.

The certificate is self-signed, made at test time with the ``openssl`` CLI, for 127.0.0.1;
the worker trusts it through GIT_CA_BUNDLE. Repositories can be private: they then answer
401 until a request carries HTTP basic auth whose password is the repository's token.
Every request is recorded (method, path, user, whether auth was sent) for assertions.
"""

from __future__ import annotations

import base64
import os
import shutil
import ssl
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": "/dev/null",
}


def _git(args: list[str], cwd: Path) -> None:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(cwd), **GIT_ENV}
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, timeout=60)


def make_cert(directory: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    san = "IP:127.0.0.1,DNS:localhost" + (f",IP:{host}" if host != "127.0.0.1" else "")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
            "-keyout", str(key), "-out", str(cert), "-days", "2",
            "-subj", f"/CN={host}",
            "-addext", f"subjectAltName={san}",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    return cert, key


@dataclass
class Request:
    method: str
    path: str
    user: str | None
    authorized: bool


def backend_env(
    repos: Path, method: str, path: str, query: str, headers: Message, body: bytes, client: str
) -> dict[str, str]:
    """The CGI environment ``git http-backend`` serves one request from (smart HTTP, every
    repository under ``repos`` exported, read-only: no receive-pack is enabled)."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "GIT_PROJECT_ROOT": str(repos),
        "GIT_HTTP_EXPORT_ALL": "1",
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "REQUEST_METHOD": method,
        "CONTENT_TYPE": headers.get("Content-Type", ""),
        "CONTENT_LENGTH": str(len(body)),
        "REMOTE_ADDR": client,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": "/dev/null",
    }
    if headers.get("Git-Protocol"):
        env["GIT_PROTOCOL"] = headers["Git-Protocol"]
    if headers.get("Content-Encoding"):
        env["HTTP_CONTENT_ENCODING"] = headers["Content-Encoding"]
    return env


def parse_cgi_reply(output: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
    """``git http-backend``'s CGI output as (status, headers, body): a ``Status:`` header
    sets the status (200 without one); the head ends at the first blank line."""
    ends = [(output.find(sep), sep) for sep in (b"\r\n\r\n", b"\n\n") if sep in output]
    if ends:
        at, sep = min(ends)
        head, body = output[:at], output[at + len(sep) :]
    else:
        head, body = output, b""
    status = 200
    headers: list[tuple[str, str]] = []
    for line in head.decode("latin-1").splitlines():
        name, _, value = line.partition(":")
        if name.lower() == "status":
            status = int(value.strip().split()[0])
        elif name:
            headers.append((name, value.strip()))
    return status, headers, body


def make_handler(
    repos: Path,
    tokens: dict[str, str],
    requests: list[Request] | None = None,
    *,
    log: bool = False,
) -> type[BaseHTTPRequestHandler]:
    """A handler serving the bare repositories under ``repos`` through ``git http-backend``.
    A repository whose path is a key of ``tokens`` answers 401 until a request carries HTTP
    basic auth with that token as its password; ``requests`` records every request."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            if log:
                sys.stderr.write(f"{self.client_address[0]} {format % args}\n")

        def do_GET(self) -> None:
            self._serve()

        def do_POST(self) -> None:
            self._serve()

        def _auth(self) -> tuple[str | None, str | None]:
            header = self.headers.get("Authorization", "")
            if not header.startswith("Basic "):
                return None, None
            try:
                user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            except ValueError:
                return None, None
            return user, password

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                data = b""
                while True:
                    size = int(self.rfile.readline().strip().split(b";")[0], 16)
                    if size == 0:
                        self.rfile.readline()
                        return data
                    data += self.rfile.read(size)
                    self.rfile.readline()
            length = int(self.headers.get("Content-Length", "0") or 0)
            return self.rfile.read(length) if length else b""

        def _serve(self) -> None:
            path, _, query = self.path.partition("?")
            body = self._body() if self.command == "POST" else b""
            repo_key = next((k for k in tokens if path == k or path.startswith(k + "/")), None)
            user, password = self._auth()
            authorized = repo_key is None or password == tokens[repo_key]
            if requests is not None:
                requests.append(Request(self.command, path, user, password is not None))
            if not authorized:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="git"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            env = backend_env(
                repos, self.command, path, query, self.headers, body, self.client_address[0]
            )
            if user:
                env["REMOTE_USER"] = user
            proc = subprocess.run(
                ["git", "http-backend"],
                input=body,
                env=env,
                capture_output=True,
                timeout=60,
                check=False,
            )
            status, headers, payload = parse_cgi_reply(proc.stdout)
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    return Handler


def https_server(
    handler: type[BaseHTTPRequestHandler], bind: str, port: int, cert: Path, key: Path
) -> ThreadingHTTPServer:
    httpd = ThreadingHTTPServer((bind, port), handler)
    httpd.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    return httpd


@dataclass
class GitServer:
    root: Path
    cert: Path = field(init=False)
    key: Path = field(init=False)
    port: int = 0
    tokens: dict[str, str] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    # Where it listens (and the certificate's IP): loopback, or e.g. a Docker network's
    # gateway so that containers reach it (the chaos suite).
    bind_host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        self.repos = self.root / "repos"
        self.repos.mkdir(parents=True, exist_ok=True)
        self.cert, self.key = make_cert(self.root / "tls", self.bind_host)
        self._server: ThreadingHTTPServer | None = None

    @property
    def host(self) -> str:
        return f"{self.bind_host}:{self.port}"

    def url(self, owner: str, name: str) -> str:
        return f"https://{self.host}/{owner}/{name}.git"

    def add_repo(
        self,
        owner: str,
        name: str,
        files: dict[str, str | bytes],
        *,
        branch: str = "main",
        token: str | None = None,
        extra_branches: dict[str, dict[str, str | bytes]] | None = None,
        symlinks: dict[str, str] | None = None,
        gitlinks: dict[str, str] | None = None,
    ) -> str:
        """A bare repository served at ``url(owner, name)``; ``gitlinks`` maps a path to a
        commit id recorded as a submodule entry (pair it with a ``.gitmodules`` file)."""
        work = self.root / "work" / owner / name
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True)
        _git(["init", "-q", "-b", branch], work)
        for rel, content in files.items():
            path = work / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content)
        for rel, target in (symlinks or {}).items():
            os.symlink(target, work / rel)
        _git(["add", "-A"], work)
        for rel, commit in (gitlinks or {}).items():
            _git(["update-index", "--add", "--cacheinfo", f"160000,{commit},{rel}"], work)
        _git(["commit", "-q", "-m", "initial"], work)
        for other, other_files in (extra_branches or {}).items():
            _git(["checkout", "-q", "-b", other], work)
            for rel, content in other_files.items():
                path = work / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(content) if isinstance(content, bytes) else path.write_text(
                    content
                )
            _git(["add", "-A"], work)
            _git(["commit", "-q", "-m", f"branch {other}"], work)
            _git(["checkout", "-q", branch], work)
        bare = self.repos / owner / f"{name}.git"
        if bare.exists():
            shutil.rmtree(bare)
        bare.parent.mkdir(parents=True, exist_ok=True)
        _git(["clone", "-q", "--bare", str(work), str(bare)], self.root)
        if token is not None:
            self.tokens[f"/{owner}/{name}.git"] = token
        return self.url(owner, name)

    def start(self) -> None:
        handler = make_handler(self.repos, self.tokens, self.requests)
        httpd = https_server(handler, self.bind_host, self.port, self.cert, self.key)
        self.port = httpd.server_address[1]
        self._server = httpd
        threading.Thread(target=httpd.serve_forever, name="git-server", daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def main(argv: list[str]) -> None:
    """``git_server.py ROOT CERT KEY BIND PORT``: serve the bare repositories under ROOT, as
    Molecule's test hosts do (molecule/resources/prepare.yml copies this file there; it needs
    the standard library and git only)."""
    root, cert, key, bind, port = argv
    os.umask(0o022)
    handler = make_handler(Path(root), {}, log=True)
    https_server(handler, bind, int(port), Path(cert), Path(key)).serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
