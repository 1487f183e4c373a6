"""Batch benchmark: jobs per hour for N tiny-model jobs, the local executor vs Ray with 1 and 2 workers, and
the per-job overhead of the Ray path (task dispatch and result, worker start, model load) in seconds.

Each job is a full batch job with the offline tiny model: a tiny-preset Latent-NeRF at 16² latents, a
4-frame turntable and a textured GLB export (48³, 128² texture). Runs, in one process, one after another:
local (torch's default threads), local with 1 thread, Ray with 1 worker of 1 CPU, Ray with 2 workers of 1
CPU each, on a local ``ray.init(num_cpus=2)`` cluster (its start is timed apart).

Figures per run: wall (the whole run_batch call), makespan (first dispatch → last result), model load per
worker, mean job time (inside the worker), Ray overhead per job = dispatch→result minus the job minus its
model load, and throughput in jobs/hour: over the makespan, and "steady" (makespan minus the longest first
model load: what a long batch converges to once the workers have loaded the model).

    python benchmarks/batch.py           # 8 jobs of 30 steps (≈3–5 min on 2 busy cores)
    python benchmarks/batch.py --quick   # 4 jobs of 10 steps

Utilization = the workers' time inside jobs (model load included) / (workers × makespan): what the executor
itself loses, apart from how many free cores the machine gives.

Last line: RESULT ray_overhead_s=<x> ray_over_local_throughput=<y> (x: mean Ray overhead per job once
the worker has its model, W=1, minus the local executor's; y: steady throughput of Ray with 2 workers over
the better of the two local runs).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import skip  # noqa: E402

from latent3d.batch import BatchSettings, run_batch  # noqa: E402


def settings(threads: int | None) -> BatchSettings:
    return BatchSettings(
        model="tiny", preset="tiny", turntable_frames=4, preview_every=0, checkpoint_every=0,
        export_resolution=48, texture_size=128, cpus_per_job=threads,
    )


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def summarize(name: str, report, wall: float, workers: int) -> dict:
    timings = report.timings
    makespan = max(t["ended"] for t in timings) - min(t["began"] for t in timings)
    first_load = max((t["load_s"] for t in timings), default=0.0)
    overheads = [t["round_s"] - t["wall_s"] - t["load_s"] for t in timings]
    warm = [o for o, t in zip(overheads, timings) if t["load_s"] == 0]
    loads = [round(t["load_s"], 2) for t in timings if t["load_s"] > 0]
    row = {
        "name": name, "workers": workers, "jobs": len(timings), "wall_s": wall, "makespan_s": makespan, "loads_s": loads,
        "job_s": statistics.mean(t["wall_s"] for t in timings), "overhead_s": statistics.mean(warm) if warm else float("nan"),
        "first_overhead_s": max(overheads), "jobs_per_hour": 3600 * len(timings) / makespan,
        "steady_jobs_per_hour": 3600 * len(timings) / max(makespan - first_load, 1e-9), "pids": len({t["pid"] for t in timings}),
        "counts": report.counts,
        # share of the workers' time spent inside jobs (model load included): what the executor itself loses
        "utilization": sum(t["wall_s"] + t["load_s"] for t in timings) / (workers * makespan),
    }
    print(f"{name:>14}: wall {wall:6.1f} s, makespan {makespan:6.1f} s, job {row['job_s']:5.2f} s, model load {loads} s, "
          f"overhead/job {row['overhead_s']:.3f} s (first on a worker {row['first_overhead_s']:.2f} s), "
          f"{row['jobs_per_hour']:6.0f} jobs/h ({row['steady_jobs_per_hour']:6.0f} steady), utilization {row['utilization']:.2f}, "
          f"{row['pids']} process(es), "
          f"load average {loadavg()}", flush=True)
    assert report.counts["done"] == len(timings), report.counts
    return row


def run(jobs: Path, root: Path, name: str, threads: int | None, executor: str = "local", workers: int = 1) -> dict:
    out = root / name
    shutil.rmtree(out, ignore_errors=True)
    options = None
    if executor == "ray":
        from latent3d.batch.ray_executor import RayOptions

        options = RayOptions(workers=workers, max_retries=0)
    began = time.perf_counter()
    report = run_batch(jobs, out, settings(threads), executor=executor, ray_options=options, device="cpu", progress=False)
    return summarize(name, report, time.perf_counter() - began, workers)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 jobs of 10 steps")
    parser.add_argument("--jobs", type=int, default=None, help="number of jobs (default 8, quick 4)")
    parser.add_argument("--iterations", type=int, default=None, help="steps per job (default 30, quick 10)")
    args = parser.parse_args()
    count = args.jobs or (4 if args.quick else 8)
    iterations = args.iterations or (10 if args.quick else 30)
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs; {count} jobs of {iterations} steps; "
          f"load average {loadavg()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="latent3d_batch_bench_") as tmp:
        root = Path(tmp)
        jobs = root / "jobs.jsonl"
        jobs.write_text("".join(json.dumps({"prompt": f"object number {k}", "seed": k, "iterations": iterations}) + "\n" for k in range(count)))
        rows = [run(jobs, root, "local", None), run(jobs, root, "local-1thread", 1)]
        try:
            import ray
        except ImportError:  # Ray is an optional extra: the local rows above still ran
            return skip("the Ray rows need ray: pip install -r requirements-batch.txt")

        from latent3d.batch.ray_executor import runtime_env

        began = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, runtime_env=runtime_env(), logging_level="WARNING", log_to_driver=False)
        print(f"ray.init (local cluster, 2 CPUs): {time.perf_counter() - began:.1f} s; ray {ray.__version__}", flush=True)
        try:
            rows += [run(jobs, root, "ray-1worker", 1, "ray", 1), run(jobs, root, "ray-2workers", 1, "ray", 2)]
        finally:
            ray.shutdown()
    local, one, ray1, ray2 = rows
    scaling = ray2["steady_jobs_per_hour"] / ray1["steady_jobs_per_hour"]
    overhead = ray1["overhead_s"] - one["overhead_s"]
    print(f"Ray overhead per job once loaded: {overhead:.3f} s (target <= 2 s); first job on a fresh worker: "
          f"{ray1['first_overhead_s']:.2f} s start + {ray1['loads_s']} s model load")
    print(f"scaling W=2 over W=1 (steady): {scaling:.2f}x (target >= 1.8x = 0.9 x 2); job time W=1 {ray1['job_s']:.2f} s, W=2 "
          f"{ray2['job_s']:.2f} s (equal when the machine gives each worker a free core); utilization W=1 {ray1['utilization']:.2f}, "
          f"W=2 {ray2['utilization']:.2f}")
    best = max(local, one, key=lambda row: row["steady_jobs_per_hour"])
    print(f"Ray W=1 over local 1-thread: {ray1['steady_jobs_per_hour'] / one['steady_jobs_per_hour']:.2f}x; Ray W=2 over local "
          f"(default threads) {ray2['steady_jobs_per_hour'] / local['steady_jobs_per_hour']:.2f}x, over local 1-thread "
          f"{ray2['steady_jobs_per_hour'] / one['steady_jobs_per_hour']:.2f}x")
    print(f"RESULT ray_overhead_s={overhead:.3f} ray_over_local_throughput={ray2['steady_jobs_per_hour'] / best['steady_jobs_per_hour']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
