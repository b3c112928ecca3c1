"""svdbench's one on-disk cache: JSON files of values that are slow to compute and fixed by their key.

FLOP counts (flops.json), CPU GEMM peaks (cpu_peaks.json) and the planner's simulations (plan.json) are kept
under `SVDBENCH_CACHE_DIR` (default `$XDG_CACHE_HOME/svdbench`, i.e. `~/.cache/svdbench`). A key is a string,
or any JSON-able value (a dict of everything the value depends on), stored as its digest. A cache file that
cannot be read or written degrades to memory only: a cache never fails a run.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from svdbench.files.atomic import write_json_atomic

CACHE_ENV = "SVDBENCH_CACHE_DIR"


def cache_dir() -> Path:
    """The cache directory (made if missing)."""
    root = os.environ.get(CACHE_ENV) or Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")) / "svdbench"
    path = Path(root).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


class JsonCache:
    """One JSON object on disk (`name` under `cache_dir()`), mirrored in memory. The file is read on the first
    look-up, and again whenever the cache directory changes; every `put` rewrites it atomically, merged with
    what other processes stored meanwhile."""

    def __init__(self, name: str):
        self.name = name
        self.memory: dict[str, Any] = {}
        self._read_from: Path | None = None

    def path(self) -> Path:
        return cache_dir() / self.name

    @staticmethod
    def digest(key: Any) -> str:
        """A string key as it is; any other JSON-able key as a digest of its sorted JSON."""
        if isinstance(key, str):
            return key
        return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:24]

    def _load(self) -> None:
        try:
            path = self.path()
        except OSError:
            return
        if path != self._read_from:
            self._read_from, self.memory = path, {}
            try:
                self.memory.update(json.loads(path.read_text()))
            except (OSError, ValueError):
                pass

    def get(self, key: Any) -> Any:
        self._load()
        return self.memory.get(self.digest(key))

    def put(self, key: Any, value: Any) -> None:
        self._load()
        digest = self.digest(key)
        self.memory[digest] = value
        try:
            path = self.path()
            stored = json.loads(path.read_text()) if path.exists() else {}
            stored[digest] = value
            write_json_atomic(path, stored)
        except (OSError, ValueError):
            pass

    def forget(self) -> None:
        """Drop what is in memory: the next look-up reads the file again, as a new process would."""
        self.memory, self._read_from = {}, None
