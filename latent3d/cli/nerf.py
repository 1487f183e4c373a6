"""``latent3d nerf``: train a Latent-NeRF from a prompt (optionally guided by a sketch mesh)."""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .common import (
    CliError,
    Formatter,
    add_model_arguments,
    add_run_arguments,
    check_readable_file,
    decoded,
    device_from,
    existing_run,
    guidance_from,
    latent_size,
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
    from ..nerf.train import NerfConfig
    from ..shape.loss import SketchShapeConfig

CHECKPOINT = "nerf.safetensors"
RUN_FILES = (CHECKPOINT, "nerf.json", "metrics.jsonl", "turntable.gif")


def add_parser(sub) -> None:
    from ..shape.loss import SketchShapeConfig

    p = sub.add_parser(
        "nerf", formatter_class=Formatter, help="train a Latent-NeRF from a text prompt by score distillation",
        description="Train a Latent-NeRF by score distillation through a Stable Diffusion UNet.\n\n"
        "--out holds one run. Rerunning the same command on a finished run does nothing (exit 0); an unfinished\n"
        "one continues with --resume; --overwrite starts over.",
    )
    p.add_argument("--prompt", required=True, help="what to make, e.g. 'a hamburger'")
    p.add_argument("--negative", default="", help="negative prompt (the unconditional text)")
    add_model_arguments(p)
    p.add_argument("--out", required=True, help="output folder (checkpoint, previews, turntable, metrics.jsonl)")
    p.add_argument("--preset", choices=["paper", "tiny"], default="paper", help="field/grid size and defaults ('tiny': quick CPU runs)")
    p.add_argument("--iters", type=int, default=None, help="optimization steps (default: the preset's, paper 5000, tiny 20)")
    p.add_argument("--resolution", type=int, default=None, help="latent render size, a multiple of 8; 64 = a 512² image (default: paper 64, tiny 16)")
    p.add_argument("--guidance-scale", type=float, default=100.0, help="classifier-free guidance scale (paper: 100)")
    add_run_arguments(p)
    defaults = SketchShapeConfig()
    g = p.add_argument_group("sketch-shape guidance")
    g.add_argument("--sketch", default=None, help="a mesh (OBJ/PLY/STL/OFF/GLB/GLTF) that guides the shape")
    g.add_argument("--mesh-scale", type=float, default=defaults.mesh_scale, help="the sketch's farthest vertex sits at this radius")
    g.add_argument("--sketch-rotate", type=float, nargs=3, default=list(defaults.rotation_deg), metavar=("X", "Y", "Z"), help="rotation of the sketch in degrees (x, then y, then z)")
    g.add_argument("--sketch-offset", type=float, nargs=3, default=list(defaults.offset), metavar=("X", "Y", "Z"), help="shift of the sketch after rotation (y up, +z front)")
    g.add_argument("--proximal-surface", type=float, default=defaults.proximal_surface, help="σ_S: how free the surface region near the sketch is")
    g.add_argument("--shape-weight", type=float, default=defaults.shape_weight, help="weight of the sketch loss (per unit ray length)")
    g.add_argument("--sketch-mode", choices=["grid", "exact"], default=defaults.mode, help="precomputed grid (fast) or exact per-sample queries")
    p.set_defaults(run=run)


def _config(args):
    from ..nerf.train import NerfConfig

    base = NerfConfig.tiny() if args.preset == "tiny" else NerfConfig.paper()
    iters = positive_int("--iters", args.iters if args.iters is not None else base.iterations)
    resolution = latent_size("--resolution", args.resolution if args.resolution is not None else base.resolution)
    non_negative_int("--preview-every", args.preview_every)
    non_negative_int("--checkpoint-every", args.checkpoint_every)
    non_negative_int("--turntable-frames", args.turntable_frames)
    sds = guidance_from(args)
    preview = max(resolution, 64) if args.preset == "paper" else resolution
    return dataclasses.replace(
        base, iterations=iters, resolution=resolution, seed=args.seed, preview_every=args.preview_every,
        preview_resolution=preview, checkpoint_every=args.checkpoint_every, sds=sds,
    )


def _sketch_config(args):
    from ..shape.loss import SketchShapeConfig

    try:
        return SketchShapeConfig(
            mesh_scale=args.mesh_scale, rotation_deg=tuple(args.sketch_rotate), offset=tuple(args.sketch_offset),
            proximal_surface=args.proximal_surface, shape_weight=args.shape_weight, mode=args.sketch_mode,
        )
    except ValueError as e:
        flags = {"mesh_scale": "--mesh-scale", "rotation_deg": "--sketch-rotate", "offset": "--sketch-offset",
                 "proximal_surface": "--proximal-surface", "shape_weight": "--shape-weight"}
        message = str(e)
        for field, flag in flags.items():
            message = message.replace(f"SketchShapeConfig.{field}", flag)
        raise CliError(message) from e


@dataclasses.dataclass
class NerfRequest:
    """One Latent-NeRF run, apart from the model: what ``latent3d nerf``'s flags (or a batch job line) ask for.

    ``sketch`` is the sketch file as the user named it (recorded in the checkpoint); ``extra_meta`` adds keys
    to the checkpoint's metadata (e.g. a batch job's hash) without changing what identifies the run.
    """

    prompt: str
    negative: str
    model: str
    model_config: str | None
    config: NerfConfig
    out: Path
    sketch: str | None = None
    sketch_config: SketchShapeConfig | None = None
    view_prompts: bool = True
    extra_meta: dict = dataclasses.field(default_factory=dict)

    def metadata(self) -> dict:
        return {"command": "nerf", "prompt": self.prompt, "negative": self.negative, "model": self.model,
                "model_config": self.model_config, "view_prompts": self.view_prompts, "sketch": self.sketch, **self.extra_meta}


def _request(args, config, out: Path, sketch_config) -> NerfRequest:
    return NerfRequest(args.prompt, args.negative, args.model, args.model_config, config, out, args.sketch, sketch_config, not args.no_view_prompts)


def run(args: argparse.Namespace) -> int:
    from ..runfolder import FolderLock

    config = _config(args)
    sketch_path = check_readable_file("--sketch", args.sketch)
    sketch_config = _sketch_config(args) if sketch_path else None
    device = device_from("--device", args.device)
    out = Path(args.out)
    request = _request(args, config, out, sketch_config)
    with FolderLock(out, "latent3d run"):
        finished, start = existing_run(out, CHECKPOINT, RUN_FILES, request.metadata(), config.iterations, resume=args.resume, overwrite=args.overwrite)
        if finished:
            return say_finished(out, start, out / CHECKPOINT)
        return _train(args, request, device, start, sketch_path)


def _train(args, request: NerfRequest, device, start: int, sketch_path) -> int:
    config, out = request.config, request.out
    say(f"latent-nerf: {args.prompt!r}, {config.iterations} steps at {config.resolution}² on {device}, output in {out}"
        + (f" (resuming at step {start})" if start else ""))
    sketch = _load_sketch(sketch_path) if sketch_path else None
    components = load_model(args.model, args.model_config, device, say)
    checkpoint = out / CHECKPOINT
    began = time.perf_counter()
    result = run_stage(
        lambda stop, on_step, on_metrics: train_nerf(
            components, request, device, start=start, sketch=sketch, should_stop=stop, on_step=on_step, on_metrics=on_metrics),
        desc="latent-nerf", total=config.iterations, start=start, checkpoint=checkpoint,
        out_of_memory=f"out of memory on {device} at --resolution {config.resolution}: lower --resolution (e.g. 32), use --preset tiny, "
        "or a device with more memory",
    )
    if isinstance(result, int):
        return result
    written = [checkpoint, out / "metrics.jsonl"] + ([out / "previews"] if config.preview_every else [])
    if args.turntable_frames > 0:
        written.append(write_turntable(result.model, config, components, device, args.turntable_frames, out))
    say(f"{result.status}: {result.step} steps ({result.skipped_steps} skipped) in {time.perf_counter() - began:.0f} s; wrote "
        + ", ".join(str(p) for p in written))
    print(checkpoint)
    return 0


def train_nerf(components, request: NerfRequest, device, *, start: int = 0, sketch=None, should_stop=None, on_step=None, on_metrics=None, progress: bool = True):
    """Train ``request`` with already-loaded ``components`` (``SdComponents``) into ``request.out``: the stage
    entry point ``latent3d nerf`` and batch workers share (a worker loads its model once for many runs).

    Writes ``nerf.safetensors`` (every ``config.checkpoint_every`` steps and at the end), ``metrics.jsonl`` and
    ``previews/step_NNNNN.png``; ``start`` > 0 resumes from the checkpoint there (steps after it are dropped
    from the metrics log). ``sketch``: the loaded sketch mesh, else ``request.sketch`` is read when set.
    ``on_step(step, total)`` and ``on_metrics(step, values)`` follow progress (``progress`` False: no progress
    bars of the sketch-grid build on stderr). Returns the ``NerfResult``;
    KeyboardInterrupt, NonFiniteRunError and out-of-memory errors propagate after the checkpoint is saved.
    """
    from ..nerf.train import fit_latent_nerf

    config, out = request.config, Path(request.out)
    if sketch is None and request.sketch is not None:
        sketch = _load_sketch(Path(request.sketch).expanduser())
    embeddings = view_embeddings(components, request)
    guide = None
    if sketch is not None:
        from ..shape.loss import SketchShapeConfig

        guide = _shape_guide(sketch, request.sketch_config or SketchShapeConfig(), device, show_bars=progress)
    with run_folder_hooks(out, start, decoded(components, device), on_step, on_metrics) as (step_hook, metrics_hook):
        return fit_latent_nerf(
            config, components.denoiser, embeddings, device=device, shape_guide=guide, on_step=step_hook, on_metrics=metrics_hook,
            should_stop=should_stop, checkpoint_path=out / CHECKPOINT, resume=start > 0, metadata=request.metadata(),
        )


def _load_sketch(path: Path):
    from ..shape.mesh_io import load_mesh

    say(f"reading sketch {path} ...")
    mesh = load_mesh(path)
    say(f"sketch: {mesh.num_vertices} vertices, {mesh.num_faces} faces")
    return mesh


def _shape_guide(mesh, config, device, show_bars: bool = True):
    from tqdm import tqdm

    from ..shape.loss import make_shape_guide

    bars: dict[str, tqdm] = {}

    def progress(stage: str, done: int, total: int) -> None:
        bar = bars.get(stage)
        if bar is None:
            for old in bars.values():
                old.close()
            bar = bars[stage] = tqdm(total=total, desc=stage, unit_scale=True, dynamic_ncols=True, leave=False, disable=not show_bars)
        bar.n = done
        bar.refresh()

    try:
        return make_shape_guide(mesh, config, device, on_progress=progress)
    finally:
        for bar in bars.values():
            bar.close()


def write_turntable(model, config, components, device, frames: int, out: Path, progress: bool = True) -> Path:
    """``out/turntable.gif``: ``frames`` renders around the evaluation orbit, decoded by ``components``."""
    import torch
    from tqdm import tqdm

    from ..nerf.train import turntable_latents

    latents = turntable_latents(model, config, frames, config.preview_resolution)
    with torch.no_grad():
        images = torch.cat([components.decode_latents(latents[i : i + 1].to(device)) for i in tqdm(range(frames), desc="turntable", leave=False, disable=not progress)])
    path = out / "turntable.gif"
    save_turntable(images, path)
    return path
