"""Command line: ``python -m latent3d nerf|export ...`` (headless runs with diffusers weights)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Sequence

log = logging.getLogger("latent3d")


def _add_nerf_parser(sub) -> None:
    p = sub.add_parser("nerf", help="train a Latent-NeRF from a text prompt by score distillation")
    p.add_argument("--prompt", required=True, help="what to make, e.g. 'a hamburger'")
    p.add_argument("--negative", default="", help="negative prompt (the unconditional text), default empty")
    p.add_argument("--model", required=True, help="diffusers folder, SD1.x .safetensors/.ckpt file, hub id, or 'tiny' (random, offline)")
    p.add_argument("--model-config", default=None, help="local diffusers folder with configs for single-file checkpoints when offline")
    p.add_argument("--iters", type=int, default=5000, help="optimization steps (paper: 5000)")
    p.add_argument("--resolution", type=int, default=64, help="latent render size (64 -> 512 px for SD)")
    p.add_argument("--guidance-scale", type=float, default=100.0, help="classifier-free guidance scale (paper: 100)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random draw")
    p.add_argument("--out", required=True, help="output folder (checkpoint, previews, turntable)")
    p.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    p.add_argument("--preset", choices=["paper", "tiny"], default="paper", help="field/grid size preset ('tiny' for quick CPU runs)")
    p.add_argument("--preview-every", type=int, default=100, help="write a preview PNG every N steps (0: never)")
    p.add_argument("--checkpoint-every", type=int, default=250, help="save a checkpoint every N steps")
    p.add_argument("--turntable-frames", type=int, default=24, help="frames of the final turntable GIF (0: none)")
    p.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda when available)")
    p.add_argument("--no-view-prompts", action="store_true", help="one prompt for every view (no 'front/side/back/overhead view')")
    g = p.add_argument_group("sketch-shape guidance")
    g.add_argument("--sketch", default=None, help="a mesh (OBJ/PLY/STL/OFF/GLB) that guides the shape")
    g.add_argument("--mesh-scale", type=float, default=0.7, help="the sketch's farthest vertex sits at this radius")
    g.add_argument("--proximal-surface", type=float, default=0.3, help="σ_S: how free the surface region near the sketch is")
    g.add_argument("--shape-weight", type=float, default=None, help="weight of the sketch loss (default: the method's)")
    g.add_argument("--sketch-mode", choices=["grid", "exact"], default="grid", help="precomputed grid (fast) or exact queries")


def _add_export_parser(sub) -> None:
    p = sub.add_parser("export", help="turn a trained Latent-NeRF checkpoint into a textured mesh")
    p.add_argument("checkpoint", help="nerf.safetensors written by 'nerf'")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--format", choices=["glb", "obj", "ply"], default="glb", help="file format")
    p.add_argument("--resolution", type=int, default=256, help="marching-cubes grid size")
    p.add_argument("--color", choices=["texture", "vertex"], default="texture", help="baked texture or vertex colours")
    p.add_argument("--texture-size", type=int, default=1024, help="texture size in pixels")
    p.add_argument("--face-budget", type=int, default=None, help="decimate to at most this many faces")
    p.add_argument("--threshold", type=float, default=None, help="density iso-level (default: the stated rule)")
    p.add_argument("--vae", default=None, help="decode the texture with this model's VAE (diffusers folder, file or 'tiny'); default: linear map")
    p.add_argument("--device", default=None, help="cuda or cpu")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m latent3d", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_nerf_parser(sub)
    _add_export_parser(sub)
    return parser


def _device(name: str | None):
    import torch

    from .nerf.train import default_device

    return torch.device(name) if name else default_device()


def _nerf_config(args):
    import dataclasses

    from .guidance.sds import SdsConfig
    from .nerf.train import NerfConfig

    base = NerfConfig.tiny() if args.preset == "tiny" else NerfConfig.paper()
    return dataclasses.replace(
        base,
        iterations=args.iters,
        resolution=args.resolution,
        seed=args.seed,
        preview_every=args.preview_every,
        preview_resolution=max(args.resolution, 64) if args.preset == "paper" else args.resolution,
        checkpoint_every=args.checkpoint_every,
        sds=dataclasses.replace(SdsConfig(), guidance_scale=args.guidance_scale),
    )


def _shape_guide(args, device):
    if not args.sketch:
        return None
    from .shape.loss import SketchShapeConfig, make_shape_guide
    from .shape.mesh_io import load_mesh

    changes = {"mesh_scale": args.mesh_scale, "proximal_surface": args.proximal_surface, "mode": args.sketch_mode}
    if args.shape_weight is not None:
        changes["shape_weight"] = args.shape_weight
    config = SketchShapeConfig(**changes)
    return make_shape_guide(load_mesh(args.sketch), config, device)


def run_nerf(args) -> int:
    import torch
    from tqdm import tqdm

    from .guidance.prompts import encode_view_prompts
    from .images import to_pil
    from .loading import load_stable_diffusion
    from .nerf.train import fit_latent_nerf, turntable_latents

    for name in ("iters", "resolution"):
        if getattr(args, name) <= 0:
            raise ValueError(f"--{name} must be a positive integer, got {getattr(args, name)}")
    device = _device(args.device)
    out = Path(args.out)
    (out / "previews").mkdir(parents=True, exist_ok=True)
    config = _nerf_config(args)
    components = load_stable_diffusion(args.model, device, config=args.model_config)
    with torch.no_grad():
        embeddings = encode_view_prompts(components.encode_text, args.prompt, args.negative, view_dependent=not args.no_view_prompts)
    guide = _shape_guide(args, device)
    checkpoint = out / "nerf.safetensors"
    if checkpoint.exists() and not args.resume:
        raise ValueError(f"--out {out} already holds a run (nerf.safetensors); pass --resume to continue it or choose another folder")
    bar = tqdm(total=config.iterations, desc="latent-nerf", unit="step", dynamic_ncols=True)
    metrics_log = (out / "metrics.jsonl").open("a")

    def on_step(step: int, total: int, preview) -> None:
        bar.n = step
        bar.refresh()
        if preview is not None:
            with torch.no_grad():
                image = components.decode_latents(preview[None].to(device))[0]
            to_pil(image).save(out / "previews" / f"step_{step:05d}.png")

    def on_metrics(step: int, metrics: dict) -> None:
        bar.set_postfix(loss=f"{metrics['loss']:.3g}", t=int(metrics["timestep"]))
        metrics_log.write(json.dumps({"step": step, **metrics}) + "\n")

    try:
        result = fit_latent_nerf(
            config, components.denoiser, embeddings, device=device, shape_guide=guide,
            on_step=on_step, on_metrics=on_metrics, checkpoint_path=checkpoint, resume=args.resume,
        )
    except KeyboardInterrupt:
        bar.close()
        print(f"\ninterrupted; checkpoint kept at {checkpoint} (continue with --resume)", file=sys.stderr)
        return 130
    finally:
        metrics_log.close()
    bar.close()
    if args.turntable_frames > 0:
        latents = turntable_latents(result.model, config, args.turntable_frames, config.preview_resolution)
        with torch.no_grad():
            frames = torch.cat([components.decode_latents(latents[i : i + 1].to(device)) for i in range(latents.shape[0])])
        _save_turntable(frames, out / "turntable.gif")
    print(f"{result.status}: {result.step} steps ({result.skipped_steps} skipped), checkpoint {checkpoint}")
    return 0


def _save_turntable(frames, path: Path) -> None:
    """frames [N, 3, H, W] in 0..1 -> looping GIF."""
    from .images import to_pil

    images = [to_pil(frame) for frame in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=80, loop=0)


def run_export(args) -> int:
    from .export import ExportConfig, export_checkpoint

    device = _device(args.device)
    decode = None
    if args.vae:
        from .loading import load_stable_diffusion

        decode = load_stable_diffusion(args.vae, device).decode_latents
    config = ExportConfig(resolution=args.resolution, color_mode=args.color, texture_size=args.texture_size, face_budget=args.face_budget, threshold=args.threshold)
    paths = export_checkpoint(args.checkpoint, args.out, format=args.format, config=config, decode=decode, device=device)
    for path in paths:
        print(path)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return run_nerf(args) if args.command == "nerf" else run_export(args)
    except (ValueError, OSError) as error:  # OSError: files, and ModelLoadError
        print(f"error: {error}", file=sys.stderr)
        return 2
