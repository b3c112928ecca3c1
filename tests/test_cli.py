"""`python -m svdbench` end to end, in subprocesses, as a user runs it."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from svdbench.media.video import read_video

from .conftest import FAST, offline_env, read_json, run_cli, run_tiny


def test_default_run_end_to_end(tmp_path):
    """No arguments: the tiny model, the embedded image, 25 steps, a video and a results.json."""
    # 25 steps and 3 measured calls: about 30 s on the quiet 2-core VM, 287 s with five other test runs beside it.
    proc = run_cli(tmp_path, "hydra.run.dir=outputs/run", timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = tmp_path / "outputs" / "run"
    config = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
    assert config["model"]["name"] == "tiny" and config["num_inference_steps"] == 25
    frames, fps = read_video(run_dir / "video.mp4")
    assert frames.shape == (8, 128, 128, 3)
    assert fps == 7
    assert frames.std() > 5  # a picture, not a flat colour
    exact = np.load(run_dir / "frames.npz")["frames"]
    assert exact.shape == frames.shape and exact.dtype == np.uint8
    assert np.abs(exact.astype(int) - frames.astype(int)).mean() < 8  # the mp4 is lossy, but the same video
    result = read_json(run_dir / "results.json")
    assert result["status"] == "ok"
    assert result["latency"]["stats"]["n"] == 3 and result["latency"]["stats"]["median"] > 0
    assert result["throughput"]["frames_per_s"] > 0
    assert result["memory"]["host_peak_gib"] > result["memory"]["host_before_gib"] > 0
    assert "random weights" in " ".join(result["notes"]).lower()
    assert "measured 3/3" in proc.stderr  # progress was shown
    # No library warnings on a default run: the CLIP processor needs no torchvision (svdbench/pipeline/__init__.py),
    # and version_base is what the installed Hydra wants (svdbench/settings/hydra_api.py).
    for noise in ("torchvision", "MigrationWarning", "version_base", "deprecated", "UserWarning"):
        assert noise not in proc.stderr, noise
    assert proc.stdout == ""  # the log goes to stderr (conf/hydra/job_logging/svdbench.yaml) ...
    assert "measured call 1:" in (run_dir / "__main__.log").read_text()  # ... and to the run's log file


def test_offload_on_cpu_is_recorded_as_unsupported(tmp_path):
    proc = run_cli(tmp_path, "hydra.run.dir=run", "opt=offload", "device=cpu", *FAST)
    assert proc.returncode == 1
    result = read_json(tmp_path / "run" / "results.json")
    assert result["status"] == "unsupported"
    assert "opt=offload is unsupported on device cpu" in result["reason"]
    assert "Traceback" not in proc.stderr


def test_cuda_device_without_cuda_is_unsupported(tmp_path):
    proc = run_cli(tmp_path, "hydra.run.dir=run", "device=cuda", *FAST)
    result = read_json(tmp_path / "run" / "results.json")
    assert proc.returncode == 1 and result["status"] == "unsupported"
    assert "no usable CUDA device" in result["reason"]


@pytest.mark.slow  # a two-job sweep end to end; CI runs it with -m slow
def test_multirun_sweep(tmp_path):
    proc = run_cli(
        tmp_path,
        "-m",
        "hydra.sweep.dir=sweep",
        "opt=none,chunking",
        "cond.motion_bucket_id=60,180",
        *FAST,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [read_json(p) for p in sorted((tmp_path / "sweep").glob("*/results.json"))]
    assert len(results) == 4
    assert {r["status"] for r in results} == {"ok"}
    assert sorted((r["opt"], r["cond"]) for r in results) == sorted(
        [("none", "default"), ("none", "default"), ("chunking", "default"), ("chunking", "default")]
    )
    assert {r["applied"]["forward_chunking_blocks"] > 0 for r in results if r["opt"] == "chunking"} == {True}
    # The motion bucket reached the pipeline: different conditioning, different frames.
    videos = {}
    for path in sorted((tmp_path / "sweep").glob("*/video.mp4")):
        overrides = yaml.safe_load((path.parent / ".hydra" / "overrides.yaml").read_text())
        videos[tuple(sorted(o for o in overrides if o.startswith(("opt=", "cond."))))] = read_video(path)[0]
    a = videos[("cond.motion_bucket_id=60", "opt=none")]
    b = videos[("cond.motion_bucket_id=180", "opt=none")]
    assert not np.array_equal(a, b)


# ---- the command line: every wrong setting ends before anything is written, with one paragraph ------------


@pytest.mark.parametrize(
    "args, message",
    [
        (["model=null"], "error: model=null is not valid: `model` takes the name of one preset. Available options in"),
        (
            ["+cond.motionbucket=200"],
            "error: +cond.motionbucket=200: `cond.motionbucket` is not a setting of svdbench.",
        ),
        (["+foo=bar"], "error: +foo=bar: `foo` is not a setting of svdbench."),
        (["opt=[none,chunking]"], "To compare them, sweep them: python -m svdbench -m opt=none,chunking."),
        (
            ["cond.motion_bucket_id=abc"],
            "error: cond.motion_bucket_id=abc is not valid: cond.motion_bucket_id takes an",
        ),
        (["model.path=./svd-xt"], "error: model.path=./svd-xt is given, but model.weights=random builds"),
        (
            ["--cfg", "job", "height=10000"],
            "error: height=10000 is invalid: it must be a multiple of 64, from 64 up to",
        ),
        (["-c", "job", "cond.noise_aug_strength=inf"], "error: cond.noise_aug_strength=inf is invalid: it must be a"),
        (["--cfg", "all", "seed=99999999999999999999"], "(torch.Generator.manual_seed takes 0 <= seed < 2**63 here)"),
    ],
)
def test_invalid_settings_stop_before_anything_is_written(tmp_path, args, message):
    proc = run_cli(tmp_path, *args, "hydra.run.dir=run", "logger=none")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert message in proc.stderr
    assert proc.stderr.count("error: ") == 1 and "Traceback" not in proc.stderr
    assert proc.stdout == ""  # with --cfg: no config printed either
    assert not (tmp_path / "run").exists() and not (tmp_path / "outputs").exists()


def test_a_bad_command_line_is_refused_before_torch_is_imported(tmp_path):
    """The entry point stays thin: a typo costs Hydra's import and the check, not torch's and diffusers'."""
    proc = run_cli(tmp_path, "batch_size=0", env={**offline_env(tmp_path), "PYTHONPROFILEIMPORTTIME": "1"})
    assert proc.returncode == 2 and "batch_size=0 is invalid" in proc.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert (
        "hydra" in imported and "svdbench.settings.config" in imported
    )  # what the check needs, so the import profile works
    assert not {"torch", "diffusers", "numpy"} & imported


def test_help_names_svdbench_and_lists_every_setting(tmp_path):
    from svdbench.settings.config import settings

    proc = run_cli(tmp_path, "--help")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert out.startswith("svdbench: what Stable Video Diffusion costs") and "__main__" not in out
    assert "python -m svdbench model=xt model.weights=random opt=compile" in out
    assert "python -m svdbench -m opt=none,chunking,offload" in out
    for sibling in ("plan", "compare", "metrics", "replay"):  # the other commands, one line each
        assert len([line for line in out.splitlines() if f"python -m svdbench.{sibling} " in line]) == 1, sibling
    assert "model: small, svd, tiny, xt" in out  # the groups, from Hydra ($APP_CONFIG_GROUPS)
    assert (
        "  cond.motion_bucket_id: int = 127 (from 0 up to 255)\n      Amount of motion the model is conditioned" in out
    )
    assert "  opt.decode_chunk_size: int or null = null (at least 1)\n      Frames the VAE decodes at a time" in out
    assert "  height: int = the model's, model.height (a multiple of 64, from 64 up to 4096)" in out
    assert [info.key for info in settings() if f"\n  {info.key}: " not in out] == []


@pytest.mark.parametrize("flag, expected", [("--info", "Config search path"), ("--hydra-help", "Hydra (")])
def test_hydras_own_flags_still_work(tmp_path, flag, expected):
    proc = run_cli(tmp_path, flag)
    assert proc.returncode == 0 and expected in proc.stdout, proc.stderr[-2000:]


def test_cfg_job_shows_the_full_config(tmp_path):
    from .test_config import DEFAULTS, flat

    proc = run_cli(tmp_path, "--cfg", "job")
    assert proc.returncode == 0, proc.stderr[-2000:]
    shown = flat(yaml.safe_load(proc.stdout))
    interpolated = {"height": "${model.height}", "width": "${model.width}", "num_frames": "${model.num_frames}"}
    assert shown == DEFAULTS | interpolated


def test_one_frame_runs_without_guidance_and_is_refused_with_it(tmp_path):
    one = ["num_frames=1", "num_inference_steps=2", "bench.warmup=0", "bench.repeats=1", "logger=none"]
    result = run_tiny(tmp_path / "off", *one, "max_guidance_scale=1")  # in this process: no start-up to wait for
    assert result.status == "ok" and result.num_frames == 1, result.reason
    assert read_json(tmp_path / "off" / "results.json")["status"] == "ok"
    proc = run_cli(tmp_path, "hydra.run.dir=on", *one)
    assert proc.returncode == 2 and not (tmp_path / "on").exists()
    assert "error: num_frames=1 with max_guidance_scale=3.0 fails inside diffusers' StableVideoDiffusionPipeline" in (
        proc.stderr
    )
    assert "Turn guidance off with max_guidance_scale=1, generate at least 2 frames (num_frames=2)" in proc.stderr


def test_why_one_frame_with_guidance_is_refused(tiny_pipeline):
    """diffusers prepares guidance from max_guidance_scale but guides each frame with torch.linspace(min, max,
    num_frames): one frame gets min_guidance_scale. If diffusers changes this, the refusal can be lifted."""
    from PIL import Image

    image = Image.new("RGB", (128, 128), (120, 80, 40))
    call = dict(height=128, width=128, num_frames=1, num_inference_steps=1, output_type="np", decode_chunk_size=1)
    with pytest.raises(RuntimeError, match="Sizes of tensors must match"):
        tiny_pipeline(image, min_guidance_scale=1.0, max_guidance_scale=3.0, **call)
    assert tiny_pipeline(image, min_guidance_scale=2.0, max_guidance_scale=3.0, **call).frames[0].shape[0] == 1
