"""``latent3d refine``: Latent → RGB refinement of a trained Latent-NeRF run (RGB colours, optional shading);
and the ``refine`` kind of ``latent3d batch`` (``configure_batch_job``, ``run_batch_job``), which runs the same
stage function and then exports the refined field."""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .common import (
    CliError,
    Formatter,
    add_model_arguments,
    add_run_arguments,
    device_from,
    existing_run,
    guidance_from,
    load_model,
    non_negative_int,
    positive_int,
    run_folder_hooks,
    run_stage,
    save_turntable,
    say,
    say_finished,
    view_embeddings,
)

if TYPE_CHECKING:
    from ..refine.train import RefineConfig, RefineResult

CHECKPOINT = "refined.safetensors"
RUN_FILES = (CHECKPOINT, "refined.json", "metrics.jsonl", "turntable.gif")
SOURCE_CHECKPOINT = "nerf.safetensors"


def add_parser(sub) -> None:
    p = sub.add_parser(
        "refine", formatter_class=Formatter, help="refine a trained Latent-NeRF in RGB (crisp colours, optional shading)",
        description="Latent -> RGB refinement: the trained field gets a linear colour head, renders RGB views, and is\n"
        "fine-tuned by score distillation on their VAE encodings. The result exports with true RGB colours\n"
        "(no VAE decode). Prompt, negative prompt, model and view prompting default to the source run's.\n\n"
        "--out holds one run. Rerunning the same command on a finished run does nothing (exit 0); an unfinished\n"
        "one continues with --resume; --overwrite starts over.",
    )
    p.add_argument("source", metavar="RUN_OR_CKPT", help="a 'latent3d nerf' run folder (with nerf.safetensors) or the checkpoint itself")
    p.add_argument("--prompt", default=None, help="what the object is (default: the source run's prompt)")
    p.add_argument("--negative", default=None, help="negative prompt (default: the source run's)")
    add_model_arguments(p, required=False, help_extra=" (default: the source run's model)")
    p.add_argument("--out", required=True, help="output folder (refined checkpoint, RGB previews, turntable, metrics.jsonl)")
    p.add_argument("--preset", choices=["paper", "tiny"], default="paper", help="defaults ('tiny': 32² renders encoded at 64², quick CPU runs)")
    p.add_argument("--iters", type=int, default=None, help="optimization steps (default: the preset's, paper 5000, tiny 20)")
    p.add_argument("--render-resolution", type=int, default=None, help="side of the RGB render per step (default: paper 64, tiny 32)")
    p.add_argument("--encode-resolution", type=int, default=None, help="side of the image the VAE encodes; a multiple of 64 for SD (default: paper 512, tiny 64)")
    p.add_argument("--guidance-scale", type=float, default=100.0, help="classifier-free guidance scale (paper: 100)")
    p.add_argument("--shading-start", type=int, default=None, help="from this step on, Lambertian shading in RGB (default: never)")
    p.add_argument("--ambient-ratio", type=float, default=0.1, help="ambient share of the Lambertian shading (paper: 0.1)")
    p.add_argument("--freeze-geometry", action="store_true", help="keep the density exactly as trained; only colours change")
    p.add_argument("--lr-grid", type=float, default=1e-2, help="Adam learning rate of the grid encoding")
    p.add_argument("--lr-mlp", type=float, default=1e-3, help="Adam learning rate of the field and background MLPs")
    p.add_argument("--lr-color", type=float, default=1e-3, help="Adam learning rate of the 4->3 colour head")
    p.add_argument("--vae-checkpointing", action="store_true", help="recompute the VAE encoder's activations in the backward pass (less memory, slower)")
    add_run_arguments(p, preview="an RGB preview PNG", turntable="the final RGB turntable GIF",
                      view_prompts="one prompt for every view (default: as the source run)")
    p.set_defaults(run=run)


_FLAGS = {
    "iterations": "--iters", "render_resolution": "--render-resolution", "encode_resolution": "--encode-resolution",
    "shading_start": "--shading-start", "ambient_ratio": "--ambient-ratio", "lr_grid": "--lr-grid", "lr_mlp": "--lr-mlp",
    "lr_color": "--lr-color", "preview_every": "--preview-every", "checkpoint_every": "--checkpoint-every", "seed": "--seed",
}


def _config(args):
    from ..refine.train import RefineConfig

    base = RefineConfig.tiny() if args.preset == "tiny" else RefineConfig.paper()
    positive_int("--iters", args.iters if args.iters is not None else base.iterations)
    non_negative_int("--turntable-frames", args.turntable_frames)
    sds = guidance_from(args)
    changes = {
        "iterations": args.iters, "render_resolution": args.render_resolution, "encode_resolution": args.encode_resolution,
        "shading_start": args.shading_start, "ambient_ratio": args.ambient_ratio, "freeze_geometry": args.freeze_geometry,
        "lr_grid": args.lr_grid, "lr_mlp": args.lr_mlp, "lr_color": args.lr_color, "vae_checkpointing": args.vae_checkpointing,
        "seed": args.seed, "preview_every": args.preview_every, "checkpoint_every": args.checkpoint_every, "sds": sds,
    }
    try:
        return dataclasses.replace(base, **{k: v for k, v in changes.items() if v is not None})
    except ValueError as e:
        message = str(e)
        for field, flag in _FLAGS.items():
            message = message.replace(f"RefineConfig.{field}", flag)
        raise CliError(message) from e


def find_source(given: str | Path, out: Path, label: str = "RUN_OR_CKPT", out_label: str = "--out") -> tuple[Path, dict]:
    """(the Latent-NeRF checkpoint ``given`` names: a run folder holding nerf.safetensors or the file itself,
    resolved; its record), checked before any model loads. CliError, naming ``label``, for anything else
    (a refined or other checkpoint, an unreadable file) and for an ``out`` that holds the source run."""
    from ..checkpoint import CheckpointError, read_record

    folder = Path(given).expanduser()
    path = folder / SOURCE_CHECKPOINT if folder.is_dir() else folder
    if not path.is_file():
        where = f"the folder has no {SOURCE_CHECKPOINT}" if folder.is_dir() else "no such file"
        raise CliError(f"{label} {given}: {where} (give a 'latent3d nerf' run folder or its {SOURCE_CHECKPOINT})")
    try:
        record = read_record(path)
    except CheckpointError as e:
        raise CliError(f"{label} {given}: {e}") from e
    kind = record.get("kind")
    if kind == "rgb_nerf":
        raise CliError(f"{label} {path} is already a refined RGB checkpoint; refine the Latent-NeRF run it came from ({SOURCE_CHECKPOINT})")
    if kind != "latent_nerf":
        raise CliError(f"{label} {path} is a {kind!r} checkpoint; refinement needs a Latent-NeRF one ({SOURCE_CHECKPOINT} from 'latent3d nerf')")
    if out.resolve() == path.parent.resolve() or (out / SOURCE_CHECKPOINT).exists():
        raise CliError(f"{out_label} {out} holds a Latent-NeRF run; write the refinement to another folder (e.g. {path.parent / 'refined'})")
    return path.resolve(), record


def _settings(args, record: dict) -> dict:
    """prompt, negative, model, model_config and view prompting: the flags, else the source run's."""
    meta = record.get("meta") or {}
    settings = {
        "prompt": args.prompt if args.prompt is not None else meta.get("prompt"),
        "negative": args.negative if args.negative is not None else meta.get("negative", ""),
        "model": args.model if args.model is not None else meta.get("model"),
        "model_config": args.model_config if args.model_config is not None else (meta.get("model_config") if args.model is None else None),
        "view_prompts": False if args.no_view_prompts else bool(meta.get("view_prompts", True)),
    }
    if not isinstance(settings["prompt"], str) or not settings["prompt"].strip():
        raise CliError(f"--prompt is required: the source checkpoint {args.source} records no prompt")
    if not settings["model"]:
        raise CliError(f"--model is required: the source checkpoint {args.source} records no model")
    return settings


@dataclasses.dataclass
class RefineRequest:
    """One refinement, apart from the model: what ``latent3d refine``'s flags (or a batch job line) ask for.

    ``source`` is the resolved Latent-NeRF checkpoint (:func:`find_source`); ``extra_meta`` adds keys to the
    checkpoint's metadata (e.g. a batch job's hash) without changing what identifies the run.
    """

    source: Path
    prompt: str
    negative: str
    model: str
    model_config: str | None
    view_prompts: bool
    config: RefineConfig
    out: Path
    extra_meta: dict = dataclasses.field(default_factory=dict)

    def metadata(self) -> dict:
        return {"command": "refine", "source": str(self.source), "prompt": self.prompt, "negative": self.negative, "model": self.model,
                "model_config": self.model_config, "view_prompts": self.view_prompts, **self.extra_meta}


def run(args: argparse.Namespace) -> int:
    from ..runfolder import FolderLock

    config = _config(args)
    device = device_from("--device", args.device)
    out = Path(args.out)
    source, record = find_source(args.source, out)
    request = RefineRequest(source, config=config, out=out, **_settings(args, record))
    with FolderLock(out, "latent3d run"):
        finished, start = existing_run(out, CHECKPOINT, RUN_FILES, request.metadata(), config.iterations, resume=args.resume,
                                       overwrite=args.overwrite, shown=("source", "prompt"))
        if finished:
            return say_finished(out, start, out / CHECKPOINT)
        return _train(request, device, start, args.turntable_frames)


def _train(request: RefineRequest, device, start: int, frames: int) -> int:
    from ..nerf.train import load_latent_nerf

    config, out = request.config, request.out
    say(f"refine: {request.prompt!r} from {request.source}, {config.iterations} steps, {config.render_resolution}² renders encoded at "
        f"{config.encode_resolution}² on {device}, output in {out}" + (f" (resuming at step {start})" if start else ""))
    field, _, _ = load_latent_nerf(request.source, device)
    components = load_model(request.model, request.model_config, device, say)
    checkpoint = out / CHECKPOINT
    began = time.perf_counter()
    result = run_stage(
        lambda stop, on_step, on_metrics: train_refine(
            components, request, device, field, start=start, should_stop=stop, on_step=on_step, on_metrics=on_metrics),
        desc="refine", total=config.iterations, start=start, checkpoint=checkpoint,
        out_of_memory=f"out of memory on {device} encoding {config.encode_resolution}² images: pass --vae-checkpointing, lower "
        "--encode-resolution (e.g. 256) or use a device with more memory",
    )
    if isinstance(result, int):
        return result
    written = [checkpoint, out / "metrics.jsonl"] + ([out / "previews"] if config.preview_every else [])
    if frames > 0:
        written.append(write_turntable(result.model, config, frames, out))
    say(f"{result.status}: {result.step} steps ({result.skipped_steps} skipped) in {time.perf_counter() - began:.0f} s; wrote "
        + ", ".join(str(p) for p in written))
    print(checkpoint)
    return 0


def train_refine(components, request: RefineRequest, device, field=None, *, start: int = 0, should_stop=None, on_step=None, on_metrics=None) -> RefineResult:
    """Refine ``request.source`` (``field``: its LatentNeRF when already loaded) with already-loaded
    ``components`` (``SdComponents``: the denoiser, and the VAE encoder the RGB renders go through) into
    ``request.out``: the stage entry point ``latent3d refine`` and batch workers share.

    Writes ``refined.safetensors`` (every ``config.checkpoint_every`` steps and at the end), ``metrics.jsonl``
    and RGB ``previews/step_NNNNN.png``; ``start`` > 0 resumes from the checkpoint there. ``on_step(step,
    total)`` and ``on_metrics(step, values)`` follow progress. Returns the ``RefineResult``;
    KeyboardInterrupt, NonFiniteRunError and out-of-memory errors propagate after the checkpoint is saved.
    """
    from ..nerf.train import load_latent_nerf
    from ..refine.encoder import components_encoder
    from ..refine.train import refine_rgb

    config, out = request.config, Path(request.out)
    if field is None:
        field, _, _ = load_latent_nerf(request.source, device)
    embeddings = view_embeddings(components, request)
    with run_folder_hooks(out, start, lambda preview: preview, on_step, on_metrics) as (step_hook, metrics_hook):  # RGB previews: no decode
        return refine_rgb(
            config, field, components.denoiser, components_encoder(components), embeddings, device=device, on_step=step_hook,
            on_metrics=metrics_hook, should_stop=should_stop, checkpoint_path=out / CHECKPOINT, resume=start > 0, metadata=request.metadata(),
        )


def write_turntable(model, config, frames: int, out: Path) -> Path:
    """``out/turntable.gif``: ``frames`` RGB renders of the refined ``model`` around the evaluation orbit (no decode)."""
    from ..refine.train import turntable_rgb

    path = out / "turntable.gif"
    save_turntable(turntable_rgb(model, config, frames, config.preview_resolution), path)
    return path


# -- the "refine" kind of `latent3d batch` ------------------------------------------------------------------
def configure_batch_job(job, settings) -> dict[str, Any]:
    """{"refine": RefineConfig, "export": ExportConfig} for a ``refine`` job line: the batch's preset, the job's
    seed and iterations, the batch's preview/checkpoint cadence and export size, then the job's overrides
    (RefineConfig fields; ``export.*`` for the refined mesh). ValueError names the key and the rule."""
    from ..batch.run import job_configs
    from ..export import ExportConfig
    from ..refine.train import RefineConfig

    export = ExportConfig(resolution=settings.export_resolution, texture_size=settings.texture_size)
    return job_configs(job, settings, "refine", RefineConfig, {"export": export})


def run_batch_job(job, settings, components, job_dir: Path, device, hooks) -> dict[str, Any]:
    """Refine (or resume refining) the Latent-NeRF run the job's ``source`` names with :func:`train_refine`
    into ``job_dir``, write its RGB turntable and export the refined mesh as ``mesh.<format>`` (its RGB
    colours as they are, no VAE decode); returns the outputs (paths relative to the batch folder)."""
    from ..batch.run import JobInterrupted, batch_path, input_file, job_hash, resumable_step, step_hook
    from ..export import export_checkpoint
    from ..refine.train import load_refined

    configs = configure_batch_job(job, settings)
    config = configs["refine"]
    source, _ = find_source(input_file(job, "source"), job_dir, label="source", out_label="the job folder")
    request = RefineRequest(source, job.prompt, job.negative, settings.model, settings.model_config, settings.view_prompts, config, job_dir,
                            {"batch_job": job_hash(job, settings)})
    checkpoint = job_dir / CHECKPOINT
    start = hooks.resumed_from = resumable_step(checkpoint, request)
    model = None
    if start < config.iterations:
        result = train_refine(components, request, device, start=start, should_stop=hooks.should_stop, on_step=step_hook(job_dir, hooks))
        if result.status == "interrupted":
            raise JobInterrupted(result.step)
        model = result.model
    turntable = None
    if settings.turntable_frames > 0:
        model = model if model is not None else load_refined(checkpoint, device)[0]
        turntable = write_turntable(model, config, settings.turntable_frames, job_dir)
    written = export_checkpoint(checkpoint, job_dir, format=job.format, config=configs["export"], name="mesh", device=device)
    return {"checkpoint": batch_path(checkpoint), "turntable": batch_path(turntable), "mesh": [batch_path(p) for p in written]}
