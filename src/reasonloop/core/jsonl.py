"""Append-only JSONL that survives being killed mid-write, and atomic whole-file and whole-directory writes.

A record is one `write()` of `json + "\\n"` (and an fsync when asked). If the
process dies mid-write the file ends without a newline: that torn last line is
detected, reported and dropped, never parsed, both when reading and when a
writer reopens the file to append.

A write that fails (disk full, quota, read-only, I/O error) raises `WriteError`,
one line naming the file: a JSONL append is cut back to its last whole line, an
atomic file or directory leaves the old version and no temporary behind, so the
rerun after freeing space resumes with nothing lost or duplicated.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from reasonloop.core.types import DataError, ReasonloopError


class WriteError(ReasonloopError):
    """Writing a file failed (disk full, quota, read-only file system, I/O error); the message names the file."""


# How torch and safetensors word a failed write: they raise RuntimeError or their own errors, not OSError.
_WRITE_FAILURES = ("No space left", "Disk quota", "Read-only file system", "file write failed", "IoError")


def write_failure(path: str | os.PathLike, e: BaseException) -> WriteError | None:
    """`e` as a one-line `WriteError` naming `path` when it is a failed write, else None (a bug stays a bug)."""
    if isinstance(e, OSError):
        reason = e.strerror or str(e)
    elif any(w in str(e) for w in _WRITE_FAILURES):
        reason = str(e).splitlines()[0][:200]
    else:
        return None
    return WriteError(f"{path}: cannot write: {reason}; free space (or fix the file system) and rerun to resume")


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` so that readers see the old or the new file, never half of one."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        failure = write_failure(path, e) if isinstance(e, Exception) else None
        if failure is not None:
            raise failure from None
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Write a directory atomically: `with atomic_dir(p) as tmp:` fill `tmp` (`<p>.tmp`); on success it
    replaces `p`. A failed write (disk full, ...) removes `tmp` and raises `WriteError`; a `tmp` left by a
    killed writer is removed by the next one. Readers see the old directory or the new one, never half of one.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        yield tmp
    except Exception as e:
        shutil.rmtree(tmp, ignore_errors=True)
        failure = write_failure(path, e)
        if failure is not None:
            raise failure from None
        raise
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _torn_tail_offset(path: Path) -> int | None:
    """Byte offset where a torn (newline-less) last line starts, or None if the file is whole."""
    size = path.stat().st_size
    if size == 0:
        return None
    with open(path, "rb") as f:
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return None
        # Walk back to the previous newline in blocks.
        pos = size
        while pos > 0:
            step = min(65536, pos)
            pos -= step
            f.seek(pos)
            block = f.read(step)
            nl = block.rfind(b"\n")
            if nl >= 0:
                return pos + nl + 1
        return 0


MAX_LINE_BYTES = 16 * 1024 * 1024  # longest JSONL line read; longer is an error naming file:line, never read whole


def read_jsonl_numbered(
    path: str | os.PathLike,
    *,
    drop_torn_tail: bool = True,
    max_line_bytes: int = MAX_LINE_BYTES,
    hand_written: bool = False,
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield `(line number, record)` for the records of a JSONL file.

    Blank lines are skipped. A line that is not a JSON object (or not UTF-8)
    raises `DataError` naming `file:line`, as does a line longer than
    `max_line_bytes`, which is refused after reading at most that many bytes (a
    50 MB line costs 16 MB, not the line). A last line without its newline is a
    torn write: with `drop_torn_tail` it is dropped with a warning (never
    parsed); otherwise it raises `DataError`. A `hand_written` file (an input a
    person made, not one of our append-only files) may end without a newline:
    its last line is read like the others.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, not a JSONL file")
    torn_at = None if hand_written else _torn_tail_offset(path)
    with open(path, "rb") as f:
        offset = 0
        lineno = 0
        while True:
            raw = f.readline(max_line_bytes + 1)
            if not raw:
                return
            lineno += 1
            if torn_at is not None and offset >= torn_at:
                msg = f"{path}:{lineno}: last line is incomplete (torn write)"
                if not drop_torn_tail:
                    raise DataError(msg)
                warnings.warn(msg + "; dropped", stacklevel=3)
                return
            if len(raw) > max_line_bytes and not raw.endswith(b"\n"):
                raise DataError(f"{path}:{lineno}: line longer than {max_line_bytes:,} bytes")
            offset += len(raw)
            line = raw.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                reason = getattr(e, "msg", None) or "not UTF-8 text"
                raise DataError(f"{path}:{lineno}: invalid JSON: {reason}") from None
            if not isinstance(rec, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(rec).__name__}")
            yield lineno, rec


def read_jsonl(path: str | os.PathLike, *, drop_torn_tail: bool = True) -> Iterator[dict[str, Any]]:
    """Yield the records of a JSONL file (see `read_jsonl_numbered` for the checks)."""
    for _, rec in read_jsonl_numbered(path, drop_torn_tail=drop_torn_tail):
        yield rec


def repair_jsonl(path: str | os.PathLike) -> bool:
    """Truncate a torn last line so appends start on a fresh line. Returns True if one was cut."""
    path = Path(path)
    if not path.exists():
        return False
    torn_at = _torn_tail_offset(path)
    if torn_at is None:
        return False
    with open(path, "r+b") as f:
        f.truncate(torn_at)
    warnings.warn(f"{path}: dropped a torn last line", stacklevel=2)
    return True


class JsonlWriter:
    """Append records to a JSONL file, one whole line per write.

    Opening repairs a torn tail left by a killed writer. A write that fails
    (disk full, ...) is cut back to the last whole line and raises `WriteError`.
    Use as a context manager.
    """

    def __init__(self, path: str | os.PathLike, *, fsync: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        repair_jsonl(self.path)
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._fsync = fsync

    def write(self, record: dict[str, Any]) -> None:
        if self._fd is None:
            raise ValueError(f"{self.path}: writer is closed")
        data = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        end = os.lseek(self._fd, 0, os.SEEK_END)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
            if self._fsync:
                os.fsync(self._fd)
        except OSError as e:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, end)  # no torn line left behind (shrinking needs no space)
            raise write_failure(self.path, e) from None

    def write_many(self, records: list[dict[str, Any]]) -> None:
        for r in records:
            self.write(r)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
