"""``run_batch``: read and validate a job file, lock the batch folder, skip finished jobs, run the rest on
an executor, keep ``manifest.json`` and ``index.html`` current."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

from .jobs import BatchSettings, read_jobs
from .manifest import MANIFEST, Manifest
from .run import checkpoint_step, finished_outcome


@dataclass
class BatchReport:
    status: str
    """"completed" (every job ran: done or failed) or "stopped" (a stop request; the rest stay pending)."""
    counts: dict[str, int]
    manifest: Path
    timings: list[dict[str, Any]] = field(default_factory=list)
    """For each job run now: line, began/ended (epoch seconds at dispatch and result), round_s (dispatch →
    result), wall_s (the job's own run), load_s (model loading it waited for), pid (the process that ran it)."""
    skipped: int = 0
    """Jobs found finished and not run again."""


def run_batch(
    jobs_file: str | Path,
    out: str | Path,
    settings: BatchSettings,
    *,
    executor: Literal["local", "ray"] = "local",
    ray_options: Any = None,
    device: Any = None,
    should_stop: Callable[[], bool] | None = None,
    progress: bool = True,
    say: Callable[[str], None] | None = None,
) -> BatchReport:
    """Run every job of ``jobs_file`` into its own folder under ``out``.

    The whole file is validated first (JobFileError lists every bad line; nothing runs). Jobs whose folder
    holds a finished result are skipped; interrupted ones resume from their checkpoints; a failed job is
    recorded with its error and the others go on. ``device``: the local executor's torch device (default
    cuda when available). ``ray_options``: a :class:`latent3d.batch.ray_executor.RayOptions`.
    KeyboardInterrupt propagates after the running job saved its checkpoint and the manifest was written.
    """
    from ..runfolder import FolderLock

    if executor not in ("local", "ray"):
        raise ValueError(f"executor must be 'local' or 'ray', got {executor!r}")
    jobs = read_jobs(jobs_file, settings)
    if executor == "ray":
        from .ray_executor import RayOptions, import_ray

        import_ray()
        ray_options = ray_options or RayOptions()
    out = Path(out).absolute()  # Ray workers run in folders of their own
    stop = should_stop or (lambda: False)
    with FolderLock(out, "latent3d batch"):
        manifest = Manifest(out, jobs, settings, str(jobs_file))
        pending = []
        for entry in manifest.entries:
            done = finished_outcome(entry.job, settings, manifest.job_dir(entry), out)
            if done is not None:
                manifest.set(entry, "done", done)
            else:
                entry.step = checkpoint_step(manifest.job_dir(entry), entry.job.kind)
                pending.append(entry)
        manifest.write()
        skipped = len(jobs) - len(pending)
        if say and skipped:
            say(f"{skipped} of {len(jobs)} jobs already done in {out}; running {len(pending)}")
        with _bar(len(jobs), skipped, progress) as bar:
            if not pending:
                status, timings = "completed", []
            elif executor == "local":
                from ..devices import default_device
                from .local import run_local

                status, timings = run_local(manifest, pending, settings, device or default_device(), bar, stop, say, progress)
            else:
                from .ray_executor import run_ray

                status, timings = run_ray(manifest, pending, settings, ray_options, bar, stop, say)
        manifest.write()
        return BatchReport(status, manifest.counts(), out / MANIFEST, timings, skipped)


def _bar(total: int, initial: int, progress: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc="batch", unit="job", dynamic_ncols=True, disable=not progress)
