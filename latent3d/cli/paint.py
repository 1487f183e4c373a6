"""``latent3d paint``: Latent-Paint, a texture for a given mesh from a prompt; and the ``paint`` kind of
``latent3d batch`` (``configure_batch_job``, ``run_batch_job``), which runs the same stage function."""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

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
    from ..paint.train import PaintConfig, PaintResult

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
    add_run_arguments(p)
    g = p.add_argument_group("mesh placement (the cameras look at the origin from 1.0-1.5 away)")
    g.add_argument("--mesh-scale", type=float, default=paper.mesh_scale, help="the mesh's farthest vertex sits at this radius")
    g.add_argument("--mesh-rotate", type=float, nargs=3, default=list(paper.rotation_deg), metavar=("X", "Y", "Z"), help="rotation in degrees (x, then y, then z)")
    g.add_argument("--mesh-offset", type=float, nargs=3, default=list(paper.offset), metavar=("X", "Y", "Z"), help="shift after rotation (y up, +z front)")
    p.set_defaults(run=run)


def _config(args):
    from ..paint.train import PaintConfig

    base = PaintConfig.tiny() if args.preset == "tiny" else PaintConfig.paper()
    iters = positive_int("--iters", args.iters if args.iters is not None else base.iterations)
    resolution = latent_size("--resolution", args.resolution if args.resolution is not None else base.resolution)
    non_negative_int("--preview-every", args.preview_every)
    non_negative_int("--checkpoint-every", args.checkpoint_every)
    non_negative_int("--turntable-frames", args.turntable_frames)
    sds = guidance_from(args)
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


@dataclasses.dataclass
class PaintRequest:
    """One Latent-Paint run, apart from the model: what ``latent3d paint``'s flags (or a batch job line) ask for.

    ``mesh`` is the mesh file as the user named it (recorded in the checkpoint; the trainer itself refuses to
    resume on a mesh of other vertices, faces or UVs); ``extra_meta`` adds keys to the checkpoint's metadata
    (e.g. a batch job's hash) without changing what identifies the run.
    """

    prompt: str
    negative: str
    model: str
    model_config: str | None
    config: PaintConfig
    out: Path
    mesh: str
    view_prompts: bool = True
    texture_resolution: int = 1024
    """Side in pixels of the RGB texture written (a multiple of 8: the VAE decodes 8×)."""
    extra_meta: dict = dataclasses.field(default_factory=dict)

    def metadata(self) -> dict:
        return {"command": "paint", "prompt": self.prompt, "negative": self.negative, "model": self.model, "model_config": self.model_config,
                "view_prompts": self.view_prompts, "mesh": self.mesh, **self.extra_meta}


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
    request = PaintRequest(args.prompt, args.negative, args.model, args.model_config, config, out, args.mesh, not args.no_view_prompts, args.texture_resolution)
    with FolderLock(out, "latent3d run"):
        finished, start = existing_run(out, CHECKPOINT, RUN_FILES, request.metadata(), config.iterations, resume=args.resume,
                                       overwrite=args.overwrite, shown=("prompt", "mesh"), kind="latent_paint")
        if finished and all((out / name).exists() for name in OUTPUTS):
            return say_finished(out, start, out / "mesh.glb")
        mesh = read_mesh(mesh_path, out)
        if config.init == "texture" and mesh.texture is None:
            raise CliError(f"--init texture needs a mesh with a base-colour texture; {mesh_path} has none (use --init color)")
        components = load_model(args.model, args.model_config, device, say)
        if finished:
            from ..paint.train import load_painted

            say(f"the run finished at step {start}; writing its outputs again")
            result = load_painted(out / CHECKPOINT)
        else:
            result = _train(request, device, start, mesh, components)
            if isinstance(result, int):
                return result
        written = write_paint_outputs(result, components, args.texture_resolution, args.turntable_frames, out)
        say("wrote " + ", ".join(str(p) for p in [out / CHECKPOINT, out / "metrics.jsonl", *written]))
    print(written[0])
    return 0


def read_mesh(path: Path, out: Path, report: Callable[[str], None] = say):
    """The PaintMesh of the file at ``path`` (its UVs, else an xatlas unwrap cached in ``out/uv_cache``)."""
    from ..paint.mesh import PaintMeshConfig, load_paint_mesh

    report(f"reading mesh {path} ...")
    mesh = load_paint_mesh(path, PaintMeshConfig(cache_dir=str(out / "uv_cache")))
    report(f"mesh: {mesh.num_faces} faces, UVs from {mesh.uv_origin}, {'a' if mesh.texture is not None else 'no'} texture")
    return mesh


def _train(request: PaintRequest, device, start: int, mesh, components):
    """The optimization under a progress bar; its result, or an exit code."""
    config, out = request.config, request.out
    say(f"latent-paint: {request.prompt!r} on {mesh.source}, {config.iterations} steps at {config.resolution}², texture {config.texture_size}², "
        f"on {device}, output in {out}" + (f" (resuming at step {start})" if start else ""))
    began = time.perf_counter()
    result = run_stage(
        lambda stop, on_step, on_metrics: train_paint(
            components, request, device, mesh, start=start, should_stop=stop, on_step=on_step, on_metrics=on_metrics),
        desc="latent-paint", total=config.iterations, start=start, checkpoint=out / CHECKPOINT,
        out_of_memory=f"out of memory on {device} at --resolution {config.resolution}: lower --resolution or --texture-size, use --preset tiny, "
        "or a device with more memory",
    )
    if not isinstance(result, int):
        say(f"{result.status}: {result.step} steps ({result.skipped_steps} skipped) in {time.perf_counter() - began:.0f} s")
    return result


def train_paint(components, request: PaintRequest, device, mesh, *, start: int = 0, should_stop=None, on_step=None, on_metrics=None) -> PaintResult:
    """Paint ``mesh`` (a PaintMesh, e.g. from :func:`read_mesh`) for ``request`` with already-loaded
    ``components`` (``SdComponents``) into ``request.out``: the stage entry point ``latent3d paint`` and batch
    workers share.

    Writes ``paint.safetensors`` (every ``config.checkpoint_every`` steps and at the end), ``metrics.jsonl``
    and ``previews/step_NNNNN.png``; ``start`` > 0 resumes from the checkpoint there (steps after it are
    dropped from the metrics log). ``on_step(step, total)`` and ``on_metrics(step, values)`` follow progress.
    Returns the ``PaintResult``; KeyboardInterrupt, NonFiniteRunError and out-of-memory errors propagate after
    the checkpoint is saved.
    """
    from ..paint.train import paint_mesh

    config, out = request.config, Path(request.out)
    embeddings = view_embeddings(components, request)
    with run_folder_hooks(out, start, decoded(components, device), on_step, on_metrics) as (step_hook, metrics_hook):
        return paint_mesh(
            config, mesh, components.denoiser, embeddings, device=device, encode=components.encode_images, on_step=step_hook,
            on_metrics=metrics_hook, should_stop=should_stop, checkpoint_path=out / CHECKPOINT, resume=start > 0, metadata=request.metadata(),
        )


def write_paint_outputs(result: PaintResult, components, texture_resolution: int, frames: int, out: Path, report: Callable[[str], None] = say) -> list[Path]:
    """mesh.glb, mesh.obj/.mtl/.png (the texture decoded at ``texture_resolution``²) and, when ``frames`` > 0,
    turntable.gif: the written paths, the GLB first and the turntable last."""
    from ..paint.output import paint_output, turntable_images, write_painted

    report(f"decoding the texture at {texture_resolution}² ...")
    textured = paint_output(result, components.decode_latents, texture_resolution)
    written = write_painted(textured, out)
    if frames > 0:
        images = turntable_images(result, textured.texture, frames, device=components.device)
        save_turntable(images, out / "turntable.gif")
        written.append(out / "turntable.gif")
    return written


# -- the "paint" kind of `latent3d batch` -------------------------------------------------------------------
@dataclasses.dataclass
class PaintExportConfig:
    """What a ``paint`` job writes besides its checkpoint (its ``export.*`` overrides)."""

    texture_size: int = 1024
    """Side in pixels of the RGB texture written (mesh.png, the GLB's baseColorTexture), as ``latent3d paint
    --texture-resolution``: a multiple of 8 in [64, 4096]. Default: the batch's ``--texture-size``."""

    def __post_init__(self) -> None:
        from ..paint.output import check_texture_resolution

        check_texture_resolution(self.texture_size, with_vae=True, name="export.texture_size")


def configure_batch_job(job, settings) -> dict[str, Any]:
    """{"paint": PaintConfig, "export": PaintExportConfig} for a ``paint`` job line: the batch's preset, the
    job's seed and iterations, the batch's preview/checkpoint cadence and ``--texture-size``, then the job's
    overrides (PaintConfig fields; ``export.texture_size``). ValueError names the key and the rule."""
    from ..batch.run import job_configs, latent_resolution
    from ..paint.train import PaintConfig

    if job.format == "ply":
        raise ValueError("format 'ply' cannot hold a texture: a paint job writes mesh.glb and mesh.obj (+ .mtl, .png); leave format out")
    try:
        export = PaintExportConfig(settings.texture_size)
    except ValueError as e:
        raise ValueError(f"{e} (the batch's --texture-size; a paint job's export.texture_size override can set its own)") from e
    configs = job_configs(job, settings, "paint", PaintConfig, {"export": export})
    configs["paint"] = latent_resolution(configs["paint"], job, settings)
    return configs


def run_batch_job(job, settings, components, job_dir: Path, device, hooks) -> dict[str, Any]:
    """Paint (or resume painting) the job's ``mesh`` with :func:`train_paint` into ``job_dir`` and write what
    ``latent3d paint --out`` writes (:func:`write_paint_outputs`); returns the outputs (paths relative to the
    batch folder, ``job_dir``'s parent)."""
    from ..batch.run import JobInterrupted, batch_path, job_hash, quiet, read_input, resumable_step, step_hook
    from ..paint.train import load_painted

    configs = configure_batch_job(job, settings)
    config, export = configs["paint"], configs["export"]
    request = PaintRequest(job.prompt, job.negative, settings.model, settings.model_config, config, job_dir, job.mesh, settings.view_prompts,
                           export.texture_size, {"batch_job": job_hash(job, settings)})
    checkpoint = job_dir / CHECKPOINT
    start = hooks.resumed_from = resumable_step(checkpoint, request)
    if start < config.iterations:
        mesh = read_input(job, "mesh", lambda path: read_mesh(path, job_dir, quiet(hooks)))
        if config.init == "texture" and mesh.texture is None:
            raise ValueError(f"override 'init' = 'texture' needs a mesh with a base-colour texture; mesh {job.mesh} has none")
        result = train_paint(components, request, device, mesh, start=start, should_stop=hooks.should_stop, on_step=step_hook(job_dir, hooks))
        if result.status == "interrupted":
            raise JobInterrupted(result.step)
    else:
        result = load_painted(checkpoint)
    written = write_paint_outputs(result, components, export.texture_size, settings.turntable_frames, job_dir, quiet(hooks))
    turntable = job_dir / "turntable.gif" if settings.turntable_frames > 0 else None
    return {"checkpoint": batch_path(checkpoint), "turntable": batch_path(turntable), "mesh": [batch_path(p) for p in written if p != turntable]}
