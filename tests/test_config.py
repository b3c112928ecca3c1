"""Config composition: every option of every group composes to the values it always had, overrides mean
what the guide means, every setting is defined once (schema, docs and --help agree), and invalid values
stop before any model is built, with one paragraph saying what is valid."""

from __future__ import annotations

import importlib.util
import itertools
import math
import subprocess
import sys
import time

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from svdbench.settings.arguments import check_command_line, job_problem, unknown_setting
from svdbench.settings.config import MAX_MEASURED_CALLS, ConfigError, lookup, settings, to_run_config
from svdbench.settings.hydra_api import VERSION_BASE

from .conftest import CONF_DIR, REPO, offline_env, run_cli, typed_config

GROUPS = sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir() and p.name != "hydra")

# Every value of the default run, as composed before the defaults moved into the schema (issue 12).
DEFAULTS = {
    "model.name": "tiny",
    "model.architecture": "tiny",
    "model.weights": "random",
    "model.repo_id": None,
    "model.path": None,
    "model.variant": None,
    "model.download": False,
    "model.dtype": "fp32",
    "model.num_frames": 8,
    "model.height": 128,
    "model.width": 128,
    "opt.name": "none",
    "opt.offload": "none",
    "opt.group_offload.offload_type": "leaf_level",
    "opt.group_offload.num_blocks_per_group": None,
    "opt.group_offload.use_stream": True,
    "opt.group_offload.record_stream": False,
    "opt.group_offload.low_cpu_mem_usage": False,
    "opt.forward_chunking": False,
    "opt.forward_chunk_size": 1,
    "opt.decode_chunk_size": None,
    "opt.storage_dtype": None,
    "opt.deepcache.enabled": False,
    "opt.deepcache.cache_interval": 3,
    "opt.deepcache.cache_branch_id": 0,
    "opt.compile.unet": False,
    "opt.compile.vae": False,
    "opt.compile.mode": "reduce-overhead",
    "opt.compile.fullgraph": True,
    "cond.name": "default",
    "cond.fps": 7,
    "cond.motion_bucket_id": 127,
    "cond.noise_aug_strength": 0.02,
    "input.path": None,
    "bench.warmup": 1,
    "bench.repeats": 3,
    "bench.min_seconds": 0.0,
    "bench.max_calls": 1000,
    "bench.target_rel_width": None,
    "bench.progress": True,
    "metrics.enabled": True,
    "metrics.paired_decode": True,
    "metrics.pictures": True,
    "sweep.isolate": True,
    "sweep.redo": False,
    "sweep.budget_s": None,
    "sweep.flicker_limit": None,
    # Added after the single-source redesign (the profile of issue 18): new keys, new defaults.
    "profile.enabled": False,
    "profile.top_ops": 15,
    "profile.shapes": True,
    "profile.gzip": True,
    # Added for energy, batches, machine state and prices (issue 14) and the fast modes and the gate (issue 16).
    "batch_size": 1,
    "bench.second_input": True,
    "energy.source": "auto",
    "cost.usd_per_hour": None,
    "cost.usd_per_kwh": None,
    "gate.min_psnr_db": 50.4,
    "opt.guidance_until_step": None,
    "quality.images": "0",
    "quality.seeds": 0,
    "opt.attention_backend": "auto",
    "opt.fuse_qkv": False,
    "opt.tf32": False,
    "opt.quantize": None,
    "opt.quantize_vae": False,
    "model.weights_seed": None,
    "logger.name": "wandb",
    "logger.project": "svdbench",
    "logger.entity": None,
    "logger.group": None,
    "logger.tags": [],
    "logger.notes": None,
    "logger.mode": "offline",
    "logger.init_timeout_s": 30.0,
    "height": 128,
    "width": 128,
    "num_frames": 8,
    "num_inference_steps": 25,
    "min_guidance_scale": 1.0,
    "max_guidance_scale": 3.0,
    "seed": 42,
    "device": "auto",
    "dtype": "auto",
    "save_frames": True,
    "parallel": "none",
}
_SVD = {"model.weights": "pretrained", "model.variant": "fp16", "model.dtype": "fp16", "height": 576, "width": 1024}
_SVD |= {"model.height": 576, "model.width": 1024}
# What each preset changed from DEFAULTS before issue 12 (composed from the old YAML files).
PRESETS: dict[str, dict[str, dict]] = {
    "model": {
        "tiny": {},
        "small": {"model.name": "small", "model.architecture": "small", "model.num_frames": 14, "num_frames": 14}
        | {"model.height": 256, "model.width": 256, "height": 256, "width": 256},
        "svd": _SVD
        | {"model.name": "svd", "model.architecture": "svd", "model.num_frames": 14, "num_frames": 14}
        | {"model.repo_id": "stabilityai/stable-video-diffusion-img2vid"},
        "xt": _SVD
        | {"model.name": "xt", "model.architecture": "svd_xt", "model.num_frames": 25, "num_frames": 25}
        | {"model.repo_id": "stabilityai/stable-video-diffusion-img2vid-xt"},
    },
    "opt": {
        "none": {},
        "chunking": {"opt.name": "chunking", "opt.forward_chunking": True},
        "compile": {"opt.name": "compile", "opt.compile.unet": True},
        "compile_default": {"opt.name": "compile_default", "opt.compile.unet": True, "opt.compile.mode": "default"},
        "compile_max_autotune": {"opt.name": "compile_max_autotune", "opt.compile.unet": True}
        | {"opt.compile.mode": "max-autotune"},
        "compile_vae": {"opt.name": "compile_vae", "opt.compile.unet": True, "opt.compile.vae": True},
        "deepcache": {"opt.name": "deepcache", "opt.deepcache.enabled": True},
        "fp8_storage": {"opt.name": "fp8_storage", "opt.storage_dtype": "fp8_e4m3"},
        "group_offload": {"opt.name": "group_offload", "opt.offload": "group"},
        "lowmem": {"opt.name": "lowmem", "opt.offload": "model", "opt.forward_chunking": True}
        | {"opt.decode_chunk_size": 2},
        "offload": {"opt.name": "offload", "opt.offload": "model"},
        "seq_offload": {"opt.name": "seq_offload", "opt.offload": "sequential"},
        "fast": {"opt.name": "fast", "opt.compile.unet": True, "opt.compile.vae": True, "opt.fuse_qkv": True}
        | {"opt.tf32": True},
        "fastest": {"opt.name": "fastest", "opt.deepcache.enabled": True, "opt.compile.vae": True}
        | {"opt.fuse_qkv": True, "opt.tf32": True, "opt.quantize": "float8_dynamic"},
        "int8": {"opt.name": "int8", "opt.quantize": "int8_dynamic"},
    },
    "cond": {
        "default": {},
        "high_motion": {"cond.name": "high_motion", "cond.motion_bucket_id": 180, "cond.noise_aug_strength": 0.1},
    },
    "logger": {"wandb": {}, "none": {"logger.name": "none"}},
    "input": {"default": {}},
}
# The experiments (sweeps): the model they choose unless model=... is given, what else they change in the
# job config, and what they sweep.
EXPERIMENTS = {
    "batch": ("tiny", {}, {"batch_size": "1,2,4,8"}),
    "decode_chunks": ("tiny", {}, {"opt.decode_chunk_size": "1,2,4,8,null"}),
    "guide": ("xt", {}, {"opt": "none,compile,lowmem", "cond": "default,high_motion"}),
    "steps_guidance": (
        "tiny",
        {},
        {"num_inference_steps": "25,10,4", "max_guidance_scale": "3.0,1.0", "opt.guidance_until_step": "null,4,1"},
    ),
    # sweep.flicker_limit was meant to be 0.05 (see conf/experiment/tradeoff.yaml), but conf/config.yaml restated
    # null after the experiment and won; with the defaults in the schema only, the experiment's value holds.
    "tradeoff": (
        "tiny",
        {"sweep.flicker_limit": 0.05},
        {
            "opt.forward_chunking": "choice(false, true)",
            "opt.decode_chunk_size": "choice(1, 2, 4, 8)",
            "dtype": "choice(fp32, bf16)",
        },
    ),
}


def flat(data: dict, prefix: str = "") -> dict:
    out: dict = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def quoted(text: str) -> str:
    return "".join("\\" + c if c in "()[].*+?$^|{}" else c for c in text)


@pytest.mark.parametrize(
    "override",
    [f"{group}={option.stem}" for group in GROUPS for option in sorted((CONF_DIR / group).glob("*.yaml"))],
)
def test_every_option_of_every_group_composes_and_validates(override):
    cfg = typed_config(override)
    group, option = override.split("=")
    if hasattr(getattr(cfg, group, None), "name"):
        assert getattr(cfg, group).name == option


@pytest.mark.slow  # 240 compositions; CI runs it with -m slow
def test_every_combination_of_presets_composes_to_the_values_it_had():
    """model x opt x cond x logger x input: every value, resolved, as before the defaults moved to the schema."""
    assert {g: sorted(o) for g, o in PRESETS.items()} == {
        g: sorted(p.stem for p in (CONF_DIR / g).glob("*.yaml")) for g in PRESETS
    }, "a preset was added or removed: add what it changes to PRESETS"
    combos = list(itertools.product(*[[(g, o) for o in PRESETS[g]] for g in PRESETS]))
    with initialize_config_dir(config_dir=str(CONF_DIR), **VERSION_BASE):
        for combo in combos:
            cfg = compose(config_name="config", overrides=[f"{g}={o}" for g, o in combo])
            expected = dict(DEFAULTS)
            for group, option in combo:
                expected.update(PRESETS[group][option])
            assert flat(OmegaConf.to_container(cfg, resolve=True)) == expected, combo
            to_run_config(cfg)  # and every one validates
    assert len(combos) == 4 * 15 * 2 * 2


@pytest.mark.parametrize("experiment", sorted(EXPERIMENTS))
@pytest.mark.parametrize("model", [None, *sorted(PRESETS["model"])])
def test_experiments_compose_to_their_sweeps(experiment, model):
    default_model, changes, params = EXPERIMENTS[experiment]
    overrides = [f"experiment={experiment}"] + ([f"model={model}"] if model else [])
    with initialize_config_dir(config_dir=str(CONF_DIR), **VERSION_BASE):
        cfg = compose(config_name="config", overrides=overrides)
        hydra_cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True).hydra
    expected = DEFAULTS | PRESETS["model"][model or default_model] | changes
    assert flat(OmegaConf.to_container(cfg, resolve=True)) == expected
    assert str(hydra_cfg.mode) == "RunMode.MULTIRUN"
    assert {k: str(v) for k, v in hydra_cfg.sweeper.params.items()} == params


def test_every_experiment_composes_with_every_model():
    """Including experiments this file does not know the values of (they must at least compose and validate)."""
    for experiment in sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml")):
        for model in PRESETS["model"]:
            typed_config(f"experiment={experiment}", f"model={model}")


@pytest.mark.parametrize("launcher", sorted(p.stem for p in (CONF_DIR / "hydra" / "launcher").glob("*.yaml")))
def test_every_launcher_composes(launcher):
    """Each launcher preset composes to a class Hydra can instantiate: a Launcher (svdbench's own under Hydra's
    basic name, submitit's for local and slurm)."""
    from hydra.plugins.launcher import Launcher
    from hydra.utils import get_class

    from svdbench.sweep.plugins import register_plugins

    register_plugins()  # makes hydra_plugins.svdbench importable, as python -m svdbench does
    from svdbench.sweep import ray as ray_launcher

    ray_launcher.register()  # and its Ray launcher, as the entry does
    with initialize_config_dir(config_dir=str(CONF_DIR), **VERSION_BASE):
        cfg = compose(config_name="config", overrides=[f"hydra/launcher={launcher}"], return_hydra_config=True)
    target = str(cfg.hydra.launcher._target_)
    expected = {
        "basic": "hydra_plugins.svdbench.SweepLauncher",
        "local": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher",
        "slurm": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher",
    }
    assert target == expected.get(launcher, target)
    assert issubclass(get_class(target), Launcher), target


def test_groups_cover_the_documented_options():
    options = {group: {p.stem for p in (CONF_DIR / group).glob("*.yaml")} for group in GROUPS}
    assert {"tiny", "svd", "xt"} <= options["model"]
    assert {"none", "offload", "compile", "chunking", "lowmem"} <= options["opt"]
    assert {"default", "high_motion"} <= options["cond"]


def test_defaults():
    cfg = typed_config()
    assert (cfg.model.name, cfg.opt.name, cfg.cond.name) == ("tiny", "none", "default")
    assert cfg.num_inference_steps == 25 and cfg.seed == 42 and cfg.device == "auto"
    assert (cfg.min_guidance_scale, cfg.max_guidance_scale) == (1.0, 3.0)
    assert (cfg.cond.fps, cfg.cond.motion_bucket_id, cfg.cond.noise_aug_strength) == (7, 127, 0.02)
    assert cfg.opt.decode_chunk_size is None  # all frames in one chunk
    assert cfg.input.path is None  # the embedded test card


def test_model_presets_carry_their_native_shape():
    svd, xt = typed_config("model=svd"), typed_config("model=xt")
    assert (svd.num_frames, svd.height, svd.width) == (14, 576, 1024)
    assert (xt.num_frames, xt.height, xt.width) == (25, 576, 1024)
    assert xt.model.repo_id == "stabilityai/stable-video-diffusion-img2vid-xt"
    assert svd.model.repo_id == "stabilityai/stable-video-diffusion-img2vid"
    assert xt.model.weights == "pretrained" and xt.model.variant == "fp16"


def test_optimization_modes_match_the_guide():
    assert typed_config("opt=offload").opt.offload == "model"
    compiled = typed_config("opt=compile").opt.compile
    assert compiled.unet and compiled.mode == "reduce-overhead" and compiled.fullgraph
    assert typed_config("opt=chunking").opt.forward_chunking
    lowmem = typed_config("opt=lowmem").opt
    assert lowmem.offload == "model" and lowmem.forward_chunking and lowmem.decode_chunk_size == 2


def test_command_line_overrides():
    cfg = typed_config(
        "model=xt",
        "opt=compile",
        "cond=high_motion",
        "opt.decode_chunk_size=2",
        "cond.motion_bucket_id=200",
        "seed=7",
        "height=320",
        "width=512",
        "num_inference_steps=10",
        "opt.compile.mode=max-autotune",
    )
    assert cfg.cond.noise_aug_strength == 0.1 and cfg.cond.motion_bucket_id == 200
    assert cfg.opt.decode_chunk_size == 2 and cfg.opt.compile.mode == "max-autotune"
    assert (cfg.seed, cfg.height, cfg.width, cfg.num_inference_steps, cfg.num_frames) == (7, 320, 512, 10, 25)


# ---- one definition of every setting: the schema; presets change, docs and --help are generated -----------


def test_every_setting_has_a_help_line():
    missing = [info.key for info in settings(groups=True) if not info.help.strip()]
    assert not missing


def _preset_files() -> list:
    return [p for g in GROUPS if g != "experiment" for p in sorted((CONF_DIR / g).glob("*.yaml"))]


@pytest.mark.parametrize("path", _preset_files(), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_presets_set_only_what_they_change_each_with_a_comment(path):
    group = path.parent.name
    data = yaml.safe_load(path.read_text()) or {}
    for key, value in flat(data).items():
        info = lookup(f"{group}.{key}")
        assert info is not None, f"{path}: {key} is not a setting"
        assert value != info.default, f"{path}: {key}={value} restates the schema's default"
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped and not stripped.startswith("#") and not stripped.endswith(":"):  # a key with its value
            assert lines[i - 1].strip().startswith("#"), f"{path}:{i + 1}: {stripped} has no comment saying why"


def _config_docs():
    spec = importlib.util.spec_from_file_location("config_docs", REPO / "scripts" / "config_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docs_and_help_are_generated_from_the_schema(tmp_path, monkeypatch, capsys):
    docs = _config_docs()
    assert docs.main(["--check"]) == 0, (
        "docs/config.md or conf/hydra/help/svdbench.yaml is stale: python scripts/config_docs.py"
    )
    text = (REPO / "docs" / "config.md").read_text()
    for info in settings():
        assert f"| `{info.key}` |" in text
    assert "| `cond.motion_bucket_id` | int | `127` | from 0 up to 255 |" in text
    assert "| `high_motion` |" in text and "`motion_bucket_id=180`" in text
    stale = tmp_path / "config.md"
    stale.write_text(text.replace("from 0 up to 255", "from 0 up to 999"))
    monkeypatch.setattr(docs, "DOCS", stale)
    assert docs.main(["--check"]) == 1
    assert "config.md is out of date" in capsys.readouterr().err
    # The help lives in Hydra's help group, selected by conf/config.yaml, not in config.yaml itself.
    help_yaml = REPO / "conf" / "hydra" / "help" / "svdbench.yaml"
    assert docs.HELP_YAML == help_yaml and "override hydra/help: svdbench" in (CONF_DIR / "config.yaml").read_text()
    assert "template:" not in (CONF_DIR / "config.yaml").read_text()
    stale_help = tmp_path / "svdbench.yaml"
    stale_help.write_text(help_yaml.read_text().replace("Amount of motion", "Amount of emotion"))
    monkeypatch.setattr(docs, "HELP_YAML", stale_help)
    assert docs.main(["--check"]) == 1
    assert "svdbench.yaml is out of date" in capsys.readouterr().err
    assert docs.main([]) == 0 and stale_help.read_text() == help_yaml.read_text()  # and written again


def test_the_check_script_runs_as_a_command():
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "config_docs.py"), "--check"],
        capture_output=True,
        text=True,
        env=offline_env(),
    )
    assert proc.returncode == 0, proc.stderr


# ---- invalid values: one paragraph naming the setting, the value and what is valid --------------------------


@pytest.mark.parametrize(
    "override, message",
    [
        ("num_inference_steps=-1", "num_inference_steps=-1 is invalid"),
        ("num_inference_steps=0", "at least 1 denoising step"),
        ("num_frames=0", "num_frames=0 is invalid"),
        ("height=500", "multiple of 64"),
        ("width=100000", "up to 4096"),
        ("cond.motion_bucket_id=300", "0..255"),
        ("cond.motion_bucket_id=-1", "0..255"),
        ("cond.fps=0", "cond.fps=0 is invalid"),
        ("cond.noise_aug_strength=-0.1", "must be 0 or more"),
        ("dtype=fp8", "choose one of auto, fp32, fp16, bf16"),
        ("model.dtype=half", "model.dtype='half' is not valid"),
        ("device=tpu", "use auto, cpu, cuda or cuda:N"),
        ("opt.decode_chunk_size=0", "at least one frame"),
        ("opt.compile.mode=fastest", "opt.compile.mode='fastest' is not valid"),
        ("bench.repeats=0", "at least one measured call"),
        ("max_guidance_scale=0.5", "1 <= min <= max"),
        ("model.weights=pretrained", "needs model.path"),
        ("model.weights=downloaded", "model.weights='downloaded' is not valid"),
        # A suggestion is always a valid value: the nearest multiple of 64 within the range.
        (
            "height=10000",
            "it must be a multiple of 64, from 64 up to 4096 (SVD's native size is 576x1024), for example height=4096.",
        ),
        ("width=10", "for example width=64."),
        (
            "seed=99999999999999999999",
            "seed=99999999999999999999 is invalid: it must be from 0 up to "
            "9223372036854775807 (torch.Generator.manual_seed takes 0 <= seed < 2**63",
        ),
        ("seed=-1", "seed=-1 is invalid"),
        ("bench.min_seconds=inf", "bench.min_seconds=inf is invalid: it must be a finite number, from 0 up to 86400"),
        ("bench.min_seconds=100000", "bench.min_seconds=100000 is invalid: it must be from 0 up to 86400"),
        ("bench.max_calls=0", "it must be from 1 up to 1000000 (at least one measured call is needed"),
        ("min_guidance_scale=nan", "min_guidance_scale=nan is invalid: it must be a finite number, at least 1"),
        ("model.path=/some/dir", "model.path=/some/dir is given, but model.weights=random"),
        ("num_frames=1", "num_frames=1 with max_guidance_scale=3.0 fails inside diffusers"),
        ("logger.init_timeout_s=0", "logger.init_timeout_s=0 is invalid: it must be more than 0"),
    ],
)
def test_invalid_values_are_rejected_with_a_clear_message(override, message):
    with pytest.raises(ConfigError, match=quoted(message)):
        typed_config(override)


def test_every_float_setting_refuses_non_finite_values():
    """One generic check from the schema, not one special case per setting."""
    floats = [info.key for info in settings() if info.base_type is float]
    assert {"cond.noise_aug_strength", "bench.min_seconds", "min_guidance_scale", "sweep.flicker_limit"} <= set(floats)
    for key in floats:
        for value in ("inf", "-inf", "nan"):
            with pytest.raises(ConfigError, match=quoted(f"{key}={value} is invalid: it must be a finite number")):
                typed_config(f"{key}={value}")


def test_every_range_in_the_schema_is_enforced_at_its_bounds():
    for info in settings():
        meta = info.meta
        low, high = meta["minimum"], meta["maximum"]
        step = meta["multiple_of"] or (1 if info.base_type is int else 0.5)
        if low is not None:
            assert info.problem(low) is None and info.problem(low - step) is not None, info.key
        if high is not None:
            assert info.problem(high) is None and info.problem(high + step) is not None, info.key
        if meta["above"] is not None:
            assert info.problem(meta["above"]) is not None and info.problem(meta["above"] + step) is None, info.key


def test_the_bounds_match_the_code_they_protect():
    assert typed_config().bench.max_calls == MAX_MEASURED_CALLS  # the runner's cap comes from the settings
    with pytest.raises(ConfigError, match="bench.max_calls=4"):
        typed_config("bench.repeats=5", "bench.max_calls=4")
    import torch

    torch.Generator().manual_seed(lookup("seed").meta["maximum"])
    assert math.isfinite(lookup("bench.min_seconds").meta["maximum"])


def test_one_frame_works_without_guidance_or_with_guidance_on_it():
    assert typed_config("num_frames=1", "max_guidance_scale=1").num_frames == 1
    assert typed_config("num_frames=1", "min_guidance_scale=2").min_guidance_scale == 2


def test_unknown_keys_added_with_plus_are_refused_by_the_schema_too():
    """Also where the command line was not checked (a sweep's job composed by Hydra)."""
    message = "cond.motionbucket=200: `cond.motionbucket` is not a setting of svdbench. Settings at `cond`"
    with pytest.raises(ConfigError, match=quoted(message)):
        typed_config("+cond.motionbucket=200")
    with pytest.raises(ConfigError, match=quoted("foo=bar: `foo` is not a setting of svdbench. Settings at the top")):
        typed_config("+foo=bar")


# ---- the command line, checked before Hydra starts ----------------------------------------------------------

OPTIONS = "small, svd, tiny, xt"


@pytest.mark.parametrize(
    "argv, start, contains",
    [
        (["model=null"], "model=null is not valid", f"Available options in 'model': {OPTIONS}"),
        (["experiment=null"], "experiment=null is not valid", "leave experiment=... out (or write ~experiment)"),
        (["model=xtt"], "model=xtt: `xtt` is not a preset of `model`", "Did you mean model=xt?"),
        (["+cond.motionbucket=200"], "+cond.motionbucket=200: `cond.motionbucket` is not a setting", "Did you mean"),
        (
            ["+foo=bar"],
            "+foo=bar: `foo` is not a setting of svdbench",
            "Settings at the top level: batch_size, bench, cond",
        ),
        (["cond.motion=3"], "cond.motion=3:", "Did you mean `cond.motion_bucket_id`?"),
        (
            ["bench.repeat=5"],
            "bench.repeat=5:",
            "Settings at `bench`: max_calls, min_seconds, progress, repeats, second_input, target_rel_width, warmup.",
        ),
        (["+experiment=guide"], "+experiment=guide:", "write experiment=guide"),
        (["+seed=3"], "+seed=3: `seed` is already a setting", "write seed=3"),
        (["opt=[none,chunking]"], "opt=[none,chunking] selects several opt presets", "-m opt=none,chunking"),
        (["-m", "opt=[none,chunking]"], "opt=[none,chunking] selects several", "-m opt=none,chunking"),
        (["opt=none,chunking"], "opt=none,chunking gives several values", "python -m svdbench -m opt=none,chunking"),
        (["logger.project=a,b"], "logger.project=a,b gives several values", "logger.project='a,b'"),
        (
            ["cond.motion_bucket_id=abc"],
            "cond.motion_bucket_id=abc is not valid",
            "takes an integer, from 0 up to 255. Amount of motion",
        ),
        (["num_inference_steps=many"], "num_inference_steps=many is not valid", "takes an integer, at least 1"),
        (["logger.tags=x"], "logger.tags=x is not valid", "a list of strings"),
        (["bench=3"], "bench=3 is not valid: `bench` is a group of settings", "bench.warmup=..."),
        (["bench={a:1}"], "bench={a:1}: `bench.a` is not a setting", "Settings at `bench`"),
        (["--cfg", "job", "height=10000"], "height=10000 is invalid", "for example height=4096."),
        (["-c", "job", "height=500"], "height=500 is invalid", "for example height=512."),
        (["--cfg", "all", "seed=99999999999999999999"], "seed=99999999999999999999 is invalid", "2**63"),
        (["cond.noise_aug_strength=inf"], "cond.noise_aug_strength=inf is invalid", "a finite number, 0 or more"),
        (["cond.noise_aug_strength=nan"], "cond.noise_aug_strength=nan is invalid", "a finite number"),
        (["min_guidance_scale=nan"], "min_guidance_scale=nan is invalid", "a finite number, at least 1"),
        (["bench.min_seconds=inf"], "bench.min_seconds=inf is invalid", "up to 86400"),
        (["model.path=./svd-xt"], "model.path=./svd-xt is given", "model.weights=pretrained to load it"),
        (["num_frames=1"], "num_frames=1 with max_guidance_scale=3.0", "max_guidance_scale=1"),
        (["height=${model.nope}"], "height=${model.nope} is invalid", "Interpolation key 'model.nope' not found"),
        (["foo"], "foo: this argument cannot be read", "key=value"),
        (["-m", "opt=none,chunkin"], "opt=none,chunkin: `chunkin` is not a preset of `opt`", "opt=chunking?"),
        (["-m", "opt=none,chunking", "height=10000"], "height=10000 is invalid", "for example height=4096."),
    ],
)
def test_the_command_line_is_checked_before_hydra_runs(argv, start, contains):
    message = check_command_line(argv)
    assert message is not None and message.startswith(start), message
    assert contains in message
    assert "\n" not in message and "Traceback" not in message  # one paragraph


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--help"],
        ["--hydra-help"],
        ["--info"],
        ["--cfg", "job"],
        ["experiment=guide"],  # a sweep (hydra.mode=MULTIRUN): its jobs are checked one by one
        ["experiment=guide", "opt=none,compile"],
        ["-m", "opt=none,chunking", "cond.motion_bucket_id=60,180"],
        ["-m", "height=128,100"],  # one bad job does not stop the others: job_problem refuses it
        ["hydra.run.dir=run", "hydra.mode=RUN", "opt=chunking", "hydra/launcher=local"],
        ["model=xt", "model.weights=random", "opt=compile"],
        ["++seed=3", "logger.tags=[a,b]", "height=${model.width}", "input.path=photo.png"],
        ["num_frames=1", "max_guidance_scale=1"],
    ],
)
def test_valid_command_lines_pass(argv):
    assert check_command_line(argv) is None


def test_a_sweeps_jobs_are_checked_one_by_one():
    assert job_problem(["height=128"]) is None
    assert job_problem(["experiment=guide", "opt=none", "cond=default", "model.weights=random"]) is None
    assert job_problem(["height=100"]).startswith("height=100 is invalid: it must be a multiple of 64")
    assert job_problem(["experiment=guide", "opt=lowmem", "cond=default"]) is None  # xt with its repo_id
    message = job_problem(["opt=nonee"])
    assert message.startswith("opt=nonee: `nonee` is not a preset of `opt`") and "Did you mean opt=none?" in message


def test_job_problem_leaves_a_running_hydra_as_it_was():
    """The sweep's launcher calls job_problem while Hydra is initialized: it must come back untouched."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.utils import JobRuntime

    with initialize_config_dir(config_dir=str(CONF_DIR), **VERSION_BASE, job_name="the_sweep"):
        running = GlobalHydra.instance()
        hydra_object = running.hydra
        assert job_problem(["cond.motion_bucket_id=300"]).startswith("cond.motion_bucket_id=300 is invalid")
        assert GlobalHydra.instance() is running and running.hydra is hydra_object
        assert JobRuntime.instance().get("name") == "the_sweep"
        assert compose(config_name="config", overrides=["opt=chunking"]).opt.name == "chunking"
    assert not GlobalHydra.instance().is_initialized()


def test_unknown_setting_names_the_alternatives():
    assert unknown_setting(["opt=chunking", "cond.fps=7", "hydra.run.dir=x", "+experiment=guide"]) is None
    message = unknown_setting(["seed=1", "opt.compile.mod=default"])
    assert message.startswith("opt.compile.mod=default: `opt.compile.mod` is not a setting of svdbench.")
    assert "Settings at `opt.compile`: fullgraph, mode, unet, vae. Did you mean `opt.compile.mode`?" in message
    assert unknown_setting(["seed.x=1"]).startswith("seed.x=1: `seed.x` is not a setting: `seed` is a value")
    assert unknown_setting(["~cond.fpss"]).startswith("~cond.fpss: `cond.fpss` is not a setting")


def test_checking_the_command_line_is_fast_and_imports_no_torch():
    code = (
        "import sys, time; t = time.perf_counter(); from svdbench.settings.arguments import check_command_line; "
        "problem = check_command_line(['opt=chunking', 'height=500']); "
        "print(time.perf_counter() - t, 'torch' in sys.modules, problem is not None)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=offline_env(), check=True)
    seconds, torch_imported, refused = out.stdout.split()
    assert (torch_imported, refused) == ("False", "True")
    assert float(seconds) < 5  # about 0.2 s on a 2-core CPU; torch alone would take longer than that


def test_invalid_value_on_the_command_line_fails_fast_without_traceback(tmp_path):
    start = time.monotonic()
    proc = run_cli(tmp_path, "hydra.run.dir=run", "height=500")
    elapsed = time.monotonic() - start
    assert proc.returncode == 2
    assert proc.stderr.strip().endswith(
        "error: height=500 is invalid: it must be a multiple of 64, from 64 up to 4096 (SVD's native size is "
        "576x1024), for example height=512."
    )
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "Building" not in proc.stderr + proc.stdout  # no model was built
    assert not (tmp_path / "run").exists()  # nothing written
    assert elapsed < 60


def test_the_readmes_options_table_lists_every_preset():
    """README.md's "Choosing what to run" table names every option of every group (conf/<group>/*.yaml)."""
    import re

    text = (REPO / "README.md").read_text()
    table = text[text.index("| group | options | what |") :].split("\n\n")[0]
    rows = {
        match.group(1): set(re.findall(r"`([\w-]+)`", match.group(2)))
        for match in re.finditer(r"^\| `(\w+)=` \| (.*?) \|", table, re.MULTILINE)
    }
    for group in ("model", "opt", "cond", "logger", "experiment"):
        presets = {p.stem for p in (CONF_DIR / group).glob("*.yaml")}
        assert presets - rows[group] == set(), f"README.md's options table lacks {group}={presets - rows[group]}"
