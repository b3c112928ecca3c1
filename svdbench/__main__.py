"""`python -m svdbench [overrides]`: compose the config, run one measurement, write the record."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from svdbench.config import ConfigError, register_configs, to_run_config
from svdbench.results import RunResult, now_iso, write_results
from svdbench.runner import run

log = logging.getLogger("svdbench")
register_configs()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(composed: DictConfig) -> str:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        cfg = to_run_config(composed)
    except ConfigError as exc:
        result = RunResult(status="error", reason=str(exc), finished_at=now_iso())
    else:
        result = run(cfg, run_dir)
    path = write_results(run_dir, result)
    if result.status == "ok":
        log.info(
            "ok: %.3f s per video (median of %d), %.2f frames/s, peak host memory %.2f GiB -> %s",
            result.latency.stats.median,
            result.latency.stats.n,
            result.throughput.frames_per_s,
            result.memory.host_peak_gib,
            path,
        )
    else:
        log.error("%s: %s\nRecorded in %s", result.status, result.reason, path)
        if HydraConfig.get().mode == RunMode.RUN:
            sys.exit(1)
    return result.status


if __name__ == "__main__":
    main()
