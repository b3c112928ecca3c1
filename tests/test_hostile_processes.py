"""Processes and messages that tell the truth: SIGKILL is not called an OOM kill without the kernel's counter
saying so; a job dies with its sweep; a resume waits for (or refuses, naming the pid) a live job of its sweep;
the interrupt message names a command that works; the console agrees with results.json; a missing Zeus asked
for by name is an error before the run.

Real processes and signals throughout; the slow tests run real sweeps of the tiny model (CI: pytest -m slow).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from svdbench.files.atomic import DirectoryLock
from svdbench.record.results import RunResult
from svdbench.sweep.jobs import killed_reason, oom_kills, previous_result, wait_for_live_job

from .conftest import FAST, offline_env, read_json, run_cli, start_cli, wait_for

QUIET = [*FAST, "logger=none"]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (dead, not yet reaped by its parent) counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def test_sigkill_names_the_oom_killer_only_with_its_counters_evidence():
    same = {"cgroup": 3, "kernel": 7}
    status, reason = killed_reason(same, dict(same))
    assert status == "error" and "killed by SIGKILL, not by the OOM killer" in reason
    status, reason = killed_reason(same, {"cgroup": 4, "kernel": 7})
    assert status == "oom" and "its cgroup's OOM-kill counter went up" in reason
    status, reason = killed_reason({}, {})
    assert status == "error" and "no OOM-kill counter" in reason  # nothing to go by: no claim of an OOM kill


def test_the_oom_counters_are_read_from_the_kernel():
    counters = oom_kills()
    vmstat = Path("/proc/vmstat")
    if vmstat.is_file() and "oom_kill " in vmstat.read_text():
        assert isinstance(counters.get("kernel"), int) and counters["kernel"] >= 0
    assert all(isinstance(v, int) for v in counters.values())


def test_a_resume_never_says_config_hash_none(tmp_path):
    RunResult(status="error", reason="The job's process was killed by SIGKILL.").save(tmp_path)
    previous, why = previous_result(tmp_path, "0123abcd")
    assert previous is None and "None" not in why and "no configuration recorded" in why


HOLDER = textwrap.dedent(
    """
    import sys, time
    from svdbench.files.atomic import DirectoryLock
    DirectoryLock(sys.argv[1]).acquire().announce()
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
    """
)


def hold_lock(directory: Path, seconds: float) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(directory), str(seconds)],
        env=offline_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_resume_refuses_a_live_job_naming_its_pid(tmp_path, capsys):
    holder = hold_lock(tmp_path, 60)
    try:
        with pytest.raises(SystemExit) as caught:
            wait_for_live_job(tmp_path, wait_s=0.5)
        assert caught.value.code == 2
        err = capsys.readouterr().err
        assert f"pid {holder.pid}" in err and f"kill {holder.pid}" in err and err.count("\n") == 1
    finally:
        holder.kill()
        holder.wait()


def test_a_resume_waits_for_a_live_job_that_ends(tmp_path):
    holder = hold_lock(tmp_path, 1.0)
    try:
        wait_for_live_job(tmp_path, wait_s=30)  # returns once the holder has ended
        assert holder.wait(timeout=5) == 0
        DirectoryLock(tmp_path).acquire().release()  # free now
    finally:
        holder.kill()


PARENT = textwrap.dedent(
    """
    import os, subprocess, sys, time
    from svdbench.sweep.jobs import _die_with_parent
    parent = os.getpid()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                             preexec_fn=lambda: _die_with_parent(parent))
    print(child.pid, flush=True)
    time.sleep(120)
    """
)


def test_a_job_dies_within_seconds_of_its_sweeps_process():
    """SIGKILL of a sweep's process (nothing of it runs to clean up): its job's process is gone right after."""
    parent = subprocess.Popen([sys.executable, "-c", PARENT], env=offline_env(), stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    assert alive(child)
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 5
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(child), "the job outlived its sweep's process"


def test_the_interrupt_message_names_a_command_that_works():
    from svdbench.__main__ import _next_step
    from svdbench.record import rundir

    rundir.set_interrupt_hint("X")
    try:
        assert _next_step() == "X"
    finally:
        rundir.INTERRUPT_HINT.clear()
    assert "run the same command again" in _next_step()


def test_zeus_asked_for_by_name_and_missing_is_an_error_before_the_run(tmp_path):
    import importlib.util

    if importlib.util.find_spec("zeus") is not None:
        pytest.skip("Zeus is installed here")
    proc = run_cli(tmp_path, *QUIET, "energy.source=zeus", "hydra.run.dir=run")
    assert proc.returncode == 2 and proc.stderr.startswith("error: energy.source=zeus: Zeus is not installed")
    assert not (tmp_path / "run").exists()


def test_the_last_line_names_results_json_only_as_it_is_on_disk(tmp_path, caplog):
    from svdbench.record.rundir import _log_outcome

    result = RunResult(status="error", reason="boom")
    _log_outcome(result, tmp_path, saved=False)
    assert "its first version only: the final write failed" in caplog.text


# ------------------------------------------------------------------------------------- real sweeps (slow)


def job_pid(job_dir: Path) -> int | None:
    """The pid of the process writing `job_dir`, from its lock file (DirectoryLock.announce)."""
    try:
        text = (job_dir / ".svdbench.lock").read_text()
    except OSError:
        return None
    return int(text.split(",")[0].split()[1]) if text.startswith("pid ") else None


@pytest.mark.slow  # a real tiny job, killed mid-run; CI runs it with -m slow
def test_a_sigkilled_job_is_recorded_as_killed_not_as_out_of_memory(tmp_path):
    sweep = start_cli(tmp_path, "-m", "hydra.sweep.dir=sweep", "cond.motion_bucket_id=100", *QUIET)
    job = tmp_path / "sweep" / "0"
    wait_for(lambda: (pid := job_pid(job)) is not None and pid != sweep.pid and alive(pid), timeout=240)
    before = oom_kills()
    os.kill(job_pid(job), signal.SIGKILL)
    _, err = sweep.communicate(timeout=240)
    record = read_json(job / "results.json")
    if oom_kills() != before:
        pytest.skip("a real OOM kill happened on this machine meanwhile")
    assert record["status"] == "error" and "killed by SIGKILL, not by the OOM killer" in record["reason"]
    assert "most likely" not in err and sweep.returncode == 1


@pytest.mark.slow  # two real tiny jobs and a resume; CI runs it with -m slow
def test_after_sigkill_of_the_sweep_its_job_ends_and_a_resume_runs_alone(tmp_path):
    args = ["-m", "hydra.sweep.dir=sweep", "cond.motion_bucket_id=100,120", *QUIET]
    sweep = start_cli(tmp_path, *args)
    job = tmp_path / "sweep" / "0"
    wait_for(lambda: (pid := job_pid(job)) is not None and pid != sweep.pid and alive(pid), timeout=240)
    child = job_pid(job)
    assert child is not None
    sweep.kill()  # SIGKILL to the sweep's process only, not its group: nothing of it runs to stop the job
    sweep.wait()
    deadline = time.monotonic() + 5
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(child), "the job outlived its sweep"
    resumed = run_cli(tmp_path, *args, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "config hash None" not in resumed.stderr
    assert [read_json(tmp_path / "sweep" / j / "results.json")["status"] for j in "01"] == ["ok", "ok"]
