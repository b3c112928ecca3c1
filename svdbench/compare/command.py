"""Compare the jobs of a sweep: one table (Markdown + CSV), a memory/latency Pareto plot, and the faithfulness gate.

`python -m svdbench.compare SWEEP_DIR [--out DIR] [--baseline opt.name=none] [--gate] [--min-psnr-db DB]`

Exit status: 0 compared (jobs whose files cannot be read are rows with the reason, and a warning naming the
file); 2 nothing to compare, an invalid option (--baseline without KEY=VALUE or matching no job, --min-psnr-db),
or an output directory that is not free (svdbench.files.ownership: not empty and not this comparison's own, a
file or a dangling link in the way); 3 the comparison could not be written (a full disk, a read-only file
system, a file-size limit); with --gate: 4 a job's frames are worse than its mode is meant to be
(svdbench.compare.gate), 5 a job could not be judged (it failed, has no frames or baseline, or cannot be read),
unless --allow-unknown. The comparison is written all the same.

Each job is compared with a baseline job: by default the one with `opt.name=none` whose settings
outside the `opt` group are equal (when several qualify, the one closest to the default options).
Ratios: speed-up = baseline latency / job latency, with an interval from the two medians' 95 % intervals;
memory saved = baseline peak - job peak, with an interval from the per-call peaks; a difference whose interval
holds no change is marked within noise. Flicker change = job - baseline; PSNR and max |difference| of the job's
exact frames (frames.npz) against the baseline's, and the verdict lossless / faithful / lossy / unknown
(docs/comparison.md). Jobs that made quality samples (quality.images x quality.seeds) are judged on all of them,
paired with the baseline's by image and seed, with a 95 % interval per metric (VMAF, PSNR, SSIM, tOF, motion,
flicker) and the verdict inconclusive where the interval holds the threshold; --json prints the verdicts as JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from svdbench.compare import gate, samples
from svdbench.compare.claims import check_claims
from svdbench.compare.jobs import (
    CompareError,
    Job,
    assign_baselines,
    assign_verdicts,
    job_count,
    job_label,
    load_jobs,
    rows,
    save_pareto_plot,
    swept_keys,
    table_notes,
    to_markdown,
    write_csv,
)
from svdbench.files.atomic import DirectoryBusy, DirectoryLock, atomic_path, describe_os_error, write_text_atomic
from svdbench.files.ownership import DirectoryTaken, claim_directory, contents, read_marker
from svdbench.quality.verdict import INCONCLUSIVE
from svdbench.record.results import RESULTS_FILE


@dataclass
class Comparison:
    table: list[dict[str, Any]]
    markdown: str
    files: dict[str, Path]
    jobs: list[Job] = field(default_factory=list)

    @property
    def unjudged(self) -> list[Job]:
        """Jobs the gate cannot judge: a verdict of unknown (failed, no frames, no baseline, unreadable), or
        inconclusive (the quality samples' interval holds the threshold: more samples would decide)."""
        return [j for j in self.jobs if j.verdict is None or j.verdict.verdict in (gate.UNKNOWN, INCONCLUSIVE)]

    @property
    def gate_failures(self) -> list[str]:
        """One paragraph per job whose frames are worse than its mode is meant to be (svdbench.compare.gate)."""
        return [
            gate.failure_message(j.name, j.verdict) for j in self.jobs if j.verdict is not None and j.verdict.failed
        ]


def compare(
    sweep_dir: Path,
    out: Path | None = None,
    baseline: str = "opt.name=none",
    ignore: tuple[str, ...] = (),
    min_psnr_db: float | None = None,
    require_baseline: bool = False,
) -> Comparison:
    """comparison.md, comparison.csv and pareto.png of the jobs under `sweep_dir`, written into `out` (default
    the sweep directory). The files are derived, so a new comparison of the same directory replaces the old
    one; a directory that is not free for it is refused (CompareError, `claim_output`); a file that cannot be
    written raises CompareWriteError. `min_psnr_db` replaces the baselines' gate.min_psnr_db. With
    `require_baseline` (a --baseline the user gave), a baseline that matches no job is a CompareError."""
    sweep_dir = Path(sweep_dir)
    jobs = load_jobs(sweep_dir)
    keys = swept_keys(jobs)
    assign_baselines(jobs, baseline, tuple(ignore))
    if require_baseline and not any(job.baseline is not None for job in jobs):
        raise CompareError(
            f"--baseline {baseline} matches no job under {sweep_dir} (of {job_count(jobs)}), so no job could be "
            "compared or judged. Give KEY=VALUE of a setting and value that a job has, e.g. --baseline opt.name=none "
            "(comparison.csv and the jobs' .hydra/overrides.yaml show their settings)."
        )
    assign_verdicts(jobs, min_psnr_db, baseline)
    table = rows(jobs, keys)
    out = Path(out) if out else sweep_dir
    title = f"# Comparison of {sweep_dir.resolve()}"
    claim_output(sweep_dir, out)
    try:
        lock = DirectoryLock(out).acquire().announce()
    except DirectoryBusy as exc:
        raise CompareError(str(exc.strerror)) from None
    except OSError as exc:  # the lock file cannot be made: a read-only file system, a full disk
        raise CompareWriteError(_cannot_write(out, exc)) from None
    try:
        markdown = to_markdown(table) + "\n" + "\n".join(_note_lines(table_notes(jobs, table))) + "\n"
        markdown = f"{job_count(jobs)} compared.\n\n{markdown}"
        claims = check_claims(jobs)
        files = {"markdown": out / "comparison.md", "csv": out / "comparison.csv"}
        text = f"{title}\n\nBaseline: {baseline}\n\n{markdown}"
        if claims:
            text += "\n## Claims of the diffusers guide\n\n" + "\n".join(claims) + "\n"
        write_text_atomic(files["markdown"], text)
        with atomic_path(files["csv"]) as tmp:
            write_csv(table, tmp)
        plot = save_pareto_plot(jobs, keys, out / "pareto.png")
        if plot:
            files["pareto"] = plot
        from svdbench.compare.plots import PICTURE as BATCH_PICTURE
        from svdbench.compare.plots import batch_sizes, save_batch_plot

        results = [j.result for j in jobs]
        if len(batch_sizes(results)) > 1:  # experiment=batch: throughput and memory against batch size
            with atomic_path(out / BATCH_PICTURE) as tmp:
                if save_batch_plot(results, tmp):
                    files["batch"] = out / BATCH_PICTURE
        profiled = [(job_label(j, keys), j.result.profile) for j in jobs if j.result.profile is not None]
        if profiled:  # the jobs run with profile.enabled=true: where the time went, side by side
            from svdbench.measure.profile import save_profile_comparison

            with atomic_path(out / "profiles.png") as tmp:
                if save_profile_comparison(profiled, tmp):
                    files["profiles"] = out / "profiles.png"
        from svdbench.compare.page import write_sweep_report
        from svdbench.record.report import REPORT_FILE

        files["report"] = out / REPORT_FILE
        with atomic_path(files["report"]) as tmp:
            write_sweep_report(tmp, out, jobs, table, sweep_dir=sweep_dir, baseline=baseline)
    except OSError as exc:
        raise CompareWriteError(_cannot_write(out, exc)) from None
    finally:
        lock.release()
    shown = markdown + ("\n" + "\n".join(claims) + "\n" if claims else "")
    return Comparison(table=table, markdown=shown, files=files, jobs=jobs)


def _note_lines(notes: list[str]) -> list[str]:
    """Notes as Markdown: a paragraph each, list items kept as lists."""
    lines = []
    for note in notes:
        if note.startswith("  - "):
            lines.append(note[2:])
        else:
            lines += ["", note] if lines else [note]
    return lines


class CompareWriteError(OSError):
    """The comparison's files could not be written (exit status 3)."""


# What a comparison writes: the files of an older sweep directory (no marker) that a new comparison replaces.
OUTPUTS = ("comparison.md", "comparison.csv", "pareto.png", "batch.png", "profiles.png", "report.html")


def _cannot_write(out: Path, exc: OSError) -> str:
    where = exc.filename or out
    return (
        f"cannot write the comparison into {out} ({where}: {describe_os_error(exc)}). Free some space, or write it "
        "elsewhere with --out DIR (a new or empty directory on a writable disk)."
    )


def claim_output(sweep_dir: Path, out: Path) -> None:
    """CompareError unless `out` may take this comparison (svdbench.files.ownership): a new or empty directory
    (then marked as this comparison's), one marked as this comparison's, or the compared sweep's own directory
    (its marker, or, for a sweep written before markers, a directory holding only job directories, Hydra's
    files and an earlier comparison). Never a run's directory, nor one holding files of anyone else."""
    how = "pass --out DIR (a new or empty directory), or move that directory's contents away"
    if out.resolve() == sweep_dir.resolve():
        marker = read_marker(out)
        kind = marker.get("kind") if marker else None
        if kind == "sweep":
            return  # a sweep's own comparison, made again
        if marker is None and not (out / RESULTS_FILE).exists():
            files = [n for n in contents(out) if not n.endswith("/")]
            foreign = [n for n in files if n not in OUTPUTS and n != "multirun.yaml" and not n.endswith(".log")]
            if not foreign:
                return  # an older sweep's directory: jobs, Hydra's files and its comparison
            raise CompareError(
                f"{out} holds files that are not a comparison's ({', '.join(foreign[:5])}), so svdbench will not "
                f"write its comparison there: {how}."
            )
        what = f"svdbench's {kind} output" if kind else f"a run's record ({RESULTS_FILE})"
        raise CompareError(
            f"{out} is not a sweep's directory: it holds {what}, whose own page and files a comparison would "
            f"replace. To compare it, {how}."
        )
    try:
        claim_directory(out, "compare", f"the comparison of {sweep_dir.resolve()}", how)
    except DirectoryTaken as exc:
        raise CompareError(str(exc.strerror)) from None
    except OSError as exc:
        raise CompareWriteError(_cannot_write(out, exc)) from None


# Exit statuses (see the docstring): the comparison could not be written; with --gate, a job is worse than its
# mode is meant to be; a job could not be judged (without --allow-unknown).
WRITE_FAILED = 3
GATE_FAILED = 4
GATE_UNKNOWN = 5


def _psnr_db(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of dB (e.g. 35.5)") from None
    if not (value > 0 and value < float("inf")):
        raise argparse.ArgumentTypeError(f"{text} dB is not a PSNR threshold: give a number of dB above 0")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m svdbench.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path, help="a sweep directory (outputs/sweeps/<date>/<time>)")
    parser.add_argument("--out", type=Path, help="where to write comparison.md/.csv and pareto.png")
    parser.add_argument("--baseline", help="KEY=VALUE selecting baseline jobs (default opt.name=none)")
    parser.add_argument(
        "--allow-unknown",
        action="store_true",
        help=f"with --gate: pass even if some jobs could not be judged (else exit {GATE_UNKNOWN})",
    )
    parser.add_argument(
        "--ignore",
        action="append",
        default=[],
        metavar="KEY",
        help="a setting that may differ from the baseline's, e.g. max_guidance_scale (repeatable)",
    )
    parser.add_argument(
        "--gate",
        action="store_true",
        help=f"exit {GATE_FAILED} if a job's frames are worse than its mode is meant to be (a mode meant to be "
        "lossless that is not, one meant to be faithful that is lossy); docs/comparison.md",
    )
    parser.add_argument(
        "--min-psnr-db",
        type=_psnr_db,
        metavar="DB",
        help="PSNR threshold of the verdict 'faithful' (default: each baseline job's gate.min_psnr_db)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help='print {"jobs": [...]} instead of the table: per job its verdict and, with quality samples, per metric '
        "the mean, its 95 %% interval and n (the files are written all the same)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    baseline = args.baseline if args.baseline is not None else "opt.name=none"
    key, equals, _ = baseline.partition("=")
    if not equals or not key.strip():
        parser.error(f"--baseline {baseline}: give KEY=VALUE, e.g. --baseline opt.name=none")
    try:
        comparison = compare(
            args.sweep_dir, args.out, baseline, tuple(args.ignore), args.min_psnr_db, args.baseline is not None
        )
    except CompareError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except CompareWriteError as exc:
        print(f"error: {exc.strerror or exc}", file=sys.stderr)
        return WRITE_FAILED
    if args.json:
        print(json.dumps({"jobs": [samples.job_json(job) for job in comparison.jobs]}, indent=1, allow_nan=False))
    else:
        print(comparison.markdown)
    print("written: " + ", ".join(str(p) for p in comparison.files.values()), file=sys.stderr)
    if args.gate:
        failures = comparison.gate_failures
        unjudged = comparison.unjudged
        for message in failures:
            print(f"gate failed: {message}", file=sys.stderr)
        if failures:
            return GATE_FAILED
        if unjudged:
            shown = "; ".join(
                f"{j.name}: {_short(j.verdict.reason if j.verdict else 'no verdict')}" for j in unjudged[:5]
            )
            shown += f"; and {len(unjudged) - 5} more, see the table" if len(unjudged) > 5 else ""
            allowed = args.allow_unknown
            print(
                f"gate {'passed with' if allowed else 'failed:'} {len(unjudged)} of {job_count(comparison.jobs)} not "
                f"judged ({shown}). "
                + (
                    "--allow-unknown lets them pass."
                    if allowed
                    else "The gate passes only when every job is judged: fix those jobs (save_frames=true, a "
                    "baseline job, a readable record), or pass --allow-unknown to accept them unjudged."
                ),
                file=sys.stderr,
            )
            if not allowed:
                return GATE_UNKNOWN
            return 0
        print(
            f"gate passed: all {job_count(comparison.jobs)} judged, none worse than its mode is meant to be.",
            file=sys.stderr,
        )
    return 0


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


if __name__ == "__main__":
    sys.exit(main())
