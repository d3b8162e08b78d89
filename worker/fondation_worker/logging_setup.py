"""structlog configuration: one JSON object per line, redacted at the sink.

Records from structlog and from the standard library (httpx, ...) go through the same
handlers, so the redactor sees every line whatever its origin. The optional log file uses
``WatchedFileHandler``, which reopens the file when logrotate moves it away.
"""

from __future__ import annotations

import io
import logging
import logging.handlers
import os
import stat
import sys
from pathlib import Path
from typing import Any, Literal, TextIO

import structlog

from .redact import Redactor

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}
_LEVELS["error"] = logging.ERROR


# Owner and group only, as logrotate's `create 0640`: the log names repositories and jobs.
LOG_FILE_MODE = 0o640


class PrivateWatchedFileHandler(logging.handlers.WatchedFileHandler):
    """A WatchedFileHandler whose file is created (and reopened after rotation) with
    LOG_FILE_MODE, and tightened to it if an older release left it readable by others."""

    def _open(self) -> io.TextIOWrapper:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        fd = os.open(self.baseFilename, flags, LOG_FILE_MODE)
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
        if mode & ~LOG_FILE_MODE:
            os.fchmod(fd, mode & LOG_FILE_MODE)
        return open(fd, "a", encoding=self.encoding, errors=self.errors)


def _shared_processors() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
        structlog.processors.StackInfoRenderer(),
    ]


def configure_logging(
    redactor: Redactor,
    *,
    log_format: Literal["json", "console"] = "json",
    log_file: Path | None = None,
    level: str = "info",
    stream: TextIO | None = None,
) -> None:
    """Route structlog and stdlib logging to stdout (and ``log_file``), redacted."""
    renderer: Any
    if log_format == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    else:
        renderer = structlog.processors.JSONRenderer(sort_keys=False, default=str)
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_shared_processors(),
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            redactor,  # the sink: nothing is rendered before this runs
            renderer,
        ],
    )
    handlers: list[logging.Handler] = []
    console = logging.StreamHandler(stream or sys.stdout)
    console.setFormatter(formatter)
    handlers.append(console)
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        file_handler = PrivateWatchedFileHandler(log_file, encoding="utf-8")
        file_handler.setFormatter(formatter)
        handlers.append(file_handler)

    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(_LEVELS.get(level, logging.INFO))
    # httpx logs every request URL at INFO; the worker logs its own calls.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    structlog.configure(
        processors=[
            *_shared_processors(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> Any:
    """A structlog logger; ``job_id`` and ``attempt`` come from contextvars when bound."""
    return structlog.stdlib.get_logger(name)
