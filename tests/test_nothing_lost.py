"""Nothing lost, ever: an earlier record is never overwritten, a failing write costs nothing measured, and
every reader survives a malformed file. Every fault here is real: real processes racing for a directory, a
real file-size limit, a real full file system (a tmpfs mounted for the test, where this machine lets root
mount one), real damaged files."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from svdbench import replay
from svdbench.compare.command import main as compare_main
from svdbench.record.results import ResultsError, RunResult
from svdbench.record.rundir import OutputLocationError, check_output_location, needed_bytes

from .conftest import FAST, compose_config, offline_env, read_json, run_cli, start_cli, wait_for

QUIET = [*FAST, "logger=none"]


def files_of(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def no_traceback(proc: subprocess.CompletedProcess) -> bool:
    return "Traceback" not in proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    cwd = tmp_path_factory.mktemp("finished")
    proc = run_cli(cwd, "hydra.run.dir=run", *QUIET)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return cwd / "run"


# ------------------------------------------------------------------ 1. an earlier record is never overwritten


def test_a_run_into_another_runs_directory_is_refused_and_the_record_kept(finished_run):
    before = files_of(finished_run)
    proc = run_cli(finished_run.parent, "hydra.run.dir=run", *QUIET, "seed=7")
    assert proc.returncode == 2 and no_traceback(proc)
    assert "already holds the record of a run of model=tiny, opt=none (status ok" in proc.stderr
    assert "python -m svdbench.replay run" in proc.stderr  # how to proceed
    assert files_of(finished_run) == before  # results, video, frames and .hydra/ byte for byte


def test_two_runs_started_into_one_directory_never_share_it(tmp_path):
    first = start_cli(tmp_path, "hydra.run.dir=run", "logger=none", "bench.progress=false", "num_inference_steps=300")
    log = tmp_path / "run" / "__main__.log"
    wait_for(lambda: log.exists() and "Building" in log.read_text())
    second = run_cli(tmp_path, "hydra.run.dir=run", *QUIET)
    first.send_signal(signal.SIGTERM)
    first.communicate(timeout=120)
    assert second.returncode == 2 and no_traceback(second)
    assert "is being written by another svdbench process (pid" in second.stderr
    assert f"pid {first.pid}" in second.stderr
    result = read_json(tmp_path / "run" / "results.json")  # the first run's own record, not a mix
    assert result["status"] == "interrupted" and "num_inference_steps=300" in result["provenance"]["overrides"]


def test_a_sweep_directory_is_resumed_by_its_own_sweep_and_refused_to_another(tmp_path):
    args = ["-m", "hydra.sweep.dir=sweep", "cond.motion_bucket_id=60", *QUIET]
    assert run_cli(tmp_path, *args).returncode == 0
    before = files_of(tmp_path / "sweep")
    other = run_cli(tmp_path, *args, "seed=1")
    assert other.returncode == 2 and no_traceback(other)
    assert "holds another sweep, with other settings" in other.stderr and "seed: 42 -> 1" in other.stderr
    assert files_of(tmp_path / "sweep") == before  # every job's record and the sweep's own files
    resumed = run_cli(tmp_path, *args, "bench.progress=true")  # presentation settings may change
    assert resumed.returncode == 0 and resumed.stderr.count("Skipping") == 1


@pytest.mark.slow  # two sweeps in a row; CI runs it with -m slow
def test_a_redone_job_keeps_its_earlier_record_aside(tmp_path):
    args = ["-m", "hydra.sweep.dir=sweep", "cond.motion_bucket_id=60", *QUIET]
    assert run_cli(tmp_path, *args).returncode == 0
    first = files_of(tmp_path / "sweep" / "0")
    assert run_cli(tmp_path, *args, "sweep.redo=true").returncode == 0
    kept = tmp_path / "sweep" / "0" / "previous-1"
    assert {name: data for name, data in files_of(kept).items() if name != "why.txt"} == {
        name: data for name, data in first.items() if not name.startswith((".hydra", ".svdbench", "__main__"))
    }
    assert "sweep.redo=true" in (kept / "why.txt").read_text()


def test_replay_and_compare_refuse_to_write_over_other_records(finished_run, tmp_path):
    assert replay.main([str(finished_run), "--out", str(finished_run)]) == 2
    sweep_a, sweep_b = tmp_path / "a", tmp_path / "b"
    for sweep in (sweep_a, sweep_b):
        (sweep / "0").mkdir(parents=True)
        (sweep / "0" / "results.json").write_bytes((finished_run / "results.json").read_bytes())
    out = tmp_path / "out"
    assert compare_main([str(sweep_a), "--out", str(out)]) == 0
    comparison = (out / "comparison.md").read_bytes()
    assert compare_main([str(sweep_b), "--out", str(out)]) == 2  # another sweep's comparison is there
    assert (out / "comparison.md").read_bytes() == comparison
    assert compare_main([str(sweep_a), "--out", str(out)]) == 0  # the same sweep's is simply made again


# ------------------------------------------------------------ 2. a failing write costs nothing already measured


def _limit_file_size(limit: int):
    def limit_it() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return limit_it


def test_a_failing_large_write_leaves_the_results_and_no_partial_file(tmp_path):
    """A real file-size limit (ulimit -f, 100 kB): the results fit, the exact frames and the filmstrip don't."""
    proc = subprocess.run(
        [sys.executable, "-m", "svdbench", "hydra.run.dir=run", *QUIET],
        cwd=tmp_path,
        env=offline_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=_limit_file_size(100_000),
    )
    run_dir = tmp_path / "run"
    assert proc.returncode == 1 and no_traceback(proc), proc.stderr[-3000:]
    result = RunResult.load(run_dir)
    assert result.status == "ok" and result.median_s > 0 and result.peak_memory_gib > 0
    assert "File too large" in result.file_errors["frames.npz"]
    assert "frames" not in result.files and not (run_dir / "frames.npz").exists()
    assert any("could not be written" in note for note in result.notes)
    assert not [p.name for p in run_dir.iterdir() if ".tmp" in p.name]  # no temporary file left either
    assert all(p.stat().st_size > 0 for p in run_dir.iterdir() if p.is_file() and p.name != ".svdbench.lock")
    assert "Could not write" in proc.stderr


def _mount_tmpfs(path: Path, options: str) -> None:
    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"this machine does not let the tests mount a tmpfs ({done.stderr.decode().strip()})")


@pytest.fixture
def small_disk(tmp_path):
    """A real 12 MiB file system; unmounted afterwards."""
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "size=12m")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


# A 12-step run that the disk fills under, in bytes or in inodes: about 100 s each on 2 cores, so in the slow set
# (CI runs it).
@pytest.mark.slow
@pytest.mark.parametrize("runs_out_of", ["bytes", "inodes"])
def test_a_disk_that_fills_up_mid_run_costs_no_measurement(tmp_path, runs_out_of):
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "size=12m" if runs_out_of == "bytes" else "size=64m,nr_inodes=200")
    try:
        run = start_cli(disk, "hydra.run.dir=run", "logger=none", "bench.progress=false", "num_inference_steps=12")
        log = disk / "run" / "__main__.log"
        wait_for(lambda: log.exists() and "cold call" in log.read_text())
        if runs_out_of == "bytes":
            _fill(disk, leave=64 * 1024)  # another program fills the disk meanwhile; 64 kB left
        else:
            _fill_inodes(disk)  # ... or takes every inode left
        _, stderr = run.communicate(timeout=300)
        assert run.returncode == 1 and "Traceback" not in stderr, stderr[-3000:]
        result = RunResult.load(disk / "run")  # the final version: it lists the files that could not be written
        assert result.status == "ok" and len(result.latency.calls_s) == 3 and result.memory is not None
        assert any("No space left on device" in why for why in result.file_errors.values()), result.file_errors
        run_dir = disk / "run"
        assert not [p.name for p in run_dir.iterdir() if ".tmp" in p.name]
        assert all(p.stat().st_size > 0 for p in run_dir.iterdir() if p.is_file() and p.name != ".svdbench.lock")
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def _fill(disk: Path, leave: int = 0) -> None:
    """Another program fills the disk: a file grown until the disk refuses more, then cut by `leave` bytes."""
    with open(disk / "filler", "wb", buffering=0) as filler:
        try:
            while True:
                filler.write(b"\0" * 65536)
        except OSError:
            pass
    if leave:
        os.truncate(disk / "filler", os.path.getsize(disk / "filler") - leave)


def _fill_inodes(disk: Path) -> None:
    """Another program takes every free inode: empty files until the file system refuses one more."""
    try:
        for n in range(100_000):
            (disk / f"filler-{n}").touch()
    except OSError:
        pass


# A two-job sweep on a real 12 MiB file system that another program fills between the jobs: about 40 s, slow set.
@pytest.mark.slow
def test_a_disk_that_fills_between_two_sweep_jobs_keeps_the_first_jobs_record(small_disk):
    args = ("-m", "hydra.sweep.dir=sweep", "cond.motion_bucket_id=60,180", *QUIET)
    sweep = start_cli(small_disk, *args)
    wait_for(lambda: (small_disk / "sweep" / "1").exists())  # job 0's process has ended, job 1's is starting
    kept = files_of(small_disk / "sweep" / "0")
    _fill(small_disk)
    _, stderr = sweep.communicate(timeout=300)
    assert sweep.returncode == 1 and "Traceback" not in stderr, stderr[-3000:]
    assert "the sweep stopped at job #1" in stderr and "No space left on device" in stderr, stderr[-3000:]
    assert "re-run the same command with hydra.sweep.dir=sweep to resume" in stderr
    assert files_of(small_disk / "sweep" / "0") == kept  # the finished job's record, byte for byte
    assert RunResult.load(small_disk / "sweep" / "0").status == "ok"
    leftovers = [p for p in (small_disk / "sweep").rglob("*") if ".tmp" in p.name]
    assert not leftovers and all(p.stat().st_size > 0 for p in (small_disk / "sweep").rglob("*.json"))
    (small_disk / "filler").unlink()  # space again: the same command resumes, job 0 is not measured twice
    resumed = run_cli(small_disk, *args)
    assert resumed.returncode == 0 and resumed.stderr.count("Skipping") == 1, resumed.stderr[-3000:]
    assert RunResult.load(small_disk / "sweep" / "1").status == "ok"


def test_a_file_system_without_free_inodes_is_refused_before_any_work(tmp_path):
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "size=64m,nr_inodes=32")  # room in bytes, but not for a run's files
    try:
        proc = run_cli(tmp_path, f"hydra.run.dir={disk / 'run'}", *QUIET)
        assert proc.returncode == 2 and no_traceback(proc)
        assert "free inodes" in proc.stderr and "MiB are free" in proc.stderr
        assert not (disk / "run").exists()
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_the_space_check_says_what_it_found_and_follows_the_settings(tmp_path):
    with pytest.raises(OutputLocationError, match="virtual file system with no storage"):
        check_output_location(Path("/proc/svdbench-run"), {"video": 1})
    full = needed_bytes(compose_config())
    small = needed_bytes(compose_config("save_frames=false", "logger=none", "metrics.pictures=false"))
    assert full["exact frames"] > 0 and small["exact frames"] == 0 and small["W&B copy"] == 0
    assert sum(small.values()) < 2 * 2**20 < sum(full.values())  # the tiny default writes well under 2 MiB
    proc = run_cli(tmp_path, "hydra.run.dir=/proc/svdbench-run", *QUIET)
    assert proc.returncode == 2 and "virtual file system" in proc.stderr and "0 MiB free" not in proc.stderr


# ------------------------------------------------------------------------- 3. readers survive malformed files


@pytest.mark.parametrize(
    "content, problem",
    [
        ('{"status": "ok", "lat', "is not valid JSON"),  # truncated
        ('{"name": "some other tool", "version": 3}', "is not an svdbench results file"),
        ("[1, 2, 3]", "is not an svdbench results file"),
        ('{"status": "ok", "latency": {"calls_s": "fast"}}', "latency: calls_s: expected a list"),
        ('{"status": "ok", "schema_version": 99}', "results schema version 99"),
    ],
)
def test_every_reader_names_the_bad_file_and_what_is_wrong(finished_run, tmp_path, content, problem, capsys, caplog):
    bad = tmp_path / "sweep" / "1"
    bad.mkdir(parents=True)
    (bad / "results.json").write_text(content)
    with pytest.raises(ResultsError, match=problem):
        RunResult.load(bad)
    (bad / ".hydra").mkdir()
    (bad / ".hydra" / "overrides.yaml").write_text("[]\n")
    assert replay.main([str(bad)]) == 2
    assert problem in capsys.readouterr().err
    # compare lists it as an unreadable job with a warning naming it, and compares the rest
    good = tmp_path / "sweep" / "0"
    good.mkdir()
    (good / "results.json").write_bytes((finished_run / "results.json").read_bytes())
    # (in this process: the command line of compare is tested in test_sweep.py; here, what it makes of the file)
    assert compare_main([str(tmp_path / "sweep")]) == 0
    skipped = [r.getMessage() for r in caplog.records if "Unreadable job" in r.getMessage()]
    assert len(skipped) == 1 and str(bad / "results.json") in skipped[0] and problem in skipped[0]
    assert not any(r.exc_info for r in caplog.records) and "Traceback" not in capsys.readouterr().err
    (good / "results.json").unlink()
    assert compare_main([str(tmp_path / "sweep")]) == 2
    err = capsys.readouterr().err
    assert problem in err and "Traceback" not in err


@pytest.mark.slow  # two sweeps in a row; CI runs it with -m slow
def test_a_resumed_sweep_redoes_a_job_whose_results_are_damaged(tmp_path):
    args = ["-m", "hydra.sweep.dir=sweep", "cond.motion_bucket_id=60", *QUIET]
    assert run_cli(tmp_path, *args).returncode == 0
    damaged = tmp_path / "sweep" / "0" / "results.json"
    truncated = damaged.read_text()[:100]
    damaged.write_text(truncated)
    again = run_cli(tmp_path, *args)
    assert again.returncode == 0 and no_traceback(again)
    assert "is not valid JSON" in again.stderr and "Skipping" not in again.stderr
    assert RunResult.load(damaged).status == "ok"  # redone
    assert (tmp_path / "sweep" / "0" / "previous-1" / "results.json").read_text() == truncated  # and kept


def test_results_written_before_the_schema_version_still_load(finished_run):
    old = json.loads((finished_run / "results.json").read_text())
    for key in ("schema_version", "file_errors"):  # what version 1 files did not have
        del old[key]
    result = RunResult.from_dict(old)
    assert result.schema_version == 1 and result.file_errors == {}
    assert result.median_s == old["latency"]["stats"]["median"]
    assert result.peak_memory_gib == old["memory"]["host_peak_gib"] and result.peak_memory_kind == "host resident"
