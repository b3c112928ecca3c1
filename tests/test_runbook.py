"""The GPU runbook's flow, for real on the CPU: `--dry-run` runs the same jobs with model=tiny."""

from __future__ import annotations

import json
import subprocess
import sys

from .conftest import REPO, offline_env


def test_runbook_dry_run_prints_the_table_and_the_claims(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "gpu_runbook.py"),
            "--dry-run",
            "--modes",
            "none,offload",
            "--steps",
            "2",
            "--warmup",
            "0",
            "--repeats",
            "1",
            "--out",
            str(tmp_path / "runbook"),
        ],
        cwd=tmp_path,
        env=offline_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = proc.stdout
    assert "| mode | status | median latency (s) | s/step |" in table
    assert "| none | ok |" in table
    assert "| offload | unsupported |" in table and "no CUDA device" in table
    assert "compile is 20-25% faster than none: not checked" in table
    assert "lowmem under 8 GB: not checked" in table
    rows = json.loads((tmp_path / "runbook" / "runbook.json").read_text())
    assert [r["mode"] for r in rows] == ["none", "offload"]
    assert rows[0]["median_s"] > 0 and rows[0]["host_peak_gib"] > 0
    assert (tmp_path / "runbook" / "none" / "results.json").is_file()
    assert (tmp_path / "runbook" / "runbook.md").read_text().strip() == table.strip()


def test_runbook_refuses_an_unknown_mode(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "gpu_runbook.py"), "--dry-run", "--modes", "warp_speed"],
        cwd=tmp_path,
        env=offline_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "Unknown mode(s) warp_speed" in proc.stderr
