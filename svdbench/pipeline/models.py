"""Build a StableVideoDiffusionPipeline from one of three weight sources, through one code path.

- pretrained: a local diffusers directory (`model.path`) or the Hugging Face cache (`model.repo_id`).
- random: the exact published architecture (packaged component configs), seeded random weights.
- tiny: the same classes at toy sizes; it is simply `random` with the `tiny` component configs.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import torch
from torch import nn

from svdbench.pipeline import use_pil_clip_processor
from svdbench.settings.config import ModelConfig

log = logging.getLogger(__name__)

# The run's dtype names (config) and the torch dtypes they stand for.
TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

# (component, config file, weight-file stem) of a diffusers StableVideoDiffusionPipeline directory.
COMPONENTS = (
    ("unet", "unet/config.json", "diffusion_pytorch_model"),
    ("vae", "vae/config.json", "diffusion_pytorch_model"),
    ("image_encoder", "image_encoder/config.json", "model"),
    ("scheduler", "scheduler/scheduler_config.json", None),
    ("feature_extractor", "feature_extractor/preprocessor_config.json", None),
)


class WeightsNotFound(RuntimeError):
    """Pretrained weights are not on this machine (or are incomplete)."""


def architecture_dir(name: str) -> Path:
    return Path(str(resources.files("svdbench") / "architectures" / name))


def _read(directory: Path, relative: str) -> dict:
    return json.loads((directory / relative).read_text())


def build_components(architecture: str, dtype: torch.dtype, device: torch.device | str, seed: int | None = None):
    """The five components of the architecture (packaged configs), as StableVideoDiffusionPipeline takes them.

    One way to build them, for every weight source that is not a checkpoint: on the meta device (`device`
    "meta") they are weightless (shapes and dtypes only: the planner and the FLOP counter); on any other device
    the meta parameters are materialized there with seeded random weights, so that a 1.5 B-parameter UNet
    costs one pass of the default initializers there rather than a CPU init and a copy.
    """
    use_pil_clip_processor()
    from diffusers import AutoencoderKLTemporalDecoder, EulerDiscreteScheduler, UNetSpatioTemporalConditionModel
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    directory = architecture_dir(architecture)
    device = torch.device(device)
    # The published encoder config says float16; the run's dtype is applied regardless.
    encoder_config = CLIPVisionConfig(**_read(directory, "image_encoder/config.json"))
    factories: dict[str, Callable[[], nn.Module]] = {
        "unet": lambda: UNetSpatioTemporalConditionModel.from_config(_read(directory, "unet/config.json")),
        "vae": lambda: AutoencoderKLTemporalDecoder.from_config(_read(directory, "vae/config.json")),
        "image_encoder": lambda: CLIPVisionModelWithProjection(encoder_config),
    }
    if device.type == "meta":
        models = {
            name: nn.Module.to(meta_module(factory), device="meta", dtype=dtype).eval().requires_grad_(False)
            for name, factory in factories.items()
        }
    else:
        cuda_devices = (
            [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
        )
        with torch.random.fork_rng(devices=cuda_devices):
            torch.manual_seed(0 if seed is None else seed)
            models = {name: materialize(meta_module(factory), device, dtype) for name, factory in factories.items()}
    return dict(
        **models,
        scheduler=EulerDiscreteScheduler.from_config(_read(directory, "scheduler/scheduler_config.json")),
        feature_extractor=CLIPImageProcessor(**_read(directory, "feature_extractor/preprocessor_config.json")),
    )


def build_random_pipeline(architecture: str, dtype: torch.dtype, device: torch.device | str, seed: int):
    """The architecture with seeded random weights, built directly on `device` (`build_components`)."""
    use_pil_clip_processor()
    from diffusers import StableVideoDiffusionPipeline

    return StableVideoDiffusionPipeline(**build_components(architecture, dtype, device, seed))


def meta_module(factory) -> nn.Module:
    """Instantiate a module with parameters on the meta device (no memory, no init) and real buffers."""
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        return factory()


def materialize(module: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """Give meta parameters real storage on `device` in `dtype`, each filled once with seeded random values.

    Every tensor is created in the target dtype on the target device and written once: no init in float32
    that is then cast, no CPU init that is then copied. The values follow the scale of PyTorch's default
    init, as uniform draws: Linear and Conv weights and biases U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (what
    kaiming_uniform_(a=sqrt(5)) draws), norms' weights 1 and biases 0, Embeddings variance 1, anything else
    (CLIP's class embedding, learned mixing factors) standard deviation 0.02. The seed comes from the global
    RNG, which the caller seeds (weights_seed): the same seed gives the same weights. On a CPU each tensor has
    its own numpy SFC64 bit generator, seeded from that seed and the tensor's index (23 random bits per value),
    so threads may fill tensors in parallel and the result stays the same; on other devices one torch
    generator on the device fills them in order.
    """
    device = torch.device(device)
    base = int(torch.randint(0, 2**62, (1,)).item())  # from the caller's seeded global RNG
    fills: list[tuple[int, torch.Tensor, float]] = []
    owned = [(sub, name, param) for sub in module.modules() for name, param in sub.named_parameters(recurse=False)]
    with torch.no_grad():
        for index, (sub, name, param) in enumerate(owned):
            if not param.is_meta:
                tensor = param.detach().to(device=device, dtype=dtype)
                sub._parameters[name] = nn.Parameter(tensor, requires_grad=False)
                continue
            tensor = torch.empty(param.shape, device=device, dtype=dtype)
            sub._parameters[name] = nn.Parameter(tensor, requires_grad=False)
            bound, constant = _init_scale(sub, name, param)
            if constant is not None:
                tensor.fill_(constant)
            else:
                fills.append((index, tensor, bound))
        if device.type == "cpu":
            _fill_on_cpu(fills, base)
        else:
            generator = torch.Generator(device).manual_seed(base)
            for _, tensor, bound in fills:
                tensor.uniform_(-bound, bound, generator=generator)
    # nn.Module.to, not diffusers' override, which warns about fp32-pinned modules that random weights lack.
    # The parameters are in place already; this moves the (real) buffers.
    return nn.Module.to(module, device=device, dtype=dtype).eval().requires_grad_(False)


NORMS = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase)


def _init_scale(owner: nn.Module, name: str, param: torch.Tensor) -> tuple[float, float | None]:
    """(bound of the uniform draw, None) for a random parameter, or (0, the constant) for a norm's."""
    if isinstance(owner, NORMS) or type(owner).__name__ == "RMSNorm":
        return 0.0, 1.0 if name == "weight" else 0.0
    if isinstance(owner, (nn.Linear, nn.modules.conv._ConvNd)):
        weight = owner.weight
        fan_in = weight.shape[1] * math.prod(weight.shape[2:]) if weight.dim() > 1 else weight.shape[0]
        return (1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0), None
    if isinstance(owner, nn.Embedding):
        return math.sqrt(3.0), None  # variance 1, as nn.Embedding's N(0, 1)
    return 0.02 * math.sqrt(3.0), None  # standard deviation 0.02


FILL_CHUNK = 1 << 18  # elements per draw: 1 MiB of float32, scaled while it is still in cache


def _fill_on_cpu(fills: list[tuple[int, torch.Tensor, float]], base: int) -> None:
    """U(-bound, bound) into each tensor from its own generator (numpy's SFC64 raw bits, several times faster
    than torch's CPU generator), the largest tensors first, on as many threads as torch uses."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    def fill(item: tuple[int, torch.Tensor, float]) -> None:
        index, tensor, bound = item
        bits = np.random.SFC64(np.random.SeedSequence([base, index]))
        flat = tensor.view(-1)
        direct = tensor.dtype == torch.float32
        scratch = np.empty(min(FILL_CHUNK, flat.numel()), dtype=np.uint32)
        for start in range(0, flat.numel(), FILL_CHUNK):
            part = flat[start : start + FILL_CHUNK]
            n = part.numel()
            words = part.numpy().view(np.uint32) if direct else scratch[:n]
            # 23 random mantissa bits under the exponent of 1.0: uniform in [1, 2), then scaled to [-bound, bound)
            np.right_shift(bits.random_raw((n + 1) // 2).view(np.uint32)[:n], 9, out=words)
            np.bitwise_or(words, 0x3F800000, out=words)
            drawn = words.view(np.float32)
            np.multiply(drawn, 2 * bound, out=drawn)  # numpy's ufuncs: no thread pool of their own
            np.subtract(drawn, 3 * bound, out=drawn)
            if not direct:
                part.copy_(torch.from_numpy(drawn))

    ordered = sorted(fills, key=lambda item: -item[1].numel())
    with ThreadPoolExecutor(max_workers=max(1, torch.get_num_threads())) as pool:
        list(pool.map(fill, ordered))


def dtype_name(dtype: torch.dtype) -> str:
    """The config's name of a torch dtype: torch.float16 -> "fp16"."""
    return {v: k for k, v in TORCH_DTYPES.items()}[dtype]


def unwrap(module: nn.Module) -> nn.Module:
    """The module under a torch.compile wrapper (the module itself when it is not compiled)."""
    return getattr(module, "_orig_mod", module)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def missing_components(directory: Path) -> list[str]:
    """Files a diffusers SVD directory lacks, named so that a user can see what to fetch."""
    missing = []
    if not (directory / "model_index.json").is_file():
        missing.append("model_index.json")
    for component, config, stem in COMPONENTS:
        if not (directory / config).is_file():
            missing.append(config)
        if (
            stem
            and not any((directory / component).glob(f"{stem}*.safetensors"))
            and not any((directory / component).glob(f"{stem}*.bin"))
        ):
            missing.append(f"{component}/{stem}[.fp16].safetensors")
    return missing


def broken_components(directory: Path) -> list[str]:
    """Component files that exist but cannot be read: config JSON that does not parse, safetensors whose
    header is damaged. Cheap (no weights are loaded), and names the culprit where from_pretrained would
    fail deep inside diffusers or transformers."""
    from safetensors import safe_open

    broken = []
    for _, config, _ in COMPONENTS:
        try:
            json.loads((directory / config).read_text())
        except (OSError, ValueError) as exc:
            broken.append(f"{config} ({type(exc).__name__})")
    for path in sorted(directory.glob("*/*.safetensors")):
        try:
            with safe_open(str(path), framework="pt") as handle:
                handle.keys()
        except Exception as exc:  # safetensors raises its own error types
            broken.append(f"{path.relative_to(directory)} ({type(exc).__name__}: {str(exc)[:80]})")
    return broken


def _how_to_get(model: ModelConfig) -> str:
    repo = model.repo_id or "<repo>"
    return (
        f"Ways forward: (1) download them where there is network, e.g. `hf download {repo} --local-dir "
        f"./{repo.split('/')[-1]}` (accept the licence on the model page first), and pass "
        f"model.path=./{repo.split('/')[-1]}; (2) let svdbench download into the Hugging Face cache with "
        f"model.download=true; (3) benchmark speed and memory without weights: model.weights=random."
    )


def resolve_pretrained_dir(model: ModelConfig) -> Path:
    """The local directory holding the checkpoint, or WeightsNotFound naming what is missing."""
    if model.path:
        directory = Path(model.path).expanduser()
        if not directory.is_dir():
            raise WeightsNotFound(
                f"model.path={model.path} is not a directory. It must be a diffusers directory holding "
                f"model_index.json and the unet, vae, image_encoder, scheduler and feature_extractor folders. "
                + _how_to_get(model)
            )
    else:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError

        assert model.repo_id is not None  # ModelConfig refuses weights=pretrained with neither path nor repo_id
        try:
            directory = Path(snapshot_download(model.repo_id, local_files_only=not model.download))
        except LocalEntryNotFoundError as exc:
            raise WeightsNotFound(
                f"The weights of {model.repo_id} are not in the Hugging Face cache and downloading is off "
                f"(model.download=false). " + _how_to_get(model)
            ) from exc
    missing = missing_components(directory)
    if missing:
        raise WeightsNotFound(
            f"The checkpoint at {directory} is incomplete: missing {', '.join(missing)}. " + _how_to_get(model)
        )
    broken = broken_components(directory)
    if broken:
        raise WeightsNotFound(
            f"The checkpoint at {directory} has damaged files: {', '.join(broken)}. Download those components "
            "again. " + _how_to_get(model)
        )
    return directory


def load_pretrained_pipeline(model: ModelConfig, dtype: torch.dtype):
    directory = resolve_pretrained_dir(model)  # first: missing weights are said before diffusers' seconds of imports
    use_pil_clip_processor()
    from diffusers import StableVideoDiffusionPipeline

    variant = model.variant
    if variant and not any(directory.glob(f"unet/*.{variant}.*")):
        log.info("No %s weight files in %s; loading the default ones.", variant, directory)
        variant = None
    try:
        return StableVideoDiffusionPipeline.from_pretrained(
            directory, torch_dtype=dtype, variant=variant, local_files_only=True
        )
    except (OSError, ValueError) as exc:
        raise WeightsNotFound(
            f"Loading the checkpoint at {directory} failed ({type(exc).__name__}: {exc}). A component is "
            "broken or of the wrong kind. " + _how_to_get(model)
        ) from exc


def build_pipeline(model: ModelConfig, device: torch.device, dtype: torch.dtype, seed: int):
    """The pipeline on the CPU (pretrained) or on `device` (random), in `dtype`, ready for optimizations."""
    if model.weights == "pretrained":
        pipe = load_pretrained_pipeline(model, dtype)
    else:
        pipe = build_random_pipeline(model.architecture, dtype, device, seed)
    pipe.image_encoder.to(dtype)  # some checkpoints store the encoder in another dtype
    return pipe
