"""`python -m svdbench [overrides]`: compose the config, run one measurement, write the record, log to W&B."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from svdbench.config import ConfigError, register_configs, to_run_config
from svdbench.record import environment, provenance
from svdbench.results import STEPS_FILE, RunResult, now_iso, write_results, write_steps_csv
from svdbench.runner import run

log = logging.getLogger("svdbench")
register_configs()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(composed: DictConfig) -> str:
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    overrides = list(hydra_cfg.overrides.task)
    cfg = None
    try:
        cfg = to_run_config(composed)
    except ConfigError as exc:
        result = RunResult(status="error", reason=str(exc), finished_at=now_iso())
    else:
        result = run(cfg, run_dir)
    # Everything below is outside the measured calls: the record first, then the optional W&B copy.
    result.environment = environment()
    result.provenance = provenance(overrides)
    if write_steps_csv(run_dir, result):
        result.files["steps"] = STEPS_FILE
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
    if cfg is not None and cfg.logger.name == "wandb":  # an invalid config has no valid logger settings either
        from svdbench.tracking import log_run

        sweep = hydra_cfg.sweep.dir if hydra_cfg.mode == RunMode.MULTIRUN else None
        log_run(cfg, run_dir, result, overrides, sweep)
    if result.status != "ok" and hydra_cfg.mode == RunMode.RUN:
        sys.exit(1)
    return result.status


if __name__ == "__main__":
    main()
