"""``latent3d batch``: run every job of a JSONL/CSV job file, locally or on a Ray cluster (docs/batch.md)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from .common import EXIT_TERMINATED, CliError, Formatter, add_model_arguments, device_from, non_negative_int, positive_int, say, stop_on_signals

EXIT_FAILED_JOBS = 1


def add_parser(sub) -> None:
    p = sub.add_parser(
        "batch", formatter_class=Formatter, help="run many prompts (a JSONL/CSV job file), locally or on a Ray cluster",
        description="Run every job of a job file, each into its own folder under --out (checkpoint, previews, turntable,\n"
        "mesh), with manifest.json and an index.html gallery kept current. The whole file is validated first.\n"
        "Rerunning the same command skips finished jobs and resumes interrupted ones; a failed job is recorded\n"
        "and the others go on. Exit code 0: every job done; 1: some failed; 2: bad input; 130/143: stopped.\n\n"
        'Job lines (JSONL): {"prompt": "a hamburger", "seed": 3, "iterations": 5000, "sketch": "chair.obj",\n'
        '                    "format": "glb", "overrides": {"sds.guidance_scale": 50}}\n'
        '                   {"kind": "paint", "prompt": "a goldfish", "mesh": "fish.obj"}\n'
        '                   {"kind": "refine", "prompt": "a hamburger", "source": "catalogue/0001-a-hamburger-1a2b3c4d"}\n'
        "kind: nerf (default; latent3d nerf), paint (a texture for mesh; latent3d paint), refine (the Latent-NeRF run\n"
        "folder or checkpoint source names, refined in RGB; latent3d refine). See docs/batch.md.",
    )
    p.add_argument("jobs", help="the job file: .jsonl (one JSON object a line) or .csv (a header row of the same keys)")
    add_model_arguments(p)
    p.add_argument("--out", required=True, help="batch folder: one folder per job, manifest.json, index.html")
    p.add_argument("--executor", choices=["local", "ray"], default="local", help="local: one job after another here; ray: a Ray cluster")
    p.add_argument("--preset", choices=["paper", "tiny"], default="paper", help="field/grid size and defaults of every job ('tiny': quick CPU runs)")
    p.add_argument("--device", default=None, help="local executor: cuda, cuda:1, mps or cpu (default: cuda when available)")
    p.add_argument("--turntable-frames", type=int, default=24, help="frames of each job's turntable GIF (0: none)")
    p.add_argument("--preview-every", type=int, default=100, help="write a preview PNG every N steps (0: never)")
    p.add_argument("--checkpoint-every", type=int, default=250, help="save a checkpoint every N steps (what a killed job resumes from)")
    p.add_argument("--export-resolution", type=int, default=256, help="marching-cubes grid size of the exported meshes (16-512)")
    p.add_argument("--texture-size", type=int, default=1024, help="texture size of the exported meshes in pixels (a multiple of 8)")
    p.add_argument("--no-view-prompts", action="store_true", help="one prompt for every view (no ', front/side/back/overhead view')")
    r = p.add_argument_group("ray executor")
    r.add_argument("--address", default=None, help="a running Ray cluster ('auto', 'ray://head:10001'); default: start a local one")
    r.add_argument("--gpus-per-job", type=float, default=None, help="GPUs per job (fractions share a GPU; default: 1 when the cluster has GPUs, else 0)")
    r.add_argument("--cpus-per-job", type=int, default=None, help="CPU cores (torch threads) per job (default: 1 on Ray, all locally)")
    r.add_argument("--max-retries", type=int, default=3, help="retries of a job whose worker process died (each resumes from its checkpoint)")
    r.add_argument("--workers", type=int, default=None, help="worker processes (default: as many as the cluster's resources hold)")
    p.set_defaults(run=run)


def _settings(args):
    from ..batch import BatchSettings
    from ..export import ExportConfig

    for flag, value in (("--turntable-frames", args.turntable_frames), ("--preview-every", args.preview_every), ("--checkpoint-every", args.checkpoint_every)):
        non_negative_int(flag, value)
    try:
        ExportConfig(resolution=args.export_resolution, texture_size=args.texture_size)
    except ValueError as e:
        raise CliError(str(e).replace("ExportConfig.resolution", "--export-resolution").replace("ExportConfig.texture_size", "--texture-size")) from e
    if args.cpus_per_job is not None:
        positive_int("--cpus-per-job", args.cpus_per_job)
    return BatchSettings(
        model=args.model, model_config=args.model_config, preset=args.preset, turntable_frames=args.turntable_frames,
        preview_every=args.preview_every, checkpoint_every=args.checkpoint_every, export_resolution=args.export_resolution,
        texture_size=args.texture_size, view_prompts=not args.no_view_prompts, cpus_per_job=args.cpus_per_job,
    )


def _ray_options(args):
    ray_flags = {"--address": args.address, "--gpus-per-job": args.gpus_per_job, "--workers": args.workers}
    if args.executor != "ray":
        given = [flag for flag, value in ray_flags.items() if value is not None]
        if given:
            raise CliError(f"{given[0]} is for --executor ray (the local executor runs one job at a time on --device)")
        return None
    if args.device is not None:
        raise CliError("--device is for --executor local (Ray workers use the GPUs Ray gives them, else the CPU)")
    from ..batch.ray_executor import RayOptions, import_ray

    try:
        import_ray()
    except ImportError as e:
        raise CliError(str(e)) from e
    non_negative_int("--max-retries", args.max_retries)
    if args.workers is not None:
        positive_int("--workers", args.workers)
    if args.gpus_per_job is not None and not 0 <= args.gpus_per_job <= 64:
        raise CliError(f"--gpus-per-job must be a number in [0, 64], got {args.gpus_per_job}")
    return RayOptions(address=args.address, gpus_per_job=args.gpus_per_job, max_retries=args.max_retries, workers=args.workers)


def run(args: argparse.Namespace) -> int:
    from ..batch import run_batch

    settings = _settings(args)
    options = _ray_options(args)
    device = device_from("--device", args.device) if args.executor == "local" else None
    out = Path(args.out)
    began = time.perf_counter()
    with stop_on_signals() as terminated:
        report = run_batch(args.jobs, out, settings, executor=args.executor, ray_options=options, device=device, should_stop=terminated, say=say)
    counts = report.counts
    say(f"batch {report.status} in {time.perf_counter() - began:.0f} s: {counts['done']} done ({report.skipped} already), {counts['failed']} failed, "
        f"{counts['pending'] + counts['running']} pending; gallery {out / 'index.html'}")
    print(report.manifest)
    if report.status == "stopped":
        return EXIT_TERMINATED
    return EXIT_FAILED_JOBS if counts["failed"] else 0
