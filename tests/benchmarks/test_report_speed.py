"""Size and speed of a sweep's report.html for 50 jobs, against issue 17's targets (under 2 MB, under 2 s).

Not part of the default `pytest` run (marker `benchmark`); run with `pytest -m benchmark tests/benchmarks`.
The 50 jobs are one real tiny run's record copied with varied numbers (tests/test_report.py:synthetic_sweep),
loaded and compared as `python -m svdbench.compare` does; the page is written by the real report code.
"""

from __future__ import annotations

import time

import pytest

from svdbench.compare.jobs import assign_baselines, load_jobs, rows, swept_keys
from svdbench.compare.page import write_sweep_report
from svdbench.record.report import REPORT_FILE

from ..conftest import run_tiny
from ..test_report import synthetic_sweep

pytestmark = pytest.mark.benchmark

JOBS = 50
TARGET_S = 2.0
TARGET_BYTES = 2 * 2**20  # the page alone, without the media it links


@pytest.fixture(scope="module")
def sweep_of_50(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report-speed")
    assert run_tiny(tmp / "run").status == "ok"
    sweep = synthetic_sweep(tmp / "run", tmp / "sweep", JOBS, media=False)
    jobs = load_jobs(sweep)
    assign_baselines(jobs, "opt.name=none")
    return sweep, jobs, rows(jobs, swept_keys(jobs))


def test_sweep_report_of_50_jobs(benchmark, sweep_of_50):
    sweep, jobs, table = sweep_of_50
    page = sweep / REPORT_FILE

    def write():
        write_sweep_report(page, sweep, jobs, table, sweep_dir=sweep)

    start = time.perf_counter()
    write()  # the first page of the process: the templates are compiled too
    first_s = time.perf_counter() - start
    benchmark.pedantic(write, rounds=5, iterations=1, warmup_rounds=0)
    html, stats = page.read_text(encoding="utf-8"), benchmark.stats.stats
    size = page.stat().st_size
    benchmark.extra_info.update(first_s=first_s, median_s=stats.median, page_bytes=size, target_s=TARGET_S)
    assert html.count("<tr data-job=") == JOBS and html.count("<video") == sum(job.ok for job in jobs)
    assert size < TARGET_BYTES, f"{size / 2**20:.2f} MiB, over the {TARGET_BYTES / 2**20:.0f} MiB target"
    assert first_s < TARGET_S and stats.median < TARGET_S, f"first {first_s:.2f} s, median {stats.median:.2f} s"
