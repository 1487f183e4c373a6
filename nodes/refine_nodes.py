"""Latent→RGB Refine: a trained Latent-NeRF refined in RGB through the user's MODEL and VAE, with live progress."""

from __future__ import annotations

import dataclasses

from comfy_api.latest import io

from ..latent3d.images import to_pil
from ..latent3d.nerf.cameras import VIEW_LABELS
from ..latent3d.refine.convert import state_fingerprint
from ..latent3d.refine.train import refine_rgb, run_identity, turntable_rgb
from . import host, refine_host
from .comfy_denoiser import ComfyDenoiser
from .schema import build_schema
from .spec import build_config
from .specs import LATENT_TO_RGB_REFINE


class LatentToRGBRefine(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return build_schema(LATENT_TO_RGB_REFINE, hidden_node_id=True)

    @classmethod
    def execute(cls, nerf, model, clip, vae, prompt, negative, view_dependent, color_init, resume, turntable_frames, turntable_resolution, **widgets) -> io.NodeOutput:
        import comfy.model_management as mm

        name = LATENT_TO_RGB_REFINE.display_name
        source = refine_host.source_nerf(nerf, name)
        overrides = {view: widgets.pop(f"{view}_conditioning", None) for view in VIEW_LABELS}
        config = refine_host.host_config(build_config(LATENT_TO_RGB_REFINE, widgets))
        device = mm.get_torch_device()
        denoiser = ComfyDenoiser(model)
        embeddings = host.view_embeddings(clip, prompt, negative, view_dependent, overrides, node=name)
        matrix = refine_host.color_init(model, color_init)
        key = host.run_key(run_identity(config), embeddings.fingerprint(), host.model_fingerprint(model), state_fingerprint(source.model), matrix)
        checkpoint = host.run_directory(key) / "refined.safetensors"
        start = host.checkpoint_step(checkpoint, name) if resume else 0
        progress = host.HostProgress(cls.hidden.unique_id, config.iterations, to_pil, start)
        with refine_host.gradient_encoder(vae, model, device, config, name) as encoder, host.training_mode():
            result = refine_rgb(
                config, source.model, denoiser, encoder, embeddings, device=device, color_matrix=matrix, on_step=progress.on_step,
                on_metrics=progress.on_metrics, should_stop=progress.should_stop, checkpoint_path=checkpoint, resume=resume,
            )
        progress.finish(result.status, result.step, result.skipped_steps)
        if result.status == "interrupted":
            host.raise_interrupted()
        refined = dataclasses.replace(source, model=result.model.eval(), checkpoint=checkpoint, refine_config=config)
        frames = turntable_rgb(result.model, config, turntable_frames, turntable_resolution)  # [B, 3, H, W] in 0..1
        return io.NodeOutput(refined, frames.permute(0, 2, 3, 1).contiguous())
