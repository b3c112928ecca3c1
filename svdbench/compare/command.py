"""Compare the jobs of a sweep: one table (Markdown + CSV), a memory/latency Pareto plot, and the faithfulness gate.

`python -m svdbench.compare SWEEP_DIR [--out DIR] [--baseline opt.name=none] [--gate] [--min-psnr-db DB]`

Exit status: 0 compared (jobs whose files cannot be read are skipped, each with a warning naming the file);
2 nothing to compare, or --out holds another directory's comparison, or an invalid --min-psnr-db;
4 with --gate: a job's frames are worse than its mode is meant to be (svdbench.compare.gate; the comparison is
written all the same).

Each job is compared with a baseline job: by default the one with `opt.name=none` whose settings
outside the `opt` group are equal (when several qualify, the one closest to the default options).
Ratios: speed-up = baseline latency / job latency, with an interval from the two medians' 95 % intervals;
memory saved = baseline peak - job peak, with an interval from the per-call peaks; a difference whose interval
holds no change is marked within noise. Flicker change = job - baseline; PSNR and max |difference| of the job's
exact frames (frames.npz) against the baseline's, and the verdict lossless / faithful / lossy / unknown
(docs/comparison.md).
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from svdbench.compare import gate
from svdbench.compare.claims import check_claims
from svdbench.compare.jobs import (
    CompareError,
    Job,
    assign_baselines,
    assign_verdicts,
    job_label,
    load_jobs,
    rows,
    save_pareto_plot,
    swept_keys,
    table_notes,
    to_markdown,
    write_csv,
)
from svdbench.files.atomic import DirectoryBusy, DirectoryLock, atomic_path, write_text_atomic


@dataclass
class Comparison:
    table: list[dict[str, Any]]
    markdown: str
    files: dict[str, Path]
    jobs: list[Job] = field(default_factory=list)

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
) -> Comparison:
    """comparison.md, comparison.csv and pareto.png of the jobs under `sweep_dir`, written into `out` (default
    the sweep directory). The files are derived, so a new comparison of the same directory replaces the old
    one; a comparison of another directory is refused (CompareError). `min_psnr_db` replaces the baselines'
    gate.min_psnr_db."""
    sweep_dir = Path(sweep_dir)
    jobs = load_jobs(sweep_dir)
    keys = swept_keys(jobs)
    assign_baselines(jobs, baseline, tuple(ignore))
    assign_verdicts(jobs, min_psnr_db, baseline)
    table = rows(jobs, keys)
    out = Path(out) if out else sweep_dir
    title = f"# Comparison of {sweep_dir.resolve()}"
    try:
        lock = DirectoryLock(out).acquire().announce()
    except DirectoryBusy as exc:
        raise CompareError(str(exc.strerror)) from None
    try:
        if out.resolve() != sweep_dir.resolve():  # the sweep's own comparison is simply made again
            _refuse_foreign_comparison(out / "comparison.md", title)
        markdown = to_markdown(table) + "\n" + "\n".join(_note_lines(table_notes(jobs, table))) + "\n"
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


def _refuse_foreign_comparison(path: Path, title: str) -> None:
    if not path.is_file():
        return
    first = (path.read_text(errors="replace").splitlines() or [""])[0]
    if first.startswith("# Comparison of ") and first != title:
        raise CompareError(
            f"{path.parent} already holds the comparison of another directory ({first[len('# Comparison of ') :]}). "
            "svdbench never replaces it: pass another --out, or move that comparison away."
        )


# Exit status of --gate when a job is worse than its mode is meant to be (0 and 2 are taken: see the docstring).
GATE_FAILED = 4


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
    parser.add_argument("--baseline", default="opt.name=none", help="KEY=VALUE selecting baseline jobs")
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
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        comparison = compare(args.sweep_dir, args.out, args.baseline, tuple(args.ignore), args.min_psnr_db)
    except CompareError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(comparison.markdown)
    print("written: " + ", ".join(str(p) for p in comparison.files.values()), file=sys.stderr)
    if args.gate:
        failures = comparison.gate_failures
        unjudged = [j.name for j in comparison.jobs if j.verdict is not None and j.verdict.verdict == gate.UNKNOWN]
        if unjudged:
            print(f"gate: not judged (verdict unknown, see the table): jobs {', '.join(unjudged)}", file=sys.stderr)
        for message in failures:
            print(f"gate failed: {message}", file=sys.stderr)
        if failures:
            return GATE_FAILED
        print("gate passed: no job is worse than its mode is meant to be.", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
