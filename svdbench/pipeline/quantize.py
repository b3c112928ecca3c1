"""`opt.quantize`: torchao quantization of a model's `nn.Linear` layers, and what a module holds afterwards.

torchao is imported only when a mode asks for it (it is slow to import and prints warnings about its CUDA
extensions on CPU builds of torch). Checked with torchao 0.18.0 and torch 2.13.0+cpu:

- `int8_weight_only` (`Int8WeightOnlyConfig`): weights stored in int8 with one scale per output row,
  dequantized in the matmul; activations stay in the run's dtype. Runs on the CPU and on CUDA.
- `int8_dynamic` (`Int8DynamicActivationInt8WeightConfig`): int8 weights, and each activation quantized to
  int8 per row at run time, so the matmul is int8 x int8 (`torch._int_mm` on CUDA). Runs on the CPU and CUDA.
- `float8_dynamic` (`Float8DynamicActivationFloat8WeightConfig`): float8 e4m3 weights and activations, for
  fp8 tensor cores; torchao refuses it below CUDA compute capability 8.9 (Ada, Hopper and later) and on CPUs.

All three replace each weight by a torchao tensor subclass (`Int8Tensor`, `Float8Tensor`); the layers stay
`nn.Linear`. Convolutions are not touched: torchao's configs quantize linear layers only.
"""

from __future__ import annotations

from collections import Counter

import torch

# opt.quantize -> torchao config class (torchao.quantization).
TORCHAO_CONFIGS = {
    "int8_weight_only": "Int8WeightOnlyConfig",
    "int8_dynamic": "Int8DynamicActivationInt8WeightConfig",
    "float8_dynamic": "Float8DynamicActivationFloat8WeightConfig",
}
# float8 matmuls (torch._scaled_mm) need fp8 tensor cores: Ada (8.9), Hopper (9.0) and later.
FLOAT8_MIN_CAPABILITY = (8, 9)


class QuantizeUnavailable(RuntimeError):
    """torchao is missing, or the mode cannot run on this device; the message says why and what to do."""


def torchao_version() -> str | None:
    """The installed torchao's version, or None where it cannot be imported."""
    try:
        import torchao  # type: ignore[import-untyped]
    except Exception:  # ImportError, or an extension that fails to load against this torch
        return None
    return str(getattr(torchao, "__version__", "unknown"))


def unavailable_reason(mode: str, device: torch.device) -> str | None:
    """Why `mode` cannot run here (torchao missing, no fp8 tensor cores), or None when it can."""
    if mode not in TORCHAO_CONFIGS:
        return f"unknown quantization mode {mode!r}; one of {', '.join(TORCHAO_CONFIGS)}"
    if mode == "float8_dynamic":
        if device.type != "cuda":
            return (
                f"float8_dynamic computes with fp8 tensor cores (CUDA compute capability "
                f"{'.'.join(map(str, FLOAT8_MIN_CAPABILITY))} or later: Ada, Hopper, Blackwell); device {device} "
                "has none, and torchao refuses it there. On this device use int8_weight_only or int8_dynamic"
            )
        capability = torch.cuda.get_device_capability(device)
        if capability < FLOAT8_MIN_CAPABILITY:
            return (
                f"float8_dynamic needs fp8 tensor cores (CUDA compute capability "
                f"{'.'.join(map(str, FLOAT8_MIN_CAPABILITY))} or later); {torch.cuda.get_device_name(device)} has "
                f"{capability[0]}.{capability[1]}. Use int8_weight_only or int8_dynamic on this GPU"
            )
    if torchao_version() is None:
        return 'it needs torchao, which cannot be imported here. Install it: pip install "torchao>=0.18"'
    return None


def torchao_config(mode: str, set_inductor_config: bool = False):
    """The torchao config object for `mode`.

    `set_inductor_config=True` lets torchao set its recommended torch._inductor options for quantized
    models (coordinate-descent tuning, fusing int8 matmuls with the scale multiplication) process-wide;
    svdbench asks for it only when the run compiles, where the options matter.
    """
    import torchao.quantization as tq  # type: ignore[import-untyped]

    return getattr(tq, TORCHAO_CONFIGS[mode])(set_inductor_config=set_inductor_config)


def quantize_linears(module: torch.nn.Module, mode: str, set_inductor_config: bool = False) -> int:
    """Quantize every `nn.Linear` of `module` in place with torchao; returns how many were quantized."""
    from torchao.quantization import quantize_

    try:
        quantize_(module, torchao_config(mode, set_inductor_config))
    except AssertionError as exc:  # torchao states device requirements as assertions
        raise QuantizeUnavailable(f"torchao refused opt.quantize={mode}: {exc}") from exc
    return sum(_is_quantized(m.weight) for m in module.modules() if isinstance(m, torch.nn.Linear))


def _is_quantized(weight) -> bool:
    return type(weight).__module__.split(".")[0] == "torchao"


def inspect_quantized(module: torch.nn.Module) -> dict | None:
    """How many of `module`'s linear layers hold a torchao weight, of which tensor type, and whether their
    activations are quantized too; None when none does. Read from the weights, no torchao import needed."""
    linears = [m for m in module.modules() if isinstance(m, torch.nn.Linear)]
    quantized = [m.weight for m in linears if _is_quantized(m.weight)]
    if not quantized:
        return None
    weight_dtypes = Counter(str(getattr(w, "qdata", w).dtype).removeprefix("torch.") for w in quantized)
    return {
        "linear_layers": len(linears),
        "quantized_layers": len(quantized),
        "weight_types": dict(Counter(type(w).__name__ for w in quantized)),
        "stored_dtypes": dict(weight_dtypes),
        "activations_quantized": sum(getattr(w, "act_quant_kwargs", None) is not None for w in quantized),
    }
