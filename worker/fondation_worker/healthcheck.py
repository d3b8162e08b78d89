"""``fondation-worker healthcheck``: GET /healthz on HEALTH_BIND, for Docker's HEALTHCHECK.

Docker runs it every 15 s for the life of every container, so it stays cheap: the standard
library only (no typer, httpx or pydantic to import), reached from ``entry.main`` before
the CLI is loaded. Exit 0 when healthy, 1 when not, 2 for a bad HEALTH_BIND.
"""

from __future__ import annotations

import os
import re
import socket
import sys

EXIT_CONFIG = 2
DEFAULT_TIMEOUT_S = 3.0
MAX_REPLY_BYTES = 64 * 1024
_BIND = re.compile(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([^:\[\]]+):(\d{1,5})")

# HEALTH_BIND when unset: the one default (Settings.health_bind uses it too).
DEFAULT_HEALTH_BIND = "127.0.0.1:8080"


def parse_bind(value: str) -> tuple[str, int]:
    """``"127.0.0.1:8080"`` or ``"[::1]:8080"`` -> (host, port)."""
    match = _BIND.fullmatch(value.strip())
    if not match:
        raise ValueError("must be HOST:PORT, e.g. 127.0.0.1:8080")
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    if port > 65535:
        raise ValueError("port must be at most 65535")
    return host, port


def parse_args(args: list[str]) -> float | None:
    """The timeout from ``[--timeout S]``; None for anything else (the full CLI handles it)."""
    if not args:
        return DEFAULT_TIMEOUT_S
    if len(args) == 2 and args[0] == "--timeout":
        raw = args[1]
    elif len(args) == 1 and args[0].startswith("--timeout="):
        raw = args[0].split("=", 1)[1]
    else:
        return None
    try:
        return float(raw)
    except ValueError:
        return None


def healthcheck(timeout: float = DEFAULT_TIMEOUT_S) -> int:
    bind = os.environ.get("HEALTH_BIND", DEFAULT_HEALTH_BIND)
    try:
        host, port = parse_bind(bind)
    except ValueError as exc:
        print(f"fondation-worker: HEALTH_BIND: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if host in ("0.0.0.0", ""):  # noqa: S104 - connecting, not binding
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    try:
        status, body = get(host, port, "/healthz", timeout)
    except (OSError, ValueError) as exc:
        print(f"unhealthy: {type(exc).__name__}")
        return 1
    print(body.strip())
    return 0 if status == 200 else 1


def get(host: str, port: int, path: str, timeout: float) -> tuple[int, str]:
    """One HTTP/1.0 GET over a plain socket (http.client and its email imports cost more
    than the rest of the command); the server closes the connection after its reply."""
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    request = f"GET {path} HTTP/1.0\r\nHost: {netloc}\r\nConnection: close\r\n\r\n"
    chunks: list[bytes] = []
    size = 0
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(request.encode("ascii"))
        while size < MAX_REPLY_BYTES:
            chunk = sock.recv(8192)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise ValueError(f"not an HTTP reply: {status_line[:80]!r}")
    return int(parts[1]), body.decode("utf-8", "replace")
