"""Checks that run before Hydra creates the output directory, so that a bad output location ends in
a clear message instead of a traceback, and before any model is built."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

# Room a run needs besides its frames: logs, config, pictures, the W&B copy.
MARGIN_BYTES = 64 * 2**20


class OutputLocationError(OSError):
    """The output directory cannot be created or written, or its disk is (nearly) full."""


def nearest_existing(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not path.exists():
        path = path.parent
    return path


def check_output_location(path: Path, needed_bytes: int) -> None:
    """Raise OutputLocationError if `path` cannot become a writable directory with `needed_bytes` free."""
    existing = nearest_existing(path)
    if not existing.is_dir():
        raise OutputLocationError(
            f"Cannot create the output directory {path}: {existing} is a file, not a directory. Choose another "
            "location with hydra.run.dir=... (or hydra.sweep.dir=... for -m), or move that file away."
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputLocationError(
            f"Cannot write the output directory {path}: {existing} is not writable by this user. Run from a "
            "directory you can write to, or set hydra.run.dir=... (hydra.sweep.dir=... for -m) to one."
        )
    free = shutil.disk_usage(existing).free
    if free < needed_bytes:
        raise OutputLocationError(
            f"Not enough disk space for the run's outputs in {existing}: {free / 2**20:.0f} MiB free, about "
            f"{needed_bytes / 2**20:.0f} MiB needed (video, exact frames, pictures, logs). Free some space, write "
            "elsewhere with hydra.run.dir=..., or set save_frames=false to skip the largest file."
        )


def needed_bytes(config: DictConfig) -> int:
    """The run's largest outputs: the exact frames (uint8, compressed at best 1:1 for noise) and the mp4."""
    try:
        frames = int(config.num_frames) * int(config.height) * int(config.width) * 3
        return (2 * frames if config.get("save_frames", True) else frames // 4) + MARGIN_BYTES
    except Exception:  # values the schema will reject later with a better message
        return MARGIN_BYTES


class OutputCheck(Callback):
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config.hydra.run.dir, config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config.hydra.sweep.dir, config)

    @staticmethod
    def _check(directory: str, config: DictConfig) -> None:
        try:
            check_output_location(Path(directory), needed_bytes(config))
        except OutputLocationError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)


def unknown_setting(args: list[str]) -> str | None:
    """A message for the first `key=value` argument naming a setting that does not exist, listing the
    settings that do (Hydra's own message names the key but not the alternatives)."""
    import dataclasses
    import difflib
    import typing

    from svdbench.config import RunConfig

    groups = {p.name for p in CONF_DIR.iterdir() if p.is_dir()}
    for arg in args:
        key = arg.split("=", 1)[0]
        if "=" not in arg or key.startswith(("-", "+", "~", "hydra")) or "/" in key or key in groups:
            continue
        node: Any = RunConfig
        parts = key.split(".")
        for depth, part in enumerate(parts):
            hints = typing.get_type_hints(node) if dataclasses.is_dataclass(node) else {}
            if part not in hints:
                where = ".".join(parts[:depth])
                valid = sorted(hints) if hints else []
                close = [v for v in valid if v.startswith(part)] or difflib.get_close_matches(part, valid, n=1)
                scope = f"`{where}`" if where else "the top level"
                if not valid:
                    return f"`{key}` is not a setting: `{where}` is a value, not a group of settings."
                return (
                    f"`{key}` is not a setting of svdbench. Settings at {scope}: {', '.join(valid)}."
                    + (f" Did you mean `{'.'.join([*parts[:depth], close[0]])}`?" if close else "")
                    + " Every setting is listed with a comment in conf/ (python -m svdbench --cfg job shows them)."
                )
            node = hints[part]
    return None


CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
