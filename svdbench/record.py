"""Identity of a run: what configuration produced it and what it produced (hashes)."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np

from svdbench.config import RunConfig

# Keys that change how a run is shown, not what it measures or generates.
PRESENTATION_KEYS = {("bench", "progress"), ("logger",), ("save_frames",)}


def config_hash(cfg: RunConfig) -> str:
    """Stable hash of every setting that determines the run's output and measurements."""
    data = dataclasses.asdict(cfg)
    for key in PRESENTATION_KEYS:
        node = data
        for part in key[:-1]:
            node = node.get(part, {})
        node.pop(key[-1], None)
    blob = json.dumps(data, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def frames_hash(frames: np.ndarray) -> str:
    """Hash of uint8 frames and their shape: equal hashes mean bit-identical videos."""
    frames = np.ascontiguousarray(frames)
    digest = hashlib.sha256(str((frames.shape, str(frames.dtype))).encode())
    digest.update(frames.tobytes())
    return digest.hexdigest()[:16]
