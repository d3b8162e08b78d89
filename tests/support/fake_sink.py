"""Where the fake ``claude`` executables report to, from inside the Landlock sandbox.

Sandboxed (CLAUDE_SANDBOX=landlock, the default), a CLI may write only its clone, its own
config dir and its TMPDIR: not a shared log file or state directory. So the fakes talk to
this small TCP service instead (the sandbox confines the filesystem, not the network, as
the real CLI needs the API). One request per connection, one line each way:

- ``log NAME JSON``: append JSON as a line to ``<directory>/NAME``; answers ``ok`` once it is
  written, so a record is on disk when the fake goes on (as an append to a file was);
- ``read NAME``: the first line of ``<directory>/NAME``, ``-`` when there is none (the
  fake's mode file, which a test changes while a worker runs);
- ``claim KEY``: ``yes`` the first time KEY is claimed, ``no`` after (the chaos fake's
  "first execution of this job", across workers);
- ``crash WORKER``: calls ``on_crash(WORKER)`` (the chaos harness kills that worker's
  container: what the fake did to its own worker before Landlock's signal scoping);
  answers ``ok``.

The fakes find it through ``FAKE_CLAUDE_SINK`` / ``CHAOS_SINK`` (``host:port``).
"""

from __future__ import annotations

import re
import socketserver
import threading
from collections.abc import Callable
from pathlib import Path

_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,200}$")


class FakeSink:
    def __init__(
        self,
        directory: Path,
        host: str = "127.0.0.1",
        on_crash: Callable[[str], None] | None = None,
    ) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._claimed: set[str] = set()
        self._on_crash = on_crash
        sink = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                line = self.rfile.readline(1 << 20).decode("utf-8", "replace").rstrip("\n")
                self.wfile.write((sink.answer(line) + "\n").encode())

        class Server(socketserver.ThreadingTCPServer):
            allow_reuse_address = True
            daemon_threads = True

        self._server = Server((host, 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="fake-sink", daemon=True
        )

    @property
    def address(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{host!s}:{port}"

    def start(self) -> FakeSink:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def answer(self, line: str) -> str:
        verb, _, rest = line.partition(" ")
        if verb == "log":
            name, _, record = rest.partition(" ")
            if not _NAME.match(name) or name.startswith("."):
                return "bad name"
            with self._lock, open(self.directory / name, "a", encoding="utf-8") as handle:
                handle.write(record + "\n")
            return "ok"
        if verb == "read":
            if not _NAME.match(rest) or rest.startswith("."):
                return "bad name"
            try:
                lines = (self.directory / rest).read_text(encoding="utf-8").splitlines()
            except OSError:
                return "-"
            return lines[0].strip() if lines else ""
        if verb == "claim":
            with self._lock:
                first = rest not in self._claimed
                self._claimed.add(rest)
            return "yes" if first else "no"
        if verb == "crash" and self._on_crash is not None:
            self._on_crash(rest)
            return "ok"
        return "unknown"
