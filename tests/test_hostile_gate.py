"""A gate that passes on nothing: misuse of `compare --gate`, and modules that are not commands.

The gate passes only when every job was judged and none is worse than its mode is meant to be; a job that
cannot be judged fails it with its own exit status (GATE_UNKNOWN) unless --allow-unknown. Jobs are real records
written without running the model (tests/test_hostile_records.write_job).
"""

from __future__ import annotations

import pytest

from svdbench.compare.command import GATE_FAILED, GATE_UNKNOWN, main
from svdbench.record.results import RunResult

from .conftest import run_cli
from .test_hostile_records import frames, write_job


@pytest.fixture
def sweep(tmp_path):
    root = tmp_path / "sweep"
    write_job(root, "0", ["opt=none"], frames())
    write_job(root, "1", ["opt=offload"], frames())
    return root


def gate(sweep, tmp_path, *args: str) -> int:
    return main([str(sweep), "--out", str(tmp_path / "out"), "--gate", *args])


def test_every_job_judged_and_none_worse_passes(sweep, tmp_path, capsys):
    assert gate(sweep, tmp_path) == 0
    assert "gate passed: all 2 jobs judged" in capsys.readouterr().err


def test_a_job_worse_than_its_mode_fails(sweep, tmp_path):
    import numpy as np

    np.savez_compressed(sweep / "1" / "frames.npz", frames=frames(seed=5))  # offload, meant lossless, is not
    assert gate(sweep, tmp_path) == GATE_FAILED


@pytest.mark.parametrize("baseline", ["foo", "opt.name", "=none", ""])
def test_a_baseline_without_key_and_value_is_an_error(sweep, tmp_path, capsys, baseline):
    with pytest.raises(SystemExit) as caught:
        gate(sweep, tmp_path, "--baseline", baseline)
    assert caught.value.code == 2
    assert "give KEY=VALUE" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing written


def test_a_baseline_that_matches_no_job_is_an_error(sweep, tmp_path, capsys):
    assert gate(sweep, tmp_path, "--baseline", "opt.name=nnone") == 2
    err = capsys.readouterr().err
    assert "matches no job" in err and "gate passed" not in err
    assert not (tmp_path / "out").exists()


def test_the_baseline_option_as_a_separate_word_of_the_command_line_fails(sweep, tmp_path):
    """`--baseline foo` from a shell (no `=`): the real command, exit 2."""
    proc = run_cli(sweep.parent, "sweep", "--gate", "--baseline", "foo", module="svdbench.compare")
    assert proc.returncode == 2 and "gate passed" not in proc.stderr


@pytest.mark.parametrize("why", ["failed", "no frames", "no baseline"])
def test_a_job_that_cannot_be_judged_fails_unless_allowed(sweep, tmp_path, capsys, why):
    if why == "failed":
        RunResult(status="oom", reason="out of memory").save(sweep / "1")
    elif why == "no frames":
        (sweep / "1" / "frames.npz").unlink()
    else:
        write_job(sweep, "2", ["opt=offload", "seed=7"], frames())  # no opt=none job with seed 7
    assert gate(sweep, tmp_path) == GATE_UNKNOWN
    err = capsys.readouterr().err
    assert "gate failed: 1 of " in err and "not judged" in err and "--allow-unknown" in err
    assert gate(sweep, tmp_path, "--allow-unknown") == 0
    assert "gate passed with 1 of" in capsys.readouterr().err


def test_without_gate_unjudged_jobs_do_not_change_the_exit_status(sweep, tmp_path):
    RunResult(status="oom", reason="out of memory").save(sweep / "1")
    assert main([str(sweep), "--out", str(tmp_path / "out")]) == 0


@pytest.mark.parametrize("module", ["svdbench.compare.gate", "svdbench.compare.jobs", "svdbench.files.atomic"])
def test_a_module_that_is_not_a_command_says_so(tmp_path, module):
    proc = run_cli(tmp_path, str(tmp_path), module=module)
    assert proc.returncode == 2
    assert f"error: {module} is a module of svdbench, not a command" in proc.stderr
    assert "python -m svdbench.compare DIR [--gate]" in proc.stderr


def test_the_list_of_commands_is_every_module_that_runs_as_one():
    """COMMANDS (svdbench/__init__.py) names exactly the modules with a `__main__` block or a __main__.py: a new
    command left out would refuse to run, a module left in would run silently."""
    from pathlib import Path

    import svdbench

    root = Path(svdbench.__file__).parent
    found = set()
    for path in root.rglob("*.py"):
        if '__name__ == "__main__"' in path.read_text():
            name = ".".join(("svdbench", *path.relative_to(root).with_suffix("").parts))
            found.add(name.removesuffix(".__main__"))
    assert found == set(svdbench.COMMANDS)
