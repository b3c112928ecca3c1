"""The planner's report as Markdown (the JSON form is the report dict itself)."""

from __future__ import annotations

from typing import Any

GB_PER_GIB = 2**30 / 1e9


def _gib(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def _cell(card: dict[str, Any]) -> str:
    margin = card["margin_gib"]
    return f"fits (+{margin:.1f})" if card["fits"] else f"no ({margin:.1f})"


def markdown(report: dict[str, Any]) -> str:
    cfg, pred = report["config"], report["prediction"]
    guidance = "guidance on" if cfg["guidance"] else "guidance off"
    chunk = cfg["decode_chunk_size"] or "all"
    lines = [
        f"# Memory plan: model={cfg['model']} opt={cfg['opt']}",
        "",
        f"{cfg['height']}x{cfg['width']}, {cfg['num_frames']} frames, {cfg['num_inference_steps']} steps, "
        f"{guidance}, decode_chunk_size={chunk}, batch {cfg['batch_size']}, on {cfg['device']} in {cfg['dtype']}.",
        "",
        f"**Predicted peak allocated device memory of one call: {pred['peak_gib']:.2f} GiB** "
        f"({pred['peak_gib'] * GB_PER_GIB:.2f} GB), in the {_phase_words(pred['peak_phase'])}.",
        "",
        "| phase | peak (GiB) | weights on the device (GiB) |",
        "| --- | ---: | ---: |",
    ]
    for phase, value in pred["phases_gib"].items():
        marker = " (peak)" if phase == pred["peak_phase"] else ""
        lines.append(f"| {phase}{marker} | {value:.2f} | {_gib(pred['resident_gib'].get(phase))} |")
    parts = pred["breakdown_gib"]
    lines += [
        "",
        f"At the peak: weights on the device {parts['weights']:.2f} GiB, tensors kept from earlier phases "
        f"(latents, image embeddings, decoded frames) {parts['kept']:.2f} GiB, the phase's activations "
        f"{parts['activations']:.2f} GiB.",
    ]
    if pred["host_weights_gib"] is not None:
        lines.append(f"Host memory the offloaded weights need: {pred['host_weights_gib']:.2f} GiB.")
    lines += ["", "Assumptions:", *[f"- {text}" for text in pred["assumptions"]], f"- method: {pred['method']}"]
    ratios = ", ".join(f"{name} {ratio:.2f}" for name, ratio in report["reserved_over_allocated_h100"].items())
    lines += [
        "",
        "Reserved memory (the caching allocator's cache) is not predicted: it is allocator behaviour. Measured "
        f"peak reserved / peak allocated on the H100 (docs/benchmarks.md): {ratios}.",
    ]
    if report.get("flops_tflop"):
        from svdbench.measure.flops import CallFlops

        flops = CallFlops(**report["flops_tflop"])
        videos = f", all {flops.videos} videos" if flops.videos > 1 else ""
        lines += [
            "",
            f"FLOPs of one call{videos}: {flops.total_tflop:.1f} TFLOP (UNet {flops.unet_per_step_tflop:.1f} per "
            f"step, denoising {flops.denoising_tflop:.1f}, VAE decode {flops.vae_decode_tflop:.1f}, conditioning "
            f"{flops.conditioning_tflop:.1f}).",
        ]
    estimate = report.get("time_estimate")
    if estimate:
        if estimate["seconds"]:
            lines.append(
                f"Time estimate on {estimate['gpu']}: {estimate['seconds']:.1f} s per call ({estimate['note']}: "
                f"{estimate['peak_tflops']:.1f} TFLOP/s x {100 * estimate['efficiency']:.1f} %)."
            )
        else:
            lines.append(f"Time estimate on {estimate['gpu']}: {estimate['note']}.")
    if report.get("fit"):
        lines += ["", *_fit_table(report)]
    if "fits_in" in report:
        fits = report["fits_in"]
        names = ", ".join(fits["presets"]) or "none"
        lines += ["", f"Presets that fit in {fits['memory_gib']:g} GiB, fastest first: {names}."]
    lines += ["", f"({report['seconds_to_plan']:.1f} s to plan.)"]
    return "\n".join(lines)


def _phase_words(phase: str) -> str:
    return {
        "conditioning": "conditioning (image encoder and VAE encoding)",
        "denoising": "denoising (a UNet step)",
        "decode": "decode (a VAE decode chunk)",
    }.get(phase, phase)


def _fit_table(report: dict[str, Any]) -> list[str]:
    cards = report["cards"]
    sizes = [str(size) for size in cards["sizes_gb"]]
    time_gpu = cards.get("time_gpu")
    header = ["opt", "peak (GiB)", "phase", *[f"{size} GB" for size in sizes]]
    if time_gpu:
        header.append(f"est. s/call ({time_gpu})")
    lines = [
        f"## Fit table: every opt preset on cards of {', '.join(sizes)} GB",
        "",
        "A card sold as N GB offers the total nvidia-smi reports for such a card (80 GB: 79.6 GiB, 48: 45.0, 40: "
        "40.0, 24: 22.5, 16: 15.0), or N x 15/16 GiB for the other sizes, "
        f"minus {cards['context_gib']:.1f} GiB of CUDA context: fits (+margin GiB) / no (shortfall GiB).",
        "",
        "| " + " | ".join(header) + " |",
        "| " + " | ".join(["---", "---:", "---", *["---" for _ in sizes]] + (["---:"] if time_gpu else [])) + " |",
    ]
    notes = []
    for row in report["fit"]:
        if row["status"] != "modelled":
            cells = [row["opt"], "–", "–", *["not modelled" for _ in sizes]] + (["–"] if time_gpu else [])
            notes.append(f"- {row['opt']}: not modelled: {row['reason']}")
        else:
            cells = [row["opt"], f"{row['peak_gib']:.2f}", row["peak_phase"], *[_cell(row["cards"][s]) for s in sizes]]
            if time_gpu:
                cells.append(f"{row['time_s']:.1f}" if row["time_s"] else "not measured")
        lines.append("| " + " | ".join(cells) + " |")
    if time_gpu:
        lines += [
            "",
            "Times are estimates: FLOPs / (peak x the efficiency each preset reached on the H100, docs/benchmarks.md);"
            " presets not measured there have none.",
        ]
    if report.get("fit_note"):
        lines += ["", f"Note: {report['fit_note']}."]
    return lines + ([""] + notes if notes else [])


PARTS = ("build_s", "placement_s", "warmup_s", "measured_s", "overhead_s")


def sweep_markdown(report: dict[str, Any]) -> str:
    """A priced sweep: one row per job (its parts in seconds), then each job's assumptions, then the total."""
    lines = [
        f"# Sweep plan: {len(report['jobs'])} jobs",
        "",
        "Seconds by the planner's time model (docs/plan.md): estimates, not measurements. cold = the first call, "
        "compilation included; overhead = process start, metrics, record and extra calls.",
        "",
        "| # | job | device | peak (GiB) | fits | build | placement | cold (compile) | warm-ups | measured "
        "| overhead | total (s) |",
        "| ---: | --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    notes = []
    for index, job in enumerate(report["jobs"]):
        estimate = job.get("estimate") or {}
        parts = estimate.get("parts") or {}
        device = estimate.get("device") or "–"
        fit = (
            "–"
            if job["fit"] is None
            else ("yes" if job["fit"] else "NO") + (f" ({job['card']})" if job.get("card") else "")
        )

        cells = {key: f"{parts[key]:.1f}" if key in parts else "–" for key in PARTS}

        cold = f"{parts['cold_call_s']:.1f} ({parts['compile_s']:.0f})" if parts else "–"
        total = f"**{job['gpu_s']:.1f}**" if job["gpu_s"] is not None else "not priced"
        lines.append(
            f"| {index} | {' '.join(job['overrides'])} | {device} | {_gib(job['peak_gib'])} | {fit} "
            f"| {cells['build_s']} | {cells['placement_s']} | {cold} | {cells['warmup_s']} | {cells['measured_s']} "
            f"| {cells['overhead_s']} | {total} |"
        )
        said = [*(estimate.get("assumptions") or [])]
        if job.get("reason"):
            said.insert(0, f"not priced: {job['reason']}")
        if job.get("peak_reason"):
            said.append(f"peak not predicted: {job['peak_reason']}")
        if estimate.get("call_s"):
            said.insert(0, f"{estimate['call_s']:.1f} s per call")
        notes.append(f"- job {index}: " + "; ".join(said))
    total = report["total_gpu_s"]
    lines += [
        "",
        f"**Total: {total:.0f} s ({total / 60:.1f} min)**"
        + (
            f", leaving out {report['unpriced_jobs']} job(s) that cannot be priced." if report["unpriced_jobs"] else "."
        ),
        "",
        "Per job:",
        *notes,
        "",
        f"({report['seconds_to_plan']:.1f} s to plan.)",
    ]
    return "\n".join(lines)
