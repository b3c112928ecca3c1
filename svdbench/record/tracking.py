"""Log a finished run to Weights & Biases, after its local record is written.

W&B is a copy of the record for browsing and comparing, never the record itself: it is called after the
measurement (its start-up is in no measured interval) and after results.json is on disk, and any failure
(not installed, not logged in, no network, init timeout) costs one warning line, not the result.

Names mirror results.json: the config is flattened to dotted keys (`opt.name`, `cond.motion_bucket_id`)
so W&B can filter on them; the summary is results.json flattened with `/` (`latency/stats/median`), which
W&B shows as one panel section per top-level key.
"""

from __future__ import annotations

import dataclasses
import logging
import traceback
from pathlib import Path
from typing import Any, Literal, cast

from svdbench.record.identity import is_presentation
from svdbench.record.results import RunResult
from svdbench.settings.config import RunConfig
from svdbench.settings.dotted import flatten

log = logging.getLogger(__name__)

# results.json fields that are not outcomes: the config echoes (already in the W&B config), lists and files.
NOT_SUMMARY = {"model", "weights", "opt", "cond", "num_frames", "height", "width", "num_inference_steps", "seed"}
NOT_SUMMARY |= {"files", "notes", "environment", "provenance"}
MAX_NAME = 128  # W&B truncates longer run names and groups
WandbMode = Literal["offline", "online", "disabled"]  # config.WANDB_MODES


def run_name(overrides: list[str]) -> str:
    """The overrides that define the experiment, e.g. "model=xt,opt=compile"; "default" when there are none."""
    named = [o for o in overrides if not is_presentation(o.lstrip("+~").split("=", 1)[0])]
    return (",".join(named) or "default")[:MAX_NAME]


def wandb_config(cfg: RunConfig, result: RunResult) -> dict[str, Any]:
    """The resolved config with dotted keys, plus where and from what code it ran (env.*, provenance.*)."""
    config = dataclasses.asdict(cfg)
    del config["logger"]
    config["config_hash"] = result.config_hash
    record = result.to_dict()
    config["env"] = record["environment"] or {}
    config["provenance"] = {k: v for k, v in (record["provenance"] or {}).items() if k != "argv"}
    return flatten(config, ".")


def wandb_summary(result: RunResult) -> dict[str, Any]:
    """Every outcome in results.json, flattened with "/": metrics, flops and MFU appear as the runner adds them."""
    record = {k: v for k, v in result.to_dict().items() if k not in NOT_SUMMARY}
    return {k: v for k, v in flatten(record, "/").items() if v is not None and not isinstance(v, list)}


def log_run(cfg: RunConfig, run_dir: Path, result: RunResult, overrides: list[str], sweep: str | None) -> None:
    """Log the run to W&B as `cfg.logger` says. Never raises: a failure is one warning, the record stays."""
    settings = cfg.logger
    run = None
    try:
        import wandb

        run = wandb.init(
            project=settings.project,
            entity=settings.entity,
            group=settings.group or (sweep[-MAX_NAME:] if sweep else None),
            name=run_name(overrides),
            tags=settings.tags,
            notes=settings.notes,
            mode=cast(WandbMode, settings.mode),  # LoggerConfig checks it is one of WANDB_MODES
            dir=run_dir,  # wandb/ goes inside the run directory, never into the working directory
            config=wandb_config(cfg, result),
            settings=wandb.Settings(
                init_timeout=settings.init_timeout_s,
                console="off",  # the run is over: there is no output left to capture
                x_disable_stats=True,  # system metrics of a process that only uploads would mislead
                quiet=True,
            ),
        )
        run.summary.update(wandb_summary(result))
        _log_steps(run, wandb, result)
        media = _media(wandb, Path(run_dir), result)
        if media:
            run.log(media)
        run.finish(exit_code=0 if result.status == "ok" else 1)
        if settings.mode == "offline":
            log.info("W&B run stored offline; upload it with: wandb sync %s", run.settings.sync_dir)
    except Exception as exc:  # W&B is optional: its failure must not change the run's outcome
        log.debug("W&B failed:\n%s", traceback.format_exc())
        first_line = (str(exc).strip().splitlines() or [""])[0]
        log.warning(
            "W&B logging failed (%s: %s); the local record in %s is complete. Fix the W&B setup, or use "
            "logger.mode=offline or logger=none.",
            type(exc).__name__,
            first_line,
            run_dir,
        )
        if run is not None:
            try:
                run.finish(exit_code=1)
            except Exception:
                log.debug("W&B finish failed too:\n%s", traceback.format_exc())


def _log_steps(run, wandb, result: RunResult) -> None:
    """Per-step seconds as a table (exact rows) and as history (W&B draws the line chart)."""
    if result.steps is None:
        return
    rows = [[call, step, s] for call, steps in enumerate(result.steps.per_call_s) for step, s in enumerate(steps)]
    for call, step, seconds in rows:
        run.log({"step_time/seconds": seconds, "step_time/call": call, "step_time/step": step})
    run.log({"step_times": wandb.Table(columns=["call", "step", "seconds"], data=rows)})


def _media(wandb, run_dir: Path, result: RunResult) -> dict[str, Any]:
    """The video and every PNG the run wrote (filmstrip, flicker plot, ...), keyed as in `result.files`."""
    media: dict[str, Any] = {}
    for key, name in result.files.items():
        path = run_dir / name
        if not path.is_file():
            continue
        if key == "video":
            media[key] = wandb.Video(str(path), format=path.suffix.lstrip(".") or "mp4")
        elif path.suffix.lower() == ".png":
            media[key] = wandb.Image(str(path))
    return media


def log_comparison(settings, sweep_dir: Path, table: list[dict[str, Any]], files: dict[str, Path]) -> None:
    """The sweep's comparison table and Pareto plot as one W&B run (job_type "comparison") in the sweep's
    group. Never raises, like `log_run`."""
    try:
        import wandb

        run = wandb.init(
            project=settings.project,
            entity=settings.entity,
            group=settings.group or str(sweep_dir)[-MAX_NAME:],
            name=f"comparison {Path(sweep_dir).name}"[:MAX_NAME],
            job_type="comparison",
            tags=list(settings.tags),
            mode=settings.mode,
            dir=sweep_dir,
            settings=wandb.Settings(init_timeout=settings.init_timeout_s, console="off", x_disable_stats=True),
        )
        columns: list[str | int] = list(table[0])
        data = [[v if isinstance(v, (int, float)) or v is None else str(v) for v in row.values()] for row in table]
        media: dict[str, Any] = {"comparison": wandb.Table(columns=columns, data=data)}
        if "pareto" in files:
            media["pareto"] = wandb.Image(str(files["pareto"]))
        run.log(media)
        run.finish()
    except Exception as exc:  # the comparison files on disk are complete either way
        log.warning("W&B logging of the comparison failed (%s: %s).", type(exc).__name__, exc)
