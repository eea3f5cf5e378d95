"""One writer per run directory or output file: an advisory lock that names its holder and dies with it.

`WriterLock(path_of_lock_file, what)` takes `fcntl.flock(LOCK_EX | LOCK_NB)` on
the lock file and writes its pid there. A second process gets `LockedError`, one
line naming the holder's pid. The kernel drops a flock when its holder dies,
even by `kill -9`, so a stale lock file (an old pid in it) is simply taken over.
Within one process the lock is shared: a second `WriterLock` on the same path
counts up instead of locking itself out.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from reasonloop.core.types import ReasonloopError


class LockedError(ReasonloopError):
    """Another process is writing the same run directory or output file."""


_HELD: dict[str, list[int]] = {}  # lock path -> [fd, holders in this process]


class WriterLock:
    def __init__(self, path: str | os.PathLike, what: str):
        self.path = os.path.abspath(path)
        self.what = what
        self._held = False

    def acquire(self) -> WriterLock:
        if self._held:
            return self
        if self.path in _HELD:
            _HELD[self.path][1] += 1
            self._held = True
            return self
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise LockedError(
                f"{self.what} is being written by another process (pid {holder}); "
                "one writer at a time: wait for it or stop it"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _HELD[self.path] = [fd, 1]
        self._held = True
        return self

    def release(self) -> None:
        if not self._held:
            return
        self._held = False
        entry = _HELD[self.path]
        entry[1] -= 1
        if entry[1] == 0:
            del _HELD[self.path]
            os.close(entry[0])  # closing the last fd drops the flock; the file stays (unlinking it would race)

    def __enter__(self) -> WriterLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def output_lock(path: str | os.PathLike) -> WriterLock:
    """The lock of an output file: `<file>.lock` beside it."""
    p = Path(path)
    return WriterLock(p.with_name(p.name + ".lock"), f"output file {p}")
