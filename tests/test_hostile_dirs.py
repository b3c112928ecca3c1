"""A directory that is not empty is not free, and a file-system fault outside the record writer is one paragraph.

Every writer (a run, a sweep, a replay, a comparison, `metrics --pictures`) writes only into an empty directory
or one svdbench marked as its own for the same purpose (svdbench.files.ownership); these tests put foreign files,
other kinds of svdbench output, files and dangling links in the way, and check that nothing is replaced.
Faults are real: a path under a regular file, a file-size limit (RLIMIT_FSIZE, set in the child process only),
a lock file that cannot be created. The tests run as root here, which ignores permission bits, so no test
relies on chmod.
"""

from __future__ import annotations

import hashlib
import os
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from svdbench.files.ownership import (
    MARKER,
    DirectoryTaken,
    check_free,
    claim_directory,
    is_job_of,
    job_purpose,
    mark,
    read_marker,
)

from .conftest import FAST, offline_env, run_cli
from .test_hostile_records import frames, write_job

QUIET = [*FAST, "logger=none"]


def snapshot(directory: Path) -> dict[str, str]:
    """Every file under `directory` and a hash of its bytes: what must be unchanged after a refusal."""
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != ".svdbench.lock"
    }


def users_dir(path: Path) -> Path:
    """A directory holding a user's own files with the names svdbench writes."""
    path.mkdir(parents=True)
    for name in ("video.mp4", "report.html", "steps.csv"):
        (path / name).write_text(f"the user's own {name}\n")
    return path


# ------------------------------------------------------------------------------------------- the rule itself


def test_free_means_missing_or_empty_and_own_means_the_same_marker(tmp_path):
    how = "choose another"
    assert check_free(tmp_path / "new", "run", "a run", how) is False
    (tmp_path / "empty").mkdir()
    assert check_free(tmp_path / "empty", "run", "a run", how) is False
    (tmp_path / "locked").mkdir()
    (tmp_path / "locked" / ".svdbench.lock").write_text("pid 1\n")  # a crashed writer's lock: still free
    assert check_free(tmp_path / "locked", "run", "a run", how) is False
    assert claim_directory(tmp_path / "mine", "compare", "the comparison of X", how) is False
    assert read_marker(tmp_path / "mine") == {"kind": "compare", "purpose": "the comparison of X"}
    assert check_free(tmp_path / "mine", "compare", "the comparison of X", how) is True


@pytest.mark.parametrize(
    "content",
    ["a user file", "a hidden file", "an empty subfolder", "another kind", "another purpose", "a broken marker"],
)
def test_anything_else_is_refused_naming_the_directory_and_what_it_holds(tmp_path, content):
    target = tmp_path / "out"
    target.mkdir()
    if content == "a user file":
        (target / "notes.txt").write_text("mine")
    elif content == "a hidden file":
        (target / ".bashrc").write_text("mine")
    elif content == "an empty subfolder":
        (target / "data").mkdir()
    elif content == "another kind":
        mark(target, "sweep", "a sweep of settings 1234")
    elif content == "another purpose":
        mark(target, "compare", "the comparison of /elsewhere")
    else:
        (target / MARKER).write_text("{not json")
    before = snapshot(target)
    with pytest.raises(DirectoryTaken) as caught:
        claim_directory(target, "compare", "the comparison of /here", "pass another --out")
    message = str(caught.value.strerror)
    assert message.startswith(f"{target} is not empty") and "pass another --out" in message and "\n" not in message
    assert snapshot(target) == before


def test_a_file_or_a_dangling_link_in_the_way_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(DirectoryTaken, match="is a file, not a directory"):
        check_free(tmp_path / "file", "run", "a run", "elsewhere")
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    with pytest.raises(DirectoryTaken, match="which does not exist"):
        check_free(tmp_path / "link", "run", "a run", "elsewhere")


def test_a_sweep_counts_as_jobs_only_the_directories_it_made(tmp_path):
    sweep = tmp_path / "sweep"
    mark(sweep, "sweep", "a sweep of settings 1")
    mark(sweep / "0", "run", job_purpose(sweep))
    mark(sweep / "copied", "run", "a run")  # a run copied in by hand
    (sweep / "unmarked").mkdir()
    assert is_job_of(sweep / "0", sweep)
    assert not is_job_of(sweep / "copied", sweep) and not is_job_of(sweep / "unmarked", sweep)
    # A directory of an older sweep, or gathered by hand, without a sweep's marker: runs count, other outputs not.
    loose = tmp_path / "loose"
    mark(loose / "out", "compare", "the comparison of x")
    (loose / "job").mkdir()
    assert is_job_of(loose / "job", loose) and not is_job_of(loose / "out", loose)


# ------------------------------------------------------------------------------------------------ the run


@pytest.mark.parametrize("target", ["users_files", "sweep_root", "compare_out", "dangling", "under_a_file", "empty"])
def test_a_run_never_writes_into_a_directory_that_is_not_free(tmp_path, target):
    if target == "users_files":
        where = users_dir(tmp_path / "d")
    elif target == "sweep_root":
        where = tmp_path / "d"
        mark(where, "sweep", "a sweep of settings 1")
        (where / "report.html").write_text("the sweep's page\n")
    elif target == "compare_out":
        where = tmp_path / "d"
        mark(where, "compare", "the comparison of x")
        (where / "comparison.md").write_text("# Comparison of x\n")
    elif target == "dangling":
        where = tmp_path / "d"
        where.symlink_to(tmp_path / "nowhere")
    elif target == "under_a_file":
        (tmp_path / "f").write_text("a file")
        where = tmp_path / "f" / "run"
    before = snapshot(tmp_path)
    arg = "hydra.run.dir=" if target == "empty" else f"hydra.run.dir={where}"
    proc = run_cli(tmp_path, *QUIET, arg)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert snapshot(tmp_path) == before  # nothing written, nothing replaced
    if target != "empty":
        assert str(where) in proc.stderr
    if target == "users_files":
        assert "video.mp4" in proc.stderr and "report.html" in proc.stderr
    if target == "dangling":
        assert not os.path.exists(tmp_path / "nowhere")


def test_a_sweep_never_writes_into_a_run_directory(tmp_path):
    run = tmp_path / "run"
    mark(run, "run", "a run")
    (run / "report.html").write_text("the run's page\n")
    before = snapshot(tmp_path)
    proc = run_cli(tmp_path, "-m", f"hydra.sweep.dir={run}", "cond.motion_bucket_id=abc,300", *QUIET)
    assert proc.returncode == 2 and "svdbench's run output" in proc.stderr, proc.stderr[-2000:]
    assert snapshot(tmp_path) == before


def limited(max_bytes: int):
    """preexec_fn: the child may write files of at most `max_bytes` (ulimit -f); Python ignores SIGXFSZ, so an
    oversized write fails with EFBIG instead of killing the child."""
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))


def run_limited(cwd: Path, max_bytes: int, *args: str, module: str = "svdbench") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=offline_env(cwd),
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=limited(max_bytes),
    )


def test_a_file_size_limit_is_refused_before_hydra_writes_half_a_config(tmp_path):
    proc = run_limited(tmp_path, 8 * 1024, *QUIET, "hydra.run.dir=run")
    assert proc.returncode == 2 and "ulimit -f" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "run").exists()


def test_hydras_config_save_is_atomic_and_its_failure_one_paragraph(tmp_path, capsys):
    from omegaconf import OmegaConf

    from svdbench.sweep import plugins

    (tmp_path / "file").write_text("in the way")
    with pytest.raises(SystemExit) as caught:
        plugins.save_config_atomically(OmegaConf.create({"a": 1}), "config.yaml", tmp_path / "file" / ".hydra")
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot save the run's settings into ") and err.count("\n") == 1
    # In a sweep's launcher, the same failure is that job's: it raises for the launcher to record.
    plugins._LAUNCHING[:] = [True]
    try:
        with pytest.raises(plugins.JobCouldNotStart):
            plugins.save_config_atomically(OmegaConf.create({"a": 1}), "config.yaml", tmp_path / "file" / ".hydra")
    finally:
        plugins._LAUNCHING.clear()
    plugins.save_config_atomically(OmegaConf.create({"a": 1}), "config.yaml", tmp_path / "ok")
    assert (tmp_path / "ok" / "config.yaml").read_text() == "a: 1\n"
    assert [p.name for p in (tmp_path / "ok").iterdir()] == ["config.yaml"]  # no temporary file left


@pytest.mark.slow  # three sweeps (no model runs, but each starts Hydra and the comparison); CI runs -m slow
def test_a_sweep_resumes_into_its_own_directory_and_records_jobs_it_could_not_start(tmp_path):
    """Two jobs with invalid settings (no model is run): the sweep marks its root and both job directories; the
    same command resumes it; a job whose directory is blocked by a file is logged and the sweep goes on."""
    args = ["-m", "hydra.sweep.dir=sweep", "cond.motion_bucket_id=abc,300", *QUIET]
    first = run_cli(tmp_path, *args)
    assert first.returncode == 1, first.stderr[-2000:]
    sweep = tmp_path / "sweep"
    assert read_marker(sweep)["kind"] == "sweep"
    assert read_marker(sweep / "0") == {"kind": "run", "purpose": job_purpose(sweep)}
    again = run_cli(tmp_path, *args)
    assert again.returncode == 1 and "Sweep finished: 2 jobs: 2 error" in again.stderr, again.stderr[-2000:]
    assert (sweep / "0" / "previous-1" / "results.json").is_file()
    # Job 1's directory replaced by a user's file: the job is not run (nothing written there), job 0 is.
    import shutil

    shutil.rmtree(sweep / "1")
    (sweep / "1").write_text("the user's file\n")
    third = run_cli(tmp_path, *args)
    assert "Traceback" not in third.stderr and (sweep / "1").read_text() == "the user's file\n"
    assert "Job #1 not recorded" in third.stderr and "Sweep finished: 1 jobs: 1 error" in third.stderr


@pytest.mark.slow  # two sweeps; CI runs it with -m slow
def test_another_command_into_a_sweep_is_refused(tmp_path):
    proc = run_cli(tmp_path, "-m", "hydra.sweep.dir=sweep", "cond.motion_bucket_id=abc,xyz", *QUIET)
    assert proc.returncode == 1, proc.stderr[-2000:]
    before = snapshot(tmp_path)
    other = run_cli(tmp_path, "-m", "hydra.sweep.dir=sweep", "cond.motion_bucket_id=300,400", *QUIET)
    assert other.returncode == 2 and "holds another sweep" in other.stderr
    assert snapshot(tmp_path) == before


# ------------------------------------------------------------------------------------ replay and compare


def recorded(tmp_path: Path) -> Path:
    """A run directory as `python -m svdbench` leaves it (marker, results.json, .hydra/, a page)."""
    run = write_job(tmp_path, "run", ["opt=none"], frames())
    mark(run, "run", "a run")
    (run / "report.html").write_text("the run's page\n")
    return run


@pytest.mark.parametrize("target", ["sweep_root", "users_files", "a_file", "other_run"])
def test_replay_never_writes_into_a_directory_that_is_not_free(tmp_path, capsys, target):
    from svdbench.replay import main as replay

    run = recorded(tmp_path)
    out = tmp_path / "out"
    if target == "sweep_root":
        mark(out, "sweep", "a sweep of settings 1")
        (out / "report.html").write_text("the sweep's page\n")
    elif target == "users_files":
        users_dir(out)
    elif target == "a_file":
        out.write_text("x")
    else:
        recorded(out)
    before = snapshot(tmp_path)
    assert replay([str(run), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(out) in err and err.count("\n") == 1
    assert snapshot(tmp_path) == before


def test_compare_never_replaces_a_runs_own_page(tmp_path, capsys):
    from svdbench.compare.command import main

    run = recorded(tmp_path)
    before = snapshot(tmp_path)
    assert main([str(run)]) == 2
    err = capsys.readouterr().err
    assert "is not a sweep's directory" in err and "--out DIR" in err
    assert snapshot(tmp_path) == before
    # With --out into another run's directory, a user's folder, or under a file: refused as well.
    other = recorded(tmp_path / "more")
    users = users_dir(tmp_path / "users")
    (tmp_path / "f").write_text("x")
    before = snapshot(tmp_path)
    for out in (other, users, tmp_path / "f" / "out"):
        assert main([str(run), "--out", str(out)]) == 2, out
        assert capsys.readouterr().err.startswith("error: ")
    assert snapshot(tmp_path) == before
    # A new directory is made this comparison's own, and the same comparison may be made there again.
    assert main([str(run), "--out", str(tmp_path / "new")]) == 0
    assert main([str(run), "--out", str(tmp_path / "new")]) == 0
    assert read_marker(tmp_path / "new")["kind"] == "compare"
    assert main([str(other), "--out", str(tmp_path / "new")]) == 2  # another comparison: refused


def test_compare_on_an_older_sweep_directory_writes_beside_its_jobs_but_not_among_user_files(tmp_path, capsys):
    from svdbench.compare.command import main

    sweep = tmp_path / "sweep"
    write_job(sweep, "0", ["opt=none"], frames())
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    assert main([str(sweep)]) == 0 and (sweep / "comparison.md").is_file()
    assert main([str(sweep)]) == 0  # made again
    (sweep / "notes.txt").write_text("mine")
    assert main([str(sweep)]) == 2 and "notes.txt" in capsys.readouterr().err


def test_compare_that_cannot_write_says_so_in_one_paragraph(tmp_path, capsys):
    from svdbench.compare.command import WRITE_FAILED, main

    sweep = tmp_path / "sweep"
    write_job(sweep, "0", ["opt=none"], frames())
    (sweep / ".svdbench.lock").mkdir()  # the lock cannot be created, as on a read-only file system
    assert main([str(sweep)]) == WRITE_FAILED
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot write the comparison into {sweep}") and err.count("\n") == 1
    (sweep / ".svdbench.lock").rmdir()
    # A file-size limit (as on a disk that is full) in a child process: exit 3, no traceback, no partial files.
    proc = run_limited(tmp_path, 2048, "sweep", "--out", "out", module="svdbench.compare")
    assert proc.returncode == WRITE_FAILED and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "ulimit -f" in proc.stderr
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.endswith((".tmp.md", ".tmp.csv", ".tmp.html"))]


# ------------------------------------------------------------------------------------- metrics --pictures


@pytest.fixture
def video(tmp_path) -> Path:
    folder = tmp_path / "frames"
    folder.mkdir()
    from PIL import Image

    for i, frame in enumerate(np.random.default_rng(1).integers(0, 256, (3, 24, 32, 3), dtype=np.uint8)):
        Image.fromarray(frame).save(folder / f"{i:03d}.png")
    return folder


def test_metrics_pictures_only_into_a_free_folder_of_its_own(tmp_path, video, capsys):
    from svdbench.metrics.__main__ import main

    users = users_dir(tmp_path / "users")
    (tmp_path / "f").write_text("x")
    before = snapshot(tmp_path)
    for where in (users, tmp_path / "f", tmp_path / "f" / "pictures"):
        assert main([str(video), "--pictures", str(where)]) == 2
        captured = capsys.readouterr()
        assert captured.err.startswith("error: ") and captured.out == ""  # refused before anything is computed
    assert snapshot(tmp_path) == before
    assert main([str(video), "--pictures", str(tmp_path / "pics")]) == 0
    assert main([str(video), "--pictures", str(tmp_path / "pics")]) == 0  # the same pictures again
    assert sorted(p.name for p in (tmp_path / "pics").iterdir()) == [MARKER, "filmstrip.png", "flicker_plot.png"]


def test_metrics_pictures_on_a_full_disk_keep_the_figures(tmp_path, video):
    proc = run_limited(tmp_path, 4096, str(video), "--json", "--pictures", "pics", module="svdbench.metrics")
    assert proc.returncode == 3 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stdout.startswith("{") and "the pictures could not be written" in proc.stderr
    assert not [p for p in (tmp_path / "pics").iterdir() if ".tmp" in p.name]
