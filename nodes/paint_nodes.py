"""Latent-Paint: a texture for a mesh by SDS through the user's MODEL, resumable, with live progress."""

from __future__ import annotations

import torch
from comfy_api.latest import io

from ..latent3d.export.writers import save_mesh
from ..latent3d.images import to_pil
from ..latent3d.paint.mesh import PaintMeshConfig
from ..latent3d.paint.output import check_texture_resolution, paint_output, turntable_images
from ..latent3d.paint.train import mesh_fingerprint, paint_mesh, run_identity
from . import host
from .comfy_denoiser import ComfyDenoiser
from .paint_inputs import LatentFormat, mesh_to_paint
from .schema import build_schema
from .spec import build_config
from .specs import LATENT_PAINT, NO_MESH_FILE

VIEWS = ("front", "side", "back", "overhead")
NAME = LATENT_PAINT.display_name


class LatentPaint(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return build_schema(LATENT_PAINT, {"mesh_file": [NO_MESH_FILE, *host.input_meshes()]}, hidden_node_id=True)

    @classmethod
    def validate_inputs(cls, mesh_file: str = NO_MESH_FILE, **_) -> bool | str:
        if mesh_file == NO_MESH_FILE:
            return True
        try:
            host.input_path(mesh_file)
        except (ValueError, FileNotFoundError) as error:
            return str(error)
        return True

    @classmethod
    def execute(cls, model, clip, prompt, negative, view_dependent, resume, texture_resolution, turntable_frames, filename_prefix,
                mesh_file=NO_MESH_FILE, mesh=None, sketch=None, vae=None, **widgets) -> io.NodeOutput:
        import comfy.model_management as mm

        overrides = {view: widgets.pop(f"{view}_conditioning", None) for view in VIEWS}
        config = build_config(LATENT_PAINT, widgets)
        check_texture_resolution(texture_resolution, vae is not None)
        with host.pip_hint(NAME):
            cache = host.output_path("latent3d/uv_cache", "uv cache")[0]
            target = mesh_to_paint(mesh_file, mesh, sketch, host.input_path, PaintMeshConfig(cache_dir=str(cache)))
        embeddings = host.view_embeddings(clip, prompt, negative, view_dependent, overrides, NAME)
        fingerprint = mesh_fingerprint(target, config.init == "texture")
        key = host.run_key(run_identity(config), embeddings.fingerprint(), host.model_fingerprint(model), fingerprint, config.init == "texture" and vae is not None)
        checkpoint = host.run_directory(key) / "paint.safetensors"
        latent = LatentFormat.of(model)
        decode = lambda z: to_pil(host.latent_images(z[None], vae, latent.to_vae)[0])  # noqa: E731
        start = host.checkpoint_step(checkpoint, NAME) if resume else 0
        progress = host.HostProgress(cls.hidden.unique_id, config.iterations, decode, start)
        with host.training_mode():
            result = paint_mesh(
                config, target, ComfyDenoiser(model), embeddings, device=mm.get_torch_device(), encode=host.texture_encoder(vae, latent.to_model),
                on_step=progress.on_step, on_metrics=progress.on_metrics, should_stop=progress.should_stop, checkpoint_path=checkpoint, resume=resume,
            )
        progress.finish(result.status, result.step, result.skipped_steps)
        if result.status == "interrupted":
            host.raise_interrupted()
        textured = paint_output(result, host.texture_decoder(vae, latent.to_vae), texture_resolution)
        path, relative = host.unique_output(filename_prefix, ".glb")
        save_mesh(textured, path)
        frames = turntable_images(result, textured.texture, turntable_frames, device=mm.get_torch_device())
        image = torch.from_numpy(textured.texture).float()[None] / 255.0
        return io.NodeOutput(relative, image, frames.permute(0, 2, 3, 1).contiguous(), host.core_mesh(textured))
