"""The local executor: the jobs one after another in this process, the model loaded once (on the first job
that needs it), a progress bar over each job's steps. No dependency beyond the project's own."""

from __future__ import annotations

import time
from typing import Any, Callable

from .jobs import BatchSettings
from .manifest import Entry, Manifest
from .run import JobHooks, checkpoint_step, cached_model, run_job


def run_local(
    manifest: Manifest, pending: list[Entry], settings: BatchSettings, device, bar: Any, should_stop: Callable[[], bool],
    say: Callable[[str], None] | None = None, progress: bool = True,
) -> tuple[str, list[dict[str, Any]]]:
    """Run ``pending`` in order; returns ("completed" or "stopped", per-job timings).

    ``should_stop`` (e.g. SIGTERM) is polled at every step: the running job saves its checkpoint and stays
    pending. KeyboardInterrupt does the same, then propagates; the manifest is current either way. A model
    that cannot be loaded raises (no job could run).
    """
    from tqdm import tqdm

    timings: list[dict[str, Any]] = []
    components = None
    for entry in pending:
        if should_stop():
            return "stopped", timings
        began, began_at, load_s = time.perf_counter(), time.time(), 0.0
        if components is None:
            components, load_s = cached_model(settings, device, say)
        manifest.set(entry, "running")
        manifest.write()
        with tqdm(total=entry.total, initial=entry.step, desc=f"line {entry.job.line}", unit="step", leave=False, disable=not progress) as steps:
            def on_step(step: int, total: int) -> None:
                steps.n = step
                steps.refresh()

            try:
                outcome = run_job(entry.job, settings, components, manifest.job_dir(entry), device, JobHooks(on_step, should_stop, say, progress))
            except KeyboardInterrupt:
                entry.status, entry.step = "pending", checkpoint_step(manifest.job_dir(entry), entry.job.kind)
                manifest.write()
                raise
        manifest.set(entry, outcome.status, outcome)
        manifest.write()
        timings.append({"line": entry.job.line, "began": began_at, "ended": time.time(), "round_s": time.perf_counter() - began,
                        "wall_s": outcome.wall_s, "load_s": load_s, "pid": outcome.pid})
        if outcome.status == "pending":
            return "stopped", timings
        bar.update(1)
        bar.set_postfix(failed=manifest.counts()["failed"])
    return "completed", timings
