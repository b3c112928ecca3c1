"""A real sweep with quality samples on the tiny model, then its comparison: the job is judged on every pair of
samples (n = images x seeds), with intervals in the JSON, the table and the sweep's page."""

from __future__ import annotations

import json

import pytest

from .conftest import FAST, run_cli

pytestmark = pytest.mark.slow  # two tiny runs of 1 + 4 calls each, and the comparison: about a minute quiet

# Three steps: with two, guidance for the first step only changes the frames by under one level (the last Euler
# step's prediction barely moves them), so the mode would be lossless there.
SMALL = ["num_inference_steps=3", "height=64", "width=64", "num_frames=4", "logger=none"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("quality-sweep")
    proc = run_cli(
        cwd,
        "-m",
        "opt.guidance_until_step=null,1",
        "quality.images=2",
        "quality.seeds=2",
        *FAST,
        *SMALL,
        "hydra.sweep.dir=sweep",
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return cwd / "sweep"


def test_compare_judges_the_samples_with_intervals(sweep, tmp_path):
    proc = run_cli(tmp_path, str(sweep), "--gate", "--json", "--allow-unknown", module="svdbench.compare")
    assert proc.returncode in (0, 4), proc.stderr[-3000:]
    jobs = {job["job"]: job for job in json.loads(proc.stdout)["jobs"]}
    base, limited = jobs["0"], jobs["1"]
    assert base["verdict"] == "baseline" and base["quality"] == {}
    assert limited["expected"] == "lossy" and limited["verdict"] == "lossy" and limited["gate"] == "pass"
    for metric in ("vmaf", "psnr_db", "ssim", "tof", "motion_ratio"):
        estimate = limited["quality"][metric]
        assert estimate["n"] == 4, metric
        assert estimate["lo"] <= estimate["mean"] <= estimate["hi"], metric
    assert {(s["image"], s["seed"]) for s in limited["per_sample"]} == {
        (image, seed) for image in ("astronaut", "chelsea") for seed in (42, 43)
    }
    table = (sweep / "comparison.md").read_text()
    psnr = limited["quality"]["psnr_db"]
    assert f"{psnr['mean']:.4g} ({psnr['lo']:.4g} to {psnr['hi']:.4g})" in table
    assert "samples_n" in table and "bootstrap" in table
    page = (sweep / "report.html").read_text()
    assert "Quality samples" in page and page.count("data:image/png;base64,") == 8  # 4 pairs, job and baseline
    assert f"{psnr['mean']:.4g} ({psnr['lo']:.4g} to {psnr['hi']:.4g})" in page
