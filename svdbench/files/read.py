"""Reading a record back: only regular files, only up to a size cap, and every failure as one reason.

A record (results.json, frames.npz, a job's .hydra/*.yaml, a directory's marker) may be anything by the time
it is read: a FIFO (reading it would wait forever), a link to /dev/zero (reading it would fill memory), a
directory, a file cut short by a full disk, an archive without the array, someone else's JSON. `open_regular`
resolves links, opens without waiting (O_NONBLOCK) and refuses what is not a regular file or is larger than its
cap; every reader here raises `UnreadableFile` (a ValueError) whose message names the file and what is wrong, so
that a caller turns it into that job's reason instead of a hang, a traceback or a machine out of memory.

Caps (docs/comparison.md lists them): RESULTS_MAX_BYTES for results.json and the small YAML/JSON files,
FRAMES_MAX_BYTES for frames.npz.
"""

from __future__ import annotations

import io
import json
import os
import stat
import zipfile
from pathlib import Path
from typing import IO, Any

import numpy as np

RESULTS_MAX_BYTES = 64 * 2**20  # a results.json is tens of kB; its per-step lists stay far below this
FRAMES_MAX_BYTES = 8 * 2**30  # a batch of 8 svd_xt videos (25 x 576 x 1024 x 3 uint8) is about 0.35 GB

KINDS = {
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
    stat.S_IFDIR: "a directory",
}


class UnreadableFile(ValueError):
    """A record that cannot be read: the message names the file and the reason."""


def find_records(root: Path, name: str, skip_prefix: str = "previous-") -> list[Path]:
    """Every entry called `name` under `root` (whatever it is: a file, a directory, a FIFO, a dangling link, so
    that a reader can say what is wrong with it), not following links to directories and skipping directories
    whose name starts with `skip_prefix` (earlier attempts set aside)."""
    found = []
    for directory, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(skip_prefix))
        if name in filenames or name in dirnames:
            found.append(Path(directory) / name)
    return found


def open_regular(path: Path, max_bytes: int) -> IO[bytes]:
    """`path` opened for reading in binary, if it is (or links to) a regular file of at most `max_bytes`."""
    path = Path(path)
    real = os.path.realpath(path)
    shown = f"{path}" if real == os.path.abspath(path) else f"{path} (a link to {real})"
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise UnreadableFile(f"{shown} does not exist") from None
    except IsADirectoryError:
        raise UnreadableFile(f"{shown} is a directory, not a file") from None
    except OSError as exc:
        raise UnreadableFile(f"{shown} cannot be opened: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = KINDS.get(stat.S_IFMT(info.st_mode), "not a regular file")
            raise UnreadableFile(f"{shown} is {kind}, not a regular file")
        if info.st_size > max_bytes:
            raise UnreadableFile(
                f"{shown} is {info.st_size / 2**20:.1f} MiB, larger than the {max_bytes / 2**20:.0f} MiB a record of "
                "this kind may be"
            )
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_bytes(path: Path, max_bytes: int = RESULTS_MAX_BYTES) -> bytes:
    with open_regular(path, max_bytes) as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:  # it grew while being read
        raise UnreadableFile(f"{path} is larger than the {max_bytes / 2**20:.0f} MiB a record of this kind may be")
    return data


def read_text(path: Path, max_bytes: int = RESULTS_MAX_BYTES) -> str:
    data = read_bytes(path, max_bytes)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UnreadableFile(f"{path} is not UTF-8 text (byte {exc.start} of {len(data)})") from None


def read_json(path: Path, max_bytes: int = RESULTS_MAX_BYTES) -> Any:
    text = read_text(path, max_bytes)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        what = "empty" if not text.strip() else f"not valid JSON ({exc.msg} at line {exc.lineno})"
        raise UnreadableFile(f"{path} is {what}") from None


def read_yaml(path: Path, max_bytes: int = RESULTS_MAX_BYTES) -> Any:
    import yaml

    text = read_text(path, max_bytes)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UnreadableFile(f"{path} is not valid YAML ({type(exc).__name__}: {str(exc)[:200]})") from None


def load_npz_array(path: Path, name: str, max_bytes: int = FRAMES_MAX_BYTES) -> np.ndarray:
    """The array `name` of an .npz archive, read whole; UnreadableFile if the archive is cut short, is no
    archive, lacks the array, or holds pickled objects."""
    with open_regular(path, max_bytes) as handle:
        try:
            with np.load(handle, allow_pickle=False) as archive:
                if name not in archive.files:
                    found = ", ".join(archive.files[:5]) or "nothing"
                    raise UnreadableFile(f"{path} has no array {name!r} (it holds {found})")
                return np.asarray(archive[name])
        except UnreadableFile:
            raise
        except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError, io.UnsupportedOperation) as exc:
            raise UnreadableFile(
                f"{path} is not a whole .npz archive ({type(exc).__name__}: {str(exc)[:200]}); it may have been cut "
                "short by a full disk or an interrupted copy"
            ) from None
