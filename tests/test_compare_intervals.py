"""Differences you can trust: the intervals of speed-ups and memory savings, and the within-noise marking.

The interval arithmetic is checked on known samples; the marking end to end on a sweep directory made of a real
tiny run's record (real files, read by the real `python -m svdbench.compare`) whose latencies and per-call peaks
are set to known values; the columns that come from fields other parts add (energy, cost, machine state, the
planner's prediction) on results constructed in the test.
"""

from __future__ import annotations

import csv
import random
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from omegaconf import OmegaConf

from svdbench.compare.jobs import (
    FEW_CALLS,
    NO_CALLS,
    NO_CI,
    SIGNIFICANT,
    WITHIN_NOISE,
    Job,
    assign_baselines,
    assign_verdicts,
    cell_text,
    memory_interval,
    rows,
    speedup_interval,
    table_notes,
    to_markdown,
)
from svdbench.measure.memory import MemoryPeak
from svdbench.measure.timing import Stats, median_interval
from svdbench.record.results import RunResult
from svdbench.settings.saved import from_values

from .conftest import FAST, compose_config, run_cli, run_tiny

QUIET = [*FAST, "logger=none"]


# ------------------------------------------------------------------------------------------ known samples


@pytest.mark.parametrize(
    ("n", "ranks"),
    # (j, n+1-j) for the largest j with 1 - 2 P(Binomial(n, 1/2) < j) >= 0.95, worked out by hand.
    [(5, None), (6, (1, 6)), (8, (1, 8)), (9, (2, 8)), (10, (2, 9)), (17, (5, 13))],
)
def test_median_interval_is_the_order_statistic_pair(n, ranks):
    values = [float(v) for v in range(1, n + 1)]
    random.Random(n).shuffle(values)
    stats = Stats.of(values)
    if ranks is None:
        assert stats.ci95_low is None and stats.ci95_high is None
    else:
        assert (stats.ci95_low, stats.ci95_high) == (float(ranks[0]), float(ranks[1]))


def test_median_interval_covers_the_true_median_at_least_95_percent():
    """Samples of 10 from a skewed distribution (exponential, median ln 2): the interval (x_(2), x_(9)) holds the
    median with probability 1 - 2 * 11/1024 = 97.85 %, whatever the distribution."""
    rng = np.random.default_rng(0)
    samples = np.sort(rng.exponential(1.0, size=(4000, 10)), axis=1)
    covered = 0
    for sample in samples:
        low, high = median_interval(list(sample))
        assert low is not None and high is not None
        covered += low <= np.log(2.0) <= high
    assert 0.965 < covered / len(samples) < 0.99


def test_speedup_interval_is_the_ratio_of_the_intervals_ends():
    base = Stats.of([10.0, 11.0, 12.0, 13.0, 14.0, 15.0])  # median 12.5, interval 10..15
    fast = Stats.of([5.0, 5.5, 6.0, 6.5, 7.0, 7.5])  # median 6.25, interval 5..7.5
    speed = speedup_interval(base, fast)
    assert speed.value == pytest.approx(2.0)
    assert (speed.low, speed.high) == (pytest.approx(10 / 7.5), pytest.approx(15 / 5))
    assert speed.status == SIGNIFICANT
    same = speedup_interval(base, Stats.of([9.0, 10.0, 11.0, 12.0, 13.0, 14.0]))
    assert same.value == pytest.approx(12.5 / 11.5) and same.low < 1.0 < same.high
    assert same.status == WITHIN_NOISE
    few = speedup_interval(base, Stats.of([5.0, 6.0, 7.0]))  # 3 calls: no interval of their median
    assert few.value == pytest.approx(12.5 / 6.0) and few.low is None and few.status == NO_CI


def test_memory_interval_comes_from_the_per_call_peaks():
    def peak(calls):
        return MemoryPeak(host_before_gib=0.5, host_peak_gib=max(calls or [2.0]), host_method="", calls_gib=calls)

    saved = memory_interval(peak([2.0, 2.1, 2.05]), peak([1.5, 1.6]))
    assert saved.value == pytest.approx(0.5)
    assert (saved.low, saved.high) == (pytest.approx(2.0 - 1.6), pytest.approx(2.1 - 1.5))
    assert saved.status == SIGNIFICANT
    identical = memory_interval(peak([2.0, 2.0]), peak([2.0, 2.0]))  # a zero-width range at 0
    assert identical.value == 0.0 and identical.low == identical.high == 0.0 and identical.status == WITHIN_NOISE
    overlap = memory_interval(peak([2.0, 2.2]), peak([1.9, 2.1]))
    assert overlap.low < 0.0 < overlap.high and overlap.status == WITHIN_NOISE
    assert memory_interval(peak([2.0, 2.0]), peak([])).status == NO_CALLS  # written before calls_gib existed
    assert memory_interval(peak([2.0]), peak([1.0, 1.0])).status == FEW_CALLS


# ------------------------------------------------------------------------------ a sweep compare reads


@pytest.fixture(scope="module")
def tiny_record(tmp_path_factory) -> Path:
    """One real tiny run (frames saved), the record the jobs below are made of."""
    run_dir = tmp_path_factory.mktemp("tiny") / "run"
    result = run_tiny(run_dir)
    assert result.status == "ok"
    # The machine's state as recorded depends on what else ran (a busy CPU adds a warning and a marker); the
    # jobs below are made with none, and the test that needs a warning sets its own.
    assert result.environment is not None
    result.environment.state = None
    result.notes = [n for n in result.notes if not n.startswith("Machine: ")]
    result.save(run_dir)
    return run_dir


def write_job(record: Path, job: Path, overrides: list[str], calls_s: list[float], calls_gib: list[float]) -> None:
    """A job directory as a sweep leaves it: the real record with known measured calls and per-call peaks, and the
    .hydra/ config Hydra composes from `overrides`."""
    shutil.copytree(record, job)
    (job / ".hydra").mkdir(exist_ok=True)
    OmegaConf.save(compose_config(*QUIET, *overrides), job / ".hydra" / "config.yaml")
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    result = RunResult.load(job)
    result.latency.calls_s, result.latency.stats = calls_s, Stats.of(calls_s)
    assert result.memory is not None
    result.memory.calls_gib = calls_gib
    result.memory.host_peak_gib, result.memory.device_max_allocated_gib = max(calls_gib), None
    result.save(job)


def test_compare_marks_differences_within_noise(tiny_record, tmp_path):
    sweep = tmp_path / "sweep"
    six = [1.00, 1.01, 1.02, 1.03, 1.04, 1.05]
    write_job(tiny_record, sweep / "0", ["opt=none"], six, [2.0] * 6)
    # Twice as fast, half a GiB less in every call: a win, both intervals away from no change.
    write_job(tiny_record, sweep / "1", ["opt=chunking"], [s / 2 for s in six], [1.5] * 6)
    # 2 % faster on the median, but the intervals overlap: noise; the same memory: a zero-width range at 0.
    write_job(tiny_record, sweep / "2", ["opt.fuse_qkv=true"], [0.99, 1.0, 1.0, 1.0, 1.01, 1.03], [2.0] * 6)
    # Three calls: no interval of the median, whatever the ratio.
    write_job(tiny_record, sweep / "3", ["opt.decode_chunk_size=2"], [0.5, 0.5, 0.5], [1.9, 1.9, 1.9])
    (sweep / "3" / "frames.npz").unlink()  # as with save_frames=false
    proc = run_cli(tmp_path, "sweep", module="svdbench.compare")
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = {r["job"]: r for r in csv.DictReader(open(sweep / "comparison.csv"))}
    assert {r["baseline"] for r in table.values()} == {"0"}
    win, noise, few = table["1"], table["2"], table["3"]
    assert float(win["speedup"]) == pytest.approx(1.025 / 0.5125)
    assert float(win["speedup_low"]) == pytest.approx(1.00 / 0.525) and float(win["speedup_high"]) == pytest.approx(
        1.05 / 0.5
    )
    assert win["speedup_interval"] == "significant" and win["memory_saved_interval"] == "significant"
    assert float(win["memory_saved_low_gib"]) == float(win["memory_saved_high_gib"]) == pytest.approx(0.5)
    assert noise["speedup_interval"] == "within noise" and float(noise["speedup_low"]) < 1 < float(
        noise["speedup_high"]
    )
    assert noise["memory_saved_interval"] == "within noise" and float(noise["memory_saved_gib"]) == 0.0
    assert few["speedup_interval"] == "n<6: no interval" and few["speedup_low"] == ""
    assert few["memory_saved_interval"] == "significant"  # peaks of 3 calls each side: a range
    assert few["verdict"] == "unknown" and "no frames.npz from the job" in few["verdict_note"]
    assert noise["verdict"] == "lossless" and noise["max_diff_levels"] == "0"  # the same record's frames
    markdown = (sweep / "comparison.md").read_text()
    lines = {line.split(" | ")[0].strip("| "): line for line in markdown.splitlines() if line.startswith("| ")}
    assert "2.00x (1.90-2.10) |" in lines["1"] and "~noise" not in lines["1"]
    assert "1.02x (0.97-1.06) ~noise" in lines["2"] and "0 GiB (0 to 0) ~noise" in lines["2"]
    assert "2.05x n<6: no interval" in lines["3"]
    assert "bench.repeats=6 or more gives intervals" in markdown and "[base_low / job_high" in markdown
    # The same table is printed, and report.html shows the folded cells.
    assert "1.02x (0.97-1.06) ~noise" in proc.stdout
    assert "1.02x (0.97-1.06) ~noise" in (sweep / "report.html").read_text(encoding="utf-8")


def test_fields_other_parts_add_become_columns_and_warnings(tiny_record, tmp_path):
    """Energy, cost, the planner's prediction, batches and machine-state warnings, on results constructed here
    (older results have none of them: no column, no marker)."""

    def job(name: str, **opt) -> Job:
        result = RunResult.load(tiny_record)
        config = from_values({"opt.name": "none", "seed": 42, **{f"opt.{k}": v for k, v in opt.items()}})
        return Job(directory=tiny_record, name=name, overrides={}, config=config, result=result)

    plain, chunked = job("0"), job("1", forward_chunking=True)
    jobs = [plain, chunked]
    assign_baselines(jobs, "opt.name=none")
    assign_verdicts(jobs)
    bare = rows(jobs, [])
    assert not {"j_per_video", "usd_per_video", "memory_vs_predicted", "videos_per_hour"} & set(bare[0])
    assert "\u26a0" not in to_markdown(bare)
    # Now the fields as the runner will fill them.
    for j, joules in ((plain, 12.0), (chunked, 9.0)):
        j.result.energy = SimpleNamespace(total_j=joules)
        j.result.cost = SimpleNamespace(usd_per_video=joules / 1e4, usd_per_1000_videos=joules / 10)
    assert chunked.result.environment is not None and chunked.result.memory is not None
    chunked.result.environment.state = SimpleNamespace(warnings=["load average 3.1 on 2 cores before the run"])
    chunked.result.memory.device_max_allocated_gib, chunked.result.memory.predicted_gib = 3.0, 2.5
    chunked.result.batch_size = 2
    assert chunked.result.throughput is not None
    chunked.result.throughput.videos_per_hour = 1234.0
    table = rows(jobs, [])
    assert [r["j_per_video"] for r in table] == [12.0, 9.0]
    assert [r["usd_per_1000_videos"] for r in table] == [1.2, 0.9]
    assert table[0]["memory_vs_predicted"] is None and table[1]["memory_vs_predicted"] == pytest.approx(1.2)
    assert [r["batch_size"] for r in table] == [1, 2] and table[1]["videos_per_hour"] == 1234.0
    assert cell_text(table[1], "job") == "1 \u26a0" and cell_text(table[0], "job") == "0"
    notes = table_notes(jobs, table)
    assert any("job 1: load average 3.1 on 2 cores" in n for n in notes)
    assert any(n.startswith("Random weights make frames noise") for n in notes)  # the tiny run's weights


# ------------------------------------------------------------------------- a job's settings, read back typed


def test_a_jobs_settings_are_read_back_typed_from_its_hydra_config(tiny_record, tmp_path):
    """The comparison reads the job's .hydra/config.yaml as the run's typed RunConfig (the schema's defaults for
    what the file does not set); a record without it falls back to results.json's fields, with a note; a setting
    an older version had and the schema no longer has is left out, with a note."""
    from svdbench.compare.jobs import load_job
    from svdbench.settings.config import RunConfig

    sweep = tmp_path / "sweep"
    write_job(tiny_record, sweep / "0", ["opt=chunking", "max_guidance_scale=1.5"], [1.0], [1.0])
    job = load_job(sweep / "0", sweep)
    assert isinstance(job.config, RunConfig) and job.config_notes == []
    assert (job.config.opt.name, job.config.opt.forward_chunking, job.config.max_guidance_scale) == (
        "chunking",
        True,
        1.5,
    )
    assert job.config.height == job.config.model.height  # config.yaml's interpolation, resolved as in the run

    write_job(tiny_record, sweep / "1", ["seed=7"], [1.0], [1.0])
    (sweep / "1" / ".hydra" / "config.yaml").unlink()
    result = RunResult.load(sweep / "1")
    result.seed = 7  # what a run with seed=7 records
    result.save(sweep / "1")
    bare = load_job(sweep / "1", sweep)
    assert bare.config.seed == bare.result.seed == 7 and bare.config.opt.name == bare.result.opt == "none"
    assert bare.config.max_guidance_scale == RunConfig.__dataclass_fields__["max_guidance_scale"].default
    assert len(bare.config_notes) == 1 and bare.config_notes[0].startswith("settings read from results.json")
    assert "no .hydra/config.yaml" in bare.config_notes[0] and "seed" in bare.config_notes[0]

    write_job(tiny_record, sweep / "2", ["opt=none"], [1.0], [1.0])
    path = sweep / "2" / ".hydra" / "config.yaml"
    path.write_text(path.read_text() + "retired_setting: 3\n")
    older = load_job(sweep / "2", sweep)
    assert older.config.opt.name == "none" and "retired_setting" in older.config_notes[0]
    notes = table_notes([job, bare, older], rows([job, bare, older], []))
    assert "Settings not read from the job's .hydra/config.yaml:" in notes
    assert any(n.startswith("  - job 1: settings read from results.json") for n in notes)


def test_baseline_and_ignore_keys_must_name_settings(tiny_record, tmp_path, capsys):
    from svdbench.compare.command import main

    sweep = tmp_path / "sweep"
    write_job(tiny_record, sweep / "0", ["opt=none"], [1.0], [1.0])
    write_job(tiny_record, sweep / "1", ["opt=none", "max_guidance_scale=1.5", "opt.fuse_qkv=true"], [1.0], [1.0])
    for args, named in (
        (["--ignore", "max_guidance"], "--ignore max_guidance: `max_guidance` is not a setting"),
        (["--baseline", "opt.nam=none"], "--baseline opt.nam=none: `opt.nam` is not a setting"),
    ):
        assert main([str(sweep), *args]) == 2  # the command line in this process (its exit status)
        assert named in capsys.readouterr().err
        assert not (sweep / "comparison.md").exists()  # nothing written
    from svdbench.compare.jobs import assign_baselines, load_jobs

    jobs = load_jobs(sweep)
    assign_baselines(jobs, "opt.name=none")
    assert jobs[1].baseline is jobs[1]  # max_guidance_scale differs: job 0 is no candidate, job 1 is one itself
    assign_baselines(jobs, "opt.name=none", ignored=("max_guidance_scale",))
    assert jobs[1].baseline is jobs[0]  # both are candidates now: the plainest (no opt.fuse_qkv) wins
    assign_baselines(jobs, "opt.fuse_qkv=true", ignored=("max_guidance_scale",))  # a bool as the command line writes it
    assert jobs[0].baseline is jobs[1]
