"""The run directory: where one run's record lives, and the one place that writes it.

One rule everywhere a record is written (runs, sweep jobs, replays): a directory holds one run's record
and is written by one process.

- Before Hydra writes anything (`RunDirGuard.on_run_start`, a Hydra callback), the output location is
  checked (writable, a real disk with room and inodes for what these settings write), the directory's
  lock is taken (`svdbench.files.atomic.DirectoryLock`), and a directory that already holds another run's record
  is refused with exit status 2. A sweep's job directories are the sweep's to manage (`svdbench.sweep.jobs`):
  a resumed job sets its earlier record aside (`set_aside`) instead of replacing it.
- After the measurement (`write_record`): results.json first, small and atomic, so the measured numbers are
  on disk before anything large is written; then the artifacts, smallest first (error.txt, steps.csv,
  pictures, video.mp4, frames.npz), each through a temporary name; a write that fails (full disk, no
  inodes, a file-size limit) becomes an entry in `file_errors` and a warning, never a traceback or a
  truncated file; then results.json again with the files; then the W&B copy.
"""

from __future__ import annotations

import errno
import logging
import os
import shlex
import shutil
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from svdbench.files.atomic import (
    RESERVE_FILE,
    SPARE_INODE_FILE,
    DirectoryBusy,
    DirectoryLock,
    atomic_path,
    describe_os_error,
    write_text_atomic,
)
from svdbench.files.ownership import DirectoryTaken, check_free, job_purpose, mark, unusable_location
from svdbench.record.identity import environment, is_presentation, provenance
from svdbench.record.results import RESULTS_FILE, ResultsError, RunResult
from svdbench.settings.config import QUALITY_SET_SIZE, SWEEP_ENV, RunConfig
from svdbench.settings.dotted import flatten

log = logging.getLogger("svdbench")

STEPS_FILE = "steps.csv"
ERROR_FILE = "error.txt"
OVERRIDES_FILE = Path(".hydra") / "overrides.yaml"
SWEEP_FILE = "multirun.yaml"  # Hydra's record of the sweep's settings, in the sweep directory
# Free inodes a run needs: its files, their temporary names, the W&B run's files.
INODES_NEEDED = 64
RESERVE_BYTES = 512 * 1024  # in RESERVE_FILE (svdbench.files.atomic)


class OutputLocationError(OSError):
    """The output directory cannot be created or written, or its disk is (nearly) full."""


class RecordExists(OSError):
    """The directory already holds another run's record."""


# ---------------------------------------------------------------------------------------------- before


def nearest_existing(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not path.exists():
        path = path.parent
    return path


# The purposes a run directory's marker (svdbench.files.ownership) records.
RUN_PURPOSE = "a run"


# The largest file of a run's record itself: Hydra's settings (.hydra/hydra.yaml), results.json. Under a
# file-size limit (ulimit -f) below this, the record could not be written; above it, a larger artifact that
# does not fit (video, frames) is listed in file_errors and the measurement is kept.
RECORD_FILE_BYTES = 64 * 1024


def check_file_size_limit() -> None:
    """OutputLocationError when this process may not write even the run's record (ulimit -f)."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    if soft != resource.RLIM_INFINITY and soft < RECORD_FILE_BYTES:
        raise OutputLocationError(
            f"This process may write files of at most {soft / 1024:.0f} KiB (the file-size limit, ulimit -f), and "
            f"a run's own record (its settings in .hydra/, results.json) needs files of up to "
            f"{RECORD_FILE_BYTES // 1024} KiB, so it would stop half-way with files cut short. Raise the limit "
            "(ulimit -f unlimited, or at least the size of the video and frames the run writes)."
        )


def check_output_location(path: Path, needed: dict[str, int]) -> None:
    """Raise OutputLocationError unless `path` can become a writable directory with room for `needed`
    (bytes by what they are for)."""
    where = "hydra.run.dir=... (or hydra.sweep.dir=... for -m)"
    unusable = unusable_location(path)
    if unusable:
        raise OutputLocationError(
            f"Cannot create the output directory {path}: {unusable}. Choose another location with {where}, or "
            "remove what is in the way."
        )
    existing = nearest_existing(path)
    if not existing.is_dir():
        raise OutputLocationError(
            f"Cannot create the output directory {path}: {existing} is a file, not a directory. Choose another "
            f"location with {where}, or move that file away."
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputLocationError(
            f"Cannot write the output directory {path}: {existing} is not writable by this user. Run from a "
            f"directory you can write to, or set {where} to one."
        )
    stats = os.statvfs(existing)
    if stats.f_blocks == 0:
        raise OutputLocationError(
            f"Cannot write run outputs under {existing}: it is on a virtual file system with no storage (such as "
            f"/proc or /sys), not on a disk. Choose a directory on a disk with {where}."
        )
    free = stats.f_bavail * stats.f_frsize
    total = sum(needed.values())
    if free < total:
        parts = ", ".join(f"{what} {size / 2**20:.1f} MiB" for what, size in needed.items() if size)
        raise OutputLocationError(
            f"Not enough disk space for the run's outputs in {existing}: {free / 2**20:.1f} MiB free, about "
            f"{total / 2**20:.1f} MiB needed ({parts}). Free some space, write elsewhere with {where}, or leave out "
            "the largest files (save_frames=false, metrics.pictures=false, logger=none)."
        )
    check_file_size_limit()
    if stats.f_files and stats.f_favail < INODES_NEEDED:
        raise OutputLocationError(
            f"No room for the run's files in {existing}: the file system has {stats.f_favail} free inodes (file "
            f"entries) and a run needs about {INODES_NEEDED}, although {free / 2**20:.0f} MiB are free. Delete "
            f"unneeded files there (old runs under outputs/), or write elsewhere with {where}."
        )


def needed_bytes(config: DictConfig) -> dict[str, int]:
    """What a run with these settings writes, in bytes, by file: an upper estimate for the space check."""
    try:
        raw = int(config.num_frames) * int(config.height) * int(config.width) * 3  # one video
        batch = int(config.batch_size)
        pictures = bool(config.metrics.enabled and config.metrics.pictures)
        wandb = config.logger.name == "wandb"
        save_frames = bool(config.save_frames)
        profiled = bool(config.profile.enabled)
        images = str(config.quality.images)
        samples = int(config.quality.seeds) * (int(images) if images.isdigit() else QUALITY_SET_SIZE)
    except Exception:  # values the schema will reject with a better message
        return {"logs and results": 2**20}
    video = raw // 4 + 2**16  # H.264 of noise at quality 8; real content is far smaller
    picture_bytes = 4 * 2**20 if pictures else 0  # filmstrip (8 thumbnails at most 160 px high) and a plot
    return {
        "exact frames": batch * raw + 2**16 if save_frames else 0,  # every video; noise does not compress
        "video": video,
        "pictures": picture_bytes,
        "W&B copy": video + picture_bytes + 2**20 if wandb else 0,
        "profile trace": 32 * 2**20 if profiled else 0,  # gzipped; docs/profile.md has measured sizes
        "quality samples": samples * raw,  # samples.npz: every image x seed's exact frames (a folder: counted as 8)
        "logs and results": 2**20,
    }


def existing_record(directory: Path) -> str | None:
    """A description of the run record in `directory`, or None when it holds none."""
    directory = Path(directory)
    results, overrides = directory / RESULTS_FILE, directory / OVERRIDES_FILE
    if results.is_file():
        try:
            old = RunResult.load(results)
        except ResultsError:
            return f"a results.json that svdbench cannot read ({results})"
        return (
            f"the record of a run of model={old.model}, opt={old.opt} (status {old.status}, started {old.started_at})"
        )
    if overrides.is_file():
        return f"the configuration of an earlier run that wrote no results ({overrides})"
    return None


def claim(directory: Path, *, in_sweep: bool = False, sweep: str | None = None) -> DirectoryLock:
    """Take `directory` for this process: its lock, the guarantee that it is empty or a run directory svdbench
    made for the same purpose (its marker, svdbench.files.ownership: a sweep's job directory is made by the
    sweep), and (outside a sweep) that it holds no other run's record. Raises DirectoryBusy, DirectoryTaken or
    RecordExists with a message that says how to proceed."""
    purpose = job_purpose(sweep) if in_sweep and sweep else RUN_PURPOSE
    how = (
        "give this run a directory of its own (the default hydra.run.dir is new for every run), or move that "
        "directory's contents away"
    )

    def refuse_if_taken() -> None:
        found = None if in_sweep else existing_record(directory)
        if found:
            raise RecordExists(
                errno.EEXIST,
                f"{directory} already holds {found}. svdbench never replaces a record: give this run a directory of "
                "its own (the default hydra.run.dir is new for every run), or move that directory away first. To "
                f"repeat that run beside its record, use `python -m svdbench.replay {directory}`.",
            )

    created = not os.path.lexists(directory)
    check_free(directory, "run", purpose, how)  # before the lock, which creates the directory
    lock = DirectoryLock(directory).acquire()  # DirectoryBusy while another process writes there
    try:
        own = check_free(directory, "run", purpose, how)  # again, now that no other svdbench process can write
        refuse_if_taken()
        if not own:
            mark(directory, "run", purpose)
    except (RecordExists, DirectoryTaken):
        lock.release()  # a refused run leaves the directory exactly as it was
        if created:
            shutil.rmtree(directory, ignore_errors=True)
        raise
    return lock.announce()


class RunDirGuard(Callback):
    """Hydra callback: check and claim the output directory before Hydra writes into it (exit 2 if not)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        directory = Path(config.hydra.run.dir)
        sweep = os.environ.get(SWEEP_ENV)
        _or_exit(lambda: check_output_location(directory, needed_bytes(config)))
        _or_exit(lambda: claim(directory, in_sweep=bool(sweep), sweep=sweep))
        reserve_space(directory)
        set_interrupt_hint(
            "The interrupted run's record is kept in "
            f"{directory}. To measure it again, run `python -m svdbench.replay {directory}` (it repeats the run "
            "into a new directory beside it), or the same command with a new hydra.run.dir=... (the default is new "
            "for every run)."
        )

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        directory = Path(config.hydra.sweep.dir)
        _or_exit(lambda: check_output_location(directory, needed_bytes(config)))
        purpose = sweep_purpose(config)
        how = "give this sweep its own directory (hydra.sweep.dir=..., or leave it at the default, new every time)"
        created = not os.path.lexists(directory)
        _or_exit(lambda: check_free(directory, "sweep", purpose, how) if not (directory / SWEEP_FILE).is_file() else 0)
        lock = _or_exit(lambda: DirectoryLock(directory).acquire())
        try:
            _or_exit(lambda: check_sweep_dir(directory, config))  # before announcing: a refusal changes nothing
            own = _or_exit(lambda: check_free(directory, "sweep", purpose, how))
        except SystemExit:
            lock.release()
            if created:
                shutil.rmtree(directory, ignore_errors=True)
            raise
        if not own:
            _or_exit(lambda: mark(directory, "sweep", purpose))
        lock.announce()
        command = " ".join(shlex.quote(a) for a in sys.argv[1:] if not a.startswith("hydra.sweep.dir="))
        set_interrupt_hint(
            "Finished jobs keep their results; the interrupted one is marked 'interrupted'. To redo only the "
            f"unfinished jobs, run: python -m svdbench {command} hydra.sweep.dir={shlex.quote(str(directory))}"
        )


def _or_exit(check: Callable[[], Any]) -> Any:
    try:
        return check()
    except (OutputLocationError, RecordExists, DirectoryBusy, DirectoryTaken) as exc:
        print(f"error: {exc.strerror if exc.strerror else exc}", file=sys.stderr)
        sys.exit(2)
    except OSError as exc:  # the directory or its marker cannot be written (read-only, full, a file-size limit)
        where = exc.filename or "the output directory"
        print(
            f"error: cannot write {where}: {describe_os_error(exc)}. Choose an output directory on a writable disk "
            "with room (hydra.run.dir=..., or hydra.sweep.dir=... for -m).",
            file=sys.stderr,
        )
        sys.exit(2)


# What the interrupt message of `python -m svdbench` says to do next (set once the output directory is known).
INTERRUPT_HINT: list[str] = []


def set_interrupt_hint(text: str) -> None:
    INTERRUPT_HINT[:] = [text]


def sweep_purpose(config: DictConfig) -> str:
    """The purpose in a sweep directory's marker: a sweep of these settings (a hash of `_settings`)."""
    import hashlib
    import json

    text = json.dumps(_settings(config), sort_keys=True, default=str)
    return f"a sweep of settings {hashlib.sha256(text.encode()).hexdigest()[:16]}"


def _settings(config: DictConfig) -> dict[str, Any]:
    """What defines a sweep: its overrides and its composed settings, less presentation and Hydra's own."""
    overrides = [str(o) for o in config.hydra.overrides.task]
    keys = [o.lstrip("+~").split("=", 1)[0] for o in overrides]
    defining = sorted(o for o, k in zip(overrides, keys) if not k.startswith("hydra") and not is_presentation(k))
    container = OmegaConf.to_container(config, resolve=False)
    assert isinstance(container, dict)
    flat = flatten({str(k): v for k, v in container.items() if k != "hydra"}, ".")
    return {"overrides": defining, **{k: v for k, v in flat.items() if not is_presentation(k)}}


def check_sweep_dir(sweep_dir: Path, config: DictConfig) -> None:
    """Refuse (RecordExists) a sweep directory that holds a sweep with other settings; the same settings resume."""
    saved = Path(sweep_dir) / SWEEP_FILE
    if not saved.is_file():
        return
    try:
        old = _settings(OmegaConf.load(saved))  # type: ignore[arg-type]
    except Exception as exc:
        raise RecordExists(
            errno.EEXIST,
            f"{sweep_dir} holds a sweep whose {SWEEP_FILE} cannot be read ({type(exc).__name__}: {exc}), so svdbench "
            "cannot tell whether this command would resume it or replace its records. Give this sweep its own "
            "directory (hydra.sweep.dir=...), or move that one away.",
        ) from None
    new = _settings(config)
    changed = [k for k in sorted(old.keys() | new.keys()) if old.get(k) != new.get(k)]
    if changed:
        shown = "; ".join(f"{k}: {old.get(k)} -> {new.get(k)}" for k in changed[:5])
        more = f" (and {len(changed) - 5} more)" if len(changed) > 5 else ""
        raise RecordExists(
            errno.EEXIST,
            f"{sweep_dir} holds another sweep, with other settings ({shown}{more}). svdbench never replaces a "
            "sweep's records: give this sweep its own directory (hydra.sweep.dir=..., or leave it at the default, "
            "which is new for every sweep). To resume that sweep, run exactly the command that made it (its "
            f"settings are in {saved}).",
        )


def set_aside(directory: Path, why: str) -> Path | None:
    """Move a job's earlier record (results.json and the files it lists) into `previous-N/` inside its
    directory, so that a redone job never replaces it; returns where it went, None if there was none."""
    directory = Path(directory)
    results = directory / RESULTS_FILE
    if not results.exists():
        return None
    n = 1
    while (directory / f"previous-{n}").exists():
        n += 1
    target = directory / f"previous-{n}"
    target.mkdir()
    names = {RESULTS_FILE, STEPS_FILE, ERROR_FILE, "video.mp4", "frames.npz", "filmstrip.png", "flicker_plot.png"}
    try:
        names |= set(RunResult.load(results).files.values())
    except ResultsError:
        pass
    for name in sorted(names):
        if (directory / name).exists():
            shutil.move(str(directory / name), str(target / name))
    (target / "why.txt").write_text(f"{datetime.now().isoformat(timespec='seconds')}: {why}\n")
    log.info("Earlier record of %s kept in %s (%s).", directory, target, why)
    return target


# ----------------------------------------------------------------------------------------------- after


def write_record(
    cfg: RunConfig | None,
    run_dir: Path,
    measurement: Any,
    overrides: list[str],
    sweep: str | None = None,
) -> RunResult:
    """Write a measurement's record into `run_dir` in the order above; returns the final results.

    `measurement` is a `svdbench.runner.Measurement` (results, frames, traceback)."""
    run_dir = Path(run_dir)
    result: RunResult = measurement.result
    result.environment = environment()
    result.environment.state = getattr(measurement, "machine", None)
    result.provenance = provenance(overrides)
    if not _save(result, run_dir, quiet=True):
        (run_dir / RESERVE_FILE).unlink(missing_ok=True)  # the measurement first: use the reserved room for it
        if not _save(result, run_dir):
            return result

    def artifact(key: str, name: str, write: Callable[[Path], Any]) -> None:
        try:
            with atomic_path(run_dir / name) as tmp:
                write(tmp)
        except Exception as exc:  # a file we could not write must not cost the measurement
            why = describe_os_error(exc) if isinstance(exc, OSError) else f"{type(exc).__name__}: {exc}"
            result.file_errors[name] = why
            log.warning("Could not write %s: %s", run_dir / name, why)
        else:
            result.files[key] = name

    if measurement.traceback:
        artifact("error", ERROR_FILE, lambda tmp: tmp.write_text(measurement.traceback))
    if result.steps is not None:
        artifact("steps", STEPS_FILE, lambda tmp: tmp.write_text(steps_csv(result)))
    trace, profile = measurement.trace, result.profile
    if trace is not None or profile is not None:
        from svdbench.measure.profile import PICTURE, save_profile_png, trace_name

        if trace is not None:
            artifact("trace", trace_name(trace), lambda tmp: tmp.write_bytes(trace))
        if profile is not None:
            artifact("profile_plot", PICTURE, lambda tmp: save_profile_png(profile, tmp))
    if measurement.videos is not None and cfg is not None:
        _write_media(cfg, result, measurement.videos, artifact)
    samples = getattr(measurement, "samples", None)  # the quality samples' frames, spooled by the runner
    if samples is not None:
        from svdbench.quality.samples import store

        store(samples, artifact)
    from svdbench.record.report import REPORT_FILE, write_run_report

    artifact("report", REPORT_FILE, lambda tmp: write_run_report(tmp, run_dir, result))  # last: it links the others
    for reserve in (RESERVE_FILE, SPARE_INODE_FILE):  # their room and inodes are for what follows
        (run_dir / reserve).unlink(missing_ok=True)
    if result.file_errors:
        result.notes.append(
            f"{len(result.file_errors)} file(s) could not be written ({', '.join(result.file_errors)}); the "
            "measurement above is complete. See file_errors."
        )
    saved = _save(result, run_dir)  # again, with the files; if this fails, the first complete version stays
    _log_outcome(result, run_dir, saved)
    if cfg is not None and cfg.logger.name == "wandb" and result.status != "interrupted":
        from svdbench.record.tracking import log_run

        log_run(cfg, run_dir, result, overrides, sweep)
    return result


def _write_media(cfg: RunConfig, result: RunResult, videos: np.ndarray, artifact: Callable) -> None:
    """Pictures, then the video, then the exact frames: the smallest files first. `videos` is batch x frames x
    H x W x 3; the pictures and the mp4 show video 0, frames.npz keeps every video (frames x H x W x 3 for a
    batch of one, as before batches existed; batch x frames x H x W x 3 otherwise)."""
    video = videos[0]
    from svdbench.media.video import write_mp4
    from svdbench.metrics.plots import PICTURES, save_filmstrip, save_flicker_plot

    if result.metrics is not None and cfg.metrics.pictures:
        artifact("filmstrip", PICTURES["filmstrip"], lambda tmp: save_filmstrip(video, tmp))
        chunk = cfg.opt.decode_chunk_size
        artifact(
            "flicker_plot",
            PICTURES["flicker_plot"],
            lambda tmp: save_flicker_plot(result.metrics, tmp, decode_chunk_size=chunk),
        )
    artifact("video", "video.mp4", lambda tmp: write_mp4(tmp, video, fps=cfg.cond.fps))
    if cfg.save_frames:  # exact frames: the mp4 is lossy, comparisons between runs need the real pixels

        def frames(tmp: Path) -> None:
            with open(tmp, "wb") as handle:
                np.savez_compressed(handle, frames=video if len(videos) == 1 else videos)

        artifact("frames", "frames.npz", frames)


def record_unrun_job(job_dir: Path, overrides: list[str], result: RunResult) -> None:
    """The record of a sweep job that never ran (invalid settings, interrupted before it started): its overrides,
    so that the directory says what the job was, and `result`."""
    import yaml

    (job_dir / OVERRIDES_FILE).parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(job_dir / OVERRIDES_FILE, yaml.safe_dump(overrides))
    result.save(job_dir)


def reserve_space(run_dir: Path) -> Path | None:
    """Hold back RESERVE_BYTES and two inodes in the run directory until its record is written (RESERVE_FILE and
    SPARE_INODE_FILE, svdbench.files.atomic)."""
    path = Path(run_dir) / RESERVE_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.posix_fallocate(fd, 0, RESERVE_BYTES)
        finally:
            os.close(fd)
        (Path(run_dir) / SPARE_INODE_FILE).touch()
        return path
    except OSError:  # no room even for that, or no fallocate here: the artifacts are tried all the same
        path.unlink(missing_ok=True)
        return None


def steps_csv(result: RunResult) -> str:
    """Every denoising step of every measured call, one row each, for plotting outside svdbench."""
    assert result.steps is not None
    lines = ["call,step,seconds"]
    for call, steps in enumerate(result.steps.per_call_s):
        lines += [f"{call},{step},{seconds!r}" for step, seconds in enumerate(steps)]
    return "\n".join(lines) + "\n"


def _save(result: RunResult, run_dir: Path, quiet: bool = False) -> bool:
    """results.json; if even that cannot be written, the numbers go to the log so that they are not lost."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        result.save(run_dir)
        return True
    except OSError as exc:
        if quiet:
            return False
        import json

        log.error(
            "Could not write %s: %s. The results are printed here instead, so that the measurement is not lost:\n%s",
            run_dir / RESULTS_FILE,
            describe_os_error(exc),
            json.dumps(result.to_dict(), separators=(",", ":")),
        )
        result.file_errors[RESULTS_FILE] = describe_os_error(exc)
        return False


def _log_outcome(result: RunResult, run_dir: Path, saved: bool = True) -> None:
    """The run's last line; it names results.json only as what is on disk (when the final write failed, the
    file there is the first version, without the list of files, and the full results are in the log above)."""
    path: Any = run_dir / RESULTS_FILE
    if not saved:
        path = f"{path} (its first version only: the final write failed, the full results are printed above)"
    if result.status == "ok" and result.memory is not None and result.throughput is not None:
        batch = f" per call of {result.batch_size} videos" if result.batch_size > 1 else " per video"
        log.info(
            "ok: %.3f s%s (median of %d), %.2f frames/s, peak %s memory %.2f GiB -> %s",
            result.median_s,
            batch,
            len(result.latency.calls_s),
            result.throughput.frames_per_s,
            result.peak_memory_kind,
            result.peak_memory_gib,
            path,
        )
    elif result.status != "ok":
        log.error("%s: %s\nRecorded in %s", result.status, result.reason, path)
