"""`python -m svdbench.plan [overrides]`: will this configuration fit, and which opt preset fits my GPU?

Takes the same overrides as a run (checked by the same code, with the same messages and exit status 2),
builds nothing real and prints the predicted peak device memory of one pipeline call, its phase and
breakdown, the FLOPs and a time estimate, and a fit table of every opt preset against common GPU sizes. Given a
sweep (-m with comma lists, or an experiment in MULTIRUN mode), it expands the jobs as Hydra's basic sweeper does
and prices each in device seconds (svdbench.plan.cost), with its peak and whether it fits.
Exit status: 0 printed, 2 bad command line, 3 the configuration cannot be predicted.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from svdbench.measure.flops import CallFlops

USAGE = """usage: python -m svdbench.plan [-m] [key=value ...] [group=option ...] [--json] [--gpu NAME]
       [--gpu-tflops N] [--gpu-memory-gib N]

Predict the peak device memory (allocated, GiB = 2**30 bytes) of one pipeline call of the configuration the
same overrides would run, without a GPU or weights, and which opt presets fit which GPU (docs/plan.md).

  -m, --multirun      a sweep: every job of the comma lists (an experiment in MULTIRUN mode, such as
                      experiment=runbook, is one without -m), each priced in device seconds, and the total
  --json              print JSON (top level: peak_gib, peak_phase, fit, ...; for a sweep: total_gpu_s, jobs)
  --gpu NAME          estimate the time of a call on this GPU (h100, h200, a100, l40s, l4, a10, "rtx 4090", ...)
  --gpu-tflops N      estimate it on a GPU of N dense TFLOP/s in the run's dtype (one not in svdbench's table;
                      with --gpu NAME, N replaces that GPU's data-sheet peak)
  --gpu-memory-gib N  list the presets that fit in N GiB of device memory, fastest first
  --no-fit            only the configuration itself, no table of presets
  -h, --help          this help

Exit status: 0 done, 2 a bad command line (the message a run would give), 3 the configuration cannot be
predicted (the reason is printed)."""

EXIT_BAD_INPUT = 2
EXIT_CANNOT_PREDICT = 3


class BadInput(Exception):
    """A bad command line: the message is one paragraph, printed as `error: ...` with exit status 2."""


@dataclass
class Options:
    overrides: list[str] = field(default_factory=list)
    json: bool = False
    gpu: str | None = None
    gpu_tflops: float | None = None
    gpu_memory_gib: float | None = None
    fit: bool = True
    help: bool = False
    multirun: bool = False


def parse(argv: list[str]) -> Options:
    """Split the planner's own flags from the run's overrides (which go to Hydra's checks unchanged)."""
    options = Options()
    args = list(argv)
    while args:
        arg = args.pop(0)
        name, has_value, value = arg.partition("=")
        if arg in ("-h", "--help"):
            options.help = True
        elif arg == "--json":
            options.json = True
        elif arg == "--no-fit":
            options.fit = False
        elif name in EXAMPLES:
            if not has_value:
                if not args or args[0].startswith("-"):
                    raise BadInput(f"{name} needs a value, e.g. {name}={EXAMPLES[name]}.")
                value = args.pop(0)
            if name == "--gpu":
                options.gpu = value
            elif name == "--gpu-tflops":
                options.gpu_tflops = _positive(name, value, "the GPU's dense peak TFLOP/s in the run's dtype")
            else:
                options.gpu_memory_gib = _positive(name, value, "the GPU's memory in GiB (a card sold as 24 GB)")
        elif arg in ("-m", "--multirun"):
            options.multirun = True
        elif arg.startswith("-"):
            raise BadInput(
                f"{arg}: the planner takes the overrides of a run or a sweep (key=value, group=option, -m) and its "
                "own flags --json, --gpu NAME, --gpu-tflops N, --gpu-memory-gib N, --no-fit, and no other flag. "
                "python -m svdbench.plan --help shows the usage."
            )
        else:
            options.overrides.append(arg)
    if options.gpu is not None and options.gpu_tflops is None:
        _check_gpu(options.gpu)
    return options


# The planner's flags that take a value, with an example of one.
EXAMPLES = {"--gpu": "h100", "--gpu-tflops": "300", "--gpu-memory-gib": "24"}


def _check_gpu(name: str) -> None:
    from svdbench.measure.flops import GPU_PEAK_TFLOPS

    known = [key for key, _ in GPU_PEAK_TFLOPS]
    if gpu_key(name) is None:
        raise BadInput(
            f"--gpu={name}: no peak FLOP rate is known for this GPU, so no time can be estimated. Known GPUs: "
            f"{', '.join(known)} (svdbench/measure/flops.py GPU_PEAK_TFLOPS); a name containing one of them works too, "
            "or give its dense peak in the run's dtype with --gpu-tflops N."
        )


def _positive(flag: str, value: str, what: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if not number > 0 or number == float("inf"):
        raise BadInput(f"{flag}={value} is not valid: give {what} as a positive number, e.g. {flag}={EXAMPLES[flag]}.")
    return number


def gpu_key(name: str) -> str | None:
    """svdbench.plan.cost.gpu_key."""
    from svdbench.plan.cost import gpu_key as key

    return key(name)


def opt_presets() -> list[str]:
    from svdbench.settings.arguments import groups

    return groups()["opt"]


def _gpu_peak(options: Options, dtype: str) -> tuple[str, float | None]:
    """The GPU of the time estimates and its dense peak TFLOP/s in `dtype`: --gpu-tflops as given, else --gpu's
    data-sheet peak (svdbench.measure.flops), else the H100's."""
    from svdbench.measure.flops import gpu_peak_tflops

    if options.gpu_tflops is not None:
        return options.gpu or f"a GPU of {options.gpu_tflops:g} TFLOP/s", options.gpu_tflops
    gpu = options.gpu or "H100"
    key = gpu_key(gpu)
    return (key, gpu_peak_tflops(key, dtype)) if key else (gpu, None)


def call_tflop(cfg, dtype: str) -> CallFlops:
    """FLOPs of one call, TFLOP (svdbench.plan.cost.call_tflop)."""
    from svdbench.plan.cost import call_tflop as flops_of

    return flops_of(cfg, dtype)


def plan(options: Options) -> dict[str, Any]:
    """Everything the planner prints, as a JSON-ready dict."""
    from svdbench.plan import CannotPredict, predict
    from svdbench.plan.fit import (
        CARD_SIZES_GB,
        CONTEXT_GIB,
        FitRow,
        fit_row,
        fitting,
        reserved_ratios,
        usable_gib,
    )
    from svdbench.plan.planner import resolve_target
    from svdbench.settings.arguments import run_config

    started = time.perf_counter()
    cfg = run_config(options.overrides)
    target = resolve_target(cfg)
    prediction = predict(cfg)  # CannotPredict goes to the caller: exit 3
    report: dict[str, Any] = {
        "peak_gib": prediction.peak_gib,
        "peak_phase": prediction.peak_phase,
        "config": {
            "model": cfg.model.name,
            "architecture": cfg.model.architecture,
            "opt": cfg.opt.name,
            "height": cfg.height,
            "width": cfg.width,
            "num_frames": cfg.num_frames,
            "num_inference_steps": cfg.num_inference_steps,
            "guidance": cfg.max_guidance_scale > 1.0,
            "decode_chunk_size": cfg.opt.decode_chunk_size,
            "batch_size": cfg.batch_size,
            "device": target.device,
            "dtype": target.dtype,
            "overrides": options.overrides,
        },
        "prediction": prediction.to_dict(),
        "units": "GiB = 2**30 bytes; cards as sold in GB, usable GiB = the card's reported total (or GB x 15/16 "
        "where none is reported) minus the CUDA context",
        "reserved_over_allocated_h100": reserved_ratios(),
    }
    flops = call_tflop(cfg, target.dtype)
    report["flops_tflop"] = dataclasses.asdict(flops)
    if options.gpu or options.gpu_tflops:
        from svdbench.plan.fit import efficiency

        name, peak = _gpu_peak(options, target.dtype)
        eff = efficiency(cfg.opt.name)
        seconds = flops.total_tflop / (peak * eff) if peak and eff else None
        report["time_estimate"] = {
            "gpu": name,
            "peak_tflops": peak,
            "efficiency": eff,
            "seconds": seconds,
            "note": (
                f"estimate: FLOPs / ({'the given' if options.gpu_tflops else 'the data-sheet'} dense peak x the "
                "efficiency this opt preset reached on the H100 with SVD-XT, 576x1024, fp16, docs/benchmarks.md)"
                if seconds
                else f"no estimate: no {target.dtype} peak for {name}"
                if not peak
                else f"no estimate: opt={cfg.opt.name} was not measured on the H100 (docs/benchmarks.md)"
            ),
        }
    rows: list[FitRow] = []
    if options.fit or options.gpu_memory_gib:
        user = [o for o in options.overrides if o.split("=", 1)[0].lstrip("+~") != "opt"]
        overrides = user if target.device == "cuda" else [*user, "device=cuda"]
        gpu_name, gpu_peak = _gpu_peak(options, target.dtype)
        for preset in opt_presets():
            try:
                preset_cfg = run_config([*overrides, f"opt={preset}"])
                result = predict(preset_cfg)
            except CannotPredict as exc:
                rows.append(FitRow(opt=preset, reason=str(exc)))
                continue
            except Exception as exc:  # a preset the user's overrides make invalid
                rows.append(FitRow(opt=preset, reason=f"{type(exc).__name__}: {exc}"))
                continue
            row = fit_row(preset, result.peak_gib, result.peak_phase)
            if row.efficiency and gpu_peak:  # the configuration's FLOPs (a decode chunk size changes them little)
                row.time_s = flops.total_tflop / (gpu_peak * row.efficiency)
            rows.append(row)
        report["fit"] = [row.to_dict() for row in rows]
        report["cards"] = {
            "sizes_gb": list(CARD_SIZES_GB),
            "usable_gib": {str(card): usable_gib(card) for card in CARD_SIZES_GB},
            "context_gib": CONTEXT_GIB,
            "time_gpu": gpu_name if gpu_peak else None,
        }
        if target.device == "cpu":
            report["fit_note"] = "the fit table plans for a CUDA GPU (device=cuda), the rest for the CPU"
    else:
        report["fit"] = []
    if options.gpu_memory_gib:
        report["fits_in"] = {
            "memory_gib": options.gpu_memory_gib,
            "presets": [row.opt for row in fitting(rows, options.gpu_memory_gib)],
        }
    report["seconds_to_plan"] = time.perf_counter() - started
    return report


def _quiet_libraries() -> None:
    """diffusers and transformers log through their own handlers: their notices are not the plan's output."""
    try:
        from diffusers.utils import logging as diffusers_logging
        from transformers.utils import logging as transformers_logging

        diffusers_logging.set_verbosity_error()
        transformers_logging.set_verbosity_error()
    except ImportError:
        pass


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        options = parse(argv)
    except BadInput as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if options.help:
        print(USAGE)
        return 0
    from svdbench.settings.arguments import check_command_line

    problem = check_command_line(["-m", *options.overrides] if options.multirun else options.overrides)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_BAD_INPUT
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore")
    for noisy in ("diffusers", "transformers", "torchao", "torch"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    _quiet_libraries()
    from svdbench.plan import CannotPredict
    from svdbench.plan.render import markdown
    from svdbench.plan.sweep_plan import NotAGrid, sweep_jobs

    try:
        jobs = sweep_jobs(options.overrides, options.multirun)
    except NotAGrid as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if jobs is not None:
        from svdbench.plan.render import sweep_markdown
        from svdbench.plan.sweep_plan import plan_sweep

        sweep_report = plan_sweep(
            jobs, gpu=options.gpu, gpu_tflops=options.gpu_tflops, memory_gib=options.gpu_memory_gib
        )
        print(json.dumps(sweep_report, indent=2) if options.json else sweep_markdown(sweep_report))
        return 0
    try:
        report = plan(options)
    except CannotPredict as exc:
        print(f"cannot predict: {exc}", file=sys.stderr)
        return EXIT_CANNOT_PREDICT
    print(json.dumps(report, indent=2) if options.json else markdown(report))
    return 0


if __name__ == "__main__":
    try:
        code = main()
    except BrokenPipeError:  # the reader stopped early (| head): not an error of the plan
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 0
    sys.exit(code)
