"""``latent3d paint``: Latent-Paint, a texture for a given mesh from a prompt."""

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
    check_readable_file,
    device_from,
    latent_size,
    load_model,
    non_negative_int,
    out_of_memory_types,
    positive_int,
    save_turntable,
    say,
    stop_on_signals,
)

CHECKPOINT = "paint.safetensors"
OUTPUTS = ("mesh.glb", "mesh.obj", "mesh.mtl", "mesh.png")
RUN_FILES = (CHECKPOINT, "paint.json", "metrics.jsonl", "turntable.gif", *OUTPUTS)
FLAGS = {
    "iterations": "--iters", "resolution": "--resolution", "texture_size": "--texture-size", "mesh_scale": "--mesh-scale",
    "rotation_deg": "--mesh-rotate", "offset": "--mesh-offset", "init_color": "--init-color", "seed": "--seed",
}


def add_parser(sub) -> None:
    from ..paint.train import PaintConfig

    paper = PaintConfig.paper()
    p = sub.add_parser(
        "paint", formatter_class=Formatter, help="paint a texture on a mesh from a text prompt (Latent-Paint)",
        description="Optimize a latent UV texture for a mesh by score distillation through a Stable Diffusion UNet, then\n"
        "decode it with the VAE and write the textured mesh (mesh.glb, mesh.obj + .mtl + .png) and a turntable.\n\n"
        "--out holds one run. Rerunning the same command on a finished run does nothing (exit 0); an unfinished\n"
        "one continues with --resume; --overwrite starts over.",
    )
    p.add_argument("--mesh", required=True, help="the mesh to paint (OBJ/GLB/GLTF/PLY/STL/OFF); its own UVs are kept, else xatlas unwraps it")
    p.add_argument("--prompt", required=True, help="what the texture shows, e.g. 'a goldfish'")
    p.add_argument("--negative", default="", help="negative prompt (the unconditional text)")
    add_model_arguments(p)
    p.add_argument("--out", required=True, help="output folder (checkpoint, textured mesh, previews, turntable, metrics.jsonl)")
    p.add_argument("--preset", choices=["paper", "tiny"], default="paper", help="sizes and defaults ('tiny': quick CPU runs)")
    p.add_argument("--iters", type=int, default=None, help="optimization steps (default: the preset's, paper 5000, tiny 20)")
    p.add_argument("--resolution", type=int, default=None, help="latent render size, a multiple of 8 (default: paper 64, tiny 16)")
    p.add_argument("--texture-size", type=int, default=None, help="side of the latent texture, 64-512 (default: paper 128, tiny 64)")
    p.add_argument("--texture-resolution", type=int, default=1024, help="side of the RGB texture written, a multiple of 8 (the VAE decodes 8x)")
    p.add_argument("--init", choices=["color", "texture"], default=paper.init, help="start near --init-color (paper) or from the mesh's own texture (VAE-encoded)")
    p.add_argument("--init-color", type=float, nargs=3, default=list(paper.init_color), metavar=("R", "G", "B"), help="the colour the texture starts near (paper: red)")
    p.add_argument("--background", choices=["environment", "learned", "fixed"], default=paper.background,
                   help="learnable latent colours per direction (paper), one learnable colour, or a fixed white")
    p.add_argument("--texture-filter", choices=["bilinear", "nearest", "mipmap"], default=paper.texture_filter, help="texture lookup in training (the official code: nearest)")
    p.add_argument("--guidance-scale", type=float, default=100.0, help="classifier-free guidance scale (paper: 100)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random draw")
    p.add_argument("--resume", action="store_true", help="continue the unfinished run in --out")
    p.add_argument("--overwrite", action="store_true", help="delete the run in --out and start over")
    p.add_argument("--preview-every", type=int, default=100, help="write a preview PNG every N steps (0: never)")
    p.add_argument("--checkpoint-every", type=int, default=250, help="save a checkpoint every N steps (0: only at the end)")
    p.add_argument("--turntable-frames", type=int, default=24, help="frames of the final turntable GIF (0: none)")
    p.add_argument("--device", default=None, help="cuda, cuda:1, mps or cpu (default: cuda when available)")
    p.add_argument("--no-view-prompts", action="store_true", help="one prompt for every view (no ', front/side/back/overhead view')")
    g = p.add_argument_group("mesh placement (the cameras look at the origin from 1.0-1.5 away)")
    g.add_argument("--mesh-scale", type=float, default=paper.mesh_scale, help="the mesh's farthest vertex sits at this radius")
    g.add_argument("--mesh-rotate", type=float, nargs=3, default=list(paper.rotation_deg), metavar=("X", "Y", "Z"), help="rotation in degrees (x, then y, then z)")
    g.add_argument("--mesh-offset", type=float, nargs=3, default=list(paper.offset), metavar=("X", "Y", "Z"), help="shift after rotation (y up, +z front)")
    p.set_defaults(run=run)


def _config(args):
    from ..guidance.sds import SdsConfig
    from ..paint.train import PaintConfig

    base = PaintConfig.tiny() if args.preset == "tiny" else PaintConfig.paper()
    iters = positive_int("--iters", args.iters if args.iters is not None else base.iterations)
    resolution = latent_size("--resolution", args.resolution if args.resolution is not None else base.resolution)
    non_negative_int("--preview-every", args.preview_every)
    non_negative_int("--checkpoint-every", args.checkpoint_every)
    non_negative_int("--turntable-frames", args.turntable_frames)
    try:
        sds = SdsConfig(guidance_scale=args.guidance_scale)
    except ValueError as e:
        raise CliError(f"--guidance-scale must be a finite number, got {args.guidance_scale}") from e
    changes = dict(
        iterations=iters, resolution=resolution, seed=args.seed, preview_every=args.preview_every, preview_resolution=max(resolution, 64) if args.preset == "paper" else resolution,
        checkpoint_every=args.checkpoint_every, sds=sds, init=args.init, init_color=tuple(args.init_color), background=args.background,
        texture_filter=args.texture_filter, mesh_scale=args.mesh_scale, rotation_deg=tuple(args.mesh_rotate), offset=tuple(args.mesh_offset),
    )
    if args.texture_size is not None:
        changes["texture_size"] = args.texture_size
    try:
        return dataclasses.replace(base, **changes)
    except ValueError as e:
        message = str(e)
        for field, flag in FLAGS.items():
            message = message.replace(f"PaintConfig.{field} ", f"{flag} ")
        raise CliError(message) from e


def _metadata(args) -> dict:
    return {"command": "paint", "prompt": args.prompt, "negative": args.negative, "model": args.model, "model_config": args.model_config,
            "view_prompts": not args.no_view_prompts, "mesh": args.mesh}


def _existing_run(out: Path, args, config) -> tuple[bool, int]:
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
    if record.get("kind") != "latent_paint" or not all(meta.get(k) == v for k, v in _metadata(args).items() if k != "model_config"):
        raise CliError(f"--out {out} holds another run (prompt {meta.get('prompt')!r}, mesh {meta.get('mesh')!r}); choose another --out or pass --overwrite")
    if step >= config.iterations:
        return True, step
    if not args.resume:
        raise CliError(f"--out {out} holds an unfinished run ({step} of {record['config'].get('iterations')} steps); pass --resume to continue it or --overwrite to start over")
    return False, step


def run(args: argparse.Namespace) -> int:
    from ..paint.output import check_texture_resolution
    from ..runfolder import FolderLock

    config = _config(args)
    try:
        check_texture_resolution(args.texture_resolution, with_vae=True, name="--texture-resolution")
    except ValueError as e:
        raise CliError(str(e)) from e
    mesh_path = check_readable_file("--mesh", args.mesh)
    device = device_from("--device", args.device)
    out = Path(args.out)
    with FolderLock(out, "latent3d run"):
        finished, start = _existing_run(out, args, config)
        if finished and all((out / name).exists() for name in OUTPUTS):
            say(f"--out {out} already holds this run, finished at step {start} ({out / 'mesh.glb'}); nothing to do")
            print(out / "mesh.glb")
            return 0
        mesh = _load_mesh(mesh_path, out, config)
        components = load_model(args.model, args.model_config, device, say)
        if finished:
            from ..paint.train import load_painted

            say(f"the run finished at step {start}; writing its outputs again")
            result = load_painted(out / CHECKPOINT)
        else:
            result = _train(args, config, device, out, start, mesh, components)
            if isinstance(result, int):
                return result
        written = _write_outputs(result, components, args, out)
    print(written[0])
    return 0


def _load_mesh(path: Path, out: Path, config):
    from ..paint.mesh import PaintMeshConfig, load_paint_mesh

    say(f"reading mesh {path} ...")
    mesh = load_paint_mesh(path, PaintMeshConfig(cache_dir=str(out / "uv_cache")))
    say(f"mesh: {mesh.num_faces} faces, UVs from {mesh.uv_origin}, {'a' if mesh.texture is not None else 'no'} texture")
    if config.init == "texture" and mesh.texture is None:
        raise CliError(f"--init texture needs a mesh with a base-colour texture; {path} has none (use --init color)")
    return mesh


def _train(args, config, device, out: Path, start: int, mesh, components):
    """The optimization with a progress bar, previews and metrics; its result, or an exit code."""
    import torch

    from ..guidance.prompts import encode_view_prompts
    from ..loop import NonFiniteRunError
    from ..paint.train import paint_mesh
    from ..runfolder import MetricsLog

    say(f"latent-paint: {args.prompt!r} on {mesh.source}, {config.iterations} steps at {config.resolution}², texture {config.texture_size}², "
        f"on {device}, output in {out}" + (f" (resuming at step {start})" if start else ""))
    with torch.no_grad():
        embeddings = encode_view_prompts(components.encode_text, args.prompt, args.negative, view_dependent=not args.no_view_prompts)
    checkpoint = out / CHECKPOINT
    (out / "previews").mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    with MetricsLog(out / "metrics.jsonl", keep_until=start) as metrics, stop_on_signals() as terminated, _bar(config.iterations, start) as bar:
        def on_step(step: int, total: int, preview) -> None:
            bar.n = step
            bar.refresh()
            if preview is not None:
                from ..images import to_pil

                with torch.no_grad():
                    image = components.decode_latents(preview[None].to(device))[0]
                to_pil(image).save(out / "previews" / f"step_{step:05d}.png")

        def on_metrics(step: int, values: dict) -> None:
            bar.set_postfix(loss=f"{values['loss']:.3g}", t=int(values["timestep"]))
            metrics.write({"step": step, **values})

        try:
            result = paint_mesh(
                config, mesh, components.denoiser, embeddings, device=device, encode=components.encode_images, on_step=on_step,
                on_metrics=on_metrics, should_stop=terminated, checkpoint_path=checkpoint, resume=start > 0, metadata=_metadata(args),
            )
        except KeyboardInterrupt:
            say(f"\ninterrupted; checkpoint kept at {checkpoint} (continue with --resume)")
            return EXIT_INTERRUPTED
        except NonFiniteRunError as e:
            raise CliError(str(e)) from e
        except out_of_memory_types() as e:
            raise CliError(
                f"out of memory on {device} at --resolution {config.resolution}: lower --resolution or --texture-size, use --preset tiny, "
                f"or a device with more memory; the checkpoint is kept at {checkpoint} ({type(e).__name__})"
            ) from e
    if result.status == "interrupted":
        say(f"stopped by a signal at step {result.step}; checkpoint kept at {checkpoint} (continue with --resume)")
        return EXIT_TERMINATED
    say(f"{result.status}: {result.step} steps ({result.skipped_steps} skipped) in {time.perf_counter() - began:.0f} s")
    return result


def _write_outputs(result, components, args, out: Path) -> list[Path]:
    """mesh.glb, mesh.obj/.mtl/.png and turntable.gif; the written paths (the GLB first)."""
    from ..paint.output import paint_output, turntable_images, write_painted

    say(f"decoding the texture at {args.texture_resolution}² ...")
    textured = paint_output(result, components.decode_latents, args.texture_resolution)
    written = write_painted(textured, out)
    if args.turntable_frames > 0:
        frames = turntable_images(result, textured.texture, args.turntable_frames, device=components.device)
        save_turntable(frames, out / "turntable.gif")
        written.append(out / "turntable.gif")
    say("wrote " + ", ".join(str(p) for p in [out / CHECKPOINT, out / "metrics.jsonl", *written]))
    return written


def _bar(total: int, start: int):
    from tqdm import tqdm

    return tqdm(total=total, initial=start, desc="latent-paint", unit="step", dynamic_ncols=True)
