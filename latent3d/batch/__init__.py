"""Batch generation: many prompts (or seeds, or meshes) from a JSONL/CSV job file, each job in its own
resumable folder, run one after another in this process or spread over a Ray cluster.

    from latent3d.batch import BatchSettings, run_batch
    report = run_batch("jobs.jsonl", "out/", BatchSettings(model="tiny", preset="tiny"))

Modules: ``jobs`` (the job file and its validation), ``overrides`` (dotted config names), ``kinds`` (the
job kinds table), ``run`` (one job run, the ``nerf`` adapter), ``manifest`` (manifest.json, index.html),
``local`` / ``ray_executor`` (executors; Ray is optional), ``driver`` (``run_batch``). Importing this
package imports neither torch nor ray.
"""

from .driver import BatchReport, run_batch
from .jobs import BatchSettings, Job, JobFileError, job_dir_name, job_hash, read_jobs

__all__ = ["BatchReport", "BatchSettings", "Job", "JobFileError", "job_dir_name", "job_hash", "read_jobs", "run_batch"]
