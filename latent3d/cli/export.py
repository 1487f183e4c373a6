"""``latent3d export``: a trained Latent-NeRF checkpoint -> a textured GLB / OBJ+MTL+PNG / PLY."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from .common import CliError, Formatter, check_readable_file, device_from, load_model, say


def add_parser(sub) -> None:
    from ..export import ExportConfig

    defaults = ExportConfig()
    p = sub.add_parser(
        "export", formatter_class=Formatter, help="turn a trained Latent-NeRF checkpoint into a textured mesh",
        description="Marching cubes on the density, cleanup, decimation, UV unwrap and a baked texture.\n\n"
        "The texture is decoded with the VAE of the model the run was trained with (recorded in the checkpoint),\n"
        "so its colours match the previews; --vae linear uses the fast linear latent->RGB map instead. A refined\n"
        "checkpoint ('latent3d refine') holds RGB colours: they are written as they are and --vae is not used.",
    )
    p.add_argument("checkpoint", help="nerf.safetensors written by 'nerf', or refined.safetensors written by 'refine' (RGB colours, no decode)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--name", default=None, help="file name without extension (default: the checkpoint's stem)")
    p.add_argument("--format", choices=["glb", "obj", "ply"], default="glb", help="file format (ply: vertex colours)")
    p.add_argument("--resolution", type=int, default=defaults.resolution, help="marching-cubes grid size (16-512)")
    p.add_argument("--color", choices=["texture", "vertex"], default=defaults.color_mode, help="baked texture or vertex colours")
    p.add_argument("--texture-size", type=int, default=defaults.texture_size, help="texture size in pixels (a multiple of 8)")
    p.add_argument("--face-budget", type=int, default=None, help="decimate to at most this many faces (default: 20000 before UV unwrapping)")
    p.add_argument("--threshold", type=float, default=None, help="density iso-level (default: the automatic rule, at most 10)")
    p.add_argument(
        "--vae", default="auto",
        help="texture decoder: 'auto' (the run's own model), 'linear' (the linear latent->RGB map), or a model like --model",
    )
    p.add_argument("--model-config", default=None, help="for a single-file --vae without hub access: a local diffusers folder of the same family")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.set_defaults(run=run)


_FLAGS = {"resolution": "--resolution", "texture_size": "--texture-size", "face_budget": "--face-budget", "threshold": "--threshold"}


def _config(args):
    from ..export import ExportConfig

    try:
        return ExportConfig(
            resolution=args.resolution, color_mode=args.color, texture_size=args.texture_size, face_budget=args.face_budget, threshold=args.threshold
        )
    except ValueError as e:
        message = str(e)
        for field, flag in _FLAGS.items():
            message = message.replace(f"ExportConfig.{field}", flag)
        raise CliError(message) from e


def _decoder(args, record: dict, device, color_mode: str):
    """(decode callable or None, the words for what decodes the texture)."""
    if record.get("kind") == "rgb_nerf":
        return None, "nothing (the refined field's colours are RGB already)"
    if color_mode == "vertex" or args.format == "ply":
        return None, "vertex colours by the linear latent->RGB map"
    if args.vae == "linear":
        return None, "the linear latent->RGB map (--vae linear)"
    meta = record.get("meta") or {}
    model, config = (args.vae, args.model_config) if args.vae != "auto" else (meta.get("model"), args.model_config or meta.get("model_config"))
    if not model:
        return None, "the linear latent->RGB map (the checkpoint names no model; pass --vae MODEL for a VAE decode)"
    components = load_model(model, config, device, say)
    return components.decode_latents, f"the VAE of {model}" + (" (the run's model)" if args.vae == "auto" else "")


def run(args: argparse.Namespace) -> int:
    from ..checkpoint import read_record
    from ..export import export_checkpoint

    config = _config(args)
    checkpoint = check_readable_file("checkpoint", args.checkpoint)
    if args.name is not None and (not args.name or Path(args.name).name != args.name):
        raise CliError(f"--name must be a plain file name without folders, got {args.name!r}")
    device = device_from("--device", args.device)
    record = read_record(checkpoint)
    decode, decoder = _decoder(args, record, device, config.color_mode)
    say(f"exporting {checkpoint} (step {record.get('step')}) as {args.format.upper()} at {config.resolution}³; texture decoded with {decoder} ...")
    start = time.perf_counter()
    stages = {"field": "density lattice", "marching_cubes": "marching cubes", "cleanup": "removing floaters", "decimate": "decimating",
              "colors": "vertex colours", "uv_unwrap": "UV unwrap (xatlas)", "bake": "baking the texture", "decode": "decoding the texture"}
    on_stage = lambda name: say(f"  {stages.get(name, name)} (at {time.perf_counter() - start:.1f} s)")  # noqa: E731
    paths = export_checkpoint(checkpoint, args.out, format=args.format, config=config, decode=decode, name=args.name, device=device, on_stage=on_stage)
    say(f"exported in {time.perf_counter() - start:.1f} s: " + ", ".join(str(p) for p in paths))
    for path in paths:
        print(path)
    return 0
