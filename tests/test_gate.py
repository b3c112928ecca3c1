"""The faithfulness gate: what each mode is meant to be, verdicts on known frames, and `compare --gate` on real
tiny runs laid out as a sweep (real files, the real command line)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from svdbench.compare import gate
from svdbench.compare.command import GATE_FAILED
from svdbench.compare.gate import FAITHFUL, LOSSLESS, LOSSY, UNKNOWN, classify, expectation, failure_message, judge
from svdbench.settings.config import GATE_MIN_PSNR_DB, OptConfig, RunConfig
from svdbench.settings.saved import from_values

from .conftest import FAST, compose_config, run_cli, run_tiny

QUIET = [*FAST, "logger=none"]


def opt_of(settings: dict) -> OptConfig:
    """The typed opt settings of a job: the schema's defaults with these dotted settings (relative to opt)."""
    return from_values({f"opt.{key}": value for key, value in settings.items()}).opt


def opt(**settings) -> OptConfig:
    return opt_of(settings)


def config(**dotted) -> RunConfig:
    return from_values({key.replace("__", "."): value for key, value in dotted.items()})


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({}, LOSSLESS),
        ({"name": "none", "offload": "none"}, LOSSLESS),
        ({"offload": "model"}, LOSSLESS),
        ({"offload": "group"}, LOSSLESS),
        # Measured within one level on the tiny model on a CPU, but other kernels may sum in other orders.
        ({"forward_chunking": True}, FAITHFUL),
        ({"tf32": True}, FAITHFUL),
        ({"compile.unet": True}, FAITHFUL),
        ({"compile.vae": True}, FAITHFUL),
        ({"attention_backend": "math"}, FAITHFUL),
        ({"attention_backend": "auto"}, LOSSLESS),
        ({"fuse_qkv": True}, FAITHFUL),
        ({"deepcache.enabled": True}, LOSSY),
        ({"deepcache.enabled": True, "deepcache.cache_interval": 1}, FAITHFUL),
        ({"storage_dtype": "fp8_e4m3"}, LOSSY),
        ({"quantize": "int8_weight_only"}, LOSSY),
        ({"decode_chunk_size": 2}, LOSSY),  # against a baseline that decodes all frames at once
        ({"tf32": True, "quantize": "int8_dynamic"}, LOSSY),  # the worst setting wins
    ],
)
def test_expected_verdict_of_each_setting(settings, expected):
    assert expectation(opt_of(settings))[0] == expected


def test_decode_chunks_count_only_where_they_differ_from_the_baseline():
    assert expectation(opt(decode_chunk_size=2), opt(decode_chunk_size=2))[0] == LOSSLESS
    assert expectation(opt(decode_chunk_size=2), opt(decode_chunk_size=4))[0] == LOSSY
    # 14 frames decoded 14 (or more) at a time is one chunk, like null.
    assert expectation(opt(decode_chunk_size=14), opt(decode_chunk_size=None), num_frames=14)[0] == LOSSLESS
    assert expectation(opt(decode_chunk_size=25), opt(), num_frames=14)[0] == LOSSLESS
    assert expectation(opt(decode_chunk_size=7), opt(), num_frames=14)[0] == LOSSY


def test_a_baseline_of_another_dtype_makes_a_job_at_best_faithful(tmp_path):
    # With --ignore dtype, a bf16 opt=none job is judged against an fp32 opt=none baseline: a change of
    # precision, which is what the threshold measures, not a mode meant to be lossless.
    assert gate.expectation(opt(), opt(), dtype="bf16", baseline_dtype="fp32") == (
        FAITHFUL,
        [gate.REASONS["dtype"][1]],
    )
    assert expectation(opt(), opt(), dtype="fp32", baseline_dtype="fp32")[0] == LOSSLESS
    assert expectation(opt(quantize="int8_dynamic"), opt(), dtype="bf16", baseline_dtype="fp32")[0] == LOSSY

    from svdbench.compare.jobs import Job, assign_verdicts
    from svdbench.record.results import RunResult

    video = frames()
    off = video.copy()
    off[0, 0, :3, 0] = 255 - video[0, 0, :3, 0]  # 3 of 3072 values far off: about 36 dB
    for name, data in (("0", video), ("1", off)):
        (tmp_path / name).mkdir()
        np.savez_compressed(tmp_path / name / "frames.npz", frames=data)
    base = Job(tmp_path / "0", "0", {}, config(dtype="fp32"), RunResult(dtype="fp32"))
    job = Job(tmp_path / "1", "1", {}, config(dtype="bf16"), RunResult(dtype="bf16"), baseline=base)
    assign_verdicts([base, job], min_psnr_db=30.0)
    assert job.verdict is not None and job.verdict.verdict == FAITHFUL and not job.verdict.failed
    assert job.verdict.expected == FAITHFUL and "precision" in job.verdict.reason
    assign_verdicts([base, job], min_psnr_db=40.0)
    assert job.verdict.verdict == LOSSY and job.verdict.failed  # a precision change costing more than allowed


def frames(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(4, 16, 16, 3), dtype=np.uint8)


def test_verdicts_on_known_frames():
    base = frames()
    verdict, psnr, max_diff, differing = classify(base.copy(), base, 40.0)
    assert (verdict, max_diff, differing) == (LOSSLESS, 0, 0.0) and psnr == 200.0
    one_level = base.copy()
    one_level[base < 255] += 1  # every value but the white ones one level up: rounding noise at most
    verdict, psnr, max_diff, differing = classify(one_level, base, 60.0)
    assert (verdict, max_diff) == (LOSSLESS, 1) and psnr == pytest.approx(48.13, abs=0.05) and differing > 0.99
    two_levels = base.copy()
    two_levels[0, 0, 0, 0] = base[0, 0, 0, 0] + 2 if base[0, 0, 0, 0] < 254 else base[0, 0, 0, 0] - 2
    verdict, psnr, max_diff, _ = classify(two_levels, base, 40.0)  # one value 2 levels off: 74 dB, faithful
    assert (verdict, max_diff) == (FAITHFUL, 2) and psnr > 70
    assert classify(two_levels, base, 80.0)[0] == LOSSY  # below a stricter threshold
    assert classify(frames(1), base, 40.0)[0] == LOSSY  # another video altogether


def test_unknown_verdicts_say_why():
    base = frames()
    assert judge(None, base, 40.0, LOSSLESS).verdict == UNKNOWN
    assert "from the job " in judge(None, base, 40.0, LOSSLESS).reason
    assert "save_frames=true" in judge(base, None, 40.0, LOSSLESS).reason
    assert "did not finish" in judge(base, base, 40.0, LOSSLESS, "the job did not finish (oom)").reason
    assert judge(base[:2], base, 40.0, LOSSLESS).verdict == UNKNOWN  # other shapes
    assert not judge(None, base, 40.0, LOSSLESS).failed  # nothing to judge is not a failure


def test_failed_is_worse_than_meant_and_the_message_says_what_to_do():
    base = frames()
    worse = judge(frames(1), base, 40.0, LOSSLESS)
    assert worse.failed and not judge(frames(1), base, 40.0, LOSSY).failed
    assert judge(base, base, 40.0, FAITHFUL).verdict == LOSSLESS and not judge(base, base, 40.0, FAITHFUL).failed
    message = failure_message("modes/3", worse)
    assert message.startswith("Job modes/3 is meant to be lossless and is lossy: max |diff| ")
    assert "PSNR" in message and "(threshold 40 dB)" in message and "run the job and its baseline again" in message
    assert "\n" not in message


def test_threshold_comes_from_the_baselines_gate_setting(tmp_path):
    from svdbench.compare.jobs import Job, min_psnr_for
    from svdbench.record.results import RunResult

    base = Job(tmp_path, "0", {}, config(gate__min_psnr_db=12.5), RunResult())
    job = Job(tmp_path, "1", {}, config(opt__name="chunking", gate__min_psnr_db=99.0), RunResult(), baseline=base)
    assert min_psnr_for(job) == 12.5 and min_psnr_for(job, 40.0) == 40.0
    older = Job(
        tmp_path,
        "2",
        {},
        config(opt__name="chunking"),
        RunResult(),
        baseline=Job(tmp_path, "3", {}, config(), RunResult()),
    )
    assert min_psnr_for(older) == GATE_MIN_PSNR_DB  # a sweep from before the gate: the schema's default


# ------------------------------------------------------------------------- the command line, on known frames


def write_job(sweep: Path, name: str, overrides: list[str], video: np.ndarray) -> None:
    """A job as a sweep leaves it, with `video` as its frames: results.json, frames.npz and the .hydra/ config."""
    from svdbench.measure.timing import Stats
    from svdbench.record.results import RunResult

    job = sweep / name
    (job / ".hydra").mkdir(parents=True)
    OmegaConf.save(compose_config(*QUIET, *overrides), job / ".hydra" / "config.yaml")
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    result = RunResult(model="tiny", weights="random", num_frames=len(video))
    result.latency.calls_s = [1.0, 1.1]
    result.latency.stats = Stats.of(result.latency.calls_s)
    result.save(job)
    np.savez_compressed(job / "frames.npz", frames=video)


@pytest.mark.slow  # several real runs or CLI calls; CI runs it with -m slow
def test_gate_exit_status(tmp_path):
    """The baseline, a mode meant to be lossless (offload) within one level, one meant to be faithful (fused
    projections) a little off: the gate passes (0); then the offload job's frames change: it fails (4)."""
    base = frames()
    one_level = base.copy()
    one_level[base < 255] += 1
    a_little_off = base.copy()
    a_little_off[0, :2, :4, 0] = 255 - base[0, :2, :4, 0]  # 8 of 3072 values: 31.8 dB
    sweep = tmp_path / "sweep"
    write_job(sweep, "0", ["opt=none"], base)
    write_job(sweep, "1", ["opt=offload"], one_level)
    write_job(sweep, "2", ["opt.fuse_qkv=true"], a_little_off)
    proc = run_cli(tmp_path, "sweep", "--gate", "--min-psnr-db", "30", module="svdbench.compare")
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = verdicts(sweep)
    assert [table[j]["verdict"] for j in "012"] == ["baseline", LOSSLESS, FAITHFUL]
    assert [table[j]["gate"] for j in "012"] == ["", "pass", "pass"]
    assert "gate passed" in proc.stderr
    # The same frames judged with the default threshold (gate.min_psnr_db of the baseline's config): lossy,
    # worse than the fused projections are meant to be.
    strict = run_cli(tmp_path, "sweep", "--gate", module="svdbench.compare")
    assert strict.returncode == GATE_FAILED, strict.stderr[-2000:]
    assert "gate failed: Job 2 is meant to be faithful and is lossy" in strict.stderr
    np.savez_compressed(sweep / "1" / "frames.npz", frames=frames(1))
    failed = run_cli(tmp_path, "sweep", "--gate", "--min-psnr-db", "30", module="svdbench.compare")
    assert failed.returncode == GATE_FAILED == 4, failed.stderr[-2000:]
    lines = [line for line in failed.stderr.splitlines() if line.startswith("gate failed: ")]
    assert len(lines) == 1 and lines[0].startswith("gate failed: Job 1 is meant to be lossless and is lossy: max")
    assert "lossy \u2717 (meant to be lossless)" in (sweep / "comparison.md").read_text()
    without = run_cli(tmp_path, "sweep", module="svdbench.compare")
    assert without.returncode == 0  # without --gate the verdicts are only shown


# ---------------------------------------------------------------------------------- real runs, real command


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """Real tiny runs (frames saved), each laid out as a job of one sweep with the .hydra/ config Hydra writes:
    the baseline, feed-forward chunking, one frame decoded at a time, and the baseline with another seed."""
    sweep = tmp_path_factory.mktemp("gate") / "sweep"
    jobs = [[], ["opt=chunking"], ["opt.decode_chunk_size=1"], ["seed=7"]]
    for i, overrides in enumerate(jobs):
        job = sweep / str(i)
        assert run_tiny(job, *overrides).status == "ok"
        (job / ".hydra").mkdir()
        OmegaConf.save(compose_config(*QUIET, *overrides), job / ".hydra" / "config.yaml")
        (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in [*QUIET, *overrides]))
    return sweep


def verdicts(sweep: Path) -> dict[str, dict[str, str]]:
    return {r["job"]: r for r in csv.DictReader(open(sweep / "comparison.csv"))}


@pytest.mark.slow  # four real runs
def test_gate_passes_modes_that_are_what_they_are_meant_to_be(runs):
    proc = run_cli(runs.parent, "sweep", "--gate", module="svdbench.compare")
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = verdicts(runs)
    assert table["0"]["verdict"] == gate.BASELINE and table["0"]["gate"] == ""
    chunked, decoded = table["1"], table["2"]
    # Forward chunking computes the same frames, to float rounding, on this CPU: better than it is meant to be.
    assert chunked["expected_verdict"] == FAITHFUL and chunked["verdict"] == LOSSLESS and chunked["gate"] == "pass"
    assert int(chunked["max_diff_levels"]) <= 1 and float(chunked["psnr_vs_baseline_db"]) > 80
    # One frame at a time through the temporal decoder: other frames, as expected.
    assert decoded["expected_verdict"] == LOSSY and decoded["verdict"] == LOSSY and decoded["gate"] == "pass"
    assert int(decoded["max_diff_levels"]) > 1
    # seed=7 is opt=none with settings of its own (the seed is not ignored): the baseline of its own group.
    assert table["3"]["verdict"] == gate.BASELINE and table["3"]["baseline"] == "3"
    assert "gate passed" in proc.stderr and "not judged" not in proc.stderr
    markdown = (runs / "comparison.md").read_text()
    assert "Random weights make frames noise: the verdict measures numerical deviation" in markdown
    assert (
        "| lossless |" in markdown
        and "| lossy |" in markdown
        and f"faithful = PSNR >= {GATE_MIN_PSNR_DB:g} dB" in markdown
    )


@pytest.mark.slow
def test_gate_fails_a_mode_meant_to_be_lossless_that_is_not(runs, tmp_path):
    """Ignoring the seed makes seed=7 compare with the seed-42 baseline: its opt settings are those of the
    baseline, so it is meant to be lossless, and its frames are another video: exit 4, one paragraph."""
    plain = run_cli(runs.parent, "sweep", "--ignore", "seed", "--out", str(tmp_path / "a"), module="svdbench.compare")
    assert plain.returncode == 0, plain.stderr[-2000:]  # without --gate the verdict is only shown
    assert "lossy \u2717 (meant to be lossless)" in (tmp_path / "a" / "comparison.md").read_text()
    gated = run_cli(
        runs.parent, "sweep", "--ignore", "seed", "--gate", "--out", str(tmp_path / "b"), module="svdbench.compare"
    )
    assert gated.returncode == GATE_FAILED == 4, gated.stderr[-2000:]
    failures = [line for line in gated.stderr.splitlines() if line.startswith("gate failed: ")]
    assert len(failures) == 1
    assert failures[0].startswith("gate failed: Job 3 is meant to be lossless and is lossy: max |diff| ")
    assert "PSNR" in failures[0] and "--ignore" in failures[0]
    assert verdicts(tmp_path / "b")["3"]["gate"] == "fail"
    # A threshold of 5 dB accepts the decode chunks' deviation as faithful (meant lossy: still a pass).
    lenient = run_cli(
        runs.parent, "sweep", "--gate", "--min-psnr-db", "5", "--out", str(tmp_path / "c"), module="svdbench.compare"
    )
    assert lenient.returncode == 0, lenient.stderr[-2000:]
    assert verdicts(tmp_path / "c")["2"]["verdict"] == FAITHFUL
    bad = run_cli(runs.parent, "sweep", "--min-psnr-db", "-3", "--out", str(tmp_path / "d"), module="svdbench.compare")
    assert bad.returncode == 2 and "--min-psnr-db" in bad.stderr and "above 0" in bad.stderr
