"""report.html of a run and of a sweep: written by the real commands, self-contained, and checked in Chromium."""

from __future__ import annotations

import io
import json
import os
import random
import shutil
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from markupsafe import escape as html_escape  # as Jinja2 escapes
from omegaconf import OmegaConf

from svdbench.compare.command import compare
from svdbench.measure.machine import MachineState
from svdbench.record.report import REPORT_FILE, num, write_run_report
from svdbench.record.results import RunResult

from .conftest import FAST, REPO, compose_config, read_json, run_cli, run_tiny

QUIET = [*FAST, "logger=none"]
SCREENSHOT = REPO / "docs" / "report-screenshot.png"
FAILURES = ("unsupported", "oom", "nan", "error", "interrupted")


class Links(HTMLParser):
    """Every src and href of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.links += [value for name, value in attrs if name in ("src", "href") and value]


def local_links(page: Path) -> list[Path]:
    """The files a page links to, checked to be relative links (no network, no absolute paths)."""
    parser = Links()
    parser.feed(page.read_text(encoding="utf-8"))
    files = []
    for link in parser.links:
        if link.startswith("#"):
            continue
        parts = urlsplit(link)
        assert not parts.scheme and not parts.netloc and not link.startswith("/"), link
        files.append(page.parent / unquote(parts.path))
    return files


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """One real run of the tiny model (its record written by svdbench.record.rundir.write_record)."""
    run_dir = tmp_path_factory.mktemp("tiny") / "run"
    assert run_tiny(run_dir).status == "ok"
    return run_dir


def synthetic_sweep(run_dir: Path, sweep: Path, n: int, media: bool = True) -> Path:
    """A sweep of `n` jobs made from one real run's record: opt x decode chunk x motion bucket settings (real
    Hydra compositions), results.json with varied latency, memory, steps and metrics, one job in eight failed.
    With `media`, the run's files (video, pictures, report) are copied into every job that finished."""
    record = read_json(run_dir / "results.json")
    rng = random.Random(0)
    configs: dict[tuple, dict] = {}
    for i in range(n):
        opt, chunk, bucket = ("none", "chunking")[i % 2], (None, 1, 2, 4, 8)[i // 2 % 5], 20 + 40 * (i // 10)
        overrides = [*QUIET, f"opt={opt}", f"opt.decode_chunk_size={'null' if chunk is None else chunk}"]
        overrides.append(f"cond.motion_bucket_id={bucket}")
        job = sweep / str(i)
        (job / ".hydra").mkdir(parents=True)
        key = (opt, chunk, bucket)
        if key not in configs:
            configs[key] = OmegaConf.to_container(compose_config(*overrides))
        OmegaConf.save(OmegaConf.create(configs[key]), job / ".hydra" / "config.yaml")
        (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
        data = json.loads(json.dumps(record))
        factor = 0.5 + rng.random()
        data["opt"] = opt
        data["latency"]["calls_s"] = [s * factor for s in data["latency"]["calls_s"]]
        data["latency"]["stats"].update(
            {k: data["latency"]["stats"][k] * factor for k in ("median", "mean", "min", "max")}
        )
        step = data["steps"]["s_per_step"] * factor
        data["steps"]["per_call_s"] = [[step * (1.6 if s == 0 else rng.uniform(0.9, 1.1)) for s in range(25)]] * 3
        data["memory"]["host_peak_gib"] *= rng.uniform(0.7, 1.3)
        data["metrics"] = {
            k: v * rng.uniform(0.9, 1.1) if isinstance(v, float) else v for k, v in data["metrics"].items()
        }
        data["provenance"]["overrides"] = overrides
        if i % 8 == 7:
            status = FAILURES[i // 8 % len(FAILURES)]
            data.update(status=status, reason=f"{status}: a synthetic failure of job {i}, with <markup> to escape")
            data.update(latency={}, phases=None, steps=None, throughput=None, memory=None, metrics=None, files={})
        elif media:
            for name in data["files"].values():
                shutil.copy(run_dir / name, job / name)
        (job / "results.json").write_text(json.dumps(data))
    return sweep


def test_a_single_run_writes_its_own_report(tiny_run):
    result = read_json(tiny_run / "results.json")
    assert result["files"]["report"] == REPORT_FILE
    page = tiny_run / REPORT_FILE
    html = page.read_text(encoding="utf-8")
    assert 'src="video.mp4"' in html and "filmstrip.png" in html and "flicker_plot.png" in html
    assert f"{result['latency']['stats']['median']:.4g} s" in html
    assert "warp_error" in html and "lower is better" in html and "<svg" in html
    assert "http://" not in html and "https://" not in html  # nothing from a network
    links = local_links(page)
    assert all(path.is_file() for path in links), [str(p) for p in links if not p.is_file()]
    assert {p.name for p in links} >= {"video.mp4", "filmstrip.png", "results.json", "steps.csv"}


def test_the_run_page_shows_startup_energy_cost_and_the_machines_warnings(tiny_run, tmp_path):
    result = RunResult.load(tiny_run / "results.json")
    html = (tiny_run / REPORT_FILE).read_text(encoding="utf-8")
    assert result.startup.time_to_first_video_s is not None and result.energy is not None
    assert f"time to first video <b>{num(result.startup.time_to_first_video_s)} s</b>" in html
    assert "energy per video <b>not measured</b>" in html  # no GPU and no RAPL on this machine
    assert html_escape(result.energy.missing["gpu"]) in html  # ... and why, beside it
    assert "cost per video" not in html and "no prices" in html  # no made-up prices: the table says so
    assert "Measured on a noisy or shared machine" not in html or result.environment.state.warnings

    # The same record priced, batched, metered and measured on a busy machine (edited, then rendered again).
    assert result.energy is not None and result.cost is not None and result.environment is not None
    result.batch_size, result.seeds = 2, [result.seed, result.seed + 1]
    result.energy.total_j, result.energy.sources = 123.0, {"cpu": "RAPL package"}
    result.cost.usd_per_video, result.cost.usd_per_1000_videos = 0.0125, 12.5
    result.environment.state = MachineState(warnings=["busy machine: a <synthetic> warning"])
    write_run_report(tmp_path / REPORT_FILE, tmp_path, result)
    html = (tmp_path / REPORT_FILE).read_text(encoding="utf-8")
    assert "latency per call of 2 videos" in html and f"seeds {result.seed}, {result.seed + 1}" in html
    assert "energy per video <b>123 J</b>" in html and "cpu</span>" in html
    assert "cost per video <b>$0.0125</b>" in html and "$12.5 per 1000" in html
    assert "Measured on a noisy or shared machine" in html and "a &lt;synthetic&gt; warning" in html


def test_a_failed_run_has_a_report_with_its_reason(tmp_path):
    result = run_tiny(tmp_path / "run", "opt=offload")  # offload needs a GPU: unsupported here
    assert result.status == "unsupported" and result.files["report"] == REPORT_FILE
    html = (tmp_path / "run" / REPORT_FILE).read_text(encoding="utf-8")
    assert "unsupported" in html and "no CUDA device" in html and "<video" not in html
    assert all(path.is_file() for path in local_links(tmp_path / "run" / REPORT_FILE))


def test_sweep_report_links_stay_relative_wherever_it_is_written(tiny_run, tmp_path):
    sweep = synthetic_sweep(tiny_run, tmp_path / "sweep", 8)
    comparison = compare(sweep)
    page = comparison.files["report"]
    html = page.read_text(encoding="utf-8")
    assert page == sweep / REPORT_FILE and html.count("<tr data-job=") == 8
    assert "synthetic failure of job 7, with &lt;markup&gt;" in html  # the failed job, its reason escaped
    assert html.count("<video") == 7 and 'href="#job-3"' in html  # a video per finished job, a linked point
    assert "python -m svdbench -m " in html
    assert all(path.is_file() for path in local_links(page))
    # Written elsewhere (python -m svdbench.compare DIR --out ...), the links lead back into the sweep.
    proc = run_cli(tmp_path, "sweep", "--out", "elsewhere", module="svdbench.compare")
    assert proc.returncode == 0, proc.stderr
    links = local_links(tmp_path / "elsewhere" / REPORT_FILE)
    assert "../sweep/0/video.mp4" in {os.path.relpath(p, tmp_path / "elsewhere") for p in links}
    assert all(path.is_file() for path in links)
    # Copied away whole, the sweep's page still finds every file.
    shutil.copytree(sweep, tmp_path / "copy")
    assert all(path.is_file() for path in local_links(tmp_path / "copy" / REPORT_FILE))


# --------------------------------------------------------------------------------------------------- browser


def chromium(profile: Path):
    """A headless Chromium (its profile in `profile`) driven through Debian's chromedriver; skips when Chromium
    is not installed."""
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver") or "/usr/bin/chromedriver"
    if binary is None or not Path(driver).is_file():
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1366,900",  # a laptop
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(service=Service(driver), options=options)
    # The page itself 1366 x 900 px, whatever room the window's frame takes.
    metrics = {"width": 1366, "height": 900, "deviceScaleFactor": 1, "mobile": False}
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    return browser


def save_screenshot(png: bytes, path: Path) -> None:
    """The screenshot as a small PNG (a palette of 256 colours)."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB").quantize(256)
    image.save(path, optimize=True)


@pytest.mark.slow
def test_sweep_report_in_a_browser(tmp_path):
    """A real sweep with a failing job, its report opened in headless Chromium like a user would."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    proc = run_cli(tmp_path, "-m", "hydra.sweep.dir=sweep", "opt=none,chunking,offload", *QUIET)
    assert proc.returncode == 1, proc.stderr[-3000:]  # offload is unsupported on a CPU: the sweep says so
    page = tmp_path / "sweep" / REPORT_FILE
    assert page.is_file(), proc.stderr[-3000:]
    browser = chromium(tmp_path / "chromium-profile")
    try:
        browser.get(page.as_uri())
        state = (
            "return Array.from(document.querySelectorAll('video')).map(v => [v.readyState, v.error && v.error.code])"
        )
        WebDriverWait(browser, 30).until(lambda b: all(ready >= 2 or error for ready, error in b.execute_script(state)))
        videos = browser.execute_script(state)
        assert len(videos) == 2 and all(ready >= 2 and error is None for ready, error in videos), videos
        screenshot = browser.get_screenshot_as_png()
        (tmp_path / "report.png").write_bytes(screenshot)
        if os.environ.get("SVDBENCH_UPDATE_SCREENSHOT") == "1":
            save_screenshot(screenshot, SCREENSHOT)

        def order() -> list[str]:
            return [row.get_attribute("data-job") for row in browser.find_elements(By.CSS_SELECTOR, "tr[data-job]")]

        def latencies() -> list[float]:
            cells = browser.find_elements(By.CSS_SELECTOR, "tr[data-job] td:nth-child(4)")
            return [float(c.get_attribute("data-v")) for c in cells if c.get_attribute("data-v")]

        header = browser.find_element(By.CSS_SELECTOR, "th[data-key=latency_s]")
        assert browser.execute_script("return arguments[0].cellIndex", header) == 3  # job, opt, status, latency_s
        before = order()
        assert before == ["0", "1", "2"]
        header.click()
        ascending, ascending_s = order(), latencies()
        header.click()
        descending, descending_s = order(), latencies()
        assert ascending_s == sorted(ascending_s) and descending_s == sorted(descending_s, reverse=True)
        assert len(ascending_s) == 2 and ascending != descending  # the rows moved: one of the two orders is new
        assert before != ascending or before != descending
        assert ascending[-1] == descending[-1] == "2"  # the job without a latency stays in the table, last

        failed = browser.find_element(By.CSS_SELECTOR, "tr[data-job='2']")
        reason = browser.find_element(By.CSS_SELECTOR, "tr[data-job='2'] + tr.reason")
        assert failed.is_displayed() and "unsupported" in failed.text
        assert reason.is_displayed() and "opt=offload is unsupported on device cpu" in reason.text
        card = browser.find_element(By.ID, "job-2")
        assert "unsupported" in card.text and "no CUDA device" in card.text
        assert browser.find_elements(By.CSS_SELECTOR, "svg a[href='#job-0']")  # a Pareto point links its job

        # The players: one button starts and stops all videos; the slider moves them together.
        paused = "return Array.from(document.querySelectorAll('video')).map(v => v.paused)"
        browser.find_element(By.ID, "play").click()
        WebDriverWait(browser, 10).until(lambda b: not any(b.execute_script(paused)))
        browser.find_element(By.ID, "play").click()
        assert all(browser.execute_script(paused))
        browser.execute_script(
            "const s = document.getElementById('scrub'); s.value = 0.5; s.dispatchEvent(new Event('input'))"
        )
        times = browser.execute_script("return Array.from(document.querySelectorAll('video')).map(v => v.currentTime)")
        assert times == pytest.approx([0.5, 0.5], abs=0.01)

        width = browser.execute_script("return document.documentElement.scrollWidth")
        assert width <= 1366, f"the page scrolls sideways at a laptop width ({width} px)"
        errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
        assert not errors, errors
    finally:
        browser.quit()


def test_charts_leave_out_steps_without_a_number():
    from svdbench.record.report import nice_ticks, step_chart

    chart = step_chart([("call 1", "#000", [0.5, float("nan"), 0.25])])
    assert chart is not None and "nan" not in chart.lines[0]["points"] and len(chart.dots) == 2
    assert step_chart([("call 1", "#000", [float("nan")])]) is None
    assert nice_ticks(0.0, 0.8) == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8])
