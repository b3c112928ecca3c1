"""Records that are not regular files, or not whole: every reader (results, frames, a sweep's resume, replay,
compare and its gate) turns them into a reason, never a hang, a traceback or a machine out of memory.

The jobs are real records (results.json, .hydra/ config composed by Hydra, frames.npz) written without running
the model, so each case takes a fraction of a second.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from svdbench.compare.command import GATE_UNKNOWN, main
from svdbench.files.read import RESULTS_MAX_BYTES, UnreadableFile, load_npz_array, read_json
from svdbench.record.results import ResultsError, RunResult

from .conftest import FAST, compose_config

QUIET = [*FAST, "logger=none"]


def returns_quickly(call, fifo: Path, seconds: float = 20.0):
    """`call()` in a thread: its value, or its exception raised here; a call still blocked after `seconds` (on
    the FIFO `fifo`, if it is one: it is then opened for writing to release the call) fails the test."""
    import threading

    outcome: dict = {}

    def target() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:  # SystemExit included: re-raised in the test's thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        if Path(fifo).is_fifo():
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail(f"blocked for {seconds} s (on {fifo}?)")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def frames(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(2, 16, 32, 3), dtype=np.uint8)


def write_job(sweep: Path, name: str, overrides: list[str], video: np.ndarray | None) -> Path:
    """A job as a sweep leaves it: results.json, the .hydra/ config and (with `video`) frames.npz."""
    from svdbench.measure.timing import Stats

    job = sweep / name
    (job / ".hydra").mkdir(parents=True)
    OmegaConf.save(compose_config(*QUIET, *overrides), job / ".hydra" / "config.yaml")
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    result = RunResult(model="tiny", weights="random", num_frames=2)
    result.latency.calls_s = [1.0, 1.1]
    result.latency.stats = Stats.of(result.latency.calls_s)
    result.save(job)
    if video is not None:
        np.savez_compressed(job / "frames.npz", frames=video)
    return job


@pytest.fixture
def sweep(tmp_path) -> Path:
    """Three jobs: the baseline, a lossless mode (offload) with identical frames, and a third to spoil."""
    root = tmp_path / "sweep"
    write_job(root, "0", ["opt=none"], frames())
    write_job(root, "1", ["opt=offload"], frames())
    write_job(root, "2", ["opt=offload", "opt.tf32=true"], frames())
    return root


def make_fifo(path: Path) -> Path:
    path.unlink(missing_ok=True)
    os.mkfifo(path)
    return path


def spoil(path: Path, how: str) -> None:
    """Replace the file at `path` by something that is not a whole record of it."""
    if path.is_dir():
        os.rmdir(path)
    elif os.path.lexists(path):
        path.unlink()
    if how == "fifo":
        os.mkfifo(path)
    elif how == "dev-zero":
        path.symlink_to("/dev/zero")
    elif how == "directory":
        path.mkdir()
    elif how == "dangling":
        path.symlink_to(path.parent / "nowhere")
    elif how == "truncated-json":
        path.write_text('{"status": "ok", "latency": {"calls_s": [1.0,')
    elif how == "foreign-json":
        path.write_text('{"name": "some other tool", "version": 3}\n')
    elif how == "json-list":
        path.write_text("[1, 2, 3]\n")
    elif how == "empty":
        path.write_text("")
    elif how == "huge":
        with open(path, "wb") as handle:  # sparse: no disk used, but larger than the cap
            handle.truncate(RESULTS_MAX_BYTES + 1)
    elif how == "binary":
        path.write_bytes(b"\xff\xfe\x00garbage")
    else:
        raise AssertionError(how)


RESULTS_CASES = [
    "fifo",
    "dev-zero",
    "directory",
    "dangling",
    "truncated-json",
    "foreign-json",
    "json-list",
    "empty",
    "huge",
    "binary",
]


@pytest.mark.parametrize("how", RESULTS_CASES)
def test_a_results_file_that_is_not_a_record_is_a_reason(tmp_path, how):
    path = tmp_path / "results.json"
    spoil(path, how)
    with pytest.raises(ResultsError) as caught:
        returns_quickly(lambda: RunResult.load(tmp_path), path if how == "fifo" else tmp_path / "x")
    message = str(caught.value)
    assert str(path) in message and "\n" not in message


@pytest.mark.parametrize("how", ["fifo", "dev-zero", "directory", "truncated-json", "foreign-json", "huge"])
def test_compare_and_its_gate_list_an_unreadable_job_with_its_reason(sweep, tmp_path, capsys, how):
    spoil(sweep / "2" / "results.json", how)
    fifo = sweep / "2" / "results.json"
    code = returns_quickly(lambda: main([str(sweep), "--out", str(tmp_path / "out"), "--gate"]), fifo)
    captured = capsys.readouterr()
    assert code == GATE_UNKNOWN, captured.err
    assert "Traceback" not in captured.err
    markdown = (tmp_path / "out" / "comparison.md").read_text()
    assert "3 jobs (1 unreadable) compared." in markdown
    row = next(line for line in markdown.splitlines() if line.startswith("| 2 "))
    assert "unreadable" in row
    report = (tmp_path / "out" / "report.html").read_text()
    assert "3 jobs (1 unreadable)" in report
    assert "gate failed: 1 of 3 jobs (1 unreadable) not judged" in captured.err
    assert "2: its record cannot be read" in captured.err
    # With --allow-unknown the same comparison passes, and says what it let through.
    code = main([str(sweep), "--out", str(tmp_path / "out"), "--gate", "--allow-unknown"])
    assert code == 0 and "gate passed with 1 of 3 jobs" in capsys.readouterr().err


def test_six_of_nine_unreadable_jobs_are_counted_and_fail_the_gate(sweep, tmp_path, capsys):
    for n in range(3, 9):
        job = write_job(sweep, str(n), ["opt=offload"], frames())
        spoil(job / "results.json", RESULTS_CASES[n % len(RESULTS_CASES)])
    code = returns_quickly(lambda: main([str(sweep), "--out", str(tmp_path / "out"), "--gate"]), sweep / "x")
    assert code == GATE_UNKNOWN
    assert "9 jobs (6 unreadable)" in (tmp_path / "out" / "comparison.md").read_text()
    assert "9 jobs (6 unreadable)" in (tmp_path / "out" / "report.html").read_text()
    assert "gate passed" not in capsys.readouterr().err


NPZ_CASES = ["fifo", "dev-zero", "directory", "truncated", "no-frames-array", "not-an-archive", "pickled"]


def spoil_npz(path: Path, how: str) -> None:
    if how == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif how == "no-frames-array":
        path.unlink()
        np.savez_compressed(path, video=frames())
    elif how == "not-an-archive":
        path.write_text("not a zip archive\n")
    elif how == "pickled":
        path.unlink()
        np.savez(path, frames=np.array([{"a": 1}], dtype=object))
    else:
        spoil(path, how)


@pytest.mark.parametrize("how", NPZ_CASES)
def test_frames_that_cannot_be_read_leave_the_job_unjudged_with_the_reason(sweep, tmp_path, capsys, how):
    spoil_npz(sweep / "1" / "frames.npz", how)
    fifo = sweep / "1" / "frames.npz"
    code = returns_quickly(lambda: main([str(sweep), "--out", str(tmp_path / "out"), "--gate"]), fifo)
    err = capsys.readouterr().err
    assert code == GATE_UNKNOWN and "Traceback" not in err
    assert "1: frames cannot be read: " in err and "frames.npz" in err
    markdown = (tmp_path / "out" / "comparison.md").read_text()
    row = next(line for line in markdown.splitlines() if line.startswith("| 1 "))
    assert "unknown" in row


def test_a_baselines_unreadable_frames_leave_its_jobs_unjudged(sweep, tmp_path, capsys):
    spoil_npz(sweep / "0" / "frames.npz", "truncated")
    assert main([str(sweep), "--out", str(tmp_path / "out"), "--gate"]) == GATE_UNKNOWN
    assert capsys.readouterr().err.count("frames cannot be read") == 2


def test_npz_reader_names_what_is_wrong(tmp_path):
    path = tmp_path / "frames.npz"
    np.savez_compressed(path, frames=frames())
    assert load_npz_array(path, "frames").shape == (2, 16, 32, 3)
    with pytest.raises(UnreadableFile, match="has no array 'video'"):
        load_npz_array(path, "video")
    with pytest.raises(UnreadableFile, match="larger than"):
        load_npz_array(path, "frames", max_bytes=10)
    with zipfile.ZipFile(tmp_path / "other.npz", "w") as archive:  # a zip, but its member is not an array
        archive.writestr("frames.npy", b"\x93NUMPY garbage")
    with pytest.raises(UnreadableFile, match="not a whole .npz archive"):
        load_npz_array(tmp_path / "other.npz", "frames")


def test_json_reader_refuses_what_is_not_a_regular_file(tmp_path):
    fifo = make_fifo(tmp_path / "pipe.json")
    with pytest.raises(UnreadableFile, match="is a FIFO"):
        returns_quickly(lambda: read_json(fifo), fifo)
    (tmp_path / "zero.json").symlink_to("/dev/zero")
    with pytest.raises(UnreadableFile, match=r"a link to /dev/zero\) is a character device"):
        read_json(tmp_path / "zero.json")


@pytest.mark.parametrize("how", ["fifo", "dev-zero", "truncated-json", "foreign-json"])
def test_a_sweeps_resume_redoes_a_job_whose_record_cannot_be_read(tmp_path, how):
    from svdbench.sweep.jobs import previous_result

    spoil(tmp_path / "results.json", how)
    previous, why = returns_quickly(lambda: previous_result(tmp_path, "abc"), tmp_path / "results.json")
    assert previous is None and why == "its results.json could not be read"


@pytest.mark.parametrize("how", ["fifo", "dev-zero", "truncated-json"])
def test_replay_refuses_a_run_whose_record_cannot_be_read(tmp_path, capsys, how):
    from svdbench.replay import main as replay

    run = write_job(tmp_path, "run", ["opt=none"], None)
    spoil(run / "results.json", how)
    if how != "fifo":
        assert replay([str(run)]) == 2
    else:
        assert returns_quickly(lambda: replay([str(run)]), run / "results.json") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err


def test_replay_refuses_overrides_that_are_a_fifo(tmp_path, capsys):
    from svdbench.replay import main as replay

    run = write_job(tmp_path, "run", ["opt=none"], None)
    make_fifo(run / ".hydra" / "overrides.yaml")
    assert returns_quickly(lambda: replay([str(run)]), run / ".hydra" / "overrides.yaml") == 2
    assert "is a FIFO" in capsys.readouterr().err
