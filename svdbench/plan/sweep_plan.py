"""A sweep priced before it runs: its jobs, expanded as Hydra's basic sweeper expands them (svdbench's sweeper
is that one), each with its predicted peak, whether it fits, and its device seconds (svdbench.plan.cost)."""

from __future__ import annotations

import time
from typing import Any

from svdbench.plan.cost import GPU_MEMORY_GB, JobEstimate, cpu_peak_tflops, estimate, fits


class NotAGrid(Exception):
    """A sweep whose jobs are not known before it runs (a search such as Optuna's), or a sweep that cannot be
    read: one paragraph, exit status 2."""


def sweep_jobs(overrides: list[str], multirun: bool) -> list[list[str]] | None:
    """The overrides of every job of the sweep these arguments start, in the order it runs them; None when
    they start a single run (no -m and no experiment in MULTIRUN mode)."""
    from hydra.types import RunMode

    from svdbench.settings.arguments import CONF_DIR, CONFIG_NAME
    from svdbench.settings.hydra_api import BasicSweeper, compose_aside, parse_override

    parsed = [parse_override(arg) for arg in overrides]
    plain = [o.input_line for o in parsed if not o.is_sweep_override() and o.input_line]
    config = compose_aside(str(CONF_DIR), CONFIG_NAME, [line for line in plain if line is not None])
    mode = config.hydra.get("mode")
    if not multirun and mode != RunMode.MULTIRUN and str(mode) != "MULTIRUN":
        return None
    sweeper = config.hydra.sweeper
    target = str(sweeper.get("_target_", ""))
    if not target.endswith(("SweepSweeper", "BasicSweeper")):
        raise NotAGrid(
            f"this sweep is run by {target}, which chooses its jobs while it runs (a search), so they cannot be "
            "listed or priced before it starts. Price single configurations instead (python -m svdbench.plan "
            "key=value ...), or a grid: python -m svdbench.plan -m key=a,b ..."
        )
    params = [f"{key}={value}" for key, value in (sweeper.get("params") or {}).items()]
    try:
        batches = BasicSweeper.split_arguments([parse_override(arg) for arg in [*params, *overrides]], None)
    except Exception as exc:
        raise NotAGrid(f"the sweep's jobs cannot be listed: {exc}") from None
    return [list(job) for batch in batches for job in batch]


def _gpu(gpu: str | None, gpu_tflops: float | None, dtype: str) -> tuple[str, float | None]:
    from svdbench.measure.flops import gpu_peak_tflops
    from svdbench.plan.cost import gpu_key

    if gpu_tflops is not None:
        return gpu or f"a GPU of {gpu_tflops:g} TFLOP/s", gpu_tflops
    key = gpu_key(gpu or "H100")
    return (key, gpu_peak_tflops(key, dtype)) if key else (gpu or "H100", None)


def plan_job(
    overrides: list[str], gpu: str | None, gpu_tflops: float | None, memory_gib: float | None
) -> dict[str, Any]:
    """One job: its predicted peak, its fit on the GPU, its estimated seconds (or why there are none)."""
    from svdbench.plan import try_predict
    from svdbench.plan.fit import CONTEXT_GIB
    from svdbench.plan.planner import resolve_target
    from svdbench.settings.arguments import job_problem, run_config

    shown = [o for o in overrides if not o.lstrip("+~").startswith("hydra.")]
    job: dict[str, Any] = {"overrides": shown, "gpu_s": None, "reason": None, "peak_gib": None, "fit": None}
    problem = job_problem(overrides)
    if problem:
        job["reason"] = f"invalid settings (the sweep records this job as an error): {problem}"
        return job
    cfg = run_config(overrides)
    target = resolve_target(cfg)
    job["device"], job["dtype"] = target.device, target.dtype
    prediction = try_predict(cfg)
    if isinstance(prediction, str):
        job["peak_reason"] = prediction
    else:
        job["peak_gib"] = prediction.peak_gib
        job["peak_phase"] = prediction.peak_phase
    if target.device == "cuda":
        name, peak = _gpu(gpu, gpu_tflops, target.dtype)
        if memory_gib is not None:
            job["fit"] = None if job["peak_gib"] is None else job["peak_gib"] <= memory_gib - CONTEXT_GIB
            job["card"] = f"{memory_gib:g} GiB"
        else:
            card = GPU_MEMORY_GB.get(name)
            job["fit"] = fits(job["peak_gib"], card)
            job["card"] = f"{name} {card} GB" if card else None
        result: JobEstimate = estimate(cfg, device="cuda", dtype=target.dtype, peak_tflops=peak, name=name)
    else:
        result = estimate(
            cfg, device="cpu", dtype=target.dtype, peak_tflops=cpu_peak_tflops(target.dtype), name="this CPU"
        )
    job["gpu_s"] = result.seconds
    job["reason"] = result.reason
    job["estimate"] = result.to_dict()
    return job


def plan_sweep(
    jobs: list[list[str]], gpu: str | None = None, gpu_tflops: float | None = None, memory_gib: float | None = None
) -> dict[str, Any]:
    """Every job planned, and the total of the priced ones."""
    started = time.perf_counter()
    planned = [plan_job(job, gpu, gpu_tflops, memory_gib) for job in jobs]
    priced = [job["gpu_s"] for job in planned if job["gpu_s"] is not None]
    unpriced = len(planned) - len(priced)
    return {
        "total_gpu_s": sum(priced),
        "unpriced_jobs": unpriced,
        "jobs": planned,
        "note": (
            "device seconds of every job (build, placement, cold call with compilation, warm-ups, measured calls, "
            "the job's overhead) by the time model of svdbench.plan.cost, docs/plan.md; estimates, not measurements"
            + (f"; the total leaves out {unpriced} job(s) that cannot be priced (see their reason)" if unpriced else "")
        ),
        "seconds_to_plan": time.perf_counter() - started,
    }
