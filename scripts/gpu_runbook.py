#!/usr/bin/env python
"""GPU runbook: SVD-XT (random weights) at 576x1024, 25 frames, 25 steps, fp16, across the optimization
modes, one subprocess per mode, then a Markdown table and a check of the diffusers guide's claims.

    python scripts/gpu_runbook.py                      # on a machine with a CUDA GPU
    python scripts/gpu_runbook.py --modes none,compile --warmup 2 --repeats 5
    python scripts/gpu_runbook.py --dry-run            # the same flow with model=tiny on the CPU

Why a process per mode: peak memory, compile caches and CUDA graphs of one mode must not leak into the
next. Random weights cost exactly what the checkpoint costs per step (DESIGN.md section 2), and need no
download, so this runs on a machine without network. Each job's results.json stays under --out.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODES = ["none", "compile", "offload", "chunking", "lowmem", "seq_offload", "group_offload", "deepcache"]
GB = 1e9  # the guide's "8 GB" is decimal; tables show GiB (2**30) like results.json
GIB = 2**30
COMPILE_CLAIM = (0.20, 0.25)  # compile is 20-25 percent faster than none
LOWMEM_CLAIM_GB = 8.0  # the memory-saving combination runs in under 8 GB of GPU memory


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated opt presets (conf/opt/*.yaml)")
    parser.add_argument("--warmup", type=int, default=1, help="bench.warmup: untimed calls after the cold call")
    parser.add_argument("--repeats", type=int, default=3, help="bench.repeats: measured calls")
    parser.add_argument("--steps", type=int, default=25, help="num_inference_steps")
    parser.add_argument("--out", type=Path, default=None, help="directory for the jobs (default: outputs/runbook/…)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds before a job is stopped")
    parser.add_argument(
        "--dry-run", action="store_true", help="model=tiny on the CPU: tests the flow where there is no GPU"
    )
    parser.add_argument("--extra", nargs="*", default=[], help="more overrides for every job, e.g. seed=0")
    return parser.parse_args(argv)


def job_overrides(mode: str, args: argparse.Namespace, run_dir: Path) -> list[str]:
    if args.dry_run:
        model = ["model=tiny", "device=cpu", "dtype=fp32"]
    else:
        model = ["model=xt", "model.weights=random", "device=cuda", "dtype=fp16"]
        model += ["height=576", "width=1024", "num_frames=25"]
    overrides = [
        *model,
        f"opt={mode}",
        f"num_inference_steps={args.steps}",
        f"bench.warmup={args.warmup}",
        f"bench.repeats={args.repeats}",
        "bench.progress=false",
        f"hydra.run.dir={run_dir}",
    ]
    if (REPO / "conf" / "logger" / "none.yaml").is_file():
        overrides.append("logger=none")  # no W&B run per job: the table is the record
    return overrides + list(args.extra)


def run_job(mode: str, args: argparse.Namespace, out: Path) -> dict:
    run_dir = out / mode
    run_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("WANDB_MODE", "disabled")
    command = [sys.executable, "-m", "svdbench", *job_overrides(mode, args, run_dir)]
    print(f"[{mode}] {' '.join(command[1:])}", file=sys.stderr, flush=True)
    start = time.monotonic()
    try:
        with open(run_dir / "stderr.txt", "w") as log:
            subprocess.run(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "reason": f"stopped after {args.timeout:.0f} s (--timeout)"}
    path = run_dir / "results.json"
    if not path.is_file():
        return {"status": "error", "reason": f"no results.json; see {run_dir / 'stderr.txt'}"}
    result = json.loads(path.read_text())
    print(f"[{mode}] {result.get('status')} in {time.monotonic() - start:.0f} s", file=sys.stderr, flush=True)
    return result


def _get(result: dict, *keys):
    for key in keys:
        if not isinstance(result, dict):
            return None
        result = result.get(key)
    return result


def row(mode: str, result: dict) -> dict:
    return {
        "mode": mode,
        "status": result.get("status"),
        "median_s": _get(result, "latency", "stats", "median"),
        "s_per_step": _get(result, "steps", "s_per_step"),
        "device_allocated_gib": _get(result, "memory", "device_max_allocated_gib"),
        "device_reserved_gib": _get(result, "memory", "device_max_reserved_gib"),
        "host_peak_gib": _get(result, "memory", "host_peak_gib"),
        "cold_s": _get(result, "latency", "cold_s"),
        "mfu": _get(result, "flops", "mfu_denoising"),
        "reason": result.get("reason"),
        "device": result.get("device"),
    }


def markdown_table(rows: list[dict]) -> str:
    def fmt(value, digits=2):
        return "–" if value is None else f"{value:.{digits}f}"

    def pct(value):
        return "–" if value is None else f"{100 * value:.1f}%"

    lines = [
        "| mode | status | median latency (s) | s/step | peak device allocated (GiB) | peak device reserved (GiB) "
        "| peak host (GiB) | cold call (s) | MFU (denoising) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['mode']} | {r['status']} | {fmt(r['median_s'])} | {fmt(r['s_per_step'], 3)} "
            f"| {fmt(r['device_allocated_gib'])} | {fmt(r['device_reserved_gib'])} | {fmt(r['host_peak_gib'])} "
            f"| {fmt(r['cold_s'], 1)} | {pct(r['mfu'])} |"
        )
    notes = [f"- {r['mode']}: {r['status']}: {r['reason']}" for r in rows if r["status"] != "ok" and r["reason"]]
    return "\n".join(lines + ([""] + notes if notes else []))


def check_claims(rows: list[dict]) -> list[str]:
    """The guide's claims against the table; a claim whose runs did not succeed is 'not checked'."""
    by_mode = {r["mode"]: r for r in rows}
    lines = []
    none, compiled = by_mode.get("none"), by_mode.get("compile")
    if none and compiled and none["status"] == compiled["status"] == "ok":
        gain = 1 - compiled["median_s"] / none["median_s"]
        lo, hi = COMPILE_CLAIM
        verdict = "holds" if lo <= gain <= hi else ("faster than claimed" if gain > hi else "does not hold")
        lines.append(
            f"- compile is {lo:.0%}-{hi:.0%} faster than none: measured {gain:.1%} "
            f"({compiled['median_s']:.2f} s vs {none['median_s']:.2f} s): {verdict}."
        )
    else:
        lines.append("- compile is 20-25% faster than none: not checked (needs ok runs of none and compile).")
    lowmem = by_mode.get("lowmem")
    if lowmem and lowmem["status"] == "ok" and lowmem["device_reserved_gib"] is not None:
        reserved_gb = lowmem["device_reserved_gib"] * GIB / GB
        allocated_gb = lowmem["device_allocated_gib"] * GIB / GB
        verdict = "holds" if reserved_gb < LOWMEM_CLAIM_GB else "does not hold"
        lines.append(
            f"- lowmem (offload + chunking + decode_chunk_size=2) under {LOWMEM_CLAIM_GB:.0f} GB: peak reserved "
            f"{reserved_gb:.2f} GB, allocated {allocated_gb:.2f} GB: {verdict}."
        )
    else:
        lines.append(f"- lowmem under {LOWMEM_CLAIM_GB:.0f} GB: not checked (needs an ok lowmem run on a GPU).")
    return lines


def device_name(dry_run: bool) -> str:
    """The GPU's name from nvidia-smi (not torch: this process must not hold a CUDA context of its own)."""
    if dry_run:
        return "cpu (dry run)"
    try:
        proc = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown (nvidia-smi not available)"
    return "; ".join(line.strip() for line in proc.stdout.splitlines() if line.strip()) or "unknown"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if not (REPO / "conf" / "opt" / f"{m}.yaml").is_file()]
    if unknown:
        print(f"Unknown mode(s) {', '.join(unknown)}: choose from conf/opt/*.yaml.", file=sys.stderr)
        return 2
    out = args.out or REPO / "outputs" / "runbook" / time.strftime("%Y-%m-%d_%H-%M-%S")
    out = out.resolve()
    rows = [row(mode, run_job(mode, args, out)) for mode in modes]
    what = "model=tiny on the CPU (dry run)" if args.dry_run else "SVD-XT, random weights, 576x1024, 25 frames, fp16"
    report = "\n".join(
        [
            f"## {what}: {args.steps} steps, warmup {args.warmup}, repeats {args.repeats}",
            "",
            f"Device: {device_name(args.dry_run)}; runs in {out}",
            "",
            markdown_table(rows),
            "",
            "Claims of the diffusers guide:",
            *check_claims(rows),
        ]
    )
    print(report)
    (out / "runbook.md").write_text(report + "\n")
    (out / "runbook.json").write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
