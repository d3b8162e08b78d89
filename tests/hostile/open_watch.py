"""Proof that nothing opened or read a file: a small inotify(7) watcher over ctypes.

A watch on a file reports opens and reads through any path, hard links included; a watch on
a directory also reports its listing and the opens of the files in it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import struct
from pathlib import Path

IN_ACCESS = 0x00000001
IN_OPEN = 0x00000020
IN_ISDIR = 0x40000000
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000
_HEADER = struct.Struct("iIII")

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


class OpenWatch:
    def __init__(self, paths: list[Path]) -> None:
        self._fd = _libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if self._fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        self._paths: dict[int, Path] = {}
        for path in paths:
            wd = _libc.inotify_add_watch(self._fd, os.fsencode(path), IN_OPEN | IN_ACCESS)
            if wd < 0:
                raise OSError(ctypes.get_errno(), f"inotify_add_watch {path} failed")
            self._paths[wd] = path
        self.seen: list[str] = []

    def poll(self) -> list[str]:
        """Every open/read so far, as "<path>[/<name>] open|read"."""
        while True:
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                return self.seen
            except OSError as exc:  # pragma: no cover - only EAGAIN is expected
                if exc.errno == errno.EAGAIN:
                    return self.seen
                raise
            offset = 0
            while offset < len(data):
                wd, mask, _cookie, size = _HEADER.unpack_from(data, offset)
                raw = data[offset + _HEADER.size : offset + _HEADER.size + size].rstrip(b"\0")
                offset += _HEADER.size + size
                where = self._paths.get(wd, Path("?"))
                name = f"{where}/{os.fsdecode(raw)}" if raw else str(where)
                what = "open" if mask & IN_OPEN else "read"
                self.seen.append(f"{name} {what}{' (dir)' if mask & IN_ISDIR else ''}")

    def close(self) -> None:
        os.close(self._fd)
