"""hydra/launcher=slurm: the sbatch script submitit writes for conf/hydra/launcher/slurm.yaml, and a real two-job
sweep through a single-node SLURM on this machine (scripts/slurm_local.sh starts one: Debian's slurm-wlm and
munge, as root; the test is skipped where neither a running SLURM nor those can be had)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from tests.conftest import CONF_DIR, FAST, REPO, offline_env, read_json, run_cli

submitit = pytest.importorskip("submitit")


def sbatch_script(tmp_path: Path, *overrides: str) -> str:
    """The script submitit would submit for this sweep's jobs, built as hydra-submitit-launcher builds its
    executor (SlurmLauncher.launch), without submitting anything."""
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        config = compose(
            config_name="config",
            overrides=["hydra/launcher=slurm", f"hydra.sweep.dir={tmp_path}", *overrides],
            return_hydra_config=True,
        )
    params = OmegaConf.to_container(config.hydra.launcher, resolve=True)
    assert isinstance(params, dict)
    params.pop("_target_")
    executor = submitit.AutoExecutor(
        cluster="slurm", folder=params.pop("submitit_folder"), slurm_max_num_timeout=params.pop("max_num_timeout")
    )
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
    return executor._executor._make_submission_file_text("python -m submitit.core._submit FOLDER", "uid")


def test_sbatch_script_of_the_slurm_preset(tmp_path):
    script = sbatch_script(tmp_path, "hydra.launcher.partition=gpu", "++hydra.launcher.additional_parameters.qos=high")
    lines = set(script.splitlines())
    for expected in (
        "#SBATCH --partition=gpu",
        "#SBATCH --gpus-per-node=1",  # one GPU per job
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --mem=64GB",
        "#SBATCH --time=60",
        "#SBATCH --qos=high",
        "#SBATCH --signal=USR2@120",  # submitit's warning before the time limit
    ):
        assert expected in lines, f"{expected!r} not in\n{script}"
    assert f"#SBATCH --output={tmp_path}/.submitit/%j/%j_0_log.out" in lines
    assert "srun --unbuffered" in script and script.rstrip().endswith("python -m submitit.core._submit FOLDER")


def _slurm_env(tmp_path_factory) -> dict[str, str] | None:
    """The environment of a running SLURM: the one already configured here, or one started by
    scripts/slurm_local.sh (root and slurm-wlm needed); None if neither."""
    if shutil.which("sbatch") is None:
        return None
    env = dict(os.environ)
    if subprocess.run(["sinfo", "-h"], capture_output=True, env=env).returncode == 0:
        return env
    if os.geteuid() != 0 or shutil.which("slurmctld") is None:
        return None
    folder = tmp_path_factory.mktemp("slurm")
    started = subprocess.run(
        ["bash", str(REPO / "scripts" / "slurm_local.sh"), "start", str(folder)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if started.returncode != 0:
        pytest.fail(f"scripts/slurm_local.sh could not start SLURM: {started.stderr}")
    env["SLURM_CONF"] = str(folder / "slurm.conf")
    env["SVDBENCH_TEST_SLURM_DIR"] = str(folder)  # started here: stopped after the tests
    return env


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    env = _slurm_env(tmp_path_factory)
    if env is None:
        pytest.skip("no SLURM here: install slurm-wlm and munge, and run as root (scripts/slurm_local.sh)")
    yield env
    if "SVDBENCH_TEST_SLURM_DIR" in env:
        script = str(REPO / "scripts" / "slurm_local.sh")
        subprocess.run(["bash", script, "stop", env["SVDBENCH_TEST_SLURM_DIR"]], capture_output=True, timeout=60)


@pytest.mark.slow
def test_two_job_sweep_through_slurm(tmp_path, slurm):
    env = {**offline_env(tmp_path), **{k: v for k, v in slurm.items() if k.startswith("SLURM")}}
    proc = run_cli(
        tmp_path,
        "-m",
        "seed=1,2",
        "hydra/launcher=slurm",
        "hydra.launcher.gpus_per_node=0",  # this node has no GPU (gres) to give
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.mem_gb=4",
        "hydra.launcher.timeout_min=20",
        *FAST,
        "logger=none",
        "metrics.enabled=false",
        "device=cpu",
        "hydra.sweep.dir=sweep",
        env=env,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = {p.parent.name: read_json(p) for p in (tmp_path / "sweep").glob("*/results.json")}
    assert sorted(found) == ["0", "1"]
    assert sorted((r["status"], r["seed"]) for r in found.values()) == [("ok", 1), ("ok", 2)]
    scripts = list((tmp_path / "sweep" / ".submitit").rglob("*_submission.sh"))
    assert scripts and "#SBATCH --array=0-1%2" in scripts[0].read_text()  # one SLURM array job, two tasks at once
    assert (tmp_path / "sweep" / "comparison.md").exists()
