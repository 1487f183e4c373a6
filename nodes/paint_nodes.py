"""Latent-Paint: a texture for a mesh by SDS through the user's MODEL, resumable, with live progress."""

from __future__ import annotations

import torch

from ..latent3d.export.writers import save_mesh
from ..latent3d.images import to_pil
from ..latent3d.paint.mesh import PaintMeshConfig
from ..latent3d.paint.output import check_texture_resolution, paint_output, turntable_images
from ..latent3d.paint.train import mesh_fingerprint, paint_mesh, run_identity
from . import host, memory
from .api import io
from .comfy_denoiser import ComfyDenoiser
from .eta import SizeWidget
from .paint_inputs import LatentFormat, mesh_to_paint
from .schema import build_schema
from .spec import build_config
from .specs import LATENT_PAINT, MIN_LATENT, NO_MESH_FILE
from .training import TrainingRun

VIEWS = ("front", "side", "back", "overhead")
NAME = LATENT_PAINT.display_name
RASTER_BYTES_PER_PIXEL = 4_096
"""Bytes a rendered pixel keeps for the backward pass (texture lookup, background; an allowance, not measured)."""


def step_estimate(model):
    return lambda r: memory.StepEstimate({"UNet (ComfyUI's estimate)": memory.unet_bytes(model, r), "render": r * r * RASTER_BYTES_PER_PIXEL})


class LatentPaint(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return build_schema(LATENT_PAINT, {"mesh_file": [NO_MESH_FILE, *host.input_meshes()]}, hidden_node_id=True, hidden_prompt=True)

    @classmethod
    def validate_inputs(cls, filename_prefix: str | None = None) -> bool | str:
        """Checked before the graph runs, so a bad prefix never waits for an upstream training. One named
        input only: ComfyUI repeats a failure once per input named here. mesh_file is checked by ComfyUI
        against the choices (refreshed when the prompt is queued), and again by ``host.input_path``."""
        return host.check_prefix(filename_prefix)

    @classmethod
    def execute(cls, model, clip, prompt, negative, view_dependent, resume, keep_optimizer, texture_resolution, turntable_frames, filename_prefix,
                mesh_file=NO_MESH_FILE, mesh=None, sketch=None, vae=None, **widgets) -> io.NodeOutput:
        import comfy.model_management as mm

        overrides = {view: widgets.pop(f"{view}_conditioning", None) for view in VIEWS}
        run = TrainingRun(NAME, cls.hidden.unique_id, mm.get_torch_device())
        with run.collecting():
            run.check_downstream(cls.hidden.prompt)
            config = build_config(LATENT_PAINT, widgets)
            check_texture_resolution(texture_resolution, vae is not None)
            denoiser = ComfyDenoiser(model)
            run.check_memory(model, "resolution", config.resolution, step_estimate(model), MIN_LATENT)
            with host.pip_hint(NAME):
                cache = host.output_path("latent3d/uv_cache", "uv cache")[0]
                target = mesh_to_paint(mesh_file, mesh, sketch, host.input_path, PaintMeshConfig(cache_dir=str(cache)))
            embeddings = host.view_embeddings(clip, prompt, negative, view_dependent, overrides, NAME)
            fingerprint = mesh_fingerprint(target, config.init == "texture")
            key = host.run_key(run_identity(config), embeddings.fingerprint(), host.model_fingerprint(model), fingerprint, config.init == "texture" and vae is not None)
            latent = LatentFormat.of(model)
            decode = lambda z: to_pil(host.latent_images(z[None], vae, latent.to_vae)[0])  # noqa: E731
            run.start(key, "paint.safetensors", config.iterations, resume, decode, SizeWidget("resolution", config.resolution, MIN_LATENT))
            with run.training():
                result = paint_mesh(config, target, denoiser, embeddings, device=run.device, encode=host.texture_encoder(vae, latent.to_model),
                                    **run.loop_arguments(keep_optimizer))  # fmt: skip
            run.raise_if_interrupted(result)
            textured = paint_output(result, host.texture_decoder(vae, latent.to_vae), texture_resolution)
            path, relative = host.unique_output(filename_prefix, ".glb")
            save_mesh(textured, path)
            frames = turntable_images(result, textured.texture, turntable_frames, device=run.device).permute(0, 2, 3, 1).contiguous()
            ui = run.finish(result, [to_pil(f) for f in frames])
        image = torch.from_numpy(textured.texture).float()[None] / 255.0
        return io.NodeOutput(relative, image, frames, host.core_mesh(textured), ui=ui)
