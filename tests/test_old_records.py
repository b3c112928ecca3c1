"""Records written by an older svdbench still load, replay and compare.

tests/data/schema3-sweep holds two real jobs of the tiny model written by svdbench at commit c160233 (results
schema 3; `num_inference_steps=2 bench.warmup=0 bench.repeats=1 logger=none`, job 1 with batch_size=3): their
results.json and .hydra/ config and overrides, and job 0's frames. Schema 3 wrote `flops` as a flat object that
counted one video's FLOPs whatever the batch, so its TFLOP/s and MFU were low by the batch size; reading it
gives today's typed record with the whole call's figures.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from svdbench.measure.flops import RunFlops
from svdbench.record.results import SCHEMA_VERSION, RunResult

OLD = Path(__file__).parent / "data" / "schema3-sweep"


@pytest.fixture
def old_sweep(tmp_path) -> Path:
    copy = tmp_path / "sweep"
    shutil.copytree(OLD, copy)
    return copy


def test_the_committed_records_are_of_an_older_schema():
    for job in ("0", "1"):
        assert json.loads((OLD / job / "results.json").read_text())["schema_version"] == 3 < SCHEMA_VERSION


def test_an_older_record_loads_with_its_flops_as_a_typed_record_of_the_whole_call():
    one, three = RunResult.load(OLD / "0"), RunResult.load(OLD / "1")
    raw = json.loads((OLD / "1" / "results.json").read_text())["flops"]
    assert one.ok and three.ok and three.batch_size == 3 and one.schema_version == 3
    assert isinstance(one.flops, RunFlops) and isinstance(three.flops, RunFlops)
    # A batch of one was right: read as it was written.
    assert one.flops.call.videos == 1
    assert one.flops.call.total_tflop == json.loads((OLD / "0" / "results.json").read_text())["flops"]["total_tflop"]
    # A batch of three counted one video: the call did three times that, at three times the rate.
    assert three.flops.call.videos == 3
    assert three.flops.call.denoising_tflop == pytest.approx(3 * raw["denoising_tflop"])
    assert three.flops.call.denoising_tflop == pytest.approx(3 * one.flops.call.denoising_tflop)
    achieved = three.flops.utilization
    assert achieved.denoising_tflops_per_s == pytest.approx(3 * raw["denoising_tflops_per_s"])
    assert achieved.mfu_denoising == pytest.approx(achieved.denoising_tflops_per_s / achieved.peak_tflops_per_s)
    assert three.flops.per_video_tflop == pytest.approx(raw["total_tflop"])


def test_an_older_record_written_again_reads_back_the_same(tmp_path):
    old = RunResult.load(OLD / "1")
    old.save(tmp_path)
    again = RunResult.load(tmp_path)
    assert again.flops == old.flops and again.throughput == old.throughput


def test_an_older_sweep_compares(old_sweep, tmp_path):
    from svdbench.compare.command import main

    out = tmp_path / "comparison"
    assert main([str(old_sweep), "--out", str(out)]) == 0
    with (out / "comparison.csv").open() as handle:
        rows = {row["job"]: row for row in csv.DictReader(handle)}
    assert sorted(rows) == ["0", "1"] and {row["status"] for row in rows.values()} == {"ok"}
    # The batch's MFU is the whole call's: three times what schema 3 wrote for it.
    raw = json.loads((OLD / "1" / "results.json").read_text())["flops"]["mfu_denoising"]
    assert float(rows["1"]["mfu"]) == pytest.approx(3 * raw)


@pytest.mark.slow  # a real run of the tiny model in a subprocess; CI runs it with -m slow
def test_an_older_record_replays(old_sweep, tmp_path, monkeypatch, capsys):
    from svdbench.replay import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("WANDB_MODE", "offline")
    out = tmp_path / "replay"
    main([str(old_sweep / "0"), "--out", str(out)])
    report = json.loads((out / "replay.json").read_text())
    assert report["status"] == ["ok", "ok"] and report["frames_hash"][0] == RunResult.load(OLD / "0").frames_hash
    # Settings were added since, so the config hash differs; random weights drawn another way give other frames.
    assert "config_hash" in report["differs"] and set(report["differs"]) <= {"config_hash", "frames_hash", "metrics"}
    assert report["latency_median_ratio"] > 0 and RunResult.load(out).schema_version == SCHEMA_VERSION
