"""``latent3d refine``: Latent → RGB refinement of a trained Latent-NeRF run (RGB colours, optional shading)."""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import time
from pathlib import Path

from .common import (
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    CliError,
    Formatter,
    add_model_arguments,
    device_from,
    load_model,
    non_negative_int,
    out_of_memory_types,
    positive_int,
    save_turntable,
    say,
    stop_on_signals,
)

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
    p.add_argument("--seed", type=int, default=0, help="seed of every random draw")
    p.add_argument("--resume", action="store_true", help="continue the unfinished run in --out")
    p.add_argument("--overwrite", action="store_true", help="delete the run in --out and start over")
    p.add_argument("--preview-every", type=int, default=100, help="write an RGB preview PNG every N steps (0: never)")
    p.add_argument("--checkpoint-every", type=int, default=250, help="save a checkpoint every N steps (0: only at the end)")
    p.add_argument("--turntable-frames", type=int, default=24, help="frames of the final RGB turntable GIF (0: none)")
    p.add_argument("--device", default=None, help="cuda, cuda:1, mps or cpu (default: cuda when available)")
    p.add_argument("--no-view-prompts", action="store_true", help="one prompt for every view (default: as the source run)")
    p.set_defaults(run=run)


_FLAGS = {
    "iterations": "--iters", "render_resolution": "--render-resolution", "encode_resolution": "--encode-resolution",
    "shading_start": "--shading-start", "ambient_ratio": "--ambient-ratio", "lr_grid": "--lr-grid", "lr_mlp": "--lr-mlp",
    "lr_color": "--lr-color", "preview_every": "--preview-every", "checkpoint_every": "--checkpoint-every", "seed": "--seed",
}


def _config(args):
    from ..guidance.sds import SdsConfig
    from ..refine.train import RefineConfig

    base = RefineConfig.tiny() if args.preset == "tiny" else RefineConfig.paper()
    positive_int("--iters", args.iters if args.iters is not None else base.iterations)
    non_negative_int("--turntable-frames", args.turntable_frames)
    try:
        sds = SdsConfig(guidance_scale=args.guidance_scale)
    except ValueError as e:
        raise CliError(f"--guidance-scale must be a finite number, got {args.guidance_scale}") from e
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


def _source(args, out: Path) -> tuple[Path, dict]:
    """(the Latent-NeRF checkpoint RUN_OR_CKPT names, its record), checked before any model loads."""
    from ..checkpoint import CheckpointError, read_record

    given = Path(args.source).expanduser()
    path = given / SOURCE_CHECKPOINT if given.is_dir() else given
    if not path.is_file():
        where = f"the folder has no {SOURCE_CHECKPOINT}" if given.is_dir() else "no such file"
        raise CliError(f"RUN_OR_CKPT {args.source}: {where} (give a 'latent3d nerf' run folder or its {SOURCE_CHECKPOINT})")
    try:
        record = read_record(path)
    except CheckpointError as e:
        raise CliError(f"RUN_OR_CKPT {args.source}: {e}") from e
    kind = record.get("kind")
    if kind == "rgb_nerf":
        raise CliError(f"RUN_OR_CKPT {path} is already a refined RGB checkpoint; refine the Latent-NeRF run it came from ({SOURCE_CHECKPOINT})")
    if kind != "latent_nerf":
        raise CliError(f"RUN_OR_CKPT {path} is a {kind!r} checkpoint; refinement needs a Latent-NeRF one ({SOURCE_CHECKPOINT} from 'latent3d nerf')")
    if out.resolve() == path.parent.resolve() or (out / SOURCE_CHECKPOINT).exists():
        raise CliError(f"--out {out} holds a Latent-NeRF run; write the refinement to another folder (e.g. {path.parent / 'refined'})")
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


def _metadata(source: Path, settings: dict) -> dict:
    return {"command": "refine", "source": str(source), **settings}


def _existing_run(out: Path, args, config, metadata: dict) -> tuple[bool, int]:
    """(finished, resume_from): what --out holds decides between skipping, resuming and refusing."""
    from ..checkpoint import CheckpointError, read_record

    checkpoint = out / CHECKPOINT
    if args.overwrite:
        for name in RUN_FILES:
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / "previews", ignore_errors=True)
        return False, 0
    if not checkpoint.exists():
        return False, 0
    try:
        record = read_record(checkpoint)
    except CheckpointError as e:
        raise CliError(f"{e}. Pass --overwrite to start over in --out {out}, or choose another --out") from e
    step, meta = int(record.get("step", 0)), record.get("meta") or {}
    if not all(meta.get(k) == v for k, v in metadata.items() if k != "model_config"):
        raise CliError(f"--out {out} holds another run (source {meta.get('source')!r}, prompt {meta.get('prompt')!r}); choose another --out or pass --overwrite")
    if step >= config.iterations:
        return True, step
    if not args.resume:
        raise CliError(f"--out {out} holds an unfinished run ({step} of {record['config'].get('iterations')} steps); pass --resume to continue it or --overwrite to start over")
    return False, step


def run(args: argparse.Namespace) -> int:
    from ..runfolder import FolderLock

    config = _config(args)
    device = device_from("--device", args.device)
    out = Path(args.out)
    source, record = _source(args, out)
    settings = _settings(args, record)
    metadata = _metadata(source, settings)
    with FolderLock(out, "latent3d run"):
        finished, start = _existing_run(out, args, config, metadata)
        if finished:
            say(f"--out {out} already holds this run, finished at step {start} ({out / CHECKPOINT}); nothing to do")
            print(out / CHECKPOINT)
            return 0
        return _train(config, device, out, start, source, settings, metadata, args.turntable_frames)


def _train(config, device, out: Path, start: int, source: Path, settings: dict, metadata: dict, frames: int) -> int:
    import torch

    from ..guidance.prompts import encode_view_prompts
    from ..images import to_pil
    from ..loop import NonFiniteRunError
    from ..nerf.train import load_latent_nerf
    from ..refine.encoder import components_encoder
    from ..refine.train import refine_rgb
    from ..runfolder import MetricsLog

    say(f"refine: {settings['prompt']!r} from {source}, {config.iterations} steps, {config.render_resolution}² renders encoded at "
        f"{config.encode_resolution}² on {device}, output in {out}" + (f" (resuming at step {start})" if start else ""))
    field, _, _ = load_latent_nerf(source, device)
    components = load_model(settings["model"], settings["model_config"], device, say)
    with torch.no_grad():
        embeddings = encode_view_prompts(components.encode_text, settings["prompt"], settings["negative"], view_dependent=settings["view_prompts"])
    checkpoint = out / CHECKPOINT
    (out / "previews").mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    with MetricsLog(out / "metrics.jsonl", keep_until=start) as metrics, stop_on_signals() as terminated, _bar(config.iterations, start) as bar:
        def on_step(step: int, total: int, preview) -> None:
            bar.n = step
            bar.refresh()
            if preview is not None:
                to_pil(preview).save(out / "previews" / f"step_{step:05d}.png")

        def on_metrics(step: int, values: dict) -> None:
            bar.set_postfix(loss=f"{values['loss']:.3g}", t=int(values["timestep"]))
            metrics.write({"step": step, **values})

        try:
            result = refine_rgb(
                config, field, components.denoiser, components_encoder(components), embeddings, device=device, on_step=on_step,
                on_metrics=on_metrics, should_stop=terminated, checkpoint_path=checkpoint, resume=start > 0, metadata=metadata,
            )
        except KeyboardInterrupt:
            say(f"\ninterrupted; checkpoint kept at {checkpoint} (continue with --resume)")
            return EXIT_INTERRUPTED
        except NonFiniteRunError as e:
            raise CliError(str(e)) from e
        except out_of_memory_types() as e:
            raise CliError(
                f"out of memory on {device} encoding {config.encode_resolution}² images: pass --vae-checkpointing, lower "
                f"--encode-resolution (e.g. 256) or use a device with more memory; the checkpoint is kept at {checkpoint} ({type(e).__name__})"
            ) from e
    if result.status == "interrupted":
        say(f"stopped by a signal at step {result.step}; checkpoint kept at {checkpoint} (continue with --resume)")
        return EXIT_TERMINATED
    written = [checkpoint, out / "metrics.jsonl"] + ([out / "previews"] if config.preview_every else [])
    if frames > 0:
        written.append(_turntable(result.model, config, frames, out))
    say(f"{result.status}: {result.step} steps ({result.skipped_steps} skipped) in {time.perf_counter() - began:.0f} s; wrote "
        + ", ".join(str(p) for p in written))
    print(checkpoint)
    return 0


def _bar(total: int, start: int):
    from tqdm import tqdm

    return tqdm(total=total, initial=start, desc="refine", unit="step", dynamic_ncols=True)


def _turntable(model, config, frames: int, out: Path) -> Path:
    from ..refine.train import turntable_rgb

    path = out / "turntable.gif"
    save_turntable(turntable_rgb(model, config, frames, config.preview_resolution), path)
    return path
