"""Which directories svdbench may write into: an empty one, or one it marked as its own for the same purpose.

Every writer (a run, a sweep, a replay, a comparison, `metrics --pictures`) claims its output directory with
`claim_directory` before it writes anything. A directory is free when it does not exist or holds nothing (the
lock file and the marker of an interrupted claim aside); it is the writer's own when it carries a marker
(`.svdbench-dir.json`, written atomically when a writer claims the directory) of the same kind and purpose.
Anything else, a user's own files, another kind of svdbench output, an older output without a marker, is
refused with `DirectoryTaken`: one paragraph that names the directory and some of what is in it. The presence
of a `results.json` or a `report.html` proves nothing: only the marker does.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

from svdbench.files.atomic import LOCK_FILE, RESERVE_FILE, SPARE_INODE_FILE, describe_os_error, write_json_atomic

MARKER = ".svdbench-dir.json"
KINDS = ("run", "sweep", "replay", "compare", "pictures")
# Files of svdbench's own bookkeeping that do not make a directory anyone's (a lock and a reserve survive a
# crash; the marker's temporary name survives a kill during its write).
INTERNAL = (LOCK_FILE, MARKER, RESERVE_FILE, SPARE_INODE_FILE)
# What a marker may be at most: anything larger is not one of ours.
MARKER_MAX_BYTES = 64 * 1024
SHOWN = 5  # file names quoted in a refusal


class DirectoryTaken(OSError):
    """The directory holds something that is not this writer's own output."""


def _internal(name: str) -> bool:
    return name in INTERNAL or (name.startswith("..svdbench-dir.") and name.endswith(".tmp.json"))


def contents(directory: Path) -> list[str]:
    """The names in `directory` (sorted, directories with a trailing /), less svdbench's bookkeeping files."""
    names = []
    for entry in sorted(os.scandir(directory), key=lambda e: e.name):
        if _internal(entry.name):
            continue
        names.append(entry.name + ("/" if entry.is_dir(follow_symlinks=False) else ""))
    return names


def read_marker(directory: Path) -> dict[str, Any] | None:
    """The marker of `directory`, or None when it has none (or one that is not a regular, readable marker)."""
    from svdbench.files.read import UnreadableFile, read_json

    path = Path(directory) / MARKER
    if not os.path.lexists(path):
        return None
    try:
        data = read_json(path, MARKER_MAX_BYTES)
    except UnreadableFile:
        return None
    if not isinstance(data, dict) or data.get("kind") not in KINDS:
        return None
    return data


def describe(directory: Path, names: list[str] | None = None) -> str:
    """What is in a directory, in words: "3 entries: a.txt, b/, c.mp4" (a few names, then how many more)."""
    names = contents(directory) if names is None else names
    shown = ", ".join(names[:SHOWN]) + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")
    return f"{len(names)} entr{'y' if len(names) == 1 else 'ies'}: {shown}"


def check_free(directory: Path, kind: str, purpose: str, how: str) -> bool:
    """Whether `directory` may be written by a `kind` writer for `purpose`: True when it is this writer's own
    (a marker of the same kind and purpose), False when it is free (missing or empty); DirectoryTaken otherwise.
    `how` ends the refusal: how to choose another directory."""
    directory = Path(directory)
    if os.path.lexists(directory) and not directory.exists():
        raise DirectoryTaken(
            errno.ENOENT,
            f"{directory} is a symbolic link to {os.readlink(directory)}, which does not exist, so svdbench cannot "
            f"write there. Remove the link or make its target, or {how}.",
        )
    if not directory.exists():
        unusable = unusable_location(directory)
        if unusable:
            raise DirectoryTaken(errno.ENOTDIR, f"Cannot create the directory {directory}: {unusable}: {how}.")
        return False
    if not directory.is_dir():
        raise DirectoryTaken(
            errno.ENOTDIR, f"{directory} is a file, not a directory, so svdbench cannot write into it: {how}."
        )
    try:
        names = contents(directory)
    except OSError as exc:
        why = describe_os_error(exc)
        why = describe_os_error(exc)
        raise DirectoryTaken(exc.errno or errno.EACCES, f"{directory} cannot be listed ({why}): {how}.") from None
    marker = read_marker(directory)
    if marker is not None and marker.get("kind") == kind and marker.get("purpose") == purpose:
        return True
    if marker is None and os.path.lexists(directory / MARKER):
        names = [MARKER, *names]  # a marker svdbench cannot read is not svdbench's proof of anything
    if not names and marker is None:
        return False
    if marker is not None:
        what = f"svdbench's {marker['kind']} output ({marker.get('purpose', 'no purpose recorded')})"
    else:
        what = "files that svdbench did not mark as its own output"
    raise DirectoryTaken(
        errno.EEXIST,
        f"{directory} is not empty: it holds {what}, {describe(directory, names)}. svdbench writes only into an "
        f"empty directory or one it made itself for the same purpose ({kind}: {purpose}), so that nothing of "
        f"yours or of another output is replaced: {how}.",
    )


def mark(directory: Path, kind: str, purpose: str, **extra: Any) -> None:
    """Write the marker that makes `directory` this writer's own (atomically: a marker is whole or absent)."""
    assert kind in KINDS, kind
    Path(directory).mkdir(parents=True, exist_ok=True)
    write_json_atomic(Path(directory) / MARKER, {"kind": kind, "purpose": purpose, **extra})


def claim_directory(directory: Path, kind: str, purpose: str, how: str, **extra: Any) -> bool:
    """check_free, then mark (creating the directory); returns whether it was already this writer's own.
    Raises DirectoryTaken (refused), or OSError when the directory or its marker cannot be written."""
    own = check_free(directory, kind, purpose, how)
    if not own:
        mark(directory, kind, purpose, **extra)
    return own


def is_marked(directory: Path, kind: str, purpose: str | None = None) -> bool:
    """Whether `directory` carries a marker of `kind` (and of `purpose`, when given)."""
    marker = read_marker(directory)
    return marker is not None and marker.get("kind") == kind and (purpose is None or marker.get("purpose") == purpose)


def job_purpose(sweep_dir: str | Path) -> str:
    """The purpose in the marker of a sweep's job directory: a job of that sweep (its resolved path)."""
    return f"a job of the sweep {Path(sweep_dir).resolve()}"


def is_job_of(job_dir: Path, sweep_dir: Path) -> bool:
    """Whether `job_dir` is a job directory that the sweep in `sweep_dir` created (its marker). In a directory
    without a sweep's marker (an older sweep, or jobs gathered by hand) every directory with results counts,
    less the outputs of other kinds (a comparison, pictures) that carry their own marker."""
    root = read_marker(sweep_dir)
    if root is None or root.get("kind") != "sweep":
        marker = read_marker(job_dir)
        return marker is None or marker.get("kind") == "run"
    return is_marked(job_dir, "run", job_purpose(sweep_dir))


def unusable_location(path: Path) -> str | None:
    """Why a directory cannot be created at `path` (a file or a dangling link on the way), or None."""
    path = Path(os.path.abspath(path))
    for parent in [path, *path.parents]:
        if os.path.lexists(parent) and not parent.exists():
            return f"{parent} is a symbolic link to {os.readlink(parent)}, which does not exist"
        if parent.exists():
            if not parent.is_dir():
                return f"{parent} is a file, not a directory"
            return None
    return None
