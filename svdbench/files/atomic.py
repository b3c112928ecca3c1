"""Writing files so that a reader never sees half of one, and so that two processes never write one directory.

Every file svdbench writes goes through a temporary name in the same directory and is renamed into place
only when complete: a full disk, a file-size limit or an interruption leaves the previous file (or none),
never a truncated one under the final name.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

LOCK_FILE = ".svdbench.lock"
# Disk space held back while a run's artifacts are written, so that the final results.json (which lists them, and
# any that failed) and the last log lines still fit when an artifact fills the disk. The second file is empty:
# its inode is for the final results.json when the inodes run out (the first's may have gone to the first version).
RESERVE_FILE = ".svdbench.reserve"
SPARE_INODE_FILE = ".svdbench.reserve-inode"


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside `path`, with the same suffix (so writers that infer the format from the name
    work); renamed to `path` when the block ends normally, removed when it raises."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as handle:  # on disk before the rename, or the rename may outlive the data
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a record is meant to be read by others
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def describe_os_error(exc: OSError) -> str:
    """`No space left on device` and friends, with what usually helps."""
    hints = {
        errno.ENOSPC: "the disk (or its inodes) is full",
        errno.EDQUOT: "the disk quota is used up",
        errno.EFBIG: "the file is larger than this process may write (ulimit -f)",
        errno.EROFS: "the file system is read-only",
        errno.EACCES: "permission denied",
    }
    hint = hints.get(exc.errno or 0)
    text = exc.strerror or str(exc)
    return f"{text} ({hint})" if hint and hint.lower() not in text.lower() else text


class DirectoryBusy(OSError):
    """Another process holds the directory's lock."""


class DirectoryLock:
    """An exclusive lock on a directory, held until `release` or the end of the process.

    flock on `<dir>/.svdbench.lock`: the kernel drops it when the process ends, however it ends, so a
    crashed run never leaves a directory locked. The file says who holds it, for the other process's message.
    """

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.path = self.directory / LOCK_FILE
        self._handle: TextIO | None = None

    def acquire(self) -> DirectoryLock:
        """Take the lock; DirectoryBusy if another process holds it. Re-entrant within a process (a sweep that
        holds its directory writes its comparison there): then this object holds nothing and releases nothing."""
        self.directory.mkdir(parents=True, exist_ok=True)
        if holds_lock(self.directory):
            return self
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise DirectoryBusy(
                errno.EBUSY,
                f"{self.directory} is being written by another svdbench process ({holder}). Two runs never share "
                "a directory: wait for it to finish, or give this run its own directory (hydra.run.dir=... or "
                "hydra.sweep.dir=... for -m).",
            ) from None
        self._handle = handle
        _HELD.append(self)
        return self

    def announce(self) -> DirectoryLock:
        """Write who holds the lock into the lock file, for the message another process gets."""
        if self._handle is not None:
            self._handle.seek(0)
            self._handle.truncate()
            started = datetime.now(timezone.utc).isoformat(timespec="seconds")
            self._handle.write(f"pid {os.getpid()}, started {started}: {' '.join(sys.argv)[:300]}\n")
            self._handle.flush()
        return self

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()  # closing the descriptor drops the flock
            self._handle = None
        if self in _HELD:
            _HELD.remove(self)


_HELD: list[DirectoryLock] = []  # locks taken for the life of the process (kept referenced, so never collected)


def holds_lock(directory: Path) -> bool:
    """Whether this process already holds the lock of `directory`."""
    target = Path(directory).resolve()
    return any(lock.directory.resolve() == target for lock in _HELD)
