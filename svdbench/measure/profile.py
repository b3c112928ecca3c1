"""Where the time goes: one extra pipeline call under `torch.profiler`, after the measured calls.

`profile_call` marks the call with named ranges (`torch.profiler.record_function`), runs it under the
profiler and turns the events into a `Profile` (results.json -> profile) and a Chrome trace (trace.json[.gz],
opens in https://ui.perfetto.dev). The ranges, all named `svdbench/...`, come from:

- the pipeline's own methods (wrapped on the instance for this call only): conditioning = `_encode_image` +
  `_encode_vae_image`; a denoising step = from `scheduler.scale_model_input` to the end of `scheduler.step`;
  decode = `decode_latents`;
- module forward hooks on the UNet and the VAE decoder and, inside them, on the outermost module of each block
  kind, by class (see KINDS); a module inside a classified one is not marked again, so no time is counted twice.

Times are exclusive where they must add up: on a CPU a block kind is the wall time of its ranges and the UNet's
`rest` is the UNet's time outside them; an operator category is the operators' self time (their own time, less
the operators they call). On a GPU every figure but the phases is kernel time: the kernels an operator launched,
summed per range, kind or category; phases and steps are device windows (first kernel start to last kernel end),
and within the denoising steps the window splits into busy (a kernel or copy running) and idle (launch gaps).
The profiled call is slower than a measured one (the profiler's own overhead) and never enters latency, memory
or energy figures: `Profile.call_s` is reported on its own. docs/profile.md explains every figure.
"""

from __future__ import annotations

import ast
import gzip
import logging
import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile, record_function

from svdbench.settings.config import ProfileConfig


@dataclass
class OpTime:
    """One operator (or, on a GPU, a kernel no operator launched) in the profiled call."""

    name: str  # aten op, e.g. aten::addmm
    category: str
    seconds: float  # self time: its own, less the operators it calls (kernel time on a GPU)
    share: float  # of the profiled call's total (Profile.call_s)
    calls: int


@dataclass
class Profile:
    """Where the time of one extra call went, under torch.profiler (profile.enabled=true; svdbench.measure.profile and
    docs/profile.md). That call comes after the measured ones and is slower than they are (profiler overhead):
    it is never part of latency, memory or energy figures. Seconds of that one call throughout."""

    time_basis: str  # "cpu wall" or "cuda kernels": what blocks and categories measure
    call_s: float  # the profiled call's own total, profiler overhead included
    phases_s: dict[str, float]  # conditioning, denoising, decode, other (the rest of the call)
    steps_s: list[float]  # every denoising step
    unet_s: float  # all UNet calls of the call
    unet_calls: int
    blocks_s: dict[str, float]  # UNet time by block kind; adds up to unet_s
    vae_decoder_s: float
    vae_decoder_parts_s: dict[str, float]  # spatial, temporal; adds up to vae_decoder_s
    categories_s: dict[str, float]  # operator self time by category
    outside_ops_s: float | None  # CPU: the call's time in no operator (Python, the pipeline's glue)
    flops: dict[str, float]  # FLOPs where known, by category (matmul, convolution, attention)
    tflops_per_s: dict[str, float]  # achieved: those FLOPs / the time of the ops that have them
    flops_coverage: dict[str, float]  # share of the category's time in ops with known FLOPs
    flops_source: str
    top_ops: list[OpTime]
    device_busy_s: float | None = None  # GPU: within the denoising steps, a kernel or copy running
    device_idle_s: float | None = None  # GPU: within the denoising steps, nothing running (launch gaps)
    steps_busy_s: list[float] | None = None
    trace_events: int = 0
    trace_bytes: int = 0  # the trace file as written (gzip-compressed unless profile.gzip=false)
    trace_json_bytes: int = 0  # the trace as plain JSON
    notes: list[str] = field(default_factory=list)


log = logging.getLogger(__name__)

PICTURE = "profile.png"
PREFIX = "svdbench/"
CALL, CONDITIONING, STEP, DECODE = "svdbench/call", "svdbench/conditioning", "svdbench/step", "svdbench/decode"
UNET, DECODER = "svdbench/unet", "svdbench/vae_decoder"
# UNet block kinds by module class; the transformer blocks include their feed-forward layers.
KINDS = {
    "ResnetBlock2D": "spatial_resnet",
    "TemporalResnetBlock": "temporal_resnet",
    "BasicTransformerBlock": "spatial_attention",
    "TemporalBasicTransformerBlock": "temporal_attention",
    "AlphaBlender": "time_mixing",  # the learned blend of the spatial and temporal paths (`time_mixer`)
}
BLOCK_KINDS = (*KINDS.values(), "rest")
DECODER_PARTS = ("spatial", "temporal")
CATEGORIES = ("matmul", "convolution", "attention", "normalization", "elementwise", "copy_cast", "other")
FLOP_CATEGORIES = ("matmul", "convolution", "attention")
FLOPS_SOURCE = (
    "matmul (mm, addmm, bmm) and conv2d: torch.profiler's with_flops estimates; other convolutions (conv3d, the "
    "aten::convolution calls of compiled graphs): 2 x batch x output positions x weight elements, from the recorded "
    "shapes, stride, padding and dilation; attention (scaled_dot_product_attention and its flash, efficient and "
    "cuDNN kernels): 2 x batch x heads x Lq x Lk x (D + Dv) from the recorded shapes, softmax not counted. Fused "
    "compiled kernels have no FLOP estimate: flops_coverage says how much of a category's time is counted."
)


class Untraceable(RuntimeError):
    """This call cannot be profiled here; the message says why (it becomes a note, never a failed run)."""


# ---------------------------------------------------------------------------------------------- ranges


class _Ranges:
    """Named profiler ranges opened and closed from hooks and wrappers (properly nested, so a stack)."""

    def __init__(self) -> None:
        self.stack: list[record_function] = []

    def enter(self, name: str) -> None:
        scope = record_function(name)
        scope.__enter__()
        self.stack.append(scope)

    def exit(self) -> None:
        if self.stack:
            self.stack.pop().__exit__(None, None, None)

    def close_all(self) -> None:
        while self.stack:
            self.exit()


def _compiled(module: torch.nn.Module) -> bool:
    return hasattr(module, "_orig_mod")


def _decoder_part(name: str, module: torch.nn.Module) -> str | None:
    if type(module).__name__ in ("TemporalResnetBlock", "AlphaBlender") or name.rsplit(".", 1)[-1] == "time_conv_out":
        return "temporal"
    return None


def _instrument(pipe, ranges: _Ranges, notes: list[str]) -> Callable[[], None]:
    """Put the ranges on the pipeline (see the module's docstring); returns the function that takes them off."""
    handles: list[Any] = []
    wrapped: list[tuple[Any, str, Any]] = []

    def mark(module: torch.nn.Module, name: str) -> None:
        handles.append(module.register_forward_pre_hook(lambda *_: ranges.enter(name)))
        handles.append(module.register_forward_hook(lambda *_: ranges.exit(), always_call=True))

    def mark_inside(top: torch.nn.Module, label: str, classify: Callable[[str, torch.nn.Module], str | None]) -> None:
        if _compiled(top):  # hooks inside a compiled graph would recompile it, and its kernels fuse across blocks
            notes.append(
                f"{label} is compiled: its fused kernels cross module boundaries, so its time is not split by kind "
                "(all in rest or spatial); a compiled graph's own time outside aten ops (inductor's fused kernels) "
                "counts as elementwise."
            )
            return
        inside: list[str] = []  # classified modules already marked: their submodules are not marked again
        for name, module in top.named_modules():
            kind = classify(name, module)
            if kind and not any(name.startswith(f"{outer}.") for outer in inside):
                inside.append(name)
                mark(module, f"{PREFIX}{label}/{kind}")

    def wrap(owner: Any, attr: str, before: Callable[[], None], after: Callable[[], None]) -> None:
        original = getattr(owner, attr)
        wrapped.append((owner, attr, owner.__dict__.get(attr)))

        def marked(*args, **kwargs):
            before()
            try:
                return original(*args, **kwargs)
            finally:
                after()

        setattr(owner, attr, marked)

    mark(pipe.unet, UNET)
    mark_inside(pipe.unet, "unet", lambda name, module: KINDS.get(type(module).__name__))
    mark(pipe.vae.decoder, DECODER)
    mark_inside(pipe.vae.decoder, "vae_decoder", _decoder_part)
    for method in ("_encode_image", "_encode_vae_image"):
        wrap(pipe, method, lambda: ranges.enter(CONDITIONING), ranges.exit)
    wrap(pipe, "decode_latents", lambda: ranges.enter(DECODE), ranges.exit)
    wrap(pipe.scheduler, "scale_model_input", lambda: ranges.enter(STEP), lambda: None)  # the step stays open
    wrap(pipe.scheduler, "step", lambda: None, ranges.exit)  # until the scheduler's step returns

    def undo() -> None:
        for handle in handles:
            handle.remove()
        for owner, attr, previous in reversed(wrapped):
            if previous is None:
                delattr(owner, attr)
            else:
                setattr(owner, attr, previous)

    return undo


# ------------------------------------------------------------------------------------------- categories


_MATMUL = set("mm addmm bmm baddbmm matmul linear addmv mv dot _scaled_mm mkldnn_linear".split())
_COPY = set(
    "copy_ _to_copy to clone contiguous cat stack constant_pad_nd pad repeat fill_ zero_ zeros ones index_select "
    "gather upsample_nearest2d _unsafe_index".split()
)
_ELEMENTWISE = set(
    "add add_ mul mul_ sub rsub div div_ silu gelu sigmoid exp sin cos pow where tanh neg sqrt rsqrt clamp lerp abs "
    "log erf addcmul addcdiv maximum minimum reciprocal square glu".split()
)


def category(name: str) -> str:
    """The operator category of an aten op or a kernel name (matmul, convolution, attention, ...)."""
    base = name.removeprefix("aten::")
    low = base.lower()
    if "compiledfxgraph" in low:  # a compiled graph's own time: inductor's fused (pointwise, reduction) kernels
        return "elementwise"
    if any(s in low for s in ("attention", "flash", "fmha", "softmax")):
        return "attention"
    if any(s in low for s in ("memcpy", "memset", "convert", "cast")):
        return "copy_cast"
    if "conv" in low:
        return "convolution"
    if base in _MATMUL or any(s in low for s in ("gemm", "cutlass", "xmma", "cublas", "triton_tem")):
        return "matmul"
    if "norm" in low or low.startswith(("triton_red", "triton_per")):
        return "normalization"
    if base in _COPY or "copy" in low:
        return "copy_cast"
    if base in _ELEMENTWISE or any(s in low for s in ("cpp_fused", "triton_poi", "elementwise", "vectorized")):
        return "elementwise"
    return "other"


def _literal(value: Any) -> Any:
    return ast.literal_eval(value) if isinstance(value, str) else value


_ATTENTION_OPS = {
    "aten::scaled_dot_product_attention",
    "aten::_scaled_dot_product_flash_attention",
    "aten::_scaled_dot_product_flash_attention_for_cpu",
    "aten::_scaled_dot_product_efficient_attention",
    "aten::_scaled_dot_product_cudnn_attention",
}
_CONV_OPS = {"aten::conv1d", "aten::conv2d", "aten::conv3d", "aten::convolution", "aten::_convolution"}


def op_flops(event) -> float:
    """FLOPs of one op event (matmul, convolution and attention only): the profiler's estimate where it has one,
    else convolution and attention from the recorded shapes and arguments (see FLOPS_SOURCE); 0 if unknown."""
    name = event.name
    if category(name) not in FLOP_CATEGORIES:
        return 0.0
    if event.flops:
        return float(event.flops)
    shapes = event.input_shapes or []
    try:
        if name in _ATTENTION_OPS:  # query, key, value: (..., L, D)
            q, k, v = shapes[0], shapes[1], shapes[2]
            return 2.0 * math.prod(q[:-2]) * q[-2] * k[-2] * (q[-1] + v[-1])
        if name in _CONV_OPS:  # input, weight, bias, stride, padding, dilation[, transposed, ...]
            x, w = shapes[0], shapes[1]
            stride, padding, dilation, *rest = (_literal(v) for v in event.concrete_inputs[3:7])
            if rest and rest[0] is True:  # transposed: another formula, not used by SVD
                return 0.0
            out = [
                (size + 2 * p - d * (k - 1) - 1) // s + 1
                for size, k, s, p, d in zip(x[2:], w[2:], stride, padding, dilation, strict=True)
            ]
            return 2.0 * x[0] * math.prod(out) * math.prod(w)
    except (IndexError, TypeError, ValueError, SyntaxError):  # shapes not recorded, or padding="same"
        return 0.0
    return 0.0


# ---------------------------------------------------------------------------------------------- analysis


def _union(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, -math.inf
    for a, b in sorted(intervals):
        if b > end:
            total += b - max(a, end)
            end = b
    return total


def _clip(intervals: list[tuple[float, float]], lo: float, hi: float) -> list[tuple[float, float]]:
    return [(max(a, lo), min(b, hi)) for a, b in intervals if b > lo and a < hi]


def analyze(events, cuda: bool, top: int = 15) -> Profile:
    """A Profile from the profiler's events of one call marked by `_instrument` (seconds throughout)."""
    cpu = [e for e in events if e.device_type == DeviceType.CPU and not e.is_async]
    calls = [e for e in cpu if e.name == CALL]
    if not calls:
        raise Untraceable("the profiler recorded no events of the call")
    call = calls[0]
    kernels: dict[int, list[tuple[float, float]]] = {}
    device = [e for e in events if e.device_type != DeviceType.CPU]
    for e in device:
        kernels.setdefault(e.linked_correlation_id, []).append((e.time_range.start, e.time_range.end))

    us = 1e-6
    wall = {CONDITIONING: 0.0, DECODE: 0.0}
    steps: list[float] = []
    windows: dict[Any, list[tuple[float, float]]] = {}  # phase key -> kernel intervals (GPU)
    unet_s, unet_calls, blocks = 0.0, 0, dict.fromkeys(BLOCK_KINDS, 0.0)
    decoder_s, parts = 0.0, dict.fromkeys(DECODER_PARTS, 0.0)
    cats = dict.fromkeys(CATEGORIES, 0.0)
    flops, flop_time = dict.fromkeys(FLOP_CATEGORIES, 0.0), dict.fromkeys(FLOP_CATEGORIES, 0.0)
    ops: dict[str, list] = {}  # name -> [seconds, calls]
    attributed: set[int] = set()

    # Depth first from the call; the context is (phase key, UNet kind, decoder part, inside a FLOP-counted op).
    stack: list[tuple[Any, tuple]] = [(call, (None, None, None, False))]
    while stack:
        event, (phase, kind, part, counted) = stack.pop()
        name = event.name
        seconds = event.time_range.elapsed_us() * us
        if name.startswith(PREFIX):
            if name == CONDITIONING or name == DECODE:
                phase = name
                wall[name] += seconds
            elif name == STEP:
                phase = ("step", len(steps))
                steps.append(seconds)
            elif name == UNET:
                unet_calls += 1
                kind = "rest"
                unet_s += 0.0 if cuda else seconds
            elif name == DECODER:
                part = "spatial"
                decoder_s += 0.0 if cuda else seconds
            elif name.startswith(f"{UNET}/"):
                kind = name.rsplit("/", 1)[-1]
                blocks[kind] += 0.0 if cuda else seconds
            elif name.startswith(f"{DECODER}/"):
                part = name.rsplit("/", 1)[-1]
                parts[part] += 0.0 if cuda else seconds
        elif not event.linked_correlation_id:  # an op (not a CUDA runtime call such as cudaLaunchKernel)
            own = (event.self_device_time_total if cuda else event.self_cpu_time_total) * us
            cat = category(name)
            cats[cat] += own
            entry = ops.setdefault(name, [0.0, 0, cat])
            entry[0] += own
            entry[1] += 1
            if cuda:
                attributed.add(event.id)
                windows.setdefault(phase, []).extend(kernels.get(event.id, []))
                if kind is not None:
                    unet_s += own
                    blocks[kind] += own
                if part is not None:
                    decoder_s += own
                    parts[part] += own
            amount = 0.0 if counted else op_flops(event)
            if amount:
                counted = True
                flops[category(name)] += amount
                flop_time[category(name)] += (event.device_time_total if cuda else event.cpu_time_total) * us
        stack.extend((child, (phase, kind, part, counted)) for child in reversed(event.cpu_children))

    call_s = call.time_range.elapsed_us() * us
    busy = idle = None
    steps_busy = None
    if cuda:
        # Kernels no op of the call launched (CUDA graph replays): by kernel name, so that nothing is lost.
        for e in device:
            if e.linked_correlation_id not in attributed and call.time_range.start <= e.time_range.start:
                own = (e.time_range.end - e.time_range.start) * us
                cats[category(e.name)] += own
                entry = ops.setdefault(e.name, [0.0, 0, category(e.name)])
                entry[0] += own
                entry[1] += 1
        everything = [(e.time_range.start, e.time_range.end) for e in device]

        def window(key: Any) -> tuple[float, float] | None:
            spans = windows.get(key)
            return (min(a for a, _ in spans), max(b for _, b in spans)) if spans else None

        step_windows = [window(("step", i)) for i in range(len(steps))]
        steps = [(w[1] - w[0]) * us if w else 0.0 for w in step_windows]
        steps_busy = [_union(_clip(everything, *w)) * us if w else 0.0 for w in step_windows]
        busy = sum(steps_busy)
        idle = sum(steps) - busy
        for key in (CONDITIONING, DECODE):
            w = window(key)
            wall[key] = (w[1] - w[0]) * us if w else 0.0
    else:
        blocks["rest"] = unet_s - sum(v for k, v in blocks.items() if k != "rest")
        parts["spatial"] = decoder_s - parts["temporal"]

    denoising = sum(steps)
    phases = {"conditioning": wall[CONDITIONING], "denoising": denoising, "decode": wall[DECODE]}
    phases["other"] = call_s - sum(phases.values())
    ranked = sorted(ops.items(), key=lambda item: -item[1][0])[:top]
    return Profile(
        time_basis="cuda kernels" if cuda else "cpu wall",
        call_s=call_s,
        phases_s=phases,
        steps_s=steps,
        unet_s=unet_s,
        unet_calls=unet_calls,
        blocks_s=blocks,
        vae_decoder_s=decoder_s,
        vae_decoder_parts_s=parts,
        categories_s=cats,
        outside_ops_s=None if cuda else call_s - sum(cats.values()),
        flops=flops,
        tflops_per_s={k: flops[k] / flop_time[k] / 1e12 for k in FLOP_CATEGORIES if flops[k] and flop_time[k]},
        flops_coverage={k: min(1.0, flop_time[k] / cats[k]) for k in FLOP_CATEGORIES if cats[k]},
        flops_source=FLOPS_SOURCE,
        top_ops=[
            OpTime(name=name, category=cat, seconds=s, share=s / call_s if call_s else 0.0, calls=n)
            for name, (s, n, cat) in ranked
        ],
        device_busy_s=busy,
        device_idle_s=idle,
        steps_busy_s=steps_busy,
    )


# ---------------------------------------------------------------------------------------------- the call


def trace_name(trace: bytes) -> str:
    """trace.json.gz for a gzip-compressed trace, else trace.json."""
    return "trace.json.gz" if trace[:2] == b"\x1f\x8b" else "trace.json"


def profile_call(
    pipe, call: Callable[[], Any], device: torch.device, cfg: ProfileConfig, notes: list[str]
) -> tuple[Profile | None, bytes | None]:
    """Run `call()` once more under the profiler: (the profile, the Chrome trace's bytes, gzip-compressed when
    cfg.gzip). A call that cannot be profiled adds a note to `notes` and returns (None, None): the measurement
    is complete without it."""
    try:
        return _profile(pipe, call, device, cfg)
    except Exception as exc:  # KeyboardInterrupt still stops the run
        why = str(exc) if isinstance(exc, Untraceable) else f"{type(exc).__name__}: {exc}"
        log.warning("Profile not taken: %s", why)
        notes.append(f"Profile not taken: {why}. The measured figures above are complete without it.")
        return None, None


def _profile(pipe, call: Callable[[], Any], device: torch.device, cfg: ProfileConfig) -> tuple[Profile, bytes]:
    if torch.autograd._profiler_enabled():
        raise Untraceable(
            "a profiler is already running in this process (torch.profiler or an outer tool around svdbench); a "
            "second one would take its events away. Profile outside it, or turn profile.enabled off there"
        )
    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]
    ranges = _Ranges()
    notes: list[str] = []
    undo = _instrument(pipe, ranges, notes)
    try:
        if cuda:
            torch.cuda.synchronize(device)
        with profile(activities=activities, record_shapes=cfg.shapes, with_flops=cfg.shapes) as prof:
            ranges.enter(CALL)
            try:
                call()
                if cuda:
                    torch.cuda.synchronize(device)
            finally:
                ranges.close_all()
    finally:
        undo()
    result = analyze(prof.events(), cuda, cfg.top_ops)
    result.notes = notes
    if not cfg.shapes:
        result.notes.append("profile.shapes=false: no shapes were recorded, so no FLOPs or TFLOP/s.")
    if cuda:
        result.notes.append(
            "GPU: blocks, parts and categories are kernel time; phases and steps are device windows; a CUDA graph's "
            "kernels are counted by kernel name under their category, outside the block kinds."
        )
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "trace.json")
        prof.export_chrome_trace(path)
        raw = Path(path).read_bytes()
    trace = gzip.compress(raw, compresslevel=6) if cfg.gzip else raw
    result.trace_events = len(prof.events())
    result.trace_json_bytes, result.trace_bytes = len(raw), len(trace)
    log.info(
        "profiled call: %.3f s; trace %.1f MiB (%.1f MiB as JSON)", result.call_s, len(trace) / 2**20, len(raw) / 2**20
    )
    return result, trace


# ---------------------------------------------------------------------------------------------- pictures

_COLOURS = {
    "spatial_resnet": "#4c72b0",
    "temporal_resnet": "#55a868",
    "spatial_attention": "#c44e52",
    "temporal_attention": "#8172b2",
    "time_mixing": "#ccb974",
    "rest": "#bbbbbb",
    "spatial": "#4c72b0",
    "temporal": "#55a868",
    "matmul": "#c44e52",
    "convolution": "#4c72b0",
    "attention": "#8172b2",
    "normalization": "#ccb974",
    "elementwise": "#64b5cd",
    "copy_cast": "#dd8452",
    "other": "#bbbbbb",
    "outside ops": "#eeeeee",
}


def _panels(profile: Profile) -> list[tuple[str, dict[str, float]]]:
    per_call = max(profile.unet_calls, 1) * 1e-3
    categories = dict(profile.categories_s)
    if profile.outside_ops_s is not None:
        categories["outside ops"] = max(profile.outside_ops_s, 0.0)
    return [
        ("UNet, ms per UNet call, by block kind", {k: v / per_call for k, v in profile.blocks_s.items()}),
        ("VAE decoder, ms per pipeline call, by part", {k: v * 1e3 for k, v in profile.vae_decoder_parts_s.items()}),
        ("Profiled call, s, by operator category", categories),
    ]


def save_profile_comparison(profiles: list[tuple[str, Profile]], path: Path) -> Path | None:
    """Stacked bars of the block kinds, decoder parts and operator categories, one bar per (label, profile) in
    each panel, for comparing runs (a sweep's jobs); None when there is nothing to draw."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not profiles:
        return None
    rows = len(profiles)
    figure = Figure(figsize=(10, 3 + 1.6 * rows), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(3, 1)
    labels = [label or one.time_basis for label, one in profiles]
    for index, axis in enumerate(axes):
        title = ""
        seen: set[str] = set()
        for row, (_, one) in enumerate(profiles):
            title, values = _panels(one)[index]
            total = sum(max(v, 0.0) for v in values.values())
            left = 0.0
            for key, value in values.items():
                value = max(value, 0.0)
                if value <= 0:
                    continue
                colour = _COLOURS.get(key, "#999999")
                axis.barh(row, value, left=left, color=colour, edgecolor="white", label=None if key in seen else key)
                seen.add(key)
                if total and value / total >= 0.08:
                    axis.text(
                        left + value / 2, row, f"{100 * value / total:.0f}%", ha="center", va="center", fontsize=8
                    )
                left += value
        axis.set_yticks(range(rows), labels)
        axis.invert_yaxis()
        axis.set_title(title, fontsize=10, loc="left")
        axis.grid(axis="x", alpha=0.3)
        axis.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)
    path = Path(path)
    figure.savefig(path)
    return path


def save_profile_png(profile: Profile, path: Path, label: str = "") -> Path:
    """profile.png of one run: the comparison's bars for that run alone."""
    saved = save_profile_comparison([(label or f"this run ({profile.time_basis})", profile)], path)
    assert saved is not None
    return saved
