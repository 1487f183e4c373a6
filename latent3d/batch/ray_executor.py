"""The Ray executor: jobs spread over the GPUs/CPUs of a Ray cluster (or a local one), one actor task per job.

Each worker is a Ray actor holding ``gpus_per_job`` GPUs and ``cpus_per_job`` CPUs for its lifetime; it
loads the model once (on its first job) and keeps it for every later job (an actor, rather than plain
tasks, because Ray never reuses a GPU task's process: it would reload the model for every job). The driver
gives each idle worker one job at a time, so a worker's death touches only its own job.

Failures: a worker process that dies (killed, out of memory, its node lost) is restarted by Ray and its
job retried up to ``max_retries`` times (``max_task_retries``; a job's own errors are results, never
retried), resuming from the last checkpoint in the shared output folder. A job that exhausts its retries
is recorded "failed" and its worker replaced. Ctrl-C (or SIGTERM) cancels the running jobs: each saves its
checkpoint and stops (Ray's cancellation flag, polled every step), the manifest is written, and the rest
stay pending for the next run; a second Ctrl-C stops waiting.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable

from .jobs import BatchSettings, Job
from .manifest import Entry, Manifest
from .run import JobHooks, JobOutcome, checkpoint_step, cached_model, run_job

INSTALL_HINT = "the Ray executor needs Ray: pip install -r requirements-batch.txt (or pip install 'comfyui-latent3d[batch]')"
CANCEL_GRACE_S = 120.0
"""How long a Ctrl-C waits for running jobs to save their checkpoints before leaving them to Ray."""


def import_ray():
    """The ``ray`` module, or ImportError saying how to install it."""
    try:
        import ray
    except ImportError as e:
        raise ImportError(INSTALL_HINT) from e
    return ray


@dataclasses.dataclass
class RayOptions:
    address: str | None = None
    """A running cluster ("auto", "ray://host:10001", "host:6379"); None starts a local one."""
    gpus_per_job: float | None = None
    """GPUs per worker; None: 1 when the cluster has GPUs, else 0."""
    max_retries: int = 3
    workers: int | None = None
    """Worker actors; None: as many as the cluster's resources hold (at most one per job)."""
    ship_code: bool = True
    """Send this ``latent3d`` package to the workers (runtime_env py_modules), so they run the driver's code.
    Applies when this executor connects to Ray; a caller that already ran ``ray.init`` passes
    ``runtime_env()`` there itself (or has latent3d installed on every node)."""


def runtime_env() -> dict[str, Any]:
    """Ray's runtime_env that ships this ``latent3d`` package to every worker (for ``ray.init``)."""
    package = str(Path(__file__).resolve().parents[1])
    return {"py_modules": [package], "excludes": ["__pycache__", "*.pyc"]}


class BatchWorker:
    """A Ray actor's body: one model, many jobs (``run`` is one actor task per job)."""

    def __init__(self, settings: BatchSettings, base: str) -> None:
        import ray

        self.settings, self.base = settings, base
        self.device = "cuda" if ray.get_gpu_ids() else "cpu"

    def run(self, job: Job, job_dir: str) -> JobOutcome:
        import ray

        began = time.perf_counter()
        try:
            components, load_s = cached_model(self.settings, self.device, base=self.base)
        except Exception as e:  # noqa: BLE001 - reported to the driver, which stops the batch
            return JobOutcome("fatal", error=f"model {self.settings.model} could not be loaded: {e}", load_s=time.perf_counter() - began)
        context = ray.get_runtime_context()
        outcome = run_job(job, self.settings, components, Path(job_dir), self.device, JobHooks(should_stop=context.is_canceled))
        outcome.load_s = load_s
        return outcome


def run_ray(
    manifest: Manifest, pending: list[Entry], settings: BatchSettings, options: RayOptions, bar: Any, should_stop: Callable[[], bool],
    say: Callable[[str], None] | None = None,
) -> tuple[str, list[dict[str, Any]]]:
    """Run ``pending`` on Ray; returns ("completed" or "stopped", per-job timings). Connects to (or starts)
    a cluster unless Ray is already initialized in this process, and disconnects only what it started."""
    ray = import_ray()
    started = not ray.is_initialized()
    if started:
        env = runtime_env() if options.ship_code else None
        with _keep_sigterm_handler():  # ray.init replaces it with sys.exit: SIGTERM must stop the jobs cleanly instead
            ray.init(address=options.address, runtime_env=env, include_dashboard=False, logging_level="WARNING", log_to_driver=True)
    try:
        return _Scheduler(ray, manifest, settings, options, say).run(pending, bar, should_stop)
    finally:
        if started:
            ray.shutdown()


@contextlib.contextmanager
def _keep_sigterm_handler():
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main else None
    try:
        yield
    finally:
        if main and previous is not None:
            signal.signal(signal.SIGTERM, previous)


def plan_workers(resources: dict[str, float], gpus: float, cpus: int, jobs: int, requested: int | None) -> int:
    """How many workers to start: ``requested``, or as many as ``resources`` hold, at most ``jobs``."""
    if requested is not None:
        return requested
    fits = [int(resources.get("CPU", 0) // cpus)]
    if gpus > 0:
        fits.append(int(resources.get("GPU", 0) // gpus))
    return max(0, min(jobs, *fits))


class _Scheduler:
    def __init__(self, ray, manifest: Manifest, settings: BatchSettings, options: RayOptions, say) -> None:
        resources = ray.cluster_resources()
        gpus = options.gpus_per_job if options.gpus_per_job is not None else (1.0 if resources.get("GPU", 0) >= 1 else 0.0)
        cpus = settings.cpus_per_job or 1
        self.ray, self.manifest, self.say = ray, manifest, say or (lambda text: None)
        self.resources, self.gpus, self.cpus, self.options = resources, gpus, cpus, options
        self.settings = dataclasses.replace(settings, cpus_per_job=cpus)
        self.actor_class = ray.remote(BatchWorker).options(num_cpus=cpus, num_gpus=gpus, max_restarts=-1, max_task_retries=options.max_retries)
        self.timings: list[dict[str, Any]] = []

    def run(self, pending: list[Entry], bar: Any, should_stop: Callable[[], bool]) -> tuple[str, list[dict[str, Any]]]:
        idle = self._start_workers(len(pending))
        queue, in_flight = collections.deque(pending), {}
        try:
            while queue or in_flight:
                if should_stop():
                    self._cancel(in_flight)
                    return "stopped", self.timings
                while queue and idle:
                    self._dispatch(queue.popleft(), idle.pop(), in_flight)
                ready, _ = self.ray.wait(list(in_flight), num_returns=1, timeout=0.5)
                for ref in ready:
                    idle.append(self._finish(ref, in_flight.pop(ref), bar))
        except BaseException:  # Ctrl-C, or a model no worker can load: stop the running jobs cleanly
            self._cancel(in_flight)
            raise
        finally:
            for actor in idle + [flight[1] for flight in in_flight.values()]:
                self.ray.kill(actor)
        return "completed", self.timings

    def _start_workers(self, jobs: int) -> list:
        count = plan_workers(self.resources, self.gpus, self.cpus, jobs, self.options.workers)
        cpus, gpus = f"{self.resources.get('CPU', 0):g} CPUs", f"{self.resources.get('GPU', 0):g} GPUs"
        if count <= 0:
            raise ValueError(
                f"the Ray cluster ({cpus}, {gpus}) cannot hold one job of {self.cpus} CPUs and {self.gpus:g} GPUs; lower --cpus-per-job or --gpus-per-job"
            )
        fits = plan_workers(self.resources, self.gpus, self.cpus, count, None)
        if count > fits:
            self.say(f"ray: the cluster holds {fits} of the {count} workers now; the others start when resources free up (or nodes join)")
        self.say(f"ray: {count} worker(s) of {self.cpus} CPU(s) and {self.gpus:g} GPU(s) each, on a cluster of {cpus} and {gpus}")
        return [self._new_worker() for _ in range(count)]

    def _new_worker(self):
        return self.actor_class.remote(self.settings, os.getcwd())

    def _dispatch(self, entry: Entry, actor, in_flight: dict) -> None:
        self.manifest.set(entry, "running")
        self.manifest.write()
        ref = actor.run.remote(entry.job, str(self.manifest.job_dir(entry)))
        in_flight[ref] = (entry, actor, time.perf_counter(), time.time())

    def _finish(self, ref, flight: tuple, bar: Any):
        """Record the job behind ``ref``; returns the actor to reuse (a fresh one if it died for good)."""
        entry, actor, began, began_at = flight
        try:
            outcome = self.ray.get(ref)
        except self.ray.exceptions.RayActorError as e:
            died = f"its worker died {self.options.max_retries + 1} times (retries exhausted): {e}"
            outcome = JobOutcome("failed", step=checkpoint_step(self.manifest.job_dir(entry), entry.job.kind), error=died)
            self.ray.kill(actor)
            actor = self._new_worker()
        if outcome.status == "fatal":
            self.manifest.set(entry, "pending")
            self.manifest.write()
            raise ValueError(outcome.error)
        self.manifest.set(entry, outcome.status, outcome)
        self.manifest.write()
        self.timings.append({"line": entry.job.line, "began": began_at, "ended": time.time(), "round_s": time.perf_counter() - began,
                             "wall_s": outcome.wall_s, "load_s": outcome.load_s, "pid": outcome.pid})
        if outcome.status in ("done", "failed"):
            bar.update(1)
            bar.set_postfix(failed=self.manifest.counts()["failed"])
        return actor

    def _cancel(self, in_flight: dict) -> None:
        """Ask the running jobs to stop (each saves its checkpoint), wait for them, record them pending."""
        for ref in in_flight:
            self.ray.cancel(ref)
        if in_flight:
            self.say(f"stopping {len(in_flight)} running job(s); their checkpoints are saved (Ctrl-C again to stop waiting) ...")
            try:
                self.ray.wait(list(in_flight), num_returns=len(in_flight), timeout=CANCEL_GRACE_S)
            except KeyboardInterrupt:
                pass
        for entry, *_ in in_flight.values():
            entry.status, entry.step = "pending", checkpoint_step(self.manifest.job_dir(entry), entry.job.kind)
        self.manifest.write()
